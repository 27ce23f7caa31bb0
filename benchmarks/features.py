"""Benchmark: feature extraction through phenosynth against a bare ``model(x)`` loop, for every registered backbone.

For each backbone (pretrained weights where they are on disk here, else ``--weights none``), on the same N aligned
crops (224x224 PNGs written to a temporary workspace):

- **phenosynth**: ``extract_features(ws, backbone, ids)`` on an empty cache: PNG decoding + resizing + normalising
  in DataLoader workers, batched ``inference_mode`` forward, writing the cache shard;
- **bare**: the same model's ``forward_features`` over the same tensors, already decoded and stacked in memory,
  in batches of the same size.

The model is built once (construction is not timed in either; its time is printed apart) and both paths are
warmed up with one batch. Prints images/s for both and their ratio (goal >= 0.9), the CPU seconds per wall second
of each path (this process and its reaped worker processes; goal >= 1.6 on 2 cores: extraction uses every core),
and checks that both give the same features. On a shared, busy machine the numbers are noisy (the table title
shows the load average): use ``--repeats 2`` (best of each).

    .venv/bin/python benchmarks/features.py                 # N=32, every backbone (a couple of minutes on 2 cores)
    .venv/bin/python benchmarks/features.py --n 64 --repeats 2 --only mobilenet_v2 resnet152
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

import phenosynth.faces.align as align
from phenosynth.data.imageio import load_rgb
from phenosynth.data.workspace import Workspace
from phenosynth.errors import MissingWeightsError, PhenosynthError
from phenosynth.models import backbones as B
from phenosynth.models import features as F


def make_crops(root: Path, n: int) -> tuple[Workspace, dict[str, Path]]:
    """A workspace with ``n`` smooth random 224x224 'crops' (structured enough to be realistic PNGs)."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(0)
    (ws.root / "crops").mkdir()
    paths = {}
    for i in range(n):
        small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((224, 224), Image.BICUBIC)
        p = ws.root / "crops" / f"{i}.png"
        img.save(p)
        paths[hashlib.sha256(p.read_bytes()).hexdigest()] = p
    ws.save_manifest(pd.DataFrame([{"image_id": k, "path": ws.relpath(p), "label": "x", "source": "real"}
                                   for k, p in paths.items()]))
    return ws, paths


def bench_one(name: str, ws: Workspace, paths: dict[str, Path], batch_size: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    weights = "default"
    try:
        model = B.create_backbone(name, weights)
    except MissingWeightsError:
        weights = "none"
        model = B.create_backbone(name, weights)
    build_s = time.perf_counter() - t0
    ids = list(paths)
    n = len(ids)
    spec = model.spec
    if spec.input_kind == "landmarks":
        return {"backbone": name, "weights": "-", "note": "landmark geometry: no image model (see faces benchmark)"}
    F.create_backbone = lambda *a, **k: model  # the model is built once; construction is timed apart

    if spec.input_kind == "image":
        imgs = [load_rgb(paths[i]) for i in ids]
        model.forward_features(imgs[:2])

        def bare() -> np.ndarray:
            return model.forward_features(imgs)
    else:
        size, mean, std = spec.preprocessing("paper")
        x = torch.stack([F.load_crop_tensor(paths[i], size, mean, std) for i in ids])
        with torch.inference_mode():
            model.forward_features(x[:batch_size])  # warm-up

        @torch.inference_mode()
        def bare() -> np.ndarray:
            return torch.cat([model.forward_features(x[s:s + batch_size]) for s in range(0, n, batch_size)]).numpy()

    bare_s = ps_s = float("inf")
    bare_cpu = ps_cpu = 0.0
    for _ in range(repeats):  # alternate the two paths; keep each one's best time
        with cpu_timer() as t:
            ref = bare()
        if t.wall < bare_s:
            bare_s, bare_cpu = t.wall, t.cpu
        shutil.rmtree(F.feature_cache_dir(ws, name, weights, "paper"), ignore_errors=True)
        with cpu_timer() as t:
            kept, X = F.extract_features(ws, name, ids, weights=weights, batch_size=batch_size)
        if t.wall < ps_s:
            ps_s, ps_cpu = t.wall, t.cpu
    assert kept == ids
    err = float(np.abs(X - ref).max())
    return {"backbone": name, "weights": weights, "build_s": build_s, "bare": n / bare_s, "phenosynth": n / ps_s,
            "ratio": bare_s / ps_s, "max_abs_diff": err, "bare_cpu": bare_cpu / bare_s, "cpu": ps_cpu / ps_s}


class cpu_timer:  # noqa: N801 - used as a context manager
    """Wall seconds and CPU seconds (user + system, this process and the children it reaped) of a block."""

    def __enter__(self) -> "cpu_timer":
        self._t, self._c = time.perf_counter(), os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        c = os.times()
        self.wall = time.perf_counter() - self._t
        self.cpu = sum(getattr(c, f) - getattr(self._c, f)
                       for f in ("user", "system", "children_user", "children_system"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images per backbone")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two paths this often; best time each")
    ap.add_argument("--only", nargs="*", help="backbones to run (default: every registered one)")
    args = ap.parse_args()
    names = args.only or B.BACKBONES.names()
    console = Console(width=140)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws, paths = make_crops(Path(tmp), args.n)
        align.ensure_aligned_crops = lambda ws_, image_ids, size=224, on_progress=None, **kw: {
            i: paths[i] for i in image_ids}
        for name in names:
            try:
                rows.append(bench_one(name, ws, paths, args.batch_size, args.repeats))
            except PhenosynthError as exc:
                rows.append({"backbone": name, "weights": "-", "note": str(exc)[:80]})
            console.log(rows[-1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = Table(title=f"Feature extraction, {args.n} crops of 224x224, batch {args.batch_size}, "
                        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, load average {load} "
                        f"(images/s; CPU s / wall s)")
    cols = ("backbone", "weights", "build (s)", "bare model(x)", "phenosynth", "ratio", "bare CPU/wall",
            "phenosynth CPU/wall", "max |diff|")
    for col in cols:
        table.add_column(col, justify="left" if col in ("backbone", "weights") else "right")
    for r in rows:
        if "note" in r:
            table.add_row(r["backbone"], r["weights"], *[""] * (len(cols) - 3), r["note"])
        else:
            table.add_row(r["backbone"], r["weights"], f"{r['build_s']:.1f}", f"{r['bare']:.1f}",
                          f"{r['phenosynth']:.1f}", f"{r['ratio']:.2f}x", f"{r['bare_cpu']:.2f}", f"{r['cpu']:.2f}",
                          f"{r['max_abs_diff']:.1e}")
    console.print(table)


if __name__ == "__main__":
    main()
