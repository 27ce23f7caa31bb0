"""Benchmark (GPU): FastGAN trained from scratch at 256 px on ORL faces — speed, and how often a face is found.

On a folder of face photos (default: the ORL/AT&T database, 40 people x 10 photos, ``../shared/data/orl-faces``;
``--data`` for another folder of images, searched recursively) this script:

1. pads every photo to a square and resizes it to ``--resolution`` (256);
2. trains :class:`phenosynth.synth.generators.fastgan.FastGANTrainer` (the ``fastgan`` generator's trainer: nz 256,
   ngf/ndf 64, batch 8, Adam 2e-4 (0.5, 0.999), DiffAugment colour + translation, EMA 0.999) for ``--iterations``
   iterations (``--mode unconditional``, ``conditional`` with one class per person, or ``both`` to compare them);
3. reports iterations/s (after ``--warmup`` iterations), and for the EMA generator after the budget the share of
   ``--samples`` samples in which the face detector (``--detector``, default dlib-hog, with the face pass's retries)
   finds a face, next to the same share on the real photos at the same size (the ceiling). In conditional mode it
   also reports how often the discriminator's auxiliary classifier gives a sample its own class (top-1).

Skipped (exit 0, says so) without a CUDA GPU unless ``--allow-cpu`` (a smoke run: use ``--iterations 4
--resolution 64 --samples 8``). Results: printed, and written to ``--out`` (JSON).

Usage::

    .venv/bin/python benchmarks/fastgan_gpu.py                          # 256 px, 5000 iterations, on a GPU
    .venv/bin/python benchmarks/fastgan_gpu.py --mode both --iterations 10000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()
IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
log = logging.getLogger("benchmarks.fastgan_gpu")


def load_photos(folder: Path, resolution: int) -> tuple[np.ndarray, list[str]]:
    """Every image under ``folder``, padded to a square and resized: ``(N, R, R, 3)`` uint8, and the name of its
    parent folder (the person) as its class."""
    from phenosynth.data.imageio import load_rgb
    from phenosynth.synth.generators.fastgan import face_crop

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"No images under {folder}")
    images = [face_crop(load_rgb(p), np.zeros((1, 2)), resolution, 0.0) for p in paths]
    return np.stack(images), [p.parent.name for p in paths]


def face_share(images: np.ndarray, detector: str) -> float:
    """Share of ``images (N, R, R, 3)`` in which the face pass's detection (with its retries) finds a face."""
    from phenosynth.faces.detectors import create_detector, create_landmarker
    from phenosynth.faces.facepass import analyse_image, is_ok

    det, lmk = create_detector(detector), create_landmarker("dlib68")
    return float(np.mean([is_ok(analyse_image(im, det, lmk).status) for im in images]))


def run_mode(mode: str, photos: np.ndarray, labels: list[str], args: argparse.Namespace, device: str) -> dict:
    import torch

    from phenosynth.synth.generators.fastgan import FastGANTrainer, TrainSettings, to_tensor, to_uint8

    classes = sorted(set(labels))
    settings = TrainSettings(
        resolution=args.resolution, nz=256, ngf=args.ngf, ndf=args.ndf,
        n_classes=len(classes) if mode == "conditional" else 0, batch_size=args.batch_size, lr=2e-4,
        ema_decay=0.999, augment=("color", "translation"), reconstruction="l1+ssim", train_seed=args.seed,
    )
    trainer = FastGANTrainer(settings, device=device)
    data = to_tensor(photos)
    y = torch.tensor([classes.index(c) for c in labels]) if mode == "conditional" else None
    if device == "cuda":
        data = data.pin_memory()
    trainer.train(data, y, min(args.warmup, args.iterations))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.train(data, y, args.iterations)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    timed = args.iterations - min(args.warmup, args.iterations)

    gen = torch.Generator().manual_seed(12345)
    samples, own_class = [], []
    with torch.no_grad():
        for start in range(0, args.samples, 16):
            n = min(16, args.samples - start)
            z = torch.randn((n, 256), generator=gen).to(device)
            yy = torch.randint(0, len(classes), (n,), generator=gen).to(device) if mode == "conditional" else None
            big, small = trainer.G_ema(z, yy, gen=gen)
            samples.append(to_uint8(big))
            if yy is not None:
                trainer.D.eval()
                _, _, logits = trainer.D(big, small)
                own_class.append((logits.argmax(1) == yy).float().cpu().numpy())
    images = np.concatenate(samples)
    out = {
        "mode": mode, "iterations": args.iterations, "timed_iterations": timed, "seconds": round(seconds, 2),
        "iterations_per_second": round(timed / seconds, 3) if seconds > 0 else None,
        "samples": len(images), "face_share_samples": round(face_share(images, args.detector), 4),
        "last_losses": trainer.history[-1] if trainer.history else {},
    }
    if own_class:
        out["aux_classifier_own_class_top1"] = round(float(np.concatenate(own_class).mean()), 4)
    if args.save_samples:
        from PIL import Image

        folder = Path(args.save_samples) / mode
        folder.mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(images[:64]):
            Image.fromarray(im).save(folder / f"{k:03d}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--mode", choices=("unconditional", "conditional", "both"), default="unconditional")
    ap.add_argument("--detector", default="dlib-hog")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-cpu", action="store_true", help="Run without CUDA (a smoke run; tiny settings).")
    ap.add_argument("--save-samples", default=None, help="Folder to save the first 64 samples of each mode.")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fastgan_gpu.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    if torch.cuda.is_available():
        device = "cuda"
        name = torch.cuda.get_device_name(0)
    elif args.allow_cpu:
        device, name = "cpu", "cpu"
    else:
        print("SKIPPED: no CUDA GPU (this benchmark measures FastGAN on a GPU; --allow-cpu for a smoke run).")
        return 0
    photos, labels = load_photos(args.data, args.resolution)
    result = {"device": name, "data": str(args.data), "photos": len(photos), "classes": len(set(labels)),
              "resolution": args.resolution, "batch_size": args.batch_size,
              "face_share_real": round(face_share(photos, args.detector), 4), "runs": []}
    for mode in ("unconditional", "conditional") if args.mode == "both" else (args.mode,):
        result["runs"].append(run_mode(mode, photos, labels, args, device))
        print(json.dumps(result["runs"][-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
