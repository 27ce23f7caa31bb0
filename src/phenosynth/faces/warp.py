"""Piecewise-affine (Delaunay) warping of a face image to new landmark positions, with the image border kept.

The warp is computed backwards: every output pixel is located in the Delaunay triangulation of the *target* points
(plus fixed anchors on the image border), its barycentric coordinates give the matching position in the source
triangle, and OpenCV's ``remap`` samples the source there. Border anchors map to themselves, so the frame of the
image does not move and pixels far from the face change smoothly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=64)
def border_anchors(height: int, width: int, per_side: int = 4) -> np.ndarray:
    """``(4 * per_side, 2)`` points (x, y) evenly spaced around the image border, corners included (read-only: one
    array per frame size, shared by every warp of that size)."""
    xs = np.linspace(0, width - 1, per_side + 1)
    ys = np.linspace(0, height - 1, per_side + 1)
    top = np.stack([xs[:-1], np.zeros(per_side)], 1)
    right = np.stack([np.full(per_side, width - 1.0), ys[:-1]], 1)
    bottom = np.stack([xs[::-1][:-1], np.full(per_side, height - 1.0)], 1)
    left = np.stack([np.zeros(per_side), ys[::-1][:-1]], 1)
    anchors = np.concatenate([top, right, bottom, left]).astype(np.float64)
    anchors.setflags(write=False)
    return anchors


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


def _target_triangles(dst: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, dst_all, triangles)``: the target points plus border anchors with exact duplicates dropped (``keep``
    indexes ``concat(dst, anchors)``), and their Delaunay triangles ``(T, 3)``."""
    from scipy.spatial import Delaunay  # lazy: scipy.spatial costs ~0.4 s of CLI start-up

    # Points outside the frame would break the "border kept" promise; keep them but drop exact duplicates.
    dst_all = np.concatenate([np.asarray(dst, dtype=np.float64).reshape(-1, 2), border_anchors(height, width)])
    _, keep = np.unique(np.round(dst_all, 3), axis=0, return_index=True)
    keep = np.sort(keep)
    dst_all = dst_all[keep]
    return keep, dst_all, Delaunay(dst_all).simplices


def target_mesh(dst: np.ndarray, height: int, width: int) -> TargetMesh:
    """The :class:`TargetMesh` of the target points ``dst (K, 2)`` (x, y) in an ``height x width`` frame."""
    import cv2

    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    keep, dst_all, tri = _target_triangles(dst, height, width)
    D = np.concatenate([dst_all[tri], np.ones((len(tri), 3, 1))], 2)  # (T, 3, 3)
    # Rasterise the triangle index of every output pixel (-1 where none: identity).
    label = np.full((height, width), -1, dtype=np.int32)
    for t, verts in enumerate(np.round(dst_all[tri] * 16).astype(np.int32)):
        cv2.fillConvexPoly(label, verts, int(t), lineType=cv2.LINE_8, shift=4)
    return TargetMesh(height=int(height), width=int(width), n_points=len(dst), keep=keep, triangles=tri, dst_rows=D,
                      solvable=np.abs(np.linalg.det(D)) > 1e-9, label=label)


def _signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (points[triangles[:, i]] for i in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _folded_mask(src: np.ndarray, dst: np.ndarray, height: int, width: int, min_ratio: float, *,
                 face_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(folded (T,) bool, triangles (T, 3), keep)`` of the target mesh of ``dst`` (indices into the kept points of
    ``concat(points, anchors)``)."""
    keep, dst_all, tri = _target_triangles(dst, height, width)
    src_all = np.concatenate([src, border_anchors(height, width)])[keep]
    a_dst, a_src = _signed_areas(dst_all, tri), _signed_areas(src_all, tri)
    live = np.abs(a_dst) > 1e-9
    if face_only:  # triangles of the face: no border anchor
        live &= (keep[tri] < len(src)).all(1)
    ratio = np.where(live, a_src / np.where(live, a_dst, 1.0), 1.0)
    return live & (ratio < min_ratio), tri, keep


def _as_pair(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    return src, dst


def folded_triangles(src: np.ndarray, dst: np.ndarray, height: int, width: int, *, min_ratio: float = 0.0) -> int:
    """How many triangles of the warp from ``src (K, 2)`` to ``dst (K, 2)`` fold: triangles of the target mesh whose
    source triangle is mirrored (or, with ``min_ratio`` > 0, squeezed below that share of its target area). The
    backward map reads such a triangle reversed, which shows as a torn, doubled patch in the output (an eyelid
    through the eye, a lip across the mouth). 0 for a warp that keeps the order of the points."""
    src, dst = _as_pair(src, dst)
    return int(_folded_mask(src, dst, height, width, min_ratio)[0].sum())


@dataclass(frozen=True)
class Unfolding:
    """What :func:`unfolded_target` did: ``smoothed`` points whose move was blended with their neighbours',
    ``scale`` of the whole move kept after that (1.0: none taken back), ``change`` the share of the asked move that
    was given up (``|moved - asked| / |asked|`` over all points; 0.0: the target was kept as asked), and
    ``folded_before`` the folded face triangles of the target as asked (none are left after)."""

    smoothed: int
    scale: float
    change: float
    folded_before: int = 0


def unfolded_target(src: np.ndarray, dst: np.ndarray, height: int, width: int, *, iterations: int = 40,
                    min_ratio: float = 0.0) -> tuple[np.ndarray, Unfolding]:
    """``dst`` changed as little as needed for the warp from ``src`` not to fold (:func:`folded_triangles`).

    A shape change written onto a photo tears the face where it moves neighbouring landmarks past each other: the
    six points of an eye or the inner lips lie a few pixels apart, so a change of a few pixels inverts them. First,
    up to ``iterations`` times, the move of each point of a folded triangle is blended half-way toward the mean move
    of its neighbours in the source's Delaunay mesh (border anchors do not move): the local, fold-causing part of the
    move goes, its smooth part (an eye moved outward, a jaw widened) stays. The smoothing also takes the triangles
    between the face and the border anchors (a chin pushed past the frame would smear the bottom of the photo), so a
    point near the frame moves less. If face triangles still fold, the whole move is scaled down by bisection
    (``src + a (dst - src)``, ``a = 0`` is the identity warp, which never folds). ``src`` and ``dst`` must be in one
    frame (the source photo's). Returns ``(dst', Unfolding)``; ``dst`` unchanged when it does not fold."""
    src, dst = _as_pair(src, dst)
    k = len(src)
    asked = dst - src
    move = asked.copy()
    smoothed: set[int] = set()
    folded_before = int(_folded_mask(src, dst, height, width, min_ratio)[0].sum())
    if folded_before:
        n_anchors = len(border_anchors(height, width))
        # The source's own mesh (points + anchors, fixed): a move that keeps every one of its triangles the right way
        # round is a one-to-one deformation, so the smoothing works on it first (one Delaunay, then only areas).
        keep, src_all, tri = _target_triangles(src, height, width)
        a_src = _signed_areas(src_all, tri)
        live = np.abs(a_src) > 1e-9
        neighbours = _neighbour_lists(src_all, keep, k + n_anchors)
        for _ in range(int(iterations)):
            full = np.concatenate([move, np.zeros((n_anchors, 2))])[keep]
            ratio = np.where(live, _signed_areas(src_all + full, tri) / np.where(live, a_src, 1.0), 1.0)
            bad = {int(keep[v]) for v in tri[live & (ratio < max(min_ratio, 1e-6))].ravel() if keep[v] < k}
            if not bad:
                break
            _blend_with_neighbours(move, bad, neighbours)
            smoothed |= bad
        # What is left folds only in the target's own mesh (the warp's): smoothed again, the same way.
        points = np.concatenate([src, border_anchors(height, width)])
        neighbours = _neighbour_lists(points, np.arange(len(points)), len(points))
        for _ in range(int(iterations)):
            folded, tri_d, keep_d = _folded_mask(src, src + move, height, width, min_ratio, face_only=False)
            bad = {int(v) for v in keep_d[tri_d[folded]].ravel() if v < k}
            if not bad:
                break
            _blend_with_neighbours(move, bad, neighbours)
            smoothed |= bad
    scale = 1.0
    if folded_before and _folded_mask(src, src + move, height, width, min_ratio)[0].any():
        lo, hi = 0.0, 1.0
        for _ in range(5):
            mid = 0.5 * (lo + hi)
            if _folded_mask(src, src + mid * move, height, width, min_ratio)[0].any():
                hi = mid
            else:
                lo = mid
        scale, move = lo, lo * move
    norm = float(np.linalg.norm(asked))
    change = float(np.linalg.norm(move - asked) / norm) if norm > 0 else 0.0
    return src + move, Unfolding(smoothed=len(smoothed), scale=scale, change=change, folded_before=folded_before)


def _blend_with_neighbours(move: np.ndarray, points: set[int], neighbours: list[np.ndarray]) -> None:
    """In place: the move of each of ``points`` (face point indices) half-way toward the mean move of its mesh
    ``neighbours`` (:func:`_neighbour_lists`; border anchors do not move), all from the moves as they were before
    this call. A point without neighbours (on top of another) keeps its move."""
    full = np.concatenate([move, np.zeros((len(neighbours) - len(move), 2))])
    for v in sorted(points):
        if len(neighbours[v]):
            move[v] = 0.5 * full[v] + 0.5 * full[neighbours[v]].mean(0)


def _neighbour_lists(points: np.ndarray, index: np.ndarray, n: int) -> list[np.ndarray]:
    """For each of ``n`` points (face points then anchors), its neighbours in the Delaunay mesh of ``points``, whose
    row ``r`` is point ``index[r]``; a point not among them (a dropped duplicate) has none."""
    from scipy.spatial import Delaunay

    indptr, indices = Delaunay(points).vertex_neighbor_vertices
    out = [np.zeros(0, dtype=np.int64)] * n
    for r, i in enumerate(index):
        out[int(i)] = np.asarray(index)[indices[indptr[r]:indptr[r + 1]]]
    return out


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


