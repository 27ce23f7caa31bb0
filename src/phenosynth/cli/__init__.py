"""The ``phenosynth`` command: a thin typer app over the library. One module per pipeline stage adds its commands."""

from __future__ import annotations

from phenosynth.cli._app import app, main
# each stage's module registers its commands on app; this order is the order of `phenosynth --help`
from phenosynth.cli import data, faces, synth, train, study, audit, sheet, serve  # noqa: F401, E402, I001

__all__ = ["app", "main"]
