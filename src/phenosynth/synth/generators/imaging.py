"""Image helpers the CPU generators share: RGB conversion, downscaling with landmarks, the piecewise-affine warp
(with coarse backward maps), and the photometric and pose jitter of ``shape-warp`` and ``phenotype-transfer``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(kw_only=True, eq=False)
class WarpSettings:
    """The settings the warping generators share (each generator is a dataclass over these plus its own):
    the shape model's (``variation`` scales the sampled spread, ``shrinkage`` of a condition's own variation toward
    the pooled one, ``variance_kept`` by the PCA, ``clip_sd`` population SDs per score), the pose jitter
    (:func:`pose_jitter`), the photometric jitter (:func:`photometric_jitter`), ``max_side`` (photos are shrunk to at
    most this many pixels), ``map_factor`` (:func:`warp_image`) and ``unfold`` (:func:`fold_free`: a move that would
    tear the face is smoothed first; ``False`` warps exactly as asked, folds and all)."""

    variation: float = 1.0
    shrinkage: float = 4.0
    variance_kept: float = 0.98
    clip_sd: float = 3.0
    max_rotation: float = 6.0
    max_scale: float = 0.05
    max_shift: float = 0.03
    lighting: float = 0.15
    colour: float = 0.06
    max_side: int = 512
    map_factor: int = 1
    unfold: bool = True


def as_rgb(image: np.ndarray) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (3, 4):
        raise ValueError(f"images must be (H, W, 3) uint8, got {im.shape}")
    return np.ascontiguousarray(im[:, :, :3].astype(np.uint8))


def downscale(image: np.ndarray, points: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``image`` so its longest side is at most ``max_side``; scale ``points (K, 2)`` to match."""
    import cv2

    h, w = image.shape[:2]
    f = max_side / max(h, w)
    if f >= 1.0:
        return image, points
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    scale = np.array([size[0] / w, size[1] / h])
    return small, points * scale


@dataclass(frozen=True, eq=False)
class WarpTarget:
    """Target landmarks of :func:`warp_image` prepared once for any number of source images of one size: the target
    mesh (at the coarse grid when ``factor > 1``) and the grid that interpolates coarse maps to full resolution."""

    size: tuple[int, int]  # (H, W) of the images
    mesh: Any  # phenosynth.faces.warp.TargetMesh
    scale: np.ndarray | None  # (fx, fy): coarse pixel (j, i) sits at full-res (j * fx, i * fy); None: full-res maps
    grid: tuple[np.ndarray, np.ndarray] | None


def warp_target(dst: np.ndarray, height: int, width: int, *, factor: int = 2) -> WarpTarget:
    """Prepare the target ``dst (K, 2)`` for warping ``height x width`` images onto it (:func:`warp_onto`)."""
    from phenosynth.faces.warp import target_mesh

    if factor <= 1 or min(height, width) < 32 * factor:
        return WarpTarget(size=(height, width), mesh=target_mesh(dst, height, width), scale=None, grid=None)
    hl, wl = (height - 1) // factor + 1, (width - 1) // factor + 1
    fx, fy = (width - 1) / (wl - 1), (height - 1) / (hl - 1)
    scale = np.array([fx, fy])
    gx = (np.arange(width, dtype=np.float32) / fx)[None, :].repeat(height, 0)
    gy = (np.arange(height, dtype=np.float32) / fy)[:, None].repeat(width, 1)
    return WarpTarget(size=(height, width), mesh=target_mesh(np.asarray(dst) / scale, hl, wl), scale=scale,
                      grid=(gx, gy))


def warp_onto(image: np.ndarray, src: np.ndarray, target: WarpTarget) -> np.ndarray:
    """``image (H, W, 3)`` with landmarks ``src (K, 2)`` warped onto a prepared target (:func:`warp_image`)."""
    import cv2

    if tuple(image.shape[:2]) != tuple(target.size):
        raise ValueError(f"image is {image.shape[:2]}, the warp target {target.size}")
    if target.scale is None:
        map_x, map_y = target.mesh.maps(src)
    else:
        fx, fy = (float(v) for v in target.scale)  # Python floats: float32 maps stay float32 (NEP 50)
        low_x, low_y = target.mesh.maps(np.asarray(src) / target.scale)
        low = np.dstack([low_x * fx, low_y * fy]).astype(np.float32)
        full = cv2.remap(low, *target.grid, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        map_x, map_y = full[..., 0], full[..., 1]
    return cv2.remap(np.asarray(image), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def warp_image(image: np.ndarray, src: np.ndarray, dst: np.ndarray, *, factor: int = 2) -> np.ndarray:
    """``phenosynth.faces.warp`` piecewise-affine warp of ``image (H, W, 3)`` from ``src (K, 2)`` to ``dst (K, 2)``,
    with the backward maps computed on a grid ``factor`` times coarser and interpolated (the maps are continuous and
    piecewise linear, so this costs well under a pixel and saves most of the time of large images). Many images onto
    one target: :func:`warp_target` once, then :func:`warp_onto` (the same pixels)."""
    h, w = image.shape[:2]
    return warp_onto(image, src, warp_target(dst, h, w, factor=factor))


def fold_free(sources: Sequence[np.ndarray], dst: np.ndarray, size: tuple[int, ...], *, unfold: bool = True,
              rounds: int = 3) -> tuple[np.ndarray, dict[str, Any]]:
    """``(dst', params)``: the target landmarks a warping generator uses for the photos whose landmarks (in one frame,
    ``size (H, W, ...)``) are ``sources`` (one per photo warped onto the target: two when ``shape-warp`` blends a second
    photo in): ``dst`` made fold-free for each by :func:`phenosynth.faces.warp.unfolded_target`, in turn, until none
    folds (at most ``rounds`` passes), or as it is when ``unfold`` is False. The image's record of it:
    ``unfold_change`` (share of the asked move, from the first source, given up), ``unfold_scale`` (the smallest
    whole-move scale a pass needed) and ``folded_triangles`` (mirrored face triangles left, summed over the sources:
    0 unless ``unfold`` is False or the passes ran out)."""
    from phenosynth.faces.warp import folded_triangles, unfolded_target

    h, w = size[:2]
    asked = np.asarray(dst, dtype=np.float64)
    out, scale = asked, 1.0
    folds = sum(folded_triangles(src, out, h, w) for src in sources)
    for _ in range(int(rounds) if unfold else 0):
        if not folds:
            break
        for src in sources:
            out, how = unfolded_target(src, out, h, w)
            scale = min(scale, how.scale)
        folds = sum(folded_triangles(src, out, h, w) for src in sources)
    norm = float(np.linalg.norm(asked - np.asarray(sources[0], dtype=np.float64)))
    change = float(np.linalg.norm(out - asked) / norm) if norm > 0 else 0.0
    return out, {"unfold_change": round(change, 4), "unfold_scale": round(scale, 4), "folded_triangles": folds}


def is_grayscale(image: np.ndarray) -> bool:
    """True when an RGB image's three channels are identical."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def photometric_jitter(
    image: np.ndarray, rng: np.random.Generator, *, lighting: float, colour: float, grayscale: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lighting and colour jitter of ``image (H, W, 3)`` float in [0, 255] -> (uint8 image, parameters used).

    Lighting: gain and contrast in ``1 +/- lighting``, gamma in ``exp(+/- lighting)``, and a linear light ramp of
    amplitude up to ``lighting`` in a random direction. Colour (skipped for grayscale photos, which must stay grey):
    per-channel gains in ``1 +/- colour`` and saturation in ``1 +/- 2.5 colour``.
    """
    h, w = image.shape[:2]
    x = np.clip(image.astype(np.float32) / 255.0, 0.0, 1.0)
    gain = float(1.0 + rng.uniform(-lighting, lighting))
    contrast = float(1.0 + rng.uniform(-lighting, lighting))
    gamma = float(np.exp(rng.uniform(-lighting, lighting)))
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    ramp_amp = float(rng.uniform(0.0, lighting))
    channel_gains = (1.0 + rng.uniform(-colour, colour, size=3)).astype(np.float32)
    saturation = float(1.0 + rng.uniform(-2.5 * colour, 2.5 * colour))

    mean = float(x.mean())
    x = (x - mean) * contrast + mean
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / max(w - 1, 1) - 0.5) + np.sin(angle) * (yy / max(h - 1, 1) - 0.5)) * 2.0
    x = x * (gain * (1.0 + ramp_amp * ramp))[:, :, None]
    if not grayscale:
        x = x * channel_gains
        grey = x.mean(axis=2, keepdims=True)
        x = grey + saturation * (x - grey)
    x = np.clip(x, 0.0, 1.0) ** gamma
    out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    params = {"gain": gain, "contrast": contrast, "gamma": gamma, "light_angle": angle, "light_ramp": ramp_amp}
    if not grayscale:
        params.update({"channel_gains": [float(g) for g in channel_gains], "saturation": saturation})
    return out, params


def pose_jitter(points: np.ndarray, rng: np.random.Generator, *, max_rotation: float, max_scale: float,
                max_shift: float) -> tuple[np.ndarray, dict[str, float]]:
    """Rotate (degrees in ``+/- max_rotation``), scale (``1 +/- max_scale``) and shift (``+/- max_shift`` of the face
    size) ``points (K, 2)`` about their centroid -> (new points, parameters)."""
    centre = points.mean(0)
    size = float(np.sqrt(np.prod(np.ptp(points, axis=0).clip(1.0))))
    theta = float(rng.uniform(-max_rotation, max_rotation))
    scale = float(1.0 + rng.uniform(-max_scale, max_scale))
    shift = rng.uniform(-max_shift, max_shift, size=2) * size
    t = np.deg2rad(theta)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    out = (points - centre) @ R.T * scale + centre + shift
    return out, {"rotation_deg": theta, "scale": scale, "shift_x": float(shift[0]), "shift_y": float(shift[1])}


def sample_params(generator: Any, seed: int, index: int, scores: np.ndarray, pose: dict[str, float],
                  photo: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The JSON-ready ``params`` of one sample of a shape-model generator: who made it (name, seed, index, settings),
    ``extra``, its first 8 shape scores in population SDs (``scores (1, k)``), its pose and photometric jitter."""
    sd = np.sqrt(generator.shape_model_.pca_.explained_variance_)
    return {
        "generator": generator.name,
        "seed": int(seed),
        "index": int(index),
        "settings": generator.get_params(),
        **extra,
        "shape_sd": [round(float(v), 4) for v in (scores[0] / sd)[:8]],
        **{k: round(v, 5) for k, v in pose.items()},
        **{k: (round(v, 5) if isinstance(v, float) else [round(x, 5) for x in v]) for k, v in photo.items()},
    }
