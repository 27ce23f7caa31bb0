"""Write the ORL subset that ships with the package (src/phenosynth/demo/orl_faces/): photos, landmarks, README.

    .venv/bin/python tools/ship_orl_faces.py                      # from ../shared/data/orl-faces
    .venv/bin/python tools/ship_orl_faces.py --orl PATH --photos 6 --donors 8

For each of the 40 ORL people it keeps the first ``--photos`` photos (in file order 1.pgm, 2.pgm, ...) in which
dlib-hog finds a face on the photo upscaled 2x (phenosynth.demo.orl.DEMO_SCALE), and writes them as 92 x 112 grey PNG
(the original pixels, losslessly) with their dlib68 landmarks in faces.csv (in the PNG's pixels). The last
``--donors`` people (s33..s40 by default) are the donor pool, kept out of every simulated condition; the others are
the condition pool. The database's own README is copied next to them (its credit to the Olivetti Research
Laboratory). Run once; the output is committed. Deterministic: the same ORL files give the same bytes.

The ORL faces are © AT&T Laboratories Cambridge (the Olivetti Research Laboratory database of faces).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from phenosynth.demo.orl import DEMO_SCALE, LANDMARK_COLUMNS, landmark_faces, read_orl_folder

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "phenosynth" / "demo" / "orl_faces"

README = """\
ORL faces shipped with phenosynth (a subset of the ORL Database of Faces)
=========================================================================

Credit: AT&T Laboratories Cambridge / the Olivetti Research Laboratory, Cambridge, UK. "The ORL Database of Faces"
(now "The Database of Faces"), photos taken between April 1992 and April 1994. Research use with attribution, as
the database's own README (README.ORL.txt, copied unchanged) asks: "When using these images, please give credit to
Olivetti Research Laboratory." Reference: F. Samaria and A. Harter, "Parameterisation of a stochastic model for
human face identification", 2nd IEEE Workshop on Applications of Computer Vision, December 1994, Sarasota (Florida).

Contents: {n_photos} photos of {n_people} people (s01..s40; the first {per_person} photos of each in which dlib finds
a face), 92 x 112 grey PNG with the original pixels (images/<person>_<photo>.png, photo = the ORL file number).
faces.csv: file, person, photo, pool, and x0, y0, ..., x67, y67: the 68 dlib landmarks (iBUG 300-W order) in the
PNG's pixels, found by dlib-hog + dlib's 68-point shape predictor on the photo upscaled {scale:g}x (bicubic).
pool: "condition" ({n_condition} people: the simulated conditions of `phenosynth demo` are drawn on them) or "donor"
({n_donor} people: kept out of every condition; faces of non-patients for identity-free generators).

Produced by tools/ship_orl_faces.py (in the phenosynth repository) from the original PGM files. These people are
volunteers, not patients; phenosynth only ever shows them with SIMULATED conditions.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orl", type=Path, default=REPO.parent / "shared" / "data" / "orl-faces")
    ap.add_argument("--photos", type=int, default=6, help="photos per person")
    ap.add_argument("--donors", type=int, default=8, help="people of the donor pool (the last ones)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    found, missed = landmark_faces(read_orl_folder(a.orl), detect_scale=DEMO_SCALE)
    if a.out.exists():
        shutil.rmtree(a.out)
    (a.out / "images").mkdir(parents=True)
    people = sorted({person for person, *_ in found})
    donors = set(people[len(people) - a.donors:])
    rows, kept = [], {}
    for person, photo, image, lm in found:
        if kept.get(person, 0) >= a.photos:
            continue
        kept[person] = kept.get(person, 0) + 1
        rel = f"images/{person}_{photo:02d}.png"
        Image.fromarray(image).save(a.out / rel, format="PNG", optimize=True)
        pool = "donor" if person in donors else "condition"
        rows.append({"file": rel, "person": person, "photo": photo, "pool": pool,
                     **dict(zip(LANDMARK_COLUMNS, np.round(lm.ravel(), 2)))})
    pd.DataFrame(rows).to_csv(a.out / "faces.csv", index=False)
    shutil.copyfile(a.orl / "README", a.out / "README.ORL.txt")
    (a.out / "README.txt").write_text(README.format(
        n_photos=len(rows), n_people=len(people), per_person=a.photos, scale=DEMO_SCALE,
        n_condition=len(people) - len(donors), n_donor=len(donors)), encoding="utf-8")
    short = sorted(p for p in people if kept[p] < a.photos)
    print(f"{len(rows)} photos of {len(people)} people ({len(donors)} donors) in {a.out}; no face: {missed}; "
          f"people with fewer than {a.photos} photos: {short}")


if __name__ == "__main__":
    main()
