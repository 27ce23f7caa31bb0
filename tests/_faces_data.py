"""Tiny face images for the face tests, made from scikit-image's public-domain astronaut portrait (a real face)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from phenosynth.data.workspace import Workspace


def face_image(side: int = 160) -> np.ndarray:
    """``(side, side, 3)`` uint8: the astronaut's face, about 0.4 x side wide."""
    from skimage import data

    crop = data.astronaut()[20:250, 105:335]
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))


def two_faces() -> np.ndarray:
    """A large and a small copy of the face side by side on a grey canvas: ``(200, 340, 3)``."""
    canvas = np.full((200, 340, 3), 127, np.uint8)
    canvas[:200, :200] = face_image(200)
    canvas[20:160, 200:340] = face_image(140)
    return canvas


def make_workspace(root: Path, images: dict[str, np.ndarray | bytes]) -> tuple[Workspace, dict[str, str]]:
    """A workspace whose manifest holds ``images`` (name -> array, or raw bytes for broken files); name -> image_id."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    rows, ids = [], {}
    for name, im in images.items():
        path = src / f"{name}.png"
        if isinstance(im, bytes):
            path.write_bytes(im)
        else:
            Image.fromarray(im).save(path)
        image_id = hashlib.sha256(path.read_bytes()).hexdigest()
        ids[name] = image_id
        rows.append({"image_id": image_id, "path": str(path), "label": name, "subject_id": name, "source": "real"})
    ws = Workspace.open(root / "ws", create=True)
    ws.save_manifest(pd.DataFrame(rows))
    return ws, ids
