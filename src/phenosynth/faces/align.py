"""Face alignment: a similarity transform of the 5 landmarks onto the canonical template, and the crop cache.

Crops live in ``WS/cache/crops/<detector>+<landmarker>/<size>/<image_id>.png`` and are made once. The template is
ArcFace's 5-point layout scaled to the crop size (224 for most backbones, 160 for FaceNet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.faces.facepass import load_faces, resolve_face_settings
from phenosynth.faces.landmarks import alignment_template, five_points
from phenosynth.faces.procrustes import similarity_matrix
from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """``(2, 3)`` similarity transform taking the face's landmarks ``(5 or 68, 2)`` onto the template of a
    ``size`` x ``size`` crop."""
    return similarity_matrix(five_points(landmarks), alignment_template(size))[:2]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 224) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 + its landmarks ``(5 or 68, 2)`` -> aligned crop ``(size, size, 3)`` uint8.
    Areas outside the photo are filled by replicating its edge."""
    import cv2

    A = alignment_matrix(landmarks, size)
    return cv2.warpAffine(
        np.ascontiguousarray(image), A, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def crops_dir(ws: Workspace, detector: str, landmarker: str, size: int) -> Path:
    return ws.cache_dir / "crops" / f"{detector}+{landmarker}" / str(int(size))


def ensure_aligned_crops(
    ws: Workspace,
    image_ids: Iterable[str],
    size: int = 224,
    on_progress: ProgressCallback | None = None,
    *,
    detector: str | None = None,
    landmarker: str | None = None,
) -> dict[str, Path]:
    """Aligned ``size`` x ``size`` PNG crops of ``image_ids``, made where missing; ``{image_id: path}``.

    Images without a usable face (``no-face``, errors, or not processed by ``phenosynth faces``) are absent from
    the result; see :func:`phenosynth.faces.facepass.face_exclusions` for the reasons.
    """
    from PIL import Image

    from phenosynth.data.imageio import load_rgb

    ids = [str(i) for i in image_ids]
    det_name, lmk_name = resolve_face_settings(ws, detector, landmarker)
    faces = load_faces(ws, det_name, lmk_name)
    out_dir = crops_dir(ws, det_name, lmk_name, size)
    manifest = ws.load_manifest().set_index("image_id")
    result: dict[str, Path] = {}
    skipped = 0
    for k, image_id in enumerate(ids, 1):
        path = out_dir / f"{image_id}.png"
        if image_id not in faces.index:
            skipped += 1
        elif path.exists():
            result[image_id] = path
        elif image_id in manifest.index:
            lm5 = faces.at[image_id, "landmarks5"]
            crop = align_face(load_rgb(ws.resolve(str(manifest.at[image_id, "path"]))), lm5, size)
            atomic_write(path, lambda p, c=crop: Image.fromarray(c).save(p, format="PNG"))
            result[image_id] = path
        else:
            skipped += 1
        report(on_progress, k, len(ids))
    if skipped:
        log.info("%d of %d images have no usable face and get no aligned crop", skipped, len(ids))
    return result
