"""Benchmark: identity-free synthetic faces against real photos on simulated phenotypes (issue 12, item 4).

Data (``benchmarks/phenotype_benchmark.py``): the demo's 24 simulated conditions (fixed combinations of 2-4
HPO-coded craniofacial shape changes) drawn on photos of 4 **different** ORL people each (one photo per person and
condition, so identity is noise, as between patients with one syndrome), people s1..s32; the last ``--donors`` people
(s33..s40 for 8) are kept out of every condition and ingested as **donors** (``ingest --donors``: no label, no split,
no fold). Then, through the library (what the CLI does): split (test 25 % by person, seed 42, 3 folds), face pass,
``phenotype-transfer`` (its defaults; identities = the donors) ``--per-class`` images per condition, face pass on
them, the privacy audit of that run (dlib_resnet128, phenotype probe shape68, no KID), ranking (shape68) and one
study: backbones ``shape68``, ``dlib_resnet128``, ``mobilenet_v2`` (probe trainer, the library's C grid) x
regimes real-only, synthetic-only and mixed (real + n per class) at n = ``--n`` per class x 3 folds
(``allow_fewer``: a class with fewer usable images than n, after the face pass and the audit's privacy gate, trains
on what it has; the table gives the images actually trained on), scored on
the held-out real test photos. Preprocessing ``native`` (each backbone's own input size and normalisation), so the
study reuses the audit's dlib_resnet128 descriptors from the feature cache.

Printed: one table (backbone, regime, synthetic weight, n per class, top-1 / top-5 mean (SD) over folds, validation
top-1: CV on the training photos, the criterion for ``--strength``, n and the weight), with ``--synthetic-weight`` a
table of each weight's mixed top-1 averaged over n, the must-show checks, the audit of the synthetic run (matched
share [95 % CI] vs the stranger rate + 2 points, membership AUC; the same run feeds every synthetic and mixed row) and
the wall time of each stage.

**Weight of the synthetic images in mixed training** (``--synthetic-weight W ...``, the study spec's
``synthetic_weight``): for each W one more study of the mixed regime at every n, in which each condition's synthetic
images together weigh W times its real training photos (plain concatenation, the main study's mixed rows, lets them
weigh n / 2 to n / 3 times as much); ``none`` in the list is concatenation. One further study
(``idfree-mixed-w-per-fold``) gives the whole list to the training layer, which chooses W on each validation fold
with C. The must-show's mixed row is the (n, W) with the best mean validation top-1 over the folds, among the fixed-W
rows and concatenation (ties: the first in the order concatenation, then ``--synthetic-weight``'s order, n
ascending); the test photos choose nothing.

``--strength`` scales every simulated change (the builder's option); choose it on the real-only *validation* top-1
(``--real-only`` runs only that regime, cheaply), never on the test set. The workspace is reused: a rerun skips what
is done (dataset, ingest, split, faces, generation) and reads cached features; ``--fresh`` starts over.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/identity_free_study.py --orl /work/shared/data/orl-faces \
        [--workspace /tmp/bench-idfree-study] [--strength 2] [--per-class 24] [--n 5 10 15] [-o strength=1] \
        [--synthetic-weight 2 1 0.5 0.25]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phenotype_benchmark import DEFAULT_DATA, build_phenotype_benchmark  # noqa: E402

BACKBONES = ["shape68", "dlib_resnet128", "mobilenet_v2"]
GENERATOR = "phenotype-transfer"
RUN = "idfree"
#: the issue's bar: matched share within the stranger (impostor) rate + 2 points, membership AUC <= 0.6
MATCH_MARGIN, MAX_AUC = 0.02, 0.6
#: top-1 means are fractions of the same test photos: equal counts may differ in the last bits of a float mean
TIE = 1e-9
#: the ``weight`` label of rows that weigh nothing (real, synthetic-only, and mixed by plain concatenation)
CONCAT = "concat"
#: the ``weight`` label of the mixed rows whose weight each fold chose on its validation photos
PER_FOLD = "per-fold"


def prepare(root: Path, orl: Path, *, strength: float, donors: int, fresh: bool, timings: dict, photos=None,
            split_seed: int = 42):
    """Dataset, ingest (patients + donors), split (``split_seed``) and face pass, each skipped when already done
    (``photos``: the landmarked ORL photos, when the caller has them)."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass

    if fresh and root.exists():
        shutil.rmtree(root)
    data_dir, t = root / "dataset", time.perf_counter()
    if not (data_dir / "demo_metadata.csv").exists():
        build_phenotype_benchmark(data_dir, orl, strength=strength, donors=donors, overwrite=True, photos=photos)
    timings["dataset"] = time.perf_counter() - t
    ws, t = Workspace.open(root / "workspace", create=True), time.perf_counter()
    if not ws.manifest_path.exists():
        ingest(data_dir / "demo_metadata.csv", ws)
        if donors:
            ingest(data_dir / "donors.csv", ws, donors=True)
        split(ws, test_size=0.25, folds=3, seed=split_seed)
    elif split_seed != _recorded_split_seed(ws):
        raise SystemExit(f"{ws.root} was split with seed {_recorded_split_seed(ws)}, not {split_seed}: give each "
                         "--split-seed its own --workspace")
    run_face_pass(ws)
    timings["ingest+split+faces"] = time.perf_counter() - t
    return ws


def _recorded_split_seed(ws) -> int | None:
    import json

    from phenosynth.data.leakage import SPLIT_OPTIONS_FILE

    path = ws.root / SPLIT_OPTIONS_FILE
    return json.loads(path.read_text()).get("seed") if path.exists() else None


def generate_and_audit(ws, per_class: int, timings: dict, options: dict | None = None, seed: int = 0):
    """The identity-free run (skipped when the workspace has it), its face pass, audit and ranking."""
    from phenosynth.audit.privacy import audit
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate
    from phenosynth.synth.ranking import rank

    t = time.perf_counter()
    if not (ws.root / "synthetic" / RUN).exists():
        generate(ws, GENERATOR, per_class=per_class, seed=seed, name=RUN, options=options)
    timings["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    run_face_pass(ws)
    timings["faces (synthetic)"] = time.perf_counter() - t
    t = time.perf_counter()
    result = audit(ws, RUN, embedder="dlib_resnet128", kid_backbone=None, probe_backbone="shape68", n_boot=200)
    timings["audit"] = time.perf_counter() - t
    t = time.perf_counter()
    rank(ws, representation="shape68")
    timings["rank"] = time.perf_counter() - t
    return result


def study(ws, ns: list[int], *, real_only: bool, name: str, timings: dict, synthetic_weight=None,
          mixed_only: bool = False) -> pd.DataFrame:
    """The grid of the module docstring; returns results.csv (one row per backbone x regime x n x fold).
    ``synthetic_weight``: the spec's key (a weight, or a list chosen per fold); ``mixed_only``: only mixed rows."""
    from phenosynth.study.runner import run_study
    from phenosynth.study.spec import load_spec

    spec = load_spec("demo").resolved()
    regimes = {"real": True, "synthetic": [] if real_only else ns, "mixed": [] if real_only else ns}
    if mixed_only:
        regimes.update(real=False, synthetic=[])
    spec.update(backbones=[{"name": b} for b in BACKBONES] if not real_only else [{"name": "shape68"}],
                regimes=regimes, per_class=True, folds=3, generator="already-generated", notice=None,
                preprocessing="native", allow_fewer=True, synthetic_weight=synthetic_weight)
    t = time.perf_counter()
    res = run_study(ws, spec, name, build_report=False, resume=(ws.root / "runs" / name / "results.csv").exists())
    timings[f"study {name}"] = time.perf_counter() - t
    return res.results


def _pct(mean: float, sd: float) -> str:
    return "-" if math.isnan(mean) else f"{100 * mean:.1f} ({0 if math.isnan(sd) else 100 * sd:.1f})"


def audit_cell(r) -> str:
    ok = r.matched_share <= r.stranger_rate + MATCH_MARGIN and r.membership_auc <= MAX_AUC
    return (f"matched {100 * r.matched_share:.1f}% [{100 * r.matched_ci[0]:.1f}, {100 * r.matched_ci[1]:.1f}] vs "
            f"{100 * r.stranger_rate:.1f}%+2; AUC {r.membership_auc:.2f} [{r.membership_ci[0]:.2f}, "
            f"{r.membership_ci[1]:.2f}]; {'passes' if ok else 'FAILS'}")


def table(summary: pd.DataFrame, run_audit) -> str:
    """The markdown table; the audit (the same for every synthetic row: one generator run) is printed once, below
    it, by :func:`must_show`."""
    lines = ["| backbone | regime | synthetic weight | n per class (synthetic images trained, mean over folds) | "
             "top-1 % mean (SD) | top-5 % mean (SD) | val top-1 % |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        n = f"{row.n_per_class} ({row.n_trained_mean:.0f})" if row.regime != "real" else "-"
        weight = row.weight if row.regime == "mixed" else "-"
        lines.append(f"| {row.backbone} | {row.regime} | {weight} | {n} | {_pct(row.top1_mean, row.top1_sd)} | "
                     f"{_pct(row.top5_mean, row.top5_sd)} | {_pct(row.val_top1_mean, math.nan).split(' ')[0]} |")
    return "\n".join(lines)


def weight_label(value) -> str:
    """The ``weight`` column of a study's rows: ``concat`` (None), the weight (``0.5``), or ``per-fold`` (a list)."""
    if value is None:
        return CONCAT
    return PER_FOLD if isinstance(value, (list, tuple)) else f"{float(value):g}"


def summarize(results: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Mean and SD (ddof=1) over folds per backbone x regime x synthetic weight x requested n (n per class)."""
    df = results.copy()
    if "n_synthetic_requested" in df:  # the spec's n: per class here
        df["n_per_class"] = pd.to_numeric(df["n_synthetic_requested"], errors="coerce").fillna(0).astype(int)
    else:
        total = pd.to_numeric(df["n_synthetic"], errors="coerce").fillna(0)
        df["n_per_class"] = (total / n_classes).round().astype(int)
    df["n_trained"] = pd.to_numeric(df["n_synthetic"], errors="coerce").fillna(0)
    if "val_top1" not in df:
        df["val_top1"] = math.nan
    if "weight" not in df:
        df["weight"] = CONCAT
    keys = ["backbone", "regime", "weight", "n_per_class"]
    out = (df.groupby(keys, sort=False)[["top1", "top5", "val_top1", "n_trained"]]
           .agg(["mean", lambda v: v.std(ddof=1)]))
    out.columns = [f"{m}_{'mean' if s == 'mean' else 'sd'}" for m, s in out.columns]
    return out.reset_index()


def must_show(summary: pd.DataFrame, run_audit) -> list[str]:
    """The issue's bar, per backbone: best synthetic-only top-1 vs real-only, mixed vs real-only; then the audit."""
    lines, syn_wins, mixed_wins = [], 0, 0
    for b, grp in summary.groupby("backbone", sort=False):
        real = grp.loc[grp["regime"] == "real", "top1_mean"]
        syn = grp[grp["regime"] == "synthetic"]
        # mixed: n and the synthetic weight chosen together on validation, among concatenation and the fixed weights
        mixed_rows = grp[(grp["regime"] == "mixed") & (grp["weight"] != PER_FOLD)]
        if real.empty or syn.empty or mixed_rows.empty:
            continue
        r, best = real.iloc[0], syn.loc[syn["top1_mean"].idxmax()]
        by_val = syn.loc[syn["val_top1_mean"].idxmax()] if syn["val_top1_mean"].notna().any() else best
        # mixed: the n chosen on validation (3-fold CV on the training photos), never on the test photos
        mixed = (mixed_rows.loc[mixed_rows["val_top1_mean"].idxmax()] if mixed_rows["val_top1_mean"].notna().any()
                 else mixed_rows.iloc[-1])
        syn_wins += best.top1_mean >= r - TIE
        mixed_wins += mixed.top1_mean >= r - TIE
        lines.append(f"{b}: real-only {100 * r:.1f}; synthetic-only best {100 * best.top1_mean:.1f} "
                     f"(n={best.n_per_class} per class, {_pt(best.top1_mean - r)} pt; "
                     "the n with the best validation top-1, "
                     f"{by_val.n_per_class}: {100 * by_val.top1_mean:.1f}); mixed (n={mixed.n_per_class}, weight "
                     f"{mixed.weight}, by validation) {100 * mixed.top1_mean:.1f} ({_pt(mixed.top1_mean - r)} pt)"
                     + _per_fold_note(grp, r))
    if lines:
        lines.append(f"synthetic-only >= real-only on {syn_wins} of {len(lines)} backbones (bar: 2); "
                     f"mixed >= real-only on {mixed_wins} (bar: all {len(lines)})")
    if run_audit is not None:
        lines.append(f"audit: {audit_cell(run_audit)}")
    return lines


def _pt(diff: float) -> str:
    """A difference in points, ``+0.0`` for a tie (the same photo counts)."""
    return f"{0.0 if abs(diff) < TIE else 100 * diff:+.1f}"


def weight_table(summary: pd.DataFrame) -> str:
    """Per backbone and synthetic weight: the mixed rows' test and validation top-1, each the mean over every n
    (how the weight does whatever n is; choosing nothing), beside real-only."""
    mixed = summary[summary["regime"] == "mixed"]
    if mixed["weight"].nunique() < 2:
        return ""
    lines = ["| backbone | real-only top-1 % | synthetic weight | mixed top-1 %, mean over n | "
             "its lowest and highest n | mixed val top-1 %, mean over n |", "|---|---|---|---|---|---|"]
    for b, grp in mixed.groupby("backbone", sort=False):
        real = summary.loc[(summary["backbone"] == b) & (summary["regime"] == "real"), "top1_mean"]
        for w, rows in grp.groupby("weight", sort=False):
            lines.append(f"| {b} | {100 * real.iloc[0]:.1f} | {w} | {100 * rows['top1_mean'].mean():.1f} | "
                         f"{100 * rows['top1_mean'].min():.1f} - {100 * rows['top1_mean'].max():.1f} | "
                         f"{100 * rows['val_top1_mean'].mean():.1f} |")
    return "\n".join(lines)


def _per_fold_note(grp: pd.DataFrame, real: float) -> str:
    """The mixed row whose weight each fold chose (n chosen on validation among those rows), when it was run."""
    rows = grp[(grp["regime"] == "mixed") & (grp["weight"] == PER_FOLD)]
    if rows.empty:
        return ""
    row = rows.loc[rows["val_top1_mean"].idxmax()] if rows["val_top1_mean"].notna().any() else rows.iloc[-1]
    return (f"; weight chosen per fold (n={row.n_per_class} by validation) {100 * row.top1_mean:.1f} "
            f"({_pt(row.top1_mean - real)} pt)")


def choose_strength(args) -> None:
    """Real-only shape68 studies at each of ``args.choose_strength`` (workspaces ``WORKSPACE-s<strength>``); prints
    their validation top-1 (3-fold CV on the training photos; the test photos are not looked at) and the smallest
    strength whose mean reaches ``args.target_val``."""
    from phenosynth.demo.orl import orl_face_photos

    photos, rows = None, []
    for strength in args.choose_strength:
        root, timings = Path(f"{args.workspace}-s{strength:g}"), {}
        if photos is None and not (root / "dataset" / "demo_metadata.csv").exists():
            photos = orl_face_photos(args.orl, scale=2.0)
        ws = prepare(root, args.orl, strength=strength, donors=args.donors, fresh=args.fresh, timings=timings,
                     photos=photos)
        val = pd.to_numeric(study(ws, [], real_only=True, name="real-only", timings=timings)["val_top1"])
        rows.append((strength, val.mean(), val.std(ddof=1), root))
    print(f"\n| strength | real-only shape68 validation top-1 % mean (SD), 3 folds | workspace |\n|---|---|---|")
    for strength, mean, sd, root in rows:
        print(f"| {strength:g} | {_pct(mean, sd)} | {root} |")
    chosen = [r for r in rows if r[1] >= args.target_val]
    print(f"\nchosen (smallest strength with validation top-1 >= {100 * args.target_val:.0f}%): "
          + (f"{chosen[0][0]:g} -> --strength {chosen[0][0]:g} --workspace {chosen[0][3]}" if chosen else "none"))


def _option_value(text: str):
    """A generator option from the command line: a number when it reads as one (``k=8``), else the text
    (``identities=morphs``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orl", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-idfree-study"))
    ap.add_argument("--strength", type=float, default=2.0,
                    help="the builder's strength (all simulated changes; 2 = chosen by --choose-strength)")
    ap.add_argument("--donors", type=int, default=8, help="ORL people kept out of every condition, as donors")
    ap.add_argument("--per-class", type=int, default=24, help="identity-free images generated per condition")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 10, 15], help="synthetic n per class")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a phenotype-transfer option (default: its defaults), e.g. -o strength=1")
    ap.add_argument("--synthetic-weight", nargs="+", default=[], metavar="W",
                    help="mixed studies with these synthetic weights (a class's synthetic images weigh W x its real "
                         "photos; none = concatenation), and one with the list chosen per fold")
    ap.add_argument("--split-seed", type=int, default=42,
                    help="seed of the test/fold split (another draw of the 24 test photos; one workspace per seed)")
    ap.add_argument("--generator-seed", type=int, default=0,
                    help="seed of the identity-free run (another seed: another draw of the synthetic set)")
    ap.add_argument("--real-only", action="store_true", help="only the real-only shape68 study (to choose strength)")
    ap.add_argument("--choose-strength", type=float, nargs="+", default=None,
                    help="only choose the strength: real-only shape68 CV at each of these")
    ap.add_argument("--target-val", type=float, default=0.25, help="validation top-1 the chosen strength reaches")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    if args.choose_strength:
        return choose_strength(args)
    if max(args.n) > args.per_class:
        ap.error(f"--n up to {max(args.n)} needs --per-class >= {max(args.n)}")

    t0, timings = time.perf_counter(), {}
    load = os.getloadavg()
    ws = prepare(args.workspace, args.orl, strength=args.strength, donors=args.donors, fresh=args.fresh,
                 timings=timings, split_seed=args.split_seed)
    run_audit = None
    if not args.real_only:
        options = {k: _option_value(v) for k, v in (o.split("=", 1) for o in args.option)}
        run_audit = [r for r in generate_and_audit(ws, args.per_class, timings, options,
                                                   seed=args.generator_seed).runs if r.run == RUN][0]
    main_name = "real-only" if args.real_only else "idfree-study-mixed-all-n"
    results = study(ws, args.n, real_only=args.real_only, name=main_name, timings=timings)
    weights = [None if w.lower() in ("none", "concat") else float(w) for w in args.synthetic_weight]
    if weights and not args.real_only:
        frames = [results.assign(weight=CONCAT)]
        for w in [w for w in weights if w is not None]:
            frames.append(study(ws, args.n, real_only=False, name=f"idfree-mixed-w{w:g}", timings=timings,
                                synthetic_weight=w, mixed_only=True).assign(weight=weight_label(w)))
        if len(weights) > 1:
            frames.append(study(ws, args.n, real_only=False, name="idfree-mixed-w-per-fold-" + "-".join(
                "none" if w is None else f"{w:g}" for w in weights), timings=timings, synthetic_weight=weights,
                mixed_only=True).assign(weight=PER_FOLD))
        results = pd.concat(frames, ignore_index=True)
    manifest = ws.load_manifest()
    real = manifest[manifest["source"] == "real"]
    summary = summarize(results, real["label"].nunique())
    # table order (and the tie order of the choice on validation): backbone, regime, concatenation then the weights
    # as given then the per-fold choice, n ascending
    order = {"backbone": BACKBONES, "regime": ["real", "synthetic", "mixed"],
             "weight": [CONCAT] + [weight_label(w) for w in weights if w is not None] + [PER_FOLD]}
    summary = summary.sort_values(["backbone", "regime", "weight", "n_per_class"], key=lambda col: col.map(
        {v: k for k, v in enumerate(order[col.name])}) if col.name in order else col, kind="stable"
    ).reset_index(drop=True)
    load_end = os.getloadavg()
    counts = real.groupby("split").size().to_dict()
    print(f"\nstrength {args.strength:g}; {real['label'].nunique()} conditions, {len(real)} real photos {counts} of "
          f"{real['subject_id'].nunique()} people; {int((manifest['source'] == 'donor').sum())} donor photos; "
          f"chance top-1 {100 / real['label'].nunique():.1f}%")
    if run_audit is not None:
        print(f"synthetic run {RUN}: {run_audit.n_images} images ({GENERATOR}, options {args.option or 'defaults'}, "
              f"seed {args.generator_seed})")
    print()
    print(table(summary, run_audit))
    print()
    if weights:
        print(weight_table(summary))
        print()
    for line in must_show(summary, run_audit):
        print(line)
    print("\nstage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min; load average at start {load[0]:.1f}, "
          f"at end {load_end[0]:.1f} (1 min), {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
