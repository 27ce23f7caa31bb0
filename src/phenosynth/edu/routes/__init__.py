"""The teaching app's routers, one per resource: ``auth`` (sign-in, sign-out, the home page) and ``decks``."""
