"""Data layer: workspace, manifest, safe image decoding, ingest, leakage-safe splits."""

from phenosynth.data.manifest import MANIFEST_COLUMNS, usable
from phenosynth.data.workspace import Workspace

__all__ = ["MANIFEST_COLUMNS", "Workspace", "usable"]
