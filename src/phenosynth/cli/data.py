"""CLI: ingest, split, manifest."""
