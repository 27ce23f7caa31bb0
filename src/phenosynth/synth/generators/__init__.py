"""Generators of synthetic faces: the interface, the registry, the built-in ``shape-warp`` and ``phenotype-transfer``
(CPU), ``dreambooth`` / ``dreambooth-lora`` (Stable Diffusion per condition; extra ``diffusion``, GPU advised) and
``fastgan`` (a GAN trained from scratch; GPU advised)."""

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
from phenosynth.synth.generators import dreambooth as _dreambooth  # noqa: F401  (registers dreambooth, -lora)
from phenosynth.synth.generators.dreambooth import DreamBoothGenerator, DreamBoothLoraGenerator
from phenosynth.synth.generators import fastgan as _fastgan  # noqa: F401  (registers "fastgan")

__all__ = [
    "DreamBoothGenerator",
    "DreamBoothLoraGenerator",
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
