"""Lineage of synthetic images: the held-out test set must never reach training through a synthetic child.

- :func:`check_training_parents` is what every generator calls before it looks at an image: anything that is not a
  usable real *training* image raises :class:`~phenosynth.errors.LeakageError`.
- :func:`flag_leaked_synthetic` is what runs after a re-split: synthetic images with a parent now in the test set
  are excluded (reason ``parent in test set``), and images whose parents are all back in training are released.
- :func:`lineage_report` lists, for every synthetic image with a parent in the test set, which parents those are.

The data layer (``phenosynth.data.split``) cannot import this package and performs the same check on its own; the
two must agree (the tests check it on the same manifest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from phenosynth.data.manifest import REAL, SYNTHETIC, TEST, TRAIN
from phenosynth.errors import LeakageError, PhenosynthError

#: exclude_reason given to a synthetic image made from an image that is now in the test set.
PARENT_IN_TEST = "parent in test set"


def _test_ids(manifest: pd.DataFrame) -> set[str]:
    return set(manifest.loc[(manifest["source"] == REAL) & (manifest["split"] == TEST), "image_id"].astype(str))


def check_training_parents(image_ids: Sequence[str], splits: Sequence[object], sources: Sequence[object] | None = None) -> None:
    """Raise unless every image is a real image of the training split.

    image_ids, splits (and optionally sources): one entry per image a generator is about to learn from.

    Raises:
        LeakageError: an image is in the test split (names up to five of them).
        PhenosynthError: an image has no split yet (run ``phenosynth split``) or is synthetic.
    """
    ids = [str(i) for i in image_ids]
    if len(splits) != len(ids) or (sources is not None and len(sources) != len(ids)):
        raise ValueError("image_ids, splits and sources must have one entry per image")
    test = [i for i, s in zip(ids, splits) if s == TEST]
    if test:
        raise LeakageError(
            f"{len(test)} held-out test image(s) were handed to a generator (e.g. {', '.join(t[:12] for t in test[:5])}). "
            "Generators may only learn from real training images; pass rows from manifest.real_train(df)."
        )
    unsplit = [i for i, s in zip(ids, splits) if s != TRAIN]
    if unsplit:
        raise PhenosynthError(
            f"{len(unsplit)} image(s) handed to a generator have no train/test split yet. "
            "Run first: phenosynth split -w WS"
        )
    if sources is not None:
        fake = [i for i, s in zip(ids, sources) if s != REAL]
        if fake:
            raise PhenosynthError(
                f"{len(fake)} synthetic image(s) were handed to a generator; generators learn from real images only."
            )


def leaked_parents(manifest: pd.DataFrame) -> pd.Series:
    """For every synthetic row (index as in ``manifest``): the list of its parents that are real test images."""
    test_ids = _test_ids(manifest)
    synth = manifest[manifest["source"] == SYNTHETIC]
    return synth["parents"].map(lambda ps: [p for p in ps if p in test_ids])


def flag_leaked_synthetic(manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Exclude synthetic images with a parent in the test set; return (new manifest, their image_ids).

    Other exclusion reasons are kept; a synthetic image excluded only for ``parent in test set`` whose parents are all
    back in training becomes usable again. The input frame is not modified.
    """
    df = manifest.copy()
    leaked = leaked_parents(df)
    flagged: list[str] = []
    for idx, parents in leaked.items():
        reason = df.at[idx, "exclude_reason"]
        if parents:
            flagged.append(str(df.at[idx, "image_id"]))
            if pd.isna(reason):
                df.at[idx, "exclude_reason"] = PARENT_IN_TEST
        elif not pd.isna(reason) and reason == PARENT_IN_TEST:
            df.at[idx, "exclude_reason"] = pd.NA
    return df, flagged


def lineage_report(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per synthetic image with a parent in the test set: ``image_id, label, generator, test_parents``
    (';'-joined), ``exclude_reason``. Empty when the lineage is clean."""
    leaked = leaked_parents(manifest)
    leaked = leaked[leaked.map(len) > 0]
    rows = manifest.loc[leaked.index, ["image_id", "label", "generator", "exclude_reason"]].copy()
    rows.insert(3, "test_parents", leaked.map(";".join))
    return rows.reset_index(drop=True)


def children_of(manifest: pd.DataFrame, parent_ids: Iterable[str]) -> list[str]:
    """image_ids of the synthetic images made (in part) from any of ``parent_ids``."""
    parents = set(parent_ids)
    synth = manifest[manifest["source"] == SYNTHETIC]
    return synth.loc[synth["parents"].map(lambda ps: any(p in parents for p in ps)), "image_id"].astype(str).tolist()
