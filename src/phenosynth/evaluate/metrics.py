"""Pure metric functions: top-k accuracy over the full label space, macro-F1, mean (SD) over folds,
bootstrap confidence intervals over test images.

``y`` are integer class indices ``(N,)``; ``scores`` are ``(N, C)`` with one column per class of the label space
``labels`` (default ``0..C-1``), so a test set that misses some classes is scored correctly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

TOPK = (1, 5, 10, 30)


def _labels(scores: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    return np.arange(scores.shape[1]) if labels is None else np.asarray(labels)


def topk_accuracy(y: np.ndarray, scores: np.ndarray, k: int, labels: Sequence[int] | None = None) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (``k`` clipped to the number of classes).

    >>> y = np.array([0, 1, 2])
    >>> s = np.array([[.6, .3, .1, 0.], [.5, .4, .1, 0.], [.5, .3, .0, .2]])   # class 3 is absent from y
    >>> topk_accuracy(y, s, 1), topk_accuracy(y, s, 2), topk_accuracy(y, s, 30)
    (0.3333333333333333, 0.6666666666666666, 1.0)
    >>> topk_accuracy(np.array([0, 1]), np.array([[-0.2, -0.5], [-0.9, -0.3]]), 1)  # two classes, minus distances
    1.0
    """
    scores = np.asarray(scores, dtype=np.float64)
    labs = _labels(scores, labels)
    k = int(min(k, len(labs)))
    if len(y) == 0:
        return float("nan")
    if k >= len(labs):
        return 1.0
    if len(labs) == 2:  # k == 1: scikit-learn's binary form thresholds one column (at 0.5 or 0), wrong for distances
        y = np.asarray(y)
        if not np.isfinite(scores).all() or not np.isin(y, labs).all():
            raise ValueError("top-k accuracy needs finite scores and true labels among the labels")
        # a tie goes to the later column, as in scikit-learn's multi-class form (reversed stable sort)
        predicted = np.where(scores[:, 1] >= scores[:, 0], labs[1], labs[0])
        return float(np.mean(predicted == y))
    from sklearn.metrics import top_k_accuracy_score  # lazy: sklearn costs ~1 s of every CLI start-up

    return float(top_k_accuracy_score(y, scores, k=k, labels=labs))


def topk_accuracies(y: np.ndarray, scores: np.ndarray, ks: Sequence[int] = TOPK,
                    labels: Sequence[int] | None = None) -> dict[str, float]:
    """``{"top1": ..., "top5": ..., ...}``.

    >>> topk_accuracies(np.array([1, 0]), np.array([[.1, .9], [.2, .8]]), ks=(1, 5))
    {'top1': 0.5, 'top5': 1.0}
    """
    return {f"top{k}": topk_accuracy(y, scores, k, labels) for k in ks}


def macro_f1(y: np.ndarray, y_pred: np.ndarray, labels: Sequence[int], *, zero_division: float = np.nan) -> float:
    """Macro-F1 over ``labels`` (the whole label space). A class that is neither in ``y`` nor predicted has no
    defined F1 and is left out of the average (``zero_division=nan``); a class absent from ``y`` but predicted
    scores 0.

    >>> macro_f1(np.array([0, 0, 1]), np.array([0, 1, 1]), labels=[0, 1, 2])   # class 2 never seen: left out
    0.6666666666666666
    >>> macro_f1(np.array([0, 0]), np.array([0, 2]), labels=[0, 1, 2])         # class 2 predicted wrongly: F1 0
    0.3333333333333333
    """
    if len(y) == 0:
        return float("nan")
    from sklearn.metrics import f1_score  # lazy: sklearn costs ~1 s of every CLI start-up

    return float(f1_score(y, y_pred, labels=list(labels), average="macro", zero_division=zero_division))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value), ignoring NaNs.

    >>> mean_sd([0.5, 0.7, 0.6])
    (0.6, 0.1)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return round(float(v.mean()), 12), round(sd, 12)


def format_mean_sd(mean: float, sd: float, *, scale: float = 100.0, digits: int = 1) -> str:
    """Mean (SD) as the tables write it, in percent by default: ``0.3512, 0.0309 -> '35.1 (3.1)'``; a single run
    (SD NaN) has no SD, no mean is ``'–'``. From values: ``format_mean_sd(*mean_sd(values))``.

    >>> format_mean_sd(0.3512, 0.0309), format_mean_sd(0.5, float("nan")), format_mean_sd(*mean_sd([0.5, 0.7, 0.6]))
    ('35.1 (3.1)', '50.0', '60.0 (10.0)')
    >>> format_mean_sd(float("nan"), float("nan"))
    '–'
    """
    if np.isnan(mean):
        return "–"
    if np.isnan(sd):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ({sd * scale:.{digits}f})"


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of ``metric(y, scores)`` resampling test images with replacement.

    >>> y = np.array([0, 1, 0, 1]); s = np.array([[.9, .1], [.2, .8], [.4, .6], [.3, .7]])
    >>> lo, hi = bootstrap_ci(lambda y, s: topk_accuracy(y, s, 1, labels=[0, 1]), y, s, n_boot=200)
    >>> 0.0 <= lo <= 0.75 <= hi <= 1.0
    True
    """
    y = np.asarray(y)
    scores = np.asarray(scores)
    rng = np.random.default_rng(seed)
    n = len(y)
    stats = np.array([metric(y[idx], scores[idx]) for idx in (rng.integers(0, n, n) for _ in range(n_boot))])
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))
