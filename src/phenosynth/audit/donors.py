"""Donor screening: keep donor faces that look like a patient out of identity-free generation.

A donor lends its identity to every image made from it, so a donor whom the face matcher takes for a patient makes
every such image an identity match to that patient, whatever the generator does (on ORL 3 of 8 donor people did:
benchmarks/results/identity_free.md). :func:`screen_donors` measures, before any generation, each donor photo's
identity distance to its nearest real **training** photo (the patients whose photos a generator learns from; the audit
compares synthetic images with the same photos), with the audit's embedder, feature cache and threshold
(:func:`phenosynth.audit.privacy.calibrate_identity`, calibrated on the workspace's own genuine and impostor
distances; "same person" is ``distance < threshold``, as in the audit). Every donor **person** (``subject_id``; a
photo without one is its own person) any of whose photos is under the threshold is excluded in the manifest
(``exclude_reason`` :data:`DONOR_RESEMBLES_PATIENT`): all of that person's photos, since one photo that matches says
the person looks like a patient. A donor excluded for that reason before and no longer matched (after a re-split,
new patient photos, another embedder) is released; other exclusion reasons are left as they are.

Writes ``WS/audit/donors/screen.parquet`` (one row per screened donor photo, :data:`SCREEN_COLUMNS`: the nearest
patient training photo's image_id and distance; no pixels of anyone) and ``WS/audit/donors/screen.json`` (the
calibration, the settings, the people excluded and released), atomically, holding the workspace lock.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.audit import stats
from phenosynth.audit.privacy import audit_dir, calibrate_identity, embed_faces, resolve_metric
from phenosynth.data.manifest import DONOR, REAL, TRAIN, require_real_train, usable
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import PhenosynthError
from phenosynth.progress import ProgressCallback

log = logging.getLogger(__name__)

#: ``exclude_reason`` of every photo of a donor person whom the identity embedder takes for a patient.
DONOR_RESEMBLES_PATIENT = ("donor resembles a patient (a photo's identity distance to a patient training photo is "
                           "under the audit's threshold; WS/audit/donors/screen.parquet)")

SCREEN_COLUMNS = ["image_id", "path", "person", "has_face", "nearest_patient_id", "nearest_patient_subject",
                  "distance", "match", "person_excluded"]


@dataclass
class DonorScreen:
    """What :func:`screen_donors` found and did."""

    embedder: str
    metric: str
    calibration: stats.Calibration
    n_photos: int  # donor photos screened
    n_measured: int  # of them, with a face embedding
    n_people: int
    n_patient_photos: int  # real training photos compared with
    excluded: dict[str, float]  # person -> the distance of its photo nearest to a patient (all under the threshold)
    newly_excluded: list[str]  # people excluded by this screening (not before)
    released: list[str]  # people excluded for DONOR_RESEMBLES_PATIENT before and no longer matched
    unmeasured: list[str]  # people none of whose photos has a face embedding (kept; nothing to compare)
    parquet_path: Path
    summary_path: Path
    seconds: float
    frame: pd.DataFrame = field(repr=False, default_factory=lambda: pd.DataFrame(columns=SCREEN_COLUMNS))

    @property
    def n_kept(self) -> int:
        """Donor people still usable after the screening."""
        return self.n_people - len(self.excluded)


def screen_dir(ws: Workspace) -> Path:
    """``WS/audit/donors``."""
    return audit_dir(ws, "donors")


def _person(rows: pd.DataFrame) -> pd.Series:
    """Each row's donor person: its subject_id, else the photo itself."""
    return rows["subject_id"].astype("object").where(rows["subject_id"].notna(), rows["image_id"]).astype(str)


def screened_donors(manifest: pd.DataFrame) -> pd.DataFrame:
    """The donor rows a screening measures: usable donors and those excluded by an earlier screening (to release)."""
    donor = manifest[manifest["source"] == DONOR]
    return donor[donor["exclude_reason"].isna() | (donor["exclude_reason"] == DONOR_RESEMBLES_PATIENT)]


def apply_screen(manifest: pd.DataFrame, excluded_people: set[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """``(manifest, newly excluded people, released people)``: every donor photo of ``excluded_people`` excluded with
    :data:`DONOR_RESEMBLES_PATIENT` (a photo excluded for another reason keeps it); every donor photo excluded for that
    reason whose person is not in ``excluded_people`` released. The input frame is not modified.

    >>> from phenosynth.data.manifest import conform
    >>> m = conform(pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["a", "b", "c"], "source": "donor",
    ...                           "subject_id": ["p", "p", "q"], "exclude_reason": [None, None, DONOR_RESEMBLES_PATIENT]}))
    >>> out, new, released = apply_screen(m, {"p"})
    >>> out["exclude_reason"].notna().tolist(), new, released
    ([True, True, False], ['p'], ['q'])
    """
    df = manifest.copy()
    is_donor = (df["source"] == DONOR).to_numpy()
    person = _person(df).to_numpy()
    reason = df["exclude_reason"]
    ours = (reason == DONOR_RESEMBLES_PATIENT).fillna(False).to_numpy(dtype=bool)
    hit = is_donor & np.isin(person, sorted(excluded_people))
    newly = sorted(set(person[hit & reason.isna().to_numpy()]) - set(person[hit & ours]))
    release = is_donor & ours & ~hit
    df.loc[hit & reason.isna().to_numpy(), "exclude_reason"] = DONOR_RESEMBLES_PATIENT
    df.loc[release, "exclude_reason"] = pd.NA
    return df, newly, sorted(set(person[release]))


@locks_workspace
def screen_donors(
    ws: Workspace,
    *,
    embedder: str = "dlib_resnet128",
    weights: str = "default",
    preprocessing: str = "native",
    metric: str | None = None,
    quantile: float = 0.001,
    on_progress: ProgressCallback | None = None,
) -> DonorScreen:
    """Screen the workspace's donor faces against the patients' training photos; exclude (and release) donor people
    in the manifest; write ``WS/audit/donors/screen.parquet`` and ``screen.json``.

    Args:
        ws: a split workspace with the face pass run on its real photos and donor faces.
        embedder, weights, preprocessing, metric, quantile: the identity embedder and its threshold, as
            :func:`phenosynth.audit.privacy.audit` takes them (use the same as the audit of the donor runs).
        on_progress: ``(done, total)`` of the embedding step (cached for the audit).

    Raises:
        PhenosynthError: no donor faces, no split, no embedding of any real training photo, or too few real subjects
            to calibrate an embedder without a documented threshold.
    """
    t0 = time.perf_counter()
    metric, doc = resolve_metric(embedder, metric)
    manifest = ws.load_manifest()
    pool = screened_donors(manifest)
    if pool.empty:
        raise PhenosynthError(f"Workspace {ws.root} has no donor faces to screen. Add some first: "
                              f"phenosynth ingest DIR -w {ws.root} --donors")
    require_real_train(manifest, ws.root)
    real = usable(manifest)
    real = real[real["source"] == REAL]
    donor_ids = pool["image_id"].astype(str).tolist()
    emb = embed_faces(ws, embedder, real["image_id"].astype(str).tolist() + donor_ids, weights, preprocessing,
                      on_progress)
    real_e, _, _, calibration = calibrate_identity(ws, emb, real, embedder, doc, metric, quantile)
    train = real_e[real_e["split"] == TRAIN]
    if train.empty:
        raise PhenosynthError(f"No real training photo of {ws.root} has a face embedding by {embedder}. Run first: "
                              f"phenosynth faces -w {ws.root}")
    frame = _nearest_patients(pool, emb, train, calibration.threshold, metric)
    matched = frame[frame["match"]]
    excluded = {str(p): float(d) for p, d in matched.groupby("person")["distance"].min().sort_index().items()}
    frame["person_excluded"] = frame["person"].isin(excluded)

    out = screen_dir(ws)
    screen = DonorScreen(
        embedder=embedder, metric=metric, calibration=calibration, n_photos=len(frame),
        n_measured=int(frame["has_face"].sum()), n_people=int(frame["person"].nunique()), n_patient_photos=len(train),
        excluded=excluded, newly_excluded=[], released=[],
        unmeasured=sorted(set(frame["person"]) - set(frame.loc[frame["has_face"], "person"])),
        parquet_path=out / "screen.parquet", summary_path=out / "screen.json", seconds=0.0, frame=frame,
    )
    atomic_write(screen.parquet_path, lambda p: frame.to_parquet(p, index=False))
    # the manifest is read again here: this function holds the lock, so nothing changed it since
    updated, screen.newly_excluded, screen.released = apply_screen(ws.load_manifest(), set(excluded))
    ws.save_manifest(updated)
    screen.seconds = time.perf_counter() - t0
    settings = {"embedder": embedder, "weights": weights, "preprocessing": preprocessing, "metric": metric,
                "quantile": quantile, "documented_source": None if doc is None else doc.source}
    _write_summary(screen, settings)
    if screen.unmeasured:
        log.warning("%d donor people have no face embedding by %s and were not screened: %s", len(screen.unmeasured),
                    embedder, ", ".join(screen.unmeasured))
    if excluded:
        log.warning("%d of %d donor people resemble a patient and are excluded: %s", len(excluded), screen.n_people,
                    ", ".join(excluded))
    return screen


def _nearest_patients(pool: pd.DataFrame, emb: dict[str, np.ndarray], train: pd.DataFrame, threshold: float,
                      metric: str) -> pd.DataFrame:
    """One row per donor photo (:data:`SCREEN_COLUMNS` but ``person_excluded``): its nearest patient training photo."""
    pool = pool.reset_index(drop=True)
    ids = pool["image_id"].astype(str).tolist()
    measured = [i for i in ids if i in emb]
    train_ids = train["image_id"].astype(str).tolist()
    d, j = stats.nearest_neighbours(np.stack([emb[i] for i in measured]) if measured else np.zeros((0, 1)),
                                    np.stack([emb[i] for i in train_ids]), metric)
    nearest = {i: (train_ids[k], float(v)) for i, k, v in zip(measured, j, d)}
    subject = dict(zip(train_ids, train["subject"].astype(str)))
    frame = pd.DataFrame({
        "image_id": ids, "path": pool["path"].astype(str).tolist(), "person": _person(pool).tolist(),
        "has_face": [i in nearest for i in ids],
        "nearest_patient_id": [nearest[i][0] if i in nearest else None for i in ids],
        "nearest_patient_subject": [subject[nearest[i][0]] if i in nearest else None for i in ids],
        "distance": [nearest[i][1] if i in nearest else np.nan for i in ids],
    })
    frame["match"] = frame["distance"] < threshold  # NaN (no face) compares False
    frame["person_excluded"] = False
    return frame[SCREEN_COLUMNS]


def _write_summary(screen: DonorScreen, settings: dict[str, Any]) -> None:
    summary = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "calibration": screen.calibration.to_dict(),
        "settings": settings,
        "rule": "a donor person is excluded when any of its photos is closer than the threshold to a real training "
                "photo (the audit's identity match)",
        "photos": screen.n_photos, "measured": screen.n_measured, "people": screen.n_people,
        "patient_photos": screen.n_patient_photos, "excluded": screen.excluded,
        "newly_excluded": screen.newly_excluded, "released": screen.released, "unmeasured": screen.unmeasured,
        "exclude_reason": DONOR_RESEMBLES_PATIENT, "seconds": round(screen.seconds, 3),
    }
    atomic_write(screen.summary_path, lambda p: Path(p).write_text(json.dumps(summary, indent=2)))


__all__ = ["screen_donors", "apply_screen", "screened_donors", "screen_dir", "DonorScreen", "DONOR_RESEMBLES_PATIENT",
           "SCREEN_COLUMNS"]
