"""Synthetic data: generator interface + registry (``shape-warp``), ``generate``, ranking against real-training
prototypes, lineage checks and selection strategies.

Light to import: ``generate`` (module ``generation``) and ``rank`` (module ``ranking``) load scikit-image,
scikit-learn and OpenCV on first use.
"""

from phenosynth.synth.lineage import flag_leaked_synthetic, lineage_report
from phenosynth.synth.selection import SELECTION_STRATEGIES, select, select_for_training, strategy_names

__all__ = [
    "SELECTION_STRATEGIES",
    "flag_leaked_synthetic",
    "generate",
    "lineage_report",
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
