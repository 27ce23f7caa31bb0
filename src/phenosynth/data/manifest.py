"""The manifest: one row per image, real and synthetic (see docs/DESIGN.md, "Workspace and data model").

Pure functions over a :class:`pandas.DataFrame`; reading and writing live in :mod:`phenosynth.data.workspace`.

Columns (contract): ``image_id`` (SHA-256 of the file bytes), ``path`` (relative to the workspace when inside it,
else absolute), ``label``, ``subject_id``, ``source`` (``real`` | ``synthetic`` | ``donor``: a face of a non-patient that lends
an identity to identity-free generators; never labelled, split, folded or tested), ``generator``, ``parents`` (list of
image_ids whose pixels are in a synthetic image: its **pixel** parents), ``statistic_parents`` (list of image_ids
that only shaped a statistic a synthetic image was drawn from, e.g. its condition's phenotype), ``split`` (``train`` | ``test`` | ``unseen`` | NA before ``split``; ``unseen``: a real photo of a condition held out
whole by ``split --unseen-fraction``, never a generator's input, never in a fold or a trained head's label space,
only a gallery query), ``fold``
(validation fold of a real training image, NA otherwise), ``exclude_reason`` (NA when usable; else why the image is
kept out of every downstream stage), ``width``, ``height``, ``phash`` (64-bit perceptual hash, hex), ``params``
(JSON of a synthetic image's generation parameters), then any metadata columns the user brought, unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError

REAL = "real"
SYNTHETIC = "synthetic"
DONOR = "donor"
TRAIN = "train"
TEST = "test"
#: ``split`` of the real photos of a condition held out whole (``split --unseen-fraction``): scored only by gallery
#: matching, leave-one-subject-out (:mod:`phenosynth.training.unseen`).
UNSEEN = "unseen"

#: The list-valued columns (lists of image_ids; ';'-joined in CSV).
LIST_COLUMNS = ("parents", "statistic_parents")
#: Column -> pandas dtype, in order.
MANIFEST_DTYPES: dict[str, str] = {
    "image_id": "string",
    "path": "string",
    "label": "string",
    "subject_id": "string",
    "source": "string",
    "generator": "string",
    "parents": "object",
    "statistic_parents": "object",
    "split": "string",
    "fold": "Int64",
    "exclude_reason": "string",
    "width": "Int64",
    "height": "Int64",
    "phash": "string",
    "params": "string",
}
MANIFEST_COLUMNS: list[str] = list(MANIFEST_DTYPES)


def empty_manifest() -> pd.DataFrame:
    return conform(pd.DataFrame({c: [] for c in MANIFEST_COLUMNS}))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with every contract column present, typed, first and in order; extra columns follow as they are.

    ``parents`` and ``statistic_parents`` are always lists of strings (empty for real images).
    """
    out = df.copy()
    for col, dtype in MANIFEST_DTYPES.items():
        if col not in out.columns:
            out[col] = pd.NA
        if col in LIST_COLUMNS:
            out[col] = [_as_list(v) for v in out[col]]
        else:
            out[col] = out[col].astype(dtype)
    extras = [c for c in out.columns if c not in MANIFEST_DTYPES]
    return out[MANIFEST_COLUMNS + extras].reset_index(drop=True)


def _as_list(value: object) -> list[str]:
    if value is None or value is pd.NA:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, str):
        return [p for p in value.split(";") if p] if value else []
    return [str(v) for v in value]


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows not excluded for any reason."""
    return df[df["exclude_reason"].isna()]


def real_train(df: pd.DataFrame) -> pd.DataFrame:
    """Usable real images in the training split."""
    u = usable(df)
    return u[(u["source"] == REAL) & (u["split"] == TRAIN)]


def require_real_train(df: pd.DataFrame, root: object) -> pd.DataFrame:
    """:func:`real_train` of the manifest of workspace ``root``; a :class:`PhenosynthError` saying to run ``split``
    first when there is none."""
    train = real_train(df)
    if train.empty:
        raise PhenosynthError(
            f"Workspace {root} has no real training images yet (no split). Run first: phenosynth split -w {root}"
        )
    return train


def real_test(df: pd.DataFrame) -> pd.DataFrame:
    """Usable real images in the held-out test split."""
    u = usable(df)
    return u[(u["source"] == REAL) & (u["split"] == TEST)]


def synthetic(df: pd.DataFrame) -> pd.DataFrame:
    """Usable synthetic images."""
    u = usable(df)
    return u[u["source"] == SYNTHETIC]


def donors(df: pd.DataFrame) -> pd.DataFrame:
    """Usable donor faces (non-patients who lend identities; no label, split or fold)."""
    u = usable(df)
    return u[u["source"] == DONOR]


def real_classes(df: pd.DataFrame) -> list[str]:
    """Every label that has at least one usable real image, sorted: the N-way label space. Unseen conditions
    (:func:`unseen_conditions`) are not in it."""
    u = usable(df)
    real = u[u["source"] == REAL]
    seen = set(real["label"].dropna()) - set(unseen_conditions(df))
    return sorted(seen)


def real_unseen(df: pd.DataFrame) -> pd.DataFrame:
    """Usable real photos of the conditions held out whole (``split == "unseen"``)."""
    u = usable(df)
    return u[(u["source"] == REAL) & (u["split"] == UNSEEN)]


def unseen_conditions(df: pd.DataFrame) -> list[str]:
    """The conditions held out whole by ``split --unseen-fraction`` (labels of real photos with ``split == "unseen"``,
    excluded or not), sorted."""
    rows = df[(df["source"] == REAL) & (df["split"] == UNSEEN)]
    return sorted(rows["label"].dropna().astype(str).unique().tolist())


def append_rows(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Append ``new`` rows whose ``image_id`` is not yet present (existing rows, and their split/fold, win)."""
    new = conform(new)
    fresh = new[~new["image_id"].isin(existing["image_id"])]
    if fresh.empty:
        return conform(existing)
    if existing.empty:
        return conform(fresh)
    return conform(pd.concat([conform(existing), fresh], ignore_index=True))


def to_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The manifest as a flat table: ``parents`` and ``statistic_parents`` joined with ';'."""
    out = df.copy()
    for col in LIST_COLUMNS:
        out[col] = [";".join(p) for p in out[col]]
    return out


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=float)


def summarize(df: pd.DataFrame) -> dict[str, object]:
    """Counts a user wants to see: images by source and split, classes, subjects, exclusions by reason.

    Donor faces are counted apart (``donors``: every donor row, ``donors_usable``); ``classes``, ``subjects`` and
    ``by_split`` are of real images only."""
    real = df[df["source"] == REAL]
    u = usable(df)
    ureal = u[u["source"] == REAL]
    test_labels = set(ureal.loc[ureal["split"] == TEST, "label"])
    classes = real_classes(df)
    return {
        "images": int(len(df)),
        "real": int(len(real)),
        "synthetic": int((df["source"] == SYNTHETIC).sum()),
        "donors": int((df["source"] == DONOR).sum()),
        "donors_usable": int((u["source"] == DONOR).sum()),
        "usable": int(len(u)),
        "classes": len(classes),
        "subjects": int(ureal["subject_id"].nunique()),
        "by_split": {str(k): int(v) for k, v in ureal["split"].fillna("unsplit").value_counts().sort_index().items()},
        "excluded": {str(k): int(v) for k, v in df["exclude_reason"].dropna().value_counts().sort_index().items()},
        "classes_absent_from_test": sorted(set(classes) - test_labels) if test_labels else [],
    }
