"""``phenotype-transfer``: a condition's phenotype on a face that belongs to no patient (CPU, no downloaded weights).

Fit: the shape model of ``shape-warp`` (:class:`~phenosynth.synth.shape_model.ShapeModel`): Procrustes-aligned shapes
of all real training faces give the population mean; a condition's phenotype is its mean offset from that mean plus
its own variation, shrunk toward the pooled within-condition variation (``shrinkage``, n ~ 4).

Sample image ``i`` of condition ``c``:

1. an **identity**: a donor face (manifest ``source=donor``) when the workspace has any, else a **morph**: the
   average of ``k`` real training faces of ``k`` different subjects, all from one validation fold and spread over
   as many conditions as the fold has (round robin over the conditions in random order), each first warped to the
   population mean shape (their own phenotype removed; done once at fit time), with a new random k-subset per image;
2. the identity's own aligned shape (a morph's is the population mean) plus ``strength`` x the condition's mean
   offset plus a draw of the condition's variation (``variation`` scales it), each PCA score clipped to ``clip_sd``
   population standard deviations; mapped back into the identity's frame, with the pose jitter of ``shape-warp``;
3. optionally the condition's mean shape-free texture offset (``texture_strength``, default 0) added to the identity;
4. the identity's photo warped onto that shape, then ``shape-warp``'s lighting and colour jitter.

Lineage by role: ``parents`` are the **pixel** parents (the donor, or the morph's members); ``statistic_parents`` the
condition's training photos that shaped its phenotype (and texture offset), less any pixel parent. The whole fit set
(population mean, pooled variation) is the run's record, ``run.json``'s ``training_images``.

Identities (``identities``): "auto" (donors when the workspace has any, else morphs), "donors" (refuse to run
without), "morphs" (leave donors aside). **Donors are the path that passes the privacy audit**: on ORL
(benchmarks/results/identity_free.md) donor images match a patient no more often than the donors' own photos do
(with look-alike donors screened out, within the stranger rate), membership AUC ~0.5; no morph setting passed (k up
to 12: membership AUC ~0.7, more matches than strangers get). A morph run's :meth:`notes` say so.

``uses_patient_pixels`` is True for the class (a morph blends k patients' pixels) and set per fitted instance: False
when the identities are donors. The run records it in ``run.json``; the audit, exports and sheets read it from there
(``phenosynth.audit.privacy.run_uses_patient_pixels``): a morph run is augmentation of patient photos (exports need
``--allow-patient-pixels``; sheets refuse it), a donor run is synthesis.

Speed: the shape-free (mean-shape) faces are made at fit with one triangulation of the mean shape for all of them
(:func:`~phenosynth.synth.generators.imaging.warp_target`), so fit + sampling runs at least as fast as ``shape-warp``
on the same photos.

Everything random comes from ``sample_rng(seed, label, i)``, so results are bit-identical across runs and processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from phenosynth.errors import PhenosynthError
from phenosynth.faces.procrustes import apply_matrix, similarity_matrix
from phenosynth.synth.generators.base import GENERATORS, Generator, Identities, SyntheticSample, sample_rng
from phenosynth.synth.generators.imaging import (
    WarpSettings, WarpTarget, as_rgb, downscale, fold_free, is_grayscale, photometric_jitter, pose_jitter,
    sample_params, warp_image, warp_onto, warp_target,
)
from phenosynth.synth.shape_model import ShapeModel


def _to_frame(image: np.ndarray, points: np.ndarray, target: np.ndarray, size: tuple[int, int], *,
              factor: int, prepared: WarpTarget | None = None) -> np.ndarray:
    """``image`` with landmarks ``points`` moved into a ``size = (H, W)`` frame (similarity) and warped so that its
    landmarks land exactly on ``target (K, 2)``; float32. ``prepared``: ``warp_target(target, H, W, factor=factor)``,
    when many faces go onto one target (the same pixels, the target's triangulation computed once)."""
    import cv2

    h, w = size
    A = similarity_matrix(points, target)
    moved = cv2.warpAffine(np.asarray(image, dtype=np.float32), A[:2], (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    return warp_onto(moved, apply_matrix(A, points), prepared or warp_target(target, h, w, factor=factor))


#: ``identities`` options
IDENTITY_MODES = ("auto", "donors", "morphs")
#: what a run with morph identities is told (benchmarks/results/identity_free.md)
MORPH_NOTE = ("its images hold patient pixels and are treated like shape-warp's (exports and sheets refuse them "
              "without --allow-patient-pixels); on ORL no morph setting passed the privacy audit (k <= 12), donor "
              "identities did (donors that look like a patient screened out). Add donors: phenosynth ingest DIR -w WS --donors.")


@GENERATORS.register("phenotype-transfer")
@dataclass(kw_only=True, eq=False)
class PhenotypeTransferGenerator(Generator, WarpSettings):
    """A condition's shape phenotype transferred onto donor faces or k-subject morphs (see module docstring)."""

    name = "phenotype-transfer"
    uses_patient_pixels = True  # without donors; a fitted instance with donors says False
    accepts_identities = True
    fit_set_role = "statistic"

    # defaults from benchmarks/identity_free.py (benchmarks/results/identity_free.md): strength 2 carries the phenotype
    # (probe agreement far above the real photos') without raising identity matches; k=6 morphs need 6 subjects in a
    # fold (k=12 matched less but needs 12, and neither passed the audit: donors are the path that does)
    strength: float = 2.0
    k: int = 6
    texture_strength: float = 0.0
    #: "auto": donors when the workspace has any, else morphs; "donors": refuse to run without; "morphs": ignore donors
    identities: str = "auto"
    #: donor identities: each image's face is one donor photo (1), or the blend of this many photos of as many
    #: different donor people, each first warped to the population mean shape (a new face that is no one's, from
    #: donor pixels only: more identities than the donor pool has people)
    donor_blend: int = 1

    # --- fit ---------------------------------------------------------------------------------------------------------

    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str], *,
             folds: list[int | None], subjects: list[str], identities: Identities | None) -> None:
        if int(self.k) < 2:
            raise PhenosynthError(f"phenotype-transfer: k (faces per morph) must be at least 2, not {self.k}.")
        if int(self.donor_blend) < 1:
            raise PhenosynthError(f"phenotype-transfer: donor_blend (donor people per face) must be at least 1, not "
                                  f"{self.donor_blend}.")
        if self.identities not in IDENTITY_MODES:
            raise PhenosynthError(f"phenotype-transfer: identities must be one of {', '.join(IDENTITY_MODES)}, not "
                                  f"{self.identities!r}.")
        if self.identities == "morphs":
            identities = None
        elif self.identities == "donors" and (identities is None or len(identities.image_ids) == 0):
            raise PhenosynthError("phenotype-transfer: identities=donors, but the workspace has no donor faces with "
                                  "landmarks. Add some: phenosynth ingest DIR -w WS --donors, then phenosynth faces.")
        ims, lms = self._prepared(images, landmarks)
        self.labels_ = labels
        self.image_ids_ = image_ids
        self.folds_ = folds
        self.subjects_ = subjects
        model = ShapeModel(variance_kept=self.variance_kept, shrinkage=self.shrinkage, clip_sd=self.clip_sd)
        self.shape_model_ = model.fit(lms, labels)
        self.members_ = {c: [i for i, lab in enumerate(labels) if lab == c] for c in model.classes_}
        # the canonical frame of morphs and shape-free textures: the population mean shape placed where the training
        # faces are on average (an average of similarity copies of one shape is again one), at the median size
        self.canvas_size_ = (int(np.median([im.shape[0] for im in ims])), int(np.median([im.shape[1] for im in ims])))
        self.canvas_shape_ = np.mean([apply_matrix(np.linalg.inv(M), model.reference_) for M in model.to_model_], 0)
        self.canvas_to_model_ = similarity_matrix(self.canvas_shape_, model.reference_)
        has_donors = identities is not None and len(identities.image_ids) > 0
        need_shape_free = not has_donors or float(self.texture_strength) != 0.0
        # one triangulation of the mean shape serves every face (only the per-face affine solves differ)
        canvas = warp_target(self.canvas_shape_, *self.canvas_size_, factor=int(self.map_factor))
        shape_free = [self._shape_free(im, lm, canvas) for im, lm in zip(ims, lms)] if need_shape_free else []
        self.shape_free_ = np.stack([np.clip(np.rint(s), 0, 255).astype(np.uint8) for s in shape_free]) \
            if shape_free else None
        self.grayscale_ = [is_grayscale(im) for im in ims]
        self.texture_offsets_: dict[str, np.ndarray] = {}
        if float(self.texture_strength) != 0.0:
            population = np.mean(shape_free, 0)
            self.texture_offsets_ = {c: (np.mean([shape_free[i] for i in m], 0) - population).astype(np.float32)
                                     for c, m in self.members_.items()}
        self.uses_patient_pixels = not has_donors
        if has_donors:
            d_ims, d_lms = self._prepared(list(identities.images), identities.landmarks)
            if d_lms.shape[1] != lms.shape[1]:
                raise PhenosynthError("Donor faces and training faces must have the same landmarks (one landmarker).")
            self.donor_images_, self.donor_landmarks_ = d_ims, d_lms
            self.donor_ids_ = [str(i) for i in identities.image_ids]
            self.donor_to_model_ = np.stack([similarity_matrix(p, model.reference_) for p in d_lms])
            self.donor_grayscale_ = [is_grayscale(im) for im in d_ims]
            people = identities.subjects if identities.subjects is not None else self.donor_ids_
            self.donor_people_ = [str(p) for p in people]
            if int(self.donor_blend) > 1:
                n_people = len(set(self.donor_people_))
                if n_people < int(self.donor_blend):
                    raise PhenosynthError(f"phenotype-transfer: donor_blend={self.donor_blend} blends that many donor "
                                          f"people per face, but the workspace has {n_people}. Use a smaller "
                                          "donor_blend or add donors: phenosynth ingest DIR -w WS --donors.")
                self.donor_shape_free_ = np.stack([self._shape_free(im, lm, canvas) for im, lm in zip(d_ims, d_lms)])
            self.morph_groups_: dict[Any, list[int]] = {}
        else:
            self.donor_ids_ = []
            self.morph_groups_ = self._morph_groups()

    def notes(self) -> list[str]:
        if self.donor_ids_:
            return []
        return [f"phenotype-transfer made morph identities (k={self.k} patients' photos blended per image): "
                f"{MORPH_NOTE}"]

    def _prepared(self, images: list[np.ndarray], landmarks: Any) -> tuple[list[np.ndarray], np.ndarray]:
        ims, lms = [], []
        for im, lm in zip(images, landmarks):
            small, pts = downscale(as_rgb(im), np.asarray(lm, dtype=np.float64).reshape(-1, 2), int(self.max_side))
            ims.append(small)
            lms.append(pts)
        return ims, np.stack(lms)

    def _shape_free(self, image: np.ndarray, points: np.ndarray, canvas: WarpTarget) -> np.ndarray:
        """The face in the canonical frame, warped to the population mean shape (float32)."""
        return _to_frame(image, points, self.canvas_shape_, self.canvas_size_, factor=int(self.map_factor),
                         prepared=canvas)

    def _morph_groups(self) -> dict[Any, list[int]]:
        """Validation fold -> its training images, for the folds with at least ``k`` subjects (a morph's members
        come from one fold, so a fold's model leaves out only the morphs of its own validation photos)."""
        groups: dict[Any, list[int]] = {}
        for i, f in enumerate(self.folds_):
            groups.setdefault(f, []).append(i)
        k = int(self.k)
        usable = {f: m for f, m in groups.items() if len({self.subjects_[i] for i in m}) >= k}
        if not usable:
            most = max(len({self.subjects_[i] for i in m}) for m in groups.values())
            raise PhenosynthError(
                f"phenotype-transfer makes each morph identity from k={k} subjects of one validation fold, but the "
                f"largest fold has {most} subject(s) with a face. Use a smaller k (--option k=...), fewer folds, or "
                "add donor faces (phenosynth ingest DIR -w WS --donors)."
            )
        return dict(sorted(usable.items(), key=lambda kv: (kv[0] is None, kv[0] if kv[0] is not None else 0)))

    @property
    def classes_(self) -> list[str]:
        return list(self.shape_model_.classes_)

    # --- sample ------------------------------------------------------------------------------------------------------

    def morph_members(self, rng: np.random.Generator) -> tuple[Any, list[int]]:
        """(fold, k training image indices of k different subjects of that fold, spread over its conditions)."""
        folds = list(self.morph_groups_)
        fold = folds[int(rng.integers(len(folds)))]
        by_condition: dict[str, list[int]] = {}
        for i in self.morph_groups_[fold]:
            by_condition.setdefault(self.labels_[i], []).append(i)
        conditions = [sorted(by_condition)[j] for j in rng.permutation(len(by_condition))]
        chosen: list[int] = []
        used: set[str] = set()
        while len(chosen) < int(self.k):  # round robin over the conditions: as many conditions as the fold allows
            for c in conditions:
                candidates = [i for i in by_condition[c] if self.subjects_[i] not in used]
                if candidates and len(chosen) < int(self.k):
                    pick = candidates[int(rng.integers(len(candidates)))]
                    chosen.append(pick)
                    used.add(self.subjects_[pick])
        return fold, chosen

    def _blend(self, shape_free: np.ndarray, members: list[int], label: str) -> np.ndarray:
        """The mean of ``members``' shape-free faces (on the canvas), plus the condition's texture offset when
        ``texture_strength`` is set; float32."""
        image = shape_free[members].astype(np.float32).mean(0)
        ts = float(self.texture_strength)
        return image + ts * self.texture_offsets_[label] if ts else image

    def donor_blend_members(self, rng: np.random.Generator) -> list[int]:
        """``donor_blend`` donor photo indices, one photo each of as many different donor people (random people, then
        a random photo of each)."""
        by_person: dict[str, list[int]] = {}
        for i, person in enumerate(self.donor_people_):
            by_person.setdefault(person, []).append(i)
        people = sorted(by_person)
        picked = rng.choice(len(people), size=int(self.donor_blend), replace=False)
        return [by_person[people[j]][int(rng.integers(len(by_person[people[j]])))] for j in sorted(picked)]

    def _identity(self, label: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str],
                                                                          bool, dict[str, Any]]:
        """(image, its landmarks, its frame -> model frame matrix, pixel parents, grayscale, params) of one identity,
        with the condition's texture offset added when ``texture_strength`` is set."""
        ts = float(self.texture_strength)
        if self.donor_ids_ and int(self.donor_blend) > 1:
            chosen = self.donor_blend_members(rng)
            return (self._blend(self.donor_shape_free_, chosen, label), self.canvas_shape_, self.canvas_to_model_,
                    [self.donor_ids_[d] for d in chosen], all(self.donor_grayscale_[d] for d in chosen),
                    {"identity": "donor-blend"})
        if self.donor_ids_:
            d = int(rng.integers(len(self.donor_ids_)))
            image, points = self.donor_images_[d], self.donor_landmarks_[d]
            if ts:
                h, w = image.shape[:2]
                offset = _to_frame(self.texture_offsets_[label], self.canvas_shape_, points, (h, w),
                                   factor=int(self.map_factor))
                image = image.astype(np.float32) + ts * offset
            return (image, points, self.donor_to_model_[d], [self.donor_ids_[d]], self.donor_grayscale_[d],
                    {"identity": "donor"})
        fold, members = self.morph_members(rng)
        image = self._blend(self.shape_free_, members, label)
        grayscale = all(self.grayscale_[i] for i in members)
        params = {"identity": "morph", "morph_fold": fold,
                  "morph_conditions": len({self.labels_[i] for i in members})}
        return image, self.canvas_shape_, self.canvas_to_model_, [self.image_ids_[i] for i in members], grayscale, params

    def sample_one(self, label: str, index: int, seed: int) -> SyntheticSample:
        rng = sample_rng(seed, label, index)
        model = self.shape_model_
        c = model.classes_.index(label)
        scores = model.clip_scores(float(self.strength) * model.class_means_[c]
                                   + model.variation_scores(label, 1, rng, scale=float(self.variation)))
        offset = model.offset_from_scores(scores)[0]
        image, points, to_model, parents, grayscale, identity = self._identity(label, rng)
        dst = apply_matrix(np.linalg.inv(to_model), apply_matrix(to_model, points) + offset)
        dst, pose = pose_jitter(dst, rng, max_rotation=self.max_rotation, max_scale=self.max_scale,
                                max_shift=self.max_shift)
        dst, warp_record = fold_free([points], dst, image.shape, unfold=bool(self.unfold))
        out = warp_image(image, points, dst, factor=int(self.map_factor))
        image, photo = photometric_jitter(np.asarray(out, dtype=np.float32), rng, lighting=self.lighting,
                                          colour=self.colour, grayscale=grayscale)
        pixel = set(parents)
        statistic = [self.image_ids_[i] for i in self.members_[label] if self.image_ids_[i] not in pixel]
        params = sample_params(self, seed, index, scores, pose, photo, **warp_record, **identity)
        return SyntheticSample(image=image, label=label, parents=parents, params=params, index=int(index),
                               statistic_parents=statistic)
