"""Generators of synthetic faces: the interface, the registry, and the built-in ``shape-warp`` (CPU)."""

from phenosynth.synth.generators.base import (
    GENERATORS,
    Generator,
    SyntheticSample,
    create_generator,
    list_generators,
    sample_rng,
)
from phenosynth.synth.generators import shape_warp as _shape_warp  # noqa: F401  (registers "shape-warp")
from phenosynth.synth.generators.shape_warp import ShapeWarpGenerator

__all__ = [
    "GENERATORS",
    "Generator",
    "ShapeWarpGenerator",
    "SyntheticSample",
    "create_generator",
    "list_generators",
    "sample_rng",
]
