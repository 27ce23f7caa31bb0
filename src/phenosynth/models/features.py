"""Feature extraction over aligned face crops, cached per image in ``WS/cache/features/<key>/``.

The cache key is backbone + weights digest + preprocessing; each extraction that computes anything writes one
shard (``shard-<hash>.npz`` holding ``image_ids`` and ``X``); a later call loads the shards and computes only the
images that are missing, so a second call over the same images computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError
from phenosynth.models.backbones import backbone_entry, create_backbone, weights_id
from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)

#: Side of the aligned crops asked from the face stage; backbones resize from it.
CROP_SIZE = 224


def load_crop_tensor(path: str | os.PathLike[str], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Aligned crop file -> normalised ``(3, size, size)`` float32 tensor (bilinear, antialiased resize)."""
    from PIL import Image

    from phenosynth.data.imageio import load_rgb

    img = load_rgb(path)
    if img.shape[0] != size or img.shape[1] != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


class CropDataset(Dataset):
    """Crop files -> normalised tensors; decoding runs in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.paths, self.size, self.mean, self.std = list(paths), size, tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_crop_tensor(self.paths[i], self.size, self.mean, self.std)


class RGBDataset(Dataset):
    """Crop files -> ``(H, W, 3)`` uint8 arrays (for backbones that take images, e.g. dlib)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from phenosynth.data.imageio import load_rgb

        return load_rgb(self.paths[i])


def _as_list(batch: list[np.ndarray]) -> list[np.ndarray]:
    return batch


def default_num_workers(n_items: int, batch_size: int) -> int:
    """Workers that decode while the main process runs the model: none for a single batch, else up to 2."""
    if n_items <= batch_size:
        return 0
    return max(0, min(2, (os.cpu_count() or 1)))


def crop_setting(ws: Workspace, detector: str | None = None, landmarker: str | None = None) -> str:
    """Which face setting the crops come from (``<detector>+<landmarker>``, resolved by
    :func:`phenosynth.faces.facepass.resolve_face_settings`), so re-running ``faces`` with other settings never
    reuses features of other crops; ``crops`` when the workspace has no faces.parquet."""
    if not ws.faces_path.exists():
        return "crops"
    from phenosynth.faces.facepass import resolve_face_settings

    return "+".join(resolve_face_settings(ws, detector, landmarker))


def cache_key(backbone: str, weights: str, preprocessing: str, crops: str = "crops") -> str:
    """Folder name of a feature cache: ``<backbone>-<preprocessing>-<weights id>-<crop setting>`` (filesystem-safe).

    >>> cache_key("mobilenet_v2", "none", "paper", "dlib-hog+dlib68")
    'mobilenet_v2-paper-none-dlib-hog+dlib68'
    """
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{backbone}-{preprocessing}-{weights_id(backbone, weights)}-{crops}")


def feature_cache_dir(ws: Workspace, backbone: str, weights: str = "default", preprocessing: str = "paper", *,
                      detector: str | None = None, landmarker: str | None = None) -> Path:
    """``WS/cache/features/<cache_key>``."""
    return ws.cache_dir / "features" / cache_key(backbone, weights, preprocessing,
                                                 crop_setting(ws, detector, landmarker))


def _load_cache(folder: Path) -> dict[str, np.ndarray]:
    cached: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("shard-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            for iid, row in zip(z["image_ids"].tolist(), z["X"]):
                cached.setdefault(iid, row)
    return cached


def _write_shard(folder: Path, ids: list[str], X: np.ndarray, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, image_ids=np.asarray(ids, dtype=str), X=X.astype(np.float32))

    atomic_write(folder / f"shard-{digest}.npz", write)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))


@torch.inference_mode()
def embed_tensors(model: Any, loader: Any, on_batch: Any = None) -> np.ndarray:
    """Run ``model.forward_features`` over the batches of ``loader``: ``(N, d)`` float32."""
    out: list[np.ndarray] = []
    for batch in loader:
        out.append(model.forward_features(batch).float().numpy())
        if on_batch is not None:
            on_batch(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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
) -> tuple[list[str], np.ndarray]:
    """Embeddings of ``image_ids`` by ``backbone``: ``(kept_ids, X (N, d) float32)``, cached per image.

    The faces (aligned crops, or ``shape68``'s landmarks) are those of ``detector``/``landmarker`` (``None``: the only
    setting in faces.parquet; several raise, see :func:`phenosynth.faces.facepass.resolve_face_settings`).

    Images without a usable face crop (or, for ``shape68``, without 68-point landmarks) are left out of
    ``kept_ids`` with a logged reason. The order of ``kept_ids`` follows ``image_ids`` (duplicates dropped).
    """
    ids = list(dict.fromkeys(str(i) for i in image_ids))
    entry = backbone_entry(backbone)
    entry.spec.preprocessing(preprocessing)  # validates the mode
    if entry.spec.input_kind == "landmarks":
        return _landmark_features(ws, backbone, ids, on_progress, detector, landmarker)

    folder = feature_cache_dir(ws, backbone, weights, preprocessing, detector=detector, landmarker=landmarker)
    cached = _load_cache(folder) if folder.exists() else {}
    todo = [i for i in ids if i not in cached]
    total = len(ids)
    done = total - len(todo)
    report(on_progress, done, total)
    if todo:
        from phenosynth.faces.align import ensure_aligned_crops

        crops = ensure_aligned_crops(ws, todo, size=CROP_SIZE, detector=detector, landmarker=landmarker)
        no_crop = [i for i in todo if i not in crops]
        if no_crop:
            log.warning("%d image(s) have no usable face crop and get no %s features (e.g. %s)",
                        len(no_crop), backbone, no_crop[:3])
        have = [i for i in todo if i in crops]
        if have:
            model = create_backbone(backbone, weights)
            X_new = _compute(model, [Path(crops[i]) for i in have], preprocessing, batch_size, num_workers,
                             lambda k: report(on_progress, done + k, total))
            _write_shard(folder, have, X_new, {
                "backbone": backbone, "weights": weights, "weights_id": model.weights_id,
                "weights_path": str(model.weights_path) if model.weights_path else None,
                "preprocessing": preprocessing, "embed_dim": int(X_new.shape[1]),
            })
            cached.update(zip(have, X_new))
        report(on_progress, total, total)
    kept = [i for i in ids if i in cached]
    if not kept:
        return kept, np.zeros((0, max(entry.spec.embed_dim, 0)), np.float32)
    return kept, np.stack([cached[i] for i in kept]).astype(np.float32, copy=False)


def _compute(
    model: Any, paths: list[Path], preprocessing: str, batch_size: int, num_workers: int | None, progress: Any
) -> np.ndarray:
    seen = [0]

    def on_batch(k: int) -> None:
        seen[0] += k
        progress(seen[0])

    workers = default_num_workers(len(paths), batch_size) if num_workers is None else num_workers
    if model.spec.input_kind == "image":  # dlib: uint8 crops, no normalisation; decoding overlaps in workers
        loader = DataLoader(RGBDataset(paths), batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=_as_list, prefetch_factor=4 if workers else None)
        rows = []
        for images in loader:
            rows.append(model.features_from_images(images))
            on_batch(len(images))
        return np.concatenate(rows)
    size, mean, std = model.spec.preprocessing(preprocessing)
    loader = DataLoader(CropDataset(paths, size, mean, std), batch_size=batch_size, shuffle=False,
                        num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None)
    return embed_tensors(model, loader, on_batch)


def _landmark_features(
    ws: Workspace, backbone: str, ids: list[str], on_progress: ProgressCallback | None,
    detector: str | None = None, landmarker: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """shape68: landmark geometry from faces.parquet (cheap, so not cached)."""
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
    X = model.features_from_landmarks(np.stack(lms), boxes)
    report(on_progress, len(ids), len(ids))
    return kept, X.astype(np.float32)


__all__ = ["extract_features", "feature_cache_dir", "cache_key", "load_crop_tensor", "CropDataset", "embed_tensors"]
