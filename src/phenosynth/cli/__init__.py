"""The ``phenosynth`` command: a thin typer app over the library. One module per pipeline stage adds its commands."""

from __future__ import annotations

from phenosynth.cli._app import app, main
from phenosynth.cli import data as _data  # noqa: F401  (registers ingest, split, manifest)

for _module in ("faces", "synth", "train", "study", "audit"):
    try:
        __import__(f"phenosynth.cli.{_module}")
    except ModuleNotFoundError as _exc:  # a stage not built yet
        if _exc.name != f"phenosynth.cli.{_module}":
            raise

__all__ = ["app", "main"]
