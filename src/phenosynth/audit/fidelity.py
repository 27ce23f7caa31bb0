"""Fidelity of a generator run: do its synthetic images look like the real photos of their condition, and do they
carry the condition's phenotype?

- **KID** (:func:`phenosynth.audit.stats.kid_from_features`: unbiased MMD^2, polynomial kernel, subset size at most
  the smaller set) between the real *training* photos and the synthetic images, per condition and over all
  conditions, in the feature space of an offline backbone (default ``mobilenet_v2``; features cached by
  :func:`phenosynth.models.features.extract_features`). Beside it the *split-half baseline*: the KID between two
  halves of the same real training photos, split by subject (seeded), i.e. what two samples of real patients of the
  condition differ by.
- **Phenotype agreement**: a :class:`phenosynth.models.trainers.ProbeClassifier` fit on the real training photos
  (default backbone ``shape68``, the landmark geometry) scores the synthetic images; their accuracy (the share
  classified as their own condition) is reported beside the probe's accuracy on the real *test* photos.

A measurement that cannot be made (too few images, a backbone whose features are unavailable) is NaN with a note;
it never stops the audit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.audit import stats
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: The label of the row over all conditions.
OVERALL = "all conditions"
#: KID needs at least this many feature vectors in each set.
MIN_KID_IMAGES = 2

Features = dict[str, np.ndarray]


@dataclass(frozen=True)
class KidRow:
    """KID of one condition (or :data:`OVERALL`): synthetic vs real training photos, and real vs real."""

    condition: str
    n_real: int
    n_synthetic: int
    kid: float  # mean over subsets (NaN: not measurable, see note)
    kid_sd: float
    baseline: float  # split-half KID of the real training photos, halves by subject
    baseline_sd: float
    note: str = ""


@dataclass(frozen=True)
class PhenotypeRow:
    """Accuracy of the real-trained probe on one condition's synthetic images and on its real test photos."""

    condition: str
    n_synthetic: int
    synthetic_accuracy: float
    n_test: int
    test_accuracy: float
    note: str = ""


@dataclass
class Fidelity:
    """One run's fidelity tables (summary.json ``fidelity``)."""

    kid_backbone: str | None
    probe_backbone: str | None
    kid: list[KidRow] = field(default_factory=list)
    phenotype: list[PhenotypeRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a whole table is missing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backbone_features(
    ws: Workspace, backbone: str, ids: list[str], *, weights: str = "default", preprocessing: str = "paper"
) -> tuple[Features, str | None]:
    """``(image_id -> feature row (float64), None)``, or ``({}, note)`` when ``backbone`` cannot give features here
    (e.g. ``shape68`` without a face pass)."""
    from phenosynth.models.features import extract_features

    try:
        kept, X = extract_features(ws, backbone, ids, weights=weights, preprocessing=preprocessing)
    except PhenosynthError as exc:
        log.warning("fidelity: no %s features: %s", backbone, exc)
        return {}, f"no {backbone} features: {exc}"
    return dict(zip(kept, np.asarray(X, dtype=np.float64))), None


def _rows_of(feats: Features, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["image_id"].isin(feats)]


def _stack(feats: Features, ids: Any) -> np.ndarray:
    return np.stack([feats[i] for i in ids])


def _kid(feats: Features, a: pd.DataFrame, b: pd.DataFrame, subsets: int, seed: int) -> tuple[float, float]:
    if min(len(a), len(b)) < MIN_KID_IMAGES:
        return float("nan"), float("nan")
    return stats.kid_from_features(_stack(feats, a["image_id"]), _stack(feats, b["image_id"]), subsets=subsets,
                                   subset_size=stats.KID_MAX_SUBSET, seed=seed)


def split_half(subjects: np.ndarray, seed: int) -> np.ndarray | None:
    """``(N,)`` bool: the first half of a seeded split of the rows by subject (scikit-learn's GroupShuffleSplit,
    half of the subjects on each side); None with fewer than two subjects.

    >>> split_half(np.array(["a", "a", "b", "c", "c", "d"]), seed=0).sum() in (2, 3, 4)
    True
    """
    from sklearn.model_selection import GroupShuffleSplit

    subjects = np.asarray(subjects)
    if len(np.unique(subjects)) < 2:
        return None
    first, _ = next(GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed).split(subjects, groups=subjects))
    mask = np.zeros(len(subjects), dtype=bool)
    mask[first] = True
    return mask


def kid_row(condition: str, feats: Features, real: pd.DataFrame, syn: pd.DataFrame, *, subsets: int,
            seed: int) -> KidRow:
    """KID of ``syn`` against ``real`` (columns ``image_id``, ``subject``) and the split-half baseline of ``real``."""
    real, syn = _rows_of(feats, real), _rows_of(feats, syn)
    kid, kid_sd = _kid(feats, real, syn, subsets, seed)
    notes = []
    if kid != kid:
        notes.append(f"KID needs at least {MIN_KID_IMAGES} images on each side "
                     f"({len(real)} real, {len(syn)} synthetic with features)")
    half = split_half(real["subject"].to_numpy(), seed)
    baseline = baseline_sd = float("nan")
    if half is None:
        notes.append("no split-half baseline: the real photos are of fewer than two subjects")
    else:
        baseline, baseline_sd = _kid(feats, real[half], real[~half], subsets, seed)
        if baseline != baseline:
            notes.append(f"no split-half baseline: halves of {int(half.sum())} and {int((~half).sum())} photos")
    return KidRow(condition, len(real), len(syn), kid, kid_sd, baseline, baseline_sd, "; ".join(notes))


def kid_table(feats: Features, real_train: pd.DataFrame, syn: pd.DataFrame, *, subsets: int = 100,
              seed: int = 0) -> list[KidRow]:
    """One :class:`KidRow` per condition of ``syn`` (sorted), then one over all conditions."""
    rows = [kid_row(c, feats, real_train[real_train["label"] == c], group, subsets=subsets, seed=seed)
            for c, group in syn.groupby("label", sort=True)]
    return [*rows, kid_row(OVERALL, feats, real_train, syn, subsets=subsets, seed=seed)]


def _accuracy(predicted: np.ndarray, truth: Any) -> float:
    """Share of ``predicted`` equal to ``truth`` (one label or one per row); NaN when there is nothing to score."""
    return float(np.mean(predicted == truth)) if len(predicted) else float("nan")


def phenotype_table(feats: Features, real_train: pd.DataFrame, real_test: pd.DataFrame, syn: pd.DataFrame, *,
                    seed: int = 0) -> list[PhenotypeRow]:
    """Fit a probe on ``real_train`` (columns ``image_id``, ``label``); its accuracy on ``syn`` and on ``real_test``
    per condition of ``syn`` (sorted), then over all of them. Images without features are left out (counted in
    neither ``n``)."""
    from phenosynth.models.trainers import ProbeClassifier

    train, test, syn = _rows_of(feats, real_train), _rows_of(feats, real_test), _rows_of(feats, syn)
    classes = np.array(sorted(train["label"].astype(str).unique()))
    conditions = sorted(syn["label"].astype(str).unique())
    if len(classes) < 2:
        note = f"the probe needs real training photos of two conditions (has {len(classes)})"
        return [PhenotypeRow(c, 0, float("nan"), 0, float("nan"), note) for c in [*conditions, OVERALL]]
    probe = ProbeClassifier(random_state=seed).fit(_stack(feats, train["image_id"]),
                                                  np.searchsorted(classes, train["label"].astype(str)),
                                                  n_classes=len(classes))

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return classes[probe.predict(_stack(feats, frame["image_id"]))] if len(frame) else np.array([], dtype=str)

    syn_pred, test_pred = predict(syn), predict(test)
    syn_lab, test_lab = syn["label"].astype(str).to_numpy(), test["label"].astype(str).to_numpy()
    rows = []
    for c in conditions:
        s, t = syn_pred[syn_lab == c], test_pred[test_lab == c]
        note = "" if len(t) else "no real test photo of this condition with features"
        rows.append(PhenotypeRow(c, len(s), _accuracy(s, c), len(t), _accuracy(t, c), note))
    in_run = np.isin(test_lab, conditions)
    rows.append(PhenotypeRow(OVERALL, len(syn_pred), _accuracy(syn_pred, syn_lab), int(in_run.sum()),
                             _accuracy(test_pred[in_run], test_lab[in_run])))
    return rows


__all__ = ["Fidelity", "KidRow", "PhenotypeRow", "OVERALL", "backbone_features", "kid_table", "phenotype_table",
           "split_half", "kid_row"]
