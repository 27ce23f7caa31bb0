"""Generators of synthetic faces: the interface, the registry, and the built-in ``shape-warp`` and
``phenotype-transfer`` (CPU), and ``fastgan`` (a GAN trained from scratch; GPU for real use)."""

from phenosynth.synth.generators.base import (
    GENERATORS,
    Generator,
    Identities,
    SyntheticSample,
    create_generator,
    list_generators,
    sample_rng,
)
from phenosynth.synth.generators import shape_warp as _shape_warp  # noqa: F401  (registers "shape-warp")
from phenosynth.synth.generators.shape_warp import ShapeWarpGenerator
from phenosynth.synth.generators import phenotype_transfer as _phenotype_transfer  # noqa: F401  (registers it)
from phenosynth.synth.generators.phenotype_transfer import PhenotypeTransferGenerator
from phenosynth.synth.generators import fastgan as _fastgan  # noqa: F401  (registers "fastgan")

__all__ = [
    "GENERATORS",
    "Generator",
    "Identities",
    "PhenotypeTransferGenerator",
    "ShapeWarpGenerator",
    "SyntheticSample",
    "create_generator",
    "list_generators",
    "sample_rng",
]
