"""Models: backbone registry + offline weight resolution, cached feature extraction, trainers on arrays.

Heavy modules (torch models) are imported on first use of the names below.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKBONES": "phenosynth.models.backbones",
    "Backbone": "phenosynth.models.backbones",
    "BackboneSpec": "phenosynth.models.backbones",
    "FaceLandmarks": "phenosynth.models.backbones",
    "register_backbone": "phenosynth.models.backbones",
    "backbone_spec": "phenosynth.models.backbones",
    "create_backbone": "phenosynth.models.backbones",
    "list_backbones": "phenosynth.models.backbones",
    "weights_id": "phenosynth.models.backbones",
    "extract_features": "phenosynth.models.features",
    "feature_cache_dir": "phenosynth.models.features",
    "TRAINERS": "phenosynth.models.trainers",
    "ProbeClassifier": "phenosynth.models.trainers",
    "SEHeadClassifier": "phenosynth.models.trainers",
    "FineTuneClassifier": "phenosynth.models.trainers",
    "SEHead": "phenosynth.models.trainers",
    "GalleryMatcher": "phenosynth.models.trainers",
    "tta_views": "phenosynth.models.views",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'phenosynth.models' has no attribute {name!r}")
