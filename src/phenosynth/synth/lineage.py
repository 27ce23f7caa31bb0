"""Lineage of synthetic images: the held-out test set must never reach training through a synthetic child.

- :func:`check_training_parents` is what every generator calls before it looks at an image: anything that is not a
  usable real *training* image raises :class:`~phenosynth.errors.LeakageError`.
- :func:`flag_leaked_synthetic` is what runs after a re-split: synthetic images with a parent now in the test set
  are excluded (reason ``parent in test set``), and images whose parents are all back in training are released.
- :func:`lineage_report` lists, for every synthetic image with a parent in the test set, which parents those are.
- A generator learns from more than the photos it warps (``shape-warp``'s shape model is fitted on every training
  face), so each run also records its whole training set in ``WS/synthetic/<run>/run.json``;
  :func:`load_fit_sets` reads them and ``flag_leaked_synthetic(manifest, fit_sets)`` also excludes every image of a
  run that learned from an image now in the test set (reason ``generator fit on a test image``: re-generate after a
  re-split). :func:`check_workspace_lineage` does both on a workspace and saves the manifest.

The data layer (``phenosynth.data.split``) cannot import this package and performs the same check on its own; the
two must agree (the tests check it on the same manifest).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from phenosynth.data.manifest import REAL, SYNTHETIC, TEST, TRAIN
from phenosynth.data.split import PARENT_IN_TEST  # exclude_reason of a child of a test image (one name, one place)
from phenosynth.errors import LeakageError, PhenosynthError

#: exclude_reason given to a synthetic image whose generator run learned from an image now in the test set.
FIT_ON_TEST = "generator fit on a test image"


def _test_ids(manifest: pd.DataFrame) -> set[str]:
    return set(manifest.loc[(manifest["source"] == REAL) & (manifest["split"] == TEST), "image_id"].astype(str))


def check_training_parents(
    image_ids: Sequence[str], splits: Sequence[object], sources: Sequence[object] | None = None
) -> None:
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
            f"{len(test)} held-out test image(s) were handed to a generator "
            f"(e.g. {', '.join(t[:12] for t in test[:5])}). "
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


def _run_of(params: object) -> str | None:
    if not isinstance(params, str) or not params:
        return None
    try:
        run = json.loads(params).get("run")
    except (ValueError, AttributeError):
        return None
    return str(run) if run is not None else None


def flag_leaked_synthetic(
    manifest: pd.DataFrame, fit_sets: Mapping[str, Iterable[str]] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Exclude synthetic images with a parent in the test set; return (new manifest, their image_ids).

    fit_sets: optional run name -> image_ids that run's generator learned from (:func:`load_fit_sets`); every image
    of a run (``params["run"]``) that learned from a now-test image is excluded too (reason ``FIT_ON_TEST``).

    Other exclusion reasons are kept; a synthetic image excluded only for one of these two reasons whose parents (and
    run) are all back in training becomes usable again. The input frame is not modified.
    """
    df = manifest.copy()
    leaked = leaked_parents(df)
    test_ids = _test_ids(df)
    bad_runs = {run for run, ids in (fit_sets or {}).items() if any(str(i) in test_ids for i in ids)}
    flagged: list[str] = []
    for idx, parents in leaked.items():
        reason = df.at[idx, "exclude_reason"]
        new_reason = PARENT_IN_TEST if parents else None
        if new_reason is None and bad_runs and _run_of(df.at[idx, "params"]) in bad_runs:
            new_reason = FIT_ON_TEST
        if new_reason is not None:
            flagged.append(str(df.at[idx, "image_id"]))
            if pd.isna(reason) or reason in (PARENT_IN_TEST, FIT_ON_TEST):
                df.at[idx, "exclude_reason"] = new_reason
        elif not pd.isna(reason) and reason in (PARENT_IN_TEST, FIT_ON_TEST):
            df.at[idx, "exclude_reason"] = pd.NA
    return df, flagged


def load_fit_sets(ws) -> dict[str, list[str]]:  # noqa: ANN001 (phenosynth.data.Workspace)
    """run name -> the image_ids its generator learned from, from ``WS/synthetic/*/run.json``."""
    out: dict[str, list[str]] = {}
    for record in sorted(Path(ws.synthetic_dir).glob("*/run.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if "run" in data and "training_images" in data:
            out[str(data["run"])] = [str(i) for i in data["training_images"]]
    return out


def check_workspace_lineage(ws) -> tuple[list[str], pd.DataFrame]:  # noqa: ANN001 (phenosynth.data.Workspace)
    """Run :func:`flag_leaked_synthetic` with the workspace's run records, save the manifest when anything changed,
    and return (flagged image_ids, :func:`lineage_report` of the result)."""
    manifest = ws.load_manifest()
    new, flagged = flag_leaked_synthetic(manifest, load_fit_sets(ws))
    if not new["exclude_reason"].equals(manifest["exclude_reason"]):
        ws.save_manifest(new)
    return flagged, lineage_report(new)


def lineage_report(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per synthetic image with a parent in the test set or excluded because its generator learned from a
    test image: ``image_id, label, generator, test_parents`` (';'-joined, may be empty), ``exclude_reason``. Empty
    when the lineage is clean."""
    leaked = leaked_parents(manifest)
    reasons = manifest.loc[leaked.index, "exclude_reason"]
    keep = (leaked.map(len) > 0) | (reasons == FIT_ON_TEST).fillna(False).astype(bool)
    rows = manifest.loc[leaked.index[keep.to_numpy()], ["image_id", "label", "generator", "exclude_reason"]].copy()
    rows.insert(3, "test_parents", leaked[keep.to_numpy()].map(";".join))
    return rows.reset_index(drop=True)
