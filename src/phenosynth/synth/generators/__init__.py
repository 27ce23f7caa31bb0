"""Generators of synthetic faces: the interface, the registry, and the built-in ``shape-warp`` and
``phenotype-transfer`` (CPU)."""

from phenosynth.synth.generators.base import (
    GENERATORS,
    Generator,
    Identities,
    SyntheticSample,
    check_generator_options,
    create_generator,
    generator_options,
    list_generators,
    sample_rng,
)
from phenosynth.synth.generators import shape_warp as _shape_warp  # noqa: F401  (registers "shape-warp")
from phenosynth.synth.generators.shape_warp import ShapeWarpGenerator
from phenosynth.synth.generators import phenotype_transfer as _phenotype_transfer  # noqa: F401  (registers it)
from phenosynth.synth.generators.phenotype_transfer import PhenotypeTransferGenerator

__all__ = [
    "GENERATORS",
    "Generator",
    "Identities",
    "PhenotypeTransferGenerator",
    "ShapeWarpGenerator",
    "SyntheticSample",
    "check_generator_options",
    "create_generator",
    "generator_options",
    "list_generators",
    "sample_rng",
]
