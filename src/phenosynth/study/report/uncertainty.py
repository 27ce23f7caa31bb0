"""How much a top-1 could move with another draw of the test set: a percentile bootstrap over the test images.

The fold-averaged top-1 is the mean over test images of each image's share of fold models that got it right, and
its bootstrap resamples those shares. results.csv records each model's top-1 and ``n_test``, not which images it got
right, so the shares are not known; their mean is. Of all shares in [0, 1] with that mean, the ones with the largest
spread are: every fold model right on ``floor(top1 x n_test)`` images, a fraction of them on one image, none on the
rest (the fold models agreeing image by image). Their bootstrap is the one computed here, so the interval is the
widest the fold-averaged top-1's can be: exact when the fold models agree, conservative otherwise. All folds score the
same held-out real test set; should ``n_test`` differ between the models of a configuration, the smallest is used
(again the wider interval). Seeded: a rebuild gives the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenosynth.evaluate.metrics import bootstrap_ci
from phenosynth.study.report.tables import configurations, in_table_order, setting_label

#: Bootstrap resamples, level and seed of the interval; fixed, so a rebuilt report shows the same numbers.
N_BOOT = 1000
LEVEL = 0.95
SEED = 0


def _mean_share(shares: np.ndarray, _: np.ndarray) -> float:
    return float(shares.mean())


def widest_shares(top1: float, n_test: int) -> np.ndarray:
    """Per-image shares of fold models right with mean ``top1`` and the largest spread (module docstring).

    >>> widest_shares(0.75, 4).tolist(), widest_shares(0.625, 4).tolist()
    ([1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.0])
    """
    hits = float(top1) * int(n_test)
    whole = min(int(np.floor(hits + 1e-9)), int(n_test))
    shares = np.zeros(int(n_test))
    shares[:whole] = 1.0
    if whole < n_test:
        shares[whole] = max(hits - whole, 0.0)
    return shares


def top1_bootstrap_ci(top1: float, n_test: int, *, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of a fold-averaged top-1 of ``top1`` on ``n_test`` test images, resampling the
    images (:func:`phenosynth.evaluate.metrics.bootstrap_ci` over :func:`widest_shares`).

    >>> top1_bootstrap_ci(0.75, 24)
    (0.5833333333333334, 0.9166666666666666)
    >>> top1_bootstrap_ci(1.0, 24)
    (1.0, 1.0)
    """
    shares = widest_shares(top1, n_test)
    return bootstrap_ci(_mean_share, shares, shares, n_boot=n_boot, alpha=1 - level, seed=seed)


def top1_test_ci(results: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = SEED) -> pd.DataFrame | None:
    """Per configuration, in Table 1's order: ``backbone, regime, n_synthetic, setting, top1_mean, n_test, ci_low,
    ci_high`` (fractions); None when results.csv has no ``n_test``. See the module docstring for what the interval
    is."""
    if "n_test" not in results.columns:
        return None
    rows = []
    for (backbone, regime, _), grp in configurations(results):
        top1 = pd.to_numeric(grp["top1"], errors="coerce").dropna()
        n_test = pd.to_numeric(grp["n_test"], errors="coerce").dropna()
        if top1.empty or n_test.empty or n_test.min() < 1:
            continue
        trained = pd.to_numeric(grp["n_synthetic"], errors="coerce").fillna(0).astype(int)
        lo, hi = top1_bootstrap_ci(top1.mean(), int(n_test.min()), n_boot=n_boot, level=level, seed=seed)
        rows.append({"backbone": backbone, "regime": regime, "n_synthetic": int(round(trained.mean())),
                     "setting": setting_label(regime, int(trained.min()), int(trained.max())),
                     "top1_mean": float(top1.mean()), "n_test": int(n_test.min()), "ci_low": lo, "ci_high": hi})
    if not rows:
        return None
    return in_table_order(pd.DataFrame(rows), list(dict.fromkeys(results["backbone"]))).reset_index(drop=True)
