"""Scoring unseen conditions (held out whole by ``split --unseen-fraction``) by gallery matching, as GestaltMatcher
does: no head ever saw them, so only a gallery can name them.

Leave-one-subject-out: each unseen photo is a query against a gallery of the seen gallery (e.g. the real training
photos) plus the unseen photos of the *other* subjects; its condition is ranked among every condition of the study
(seen and unseen) with :class:`~phenosynth.models.trainers.GalleryMatcher`, and top-k comes from
:func:`phenosynth.evaluate.metrics.topk_accuracies`. A query whose condition has no photo of another subject has
nothing to be matched with; it is left out and counted (``skipped``), not scored as a miss.

In a training cell (:func:`unseen_columns`, called by :func:`phenosynth.training.cell.train_cell` whenever the split
holds unseen conditions, whatever the cell's mode) the seen gallery is the cell's training set (regime ``real``: the
real training photos outside the validation fold; ``synthetic``/``mixed``: the selected synthetic images, with the
real ones for ``mixed``; for mode ``gallery`` exactly the cell's gallery), embedded by the cell's backbone(s) with its
test-time views (each image: the mean of its L2-normalised view embeddings) from the same feature cache, an ensemble's
members' condition scores averaged. ``m`` is the cell's chosen ``m`` in mode ``gallery``, else 1 (the first hit).
The numbers go into the cell's row as the :data:`UNSEEN_COLUMNS` (the cell's own ``top1``... stay the seen
conditions' numbers, unchanged); a study without unseen conditions has none of these columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError
from phenosynth.evaluate.metrics import TOPK, topk_accuracies

UNSEEN_SUBSET = "unseen"
SEEN_SUBSET = "seen"
#: Columns of :func:`score_unseen`'s frame.
UNSEEN_RESULT_COLUMNS = ["subset", "conditions", "queries", "skipped"]
#: Prefix of a results row's unseen-condition columns (the subset marker of results.csv).
UNSEEN_PREFIX = "unseen_"
#: The columns a cell's row gains when the split holds unseen conditions: top-k over seen + unseen conditions, and
#: how many unseen conditions and queries were scored, and how many queries were skipped.
UNSEEN_COLUMNS = [f"{UNSEEN_PREFIX}top{k}" for k in TOPK] + [
    f"{UNSEEN_PREFIX}{c}" for c in ("conditions", "queries", "skipped")]


def score_unseen(
    unseen_X: np.ndarray | Sequence[np.ndarray], unseen_labels: Sequence[str], unseen_subjects: Sequence[str],
    seen_X: np.ndarray | Sequence[np.ndarray], seen_labels: Sequence[str], *, classes: Sequence[str] | None = None,
    m: int | Sequence[int] = 1, ks: Sequence[int] = (1, 5),
) -> pd.DataFrame:
    """One row: ``subset="unseen"``, ``conditions`` (unseen conditions with at least one scored query), ``queries``
    (scored), ``skipped`` (queries whose condition has no photo of another subject), ``top1``, ``top5``, ...

    unseen_X (n, d), unseen_labels, unseen_subjects: the unseen photos' embeddings, conditions and subjects.
    seen_X (g, d), seen_labels: the seen gallery. classes: the label space (default: every label given, sorted).
    m: :class:`GalleryMatcher`'s ``m``. An ensemble gives ``unseen_X`` and ``seen_X`` as lists, one matrix per member
    (rows in the same order), and ``m`` one value or one per member: a condition's score is the mean of the members'
    ``-distance``. Pure; same inputs, same numbers.
    """
    from phenosynth.models.trainers import GalleryMatcher  # lazy: torch; the report reads this module's names
    members_u = [unseen_X] if isinstance(unseen_X, np.ndarray) else list(unseen_X)
    members_s = [seen_X] if isinstance(seen_X, np.ndarray) else list(seen_X)
    ms = [int(m)] * len(members_u) if isinstance(m, (int, np.integer)) else [int(v) for v in m]
    if not members_u or len(members_s) != len(members_u) or len(ms) != len(members_u):
        raise ValueError("unseen_X, seen_X and m must give one entry per ensemble member")
    members_u = [np.asarray(X, dtype=np.float32) for X in members_u]
    members_s = [np.zeros((0, u.shape[1]), np.float32) if np.asarray(X).size == 0 else np.asarray(X, np.float32)
                 for X, u in zip(members_s, members_u)]
    ul = np.asarray(unseen_labels).astype(str)
    us = np.asarray(unseen_subjects).astype(str)
    sl = np.asarray(seen_labels).astype(str)
    if not all(len(X) == len(ul) == len(us) for X in members_u) or any(len(X) != len(sl) for X in members_s):
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
        matchable = np.isin(uy[query], uy[others])
        skipped += int((~matchable).sum())
        if not matchable.any():
            continue
        gallery_y = np.concatenate([sy, uy[others]])
        per_member = []
        for U, S, m_k in zip(members_u, members_s, ms):
            model = GalleryMatcher(m=m_k).fit(np.concatenate([S, U[others]]), gallery_y, n_classes=len(names))
            per_member.append(model.decision_function(U[query][matchable]))
        ys.append(uy[query][matchable])
        scores.append(per_member[0] if len(per_member) == 1 else np.mean(per_member, axis=0))
    row: dict[str, object] = {"subset": UNSEEN_SUBSET, "skipped": skipped}
    if ys:
        y = np.concatenate(ys)
        s = np.nan_to_num(np.concatenate(scores).astype(np.float64), neginf=-1e9)
        row |= {"conditions": len(np.unique(y)), "queries": len(y)}
        row |= topk_accuracies(y, s, ks=ks, labels=list(range(len(names))))
    else:
        row |= {"conditions": 0, "queries": 0} | {f"top{k}": float("nan") for k in ks}
    return pd.DataFrame([row], columns=UNSEEN_RESULT_COLUMNS + [f"top{k}" for k in ks])


# --- in a training cell ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnseenPhotos:
    """The usable real photos of the unseen conditions (``ids``, their ``labels`` and ``subjects``, in manifest
    order) and every unseen condition of the split (``conditions``, also those without a usable photo)."""

    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.conditions)


def unseen_photos(manifest: pd.DataFrame) -> UnseenPhotos:
    """The split's unseen conditions and their usable real photos (empty when it holds none). A photo without a
    ``subject_id`` is its own subject."""
    from phenosynth.data.manifest import real_unseen, unseen_conditions

    conditions = unseen_conditions(manifest)
    if not conditions:
        return UnseenPhotos()
    u = real_unseen(manifest)
    ids = u["image_id"].astype(str).tolist()
    subjects = [str(s) if isinstance(s, str) and s else f"image:{i}" for s, i in zip(u["subject_id"], ids)]
    return UnseenPhotos(ids, u["label"].astype(str).tolist(), subjects, conditions)


#: A member's features by test-time view: ``view -> (image_id -> row, X (N, d))``.
ViewRows = Mapping[str, tuple[Mapping[str, int], np.ndarray]]


def view_embeddings(by_view: ViewRows, ids: Sequence[str]) -> np.ndarray:
    """The embeddings of ``ids``: the one view's rows, or the mean of the L2-normalised views (as mode ``gallery``
    embeds an image)."""
    from phenosynth.models.trainers import l2_normalised

    per_view = [X[[row_of[i] for i in ids]] if len(ids) else X[:0] for row_of, X in by_view.values()]
    return per_view[0] if len(per_view) == 1 else np.mean([l2_normalised(x) for x in per_view], axis=0)


def unseen_columns(members: Mapping[str, ViewRows], gallery_ids: Sequence[str], gallery_labels: Sequence[str],
                   photos: UnseenPhotos, seen_classes: Sequence[str], m: Mapping[str, int] | None = None
                   ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """A cell's :data:`UNSEEN_COLUMNS` and the unseen photos left out for want of features (``(image_id, "unseen",
    reason)``, as the cell's skipped list). ``members``: each ensemble member's :data:`ViewRows`; ``gallery_ids``,
    ``gallery_labels``: the seen gallery (the cell's training set); label space: ``seen_classes`` + the unseen
    conditions; ``m``: per member (default 1). Queries are unseen photos with features in every member and view."""
    have = [set(row_of) for by_view in members.values() for row_of, _ in by_view.values()]
    usable = [all(i in h for h in have) for i in photos.ids]
    keep = [k for k, ok in enumerate(usable) if ok]
    left_out = [(i, "unseen", "no features (no usable face crop)") for i, ok in zip(photos.ids, usable) if not ok]
    ids = [photos.ids[k] for k in keep]
    if not ids:
        nan = {c: float("nan") for c in UNSEEN_COLUMNS if "top" in c}
        return nan | {f"{UNSEEN_PREFIX}conditions": 0, f"{UNSEEN_PREFIX}queries": 0,
                      f"{UNSEEN_PREFIX}skipped": 0}, left_out
    classes = sorted(set(map(str, seen_classes)) | set(photos.conditions))
    out = score_unseen([view_embeddings(v, ids) for v in members.values()], [photos.labels[k] for k in keep],
                       [photos.subjects[k] for k in keep],
                       [view_embeddings(v, list(gallery_ids)) for v in members.values()], list(gallery_labels),
                       classes=classes, m=[int((m or {}).get(name, 1)) for name in members], ks=TOPK)
    row = out.iloc[0]
    return {f"{UNSEEN_PREFIX}top{k}": float(row[f"top{k}"]) for k in TOPK} | {
        f"{UNSEEN_PREFIX}{c}": int(row[c]) for c in ("conditions", "queries", "skipped")}, left_out


def unseen_columns_in(columns: Sequence[str]) -> list[str]:
    """The :data:`UNSEEN_COLUMNS` among ``columns``, in order (none for a study without unseen conditions)."""
    have = set(columns)
    return [c for c in UNSEEN_COLUMNS if c in have]
