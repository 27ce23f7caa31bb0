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
scoring alone 1.53 s, on the shared 2-core VM; re-timed 2026-12-07: median 6.83 s over 9 runs (3.56-13.40 s, load
average 2.4-5.4 on the shared 2 cores).

3. Phenotype benchmark (``--phenotype``): the same comparison on the identity-free study's workspace
   (``benchmarks/identity_free_study.py``: 24 simulated conditions on different ORL people, the identity-free
   ``phenotype-transfer`` run ``idfree`` from 8 donors, 3 folds, 24 real test photos), read, never rebuilt: its
   faces, audit, ranking and identity-view features are reused, the test-time views' features are added to its cache.
   Grid: ``shape68``, ``dlib_resnet128``, ``mobilenet_v2`` and the ensemble ``shape68+dlib_resnet128`` x gallery
   (m = 1) / probe x real / synthetic gallery (training set) x TTA off / flip+gray x 3 folds. The synthetic gallery is
   selected like the study's training sets (``top-per-class`` on the shape68 ranking, n per class, the audit's
   privacy gate, the fold rule, ``allow_fewer``), at each n of ``--n``; the n of a row is the one with the best mean
   validation top-1 over the folds (the fold's real validation photos as queries), never the test photos.
   Measured 2026-12-07 on /work/bench/pheno: features of the 3 test-time views of 1020 images 1370 s (dlib_resnet128
   134-187 s, mobilenet_v2 260-360 s a view, load average 9-30), then the 240 cells in 21-28 s.

3. Unseen conditions (``--unseen-fraction F``, run alone): its own workspace (``WORKSPACE-unseenF``: the same ORL
   photos split with ``split --unseen-fraction F``, seed 42, no synthetic images), features of ``dlib_resnet128`` and
   ``shape68`` (identity view), and for each, gallery and probe cells over the 5 folds (real training set): the seen
   conditions' top-1/top-5 on their test photos and the unseen ones' by gallery matching, leave-one-subject-out
   (every ORL photo is its own subject, so each unseen photo is matched against the other 9 of its person plus
   the cell's training photos of the seen people).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/gallery.py [--workspace /tmp/bench-gallery] [--per-class 5] [--table]
    PYTHONPATH=src .venv/bin/python benchmarks/gallery.py --unseen-fraction 0.2
    PYTHONPATH=src .venv/bin/python benchmarks/gallery.py --phenotype --workspace /work/bench/pheno [--n 5 10 20 40]
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


def orl_workspace(ws_path: Path, data: Path, *, unseen_fraction: float = 0.0):
    """``(workspace, new)``: ORL with the 40 people as labels (each photo its own subject), split (25 % test,
    ``FOLDS`` folds, seed 42, ``unseen_fraction``) and face-passed; an existing workspace is opened as it is."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass

    ws = Workspace.open(ws_path, create=True)
    if ws.manifest_path.exists():
        return ws, False
    rows = [{"path": str(f), "label": folder.name, "subject_id": f"{folder.name}-{f.stem}"}
            for folder in sorted(p for p in data.iterdir() if p.is_dir()) for f in sorted(folder.glob("*.pgm"))]
    table = ws.root.parent / f"{ws.root.name}-real.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    ingest(table, ws, layout="csv")
    split(ws, test_size=0.25, folds=FOLDS, seed=42, unseen_fraction=unseen_fraction)
    run_face_pass(ws)
    return ws, True


def prepare(ws_path: Path, data: Path, *, per_class: int, fresh: bool):
    from phenosynth.synth.generation import generate

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws, new = orl_workspace(ws_path, data)
    if new:
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
    from phenosynth.evaluate.metrics import format_mean_sd, mean_sd
    from phenosynth.models.features import extract_features
    from phenosynth.study.runner import study_image_ids

    t = time.perf_counter()
    ws, _ = orl_workspace(ws_path, data, unseen_fraction=fraction)
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



# --- phenotype benchmark (--phenotype) --------------------------------------------------------------------------------

#: The 2-model ensemble of the phenotype grid: the two backbones with the best real-only *validation* top-1 of the
#: identity-free study (shape68 32.0 %, dlib_resnet128 30.3 %, mobilenet_v2 11.7 %; benchmarks/results/
#: identity_free_study.md), which also read different cues (landmark geometry, an identity descriptor).
PHENO_ENSEMBLE = "shape68+dlib_resnet128"
PHENO_FOLDS = 3
PHENO_RUN = "idfree"  # the synthetic run benchmarks/identity_free_study.py makes
PHENO_MODES = ("gallery", "probe")


def pheno_workspace(path: Path):
    """The identity-free study's workspace at ``path`` (its root, or the ``workspace`` folder in it); refuses one
    that is not split, has no synthetic run ``idfree`` or no ranking, naming the command that makes it."""
    from phenosynth.data.workspace import Workspace
    from phenosynth.errors import WorkspaceError

    root = path / "workspace" if (path / "workspace" / "manifest.parquet").exists() else path
    ws = Workspace.open(root, need_manifest=True)
    make = (f"benchmarks/identity_free_study.py --workspace {path} (the phenotype benchmark; this script only "
            "reads it)")
    m = ws.load_manifest()
    real = m[m["source"] == "real"]
    if real["fold"].dropna().nunique() < PHENO_FOLDS or not (real["split"] == "test").any():
        raise WorkspaceError(f"Workspace {ws.root} has no {PHENO_FOLDS}-fold split with a test set. Run first: {make}")
    if not (ws.root / "synthetic" / PHENO_RUN).is_dir() or not (m["source"] == "synthetic").any():
        raise WorkspaceError(f"Workspace {ws.root} has no synthetic run '{PHENO_RUN}'. Run first: {make}")
    if not (ws.root / "ranking.parquet").exists():
        raise WorkspaceError(f"Workspace {ws.root} has no ranking.parquet (top-per-class selection needs it). "
                             f"Run first: {make}")
    return ws


def pheno_config(backbone: str, regime: str, mode: str, tta: bool, n: int | None = None):
    """A cell of the phenotype grid, with the identity-free study's settings (benchmarks/identity_free_study.py:
    native preprocessing, top-per-class selection on the shape68 ranking, n per class, allow_fewer, privacy gate)."""
    from phenosynth.training import TrainConfig

    return TrainConfig(backbone=backbone, regime=regime, mode=mode, n_synthetic=n if regime != "real" else None,
                       selection="top-per-class", representation="shape68", per_class=True, allow_fewer=True,
                       preprocessing="native", folds=PHENO_FOLDS, seeds=[0], tta=list(TTA) if tta else [])


def pheno_sets(ws, ns: list[int]) -> dict:
    """``(regime, n, fold) -> cell_sets`` of every set the grid uses (real: n = 0), selected once; selection does
    not depend on the backbone, mode or TTA."""
    from phenosynth.training.cell import cell_sets

    m = ws.load_manifest()
    keys = [("real", 0)] + [("synthetic", n) for n in ns]
    return {(r, n, f): cell_sets(ws, m, pheno_config(BACKBONES[0], r, "gallery", False, n or None), f, 0)
            for r, n in keys for f in range(PHENO_FOLDS)}


def pheno_features(ws, ids: list[str], backbones: tuple[str, ...]) -> tuple[dict, pd.DataFrame]:
    """``({(backbone, view): (ids, X)}, timings)``: every view of ``ids`` (native preprocessing), from the workspace's
    cache where present; ``timings`` has one row per (backbone, view): images asked, with features, computed now
    (added to the cache by this call; ``-`` for a landmark backbone, which has no cache: its features are the
    landmarks), seconds, 1-minute load average at the end."""
    import os

    from phenosynth.models.backbones import backbone_spec
    from phenosynth.models.features import _load_cache, extract_features, feature_cache_dir
    from phenosynth.models.views import tta_views

    def n_cached(b: str, v: str) -> int:
        folder = feature_cache_dir(ws, b, "default", "native", view=v)
        return len(set(_load_cache(folder)) & set(ids)) if folder.is_dir() else 0

    out, rows = {}, []
    for b in backbones:
        cacheless = backbone_spec(b).input_kind == "landmarks"
        for v in tta_views(TTA):
            before = 0 if cacheless else n_cached(b, v)
            t = time.perf_counter()
            out[b, v] = extract_features(ws, b, ids, weights="default", preprocessing="native", view=v)
            seconds = time.perf_counter() - t
            computed = "-" if cacheless else n_cached(b, v) - before
            rows.append({"backbone": b, "view": v, "asked": len(ids), "with features": len(out[b, v][0]),
                         "computed": computed, "seconds": round(seconds, 1), "load1": round(os.getloadavg()[0], 1)})
            print(f"  {b} {v}: {computed} of {len(ids)} computed in {seconds:.1f} s", flush=True)
    return out, pd.DataFrame(rows)


def pheno_grid(ws, features: dict, sets: dict, ns: list[int], backbones: list[str]) -> pd.DataFrame:
    """Every cell of the phenotype grid (module docstring, item 3): backbone x mode x regime (synthetic at every n)
    x TTA x fold, on cached features, through the study cell's code with the sets selected once; one fit cache for
    all (folds and TTA settings that train a head on the very same data share its fits)."""
    from phenosynth.data.leakage import assert_no_leakage
    from phenosynth.training.cell import FitCache, _run_cell

    assert_no_leakage(ws)
    fit_cache, rows = FitCache(size=64), []
    for b in backbones:
        feats = {k: v for k, v in features.items() if k[0] in b.split("+")}
        for mode in PHENO_MODES:
            for regime, n in [("real", 0)] + [("synthetic", n) for n in ns]:
                for tta in (False, True):
                    cfg = pheno_config(b, regime, mode, tta, n or None)
                    for fold in range(PHENO_FOLDS):
                        row = _run_cell(ws, cfg, fold, 0, feats, sets=sets[regime, n, fold], fit_cache=fit_cache)[0]
                        rows.append({**row, "n_per_class": n, "tta": "+".join(cfg.tta) or "off"})
    return pd.DataFrame(rows)


def choose_n(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the chosen n: real rows as they are; for each (backbone, mode, TTA) of the synthetic rows, the n
    with the highest mean validation top-1 over the folds (ties: the smaller n). Pure.

    >>> df = pd.DataFrame({"backbone": "b", "mode": "gallery", "tta": "off", "regime": ["real"] + ["synthetic"] * 6,
    ...                    "n_per_class": [0, 5, 5, 10, 10, 20, 20], "fold": [0, 0, 1, 0, 1, 0, 1],
    ...                    "val_top1": [0.9, 0.5, 0.1, 0.2, 0.4, 0.3, 0.2]})
    >>> choose_n(df)[["regime", "n_per_class"]].values.tolist()  # n = 5 and 10 tie at 0.3: the smaller
    [['real', 0], ['synthetic', 5], ['synthetic', 5]]
    """
    keys = ["backbone", "mode", "tta"]
    syn = df[df["regime"] == "synthetic"]
    val = syn.groupby([*keys, "n_per_class"], sort=False)["val_top1"].mean().round(9).reset_index()  # ties exact
    best = (val.sort_values([*keys, "val_top1", "n_per_class"], ascending=[True] * 3 + [False, True], kind="stable")
            .drop_duplicates(keys)[[*keys, "n_per_class"]])
    return pd.concat([df[df["regime"] == "real"], syn.merge(best, on=[*keys, "n_per_class"])], ignore_index=True)


def pheno_table(chosen: pd.DataFrame, order: list[str]) -> str:
    """One line per backbone x gallery source x mode x TTA: top-1 / top-5 / validation top-1 mean (SD) over folds,
    the synthetic rows with their n (chosen on validation) and the images actually in the gallery."""
    from phenosynth.evaluate.metrics import format_mean_sd, mean_sd

    lines = ["| backbone | gallery / training set (n per class by validation; images, mean over folds) | mode | TTA "
             "| top-1 | top-5 | val top-1 |", "|---|---|---|---|---|---|---|"]
    rank = {b: i for i, b in enumerate(order)}
    df = chosen.sort_values(["backbone", "regime", "mode", "tta"], kind="stable",
                            key=lambda s: s.map(rank) if s.name == "backbone" else s)
    for (b, regime, mode, tta), g in df.groupby(["backbone", "regime", "mode", "tta"], sort=False):
        source = "real" if regime == "real" else (
            f"synthetic (n={int(g['n_per_class'].iloc[0])}; {g['n_synthetic'].mean():.0f})")
        lines.append(f"| {b} | {source} | {mode} | {tta} | {format_mean_sd(*mean_sd(g['top1']))} | "
                     f"{format_mean_sd(*mean_sd(g['top5']))} | {format_mean_sd(*mean_sd(g['val_top1']))} |")
    return "\n".join(lines)


def pheno_n_table(df: pd.DataFrame, ns: list[int], order: list[str]) -> str:
    """The synthetic rows at every n: test top-1 mean and (validation top-1 mean), %, per backbone x mode x TTA."""
    syn = df[df["regime"] == "synthetic"]
    mean = syn.groupby(["backbone", "mode", "tta", "n_per_class"])[["top1", "val_top1"]].mean()
    lines = ["| backbone | mode | TTA | " + " | ".join(f"n={n}: top-1 (val)" for n in ns) + " |",
             "|---|---|---|" + "---|" * len(ns)]
    for b in order:
        for mode in PHENO_MODES:
            for tta in ("off", "+".join(TTA)):
                cells = [f"{100 * mean.loc[(b, mode, tta, n), 'top1']:.1f} "
                         f"({100 * mean.loc[(b, mode, tta, n), 'val_top1']:.1f})" for n in ns]
                lines.append(f"| {b} | {mode} | {tta} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phenotype_main(args: argparse.Namespace) -> None:
    """``--phenotype``: the grid of module docstring item 3 on the identity-free study's workspace; prints the
    feature timings, the tables and the load averages."""
    import os

    from threadpoolctl import threadpool_limits

    t0, load0 = time.perf_counter(), os.getloadavg()
    ws = pheno_workspace(args.workspace)
    ns = sorted(set(args.n))
    backbones = [*BACKBONES, args.ensemble or PHENO_ENSEMBLE]
    t = time.perf_counter()
    sets = pheno_sets(ws, ns)
    ids = sorted({i for _, cell, _ in sets.values() for s in cell.values() for i in s})
    m = ws.load_manifest()
    source = m.set_index(m["image_id"].astype(str))["source"]
    print(f"workspace {ws.root}: {int((m['source'] == 'real').sum())} real photos, "
          f"{int((m['source'] == 'synthetic').sum())} synthetic images; the grid's sets (n = {ns}) use {len(ids)} "
          f"images ({source.reindex(ids).value_counts().to_dict()}); selected in {time.perf_counter() - t:.1f} s; "
          f"load average {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}", flush=True)
    t = time.perf_counter()
    members = tuple(dict.fromkeys(m for b in backbones for m in b.split("+")))
    features, timings = pheno_features(ws, ids, members)
    print(f"features ({len(members)} backbones x 4 views): {time.perf_counter() - t:.1f} s\n")
    print("| " + " | ".join(timings.columns) + " |\n|" + "---|" * len(timings.columns))
    for r in timings.itertuples(index=False):
        print("| " + " | ".join(map(str, r)) + " |")
    import phenosynth.models.trainers  # noqa: F401 -- imports are not the grid's time
    import sklearn.metrics  # noqa: F401

    with threadpool_limits(2):
        t = time.perf_counter()
        df = pheno_grid(ws, features, sets, ns, backbones)
        grid_seconds = time.perf_counter() - t
    if args.save:
        df.to_csv(args.save, index=False)
    n_test = int(df["n_test"].iloc[0])
    n_classes = int(df["n_classes"].iloc[0])
    load1 = os.getloadavg()
    print(f"\ngrid: {len(df)} cells in {grid_seconds:.1f} s (load average {load1[0]:.1f} {load1[1]:.1f} "
          f"{load1[2]:.1f})\n\nPhenotype benchmark, {n_classes} conditions, {n_test} real test photos, mean (SD) "
          f"over {PHENO_FOLDS} folds, % (chance top-1 {100 / n_classes:.1f}):\n")
    print(pheno_table(choose_n(df), backbones))
    print(f"\nSynthetic gallery / training set at every n (mean over {PHENO_FOLDS} folds, %):\n")
    print(pheno_n_table(df, ns, backbones))
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-gallery"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--table", action="store_true", help="also the accuracy table (probe cells: slower)")
    ap.add_argument("--unseen-fraction", type=float, default=0.0,
                    help="only the unseen-conditions table (item 3), in WORKSPACE-unseenF")
    ap.add_argument("--phenotype", action="store_true",
                    help="the phenotype benchmark grid on --workspace, the identity-free study's (docstring, item 3)")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 10, 20, 40],
                    help="--phenotype: synthetic gallery sizes per condition (the row's n chosen on validation)")
    ap.add_argument("--ensemble", default=None, help=f"--phenotype: the 2-model ensemble (default {PHENO_ENSEMBLE})")
    ap.add_argument("--save", type=Path, default=None, help="--phenotype: write every cell's row to this CSV")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.unseen_fraction > 0:
        unseen_benchmark(args.workspace.with_name(f"{args.workspace.name}-unseen{args.unseen_fraction:g}"),
                         args.data, args.unseen_fraction)
        return
    if args.phenotype:
        from phenosynth.errors import PhenosynthError

        try:
            return phenotype_main(args)
        except PhenosynthError as exc:  # a missing or unfinished workspace: its message says what to run
            ap.exit(2, f"error: {exc}\n")
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
