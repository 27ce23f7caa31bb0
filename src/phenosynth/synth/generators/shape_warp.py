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

Lineage: ``parents`` are the photo(s) warped (pixel parents); ``statistic_parents`` the condition's other training
photos, whose shapes set its phenotype and variation; the whole fit set (the population shape model) is the run's
record. See docs/ARCHITECTURE.md.

Everything random comes from ``sample_rng(seed, label, i)``, so results are bit-identical across runs and processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenosynth.synth.generators.base import GENERATORS, Generator, SyntheticSample, sample_rng
from phenosynth.synth.generators.imaging import (
    WarpSettings, as_rgb, downscale, fold_free, is_grayscale, photometric_jitter, pose_jitter, sample_params,
    warp_image,
)
from phenosynth.faces.procrustes import apply_matrix, similarity_matrix
from phenosynth.synth.shape_model import ShapeModel


@GENERATORS.register("shape-warp")
@dataclass(kw_only=True, eq=False)
class ShapeWarpGenerator(Generator, WarpSettings):
    """Statistical shape model + piecewise-affine warping of the condition's own photos (see module docstring)."""

    name = "shape-warp"
    uses_patient_pixels = True
    fit_set_role = "statistic"  # the shape model is a statistic of the fit set; each image names its pixel parents

    blend_prob: float = 0.3

    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str], *,
             folds: list[int | None], subjects: list[str], identities: object = None) -> None:
        del folds, subjects, identities  # every image is one of the condition's own photos, warped
        ims, lms = [], []
        for im, lm in zip(images, landmarks):
            small, pts = downscale(as_rgb(im), lm, int(self.max_side))
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
        h, w = image1.shape[:2]
        dst = apply_matrix(np.linalg.inv(model.to_model_[p1]), shape)
        dst, pose = pose_jitter(dst, rng, max_rotation=self.max_rotation, max_scale=self.max_scale,
                                max_shift=self.max_shift)
        sources = [lm1]
        if p2 is not None:
            A = similarity_matrix(self.landmarks_[p2], lm1)  # photo 2 -> photo 1's frame
            sources.append(apply_matrix(A, self.landmarks_[p2]))
        dst, warp_record = fold_free(sources, dst, image1.shape, unfold=bool(self.unfold))
        out = warp_image(image1, lm1, dst, factor=self.map_factor).astype(np.float32)
        grayscale = self.grayscale_[p1]
        parents = [self.image_ids_[p1]]
        if p2 is not None:
            import cv2

            image2 = cv2.warpAffine(self.images_[p2], A[:2], (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
            warped2 = warp_image(image2, sources[1], dst, factor=self.map_factor).astype(np.float32)
            out = (1.0 - alpha) * out + alpha * warped2
            grayscale = grayscale and self.grayscale_[p2]
            parents.append(self.image_ids_[p2])
        image, photo = photometric_jitter(out, rng, lighting=self.lighting, colour=self.colour, grayscale=grayscale)

        params = sample_params(self, seed, index, scores, pose, photo, blend_alpha=alpha,
                               **warp_record,
                               shape_mahalanobis=round(float(model.mahalanobis_to_class(scores, label)[0]), 4))
        statistic = [self.image_ids_[m] for m in members if self.image_ids_[m] not in parents]
        return SyntheticSample(image=image, label=label, parents=parents, params=params, index=int(index),
                               statistic_parents=statistic)
