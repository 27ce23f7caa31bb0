"""Leakage-safe splits: the held-out real test set and the k validation folds over real training images.

Rules (docs/DESIGN.md, "Hard rules"): stratified by label and grouped by subject, so a subject is never on both sides;
near-duplicate real images (perceptual hash within ``near_duplicate_bits``: a resized or re-encoded copy filed under
another subject id; a crop of more than about 1 % per side usually moves the hash further than that) are grouped as
one subject, so they fall on one side and in one fold; classes with a single real subject stay entirely in training
(as the RDFace code keeps singleton classes in training); every class keeps at least one training image; synthetic
images are never in the test set and never in a fold; which synthetic images stay usable is decided by
:func:`phenosynth.data.leakage.exclude_leaked_synthetic` (children of test images and every image of a generator run
fit on a test image are excluded). Donor faces (``source=donor``) are never split or folded; a donor that is a
near-duplicate of a patient photo is excluded (:func:`phenosynth.data.leakage.exclude_patient_donors`: a donor must
never be a patient). With ``unseen_fraction`` F > 0, a seeded choice of whole conditions (round(F x classes), at
least one, leaving at least two seen) is held out first as **unseen** (their real photos get ``split="unseen"``, no
fold): they never reach a generator, a fold or a trained head's label space, and are scored only by gallery matching
(:mod:`phenosynth.training.unseen`). Deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from phenosynth.data.leakage import (
    DEFAULT_NEAR_DUPLICATE_BITS,
    DONOR_IS_PATIENT,
    DONOR_NEAR_PATIENT_KIND,
    FIT_ON_TEST,  # noqa: F401 (re-exported: the exclude_reasons a split gives)
    NEAR_DUPLICATE_KIND,
    PARENT_IN_TEST,
    SPLIT_OPTIONS_FILE,
    UNSEEN_SOURCE,
    confirm_near_duplicates,
    donor_patient_pairs,
    exclude_leaked_synthetic,
    exclude_patient_donors,
    leakage_problems,
    leakage_report,
    load_fit_sets,
    near_duplicate_pairs,
)
from phenosynth.data.manifest import DONOR, REAL, SYNTHETIC, TEST, TRAIN, UNSEEN, conform
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import LeakageError, PhenosynthError

log = logging.getLogger(__name__)

#: Kind of the ``split_report.csv`` rows of synthetic images excluded for learning from an unseen condition's photo.
UNSEEN_SOURCE_KIND = "synthetic-from-unseen-condition"
SPLIT_REPORT_COLUMNS = ["kind", "image_id", "path", "label", "other_image_id", "other_path", "other_label", "detail"]


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions


def assign_test(labels: np.ndarray, groups: np.ndarray, *, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask (N,) of the held-out test images.

    Stratified by ``labels``, grouped by ``groups`` (subjects); classes with a single group are kept in training; a
    class never loses all of its training images. ``test_size`` is the fraction of the splittable images.

    Every decision is made per group, so a group is never on both sides even when its images carry several labels (a
    near-duplicate copy filed under another label, a subject id reused across class folders): a group with an image
    in a single-group class stays entirely in training.
    """
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    n = len(labels)
    test = np.zeros(n, dtype=bool)
    groups_per_label = pd.Series(groups).groupby(labels).nunique()
    single_group_class = np.isin(labels, groups_per_label[groups_per_label < 2].index.to_numpy())
    splittable = ~np.isin(groups, groups[single_group_class])
    idx = np.flatnonzero(splittable)
    n_groups = len(np.unique(groups[idx]))
    if n_groups < 2:  # (only when groups span classes: a splittable class has 2 groups)
        return test
    n_splits = max(2, int(round(1.0 / test_size)))
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
    """Move a class's smallest test subject (fewest images in that class; ties: the smallest id) back to training,
    with all of its images, when the class has no training image left.

    Moving a subject back only adds training images, so a class checked earlier never loses its training image again:
    one pass over the classes reaches the fixed point (every class has a training image, no subject on both sides).
    """
    test = test.copy()
    for label in np.unique(labels):
        in_class = labels == label
        if (in_class & ~test).any():
            continue
        sizes = pd.Series(groups[in_class & test]).value_counts()
        smallest = sorted(sizes[sizes == sizes.min()].index)[0]
        test[groups == smallest] = False
    return test


def choose_unseen(classes: list[str], *, fraction: float, seed: int) -> list[str]:
    """The conditions held out whole as unseen: ``round(fraction x len(classes))`` of them (at least one when
    ``fraction`` > 0, at most ``len(classes) - 2`` so two conditions stay for the heads), a seeded choice over the
    sorted ``classes``; sorted. Empty for ``fraction`` 0.

    >>> choose_unseen(["a", "b", "c", "d"], fraction=0.0, seed=0)
    []
    """
    if fraction <= 0:
        return []
    names = sorted(str(c) for c in classes)
    n = min(max(1, int(round(fraction * len(names)))), len(names) - 2)
    if n < 1:
        raise PhenosynthError(
            f"--unseen-fraction {fraction} leaves fewer than 2 seen conditions ({len(names)} in all); "
            "a trained head needs at least 2."
        )
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(names, size=n, replace=False).tolist())


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


def subject_groups(
    image_ids: np.ndarray, subjects: np.ndarray, pairs: list[tuple[str, str, int]]
) -> tuple[np.ndarray, list[list[str]]]:
    """The grouping key that :func:`assign_test` and :func:`assign_folds` split by: the subject, with subjects joined
    (transitively: connected components) when one of their images is a near-duplicate of the other's (``pairs`` of
    image_ids, e.g. a re-encoded or resized copy filed under another subject id).

    Returns ``(key per image, groups)``: each group is the sorted image_ids of one connected set of near-duplicates
    under different subjects. A key is the smallest subject id of its group, so it does not depend on row order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.asarray(image_ids).astype(str)
    subjects = np.asarray(subjects).astype(str)
    subject_of = dict(zip(ids, subjects))
    pairs = [(a, b, d) for a, b, d in pairs if subject_of[a] != subject_of[b]]
    if not pairs:
        return subjects.copy(), []
    names = np.unique(subjects)
    code = {s: k for k, s in enumerate(names)}
    rows = [code[subject_of[a]] for a, _, _ in pairs]
    cols = [code[subject_of[b]] for _, b, _ in pairs]
    graph = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    first = pd.Series(names).groupby(component).min()  # names are sorted: the smallest subject id of each component
    key = first.to_numpy()[component[[code[s] for s in subjects]]]
    # groups of images (for the summary): connected sets of the near-duplicate pairs themselves
    involved = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    at = {i: k for k, i in enumerate(involved)}
    img_graph = coo_matrix((np.ones(len(pairs)), ([at[a] for a, _, _ in pairs], [at[b] for _, b, _ in pairs])),
                           shape=(len(involved), len(involved)))
    _, img_component = connected_components(img_graph, directed=False)
    groups = [sorted(g) for _, g in pd.Series(involved).groupby(img_component)]
    return key, sorted(groups)


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
    #: Sorted image_ids of each set of near-duplicate real images under different subjects, kept on one side.
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    #: Synthetic images the leakage rule excludes, and how many for each reason.
    flagged_synthetic: list[str] = field(default_factory=list)
    flagged_by_reason: dict[str, int] = field(default_factory=dict)
    images_per_fold: list[int] = field(default_factory=list)
    #: Conditions held out whole (``split="unseen"``), and how many real photos they have.
    unseen_conditions: list[str] = field(default_factory=list)
    n_unseen: int = 0
    #: Donor faces excluded as near-duplicates of patient photos (reason DONOR_IS_PATIENT); donors never get a split.
    flagged_donors: list[str] = field(default_factory=list)
    n_donors: int = 0  # usable donor faces after the split

    @property
    def near_duplicate_images(self) -> int:
        return sum(len(g) for g in self.near_duplicate_groups)


@locks_workspace
def split(
    workspace: Workspace,
    *,
    test_size: float = 0.25,
    folds: int = 5,
    seed: int = 42,
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS,
    unseen_fraction: float = 0.0,
) -> SplitResult:
    """Assign ``split`` and ``fold`` to every usable real image; mark synthetic images ``train`` with no fold, and
    exclude those the leakage rule forbids (their parent, or a photo their generator run learned from, is now in the
    test set; released again when it is back in training). Writes the manifest, ``split_report.csv`` and
    ``split.json`` (these options, so advice to re-split can repeat them).

    ``unseen_fraction``: the fraction of the conditions held out whole as unseen (:func:`choose_unseen`, seeded):
    their real photos get ``split="unseen"`` and no fold, synthetic images that learned from them are excluded
    (reason :data:`~phenosynth.data.leakage.UNSEEN_SOURCE`), and the rest is split as without them."""
    if not 0.0 < test_size < 1.0:
        raise PhenosynthError(f"--test-size must be between 0 and 1 (exclusive), not {test_size}.")
    if folds < 2:
        raise PhenosynthError(f"--folds must be at least 2, not {folds}.")
    if not 0.0 <= unseen_fraction < 1.0:
        raise PhenosynthError(f"--unseen-fraction must be at least 0 and below 1, not {unseen_fraction}.")
    df = workspace.load_manifest()
    if df.empty:
        raise PhenosynthError("The manifest is empty: ingest some images first (phenosynth ingest SRC -w WS).")

    df["split"] = pd.array([pd.NA] * len(df), dtype="string")
    df["fold"] = pd.array([pd.NA] * len(df), dtype="Int64")
    real_mask = (df["source"] == REAL) & df["exclude_reason"].isna()
    if not real_mask.any():
        raise PhenosynthError("No usable real images in the manifest: nothing to split.")
    classes = sorted(df.loc[real_mask, "label"].astype(str).unique())
    if len(classes) < 2:
        raise PhenosynthError(
            f"The usable real images are of {len(classes)} class only ({classes[0]}); a classifier needs at least 2. "
            f"Ingest photos of more conditions first: phenosynth ingest SRC -w {workspace.root}"
        )
    unseen = choose_unseen(classes, fraction=unseen_fraction, seed=seed)
    unseen_mask = real_mask & df["label"].astype(str).isin(unseen)
    df.loc[unseen_mask, "split"] = UNSEEN
    # Sort by image_id so the result does not depend on ingest order.
    real = df[real_mask & ~unseen_mask].sort_values("image_id")
    subjects = real["subject_id"].fillna(real["image_id"])  # no subject id: the image is its own subject
    subject_of = dict(zip(real["image_id"].astype(str), subjects.astype(str)))
    hashed = real[real["phash"].notna()]
    candidates = [(a, b, d) for a, b, d in near_duplicate_pairs(
        hashed.set_index(hashed["image_id"].astype(str))["phash"], max_distance=near_duplicate_bits)
        if subject_of[a] != subject_of[b]]
    pairs = confirm_near_duplicates(workspace, df, candidates)
    groups, dup_groups = subject_groups(real["image_id"].to_numpy(), subjects.to_numpy(), pairs)
    test = assign_test(real["label"].to_numpy(), groups, test_size=test_size, seed=seed)
    df.loc[real.index, "split"] = np.where(test, TEST, TRAIN)
    train = real[~test]
    df.loc[train.index, "fold"] = assign_folds(train["label"].to_numpy(), groups[~test], folds=folds, seed=seed)
    df.loc[df["source"] == SYNTHETIC, "split"] = TRAIN
    fit_sets = load_fit_sets(workspace)
    df, flagged = exclude_leaked_synthetic(conform(df), fit_sets)
    donor_pairs = donor_patient_pairs(workspace, df, max_distance=near_duplicate_bits)
    df, flagged_donors = exclude_patient_donors(workspace, df, pairs=donor_pairs)

    problems = leakage_problems(df, fit_sets, near_duplicates=pairs)
    if problems:  # a bug, not a user error: refuse to write a leaking split
        raise LeakageError("Split would leak: " + "; ".join(problems))

    workspace.save_manifest(df)
    excluded = leakage_report(df, fit_sets)
    _write_split_report(workspace, df, pairs, excluded, donor_pairs)
    options = {"test_size": test_size, "folds": folds, "seed": seed, "near_duplicate_bits": near_duplicate_bits}
    if unseen:  # only then: a split without unseen conditions writes the same split.json as before
        options |= {"unseen_fraction": unseen_fraction, "unseen_conditions": unseen}
    atomic_write(workspace.root / SPLIT_OPTIONS_FILE, lambda p: Path(p).write_text(json.dumps(options, indent=2)))

    labels = sorted(real["label"].unique())
    test_labels = set(real.loc[test, "label"])
    per_label_groups = pd.Series(groups).groupby(real["label"].to_numpy()).nunique()
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
        near_duplicate_groups=dup_groups,
        flagged_synthetic=flagged,
        flagged_by_reason={str(k): int(v) for k, v in excluded["reason"].value_counts().sort_index().items()},
        images_per_fold=[int(v) for v in fold_counts.to_numpy()],
        unseen_conditions=unseen,
        n_unseen=int(unseen_mask.sum()),
        flagged_donors=flagged_donors,
        n_donors=int(((df["source"] == DONOR) & df["exclude_reason"].isna()).sum()),
    )
    log.info("split: %d train / %d test real images over %d classes", result.n_train, result.n_test, result.classes)
    return result


def _write_split_report(
    workspace: Workspace, df: pd.DataFrame, pairs: list[tuple[str, str, int]], excluded: pd.DataFrame,
    donor_pairs: list[tuple[str, str, int]] = (),
) -> None:
    by_id = df.set_index("image_id")
    rows = [
        {
            "kind": NEAR_DUPLICATE_KIND,
            "image_id": a, "path": by_id.at[a, "path"], "label": by_id.at[a, "label"],
            "other_image_id": b, "other_path": by_id.at[b, "path"], "other_label": by_id.at[b, "label"],
            "detail": f"within {d} bits (perceptual hash) under subjects {by_id.at[a, 'subject_id']} and "
                      f"{by_id.at[b, 'subject_id']}: split as one subject ({by_id.at[a, 'split']})",
        }
        for a, b, d in pairs
    ] + [
        {
            "kind": "synthetic-parent-in-test" if r.reason == PARENT_IN_TEST else "synthetic-generator-fit-on-test",
            "image_id": r.image_id, "path": r.path, "label": r.label,
            "other_image_id": r.test_parents if r.reason == PARENT_IN_TEST else r.test_fit_images,
            "other_path": "", "other_label": "",
            "detail": "synthetic image made from an image now in the test set: excluded" if r.reason == PARENT_IN_TEST
            else f"its generator run {r.run} learned from an image now in the test set: excluded (re-generate)",
        }
        for r in excluded.itertuples(index=False) if r.reason != UNSEEN_SOURCE
    ] + [
        {
            "kind": UNSEEN_SOURCE_KIND, "image_id": r.image_id, "path": r.path, "label": r.label,
            "other_image_id": "", "other_path": "", "other_label": "",
            "detail": f"synthetic image (run {r.run or '-'}) that learned from a photo of an unseen condition: "
                      "excluded (unseen conditions never reach a generator)",
        }
        for r in excluded.itertuples(index=False) if r.reason == UNSEEN_SOURCE
    ] + [
        {
            "kind": DONOR_NEAR_PATIENT_KIND,
            "image_id": d, "path": by_id.at[d, "path"], "label": "",
            "other_image_id": r, "other_path": by_id.at[r, "path"], "other_label": by_id.at[r, "label"],
            "detail": f"donor face within {bits} bits (perceptual hash) of a patient photo, confirmed on the files: "
                      f"excluded ({DONOR_IS_PATIENT}; a donor must never be a patient)",
        }
        for d, r, bits in donor_pairs
    ]
    table = pd.DataFrame(rows, columns=SPLIT_REPORT_COLUMNS)
    atomic_write(workspace.split_report_path, lambda p: table.to_csv(p, index=False))
