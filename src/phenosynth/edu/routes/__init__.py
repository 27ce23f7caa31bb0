"""The teaching app's routers, one per resource: ``auth`` (sign-in, sign-out, the home page), ``decks``, ``cohorts``
(educators: cohorts, invitations, quizzes), ``quiz`` (invitation sign-up, a trainee taking a quiz), ``progress``
(statistics pages and exports), ``practice`` (perceptual-learning trials) and ``sheets`` (the counselling-sheet
button)."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """Every router of the app, in the order ``create_app`` includes them (tests walk their routes: role and CSRF
    checks on every route)."""
    from phenosynth.edu.routes import auth, cohorts, decks, practice, progress, quiz, sheets

    return [auth.router, decks.router, cohorts.router, quiz.router, progress.router, practice.router, sheets.router]
