"""Benchmark: the privacy audit on real faces (ORL/AT&T, 40 people x 10 photos, ``../shared/data/orl-faces``).

Set-up, through the library (what ``phenosynth ingest/split/faces/generate/audit`` do):

- ORL has one folder per person and no conditions. People ``s1..s32`` become the "patients": 8 conditions of 4
  people each (``cond0`` = s1-s4, ...), ``subject_id`` = the person, so the subject-grouped split (test 25 %, seed 42)
  holds whole people out.
- ``shape-warp`` (its defaults: ``--per-class 100``, seed 0) makes 800 synthetic images from the training photos.
- Control: the photos of ``s33..s40`` (80 photos of 8 people who are not in the real set) are ingested as synthetic
  images of run ``other-people`` (spread over the 8 conditions): a correct audit matches them at about the
  stranger rate (real photos matched by a training photo of another person), with a membership AUC near 0.5.
- ``faces`` (dlib-hog + dlib68) on everything, then ``audit`` (dlib_resnet128) twice: the first computes the
  descriptors, the second reads them from the feature cache.

Printed: per run, images, matched share + Wilson 95 % CI, the pairwise impostor rate and the stranger rate, both
thresholds, membership AUC + CI, near-copies; the strangers check like for like (the other people against the
held-out test patients, both compared with their nearest training photo, per image and per person: a person-level
bootstrap, since a look-alike matches with most of his photos); and the audit's time per 1,000 synthetic images
(first and cached run).

Usage::

    .venv/bin/python benchmarks/audit.py [--workspace /tmp/bench-audit] [--fresh]
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
PATIENTS = 32  # s1..s32 are the real set; the rest lend "other people"
PER_CONDITION = 4


def _person(folder: str) -> int:
    return int(re.sub(r"\D", "", folder))


def prepare(ws_path: Path, data: Path, *, per_class: int, fresh: bool) -> dict:
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.faces.facepass import run_face_pass
    from phenosynth.synth.generation import generate

    if fresh and ws_path.exists():
        shutil.rmtree(ws_path)
    ws = Workspace.open(ws_path, create=True)
    info: dict = {}
    if not ws.manifest_path.exists():
        rows_real, rows_other = [], []
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            k = _person(folder.name)
            for f in sorted(folder.glob("*.pgm")):
                if k <= PATIENTS:
                    rows_real.append({"path": str(f), "label": f"cond{(k - 1) // PER_CONDITION}",
                                      "subject_id": folder.name})
                else:
                    rows_other.append({"path": str(f), "label": f"cond{(k - PATIENTS - 1) % (PATIENTS // PER_CONDITION)}"})
        tables = ws.root.parent / f"{ws.root.name}-tables"
        tables.mkdir(exist_ok=True)
        pd.DataFrame(rows_real).to_csv(tables / "real.csv", index=False)
        pd.DataFrame(rows_other).to_csv(tables / "other.csv", index=False)
        ingest(tables / "real.csv", ws, layout="csv")
        split(ws, test_size=0.25, seed=42)
        ingest(tables / "other.csv", ws, layout="csv", synthetic=True, generator="other-people")
    t = time.perf_counter()
    run_face_pass(ws)
    info["faces_real_s"] = round(time.perf_counter() - t, 1)
    g = generate(ws, "shape-warp", per_class=per_class, seed=0)
    info["generate"] = {"images": g.images, "seconds": round(g.seconds, 1)}
    t = time.perf_counter()
    run_face_pass(ws)
    info["faces_synthetic_s"] = round(time.perf_counter() - t, 1)
    return info


def _person_of(path: str) -> str:
    """The ORL person of a photo path (``.../s37/4.pgm`` -> ``s37``)."""
    return re.search(r"(s\d+)[/\\][^/\\]+$", str(path)).group(1)


def cluster_ci(hit: np.ndarray, person: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the share ``hit.mean()`` resampling *people* (a person's photos are not
    independent: a look-alike matches with most of his photos, which a per-image Wilson interval ignores)."""
    people = np.unique(person)
    rows = [np.flatnonzero(person == p) for p in people]
    rng = np.random.default_rng(seed)
    shares = [hit[np.concatenate([rows[j] for j in rng.integers(0, len(rows), len(rows))])].mean()
              for _ in range(n_boot)]
    lo, hi = np.quantile(shares, [0.025, 0.975])
    return float(lo), float(hi)


def strangers_check(ws, res) -> list[str]:
    """Like for like: the 'other-people' images (nearest of the training photos, people never seen) against the
    held-out test patients (the same protocol on real photos of people the training set does not hold), per image and
    per person."""
    from phenosynth.audit import stats
    from phenosynth.models.features import extract_features

    cal = res.calibration
    m = ws.load_manifest()
    real = m[(m["source"] == "real") & m["exclude_reason"].isna()]
    ids, X = extract_features(ws, res.embedder, real["image_id"].astype(str).tolist(), preprocessing="native")
    real = real.set_index("image_id").loc[ids]
    train = (real["split"] == "train").to_numpy()
    d_test = stats.distance_matrix(np.asarray(X)[~train], np.asarray(X)[train], res.metric).min(axis=1)
    test_hit, test_person = d_test < cal.threshold, real.loc[~train, "path"].map(_person_of).to_numpy()
    other = next(r for r in res.runs if r.run == "other-people")
    frame = pd.read_parquet(other.parquet_path)
    frame = frame[frame["has_face"]]
    o_hit, o_person = frame["identity_match"].to_numpy(), frame["path"].map(_person_of).to_numpy()
    lines = ["| probes (nearest of the training photos) | people | images | matched | per-image Wilson 95% CI | "
             "per-person bootstrap 95% CI | people with a match |", "|---|---|---|---|---|---|---|"]
    for name, hit, person in (("held-out test patients (real)", test_hit, test_person),
                              ("other people (as synthetic)", o_hit, o_person)):
        lo, hi = stats.wilson_ci(int(hit.sum()), len(hit))
        clo, chi = cluster_ci(hit, person)
        matched_people = sorted(set(person[hit]))
        lines.append(f"| {name} | {len(set(person))} | {len(hit)} | {100 * hit.mean():.1f}% | [{100 * lo:.1f}, "
                     f"{100 * hi:.1f}]% | [{100 * clo:.1f}, {100 * chi:.1f}]% | {len(matched_people)} "
                     f"({', '.join(matched_people) or '-'}) |")
    lines.append(f"\nother-people: membership AUC {other.membership_auc:.3f} [{other.membership_ci[0]:.3f}, "
                 f"{other.membership_ci[1]:.3f}]; pairwise impostor rate {100 * cal.impostor_rate:.2f}%, stranger "
                 f"rate (all real photos, nearest training photo of another person) {100 * other.stranger_rate:.1f}% "
                 f"[{100 * other.stranger_ci[0]:.1f}, {100 * other.stranger_ci[1]:.1f}]%")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-audit"))
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--embedder", default="dlib_resnet128")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--keep-cache", action="store_true", help="keep cached descriptors (the first audit is cached too)")
    args = ap.parse_args()

    from phenosynth.audit.privacy import audit
    from phenosynth.data.workspace import Workspace
    from phenosynth.models.features import feature_cache_dir

    info = prepare(args.workspace, args.data, per_class=args.per_class, fresh=args.fresh)
    ws = Workspace.open(args.workspace)
    if not args.keep_cache:  # a true first run
        shutil.rmtree(feature_cache_dir(ws, args.embedder, "default", "native"), ignore_errors=True)
    t = time.perf_counter()
    first = audit(ws, embedder=args.embedder)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    second = audit(ws, embedder=args.embedder)
    t_second = time.perf_counter() - t
    assert [r.to_dict() | {"replaced": None} for r in first.runs] == \
        [r.to_dict() | {"replaced": None} for r in second.runs], "a cached re-audit must give the same numbers"

    cal = second.calibration
    n_syn = sum(r.n_images for r in second.runs)
    print(f"\nORL: {second.n_real} real photos ({second.n_real_train} training), {n_syn} synthetic; "
          f"embedder {second.embedder} ({second.metric}); setup {info}")
    print(f"threshold {cal.threshold:.4f} (documented {cal.documented}, impostor 0.1% quantile "
          f"{cal.impostor_quantile:.4f}, source {cal.source}); at it: impostor rate {100 * cal.impostor_rate:.2f}% "
          f"of {cal.n_impostor} pairs, genuine rate {100 * cal.genuine_rate:.1f}% of {cal.n_genuine} pairs\n")
    print("| run | images | matched (95% CI) | pairwise impostor rate | stranger rate (95% CI) | own parent | "
          "membership AUC (95% CI) | near-copies | dup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in second.runs:
        print(f"| {r.run} | {r.n_images} | {100 * r.matched_share:.1f}% "
              f"[{100 * r.matched_ci[0]:.1f}, {100 * r.matched_ci[1]:.1f}]% | {100 * cal.impostor_rate:.2f}% | "
              f"{100 * r.stranger_rate:.1f}% [{100 * r.stranger_ci[0]:.1f}, {100 * r.stranger_ci[1]:.1f}]% | "
              f"{r.matched_own_parent} | {r.membership_auc:.3f} [{r.membership_ci[0]:.3f}, {r.membership_ci[1]:.3f}] | "
              f"{r.n_near_copies} | {r.n_duplicates} |")
    print("\nStrangers check (like for like):\n")
    print("\n".join(strangers_check(ws, second)))
    print(f"\naudit time: first {t_first:.1f}s ({1000 * t_first / n_syn:.1f}s per 1,000 synthetic images, "
          f"{second.n_real} real photos embedded too), cached {t_second:.1f}s ({1000 * t_second / n_syn:.1f}s per 1,000)")


if __name__ == "__main__":
    main()
