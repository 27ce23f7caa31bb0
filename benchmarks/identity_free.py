"""Benchmark: ``phenotype-transfer`` settings chosen by the privacy audit on real faces (issue 12, item 3), and its
generation speed next to ``shape-warp``.

Set-up (ORL/AT&T, 40 people x 10 photos, ``../shared/data/orl-faces``), as ``benchmarks/audit.py``: people
``s1..s32`` are the patients, 8 "conditions" of 4 people each (``cond0`` = s1-s4, ...; ``subject_id`` = the person),
split test 25 % by subject (seed 42) with ``--folds`` folds (2: 12 training people per fold, so a morph can take up to
12 subjects of one fold). People ``s33..s40`` (80 photos) are the **donor pool** (``ingest --donors``): no label, no
split, never compared as patients. Persons as labels would make every condition one person (no identity-free image
could then carry a "phenotype" without the person's identity); groups of 4 people are the
patients-with-one-syndrome situation the generator is for. ORL's groups have no shared shape phenotype, so phenotype
agreement is read against the real test photos' own agreement (the probe's accuracy on real unseen people), not as
an absolute.

Each setting of the sweep (identities, k, strength, jitter) makes ``--per-class`` images of every condition: donor
runs with the workspace's donors, morph runs with ``identities=morphs`` (the donors ignored). The face pass runs on
them, and ``phenosynth.audit.audit`` (dlib_resnet128, no KID, phenotype probe shape68) scores each run: matched share
vs the stranger rate (the real impostor rate of a nearest-neighbour match) + 2 points, membership AUC <= 0.6, and
phenotype agreement (synthetic vs real test). Speed (phenotype-transfer with ``identities=morphs``, its slower
path: the fit makes every shape-free face): ``shape-warp`` and ``phenotype-transfer`` (defaults) each fit and make the same number of
images from the same training photos in one process, alternately ``--speed-reps`` times; the table shows the median
rep (img/s including the fit, and of the sampling alone) and every rep's ratio.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/identity_free.py [--workspace /tmp/bench-idfree] [--fresh]
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()
PATIENTS = 32  # s1..s32 patients, s33..s40 donors
PER_CONDITION = 4
JITTER = {"x1": {}, "x2": {"max_rotation": 12.0, "max_scale": 0.1, "max_shift": 0.06, "lighting": 0.3,
                           "colour": 0.12}}
#: (identities, k, strength, jitter): small enough for a shared 2-core box (each: --per-class x 8 images audited);
#: k is unused by donor runs
SWEEP = [("donors", 6, 2.0, "x1"), ("morphs", 6, 2.0, "x1"), ("morphs", 12, 2.0, "x1")]


def prepare(ws_path: Path, data: Path, *, fresh: bool, folds: int):
    """The patients' workspace (ingested, split, face pass), without donors."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws = Workspace.open(ws_path, create=True)
    if not ws.manifest_path.exists():
        ingest(_table(ws, data, "real", lambda k: k <= PATIENTS, labelled=True), ws, layout="csv")
        split(ws, test_size=0.25, folds=folds, seed=42)
    run_face_pass(ws)
    return ws


def add_donors(ws, data: Path) -> None:
    """People s33..s40 as the donor pool (``ingest --donors``), with their face pass."""
    from phenosynth.data.ingest import ingest
    from phenosynth.data.manifest import donors
    from phenosynth.faces.facepass import run_face_pass

    if donors(ws.load_manifest()).empty:
        ingest(_table(ws, data, "donors", lambda k: k > PATIENTS, labelled=False), ws, layout="csv", donors=True)
    run_face_pass(ws)


def _table(ws, data: Path, name: str, keep, *, labelled: bool) -> Path:
    rows = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        k = int(re.sub(r"\D", "", folder.name))
        if keep(k):
            rows += [{"path": str(f), "subject_id": folder.name,
                      **({"label": f"cond{(k - 1) // PER_CONDITION}"} if labelled else {})}
                     for f in sorted(folder.glob("*.pgm"))]
    table = ws.root.parent / f"{ws.root.name}-{name}.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def speed(ws, per_class: int, reps: int) -> list[dict]:
    """img/s of shape-warp and phenotype-transfer (defaults) on the same training photos, one process, alternating."""
    from phenosynth.faces.facepass import load_faces
    from phenosynth.synth.generation import _fitted_generator

    import tempfile

    faces, manifest, out = load_faces(ws), ws.load_manifest(), []
    run_dir = Path(tempfile.mkdtemp(prefix="idfree-speed-"))  # nothing is written there by these two generators
    _fitted_generator(ws, manifest, "shape-warp", None, faces, run_dir, "local")  # imports and caches warm
    for rep in range(reps):
        for name in ("shape-warp", "phenotype-transfer"):
            t, c = time.perf_counter(), time.process_time()
            options = {"identities": "morphs"} if name == "phenotype-transfer" else None  # the slower path
            gen = _fitted_generator(ws, manifest, name, options, faces, run_dir, "local")[0]
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            n = sum(1 for _ in gen.sample(per_class, seed=0))
            sample_s = time.perf_counter() - t
            cpu_s = time.process_time() - c
            out.append({"rep": rep, "generator": name, "images": n, "fit_s": fit_s, "sample_s": sample_s,
                        "img_per_s": n / (fit_s + sample_s), "img_per_s_sampling": n / sample_s,
                        "img_per_cpu_s": n / cpu_s})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-idfree"))
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--speed-per-class", type=int, default=25)
    ap.add_argument("--speed-reps", type=int, default=3)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the speed table (on an existing workspace)")
    args = ap.parse_args()

    from phenosynth.audit.donors import screen_donors
    from phenosynth.audit.fidelity import OVERALL
    from phenosynth.audit.privacy import audit
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate

    t0 = time.perf_counter()
    ws = prepare(args.workspace, args.data, fresh=args.fresh, folds=args.folds)
    fast = speed(ws, args.speed_per_class, args.speed_reps)
    if args.speed_only:
        return print_speed(fast)
    add_donors(ws, args.data)
    runs = {}
    for identities, k, strength, jitter in SWEEP:
        run = f"pt-{identities}-k{k}-s{strength:g}-j{jitter}" if identities == "morphs" else \
            f"pt-{identities}-s{strength:g}-j{jitter}"
        generate(ws, "phenotype-transfer", per_class=args.per_class, seed=0, name=run, n_jobs=1,
                 options={"k": k, "strength": strength, "identities": identities, **JITTER[jitter]})
        runs[run] = (identities, k, strength, jitter)
    run_face_pass(ws)
    settings = dict(embedder="dlib_resnet128", kid_backbone=None, probe_backbone="shape68", n_boot=200)
    result = audit(ws, **settings)
    # the donor pool screened for patient look-alikes (by the donors' own photos, `audit --donors`), then one more
    # donor run
    screen = screen_donors(ws, embedder="dlib_resnet128")
    assert screen.calibration.threshold == result.calibration.threshold
    lookalike = screen.frame.groupby("person")["match"].mean().to_dict()
    screened = "pt-donors-screened-s2-jx1"
    generate(ws, "phenotype-transfer", per_class=args.per_class, seed=0, name=screened, n_jobs=1,
             options={"strength": 2.0, "identities": "donors"})
    runs[screened] = ("donors (screened)", 6, 2.0, "x1")
    run_face_pass(ws)
    result.runs += audit(ws, screened, **settings).runs
    minutes = (time.perf_counter() - t0) / 60

    print(f"\nORL s1-s32 as 8 conditions x 4 people, s33-s40 donors; {result.n_real} real photos "
          f"({result.n_real_train} training), {args.folds} folds; {args.per_class} images per condition per setting; "
          f"threshold {result.calibration.threshold:.4f}; {minutes:.1f} min in all\n")
    print("donor screening, share of each donor's photos identity-matched to a patient training photo: "
          + ", ".join(f"{d} {100 * v:.0f}%" for d, v in sorted(lookalike.items()))
          + f"; all donors' photos: {100 * float(np.mean(list(lookalike.values()))):.1f}% (per-donor mean)\n")
    print("| identities | k | strength | jitter | images | matched (95% CI) | stranger rate + 2 pt | "
          "membership AUC (95% CI) | phenotype: synthetic / real test | passes |")
    print("|------------|---|----------|--------|--------|------------------|----------------------|"
          "-------------------------|----------------------------------|--------|")
    for r in sorted(result.runs, key=lambda r: list(runs).index(r.run) if r.run in runs else 99):
        if r.run not in runs:
            continue
        identities, k, strength, jitter = runs[r.run]
        overall = [p for p in (r.fidelity.phenotype if r.fidelity else []) if p.condition == OVERALL]
        syn_acc, real_acc = (overall[0].synthetic_accuracy, overall[0].test_accuracy) if overall else (None, None)
        ok = r.matched_share <= r.stranger_rate + 0.02 and r.membership_auc <= 0.6
        print(f"| {identities} | {k if identities == 'morphs' else '-'} | {strength:g} | {jitter} | {r.n_images} | "
              f"{100 * r.matched_share:.1f}% [{100 * r.matched_ci[0]:.1f}, {100 * r.matched_ci[1]:.1f}] | "
              f"{100 * r.stranger_rate + 2:.1f}% | "
              f"{r.membership_auc:.3f} [{r.membership_ci[0]:.3f}, {r.membership_ci[1]:.3f}] | "
              f"{syn_acc if syn_acc is None else f'{100 * syn_acc:.0f}%'} / "
              f"{real_acc if real_acc is None else f'{100 * real_acc:.0f}%'} | {'yes' if ok else 'no'} |")
    print_speed(fast)


def print_speed(fast: list[dict]) -> None:
    print("\n| generator | images | fit s | sampling s | img/s (with fit) | img/s (sampling) | img per CPU s |")
    print("|-----------|--------|-------|------------|------------------|------------------|---------------|")
    median = {}
    for name in ("shape-warp", "phenotype-transfer"):
        mine = sorted((s for s in fast if s["generator"] == name), key=lambda s: s["img_per_s"])
        median[name] = mine[len(mine) // 2]
    for s in median.values():
        print(f"| {s['generator']} | {s['images']} | {s['fit_s']:.2f} | {s['sample_s']:.2f} | {s['img_per_s']:.1f} | "
              f"{s['img_per_s_sampling']:.1f} | {s['img_per_cpu_s']:.1f} |")
    sw, pt = median["shape-warp"], median["phenotype-transfer"]
    per_rep = [b["img_per_s"] / a["img_per_s"] for a, b in zip(fast[::2], fast[1::2])]
    per_rep_cpu = [b["img_per_cpu_s"] / a["img_per_cpu_s"] for a, b in zip(fast[::2], fast[1::2])]
    print(f"\nphenotype-transfer / shape-warp (medians): {pt['img_per_s'] / sw['img_per_s']:.2f}x with fit, "
          f"{pt['img_per_s_sampling'] / sw['img_per_s_sampling']:.2f}x sampling only; per rep with fit: "
          + ", ".join(f"{r:.2f}x" for r in per_rep) + "; per rep in CPU time: "
          + ", ".join(f"{r:.2f}x" for r in per_rep_cpu))


if __name__ == "__main__":
    main()
