"""Benchmark: GestaltMatcher-style gallery matching (issue 15) on real faces -- the timing of the full gallery grid on
cached features, and the accuracy table (gallery vs probe, TTA on/off, real vs synthetic gallery).

Set-up (ORL/AT&T, 40 people x 10 photos, ``../shared/data/orl-faces``), through the library (what ``phenosynth
ingest/split/faces/generate/train`` do): the 40 people are the labels (each photo its own subject, so the stratified
split holds 25 % of every person's photos out as the test set, seed 42, 5 folds); ``shape-warp`` makes ``--per-class``
synthetic images per person from the training photos; ``faces`` (dlib-hog + dlib68) on everything; features of
``shape68``, ``dlib_resnet128`` and ``mobilenet_v2`` for every test-time view (identity, flip, gray, flip+gray) are
extracted once into the workspace's cache (not timed).

1. Timing: the full gallery grid -- 3 backbones x real/synthetic gallery x TTA off/on x 5 folds = 60 cells -- through
   :func:`phenosynth.training.train_cell` on the cached features (each cell: its sets, the fold rule and selection for
   the synthetic gallery, matching, metrics). Budget: <= 10 s on 2 cores.
2. Accuracy (``--table``): top-1/top-5 mean (SD) over the 5 folds on the held-out test photos, for the 3 backbones and
   the ensemble ``dlib_resnet128+mobilenet_v2``, gallery (m = 1) vs probe (C in 0.1, 1, 10), TTA off/on, real vs
   synthetic gallery / training set (synthetic: every shape-warp image of the fold, ``selection random``).

Measured 2026-11-29 (results: benchmarks/results/gallery.md): 60 gallery cells in 8.31 s through train_cell,
scoring alone 1.53 s, on the shared 2-core VM.

3. Unseen conditions (``--unseen-fraction F``, run alone): its own workspace (``WORKSPACE-unseenF``: the same ORL
   photos split with ``split --unseen-fraction F``, seed 42, no synthetic images), features of ``dlib_resnet128`` and
   ``shape68`` (identity view), and for each, gallery and probe cells over the 5 folds (real training set): the seen
   conditions' top-1/top-5 on their test photos and the unseen ones' by gallery matching, leave-one-subject-out
   (every ORL photo is its own subject, so each unseen photo is matched against the other 9 of its person plus
   the cell's training photos of the seen people).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/gallery.py [--workspace /tmp/bench-gallery] [--per-class 5] [--table]
    PYTHONPATH=src .venv/bin/python benchmarks/gallery.py --unseen-fraction 0.2
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()
BACKBONES = ("shape68", "dlib_resnet128", "mobilenet_v2")
ENSEMBLE = "dlib_resnet128+mobilenet_v2"
TTA = ("flip", "gray")
FOLDS = 5


def prepare(ws_path: Path, data: Path, *, per_class: int, fresh: bool):
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws = Workspace.open(ws_path, create=True)
    if not ws.manifest_path.exists():
        rows = [{"path": str(f), "label": folder.name, "subject_id": f"{folder.name}-{f.stem}"}
                for folder in sorted(p for p in data.iterdir() if p.is_dir()) for f in sorted(folder.glob("*.pgm"))]
        table = ws.root.parent / f"{ws.root.name}-real.csv"
        pd.DataFrame(rows).to_csv(table, index=False)
        ingest(table, ws, layout="csv")
        split(ws, test_size=0.25, folds=FOLDS, seed=42)
        run_face_pass(ws)
        generate(ws, "shape-warp", per_class=per_class, seed=0, n_jobs=1)
    run_face_pass(ws)  # new images only
    return ws


def all_features(ws) -> dict:
    """``{(backbone, view): (ids, X)}`` of every usable image, every backbone and view (cached after the first run)."""
    from phenosynth.models.features import extract_features
    from phenosynth.models.views import tta_views
    from phenosynth.study.runner import study_image_ids

    ids = study_image_ids(ws)
    out = {}
    for b in BACKBONES:
        for v in tta_views(TTA):
            out[b, v] = extract_features(ws, b, ids, weights="default", preprocessing="paper", view=v)
    return out


def run_grid(ws, features: dict, configs: list, sets: dict | None = None) -> pd.DataFrame:
    """Every fold of every config through :func:`phenosynth.training.train_cell` (each cell checks the split for
    leakage and builds its sets, as a study cell does), or, with ``sets`` (``(regime, fold) -> cell_sets``, built
    once), through the same cell code minus those steps: the scoring alone."""
    from phenosynth.training import train_cell
    from phenosynth.training.cell import _run_cell

    rows = []
    for cfg in configs:
        feats = {k: v for k, v in features.items() if k[0] in cfg.backbone.split("+")}
        for fold in range(FOLDS):
            if sets is None:
                row = train_cell(ws, cfg, fold, cfg.seeds[0], features=feats)
            else:
                row = _run_cell(ws, cfg, fold, cfg.seeds[0], feats, sets=sets[cfg.regime, fold])[0]
            rows.append({**row, "tta": "+".join(cfg.tta) or "off"})
    return pd.DataFrame(rows)


def config(backbone: str, regime: str, mode: str, tta: bool):
    from phenosynth.training import TrainConfig

    return TrainConfig(backbone=backbone, regime=regime, mode=mode, selection="random", folds=FOLDS, seeds=[0],
                       tta=list(TTA) if tta else [])


def table(df: pd.DataFrame) -> str:
    from phenosynth.evaluate.metrics import format_mean_sd, mean_sd

    lines = ["| backbone | gallery / training set | mode | TTA | top-1 | top-5 |", "|---|---|---|---|---|---|"]
    for (b, regime, mode, tta), g in df.groupby(["backbone", "regime", "mode", "tta"], sort=False):
        lines.append(f"| {b} | {regime} | {mode} | {tta} | {format_mean_sd(*mean_sd(g['top1']))} | "
                     f"{format_mean_sd(*mean_sd(g['top5']))} |")
    return "\n".join(lines)


UNSEEN_BACKBONES = ("dlib_resnet128", "shape68")


def unseen_benchmark(ws_path: Path, data: Path, fraction: float) -> None:
    """Item 3 of the module docstring: seen vs unseen top-1/top-5, gallery and probe, printed as a Markdown table."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.evaluate.metrics import format_mean_sd, mean_sd
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.models.features import extract_features
    from phenosynth.study.runner import study_image_ids

    t = time.perf_counter()
    ws = Workspace.open(ws_path, create=True)
    if not ws.manifest_path.exists():
        rows = [{"path": str(f), "label": folder.name, "subject_id": f"{folder.name}-{f.stem}"}
                for folder in sorted(p for p in data.iterdir() if p.is_dir()) for f in sorted(folder.glob("*.pgm"))]
        table_path = ws.root.parent / f"{ws.root.name}-real.csv"
        pd.DataFrame(rows).to_csv(table_path, index=False)
        ingest(table_path, ws, layout="csv")
        split(ws, test_size=0.25, folds=FOLDS, seed=42, unseen_fraction=fraction)
        run_face_pass(ws)
    ids = study_image_ids(ws)
    features = {(b, "identity"): extract_features(ws, b, ids, weights="default", preprocessing="paper")
                for b in UNSEEN_BACKBONES}
    print(f"unseen workspace and features: {time.perf_counter() - t:.1f} s")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        t = time.perf_counter()
        df = run_grid(ws, features, [config(b, "real", mode, False) for b in UNSEEN_BACKBONES
                                     for mode in ("gallery", "probe")])
        print(f"{len(df)} cells: {time.perf_counter() - t:.1f} s")
    first = df.iloc[0]
    print(f"\nORL, --unseen-fraction {fraction}: {int(first['n_classes'])} seen people ({int(first['n_test'])} test "
          f"photos), {int(first['unseen_conditions'])} unseen people ({int(first['unseen_queries'])} queries, "
          f"{int(first['unseen_skipped'])} skipped); mean (SD) over {FOLDS} folds, %:\n")
    print("| backbone | mode | seen top-1 | seen top-5 | unseen top-1 | unseen top-5 |\n|---|---|---|---|---|---|")
    for (b, mode), g in df.groupby(["backbone", "mode"], sort=False):
        cells = [format_mean_sd(*mean_sd(g[c])) for c in ("top1", "top5", "unseen_top1", "unseen_top5")]
        print(f"| {b} | {mode} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-gallery"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--table", action="store_true", help="also the accuracy table (probe cells: slower)")
    ap.add_argument("--unseen-fraction", type=float, default=0.0,
                    help="only the unseen-conditions table (item 3), in WORKSPACE-unseenF")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.unseen_fraction > 0:
        unseen_benchmark(args.workspace.with_name(f"{args.workspace.name}-unseen{args.unseen_fraction:g}"),
                         args.data, args.unseen_fraction)
        return
    from threadpoolctl import threadpool_limits

    t = time.perf_counter()
    ws = prepare(args.workspace, args.data, per_class=args.per_class, fresh=args.fresh)
    m = ws.load_manifest()
    print(f"workspace: {(m['source'] == 'real').sum()} real, {(m['source'] == 'synthetic').sum()} synthetic images; "
          f"prepared in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    features = all_features(ws)
    print(f"features (3 backbones x 4 views, cached): {time.perf_counter() - t:.1f} s")

    from phenosynth.training.cell import cell_sets

    grid = [config(b, r, "gallery", tta) for b in BACKBONES for r in ("real", "synthetic") for tta in (False, True)]
    import phenosynth.models.trainers  # noqa: F401 -- imports (sklearn, scipy: seconds) are not the grid's time
    import sklearn.metrics  # noqa: F401

    with threadpool_limits(2):
        t = time.perf_counter()
        df = run_grid(ws, features, grid)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        sets = {(r, f): cell_sets(ws, m, config(BACKBONES[0], r, "gallery", False), f, 0)
                for r in ("real", "synthetic") for f in range(FOLDS)}
        sets_seconds = time.perf_counter() - t
        t = time.perf_counter()
        scored = run_grid(ws, features, grid, sets)
        scoring = time.perf_counter() - t
    assert scored.drop(columns="fit_seconds").equals(df.drop(columns="fit_seconds"))
    print(f"gallery grid: {len(df)} cells (3 backbones x real/synthetic gallery x TTA off/on x {FOLDS} folds) on "
          f"cached features: {seconds:.2f} s as study cells (each checks leakage, builds its sets); "
          f"scoring alone {scoring:.2f} s ({scoring / len(df) * 1000:.0f} ms per cell) after {sets_seconds:.2f} s "
          f"building the {len(sets)} (regime, fold) sets once")
    if args.table:
        extra = [config(ENSEMBLE, r, "gallery", tta) for r in ("real", "synthetic") for tta in (False, True)]
        extra += [config(b, r, "probe", tta) for b in (*BACKBONES, ENSEMBLE) for r in ("real", "synthetic")
                  for tta in (False, True)]
        with threadpool_limits(2):
            t = time.perf_counter()
            df = pd.concat([df, run_grid(ws, features, extra)], ignore_index=True)
            print(f"ensemble + probe cells: {time.perf_counter() - t:.1f} s")
        order = {b: i for i, b in enumerate((*BACKBONES, ENSEMBLE))}
        df = df.sort_values(["backbone", "regime", "mode", "tta"], key=lambda s: s.map(order) if s.name == "backbone"
                            else s, kind="stable")
        print(f"\nORL, 40 people, {int(df['n_test'].iloc[0])} test photos, mean (SD) over {FOLDS} folds, %:\n")
        print(table(df))


if __name__ == "__main__":
    main()
