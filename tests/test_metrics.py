"""Metric functions against hand-computed cases (including a test set that misses classes)."""

from __future__ import annotations

import numpy as np
import pytest

from phenosynth.evaluate.metrics import (
    bootstrap_ci,
    format_mean_sd,
    macro_f1,
    mean_sd,
    topk_accuracies,
    topk_accuracy,
)

# 4 test images over a 5-class label space; classes 3 and 4 have no test image.
Y = np.array([0, 1, 2, 2])
S = np.array([
    [0.50, 0.20, 0.10, 0.15, 0.05],  # true 0: rank 1
    [0.40, 0.30, 0.10, 0.15, 0.05],  # true 1: rank 2
    [0.10, 0.20, 0.05, 0.60, 0.05],  # true 2: outside the top 3
    [0.10, 0.10, 0.70, 0.05, 0.05],  # true 2: rank 1
])


def test_topk_by_hand_with_classes_missing_from_test():
    assert topk_accuracy(Y, S, 1) == pytest.approx(2 / 4)
    assert topk_accuracy(Y, S, 2) == pytest.approx(3 / 4)
    assert topk_accuracy(Y, S, 3) == pytest.approx(3 / 4)
    assert topk_accuracy(Y, S, 30) == 1.0  # k clipped to the 5 classes
    assert topk_accuracies(Y, S, ks=(1, 5)) == {"top1": 0.5, "top5": 1.0}


def test_topk_is_monotone_in_k():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 40, 100)
    s = rng.random((100, 40))
    accs = [topk_accuracy(y, s, k) for k in (1, 5, 10, 30)]
    assert accs == sorted(accs)


def test_topk_binary_label_space():
    assert topk_accuracy(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), 1) == pytest.approx(2 / 3)


def test_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    # class 0: P=1, R=.5 -> F1 2/3; class 1: P=2/3, R=1 -> F1 .8; class 2 absent and never predicted: left out
    assert macro_f1(y, pred, labels=[0, 1, 2]) == pytest.approx((2 / 3 + 0.8) / 2)
    # a class absent from the test set but predicted counts as 0
    pred2 = np.array([0, 2, 1, 1])
    assert macro_f1(y, pred2, labels=[0, 1, 2]) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_mean_sd_uses_ddof_1():
    m, s = mean_sd([0.2, 0.4, 0.6, 0.8])
    assert m == pytest.approx(0.5)
    assert s == pytest.approx(np.std([0.2, 0.4, 0.6, 0.8], ddof=1))
    assert np.isnan(mean_sd([0.3])[1])
    assert format_mean_sd(*mean_sd([0.2, 0.4, 0.6, 0.8])) == "50.0 (25.8)"


def test_format_mean_sd_is_the_one_the_report_tables_use():
    from phenosynth.study.report import tables

    assert tables.format_mean_sd is format_mean_sd
    assert format_mean_sd(0.3512, 0.0309) == "35.1 (3.1)" and format_mean_sd(0.5, float("nan")) == "50.0"
    assert format_mean_sd(float("nan"), 0.1) == "–"


def test_bootstrap_ci_contains_point_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 200)
    s = rng.random((200, 5))
    s[np.arange(100), y[:100]] += 1.0  # half the images are easy
    point = topk_accuracy(y, s, 1)
    lo, hi = bootstrap_ci(lambda a, b: topk_accuracy(a, b, 1, labels=range(5)), y, s, n_boot=300, seed=3)
    assert lo < point < hi
    assert hi - lo < 0.2
    assert (lo, hi) == bootstrap_ci(lambda a, b: topk_accuracy(a, b, 1, labels=range(5)), y, s, n_boot=300, seed=3)


def test_two_class_top1_takes_the_larger_score_breaks_ties_like_the_multiclass_form_and_refuses_nan():
    from phenosynth.evaluate.metrics import topk_accuracy

    minus_distances = np.array([[-0.2, -0.5], [-0.9, -0.3], [-0.4, -0.1]])  # all below 0, as a gallery's scores
    assert topk_accuracy(np.array([0, 1, 0]), minus_distances, 1) == pytest.approx(2 / 3)
    assert topk_accuracy(np.array([1]), np.array([[0.5, 0.5]]), 1) == 1.0  # a tie: the later column, as with 3
    assert topk_accuracy(np.array([2]), np.array([[0.3, 0.3, 0.3]]), 1) == 1.0
    with pytest.raises(ValueError, match="finite scores"):
        topk_accuracy(np.array([0]), np.array([[np.nan, 0.5]]), 1)
