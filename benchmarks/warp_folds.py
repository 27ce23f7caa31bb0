"""Benchmark: how often a warping generator's shape change would tear the face, and what unfolding costs.

A piecewise-affine warp tears the face where the target moves neighbouring landmarks past each other (mirrored
triangles of the face mesh: an eyelid through the eye, a lip across the mouth). ``-o unfold=true`` (the default of
``shape-warp`` and ``phenotype-transfer``) makes each target fold-free first (``imaging.fold_free``). On an existing
workspace (e.g. the phenotype benchmark's, ``benchmarks/identity_free_study.py``), the generator is fitted as
``phenosynth generate`` fits it and ``--n`` images are drawn with unfolding off and on (same seeds, so the same
asked shapes); the table gives, per setting, the share of images with folded face triangles, their mean count, the
share of the asked move given up (``unfold_change``: mean and 90th percentile), the share scaled down as a whole, and
milliseconds per image. ``--sheet PNG`` saves the first 12 images of both settings, one above the other.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/warp_folds.py --workspace /tmp/bench12/workspace \\
        [--generator phenotype-transfer] [-o strength=2] [--n 240] [--sheet /tmp/folds.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def draw(ws, generator: str, options: dict, n: int) -> tuple[list, float]:
    """(samples, seconds per image) of ``n`` images, round robin over the conditions, seed 0."""
    from phenosynth.synth.generation import _fitted_generator

    gen = _fitted_generator(ws, ws.load_manifest(), generator, options, None, Path(tempfile.mkdtemp()), "local")[0]
    classes = gen.classes_
    t = time.perf_counter()
    samples = [gen.sample_one(classes[i % len(classes)], i // len(classes), 0) for i in range(n)]
    return samples, (time.perf_counter() - t) / n


def row(name: str, samples: list, seconds: float) -> str:
    p = [s.params for s in samples]
    folds = np.array([q["folded_triangles"] for q in p])
    change = np.array([q["unfold_change"] for q in p])
    scaled = np.array([q["unfold_scale"] < 1.0 for q in p])
    return (f"| {name} | {len(p)} | {100 * np.mean(folds > 0):.1f} | {folds.mean():.2f} | {change.mean():.3f} | "
            f"{np.percentile(change, 90):.3f} | {100 * scaled.mean():.1f} | {1000 * seconds:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, type=Path)
    ap.add_argument("--generator", default="phenotype-transfer")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--sheet", type=Path)
    args = ap.parse_args()
    from phenosynth.data.workspace import Workspace

    ws = Workspace.open(args.workspace)
    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    off = draw(ws, args.generator, {**options, "unfold": False}, args.n)
    on = draw(ws, args.generator, {**options, "unfold": True}, args.n)
    print(f"{args.generator} {options or '(defaults)'} on {args.workspace}")
    print("| unfold | images | images with folded face triangles % | folded triangles per image | unfold_change mean "
          "| unfold_change p90 | scaled down % | ms per image |")
    print("|---|---|---|---|---|---|---|---|")
    print(row("off", *off))
    print(row("on", *on))
    if args.sheet:
        from PIL import Image

        tiles = [[Image.fromarray(s.image).convert("RGB").resize((138, 168)) for s in ss[0][:12]] for ss in (off, on)]
        sheet = Image.new("RGB", (138 * len(tiles[0]), 168 * 2))
        for r, line in enumerate(tiles):
            for c, tile in enumerate(line):
                sheet.paste(tile, (138 * c, 168 * r))
        sheet.save(args.sheet)
        print(f"sheet: {args.sheet} (top: unfold off, bottom: on)")


if __name__ == "__main__":
    main()
