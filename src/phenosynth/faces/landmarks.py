"""Landmark conventions: the 5-point set in RetinaFace order, derived from dlib's 68- or 5-point layouts, and the
canonical 5-point template used for alignment.

All points are ``(x, y)`` in pixels. "Left" and "right" are as seen in the image (RetinaFace/ArcFace convention):
point 0 is the eye on the image's left.
"""

from __future__ import annotations

import numpy as np

from phenosynth.faces.procrustes import apply_matrix, similarity_matrix

#: Names of the 5 points, in order.
FIVE_POINT_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")

#: ArcFace's canonical 5-point template for a 112x112 crop (x, y), the de-facto standard for face alignment.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: dlib 68-point index ranges (iBUG 300-W layout).
DLIB68_LEFT_EYE = slice(36, 42)  # eye on the image's left
DLIB68_RIGHT_EYE = slice(42, 48)
DLIB68_NOSE_TIP = 30
DLIB68_MOUTH_LEFT = 48
DLIB68_MOUTH_RIGHT = 54


def five_from_68(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` dlib points -> ``(..., 5, 2)``: eye centres, nose tip, mouth corners (RetinaFace order)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {lm.shape}")
    return np.stack(
        [
            lm[..., DLIB68_LEFT_EYE, :].mean(-2),
            lm[..., DLIB68_RIGHT_EYE, :].mean(-2),
            lm[..., DLIB68_NOSE_TIP, :],
            lm[..., DLIB68_MOUTH_LEFT, :],
            lm[..., DLIB68_MOUTH_RIGHT, :],
        ],
        axis=-2,
    )


def five_from_dlib5(points: np.ndarray) -> np.ndarray:
    """dlib's 5-point predictor output ``(5, 2)`` (right-eye corners 0-1, left-eye corners 2-3, nose base 4, as
    seen in the image: 0-1 are on the image's right) -> ``(5, 2)`` RetinaFace order.

    dlib's 5-point model has no mouth points: the mouth corners are placed by fitting the canonical template to the
    two eye centres by a similarity transform (an estimate, flagged in the docs of ``dlib5``).
    """
    p = np.asarray(points, dtype=np.float64).reshape(5, 2)
    known = np.stack([p[2:4].mean(0), p[0:2].mean(0), p[4]])
    A = similarity_matrix(ARCFACE_TEMPLATE_112[:2], known[:2])
    mouth = apply_matrix(A, ARCFACE_TEMPLATE_112[3:])
    return np.concatenate([known, mouth])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """``(..., K, 2)`` with K in {5, 68} -> ``(..., 5, 2)`` RetinaFace order (5 points are returned as they are)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2] == 5:
        return lm
    if lm.shape[-2] == 68:
        return five_from_68(lm)
    raise ValueError(f"landmarks must have 5 or 68 points, got {lm.shape[-2]}")


def alignment_template(size: int) -> np.ndarray:
    """The canonical 5-point template ``(5, 2)`` for a square ``size`` x ``size`` crop (ArcFace's, scaled)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def order_is_sane(landmarks: np.ndarray) -> bool:
    """Eyes above the nose above the mouth (image y grows downwards), and the left eye left of the right eye."""
    p = five_points(landmarks)
    eyes_y = max(p[0, 1], p[1, 1])
    mouth_y = min(p[3, 1], p[4, 1])
    return bool(eyes_y < p[2, 1] < mouth_y and p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0])
