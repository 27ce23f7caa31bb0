"""Feature extraction over aligned face crops, cached per image in ``WS/cache/features/<key>/``.

The cache key is backbone + weights digest + preprocessing + face setting (+ the test-time augmentation view, for views
other than identity: ``...-view-flip``); each extraction that computes anything writes one
shard (``shard-<hash>.npz`` holding ``image_ids`` and ``X``); a later call loads the shards and computes only the
images that are missing, so a second call over the same images computes nothing. While it runs, an extraction
flushes its progress to ``part-<hash>.npz`` files (same format) that the loader also reads and the end of the call
folds into its shard, so a killed extraction is resumed, not restarted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from phenosynth.data.filenames import safe_file_name
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError
from phenosynth.models.backbones import Backbone, FaceLandmarks, backbone_spec, create_backbone, weights_id
from phenosynth.models.views import IDENTITY, apply_view, apply_view_to_landmarks
from phenosynth.models.weights import WeightDigests
from phenosynth.parallel import available_cpus, loader_start_method
from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)

#: Side of the aligned crops asked from the face stage; backbones resize from it.
CROP_SIZE = 224


def load_crop_tensor(path: str | os.PathLike[str], size: int, mean: Sequence[float], std: Sequence[float],
                     view: str = IDENTITY) -> torch.Tensor:
    """Aligned crop file -> normalised ``(3, size, size)`` float32 tensor (bilinear, antialiased resize), seen
    through the test-time augmentation ``view`` (:func:`phenosynth.models.views.apply_view`)."""
    from PIL import Image

    from phenosynth.data.imageio import load_rgb

    img = load_rgb(path)
    if view != IDENTITY:
        img = apply_view(img, view)
    if img.shape[0] != size or img.shape[1] != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


class CropDataset(Dataset):
    """Crop files -> normalised tensors; decoding runs in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float],
                 view: str = IDENTITY) -> None:
        self.paths, self.size, self.mean, self.std, self.view = list(paths), size, tuple(mean), tuple(std), view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_crop_tensor(self.paths[i], self.size, self.mean, self.std, self.view)


class ImageFeatureDataset(Dataset):
    """Crop files -> ``(d,)`` float32 features of an ``image`` backbone (dlib), computed in the DataLoader worker:
    such backbones run one crop at a time and hold the GIL, so worker processes are how they use every core."""

    def __init__(self, paths: Sequence[Path], model: Backbone, view: str = IDENTITY) -> None:
        self.paths, self.model, self.view = list(paths), model, view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from phenosynth.data.imageio import load_rgb

        return self.model.forward_features([apply_view(load_rgb(self.paths[i]), self.view)])[0]


def _stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows)


def _usable_cores() -> int:
    """:func:`phenosynth.parallel.available_cpus`; 1 inside a daemonic pool worker, which may not start processes."""
    import multiprocessing

    return 1 if multiprocessing.current_process().daemon else available_cpus()


def default_num_workers(n_items: int, batch_size: int) -> int:
    """Workers that decode while the main process runs the model: none for a single batch, else up to 2."""
    cores = _usable_cores()
    if n_items <= batch_size or cores == 1:
        return 0
    return min(2, cores)


def _image_backbone_workers(n_items: int) -> int:
    """Worker processes that run an ``image`` backbone: one per core (at most one per image); none for one image."""
    workers = min(_usable_cores(), n_items)
    return 0 if workers <= 1 else workers


def crop_setting(ws: Workspace, detector: str | None = None, landmarker: str | None = None) -> str:
    """Which face setting the crops come from (``<detector>+<landmarker>``, resolved by
    :func:`phenosynth.faces.facepass.resolve_face_settings`), so re-running ``faces`` with other settings never
    reuses features of other crops; ``crops`` when the workspace has no faces.parquet."""
    if not ws.faces_path.exists():
        return "crops"
    from phenosynth.faces.facepass import resolve_face_settings

    return "+".join(resolve_face_settings(ws, detector, landmarker))


def cache_key(backbone: str, weights: str, preprocessing: str, crops: str = "crops",
              digests: WeightDigests | None = None, view: str = IDENTITY) -> str:
    """Folder name of a feature cache: ``<backbone>-<preprocessing>-<weights id>-<crop setting>`` (filesystem-safe),
    plus ``-view-<view>`` for a test-time augmentation view other than identity (so the identity key is the one
    caches had before views existed).

    >>> cache_key("mobilenet_v2", "none", "paper", "dlib-hog+dlib68")
    'mobilenet_v2-paper-none-dlib-hog+dlib68'
    >>> cache_key("mobilenet_v2", "none", "paper", "dlib-hog+dlib68", view="flip+gray")
    'mobilenet_v2-paper-none-dlib-hog+dlib68-view-flip+gray'
    """
    wid = weights_id(backbone, weights, digests)
    suffix = "" if view == IDENTITY else f"-view-{view}"
    return safe_file_name(f"{backbone}-{preprocessing}-{wid}-{crops}{suffix}", allow_plus=True)


def weight_digests(ws: Workspace) -> WeightDigests:
    """The workspace's weight-file digest cache (``WS/cache/weight-digests``), so a 230 MB checkpoint is hashed
    once per version, not once per feature lookup."""
    return WeightDigests(ws.cache_dir / "weight-digests")


def feature_cache_dir(ws: Workspace, backbone: str, weights: str = "default", preprocessing: str = "paper", *,
                      detector: str | None = None, landmarker: str | None = None,
                      digests: WeightDigests | None = None, view: str = IDENTITY) -> Path:
    """``WS/cache/features/<cache_key>``."""
    return ws.cache_dir / "features" / cache_key(backbone, weights, preprocessing,
                                                 crop_setting(ws, detector, landmarker),
                                                 digests or weight_digests(ws), view)


def _load_cache(folder: Path) -> dict[str, np.ndarray]:
    """image_id -> features of every shard, then of every part an unfinished extraction left behind."""
    cached: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("shard-*.npz")) + sorted(folder.glob("part-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as z:
                for iid, row in zip(z["image_ids"].tolist(), z["X"]):
                    cached.setdefault(iid, row)
        except (OSError, ValueError, KeyError) as exc:  # a damaged file only costs its images a recompute
            log.warning("Ignoring unreadable feature cache file %s (%s)", shard, exc)
    return cached


def _save_npz(path: Path, ids: list[str], X: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, image_ids=np.asarray(ids, dtype=str), X=X.astype(np.float32))

    atomic_write(path, write)


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))


def _write_part(folder: Path, ids: list[str], X: np.ndarray) -> None:
    """Features flushed during an extraction: ``part-<digest>.npz``; folded into one shard when it ends."""
    _save_npz(folder / f"part-{_digest(ids)}.npz", ids, X)


def _compact_parts(folder: Path, order: Sequence[str], new: dict[str, np.ndarray]) -> None:
    """Write ``new`` plus every part file in ``folder`` as one ``shard-<digest>.npz`` (rows in ``order``, then any
    others), then delete the parts. A crash in between leaves duplicates, which the loader ignores."""
    parts = sorted(folder.glob("part-*.npz"))
    rows = dict(new)
    for part in parts:
        try:
            with np.load(part, allow_pickle=False) as z:
                for iid, row in zip(z["image_ids"].tolist(), z["X"]):
                    rows.setdefault(iid, row)
        except (OSError, ValueError, KeyError):
            continue  # unreadable: dropped with the parts, its images are computed again when asked for
    if rows:
        ids = [i for i in dict.fromkeys(order) if i in rows]
        listed = set(ids)
        ids += [i for i in rows if i not in listed]
        _save_npz(folder / f"shard-{_digest(ids)}.npz", ids, np.stack([rows[i] for i in ids]))
    for part in parts:
        part.unlink(missing_ok=True)


def extract_features(
    ws: Workspace,
    backbone: str,
    image_ids: Sequence[str],
    *,
    weights: str = "default",
    preprocessing: str = "paper",
    batch_size: int = 32,
    num_workers: int | None = None,
    detector: str | None = None,
    landmarker: str | None = None,
    on_progress: ProgressCallback | None = None,
    checkpoint_every: int = 256,
    checkpoint_seconds: float = 10.0,
    view: str = IDENTITY,
) -> tuple[list[str], np.ndarray]:
    """Embeddings of ``image_ids`` by ``backbone``: ``(kept_ids, X (N, d) float32)``, cached per image.

    ``view``: the test-time augmentation view of the crops (:mod:`phenosynth.models.views`: ``flip``, ``gray``,
    ``flip+gray``); each view has its own cache folder (:func:`cache_key`), identity the one without a suffix.

    The faces (aligned crops, or ``shape68``'s landmarks) are those of ``detector``/``landmarker`` (``None``: the only
    setting in faces.parquet; several raise, see :func:`phenosynth.faces.facepass.resolve_face_settings`).

    Images without a usable face crop (or, for ``shape68``, without 68-point landmarks) are left out of
    ``kept_ids`` with a logged reason. The order of ``kept_ids`` follows ``image_ids`` (duplicates dropped).

    Progress is saved as it goes: every ``checkpoint_every`` images or ``checkpoint_seconds`` seconds the new rows go
    to a ``part-<digest>.npz`` in the cache folder, so a killed extraction loses at most one chunk and the next call
    computes only the rest (logged as "from cache"). When a call ends, its rows and any parts are folded into one
    ``shard-<digest>.npz``, as an uninterrupted call writes.
    """
    ids = list(dict.fromkeys(str(i) for i in image_ids))
    spec = backbone_spec(backbone)
    spec.preprocessing(preprocessing)  # validates the mode
    if spec.input_kind == "landmarks":
        return _landmark_features(ws, backbone, ids, on_progress, detector, landmarker, view)

    digests = weight_digests(ws)
    folder = feature_cache_dir(ws, backbone, weights, preprocessing, detector=detector, landmarker=landmarker,
                               digests=digests, view=view)
    cached = _load_cache(folder) if folder.exists() else {}
    todo = [i for i in ids if i not in cached]
    total = len(ids)
    done = total - len(todo)
    log.info("%s features: %d image(s) from cache, %d to compute", backbone, done, len(todo))
    report(on_progress, done, total)
    if todo:
        crops = _crop_files(ws, backbone, todo, detector, landmarker)
        if crops:
            new = _compute_into_cache(folder, crops, backbone=backbone, weights=weights, digests=digests,
                                      preprocessing=preprocessing, batch_size=batch_size, num_workers=num_workers,
                                      checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                                      on_rows=lambda n: report(on_progress, done + n, total), view=view)
            _compact_parts(folder, ids, new)
            cached.update(new)
        report(on_progress, total, total)
    if folder.exists() and any(folder.glob("part-*.npz")):  # left by a killed call, now all loaded above
        _compact_parts(folder, ids, {})
    return _stack_kept(ids, cached, spec.embed_dim)


def _crop_files(ws: Workspace, backbone: str, ids: list[str], detector: str | None,
                landmarker: str | None) -> dict[str, Path]:
    """image_id -> aligned crop file of each of ``ids`` that has a usable face crop (made now if missing), in the
    order of ``ids``; the others are logged as getting no ``backbone`` features."""
    from phenosynth.faces.align import ensure_aligned_crops

    crops = ensure_aligned_crops(ws, ids, size=CROP_SIZE, detector=detector, landmarker=landmarker)
    no_crop = [i for i in ids if i not in crops]
    if no_crop:
        log.warning("%d image(s) have no usable face crop and get no %s features (e.g. %s)",
                    len(no_crop), backbone, no_crop[:3])
    return {i: Path(crops[i]) for i in ids if i in crops}


def _compute_into_cache(
    folder: Path, crops: dict[str, Path], *, backbone: str, weights: str, digests: WeightDigests, preprocessing: str,
    batch_size: int, num_workers: int | None, checkpoint_every: int, checkpoint_seconds: float,
    on_rows: Callable[[int], None], view: str = IDENTITY,
) -> dict[str, np.ndarray]:
    """Features of every crop in ``crops`` (image_id -> crop file) by ``backbone``: image_id -> ``(d,)`` row.

    The cache ``folder`` gets its ``meta.json`` before its first file. Every ``checkpoint_every`` rows or
    ``checkpoint_seconds`` seconds the rows not yet saved go to a part file (except after the last batch: the caller
    folds those straight into the shard), and an error or Ctrl-C saves them before it propagates, so the next call
    computes only the rest. ``on_rows(n)`` is told how many rows are computed so far, after every batch.
    """
    model = create_backbone(backbone, weights, digests)
    pending: list[tuple[str, np.ndarray]] = []
    new: dict[str, np.ndarray] = {}
    last_flush = time.monotonic()

    def flush() -> None:
        if pending:
            _write_part(folder, [i for i, _ in pending], np.stack([r for _, r in pending]))
            pending.clear()

    batches = _compute_batches(model, list(crops), list(crops.values()), preprocessing, batch_size, num_workers,
                               view)
    try:
        for batch_ids, X_batch in batches:
            if not new:  # the cache folder says what it holds before its first file
                _write_meta(folder, {
                    "backbone": backbone, "weights": weights, "weights_id": model.weights_id,
                    "weights_path": str(model.weights_path) if model.weights_path else None,
                    "preprocessing": preprocessing, "embed_dim": int(X_batch.shape[1]),
                    **({"view": view} if view != IDENTITY else {}),
                })
            for iid, row in zip(batch_ids, X_batch):
                new[iid] = row
                pending.append((iid, row))
            if len(new) < len(crops) and (
                len(pending) >= checkpoint_every or time.monotonic() - last_flush >= checkpoint_seconds
            ):  # progress survives a kill; the last batch goes straight into the shard
                flush()
                last_flush = time.monotonic()
            on_rows(len(new))
    except BaseException:
        flush()  # an error or Ctrl-C: keep what is done for the next call
        raise
    return new


def _stack_kept(ids: list[str], rows: dict[str, np.ndarray], embed_dim: int) -> tuple[list[str], np.ndarray]:
    """``(the ids that have a row, in order; their rows as (N, d) float32)``; ``(0, embed_dim)`` when none has."""
    kept = [i for i in ids if i in rows]
    if not kept:
        return kept, np.zeros((0, max(embed_dim, 0)), np.float32)
    return kept, np.stack([rows[i] for i in kept]).astype(np.float32, copy=False)


def _compute_batches(
    model: Any, ids: list[str], paths: list[Path], preprocessing: str, batch_size: int, num_workers: int | None,
    view: str = IDENTITY,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(image_ids, X (b, d) float32)`` batch after batch, in the order of ``ids``.

    Both ways use every core: a ``tensor`` backbone runs in this process on torch's intra-op threads while
    DataLoader workers decode the next crops; an ``image`` backbone (one crop per call, GIL held) runs inside the
    workers, one per core, each on its share of every batch.
    """
    if model.spec.input_kind == "image":
        workers = _image_backbone_workers(len(paths)) if num_workers is None else num_workers
        per_batch = max(1, min(batch_size, -(-len(paths) // max(workers, 1))))
        loader = DataLoader(ImageFeatureDataset(paths, model, view), batch_size=per_batch, shuffle=False,
                            num_workers=workers, collate_fn=_stack_rows, prefetch_factor=2 if workers else None,
                            multiprocessing_context=loader_start_method() if workers else None)

        def embed(batch: np.ndarray) -> np.ndarray:
            return batch
    else:
        workers = default_num_workers(len(paths), batch_size) if num_workers is None else num_workers
        size, mean, std = model.spec.preprocessing(preprocessing)
        loader = DataLoader(CropDataset(paths, size, mean, std, view), batch_size=batch_size, shuffle=False,
                            num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None,
                            multiprocessing_context=loader_start_method() if workers else None)

        def embed(batch: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return model.forward_features(batch).float().numpy()

    start = 0
    for batch in loader:
        X = np.asarray(embed(batch), dtype=np.float32)
        yield ids[start : start + len(X)], X
        start += len(X)


def _landmark_features(
    ws: Workspace, backbone: str, ids: list[str], on_progress: ProgressCallback | None,
    detector: str | None = None, landmarker: str | None = None, view: str = IDENTITY,
) -> tuple[list[str], np.ndarray]:
    """shape68: landmark geometry from faces.parquet (cheap, so not cached), seen through ``view``
    (:func:`phenosynth.models.views.apply_view_to_landmarks`: flip mirrors the face; gray changes no geometry)."""
    from phenosynth.faces import load_faces

    faces = load_faces(ws, detector, landmarker)
    kept = [i for i in ids if i in faces.index]
    if len(kept) < len(ids):
        log.warning("%d image(s) have no detected face and get no shape68 features", len(ids) - len(kept))
    if not kept:
        return [], np.zeros((0, 0), np.float32)
    rows = faces.loc[kept]
    lms = [np.asarray(v, dtype=np.float64).reshape(-1, 2) for v in rows["landmarks"]]
    if any(len(lm) != 68 for lm in lms):
        raise PhenosynthError(
            f"shape68 needs 68-point landmarks, but faces.parquet holds {len(lms[0])}-point ones. "
            f"Run: phenosynth faces -w {ws.root} --landmarks dlib68"
        )
    from phenosynth.faces.facepass import face_boxes

    boxes = face_boxes(rows)
    model = create_backbone(backbone, "default")
    points = np.stack(lms) if view == IDENTITY else apply_view_to_landmarks(np.stack(lms), boxes, view)
    X = model.forward_features(FaceLandmarks(points, boxes))
    report(on_progress, len(ids), len(ids))
    return kept, X.astype(np.float32)


__all__ = ["extract_features", "feature_cache_dir", "cache_key", "load_crop_tensor", "CropDataset", "weight_digests"]
