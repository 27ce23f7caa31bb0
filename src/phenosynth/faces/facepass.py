"""The face pass: detect the face and its landmarks in every manifest image and keep them in ``faces.parquet``.

One row per (image_id, detector, landmarker) — see docs/ARCHITECTURE.md. Only images without a row for the current
settings are computed, on every core (each worker process loads the models once). A face that is not found at first
is looked for again with more upsampling, then on the image padded by 50 % (RDFace's recipe, 25 % on each side)
before the image is marked ``no-face``. When several faces are found the largest is kept (``ok-largest-of-N``).
Images without a face stay in the manifest; :func:`load_faces` leaves them out and :func:`face_exclusions` says why.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import sys
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.data.filenames import safe_file_name
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import WorkspaceError
from phenosynth.faces.detectors import (
    DEFAULT_DETECTOR,
    DEFAULT_LANDMARKER,
    DETECTORS,
    LANDMARKERS,
    Detection,
    Detector,
    Landmarker,
    create_detector,
    create_landmarker,
    mtcnn_module,
)
from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)

FACES_COLUMNS: list[str] = [
    "image_id", "detector", "landmarker", "status", "n_faces", "score",
    "box_x0", "box_y0", "box_x1", "box_y1", "landmarks", "landmarks5", "attempt",
]  # fmt: skip

#: Images whose long side is larger than this are shrunk for detection (landmarks use the full image).
DETECT_MAX_SIDE = 1024
#: Padding of the last retry, as a fraction of the image size (split over both sides).
PAD_FRACTION = 0.5


def is_ok(status: object) -> bool:
    return isinstance(status, str) and (status == "ok" or status.startswith("ok-largest-of-"))


@dataclass(frozen=True)
class FaceResult:
    """What the face pass found in one image."""

    status: str
    n_faces: int = 0
    score: float = float("nan")
    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray | None = None  # (K, 2)
    landmarks5: np.ndarray | None = None  # (5, 2) RetinaFace order
    attempt: str | None = None


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def _attempts(image: np.ndarray, detector: Detector, upsample: int) -> tuple[list[Detection], str | None]:
    """Detect with retries; boxes are returned in ``image`` coordinates."""
    small, s = _shrink(image, DETECT_MAX_SIDE)
    h, w = small.shape[:2]
    plans: list[tuple[str, int, int]] = [(f"upsample={upsample}", upsample, 0)]
    if max(h, w) * 2 ** (upsample + 1) <= 2 * DETECT_MAX_SIDE:
        plans.append((f"upsample={upsample + 1}", upsample + 1, 0))
    pad = int(round(PAD_FRACTION / 2 * max(h, w)))
    plans.append((f"pad{int(PAD_FRACTION * 100)}+upsample={upsample}", upsample, pad))
    for label, up, p in plans:
        img = small if p == 0 else np.pad(small, ((p, p), (p, p)) + ((0, 0),) * (small.ndim - 2), mode="constant")
        dets = detector.detect(img, up)
        if dets:
            out = []
            for d in dets:
                box = (d.box - p) / s
                lm5 = None if d.landmarks5 is None else (d.landmarks5 - p) / s
                out.append(Detection(box, d.score, lm5))
            return out, label
    return [], None


def analyse_image(image: np.ndarray, detector: Detector, landmarker: Landmarker, *, upsample: int = 1) -> FaceResult:
    """Find the (largest) face in ``image`` ``(H, W, 3)`` uint8 RGB and its landmarks."""
    dets, attempt = _attempts(image, detector, upsample)
    if not dets:
        return FaceResult(status="no-face")
    best = max(dets, key=lambda d: d.area)
    h, w = image.shape[:2]
    box = best.box.copy()
    box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, h)  # stored clipped to the image
    # The landmarker works from the detector's own box (dlib's predictors were trained on unclipped boxes).
    lm = landmarker(image, best)
    status = "ok" if len(dets) == 1 else f"ok-largest-of-{len(dets)}"
    return FaceResult(
        status=status,
        n_faces=len(dets),
        score=float(best.score),
        box=box,
        landmarks=np.asarray(lm, dtype=np.float64),
        landmarks5=np.asarray(landmarker.five(lm), dtype=np.float64),
        attempt=attempt,
    )


# --- worker processes ----------------------------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], tuple[Detector, Landmarker]] = {}


def _models(detector: str, landmarker: str) -> tuple[Detector, Landmarker]:
    key = (detector, landmarker)
    if key not in _MODELS:
        _MODELS[key] = (create_detector(detector), create_landmarker(landmarker))
    return _MODELS[key]


def _uses_torch(detector: str, landmarker: str) -> bool:
    return "mtcnn" in detector or "mtcnn" in landmarker


def _init_worker(detector: str, landmarker: str) -> None:
    if _uses_torch(detector, landmarker):  # one thread per worker: the workers already fill the cores
        import torch

        torch.set_num_threads(1)
    _models(detector, landmarker)


def _row(image_id: str, detector: str, landmarker: str, r: FaceResult) -> dict[str, Any]:
    box = r.box if r.box is not None else [np.nan] * 4
    return {
        "image_id": image_id,
        "detector": detector,
        "landmarker": landmarker,
        "status": r.status,
        "n_faces": int(r.n_faces),
        "score": float(r.score),
        "box_x0": float(box[0]),
        "box_y0": float(box[1]),
        "box_x1": float(box[2]),
        "box_y1": float(box[3]),
        "landmarks": None if r.landmarks is None else r.landmarks.ravel().tolist(),
        "landmarks5": None if r.landmarks5 is None else r.landmarks5.ravel().tolist(),
        "attempt": r.attempt,
    }


def _process(task: tuple[str, str, str, str, int]) -> dict[str, Any]:
    from phenosynth.data.imageio import load_rgb

    image_id, path, detector, landmarker, upsample = task
    try:
        det, lmk = _models(detector, landmarker)
        result = analyse_image(load_rgb(path), det, lmk, upsample=upsample)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the pass; its row says why
        log.debug("face pass failed on %s: %s", path, exc)  # the row says why; workers stay quiet
        result = FaceResult(status=f"error: {' '.join(str(exc).split())[:200] or type(exc).__name__}")
    return _row(image_id, detector, landmarker, result)


# --- the pass ------------------------------------------------------------------------------------------------------
@dataclass
class FacePassSummary:
    """What :func:`run_face_pass` did. ``by_status`` counts every manifest image under these settings."""

    detector: str
    landmarker: str
    images: int
    computed: int
    cached: int  # not computed now: already in faces.parquet, or saved by an interrupted pass (``resumed``)
    resumed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 1
    faces_path: Path | None = None

    @property
    def found(self) -> int:
        return sum(n for s, n in self.by_status.items() if is_ok(s))


def _read_faces(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FACES_COLUMNS})
    return pd.read_parquet(path)


def _write_faces(path: Path, df: pd.DataFrame) -> None:
    df = df.reset_index(drop=True)
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


def face_parts_dir(ws: Workspace, detector: str, landmarker: str) -> Path:
    """``WS/cache/faces-parts/<detector>+<landmarker>/``: the rows of an unfinished face pass, one
    ``part-<digest>.parquet`` per flushed chunk (digest of its image_ids). The next pass with these settings takes
    them instead of recomputing, and folds them into ``faces.parquet`` when it ends; readers never see them."""
    return ws.cache_dir / "faces-parts" / safe_file_name(f"{detector}+{landmarker}", allow_plus=True)


def _as_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back from a part file, in the form :func:`_row` builds (lists, not arrays)."""
    out = {c: row.get(c) for c in FACES_COLUMNS}
    for c in ("landmarks", "landmarks5"):
        v = out[c]
        out[c] = None if v is None else [float(x) for x in v]
    out["n_faces"] = int(out["n_faces"])
    return out


def _read_parts(folder: Path) -> dict[str, dict[str, Any]]:
    """image_id -> row of every readable part file in ``folder`` (a part cut short by a crash is skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    for part in sorted(folder.glob("part-*.parquet")) if folder.exists() else []:
        try:
            records = pd.read_parquet(part).to_dict("records")
        except Exception as exc:  # noqa: BLE001 - a damaged part only costs its images a recompute
            log.warning("Ignoring unreadable face-pass part %s (%s); its images are computed again", part, exc)
            continue
        for r in records:
            rows.setdefault(str(r["image_id"]), _as_record(r))
    return rows


def _write_part(folder: Path, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(r["image_id"] for r in rows).encode()).hexdigest()[:16]
    df = pd.DataFrame(rows, columns=FACES_COLUMNS)
    atomic_write(folder / f"part-{digest}.parquet", lambda p: df.to_parquet(p, index=False))


def status_group(status: str) -> str:
    """``ok-largest-of-3`` -> ``ok-largest-of-N``; ``error: ...`` -> ``error``; others unchanged (for summaries)."""
    if status.startswith("ok-largest-of-"):
        return "ok-largest-of-N"
    if status.startswith("error"):
        return "error"
    return status


@locks_workspace
def run_face_pass(
    ws: Workspace,
    *,
    detector: str = DEFAULT_DETECTOR,
    landmarker: str = DEFAULT_LANDMARKER,
    upsample: int = 1,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    checkpoint_every: int = 200,
    checkpoint_seconds: float = 5.0,
) -> FacePassSummary:
    """Run the face pass over every manifest image not yet processed with these settings; update ``faces.parquet``.

    Progress is saved as it goes: every ``checkpoint_every`` images or ``checkpoint_seconds`` seconds (whichever
    comes first) the new rows go to a part file under :func:`face_parts_dir`, so a pass that is killed loses at most
    one chunk, and the next pass computes only the rest (``summary.resumed`` counts the rows it took from the parts).
    ``faces.parquet`` is rewritten once, at the end, with the new rows in manifest order (the same bytes whether or
    not the pass was interrupted).

    Args:
        ws: the workspace (needs a manifest).
        detector / landmarker: registry names (``list_detectors()``, ``list_landmarkers()``).
        upsample: first-attempt upsampling of the detector (a retry uses one more).
        workers: processes (default: every core; small jobs run in this process).
        on_progress: ``(done, total)`` callback; ``done`` starts at the images taken from an interrupted pass.
        checkpoint_every / checkpoint_seconds: how often progress is saved.
    """
    t0 = time.perf_counter()
    DETECTORS.get(detector)  # unknown names fail here, before any work
    LANDMARKERS.get(landmarker)
    manifest = ws.load_manifest()
    if manifest.empty:
        raise WorkspaceError(f"Workspace {ws.root} has no images. Run first: phenosynth ingest SRC -w {ws.root}")
    faces = _read_faces(ws.faces_path)
    mine = (faces["detector"] == detector) & (faces["landmarker"] == landmarker)
    done_ids = set(faces.loc[mine, "image_id"])
    todo = manifest[~manifest["image_id"].isin(done_ids)].drop_duplicates("image_id")
    parts_dir = face_parts_dir(ws, detector, landmarker)
    saved = _read_parts(parts_dir)
    resumed = {i: saved[i] for i in todo["image_id"].astype(str) if i in saved}
    tasks = [
        (str(i), str(ws.resolve(p)), detector, landmarker, upsample)
        for i, p in zip(todo["image_id"], todo["path"])
        if str(i) not in resumed
    ]
    total = len(tasks) + len(resumed)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks))) if tasks else 1
    if len(tasks) < 4 or (_uses_torch(detector, landmarker) and len(tasks) < 32):
        n_workers = 1  # starting workers would cost more than it saves (torch workers import torch afresh)
    log.info(
        "face pass: %d images to compute, %d from cache (%d saved by an interrupted pass), %d worker(s)",
        len(tasks), len(manifest) - len(tasks), len(resumed), n_workers,
    )  # fmt: skip
    report(on_progress, len(resumed), total)

    new_rows: dict[str, dict[str, Any]] = dict(resumed)
    pending: list[dict[str, Any]] = []
    last_flush = [time.monotonic()]

    def flush() -> None:
        if pending:
            _write_part(parts_dir, pending)
            pending.clear()
        last_flush[0] = time.monotonic()

    if tasks:
        if n_workers == 1 or not _uses_torch(detector, landmarker):
            _models(detector, landmarker)  # dlib models: loaded once here, forked workers inherit them
        else:
            mtcnn_module()  # a missing facenet-pytorch fails here, with its install hint, not in every worker
        if n_workers == 1:
            results = map(_process, tasks)
            pool = None
        else:
            # dlib models are inherited through fork; but a fork is not safe once torch's (or another library's)
            # threads have run in this process - MTCNN, or a caller that used torch before (a notebook, the demo) -
            # so then workers start fresh from a fork server and load their own models.
            methods = mp.get_all_start_methods()
            threaded = _uses_torch(detector, landmarker) or "torch" in sys.modules
            method = "forkserver" if threaded and "forkserver" in methods else "fork"
            ctx = mp.get_context(method if method in methods else "spawn")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(detector, landmarker))
            chunk = max(1, min(8, len(tasks) // (n_workers * 8)))
            results = pool.imap_unordered(_process, tasks, chunksize=chunk)
        finished = False
        try:
            for row in results:
                new_rows[row["image_id"]] = row
                pending.append(row)
                if len(pending) >= max(1, checkpoint_every) or time.monotonic() - last_flush[0] >= checkpoint_seconds:
                    flush()
                report(on_progress, len(new_rows), total)
            finished = True
        finally:
            if pool is not None:
                if finished:
                    pool.close()
                else:
                    pool.terminate()  # an error or Ctrl-C: stop at once, keep what is done
                pool.join()
            if not finished:
                flush()
    if new_rows:
        order = [str(i) for i in todo["image_id"] if str(i) in new_rows]  # manifest order, however computed
        new = pd.DataFrame([new_rows[i] for i in order], columns=FACES_COLUMNS)
        merged = pd.concat([faces, new], ignore_index=True) if len(faces) else new
        _write_faces(ws.faces_path, merged)
    else:
        merged = faces
    if parts_dir.exists():  # folded into faces.parquet (or stale: rows of images that left the manifest)
        shutil.rmtree(parts_dir, ignore_errors=True)
    mine = merged[(merged["detector"] == detector) & (merged["landmarker"] == landmarker)]
    mine = mine[mine["image_id"].isin(manifest["image_id"])]
    counts = mine["status"].map(status_group).value_counts().sort_index()
    return FacePassSummary(
        detector=detector,
        landmarker=landmarker,
        images=len(manifest),
        computed=len(tasks),
        cached=len(manifest) - len(tasks),
        resumed=len(resumed),
        by_status={str(k): int(v) for k, v in counts.items()},
        seconds=time.perf_counter() - t0,
        workers=n_workers,
        faces_path=ws.faces_path,
    )


class FaceSettingsError(WorkspaceError):
    """``faces.parquet`` holds several detector/landmarker settings and the caller did not say which to use (or
    named one it lacks)."""


def _pick_settings(faces: pd.DataFrame, detector: str | None, landmarker: str | None) -> tuple[str, str]:
    """The one (detector, landmarker) setting ``faces`` holds that matches the given names (``None`` = any).

    No rows at all: the defaults. Several matching settings, or none: :class:`FaceSettingsError` listing the settings
    present and the options to pass (never a guess).
    """
    present = sorted({(str(d), str(lm)) for d, lm in zip(faces["detector"], faces["landmarker"])
                      if pd.notna(d) and pd.notna(lm)})
    if not present:
        return detector or DEFAULT_DETECTOR, landmarker or DEFAULT_LANDMARKER
    if detector is not None and landmarker is not None:
        return detector, landmarker  # load_faces says so if these have no rows
    matching = [(d, lm) for d, lm in present
                if (detector is None or d == detector) and (landmarker is None or lm == landmarker)]
    if len(matching) == 1:
        return matching[0]
    have = "; ".join(f"--detector {d} --landmarker {lm}" for d, lm in present)
    asked = " and ".join(f"--{k} {v}" for k, v in (("detector", detector), ("landmarker", landmarker)) if v)
    if not matching:
        raise FaceSettingsError(f"faces.parquet has no rows for {asked}; it holds these face settings: {have}. "
                                "Pass one of them (study spec: detector: and landmarker:).")
    raise FaceSettingsError(
        f"faces.parquet holds {len(matching)} face settings{' for ' + asked if asked else ''} ({have}); "
        "choose one with --detector and --landmarker (study spec: detector: and landmarker:)."
    )


def resolve_face_settings(ws: Workspace, detector: str | None = None, landmarker: str | None = None) -> tuple[str, str]:
    """The (detector, landmarker) every stage after the face pass uses: the names given, completed from the only
    setting in ``faces.parquet`` that matches them. Several settings and no choice -> :class:`FaceSettingsError`
    naming them (ranking, selection, training and studies call this; they never fall back to a default)."""
    if not ws.faces_path.exists():
        raise WorkspaceError(f"Workspace {ws.root} has no faces.parquet yet. Run first: phenosynth faces -w {ws.root}")
    return _pick_settings(pd.read_parquet(ws.faces_path, columns=["detector", "landmarker"]), detector, landmarker)


def load_faces(
    ws: Workspace, detector: str | None = None, landmarker: str | None = None, *, ok_only: bool = True
) -> pd.DataFrame:
    """``faces.parquet`` rows for one setting, indexed by ``image_id``; ``landmarks`` ``(K, 2)`` and ``landmarks5``
    ``(5, 2)`` as float arrays. Only rows with an ``ok`` status unless ``ok_only=False``.

    ``detector``/``landmarker`` ``None``: resolved by :func:`resolve_face_settings` (the only setting present;
    several raise :class:`FaceSettingsError`).
    """
    if not ws.faces_path.exists():
        raise WorkspaceError(f"Workspace {ws.root} has no faces.parquet yet. Run first: phenosynth faces -w {ws.root}")
    faces = pd.read_parquet(ws.faces_path)
    detector, landmarker = _pick_settings(faces, detector, landmarker)
    df = faces[(faces["detector"] == detector) & (faces["landmarker"] == landmarker)].copy()
    if df.empty and not faces.empty:
        have = sorted(set(zip(faces["detector"], faces["landmarker"])))
        raise WorkspaceError(
            f"faces.parquet has no rows for --detector {detector} --landmarks {landmarker} (it has: "
            f"{', '.join(f'{d} + {lm}' for d, lm in have)}). Run: phenosynth faces -w {ws.root} "
            f"--detector {detector} --landmarks {landmarker}"
        )
    if ok_only:
        df = df[df["status"].map(is_ok)]
    df["landmarks"] = [None if v is None else np.asarray(v, dtype=np.float64).reshape(-1, 2) for v in df["landmarks"]]
    df["landmarks5"] = [None if v is None else np.asarray(v, dtype=np.float64).reshape(5, 2) for v in df["landmarks5"]]
    return df.drop_duplicates("image_id", keep="last").set_index("image_id")


def face_boxes(faces: pd.DataFrame) -> np.ndarray:
    """``(N, 4)`` boxes (x0, y0, x1, y1) of a :func:`load_faces` frame."""
    return faces[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=np.float64)


def face_landmarks(faces: pd.DataFrame, *, five: bool = False) -> np.ndarray:
    """``(N, K, 2)`` landmarks (``five=True``: the RetinaFace-order 5 points) of a :func:`load_faces` frame."""
    col = "landmarks5" if five else "landmarks"
    return np.stack(list(faces[col])) if len(faces) else np.zeros((0, 5 if five else 68, 2))


def face_exclusions(ws: Workspace, detector: str | None = None, landmarker: str | None = None) -> pd.Series:
    """image_id -> reason (``no-face`` / ``error: ...`` / ``not processed by the face pass``) for every manifest
    image that downstream stages must skip for want of a face."""
    manifest = ws.load_manifest()
    faces = load_faces(ws, detector, landmarker, ok_only=False)
    status = faces["status"].reindex(manifest["image_id"].astype(str))
    reasons = {
        str(i): ("not processed by the face pass" if pd.isna(st) else str(st))
        for i, st in status.items()
        if pd.isna(st) or not is_ok(st)
    }
    return pd.Series(reasons, dtype="string", name="reason")
