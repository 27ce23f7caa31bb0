"""Piecewise-affine (Delaunay) warping of a face image to new landmark positions, with the image border kept.

The warp is computed backwards: every output pixel is located in the Delaunay triangulation of the *target* points
(plus fixed anchors on the image border), its barycentric coordinates give the matching position in the source
triangle, and OpenCV's ``remap`` samples the source there. Border anchors map to themselves, so the frame of the
image does not move and pixels far from the face change smoothly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def border_anchors(height: int, width: int, per_side: int = 4) -> np.ndarray:
    """``(4 * per_side, 2)`` points (x, y) evenly spaced around the image border, corners included."""
    xs = np.linspace(0, width - 1, per_side + 1)
    ys = np.linspace(0, height - 1, per_side + 1)
    top = np.stack([xs[:-1], np.zeros(per_side)], 1)
    right = np.stack([np.full(per_side, width - 1.0), ys[:-1]], 1)
    bottom = np.stack([xs[::-1][:-1], np.full(per_side, height - 1.0)], 1)
    left = np.stack([np.zeros(per_side), ys[::-1][:-1]], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


@dataclass(frozen=True, eq=False)
class TargetMesh:
    """The half of a backward piecewise-affine warp that depends only on the *target* points and the frame size: the
    Delaunay triangulation of the target points plus border anchors, and the triangle index of every output pixel.
    Many source faces warped onto one target shape (e.g. every face onto a mean shape) share it; :meth:`maps` adds a
    source's part (one small affine solve per triangle and a gather), the same numbers as :func:`warp_maps`."""

    height: int
    width: int
    n_points: int
    keep: np.ndarray  # indices into concat(points, anchors) kept (exact duplicates of the target dropped)
    triangles: np.ndarray  # (T, 3) indices into the kept points
    dst_rows: np.ndarray  # (T, 3, 3): each triangle's target vertices as rows [x, y, 1]
    solvable: np.ndarray  # (T,) bool: non-degenerate triangles
    label: np.ndarray  # (H, W) int32 triangle index of each output pixel, -1 where none (identity)

    def maps(self, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps ``(map_x, map_y)`` for the source points ``src (K, 2)`` (see :func:`warp_maps`)."""
        src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
        if len(src) != self.n_points:
            raise ValueError(f"src has {len(src)} points, the target mesh {self.n_points}")
        src_all = np.concatenate([src, border_anchors(self.height, self.width)])[self.keep]
        # Per-triangle affine map dst -> src: src = [x, y, 1] @ M[t] with M[t] (3, 2).
        S = src_all[self.triangles]  # (T, 3, 2)
        M = np.zeros((len(self.triangles), 3, 2))
        M[:, 0, 0] = M[:, 1, 1] = 1.0  # degenerate triangles: identity
        M[self.solvable] = np.linalg.solve(self.dst_rows[self.solvable], S[self.solvable])
        M = np.concatenate([M, np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])])  # index -1 -> identity
        yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        Ml = M.astype(np.float32)[self.label]  # (H, W, 3, 2)
        map_x = xx * Ml[..., 0, 0] + yy * Ml[..., 1, 0] + Ml[..., 2, 0]
        map_y = xx * Ml[..., 0, 1] + yy * Ml[..., 1, 1] + Ml[..., 2, 1]
        return map_x, map_y


def target_mesh(dst: np.ndarray, height: int, width: int) -> TargetMesh:
    """The :class:`TargetMesh` of the target points ``dst (K, 2)`` (x, y) in an ``height x width`` frame."""
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    # Points outside the frame would break the "border kept" promise; keep them but drop exact duplicates.
    dst_all = np.concatenate([dst, border_anchors(height, width)])
    _, keep = np.unique(np.round(dst_all, 3), axis=0, return_index=True)
    keep = np.sort(keep)
    dst_all = dst_all[keep]

    import cv2
    from scipy.spatial import Delaunay  # lazy: scipy.spatial costs ~0.4 s of CLI start-up

    tri = Delaunay(dst_all).simplices  # (T, 3)
    D = np.concatenate([dst_all[tri], np.ones((len(tri), 3, 1))], 2)  # (T, 3, 3)
    # Rasterise the triangle index of every output pixel (-1 where none: identity).
    label = np.full((height, width), -1, dtype=np.int32)
    for t, verts in enumerate(np.round(dst_all[tri] * 16).astype(np.int32)):
        cv2.fillConvexPoly(label, verts, int(t), lineType=cv2.LINE_8, shift=4)
    return TargetMesh(height=int(height), width=int(width), n_points=len(dst), keep=keep, triangles=tri, dst_rows=D,
                      solvable=np.abs(np.linalg.det(D)) > 1e-9, label=label)


def warp_maps(src: np.ndarray, dst: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward sampling maps ``(map_x, map_y)``, each ``(H, W)`` float32: output pixel (y, x) reads the source at
    ``(map_y[y, x], map_x[y, x])``. ``src``/``dst`` are ``(K, 2)`` (x, y) points; border anchors are added."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    return target_mesh(dst, height, width).maps(src)


def warp_to_landmarks(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Warp ``image`` so that the features at ``src_points`` move to ``dst_points``.

    Args:
        image: ``(H, W, 3)`` (or ``(H, W)``) uint8.
        src_points: ``(K, 2)`` landmark positions (x, y) in ``image``.
        dst_points: ``(K, 2)`` where those landmarks should end up.

    Returns:
        The warped image, same shape and dtype as ``image``. Pixels outside the landmarks' hull move smoothly
        towards the fixed image border (anchors at the corners and along the edges).
    """
    import cv2

    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    h, w = image.shape[:2]
    map_x, map_y = warp_maps(src_points, dst_points, h, w)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
