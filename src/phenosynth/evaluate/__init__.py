"""Evaluation: pure metric functions (top-k over the full label space, macro-F1, mean (SD), bootstrap CI)."""

from phenosynth.evaluate.metrics import (
    bootstrap_ci,
    format_mean_sd,
    macro_f1,
    mean_sd,
    topk_accuracies,
    topk_accuracy,
)

__all__ = ["bootstrap_ci", "format_mean_sd", "macro_f1", "mean_sd", "topk_accuracies", "topk_accuracy"]
