"""Benchmark: does phenotype-aware synthetic data help a few-shot face classifier on real photos?

On a folder of real faces (default: the ORL/AT&T database of the Olivetti Research Laboratory, 40 people x 10
photos, at ``../shared/data/orl-faces``) this script runs the whole pipeline through the library:

    ingest -> split (test 60 %: ~4 training photos per class, the RDFace regime) -> faces (dlib-hog + dlib68)
    -> generate (shape-warp, --per-class per class) -> faces on the new images -> rank (rdface25 and shape68)

and then compares training sets on frozen backbone features (``--backbone``, default ``mobilenet_v2``) with the
registered ``probe`` trainer (standardise + logistic regression):

- ``real``: the real training photos;
- ``synthetic``: n selected synthetic images only, for each of ranked ``top-per-class`` by rdface25, by shape68
  and by the backbone's own embedding (``embed:BACKBONE``), ``diverse`` (rdface25), and ``random`` (the ablation);
- ``mixed``: the real photos plus the same synthetic selections.

Models: one per validation fold of the split (5 by default). Fold k's model is trained without fold k's real photos
**and without any synthetic image made from them** (lineage), with selection seed k; every model is scored on the
same held-out real test set. Reported: top-1 / top-5 / top-10 as mean (SD, ddof=1) over the fold models, plus the
generator's speed. The shape-warp images only re-pose and re-light the training photos, so on an identity task they
are close to augmentation; the interesting numbers are synthetic-only against real-only, and ranked against random.

Usage::

    .venv/bin/python benchmarks/synthetic.py                      # ~5-10 min on 2 cores the first time
    .venv/bin/python benchmarks/synthetic.py --n 200 400 --per-class 20 --workspace /tmp/bench-syn

Re-running reuses the workspace (features, faces and images are cached); ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()
log = logging.getLogger("benchmarks.synthetic")


def prepare(ws_path: Path, data: Path, *, test_size: float, per_class: int, seed: int, fresh: bool,
            backbone: str) -> dict:
    """Build (or reuse) the benchmark workspace; return timings of the stages."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate
    from phenosynth.synth.ranking import rank

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws = Workspace.open(ws_path, create=True)
    info: dict = {}
    if not ws.manifest_path.exists():
        ingest(data, ws)
    marker, want = ws.root / "bench_split.json", {"test_size": test_size, "seed": 42}
    if not marker.exists() or json.loads(marker.read_text()) != want:
        split(ws, test_size=test_size, seed=42)
        marker.write_text(json.dumps(want))
    t = time.perf_counter()
    faces1 = run_face_pass(ws)
    info["faces_real_s"] = time.perf_counter() - t
    info["faces_real"] = faces1.by_status
    g = generate(ws, "shape-warp", per_class=per_class, seed=seed)
    info["generate"] = {"images": g.images, "new": g.new_images, "seconds": round(g.seconds, 2),
                        "images_per_s": round(g.images_per_second, 1), "workers": g.workers,
                        "training_faces": g.training_images}
    faces2 = run_face_pass(ws)
    info["faces_all"] = faces2.by_status
    for rep in ("rdface25", "shape68", f"embed:{backbone}"):
        r = rank(ws, rep)
        info[f"rank_{rep}"] = {"ranked": r.ranked, "not_ranked": r.not_ranked, "mean": round(r.mean_score, 4),
                               "own_class_nearest": round(r.own_class_top1, 3)}
    return info


def generator_speed(ws_path: Path, *, size: int, per_class: int, workers: int | None) -> dict:
    """Images/s of ``generate`` (shape-warp) on the benchmark's real training photos resized to ``size`` px (long
    side), landmarks scaled to match, in a scratch workspace beside the benchmark's."""
    import cv2

    from phenosynth.data.imageio import load_rgb
    from phenosynth.data.manifest import real_train
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import load_faces
    from phenosynth.synth.generation import generate

    src = Workspace.open(ws_path)
    scratch_path = ws_path.with_name(ws_path.name + f"-speed{size}")
    shutil.rmtree(scratch_path, ignore_errors=True)
    scratch = Workspace.open(scratch_path, create=True)
    (scratch.root / "real").mkdir()
    faces = load_faces(src)
    train = real_train(src.load_manifest())
    train = train[train["image_id"].isin(faces.index)]
    rows, lms = [], {}
    for r in train.itertuples():
        img = load_rgb(src.resolve(r.path))
        f = size / max(img.shape[:2])
        big = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_CUBIC)
        path = scratch.root / "real" / f"{r.image_id}.png"
        cv2.imwrite(str(path), big[:, :, ::-1])
        rows.append({"image_id": r.image_id, "path": scratch.relpath(path), "label": r.label, "subject_id": r.image_id,
                     "source": "real", "split": "train"})
        lms[r.image_id] = np.asarray(faces.at[r.image_id, "landmarks"]) * f
    scratch.save_manifest(pd.DataFrame(rows))
    table = pd.DataFrame({"landmarks": pd.Series(lms)})
    g = generate(scratch, "shape-warp", per_class=per_class, seed=0, faces=table, n_jobs=workers)
    shutil.rmtree(scratch_path, ignore_errors=True)
    return {"size": size, "images": g.images, "seconds": round(g.seconds, 2),
            "images_per_s": round(g.images_per_second, 1), "workers": g.workers}


def configurations(ns: list[int], backbone: str) -> list[tuple[str, str, str, int]]:
    """(regime, selection, representation, n)."""
    out = [("real", "-", "-", 0)]
    for regime in ("synthetic", "mixed"):
        for n in ns:
            out += [
                (regime, "top-per-class", "rdface25", n),
                (regime, "top-per-class", "shape68", n),
                (regime, "top-per-class", f"embed:{backbone}", n),
                (regime, "diverse", "rdface25", n),
                (regime, "random", "-", n),
            ]
    return out


def evaluate(ws_path: Path, *, backbone: str, ns: list[int], C: float) -> pd.DataFrame:
    from phenosynth.data.manifest import real_classes, real_test, real_train, synthetic
    from phenosynth.data.workspace import Workspace
    from phenosynth.evaluate.metrics import topk_accuracy
    from phenosynth.models.features import extract_features
    from phenosynth.models.trainers import TRAINERS
    from phenosynth.synth.selection import select_for_training

    ws = Workspace.open(ws_path)
    manifest = ws.load_manifest()
    classes = real_classes(manifest)
    index = {c: i for i, c in enumerate(classes)}
    train, test, synth = real_train(manifest), real_test(manifest), synthetic(manifest)
    wanted = pd.concat([train, test, synth])["image_id"].astype(str).tolist()
    t = time.perf_counter()
    ids, X = extract_features(ws, backbone, wanted)
    log.info("features: %d x %d in %.1fs", len(ids), X.shape[1], time.perf_counter() - t)
    feats = dict(zip(ids, X))
    label = dict(zip(manifest["image_id"].astype(str), manifest["label"].astype(str)))
    test_ids = [i for i in test["image_id"].astype(str) if i in feats]
    X_test = np.stack([feats[i] for i in test_ids])
    y_test = np.array([index[label[i]] for i in test_ids])
    labels = list(range(len(classes)))
    folds = sorted(int(f) for f in train["fold"].dropna().unique())

    rows = []
    for regime, selection, rep, n in configurations(ns, backbone):
        for k in folds:
            real_ids = train.loc[train["fold"] != k, "image_id"].astype(str).tolist()
            chosen: list[str] = []
            if regime != "real":
                held_out = set(train.loc[train["fold"] == k, "image_id"].astype(str))
                # lineage: fold k's model never sees a synthetic child of fold k's photos
                visible = manifest[~manifest["parents"].map(lambda ps: any(p in held_out for p in ps))]
                chosen = select_for_training(ws, visible, strategy=selection, n=n, seed=k, allow_fewer=True,
                                             representation=None if rep == "-" else rep)
            fit_ids = [i for i in (chosen if regime == "synthetic" else real_ids + chosen) if i in feats]
            X_fit = np.stack([feats[i] for i in fit_ids])
            y_fit = np.array([index[label[i]] for i in fit_ids])
            clf = TRAINERS.create("probe", C=C, random_state=k).fit(X_fit, y_fit, n_classes=len(classes))
            P = clf.predict_proba(X_test)
            rows.append({
                "backbone": backbone, "regime": regime, "selection": selection, "representation": rep,
                "n_synthetic": len(chosen), "n_requested": n, "fold": k, "n_train": len(fit_ids),
                "n_test": len(test_ids), **{f"top{j}": topk_accuracy(y_test, P, j, labels=labels) for j in (1, 5, 10)},
            })  # fmt: skip
            log.info("%s %s %s n=%d fold %d: top1 %.3f", regime, selection, rep, n, k, rows[-1]["top1"])
    return pd.DataFrame(rows)


def evaluate_with_trainer(ws_path: Path, *, backbone: str, ns: list[int], C: float) -> pd.DataFrame:
    """The same grid through ``phenosynth.training.train_cell`` (the protocol of ``phenosynth train``: one selection
    for every fold, hyper-parameters chosen on real fold ``k``, the same test set)."""
    from phenosynth.data.manifest import real_test, real_train, synthetic
    from phenosynth.data.workspace import Workspace
    from phenosynth.models.features import extract_features
    from phenosynth.training import TrainConfig, train_cell
    from phenosynth.training.cell import run_folds

    ws = Workspace.open(ws_path)
    manifest = ws.load_manifest()
    wanted = pd.concat([real_train(manifest), real_test(manifest), synthetic(manifest)])["image_id"].astype(str)
    features = extract_features(ws, backbone, wanted.tolist())
    rows = []
    for regime, selection, rep, n in configurations(ns, backbone):
        config = TrainConfig(backbone=backbone, regime=regime, n_synthetic=n or None, selection=selection
                             if selection != "-" else "top-per-class", representation=None if rep == "-" else rep)
        for k in run_folds(ws, config):
            row = train_cell(ws, config, k, seed=k, features=features)
            rows.append({"backbone": backbone, "regime": regime, "selection": selection, "representation": rep,
                         "n_synthetic": row["n_synthetic"], "n_requested": n, "fold": k, "n_train": row["n_train"],
                         "n_test": row["n_test"], **{f"top{j}": row[f"top{j}"] for j in (1, 5, 10)}})
            log.info("%s %s %s n=%d fold %d: top1 %.3f", regime, selection, rep, n, k, rows[-1]["top1"])
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> pd.DataFrame:
    from phenosynth.evaluate.metrics import format_mean_sd, mean_sd

    keys = ["regime", "selection", "representation", "n_requested"]
    out = []
    for key, g in results.groupby(keys, sort=False):
        out.append({**dict(zip(keys, key)), "n_train (mean)": int(round(g["n_train"].mean())), "models": len(g),
                    **{f"top-{j}": format_mean_sd(*mean_sd(g[f"top{j}"])) for j in (1, 5, 10)}})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder of real faces, one sub-folder per class.")
    p.add_argument("--workspace", type=Path, default=Path("/tmp/phenosynth-bench-synthetic"))
    p.add_argument("--fresh", action="store_true", help="Delete the workspace first.")
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--test-size", type=float, default=0.6)
    p.add_argument("--per-class", type=int, default=50, help="Synthetic images generated per class.")
    p.add_argument("--n", type=int, nargs="+", default=[200, 400, 800], help="Synthetic training-set sizes (totals).")
    p.add_argument("--C", type=float, default=1.0, help="Inverse L2 strength of the probe.")
    p.add_argument("--seed", type=int, default=0, help="Generation seed.")
    p.add_argument("--speed-size", type=int, default=256,
                   help="Also time the generator on the photos resized to this many pixels (0: skip).")
    p.add_argument("--engine", choices=["direct", "trainer"], default="direct",
                   help="direct: lineage-aware fold models built here on the registered probe; trainer: "
                        "phenosynth.training.train_cell (the `phenosynth train` protocol).")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "synthetic")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.data.exists():
        print(f"No data at {args.data}; pass --data DIR (one sub-folder of photos per class).", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    info = prepare(args.workspace, args.data, test_size=args.test_size, per_class=args.per_class, seed=args.seed,
                   fresh=args.fresh, backbone=args.backbone)
    if args.speed_size:
        info["generate_at_size"] = generator_speed(args.workspace, size=args.speed_size, per_class=args.per_class,
                                                   workers=None)
    run = evaluate if args.engine == "direct" else evaluate_with_trainer
    results = run(args.workspace, backbone=args.backbone, ns=args.n, C=args.C)
    summary = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "results.csv", index=False)
    md = markdown(summary)
    text = (
        f"# Synthetic-data benchmark ({args.data.name}, backbone {args.backbone}, probe C={args.C}, "
        f"engine {args.engine})\n\n"
        f"Pipeline: {json.dumps(info, default=str)}\n\n{md}\n\n"
        f"Top-k in %, mean (SD) over {results['fold'].nunique()} fold models; "
        f"{int(results['n_test'].iloc[0])} real test images. Total {time.perf_counter() - t0:.0f}s.\n"
    )
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


def markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
