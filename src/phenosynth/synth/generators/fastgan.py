"""``fastgan``: FastGAN (Liu et al., ICLR 2021) trained from scratch on the workspace's real training photos.

Networks, DiffAugment and losses: :mod:`phenosynth.synth.fastgan_nets`. Training: Adam (lr 2e-4, betas 0.5 / 0.999),
batch 8, nz 256, hinge loss, DiffAugment colour + translation on real and fake images, the discriminator's
self-supervised reconstructions (whole image, small image, one random quarter), an exponential moving average (EMA,
0.999) of the generator, which is what samples. Reconstruction loss: LPIPS-VGG when the ImageNet VGG16 weights are
there (``lpips_weights``: ``auto`` looks in torchvision's cache, or a path; nothing is downloaded), else
``L1 + (1 - SSIM)`` — a deviation from the paper, written in the model card and in every sample's params.

Photos are cropped around their landmarks (a square ``crop_scale`` times the landmarks' extent, edges replicated;
``crop_scale=0``: the whole photo, padded to a square) and resized to ``resolution`` (64, 128, 256 or 512).

Modes:

- ``unconditional`` (what RDFace did): one GAN over every condition's training photos. A sample is labelled
  afterwards by the nearest landmark prototype: the project's face pass (``detector``, ``landmarker``:
  :func:`phenosynth.faces.facepass.analyse_image`) runs on the sample and on the training crops, ``representation``
  (``rdface25`` or ``shape68``) is computed, and the label is the condition whose prototype (mean over its training
  crops) has the highest cosine; ``label_cosine`` and ``label_margin`` (best minus second best) are stored in the
  sample's params. Samples are drawn from one candidate stream per seed (candidate ``j`` a pure function of
  ``(seed, j)``); image ``i`` of condition ``c`` is the ``i``-th candidate labelled ``c``, so it does not depend on
  which other conditions are asked for. Candidates without a detected face get no label; their number is logged and
  stored as ``unlabelled_before`` in the params of the next labelled sample. A condition that is rarely nearest may
  get fewer images than asked: the search stops after ``max_candidates`` candidates (logged; ``generate``'s summary
  shows the per-condition counts). Only conditions with at least one training crop in which a face was found have a
  prototype and can be sampled.
- ``conditional``: the condition enters the generator through its skip-layer-excitation gates (a class embedding
  added to every gate) and the discriminator has an auxiliary classifier head (cross-entropy on real photos for the
  discriminator, on generated ones for the generator, AC-GAN style). Chosen over a plain projection cGAN because the
  literature reports plain conditioning collapsing on small sets; which of the two works better here is a benchmark
  for GPU time and has not been run.

Checkpoints: every ``checkpoint_every`` iterations (and at the end) under ``checkpoint_dir`` (``generate`` sets it to
``WS/synthetic/<run>/models/``): generator, EMA, discriminator, both optimisers, the iteration and the training
random state, plus ``model_card.json``. A later fit with the same settings and fit set resumes from the last one and
gives the same weights as an uninterrupted run; ``sample_from=K`` samples from checkpoint ``K`` without training.

Lineage: ``fit_set_role = "pixel"`` (a GAN can memorise its training photos, so every photo of the fit set is
treated as a pixel source of every image; the audit measures identity matches and copies) and
``uses_patient_pixels = False`` (its images are drawn from a learned model, not transformed photos). Each image's
``parents`` is empty (no single photo is its source; the run's fit set is in ``run.json``); its
``statistic_parents`` are the photos that define its label (its condition's prototype photos, or in conditional mode
the condition's training photos).

Cross-validation: with the pixel role, the fold rule keeps a run fit on every training photo out of every fold's
training (each fold's validation photos are in its fit set). ``holdout_fold=k`` fits on the training photos outside
validation fold ``k`` only (``run.json`` records that fit set), so the run's images can train fold ``k``'s model; one
run per fold (``--name fastgan-f0 -o holdout_fold=0``, ...) serves a whole cross-validated study.

Device: CUDA when available, else the CPU with a warning (hours for real training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from phenosynth.errors import PhenosynthError
from phenosynth.synth.generators.base import GENERATORS, Generator, SyntheticSample, sample_rng

log = logging.getLogger(__name__)

MODES = ("unconditional", "conditional")
#: candidates generated (and labelled) together in unconditional mode; part of what a candidate is, never change it
CANDIDATE_BLOCK = 16
VGG16_FILE = "vgg16-397923af.pth"
_UNCONDITIONAL = "<unconditional>"


@dataclass(frozen=True)
class TrainSettings:
    """What a FastGAN training run depends on (checkpoints are only resumed under equal settings)."""

    resolution: int
    nz: int
    ngf: int
    ndf: int
    n_classes: int
    batch_size: int
    lr: float
    ema_decay: float
    augment: tuple[str, ...]
    reconstruction: str
    train_seed: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def resolve_device(device: str = "auto") -> str:
    """``auto``: ``cuda`` when a CUDA GPU is available, else ``cpu`` (with a warning); else ``device`` as given."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    log.warning("No CUDA GPU: FastGAN trains on the CPU. Expect tens of seconds per iteration at 256 px (39 s on a "
                "2-core machine: weeks for the paper's 50,000 iterations); use a GPU for real runs.")
    return "cpu"


def resolve_lpips_weights(lpips_weights: str | None) -> Path | None:
    """The ImageNet VGG16 file LPIPS needs, or None (then L1 + SSIM is used). ``auto``: torchvision's cache
    (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``) if it is there; ``none``: never; a path: that file (must
    exist). Nothing is downloaded."""
    from phenosynth.models.weights import explicit_file, find_file, torchvision_dir

    if lpips_weights is None or str(lpips_weights).lower() == "none":
        return None
    if str(lpips_weights).lower() == "auto":
        return find_file(VGG16_FILE, [torchvision_dir()])
    return explicit_file(lpips_weights, "LPIPS (ImageNet VGG16)")


# --- data ---------------------------------------------------------------------------------------------------------


def face_crop(image: np.ndarray, landmarks: np.ndarray, resolution: int, crop_scale: float) -> np.ndarray:
    """``image (H, W, 3)`` uint8 -> ``(R, R, 3)`` uint8: a square of ``crop_scale`` times the landmarks' larger extent
    around their centre (edges replicated), or with ``crop_scale == 0`` the whole photo padded to a square."""
    import cv2

    from phenosynth.synth.generators.imaging import as_rgb

    im = as_rgb(image)
    h, w = im.shape[:2]
    if crop_scale > 0:
        lo, hi = landmarks.min(0), landmarks.max(0)
        centre, side = (lo + hi) / 2, float(max(hi - lo)) * crop_scale
    else:
        centre, side = np.array([w / 2, h / 2]), float(max(h, w))
    s = resolution / max(side, 1.0)
    M = np.array([[s, 0, resolution / 2 - s * centre[0]], [0, s, resolution / 2 - s * centre[1]]])
    return cv2.warpAffine(im, M, (resolution, resolution), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def default_crop_scale(n_points: int) -> float:
    """68 points span brows to chin (x 2 takes the whole head); 5 points only eyes to mouth (x 3.5)."""
    return 2.0 if n_points >= 68 else 3.5


def to_tensor(images: np.ndarray):
    """``(N, R, R, 3)`` uint8 -> ``(N, 3, R, R)`` float32 in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images) -> np.ndarray:
    """``(N, 3, R, R)`` in [-1, 1] -> ``(N, R, R, 3)`` uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(0, 2, 3, 1).numpy().astype(np.uint8)


# --- training -----------------------------------------------------------------------------------------------------


@dataclass
class FastGANTrainer:
    """FastGAN training state on ``device``: networks, EMA, optimisers, the iteration and the training random state
    (a CPU ``torch.Generator``). :meth:`train` runs iterations; :meth:`save` / :meth:`load` a checkpoint."""

    settings: TrainSettings
    device: str = "cpu"
    lpips_file: Path | None = None
    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import copy

        import torch

        from phenosynth.models.seeding import seeded
        from phenosynth.synth.fastgan_nets import FastGANDiscriminator, FastGANGenerator, init_weights

        st = self.settings
        with seeded(st.train_seed):  # spectral norm's power-iteration vectors start from torch's global RNG
            init = torch.Generator().manual_seed(st.train_seed)
            self.G = FastGANGenerator(st.resolution, st.nz, st.ngf, st.n_classes)
            self.D = FastGANDiscriminator(st.resolution, st.ndf, st.n_classes)
            init_weights(self.G, init)
            init_weights(self.D, init)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        for m in (self.G, self.D, self.G_ema):
            m.to(self.device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=st.lr, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=st.lr, betas=(0.5, 0.999))
        self.rng = torch.Generator().manual_seed(st.train_seed + 1)
        self.reconstruction_loss = self._reconstruction_loss().to(self.device)

    def _reconstruction_loss(self):
        from phenosynth.synth.fastgan_nets import L1SSIMLoss, LPIPSLoss

        if self.settings.reconstruction == "lpips-vgg":
            if self.lpips_file is None:
                raise PhenosynthError("LPIPS reconstruction needs the ImageNet VGG16 weights file.")
            return LPIPSLoss(str(self.lpips_file))
        return L1SSIMLoss()

    def step(self, real, labels) -> dict[str, float]:
        """One iteration on a batch ``real (B, 3, R, R)`` in [-1, 1] (+ class indices ``(B,)`` in conditional mode):
        a discriminator step, a generator step, the EMA update. Returns the losses."""
        import torch
        import torch.nn.functional as F

        from phenosynth.synth.fastgan_nets import (crop_quarter, d_hinge_fake, d_hinge_real, diff_augment,
                                                   small_side)

        st, g = self.settings, self.rng
        S = small_side(st.resolution)
        B = real.shape[0]
        self.G.train()
        self.D.train()
        real = real.to(self.device)
        conditional = st.n_classes > 0
        y_real = labels.to(self.device) if conditional else None
        z = torch.randn((B, st.nz), generator=g).to(self.device)
        y_fake = torch.randint(0, st.n_classes, (B,), generator=g).to(self.device) if conditional else None
        fake_big, fake_small = self.G(z, y_fake, gen=g)
        real_aug = diff_augment(real, st.augment, g)
        fake_big_aug, fake_small_aug = diff_augment(fake_big, st.augment, g), diff_augment(fake_small, st.augment, g)

        def down(x):
            return x if x.shape[-1] == S else F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False)

        part = int(torch.randint(0, 4, (1,), generator=g))
        logits_r, (rec_whole, rec_small, rec_part), cls_r = self.D(real_aug, down(real_aug), part)
        target = down(real_aug)
        rec = (self.reconstruction_loss(rec_whole, target) + self.reconstruction_loss(rec_small, target)
               + self.reconstruction_loss(rec_part, down(crop_quarter(real_aug, part))))
        loss_real = d_hinge_real(logits_r, g)
        logits_f, _, _ = self.D(fake_big_aug.detach(), fake_small_aug.detach())
        loss_fake = d_hinge_fake(logits_f, g)
        loss_d = loss_real + loss_fake + rec
        if conditional:
            loss_d = loss_d + F.cross_entropy(cls_r, y_real)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()

        logits_g, _, cls_g = self.D(fake_big_aug, fake_small_aug)
        loss_g = -logits_g.mean()
        if conditional:
            loss_g = loss_g + F.cross_entropy(cls_g, y_fake)
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        self._update_ema()
        self.iteration += 1
        out = {"iteration": self.iteration, "loss_d_real": loss_real.item(), "loss_d_fake": loss_fake.item(),
               "loss_reconstruction": rec.item(), "loss_g": loss_g.item()}
        self.history.append(out)
        return out

    def _update_ema(self) -> None:
        import torch

        d = self.settings.ema_decay
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1.0 - d)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def batch(self, data, labels):
        """A training batch drawn from ``data (N, 3, R, R)`` with replacement, half of it flipped left-right."""
        import torch

        idx = torch.randint(0, len(data), (self.settings.batch_size,), generator=self.rng)
        x = data[idx]
        flip = torch.rand(len(idx), generator=self.rng) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, (labels[idx] if labels is not None else None)

    def train(self, data, labels, until: int, *, checkpoint_dir: Path | None = None, checkpoint_every: int = 1000,
              extra: dict[str, Any] | None = None, on_checkpoint=None) -> None:
        """Train from :attr:`iteration` up to ``until``; checkpoint (with ``extra`` entries) every
        ``checkpoint_every`` iterations and at the end, when ``checkpoint_dir`` is given."""
        while self.iteration < until:
            losses = self.step(*self.batch(data, labels))
            if not all(math.isfinite(v) for v in losses.values()):
                raise PhenosynthError(f"FastGAN training diverged at iteration {self.iteration}: {losses}")
            at_end = self.iteration == until
            if checkpoint_dir is not None and (self.iteration % checkpoint_every == 0 or at_end):
                path = self.save(checkpoint_dir, extra)
                if on_checkpoint is not None:
                    on_checkpoint(path)
            if self.iteration % 100 == 0:
                log.info("fastgan iteration %d: %s", self.iteration, losses)

    def state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "settings": self.settings.as_dict(), "G": self.G.state_dict(),
                "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(), "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(), "rng": self.rng.get_state(), "history": self.history[-100:]}

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``folder/checkpoint-<iteration>.pt`` (atomically) and return its path."""
        import torch

        from phenosynth.data.workspace import atomic_write

        path = checkpoint_path(folder, self.iteration)
        state = {**self.state(), **(extra or {})}
        atomic_write(path, lambda p: torch.save(state, p))
        return path

    def load(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.rng.set_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.history = list(state.get("history", []))


def checkpoint_path(folder: Path, iteration: int) -> Path:
    return Path(folder) / f"checkpoint-{int(iteration):07d}.pt"


def list_checkpoints(folder: Path | None) -> dict[int, Path]:
    """Iteration -> checkpoint file in ``folder`` (none when it does not exist)."""
    if folder is None or not Path(folder).is_dir():
        return {}
    out = {}
    for p in Path(folder).glob("checkpoint-*.pt"):
        try:
            out[int(p.stem.split("-")[1])] = p
        except (IndexError, ValueError):
            continue
    return dict(sorted(out.items()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def fit_set_digest(image_ids: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 of the sorted (image_id, label) pairs a model was trained on."""
    text = "\n".join(sorted(f"{i}\t{c}" for i, c in zip(image_ids, labels)))
    return hashlib.sha256(text.encode()).hexdigest()


# --- unconditional labelling ----------------------------------------------------------------------------------------


@dataclass
class _Stream:
    """The labelled candidate stream of one seed: per candidate its label (None: no face) with cosine and margin."""

    labels: list[str | None] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    by_label: dict[str, list[int]] = field(default_factory=dict)


def landmark_vectors(images: Sequence[np.ndarray], representation: str, detector: str,
                     landmarker: str) -> list[np.ndarray | None]:
    """The landmark representation of each image (``None`` where the face pass finds no face, or the
    representation cannot be computed from it)."""
    from phenosynth.faces.detectors import create_detector, create_landmarker
    from phenosynth.faces.facepass import analyse_image, is_ok
    from phenosynth.faces.representations import represent

    det, lmk = create_detector(detector), create_landmarker(landmarker)
    out: list[np.ndarray | None] = []
    for im in images:
        r = analyse_image(im, det, lmk)
        if not is_ok(r.status):
            out.append(None)
            continue
        try:
            out.append(represent(representation, r.landmarks[None], r.box[None])[0])
        except ValueError:
            out.append(None)
    return out


def nearest_prototype(x: np.ndarray, classes: Sequence[str], P: np.ndarray) -> tuple[str, float, float]:
    """The nearest prototype of vector ``x (d,)`` among ``P (C, d)`` by cosine: (its class, the cosine, the margin =
    best minus second-best cosine; with one class the second best counts as -1).

    >>> nearest_prototype(np.array([1.0, 0.1]), ["a", "b"], np.array([[1.0, 0], [0, 1.0]]))[0]
    'a'
    """
    from phenosynth.faces.representations import cosine_similarity_to

    s = cosine_similarity_to(x[None], P)[0]
    order = np.argsort(-s, kind="stable")
    best = float(s[order[0]])
    second = float(s[order[1]]) if len(order) > 1 else -1.0
    return str(classes[order[0]]), best, best - second


# --- the generator ------------------------------------------------------------------------------------------------


@GENERATORS.register("fastgan")
@dataclass(kw_only=True, eq=False)
class FastGANGenerator(Generator):
    """FastGAN trained on the real training photos (see module docstring)."""

    name = "fastgan"
    uses_patient_pixels = False  # a learned model's samples, not the patients' photos transformed
    fit_set_role = "pixel"  # a GAN can memorise: every fit photo counts as a pixel source of every image
    in_process = True  # one network (on the GPU when there is one) samples in the calling process

    mode: str = "unconditional"
    resolution: int = 256
    iterations: int = 50000
    batch_size: int = 8
    lr: float = 2e-4
    nz: int = 256
    ngf: int = 64
    ndf: int = 64
    ema_decay: float = 0.999
    augment: str = "color,translation"
    lpips_weights: str = "auto"
    crop_scale: float | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1000
    sample_from: int | None = None
    device: str = "auto"
    train_seed: int = 0
    representation: str = "rdface25"
    detector: str = "dlib-hog"
    landmarker: str = "dlib68"
    max_candidates: int = 20000
    holdout_fold: int | None = None

    def __post_init__(self) -> None:
        self._check_options()

    def bind_run(self, run_dir: Path, *, executor: str = "local") -> None:
        """Checkpoints go to ``run_dir/models`` unless ``checkpoint_dir`` was given. One GAN over every condition
        trains in this process whatever the executor (Ray, when asked, only spreads the sampling)."""
        del executor
        if self.checkpoint_dir is None:
            self.checkpoint_dir = str(Path(run_dir) / "models")

    def notes(self) -> list[str]:
        """The deviation from the paper, if any, and how many candidates had no face (unconditional mode)."""
        out = []
        if getattr(self, "reconstruction_", "lpips-vgg") != "lpips-vgg":
            out.append(f"fastgan: reconstruction loss L1 + SSIM instead of LPIPS ({VGG16_FILE} not found in "
                       "torchvision's cache; -o lpips_weights=PATH); recorded in models/model_card.json.")
        for seed, stream in sorted(getattr(self, "_streams", {}).items()):
            out.append(f"fastgan (seed {seed}): {stream.labels.count(None)} of {len(stream.labels)} candidates had no "
                       "face and got no label.")
        return out

    # --- fit ------------------------------------------------------------------------------------------------------

    def _check_options(self) -> None:
        from phenosynth.synth.fastgan_nets import AUGMENTATIONS, RESOLUTIONS

        if self.mode not in MODES:
            raise PhenosynthError(f"fastgan mode must be one of {', '.join(MODES)} (got '{self.mode}').")
        if int(self.resolution) not in RESOLUTIONS:
            raise PhenosynthError(f"fastgan resolution must be one of {RESOLUTIONS} (got {self.resolution}).")
        bad = [a for a in self._augment() if a not in AUGMENTATIONS]
        if bad:
            raise PhenosynthError(f"Unknown augmentation(s) {bad}; choose among {', '.join(AUGMENTATIONS)}.")
        if int(self.iterations) < 1 or int(self.checkpoint_every) < 1 or int(self.batch_size) < 1:
            raise PhenosynthError("fastgan iterations, checkpoint_every and batch_size must be at least 1.")

    def _augment(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in str(self.augment).split(",") if a.strip())

    def _fit(self, images: list[np.ndarray], landmarks: np.ndarray, labels: list[str], image_ids: list[str], *,
             folds: list[int | None], subjects: list[str], identities: object = None) -> None:
        del subjects, identities
        import torch

        t0 = time.perf_counter()
        if self.holdout_fold is not None:
            keep = [k for k, f in enumerate(folds) if f != int(self.holdout_fold)]
            if len(keep) == len(folds):
                raise PhenosynthError(f"No training photo is in validation fold {self.holdout_fold} (folds present: "
                                      f"{sorted({f for f in folds if f is not None})}).")
            images, landmarks = [images[k] for k in keep], landmarks[keep]
            labels, image_ids = [labels[k] for k in keep], [image_ids[k] for k in keep]
            self.fit_image_ids_ = list(image_ids)
        scale = default_crop_scale(landmarks.shape[1]) if self.crop_scale is None else float(self.crop_scale)
        crops = np.stack([face_crop(im, lm, int(self.resolution), scale) for im, lm in zip(images, landmarks)])
        self.fit_classes_ = sorted(set(labels))
        self.image_ids_, self.labels_ = list(image_ids), list(labels)
        lpips_file = resolve_lpips_weights(self.lpips_weights)
        self.reconstruction_ = "lpips-vgg" if lpips_file is not None else "l1+ssim"
        if lpips_file is None:
            log.warning("LPIPS VGG16 weights (%s) not found: FastGAN's reconstruction loss is L1 + SSIM instead (a "
                        "deviation from the paper, recorded in the model card)", VGG16_FILE)
        self.device_ = resolve_device(self.device)
        settings = TrainSettings(
            resolution=int(self.resolution), nz=int(self.nz), ngf=int(self.ngf), ndf=int(self.ndf),
            n_classes=len(self.fit_classes_) if self.mode == "conditional" else 0, batch_size=int(self.batch_size),
            lr=float(self.lr), ema_decay=float(self.ema_decay), augment=self._augment(),
            reconstruction=self.reconstruction_, train_seed=int(self.train_seed),
        )
        trainer = FastGANTrainer(settings, device=self.device_, lpips_file=lpips_file)
        digest = fit_set_digest(image_ids, labels)
        folder = Path(self.checkpoint_dir) if self.checkpoint_dir else None
        self.resumed_from_ = self._restore(trainer, folder, digest)
        data = to_tensor(crops)
        class_index = {c: k for k, c in enumerate(self.fit_classes_)}
        y = torch.tensor([class_index[c] for c in labels]) if settings.n_classes else None
        if self.sample_from is None:
            if folder is None:
                log.warning("fastgan has no checkpoint_dir: nothing is saved, an interrupted fit starts again")
            trainer.train(data, y, int(self.iterations), checkpoint_dir=folder,
                          checkpoint_every=int(self.checkpoint_every),
                          extra={"fit_set": digest, "classes": self.fit_classes_},
                          on_checkpoint=lambda p: self._write_card(folder, trainer))
        self.iteration_ = trainer.iteration
        self.train_seconds_ = round(time.perf_counter() - t0, 3)
        self.net_ = trainer.G_ema.eval()
        self.losses_ = trainer.history[-1] if trainer.history else {}
        if self.mode == "unconditional":
            self._fit_prototypes(crops, labels, image_ids)
        self._streams: dict[int, _Stream] = {}
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def _restore(self, trainer: FastGANTrainer, folder: Path | None, digest: str) -> int | None:
        """Load the checkpoint to continue from (``sample_from``, else the last one up to ``iterations``: training
        being deterministic, a later one of a longer earlier call is not needed); None when starting afresh."""
        found = list_checkpoints(folder)
        usable = [k for k in found if k <= int(self.iterations)]
        if self.sample_from is not None:
            if int(self.sample_from) not in found:
                raise PhenosynthError(f"No fastgan checkpoint of iteration {self.sample_from} in {folder}; there are: "
                                      f"{sorted(found) or 'none'}.")
            chosen = found[int(self.sample_from)]
        elif usable:
            chosen = found[max(usable)]
        else:
            return None
        state = load_checkpoint(chosen)
        if state.get("fit_set") != digest or state.get("settings") != trainer.settings.as_dict():
            raise PhenosynthError(
                f"The fastgan checkpoints in {folder} were trained on other photos or with other settings; give the "
                f"run another --name, or delete that folder to start again.")
        trainer.load(state)
        log.info("fastgan: continuing from %s (iteration %d)", chosen.name, trainer.iteration)
        return trainer.iteration

    def _write_card(self, folder: Path, trainer: FastGANTrainer) -> None:
        """``model_card.json`` next to the checkpoints: settings, deviations, fit set, classes, last losses."""
        from phenosynth.data.workspace import atomic_write

        deviations = [] if self.reconstruction_ == "lpips-vgg" else [
            f"reconstruction loss L1 + (1 - SSIM) instead of LPIPS-VGG ({VGG16_FILE} not available)"]
        card = {
            "generator": "fastgan", "mode": self.mode, "iteration": trainer.iteration,
            "checkpoints": [p.name for p in list_checkpoints(folder).values()],
            "settings": trainer.settings.as_dict(), "device": self.device_, "reconstruction_loss": self.reconstruction_,
            "deviations": deviations, "classes": self.fit_classes_, "training_images": sorted(self.image_ids_),
            "fit_set_sha256": fit_set_digest(self.image_ids_, self.labels_),
            "last_losses": trainer.history[-1] if trainer.history else {},
        }
        atomic_write(Path(folder) / "model_card.json", lambda p: Path(p).write_text(json.dumps(card, indent=2)))

    def _fit_prototypes(self, crops: np.ndarray, labels: list[str], image_ids: list[str]) -> None:
        from phenosynth.faces.representations import class_prototypes

        vectors = landmark_vectors(list(crops), self.representation, self.detector, self.landmarker)
        keep = [k for k, v in enumerate(vectors) if v is not None]
        if not keep:
            raise PhenosynthError(
                f"The face pass ({self.detector} + {self.landmarker}) found no face in any training crop at "
                f"{self.resolution} px, so unconditional fastgan has no prototype to label samples with; try a "
                f"larger resolution or mode=conditional.")
        lost = len(vectors) - len(keep)
        if lost:
            log.warning("%d training crop(s) without a face do not shape a prototype", lost)
        classes, P = class_prototypes(np.stack([vectors[k] for k in keep]), [labels[k] for k in keep])
        self.prototype_classes_, self.prototypes_ = [str(c) for c in classes], P
        self.prototype_photos_ = {c: [image_ids[k] for k in keep if labels[k] == c] for c in self.prototype_classes_}
        missing = sorted(set(self.fit_classes_) - set(self.prototype_classes_))
        if missing:
            log.warning("%d condition(s) have no training crop with a face and cannot be sampled: %s", len(missing),
                        missing[:5])

    @property
    def classes_(self) -> list[str]:
        return list(self.prototype_classes_ if self.mode == "unconditional" else self.fit_classes_)

    # --- sampling -------------------------------------------------------------------------------------------------

    def _render(self, z, y, gen) -> np.ndarray:
        import torch

        with torch.no_grad():
            big, _ = self.net_(z.to(self.device_), None if y is None else y.to(self.device_), gen=gen)
        return to_uint8(big)

    def _base_params(self, seed: int, index: int) -> dict[str, Any]:
        return {"seed": int(seed), "index": int(index), "mode": self.mode, "iteration": int(self.iteration_),
                "resolution": int(self.resolution), "reconstruction_loss": self.reconstruction_}

    def sample_one(self, label: str, index: int, seed: int) -> SyntheticSample:
        if label not in self.classes_:
            raise PhenosynthError(f"Generator 'fastgan' cannot sample condition '{label}'.")
        if self.mode == "conditional":
            return self._conditional(label, index, seed)
        found = self._labelled(label, index, seed)
        if found is None:
            raise PhenosynthError(f"No candidate among the first {self.max_candidates} of seed {seed} is labelled "
                                  f"'{label}' for the {index + 1}-th time (raise max_candidates).")
        return found

    def sample(self, n: int, seed: int = 0, *, labels: Sequence[str] | None = None,
               start: int = 0) -> Iterator[SyntheticSample]:
        """As :meth:`Generator.sample`; in unconditional mode a condition whose candidates run out (``max_candidates``)
        yields fewer images (logged)."""
        if self.mode == "conditional":
            yield from super().sample(n, seed, labels=labels, start=start)
            return
        for label in self.classes_ if labels is None else [str(v) for v in labels]:
            if label not in self.classes_:
                raise PhenosynthError(f"Generator 'fastgan' cannot sample condition '{label}'.")
            for i in range(start, start + int(n)):
                s = self._labelled(label, i, seed)
                if s is None:
                    stream = self._streams[int(seed)]
                    log.warning("fastgan: condition %s got %d of %d images: only %d of the first %d candidates were "
                                "labelled %s (%d had no face)", label, i - start, n,
                                len(stream.by_label.get(label, [])), len(stream.labels), label,
                                stream.labels.count(None))
                    break
                yield s

    def _conditional(self, label: str, index: int, seed: int) -> SyntheticSample:
        import torch

        rng = sample_rng(seed, label, index)
        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        z = torch.randn((1, int(self.nz)), generator=gen)
        y = torch.tensor([self.fit_classes_.index(label)])
        image = self._render(z, y, gen)[0]
        photos = [i for i, c in zip(self.image_ids_, self.labels_) if c == label]
        return SyntheticSample(image=image, label=label, parents=[], params=self._base_params(seed, index),
                               index=int(index), statistic_parents=photos)

    def _block(self, seed: int, block: int) -> np.ndarray:
        """Candidates ``block * CANDIDATE_BLOCK ...`` of seed ``seed``: ``(CANDIDATE_BLOCK, R, R, 3)`` uint8 (the
        last few blocks are kept)."""
        import torch

        key = (int(seed), int(block))
        if key not in self._blocks:
            rng = sample_rng(seed, _UNCONDITIONAL, block)
            gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
            z = torch.randn((CANDIDATE_BLOCK, int(self.nz)), generator=gen)
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = self._render(z, None, gen)
        return self._blocks[key]

    def _labelled(self, label: str, index: int, seed: int) -> SyntheticSample | None:
        """The ``index``-th candidate of seed ``seed`` labelled ``label`` (None when ``max_candidates`` run out)."""
        stream = self._streams.setdefault(int(seed), _Stream())
        while len(stream.by_label.get(label, [])) <= index and len(stream.labels) < int(self.max_candidates):
            block, offset = divmod(len(stream.labels), CANDIDATE_BLOCK)
            stop = min(CANDIDATE_BLOCK, offset + int(self.max_candidates) - len(stream.labels))
            images = self._block(seed, block)[offset:stop]
            for x in landmark_vectors(list(images), self.representation, self.detector, self.landmarker):
                j = len(stream.labels)
                if x is None:
                    stream.labels.append(None)
                    stream.cosine.append(float("nan"))
                    stream.margin.append(float("nan"))
                    continue
                c, cos, margin = nearest_prototype(x, self.prototype_classes_, self.prototypes_)
                stream.labels.append(c)
                stream.cosine.append(cos)
                stream.margin.append(margin)
                stream.by_label.setdefault(c, []).append(j)
        members = stream.by_label.get(label, [])
        if len(members) <= index:
            return None
        j = members[index]
        image = self._block(seed, j // CANDIDATE_BLOCK)[j % CANDIDATE_BLOCK]
        params = {**self._base_params(seed, index), "candidate": j, "label_cosine": round(stream.cosine[j], 6),
                  "label_margin": round(stream.margin[j], 6), "representation": self.representation,
                  "unlabelled_before": stream.labels[:j].count(None)}
        return SyntheticSample(image=image.copy(), label=label, parents=[], params=params, index=int(index),
                               statistic_parents=list(self.prototype_photos_[label]))

    def __getstate__(self) -> dict[str, Any]:
        """For worker processes: torch cannot pickle spectral-norm (parametrized) modules, so the sampling network
        travels as its constructor arguments and state dict; the caches stay behind."""
        state = dict(vars(self))
        state["_streams"], state["_blocks"] = {}, {}
        net = state.pop("net_", None)
        if net is not None:
            state["_net_state"] = ({"resolution": net.resolution, "nz": net.nz, "ngf": int(self.ngf),
                                    "n_classes": net.n_classes},
                                   {k: v.detach().cpu() for k, v in net.state_dict().items()})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        packed = state.pop("_net_state", None)
        vars(self).update(state)
        if packed is not None:
            from phenosynth.synth.fastgan_nets import FastGANGenerator as Network

            args, weights = packed
            net = Network(**args)
            net.load_state_dict(weights)
            self.net_ = net.to(self.device_).eval().requires_grad_(False)
