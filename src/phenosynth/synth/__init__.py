"""Synthetic data: generator interface + registry (``shape-warp``), ``generate``, ranking against real-training
prototypes, the generators' lineage check and selection strategies. (Which synthetic images stay usable after a
split is the data layer's rule: :mod:`phenosynth.data.leakage`.)

Light to import: ``generate`` (module ``generation``) and ``rank`` (module ``ranking``) load scikit-image,
scikit-learn and OpenCV on first use.
"""

from phenosynth.synth.selection import SELECTION_STRATEGIES, select, select_for_training, strategy_names

__all__ = [
    "SELECTION_STRATEGIES",
    "generate",
    "rank",
    "select",
    "select_for_training",
    "strategy_names",
]


def __getattr__(name: str):  # lazy: scikit-image / scikit-learn / OpenCV only when generating or ranking
    if name == "generate":
        from phenosynth.synth.generation import generate

        return generate
    if name == "rank":
        from phenosynth.synth.ranking import rank

        return rank
    raise AttributeError(name)
