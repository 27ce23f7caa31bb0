"""Tiny face images for the face tests, made from scikit-image's public-domain astronaut portrait (a real face)."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
