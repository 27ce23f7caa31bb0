"""Landmark representations (registry) and the pure functions the synthetic-image ranking is built from.

- ``rdface25`` — exactly RDFace's code: the 5 RetinaFace points normalised to the face box
  (``(x - x0) / w, (y - y0) / h``), the 5 x 5 matrix of pairwise Euclidean distances, flattened (25 values,
  the zero diagonal included).
- ``shape68`` — the 68-point shape with translation, scale and rotation removed (Procrustes): centred on its
  centroid, scaled to unit root-mean-square distance from it, and rotated so that its 5 derived points best match
  the canonical template's orientation; flattened (136 values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from phenosynth.faces.landmarks import ARCFACE_TEMPLATE_112, five_points
from phenosynth.faces.procrustes import normalise_shape
from phenosynth.registry import Registry

Representation = Callable[[np.ndarray, np.ndarray], np.ndarray]
REPRESENTATIONS: Registry[np.ndarray] = Registry("representation")


def list_representations() -> list[str]:
    return REPRESENTATIONS.names()


def represent(name: str, landmarks: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """Landmarks ``(N, K, 2)`` (+ face boxes ``(N, 4)`` as x0, y0, x1, y1) -> feature matrix ``(N, d)`` float64."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, K, 2), got {lm.shape}")
    bx = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return REPRESENTATIONS.get(name)(lm, bx)


@REPRESENTATIONS.register("rdface25")
def rdface25(landmarks: np.ndarray, boxes: np.ndarray | None) -> np.ndarray:
    """``(N, K, 2)`` + ``(N, 4)`` -> ``(N, 25)``: pairwise distances of the box-normalised 5 points."""
    if boxes is None:
        raise ValueError("rdface25 needs the face boxes (N, 4) to normalise the landmarks")
    p = five_points(landmarks)  # (N, 5, 2)
    origin = boxes[:, None, :2]
    wh = np.maximum(boxes[:, None, 2:] - boxes[:, None, :2], 1e-9)
    norm = (p - origin) / wh
    diff = norm[:, :, None, :] - norm[:, None, :, :]  # (N, 5, 5, 2)
    return np.sqrt((diff**2).sum(-1)).reshape(len(p), 25)


@REPRESENTATIONS.register("shape68")
def shape68(landmarks: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """``(N, 68, 2)`` -> ``(N, 136)``: Procrustes-normalised shapes (see :func:`procrustes_normalise`)."""
    if landmarks.shape[1] != 68:
        raise ValueError(f"shape68 needs 68-point landmarks, got {landmarks.shape[1]} points (use landmarker dlib68)")
    return procrustes_normalise(landmarks).reshape(len(landmarks), -1)


def procrustes_normalise(shapes: np.ndarray) -> np.ndarray:
    """``(N, K, 2)`` -> ``(N, K, 2)`` with translation, scale and rotation removed.

    Each shape is centred, scaled to unit RMS radius, then rotated by the angle that best aligns its 5 derived
    points (centred, same scale) with the canonical ArcFace template (orthogonal Procrustes, no reflection). The
    reference is fixed, so one image's vector never depends on the others'.
    """
    x = normalise_shape(shapes)
    ref = ARCFACE_TEMPLATE_112 - ARCFACE_TEMPLATE_112.mean(0)
    five = five_points(x) if x.shape[1] in (5, 68) else x
    five = five - five.mean(1, keepdims=True)
    # Optimal rotation angle of each 5-point set onto ref: atan2(sum cross, sum dot).
    dot = (five * ref).sum((1, 2))
    cross = (five[..., 0] * ref[:, 1] - five[..., 1] * ref[:, 0]).sum(1)
    theta = np.arctan2(cross, dot)
    c, s = np.cos(theta), np.sin(theta)
    R = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
    return np.einsum("nij,nkj->nki", R, x)


def class_prototypes(X: np.ndarray, labels: Sequence[object]) -> tuple[list[object], np.ndarray]:
    """Mean feature vector per class: ``X (N, d)``, ``labels (N,)`` -> (sorted classes, ``P (C, d)``).

    >>> classes, P = class_prototypes(np.array([[1.0, 0], [3, 0], [0, 2]]), ["a", "a", "b"])
    >>> classes, P.tolist()
    (['a', 'b'], [[2.0, 0.0], [0.0, 2.0]])
    """
    X = np.asarray(X, dtype=np.float64)
    lab = np.asarray(list(labels), dtype=object)
    if len(lab) != len(X):
        raise ValueError(f"{len(X)} rows but {len(lab)} labels")
    classes = sorted(set(lab.tolist()))
    P = np.stack([X[lab == c].mean(0) for c in classes]) if classes else np.zeros((0, X.shape[1]))
    return classes, P


def cosine_similarity_to(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``X (N, d)`` to every row of ``P (C, d)`` -> ``(N, C)``.

    >>> cosine_similarity_to(np.array([[1.0, 0], [1, 1]]), np.array([[2.0, 0]])).round(3).tolist()
    [[1.0], [0.707]]
    """
    X = np.asarray(X, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    Pn = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    return Xn @ Pn.T
