"""Benchmark data with phenotypes: simulated conditions drawn on the whole ORL database (issue 12, item 4).

ORL (AT&T / Olivetti Research Laboratory, 40 people x 10 photos, ``../shared/data/orl-faces``) has people but no
conditions. This script gives it some: each of the demo's simulated conditions (phenosynth.demo.dataset.CONDITIONS,
24 fixed combinations of 2-4 HPO-coded craniofacial shape changes) is drawn on photos of ``--per-condition``
different ORL people (4 by default, one photo each: identity is noise, as between patients with one syndrome), with
the library function the demo uses (phenosynth.demo.dataset.simulate_conditions): a strength per (person,
condition), a pose and lighting per photo, no photo used twice. A person shows 2-3 conditions (on different photos);
``subject_id`` is the person, so a subject-grouped split holds whole people out.

Photos are upscaled 2x (``--scale``) and their 68 landmarks found with dlib-hog + dlib68 (phenosynth.demo.orl);
the photos without a face are left out. ``--donors K`` keeps the last K people (s33..s40 for K=8) out of every
condition and writes their photos, unchanged, to ``OUT/donors`` (``donors.csv``: path, subject_id) for generators
that need faces of non-patients.

    .venv/bin/python benchmarks/phenotype_benchmark.py --out /tmp/phenotype-bench [--donors 8] [--orl PATH]
    phenosynth ingest /tmp/phenotype-bench/demo_metadata.csv -w WS     # then split, faces, generate, study ...

Writes the folder described in simulate_conditions (images/<condition>/<person>_<k>.png, demo_metadata.csv,
ground_truth_landmarks.parquet, conditions.csv, README.txt) and prints what it wrote.
The ORL faces are © AT&T Laboratories Cambridge (the Olivetti Research Laboratory database of faces).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "orl-faces").resolve()


def build_phenotype_benchmark(out: Path, orl: Path = DEFAULT_DATA, *, seed: int = 0, per_condition: int = 4,
                              max_photos: int = 1, strength: float = 1.0, donors: int = 0, scale: float = 2.0,
                              overwrite: bool = False, photos: list | None = None):
    """Draw every simulated condition on the ORL people at ``orl``; returns the
    :class:`~phenosynth.demo.dataset.DemoDataset` written to ``out``. ``photos``: the result of
    ``orl_face_photos(orl, scale=scale)`` when the caller has it already (it is the slow part)."""
    from phenosynth.demo.dataset import simulate_conditions
    from phenosynth.demo.orl import CREDIT, orl_face_photos

    photos = orl_face_photos(orl, scale=scale) if photos is None else photos
    people = sorted({p.person for p in photos})
    donor_people = set(people[len(people) - donors:]) if donors else set()
    return simulate_conditions(
        [p for p in photos if p.person not in donor_people], out, credit=CREDIT, seed=seed, n_subjects=per_condition,
        max_photos=max_photos, strength=strength, donors=[p for p in photos if p.person in donor_people],
        overwrite=overwrite)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--orl", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-condition", type=int, default=4, help="different people per condition")
    ap.add_argument("--max-photos", type=int, default=1, help="photos per (person, condition): 1..this")
    ap.add_argument("--strength", type=float, default=1.0, help="scales every shape change")
    ap.add_argument("--donors", type=int, default=0, help="people kept out of every condition (the last ones)")
    ap.add_argument("--scale", type=float, default=2.0, help="upscaling of the 92 x 112 ORL photos")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    ds = build_phenotype_benchmark(a.out, a.orl, seed=a.seed, per_condition=a.per_condition,
                                   max_photos=a.max_photos, strength=a.strength, donors=a.donors, scale=a.scale,
                                   overwrite=a.overwrite)
    meta = ds.metadata()
    per_person = meta.groupby("subject_id")["label"].nunique()
    print(f"{ds.n_images} images, {len(ds.conditions)} conditions x {a.per_condition} people, {ds.n_subjects} people "
          f"(conditions per person {per_person.min()}-{per_person.max()}), {ds.n_donor_photos} donor photos; "
          f"{time.perf_counter() - t0:.1f} s\nIngest: phenosynth ingest {ds.metadata_csv} -w WS")


if __name__ == "__main__":
    main()
