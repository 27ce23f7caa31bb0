"""Benchmark: ``phenotype-transfer`` settings chosen by the privacy audit on real faces (issue 12, item 3), and its
generation speed next to ``shape-warp``.

Set-up (ORL/AT&T, 40 people x 10 photos, ``../shared/data/orl-faces``), as ``benchmarks/audit.py``: people
``s1..s32`` are the patients, 8 "conditions" of 4 people each (``cond0`` = s1-s4, ...; ``subject_id`` = the person),
split test 25 % by subject (seed 42) with **3** folds (8 people per fold, so a morph can take up to 8 subjects from one
fold). Persons as labels would make every condition one person (no identity-free image could then carry a
"phenotype" without the person's identity); groups of 4 people are the patients-with-one-syndrome situation the
generator is for. ORL's groups have no shared shape phenotype, so phenotype agreement is read against the real test
photos' own agreement (the probe's accuracy on real unseen people), not as an absolute.

Each setting of the sweep (k, strength, jitter) makes ``--per-class`` images of every condition (morph identities:
the workspace has no donors), the face pass runs on them, and ``phenosynth.audit.audit`` (dlib_resnet128, no KID,
phenotype probe shape68) scores the run: matched share vs the stranger rate (the real impostor rate of a nearest-
neighbour match) + 2 points, membership AUC <= 0.6, and phenotype agreement (synthetic vs real test). Speed:
``shape-warp`` and ``phenotype-transfer`` (defaults) make the same number of images from the same training photos in
one process; images per second including the fit, and of the sampling alone.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/identity_free.py [--workspace /tmp/bench-idfree] [--fresh]
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()
PATIENTS = 32
PER_CONDITION = 4
JITTER = {"x1": {}, "x2": {"max_rotation": 12.0, "max_scale": 0.1, "max_shift": 0.06, "lighting": 0.3,
                           "colour": 0.12}}
#: (k, strength, jitter): small enough for a shared 2-core box (each setting: --per-class x 8 images audited)
SWEEP = [(4, 1.0, "x1"), (6, 1.0, "x1"), (4, 2.0, "x1"), (6, 2.0, "x1"), (6, 1.0, "x2")]


def prepare(ws_path: Path, data: Path, *, fresh: bool):
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws = Workspace.open(ws_path, create=True)
    if not ws.manifest_path.exists():
        rows = []
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            k = int(re.sub(r"\D", "", folder.name))
            if k <= PATIENTS:
                rows += [{"path": str(f), "label": f"cond{(k - 1) // PER_CONDITION}", "subject_id": folder.name}
                         for f in sorted(folder.glob("*.pgm"))]
        table = ws.root.parent / f"{ws.root.name}-real.csv"
        pd.DataFrame(rows).to_csv(table, index=False)
        ingest(table, ws, layout="csv")
        split(ws, test_size=0.25, folds=3, seed=42)
    run_face_pass(ws)
    return ws


def speed(ws, per_class: int) -> list[dict]:
    """img/s of shape-warp and phenotype-transfer (defaults) on the same training photos, one process."""
    from phenosynth.faces.facepass import load_faces
    from phenosynth.synth.generation import _fitted_generator

    faces, manifest, out = load_faces(ws), ws.load_manifest(), []
    for name in ("shape-warp", "phenotype-transfer"):
        t = time.perf_counter()
        gen = _fitted_generator(ws, manifest, name, None, faces)[0]
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(1 for _ in gen.sample(per_class, seed=0))
        sample_s = time.perf_counter() - t
        out.append({"generator": name, "images": n, "fit_s": fit_s, "sample_s": sample_s,
                    "img_per_s": n / (fit_s + sample_s), "img_per_s_sampling": n / sample_s})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-idfree"))
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--speed-per-class", type=int, default=25)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()

    from phenosynth.audit.fidelity import OVERALL
    from phenosynth.audit.privacy import audit
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate

    t0 = time.perf_counter()
    ws = prepare(args.workspace, args.data, fresh=args.fresh)
    fast = speed(ws, args.speed_per_class)
    runs = {}
    for k, strength, jitter in SWEEP:
        run = f"pt-k{k}-s{strength:g}-j{jitter}"
        generate(ws, "phenotype-transfer", per_class=args.per_class, seed=0, name=run, n_jobs=1,
                 options={"k": k, "strength": strength, **JITTER[jitter]})
        runs[run] = (k, strength, jitter)
    run_face_pass(ws)
    result = audit(ws, embedder="dlib_resnet128", kid_backbone=None, probe_backbone="shape68", n_boot=200)
    minutes = (time.perf_counter() - t0) / 60

    print(f"\nORL s1-s32 as 8 conditions x 4 people; {result.n_real} real photos ({result.n_real_train} training); "
          f"{args.per_class} images per condition per setting; threshold {result.calibration.threshold:.4f}; "
          f"{minutes:.1f} min in all\n")
    print("| k | strength | jitter | images | matched (95% CI) | stranger rate + 2 pt | membership AUC (95% CI) | "
          "phenotype: synthetic / real test | passes |")
    print("|---|----------|--------|--------|------------------|----------------------|-------------------------|"
          "----------------------------------|--------|")
    for r in sorted(result.runs, key=lambda r: list(runs).index(r.run) if r.run in runs else 99):
        if r.run not in runs:
            continue
        k, strength, jitter = runs[r.run]
        overall = [p for p in (r.fidelity.phenotype if r.fidelity else []) if p.condition == OVERALL]
        syn_acc, real_acc = (overall[0].synthetic_accuracy, overall[0].test_accuracy) if overall else (None, None)
        ok = r.matched_share <= r.stranger_rate + 0.02 and r.membership_auc <= 0.6
        print(f"| {k} | {strength:g} | {jitter} | {r.n_images} | {100 * r.matched_share:.1f}% "
              f"[{100 * r.matched_ci[0]:.1f}, {100 * r.matched_ci[1]:.1f}] | {100 * r.stranger_rate + 2:.1f}% | "
              f"{r.membership_auc:.3f} [{r.membership_ci[0]:.3f}, {r.membership_ci[1]:.3f}] | "
              f"{syn_acc if syn_acc is None else f'{100 * syn_acc:.0f}%'} / "
              f"{real_acc if real_acc is None else f'{100 * real_acc:.0f}%'} | {'yes' if ok else 'no'} |")
    print("\n| generator | images | fit s | sampling s | img/s (with fit) | img/s (sampling) |")
    print("|-----------|--------|-------|------------|------------------|------------------|")
    for s in fast:
        print(f"| {s['generator']} | {s['images']} | {s['fit_s']:.2f} | {s['sample_s']:.2f} | {s['img_per_s']:.1f} | "
              f"{s['img_per_s_sampling']:.1f} |")
    ratio = fast[1]["img_per_s"] / fast[0]["img_per_s"]
    print(f"\nphenotype-transfer / shape-warp: {ratio:.2f}x with fit, "
          f"{fast[1]['img_per_s_sampling'] / fast[0]['img_per_s_sampling']:.2f}x sampling only")


if __name__ == "__main__":
    main()
