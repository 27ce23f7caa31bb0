"""Leakage-safe splits: the held-out real test set and the k validation folds over real training images.

Rules (docs/DESIGN.md, "Hard rules"): stratified by label and grouped by subject, so a subject is never on both sides;
classes with a single real subject stay entirely in training (as the RDFace code keeps singleton classes in
training); every class keeps at least one training image; synthetic images are never in the test set and never in a
fold; a synthetic image whose parent lands in the test set is excluded; near-duplicate real images across
train/test (perceptual hash) are reported. Deterministic for a seed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenosynth.data.manifest import REAL, SYNTHETIC, TEST, TRAIN, conform, usable
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import LeakageError, PhenosynthError

log = logging.getLogger(__name__)

PARENT_IN_TEST = "parent in test set"
SPLIT_REPORT_COLUMNS = ["kind", "image_id", "path", "label", "other_image_id", "other_path", "other_label", "detail"]


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions


def assign_test(labels: np.ndarray, groups: np.ndarray, *, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask (N,) of the held-out test images.

    Stratified by ``labels``, grouped by ``groups`` (subjects); classes with a single group are kept in training; a
    class never loses all of its training images. ``test_size`` is the fraction of the splittable images.
    """
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    n = len(labels)
    test = np.zeros(n, dtype=bool)
    groups_per_label = pd.Series(groups).groupby(labels).nunique()
    splittable = np.isin(labels, groups_per_label[groups_per_label >= 2].index.to_numpy())
    if splittable.sum() == 0:
        return test
    idx = np.flatnonzero(splittable)
    n_splits = max(2, int(round(1.0 / test_size)))
    n_groups = len(np.unique(groups[idx]))
    n_splits = min(n_splits, n_groups)
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: sklearn costs ~1.5 s of CLI start-up

    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only k members": expected here
        folds = list(sgkf.split(np.zeros(len(idx)), labels[idx], groups[idx]))
    target = test_size * len(idx)
    # The fold whose size is closest to the target fraction; ties go to the first (deterministic).
    best = min(range(len(folds)), key=lambda f: abs(len(folds[f][1]) - target))
    test[idx[folds[best][1]]] = True
    return _keep_every_class_in_training(test, labels, groups)


def _keep_every_class_in_training(test: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Move a class's smallest test subject back to training when the class has no training image left."""
    test = test.copy()
    for label in np.unique(labels):
        in_class = labels == label
        if (in_class & ~test).any():
            continue
        sizes = pd.Series(groups[in_class & test]).value_counts()
        smallest = sorted(sizes[sizes == sizes.min()].index)[0]
        test[in_class & (groups == smallest)] = False
    return test


def assign_folds(labels: np.ndarray, groups: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Validation fold (0..folds-1) of each training image: StratifiedGroupKFold, so a subject sits in one fold."""
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise PhenosynthError(
            f"{folds} folds need at least {folds} training subjects; the training set has {n_groups}. "
            "Use fewer --folds."
        )
    out = np.full(len(labels), -1, dtype=int)
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: sklearn costs ~1.5 s of CLI start-up

    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, val) in enumerate(sgkf.split(np.zeros(len(labels)), labels, groups)):
            out[val] = f
    return out


def near_duplicates(test_hashes: pd.Series, train_hashes: pd.Series, *, max_distance: int) -> list[tuple[str, str, int]]:
    """(test_id, train_id, distance) for every pair whose perceptual hashes differ in at most ``max_distance`` bits."""
    if test_hashes.empty or train_hashes.empty:
        return []
    a = np.array([int(h, 16) for h in test_hashes.to_numpy()], dtype=np.uint64)
    b = np.array([int(h, 16) for h in train_hashes.to_numpy()], dtype=np.uint64)
    xor = a[:, None] ^ b[None, :]
    bits = np.unpackbits(xor.view(np.uint8).reshape(len(a), len(b), 8), axis=-1).sum(axis=-1)
    pairs = np.argwhere(bits <= max_distance)
    return [(test_hashes.index[i], train_hashes.index[j], int(bits[i, j])) for i, j in pairs]


def flag_children_of_test(manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Exclude synthetic images with a parent in the test set (reason ``parent in test set``); return their ids.

    Clears that reason from synthetic images whose parents are all back in training.
    """
    df = manifest.copy()
    test_ids = set(df.loc[(df["source"] == REAL) & (df["split"] == TEST), "image_id"])
    flagged = []
    for i in np.flatnonzero((df["source"] == SYNTHETIC).to_numpy()):
        leaked = any(p in test_ids for p in df.at[i, "parents"])
        reason = df.at[i, "exclude_reason"]
        if leaked:
            if pd.isna(reason):
                df.at[i, "exclude_reason"] = PARENT_IN_TEST
            flagged.append(df.at[i, "image_id"])
        elif not pd.isna(reason) and reason == PARENT_IN_TEST:
            df.at[i, "exclude_reason"] = pd.NA
    return df, flagged


def leakage_problems(manifest: pd.DataFrame) -> list[str]:
    """Every violation of the hard rules in a split manifest (empty when clean)."""
    u = usable(manifest)
    real = u[u["source"] == REAL]
    problems = []
    syn_test = u[(u["source"] == SYNTHETIC) & (u["split"] == TEST)]
    if len(syn_test):
        problems.append(f"{len(syn_test)} synthetic image(s) in the test set")
    if u.loc[u["source"] == SYNTHETIC, "fold"].notna().any():
        problems.append("synthetic image(s) assigned to a validation fold")
    if real["split"].notna().any():
        sides = real.groupby("subject_id")["split"].nunique()
        crossing = sides[sides > 1].index.tolist()
        if crossing:
            problems.append(f"{len(crossing)} subject(s) on both sides of the split, e.g. {crossing[0]}")
        test_ids = set(real.loc[real["split"] == TEST, "image_id"])
        children = u[(u["source"] == SYNTHETIC) & u["parents"].map(lambda ps: any(p in test_ids for p in ps))]
        if len(children):
            problems.append(f"{len(children)} usable synthetic image(s) made from test images")
        fold_subjects = real[real["split"] == TRAIN].groupby("subject_id")["fold"].nunique()
        if (fold_subjects > 1).any():
            problems.append("a subject spans several validation folds")
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class SplitResult:
    classes: int
    n_train: int
    n_test: int
    n_synthetic: int
    folds: int
    test_fraction: float
    classes_absent_from_test: list[str] = field(default_factory=list)
    singleton_classes: list[str] = field(default_factory=list)
    near_duplicates: int = 0
    flagged_synthetic: list[str] = field(default_factory=list)
    images_per_fold: list[int] = field(default_factory=list)


@locks_workspace
def split(
    workspace: Workspace,
    *,
    test_size: float = 0.25,
    folds: int = 5,
    seed: int = 42,
    near_duplicate_bits: int = 4,
) -> SplitResult:
    """Assign ``split`` and ``fold`` to every usable real image; mark synthetic images ``train`` with no fold."""
    if not 0.0 < test_size < 1.0:
        raise PhenosynthError(f"--test-size must be between 0 and 1 (exclusive), not {test_size}.")
    if folds < 2:
        raise PhenosynthError(f"--folds must be at least 2, not {folds}.")
    df = workspace.load_manifest()
    if df.empty:
        raise PhenosynthError("The manifest is empty: ingest some images first (phenosynth ingest SRC -w WS).")

    df["split"] = pd.array([pd.NA] * len(df), dtype="string")
    df["fold"] = pd.array([pd.NA] * len(df), dtype="Int64")
    real_mask = (df["source"] == REAL) & df["exclude_reason"].isna()
    if not real_mask.any():
        raise PhenosynthError("No usable real images in the manifest: nothing to split.")
    # Sort by image_id so the result does not depend on ingest order.
    real = df[real_mask].sort_values("image_id")
    test = assign_test(real["label"].to_numpy(), real["subject_id"].to_numpy(), test_size=test_size, seed=seed)
    df.loc[real.index, "split"] = np.where(test, TEST, TRAIN)
    train = real[~test]
    df.loc[train.index, "fold"] = assign_folds(
        train["label"].to_numpy(), train["subject_id"].to_numpy(), folds=folds, seed=seed
    )
    df.loc[df["source"] == SYNTHETIC, "split"] = TRAIN
    df, flagged = flag_children_of_test(conform(df))

    problems = leakage_problems(df)
    if problems:  # a bug, not a user error: refuse to write a leaking split
        raise LeakageError("Split would leak: " + "; ".join(problems))

    hashes = df.loc[real_mask & df["phash"].notna()].set_index("image_id")
    dups = near_duplicates(
        hashes.loc[hashes["split"] == TEST, "phash"], hashes.loc[hashes["split"] == TRAIN, "phash"],
        max_distance=near_duplicate_bits,
    )
    workspace.save_manifest(df)
    _write_split_report(workspace, df, dups, flagged)

    labels = sorted(real["label"].unique())
    test_labels = set(real.loc[test, "label"])
    per_label_groups = real.groupby("label")["subject_id"].nunique()
    fold_counts = df.loc[df["fold"].notna(), "fold"].value_counts().sort_index()
    result = SplitResult(
        classes=len(labels),
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        n_synthetic=int((df["source"] == SYNTHETIC).sum()),
        folds=folds,
        test_fraction=float(test.mean()),
        classes_absent_from_test=[lab for lab in labels if lab not in test_labels],
        singleton_classes=sorted(per_label_groups[per_label_groups < 2].index),
        near_duplicates=len(dups),
        flagged_synthetic=flagged,
        images_per_fold=[int(v) for v in fold_counts.to_numpy()],
    )
    log.info("split: %d train / %d test real images over %d classes", result.n_train, result.n_test, result.classes)
    return result


def _write_split_report(
    workspace: Workspace, df: pd.DataFrame, dups: list[tuple[str, str, int]], flagged: list[str]
) -> None:
    by_id = df.set_index("image_id")
    rows = [
        {
            "kind": "near-duplicate",
            "image_id": t, "path": by_id.at[t, "path"], "label": by_id.at[t, "label"],
            "other_image_id": r, "other_path": by_id.at[r, "path"], "other_label": by_id.at[r, "label"],
            "detail": f"test image within {d} bits (perceptual hash) of a training image",
        }
        for t, r, d in dups
    ] + [
        {
            "kind": "synthetic-parent-in-test",
            "image_id": s, "path": by_id.at[s, "path"], "label": by_id.at[s, "label"],
            "other_image_id": ";".join(by_id.at[s, "parents"]), "other_path": "", "other_label": "",
            "detail": "synthetic image made from an image now in the test set: excluded",
        }
        for s in flagged
    ]
    table = pd.DataFrame(rows, columns=SPLIT_REPORT_COLUMNS)
    atomic_write(workspace.split_report_path, lambda p: table.to_csv(p, index=False))
