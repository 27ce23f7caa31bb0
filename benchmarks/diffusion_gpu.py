"""Benchmark (GPU only): DreamBooth-LoRA training steps/s at 512 px and sampling images/s at 30 steps, through the
library (``dreambooth-lora``: ``fit`` and ``sample``), with a full-size Stable Diffusion 1.5-architecture model built
from its configuration with random weights (speed does not depend on the weights; nothing is downloaded).

Targets (issue 14): 800 LoRA steps per condition in <= 5 min (>= 2.7 steps/s), >= 2 images/s at 30 steps.

Usage::

    .venv/bin/python benchmarks/diffusion_gpu.py                     # skipped (exit 0) without CUDA
    .venv/bin/python benchmarks/diffusion_gpu.py --steps 10 60 --images 8 --out /tmp/bench-db

Steps/s comes from two fits of different lengths ((long - short) / (t_long - t_short)), so loading the model and
saving the weights do not count; images/s from ``--images`` images after one warm-up image. Prints a JSON record.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_sd15_random(folder: Path) -> Path:
    """Stable Diffusion 1.5's architecture (UNet 860M, VAE, CLIP ViT-L/14 text encoder) with seeded random weights,
    saved as a diffusers folder (fp16 files) with a byte-level CLIP tokenizer."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tok = folder / "tokenizer_src"
    tok.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(s, len(vocab))
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77)
    unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(  # vae/config.json
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(  # text_encoder/config.json (CLIP ViT-L/14)
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, vocab_size=49408,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder / "sd15-random")
    return folder / "sd15-random"


def fit_seconds(base: Path, run_dir: Path, steps: int, photos: list[np.ndarray]) -> float:
    """Seconds of ``dreambooth-lora`` ``fit`` on one condition for ``steps`` steps at 512 px."""
    import torch

    from phenosynth.synth.generators import create_generator

    gen = create_generator("dreambooth-lora", base=str(base), steps=steps, checkpoint_every=0)
    gen.bind_run(run_dir)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gen.fit(photos, np.zeros((len(photos), 5, 2)), ["A"] * len(photos), image_ids=[f"p{i}" for i in range(len(photos))],
            splits=["train"] * len(photos))
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs=2, default=(10, 60), help="short and long fit (LoRA steps)")
    ap.add_argument("--images", type=int, default=8, help="images sampled (after one warm-up image)")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("diffusion_gpu: skipped (no CUDA device)")
        return 0
    from phenosynth.synth.generators import create_generator

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-diffusion-"))
    base = build_sd15_random(out)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(5)]
    short, long = sorted(args.steps)
    t_short = fit_seconds(base, out / "run-short", short, photos)
    t_long = fit_seconds(base, out / "run-long", long, photos)
    steps_per_s = (long - short) / (t_long - t_short)

    gen = create_generator("dreambooth-lora", base=str(base), steps=long, checkpoint_every=0, max_redraws=50)
    gen.bind_run(out / "run-long")
    gen.fit(photos, np.zeros((5, 5, 2)), ["A"] * 5, image_ids=[f"p{i}" for i in range(5)], splits=["train"] * 5)
    next(gen.sample(1, seed=99))  # loads the pipeline
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    samples = list(gen.sample(args.images, seed=0))
    torch.cuda.synchronize()
    images_per_s = len(samples) / (time.perf_counter() - t0)
    record = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "lora_steps_per_s_512px": round(steps_per_s, 3), "seconds_for_800_steps": round(800 / steps_per_s, 1),
        "fit_seconds": {str(short): round(t_short, 2), str(long): round(t_long, 2)},
        "images_per_s_30_steps": round(images_per_s, 3),
        "blank_redraws": sum(s.params["blank_redraws"] for s in samples),
        "targets_met": {"800_steps_in_5_min": 800 / steps_per_s <= 300, "2_images_per_s": images_per_s >= 2},
    }
    print(json.dumps(record, indent=2))
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
