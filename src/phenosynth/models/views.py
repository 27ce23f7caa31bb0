"""Test-time augmentation views (GestaltMatcher's flip x grayscale): which views a ``tta`` list asks for, and how a
view transforms an aligned crop (or, for landmark backbones, the landmarks).

A ``tta`` list names augmentations (``flip``, ``gray``); its views are every combination, identity first::

    tta_views([])              -> ['identity']
    tta_views(["flip"])        -> ['identity', 'flip']
    tta_views(["flip", "gray"]) -> ['identity', 'flip', 'gray', 'flip+gray']

Light on purpose (numpy + PIL): the training configuration validates ``tta`` without importing torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from phenosynth.errors import PhenosynthError

#: Augmentations a ``tta`` list may name, in the order their combinations are named (``flip+gray``).
AUGMENTATIONS = ("flip", "gray")
IDENTITY = "identity"

# iBUG 68-point mirror: index i of a mirrored face is the point MIRROR68[i] of the original (left <-> right).
MIRROR68 = np.array(
    list(range(16, -1, -1))                                   # jaw 0..16
    + list(range(26, 21, -1)) + list(range(21, 16, -1))       # eyebrows 17..21 <-> 22..26
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]                 # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]     # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]        # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]                        # inner lips
)


def tta_views(tta: Sequence[str] | None) -> list[str]:
    """The views of a ``tta`` list: identity, then every combination of its augmentations (names joined by ``+`` in
    :data:`AUGMENTATIONS` order). Unknown names raise a :class:`PhenosynthError` naming the valid ones.

    >>> tta_views(["gray", "flip"])
    ['identity', 'flip', 'gray', 'flip+gray']
    """
    asked = [str(a).strip() for a in (tta or []) if str(a).strip()]
    bad = [a for a in asked if a not in AUGMENTATIONS]
    if bad:
        raise PhenosynthError(f"Unknown test-time augmentation {', '.join(map(repr, bad))}. Use any of: "
                              f"{', '.join(AUGMENTATIONS)} (e.g. --tta flip,gray).")
    augs = [a for a in AUGMENTATIONS if a in asked]
    combos = [c for r in range(1, len(augs) + 1) for c in itertools.combinations(augs, r)]
    return [IDENTITY] + ["+".join(c) for c in combos]


def _parts(view: str) -> set[str]:
    parts = set() if view == IDENTITY else set(view.split("+"))
    if not parts <= set(AUGMENTATIONS):
        raise PhenosynthError(f"Unknown view '{view}'; views are {IDENTITY} or combinations of "
                              f"{', '.join(AUGMENTATIONS)} joined by '+'.")
    return parts


def apply_view(image: np.ndarray, view: str) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 crop seen through ``view``: ``flip`` mirrors it left-right, ``gray`` replaces every
    channel by its ITU-R 601 luma (PIL's ``convert("L")``). ``identity`` returns the very array.

    >>> img = np.zeros((2, 2, 3), np.uint8); img[0, 0] = (255, 0, 0)
    >>> apply_view(img, "flip")[0, 1].tolist(), apply_view(img, "gray")[0, 0].tolist()
    ([255, 0, 0], [76, 76, 76])
    """
    parts = _parts(view)
    out = image
    if "gray" in parts:
        from PIL import Image

        luma = np.asarray(Image.fromarray(np.ascontiguousarray(out, dtype=np.uint8)).convert("L"))
        out = np.repeat(luma[:, :, None], 3, axis=2)
    if "flip" in parts:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def apply_view_to_landmarks(points: np.ndarray, boxes: np.ndarray, view: str) -> np.ndarray:
    """68-point landmarks ``(N, 68, 2)`` of faces in ``boxes`` ``(N, 4)`` seen through ``view``: ``flip`` mirrors
    them about the box's vertical centre line and renumbers left <-> right (iBUG order); ``gray`` changes no
    geometry (a landmark backbone's gray view equals its identity view)."""
    parts = _parts(view)
    pts = np.asarray(points, dtype=np.float64)
    if "flip" not in parts:
        return pts
    if pts.shape[1] != 68:
        raise PhenosynthError(f"Flipping landmarks needs 68-point landmarks, got {pts.shape[1]}.")
    b = np.asarray(boxes, dtype=np.float64)
    mirrored = pts.copy()
    mirrored[..., 0] = (b[:, 0] + b[:, 2])[:, None] - pts[..., 0]
    return mirrored[:, MIRROR68]


__all__ = ["AUGMENTATIONS", "IDENTITY", "MIRROR68", "apply_view", "apply_view_to_landmarks", "tta_views"]
