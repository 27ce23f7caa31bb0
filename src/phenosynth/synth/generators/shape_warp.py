"""``shape-warp``: a phenotype-aware generator that runs on a CPU with no downloaded weights.

Fit: a Procrustes + PCA shape model over all real training faces (:class:`~phenosynth.synth.shape_model.ShapeModel`);
each condition's phenotype is its mean shape, its variation its own scatter shrunk toward the pooled
within-condition variation.

Sample image ``i`` of condition ``c``:

1. draw a shape from the condition's Gaussian in PCA space (``variation`` scales the spread);
2. pick one of the condition's training photos (with probability ``blend_prob`` two, blended with weight
   ``alpha`` in [0.25, 0.5] for the second), map the shape into the photo's frame (inverse of its Procrustes
   transform) and apply a small pose jitter (in-plane rotation, scale, shift);
3. warp the photo(s) onto that shape (``phenosynth.faces.warp.warp_to_landmarks``, piecewise affine);
4. jitter lighting (gain, contrast, gamma, a directional light ramp) and, for colour photos, colour (per-channel
   gains, saturation).

Everything random comes from ``sample_rng(seed, label, i)``, so results are bit-identical across runs and processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phenosynth.synth.generators.base import GENERATORS, Generator, SyntheticSample, sample_rng
from phenosynth.faces.procrustes import apply_matrix, similarity_matrix
from phenosynth.synth.shape_model import ShapeModel


def _as_rgb(image: np.ndarray) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (3, 4):
        raise ValueError(f"images must be (H, W, 3) uint8, got {im.shape}")
    return np.ascontiguousarray(im[:, :, :3].astype(np.uint8))


def _downscale(image: np.ndarray, points: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
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


def warp_image(image: np.ndarray, src: np.ndarray, dst: np.ndarray, *, factor: int = 2) -> np.ndarray:
    """``phenosynth.faces.warp`` piecewise-affine warp of ``image (H, W, 3)`` from ``src (K, 2)`` to ``dst (K, 2)``,
    with the backward maps computed on a grid ``factor`` times coarser and interpolated (the maps are continuous and
    piecewise linear, so this costs well under a pixel and saves most of the time of large images)."""
    import cv2

    from phenosynth.faces.warp import warp_maps, warp_to_landmarks

    h, w = image.shape[:2]
    if factor <= 1 or min(h, w) < 32 * factor:
        return warp_to_landmarks(image, src, dst)
    hl, wl = (h - 1) // factor + 1, (w - 1) // factor + 1
    fx, fy = (w - 1) / (wl - 1), (h - 1) / (hl - 1)  # low-res pixel (j, i) sits at full-res (j * fx, i * fy)
    scale = np.array([fx, fy])
    map_x, map_y = warp_maps(np.asarray(src) / scale, np.asarray(dst) / scale, hl, wl)
    low = np.dstack([map_x * fx, map_y * fy]).astype(np.float32)
    gx = (np.arange(w, dtype=np.float32) / fx)[None, :].repeat(h, 0)
    gy = (np.arange(h, dtype=np.float32) / fy)[:, None].repeat(w, 1)
    full = cv2.remap(low, gx, gy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(image, full[..., 0], full[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


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


@GENERATORS.register("shape-warp")
class ShapeWarpGenerator(Generator):
    """Statistical shape model + piecewise-affine warping of the condition's own photos (see module docstring)."""

    name = "shape-warp"
    uses_patient_pixels = True

    def __init__(
        self,
        *,
        variation: float = 1.0,
        shrinkage: float = 4.0,
        variance_kept: float = 0.98,
        clip_sd: float = 3.0,
        blend_prob: float = 0.3,
        max_rotation: float = 6.0,
        max_scale: float = 0.05,
        max_shift: float = 0.03,
        lighting: float = 0.15,
        colour: float = 0.06,
        max_side: int = 512,
        map_factor: int = 1,
    ) -> None:
        self.variation = variation
        self.shrinkage = shrinkage
        self.variance_kept = variance_kept
        self.clip_sd = clip_sd
        self.blend_prob = blend_prob
        self.max_rotation = max_rotation
        self.max_scale = max_scale
        self.max_shift = max_shift
        self.lighting = lighting
        self.colour = colour
        self.max_side = max_side
        self.map_factor = map_factor

    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str]) -> None:
        ims, lms = [], []
        for im, lm in zip(images, landmarks):
            small, pts = _downscale(_as_rgb(im), lm, int(self.max_side))
            ims.append(small)
            lms.append(pts)
        self.images_ = ims
        self.landmarks_ = np.stack(lms)
        self.labels_ = labels
        self.image_ids_ = image_ids
        self.grayscale_ = [is_grayscale(im) for im in ims]
        self.shape_model_ = ShapeModel(
            variance_kept=self.variance_kept, shrinkage=self.shrinkage, clip_sd=self.clip_sd
        ).fit(self.landmarks_, labels)
        self.members_ = {c: [i for i, lab in enumerate(labels) if lab == c] for c in self.shape_model_.classes_}

    @property
    def classes_(self) -> list[str]:
        return list(self.shape_model_.classes_)

    def sample_one(self, label: str, index: int, seed: int) -> SyntheticSample:
        rng = sample_rng(seed, label, index)
        model = self.shape_model_
        scores = model.sample_scores(label, 1, rng, scale=float(self.variation))
        shape = model.shapes_from_scores(scores)[0]
        members = self.members_[label]
        p1 = int(members[int(rng.integers(len(members)))])
        p2, alpha = None, 0.0
        if len(members) >= 2 and rng.random() < self.blend_prob:
            others = [m for m in members if m != p1]
            p2 = int(others[int(rng.integers(len(others)))])
            alpha = float(rng.uniform(0.25, 0.5))

        image1, lm1 = self.images_[p1], self.landmarks_[p1]
        dst = apply_matrix(np.linalg.inv(model.to_model_[p1]), shape)
        dst, pose = pose_jitter(dst, rng, max_rotation=self.max_rotation, max_scale=self.max_scale,
                                max_shift=self.max_shift)
        out = warp_image(image1, lm1, dst, factor=self.map_factor).astype(np.float32)
        grayscale = self.grayscale_[p1]
        parents = [self.image_ids_[p1]]
        if p2 is not None:
            import cv2

            h, w = image1.shape[:2]
            A = similarity_matrix(self.landmarks_[p2], lm1)  # photo 2 -> photo 1's frame
            image2 = cv2.warpAffine(self.images_[p2], A[:2], (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
            warped2 = warp_image(image2, apply_matrix(A, self.landmarks_[p2]), dst, factor=self.map_factor)
            warped2 = warped2.astype(np.float32)
            out = (1.0 - alpha) * out + alpha * warped2
            grayscale = grayscale and self.grayscale_[p2]
            parents.append(self.image_ids_[p2])
        image, photo = photometric_jitter(out, rng, lighting=self.lighting, colour=self.colour, grayscale=grayscale)

        sd = np.sqrt(model.pca_.explained_variance_)
        params: dict[str, Any] = {
            "generator": self.name,
            "seed": int(seed),
            "index": int(index),
            "settings": self.get_params(),
            "blend_alpha": alpha,
            "shape_sd": [round(float(v), 4) for v in (scores[0] / sd)[:8]],
            "shape_mahalanobis": round(float(model.mahalanobis_to_class(scores, label)[0]), 4),
            **{k: round(v, 5) for k, v in pose.items()},
            **{k: (round(v, 5) if isinstance(v, float) else [round(x, 5) for x in v]) for k, v in photo.items()},
        }
        return SyntheticSample(image=image, label=label, parents=parents, params=params, index=int(index))
