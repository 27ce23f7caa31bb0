"""Procrustes geometry of landmark shapes (pure arrays): centring and scaling, the least-squares similarity
transform between two point sets (scikit-image's ``SimilarityTransform``, Umeyama), and generalised Procrustes
analysis. Face alignment, the ``shape68`` representation and the synthetic shape model all use these."""

from __future__ import annotations

import numpy as np

from phenosynth.errors import PhenosynthError


def normalise_shape(shape: np.ndarray) -> np.ndarray:
    """``(..., K, 2)`` -> ``(..., K, 2)``: each shape centred on its centroid with unit root-mean-square radius."""
    s = np.asarray(shape, dtype=np.float64)
    s = s - s.mean(-2, keepdims=True)
    rms = np.sqrt((s**2).sum(-1).mean(-1))[..., None, None]
    return s / np.maximum(rms, 1e-12)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(3, 3)`` homogeneous matrix of the least-squares similarity (rotation, uniform scale, shift; no reflection)
    mapping points ``src (K, 2)`` onto ``dst (K, 2)``."""
    from skimage.transform import SimilarityTransform  # lazy: skimage costs ~0.5 s of every CLI start-up

    tform = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    if not tform:
        raise PhenosynthError("Could not fit a similarity transform between two landmark sets (degenerate shape).")
    return np.asarray(tform.params, dtype=np.float64)


def apply_matrix(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(3, 3)`` homogeneous (or ``(2, 3)`` affine) 2-D transform to ``points (..., 2)``."""
    p = np.asarray(points, dtype=np.float64)
    return p @ M[:2, :2].T + M[:2, 2]


def generalized_procrustes(
    shapes: np.ndarray, *, max_iter: int = 20, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align ``shapes (N, K, 2)`` to their common mean.

    Returns:
        aligned ``(N, K, 2)`` (in the reference frame), matrices ``(N, 3, 3)`` mapping each shape's own coordinates
        onto the reference frame, reference ``(K, 2)`` (centred, unit RMS radius).
    """
    X = np.asarray(shapes, dtype=np.float64)
    if X.ndim != 3 or X.shape[-1] != 2:
        raise ValueError(f"shapes must be (N, K, 2), got {X.shape}")
    ref = normalise_shape(X[0])
    for _ in range(max_iter):
        mats = np.stack([similarity_matrix(x, ref) for x in X])
        aligned = np.stack([apply_matrix(m, x) for m, x in zip(mats, X)])
        new_ref = normalise_shape(aligned.mean(0))
        # keep the reference's orientation fixed to the previous one (no drift between iterations)
        new_ref = normalise_shape(apply_matrix(similarity_matrix(new_ref, ref), new_ref))
        change = float(np.abs(new_ref - ref).max())
        ref = new_ref
        if change < tol:
            break
    mats = np.stack([similarity_matrix(x, ref) for x in X])
    aligned = np.stack([apply_matrix(m, x) for m, x in zip(mats, X)])
    return aligned, mats, ref
