"""The paper-sized study grid through the real runner and the real probe trainer, from cached features.

6 backbones x 6 regimes (real; synthetic-only at 2k, 4k, 6k, 8k, 10k) x 5 folds = 180 trained models, on a workspace
shaped like RDFace (456 real images, 103 classes, 100 synthetic images per class = 10,300) with features of the
backbones' real sizes (ResNet152 2048, DenseNet169 1664, VGG16 4096, Swin-T 768, CLIP ViT-B/32 512, FaceNet 512).
No real features of RDFace are cached on this machine, so the features are random (class means + noise, synthetic
images shifted off the real distribution): the numbers in the table mean nothing, the time is the point.

    .venv/bin/python benchmarks/study.py [--executor local|serial|ray] [--workers 2] [--mixed] [--hparams C=1.0]

Prints the Table 1 layout and the wall time (features are written up front and not timed).

Measured 2026-11-22 on the 2-core dev VM (idle), local executor (2 worker processes):
    default probe grid C in {0.1, 1, 10}:   41.0 s   (folds of one configuration share a worker and, where their
                                                      training set is the same, the fitted models; probe fits 47 s
                                                      of 82 worker-seconds)
    before that sharing:                   116.7-126.1 s
    --hparams '{"C": [1.0]}':               60.9 s   (probe fits:  87 of 122 worker-seconds)
    15-cell subset (resnet152, n 2k/4k), loaded machine: local 36.7 s vs serial (1 process, 2 BLAS threads) 48.2 s
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from phenosynth.data.manifest import conform
from phenosynth.data.workspace import Workspace
from phenosynth.study.report import summarize_results, table_markdown
from phenosynth.study.runner import run_study, save_feature_file
from phenosynth.study.spec import load_spec

DIMS = {"resnet152": 2048, "densenet169": 1664, "vgg16": 4096, "swin_t": 768, "clip_vit_b32": 512, "facenet": 512}


def make_workspace(root: Path, *, n_real: int = 456, n_classes: int = 103, per_class: int = 100, folds: int = 5,
                   seed: int = 0) -> Workspace:
    """An RDFace-shaped manifest (split into test + folds) and a ranking of the synthetic images."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.multinomial(n_real - n_classes, np.full(n_classes, 1 / n_classes))
    rows = []
    for c, size in enumerate(sizes):
        n_test = 0 if size == 1 else max(1, int(round(0.25 * size)))
        for i in range(size):
            split = "test" if i < n_test else "train"
            rows.append({"image_id": f"real{c:03d}{i:02d}", "path": f"real/{c}/{i}.png", "label": f"cond{c:03d}",
                         "subject_id": f"subj{c:03d}{i:02d}", "source": "real", "split": split,
                         "fold": (i - n_test + c) % folds if split == "train" else None})
    for c in range(n_classes):
        for i in range(per_class):
            rows.append({"image_id": f"syn{c:03d}{i:03d}", "path": f"syn/{c}/{i}.png", "label": f"cond{c:03d}",
                         "subject_id": f"syn{c:03d}{i:03d}", "source": "synthetic", "generator": "dreambooth",
                         "split": "train", "parents": []})
    ws = Workspace.open(root, create=True)
    df = conform(pd.DataFrame(rows))
    ws.save_manifest(df)
    syn = df[df["source"] == "synthetic"]
    ranking = pd.DataFrame({"image_id": syn["image_id"].astype(str), "representation": "rdface25",
                            "rank_score": rng.uniform(0.5, 1.0, len(syn)), "own_class_rank": 1})
    ranking.to_parquet(ws.root / "ranking.parquet", index=False)
    return ws


def make_features(ws: Workspace, folder: Path, seed: int = 0) -> None:
    """Random features per backbone: a class mean plus noise (synthetic images: a weaker, shifted class mean)."""
    df = ws.load_manifest()
    ids = df["image_id"].astype(str).tolist()
    labels = pd.factorize(df["label"])[0]
    is_syn = (df["source"] == "synthetic").to_numpy()
    for b, d in DIMS.items():
        rng = np.random.default_rng([seed, d])
        means = rng.normal(0, 1, (labels.max() + 1, d)).astype(np.float32) * (1.2 / d ** 0.25)
        shift = rng.normal(0, 1, d).astype(np.float32) * 0.1
        X = rng.normal(0, 1, (len(ids), d)).astype(np.float32)
        X += np.where(is_syn[:, None], 0.7 * means[labels] + shift, means[labels])
        save_feature_file(folder, b, ids, X)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executor", default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--mixed", action="store_true", help="also the mixed regime (real + 10k), as paper.yaml")
    ap.add_argument("--hparams", default=None, help='probe grid as JSON, e.g. {"C": [1.0]} (default: the trainer\'s)')
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--n", nargs="*", type=int, default=None, help="synthetic n values (default 2000..10000)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to build the workspace (default: a temporary folder)")
    args = ap.parse_args()

    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="phenosynth-bench-study-"))
    t = time.perf_counter()
    ws = make_workspace(tmp / "ws")
    make_features(ws, tmp / "features")
    setup = time.perf_counter() - t

    spec = load_spec("paper").resolved()
    spec["features_from"] = str(tmp / "features")
    spec["folds"] = args.folds
    if not args.mixed:
        spec["regimes"]["mixed"] = []
    if args.n:
        spec["regimes"]["synthetic"] = args.n
    if args.backbones:
        spec["backbones"] = [b for b in spec["backbones"] if b["name"] in args.backbones]
    if args.hparams:
        spec["trainer"]["hparams"] = json.loads(args.hparams)
    name = f"bench-{args.executor}-{int(time.time())}"
    t = time.perf_counter()
    res = run_study(ws, spec, name, executor=args.executor, workers=args.workers, build_report=False)
    seconds = time.perf_counter() - t
    results = res.results
    print(table_markdown(summarize_results(results)))
    timings = pd.read_csv(res.run_dir / "timings.csv")
    per_cell = timings.groupby("backbone", sort=False)["fit_seconds"].sum() if "fit_seconds" in timings else None
    print(f"setup (workspace + random features, not timed): {setup:.1f} s")
    print(f"grid: {res.n_cells} cells ({len(spec['backbones'])} backbones x "
          f"{res.n_cells // len(spec['backbones']) // args.folds} regimes x {args.folds} folds), "
          f"executor {args.executor}, workers {args.workers or 'default'}")
    if per_cell is not None:
        print("probe fit seconds summed per backbone: " + ", ".join(f"{b} {s:.1f}" for b, s in per_cell.items())
              + f"; total {per_cell.sum():.1f} (of {seconds * (args.workers or 2):.1f} worker-seconds)")
    print(f"STUDY WALL TIME: {seconds:.1f} s  (run folder {res.run_dir})")


if __name__ == "__main__":
    main()
