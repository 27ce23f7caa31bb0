"""Scoring unseen conditions (held out whole by ``split --unseen-fraction``) by gallery matching, as GestaltMatcher
does: no head ever saw them, so only a gallery can name them.

Leave-one-subject-out: each unseen photo is a query against a gallery of the seen gallery (e.g. the real training
photos) plus the unseen photos of the *other* subjects; its condition is ranked among every condition of the study
(seen and unseen) with :class:`~phenosynth.models.trainers.GalleryMatcher`, and top-k comes from
:func:`phenosynth.evaluate.metrics.topk_accuracies`. A query whose condition has no photo of another subject has
nothing to be matched with; it is left out and counted (``skipped``), not scored as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError
from phenosynth.evaluate.metrics import topk_accuracies
from phenosynth.models.trainers import GalleryMatcher

UNSEEN_SUBSET = "unseen"
#: Columns of :func:`score_unseen`'s frame.
UNSEEN_RESULT_COLUMNS = ["subset", "conditions", "queries", "skipped"]


def score_unseen(
    unseen_X: np.ndarray, unseen_labels: Sequence[str], unseen_subjects: Sequence[str],
    seen_X: np.ndarray, seen_labels: Sequence[str], *, classes: Sequence[str] | None = None, m: int = 1,
    ks: Sequence[int] = (1, 5),
) -> pd.DataFrame:
    """One row: ``subset="unseen"``, ``conditions`` (unseen conditions with at least one scored query), ``queries``
    (scored), ``skipped`` (queries whose condition has no photo of another subject), ``top1``, ``top5``, ...

    unseen_X (n, d), unseen_labels, unseen_subjects: the unseen photos' embeddings, conditions and subjects.
    seen_X (g, d), seen_labels: the seen gallery. classes: the label space (default: every label given, sorted).
    m: :class:`GalleryMatcher`'s ``m``. Pure; same inputs, same numbers.
    """
    unseen_X = np.asarray(unseen_X, dtype=np.float32)
    seen_X = np.asarray(seen_X, dtype=np.float32)
    if seen_X.size == 0:
        seen_X = np.zeros((0, unseen_X.shape[1]), dtype=np.float32)
    ul = np.asarray(unseen_labels).astype(str)
    us = np.asarray(unseen_subjects).astype(str)
    sl = np.asarray(seen_labels).astype(str)
    if not (len(unseen_X) == len(ul) == len(us)) or len(seen_X) != len(sl):
        raise ValueError("embeddings, labels and subjects must have one entry per photo")
    if len(ul) == 0:
        raise PhenosynthError("No photos of unseen conditions to score: split with --unseen-fraction first.")
    names = sorted(set(ul) | set(sl)) if classes is None else [str(c) for c in classes]
    missing = sorted((set(ul) | set(sl)) - set(names))
    if missing:
        raise ValueError(f"labels outside the label space: {missing[:5]}")
    index = {c: i for i, c in enumerate(names)}
    uy = np.array([index[c] for c in ul], dtype=np.int64)
    sy = np.array([index[c] for c in sl], dtype=np.int64)
    ys, scores, skipped = [], [], 0
    for subject in sorted(set(us)):
        query = us == subject
        others = ~query
        gallery_X = np.concatenate([seen_X, unseen_X[others]])
        gallery_y = np.concatenate([sy, uy[others]])
        matchable = np.isin(uy[query], uy[others])
        skipped += int((~matchable).sum())
        if not matchable.any():
            continue
        model = GalleryMatcher(m=m).fit(gallery_X, gallery_y, n_classes=len(names))
        ys.append(uy[query][matchable])
        scores.append(model.decision_function(unseen_X[query][matchable]))
    row: dict[str, object] = {"subset": UNSEEN_SUBSET, "skipped": skipped}
    if ys:
        y = np.concatenate(ys)
        row |= {"conditions": len(np.unique(y)), "queries": len(y)}
        row |= topk_accuracies(y, np.nan_to_num(np.concatenate(scores), neginf=-1e9), ks=ks,
                               labels=list(range(len(names))))
    else:
        row |= {"conditions": 0, "queries": 0} | {f"top{k}": float("nan") for k in ks}
    return pd.DataFrame([row], columns=UNSEEN_RESULT_COLUMNS + [f"top{k}" for k in ks])
