"""Simulated conditions drawn on photos of real, different people (not patients), and the embedded demo dataset.

A simulated "condition" is a named, fixed combination of 2-4 craniofacial shape changes that dysmorphology describes
(each with its HPO term, :data:`CHANGES`, :data:`CONDITIONS`). :func:`simulate_conditions` draws each condition on
photos of several different people (identity is noise, as between patients with one syndrome): a piecewise-affine
warp moves each photo's 68 landmarks by the condition's changes, at a random strength per (person, condition), with a
random pose and lighting per photo. Nothing here is a real patient or a real syndrome.

:func:`build_demo_dataset` applies it to the ORL faces shipped with the package (:mod:`phenosynth.demo.orl`);
``benchmarks/phenotype_benchmark.py`` applies it to the whole ORL database. The folder it writes is described in
:func:`simulate_conditions`; ingest it with ``phenosynth ingest OUT/demo_metadata.csv -w WS``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenosynth.data.workspace import atomic_write
from phenosynth.errors import PhenosynthError
from phenosynth.faces.landmarks import DLIB68_LEFT_EYE, DLIB68_RIGHT_EYE
from phenosynth.faces.warp import warp_to_landmarks
from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)

#: The table of the donor pool in a dataset folder (path, subject_id, source): ``phenosynth ingest --donors`` reads it.
DONORS_CSV = "donors.csv"

# --- craniofacial changes ------------------------------------------------------------------------------------------
# Each change moves 68 dlib landmarks; amplitudes are in units of the inter-ocular distance (IOD) at strength 1.
_BROWS_L, _BROWS_R = slice(17, 22), slice(22, 27)
_EYE_L, _EYE_R = DLIB68_LEFT_EYE, DLIB68_RIGHT_EYE
_NOSE_BRIDGE, _NOSE_BASE = slice(27, 31), slice(31, 36)
_MOUTH = slice(48, 68)
_LOWER_JAW = slice(4, 13)


@dataclass(frozen=True)
class Change:
    """A craniofacial shape change with its HPO term."""

    key: str
    hpo_id: str
    hpo_name: str
    apply: Callable[[np.ndarray, float, float], np.ndarray]  # (landmarks (68, 2), strength, iod) -> new landmarks


def _eyes_apart(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    dx = 0.09 * iod * s
    for sl, sign in ((_EYE_L, -1), (_BROWS_L, -1), (_EYE_R, 1), (_BROWS_R, 1)):
        out[sl, 0] += sign * dx
    return out


def _slant(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    """Positive ``s``: outer corners up (upslanting)."""
    out = lm.copy()
    k = np.tan(np.deg2rad(9.0)) * s
    for sl, sign in ((_EYE_L, 1), (_EYE_R, -1)):
        c = lm[sl].mean(0)
        out[sl, 1] += sign * k * (lm[sl, 0] - c[0])
    return out


def _chin_back(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    mouth_c = lm[_MOUTH].mean(0)
    f = 1 - 0.22 * s
    jaw = lm[_LOWER_JAW]
    w = np.clip((jaw[:, 1] - mouth_c[1]) / max(np.ptp(jaw[:, 1]), 1e-6), 0, 1)[:, None]  # lower points move most
    target = mouth_c + (jaw - mouth_c) * [1 - 0.10 * s, f]
    out[_LOWER_JAW] = jaw * (1 - w) + target * w
    return out


def _long_philtrum(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    dy = 0.11 * iod * s
    out[_MOUTH, 1] += dy
    jaw_y = lm[_LOWER_JAW, 1]
    w = np.clip((jaw_y - lm[_MOUTH, 1].min()) / max(np.ptp(jaw_y), 1e-6), 0.3, 1.0)
    out[_LOWER_JAW, 1] += dy * w
    return out


def _mouth_width(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    c = lm[_MOUTH, 0].mean()
    out[_MOUTH, 0] = c + (lm[_MOUTH, 0] - c) * (1 + 0.25 * s)
    return out


def _midface_back(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    eye_y = lm[36:48, 1].mean()
    f = 1 - 0.12 * s
    for sl in (_NOSE_BRIDGE, _NOSE_BASE):
        out[sl, 1] = eye_y + (lm[sl, 1] - eye_y) * f
    out[_MOUTH, 1] -= 0.04 * iod * s
    cx = lm[27:36, 0].mean()
    for i in (1, 2, 3, 13, 14, 15):  # flat cheeks: the upper jaw line pulled in
        out[i, 0] = cx + (lm[i, 0] - cx) * (1 - 0.04 * s)
    return out


def _short_nose(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    top = lm[27, 1]
    f = 1 - 0.18 * s
    out[28:31, 1] = top + (lm[28:31, 1] - top) * f
    out[_NOSE_BASE, 1] -= (1 - f) * (lm[30, 1] - top)
    return out


def _nose_width(lm: np.ndarray, s: float, iod: float) -> np.ndarray:
    out = lm.copy()
    c = lm[33, 0]
    out[_NOSE_BASE, 0] = c + (lm[_NOSE_BASE, 0] - c) * (1 + 0.35 * s)
    return out


CHANGES: dict[str, Change] = {
    c.key: c
    for c in [
        Change("hypertelorism", "HP:0000316", "Hypertelorism", _eyes_apart),
        Change("hypotelorism", "HP:0000601", "Hypotelorism", lambda lm, s, d: _eyes_apart(lm, -0.8 * s, d)),
        Change("upslanted", "HP:0000582", "Upslanted palpebral fissure", _slant),
        Change("downslanted", "HP:0000494", "Downslanted palpebral fissures", lambda lm, s, d: _slant(lm, -s, d)),
        Change("micrognathia", "HP:0000347", "Micrognathia", _chin_back),
        Change("long-philtrum", "HP:0000343", "Long philtrum", _long_philtrum),
        Change("wide-mouth", "HP:0000154", "Wide mouth", _mouth_width),
        Change("narrow-mouth", "HP:0000160", "Narrow mouth", lambda lm, s, d: _mouth_width(lm, -0.8 * s, d)),
        Change("midface-retrusion", "HP:0011800", "Midface retrusion", _midface_back),
        Change("short-nose", "HP:0003196", "Short nose", _short_nose),
        Change("wide-nose", "HP:0000445", "Wide nose", _nose_width),
    ]
}

#: Simulated condition -> the changes it combines (2-4 each). Names are invented; no real syndrome is meant.
CONDITIONS: dict[str, tuple[str, ...]] = {
    "sim01": ("hypertelorism", "downslanted", "wide-nose"),
    "sim02": ("hypertelorism", "short-nose", "long-philtrum"),
    "sim03": ("upslanted", "midface-retrusion", "short-nose"),
    "sim04": ("upslanted", "wide-mouth"),
    "sim05": ("downslanted", "micrognathia"),
    "sim06": ("micrognathia", "narrow-mouth"),
    "sim07": ("long-philtrum", "wide-mouth", "midface-retrusion"),
    "sim08": ("hypotelorism", "narrow-mouth"),
    "sim09": ("hypotelorism", "long-philtrum", "upslanted"),
    "sim10": ("wide-nose", "wide-mouth", "micrognathia"),
    "sim11": ("short-nose", "downslanted", "narrow-mouth"),
    "sim12": ("midface-retrusion", "hypertelorism", "micrognathia"),
    "sim13": ("hypertelorism", "upslanted"),
    "sim14": ("hypotelorism", "downslanted", "wide-nose"),
    "sim15": ("wide-nose", "short-nose"),
    "sim16": ("long-philtrum", "narrow-mouth"),
    "sim17": ("midface-retrusion", "downslanted"),
    "sim18": ("hypotelorism", "wide-mouth", "short-nose"),
    "sim19": ("hypertelorism", "wide-nose", "wide-mouth", "long-philtrum"),
    "sim20": ("upslanted", "micrognathia", "wide-nose"),
    "sim21": ("downslanted", "long-philtrum", "midface-retrusion", "wide-nose"),
    "sim22": ("upslanted", "narrow-mouth", "micrognathia"),
    "sim23": ("hypertelorism", "micrognathia", "long-philtrum", "short-nose"),
    "sim24": ("wide-mouth", "downslanted"),
}

README = """\
phenosynth simulated-conditions dataset — SIMULATED CONDITIONS, NOT REAL PATIENTS
=================================================================================

The faces in this folder are photos of real people who are NOT patients, each re-shaped by a piecewise-affine
(Delaunay) warp of its 68 facial landmarks (found with dlib) to show a SIMULATED condition.

{credit}

A "condition" here (sim01 ... ) is an invented combination of 2-4 craniofacial shape changes that dysmorphology
describes (hypertelorism, slanted palpebral fissures, micrognathia, ...), listed with their HPO term ids in
conditions.csv. They are NOT real syndromes and say nothing about any real person or disorder. Each condition is
shown on {per_condition} different people, so identity varies within a condition as it does between patients with one
syndrome; a person may show several conditions (on different photos), and subject_id is the person, so a split keeps
all of a person's photos on one side. Each (person, condition) has the changes at its own random strength; each photo
has a random pose and lighting.

Files: images/<condition>/<person>_<k>.png, demo_metadata.csv (path,label,subject_id),
ground_truth_landmarks.parquet (path, label, subject_id, source photo, strength and the 68 landmarks each image was
drawn with, x/y flattened, in pixels), conditions.csv{donor_files}. Built with seed={seed}: {n_images} images,
{n_conditions} conditions, {n_subjects} people{donor_count}.

Use: phenosynth ingest {root}/demo_metadata.csv -w WS
"""


@dataclass(frozen=True)
class FacePhoto:
    """A photo of a real person (not a patient) that a simulated condition can be drawn on."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) dlib68 landmarks (x, y) in ``image`` pixels
    person: str  # who it shows: the subject_id of every image drawn from it
    source: str  # where it came from (a file name), recorded in the ground-truth table


@dataclass(frozen=True)
class DemoDataset:
    """Where :func:`simulate_conditions` wrote things, and how much."""

    root: Path
    images_dir: Path
    metadata_csv: Path
    landmarks_path: Path
    conditions_csv: Path
    readme_path: Path
    n_images: int
    n_subjects: int
    conditions: tuple[str, ...]
    donors_csv: Path | None = None
    n_donor_photos: int = 0

    def metadata(self) -> pd.DataFrame:
        return pd.read_csv(self.metadata_csv)

    def landmarks(self) -> dict[str, np.ndarray]:
        """Relative image path -> its ``(68, 2)`` ground-truth landmarks."""
        df = pd.read_parquet(self.landmarks_path)
        return {p: np.asarray(v, dtype=np.float64).reshape(68, 2) for p, v in zip(df["path"], df["landmarks"])}


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[_EYE_L].mean(0) - lm[_EYE_R].mean(0)))


def _render(photo: np.ndarray, photo_lm: np.ndarray, target: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Warp to ``target``, then a random pose (similarity) and lighting; returns image and its landmarks."""
    import cv2

    h, w = photo.shape[:2]
    img = warp_to_landmarks(photo, photo_lm, target)
    angle = rng.uniform(-7, 7)
    scale = rng.uniform(0.94, 1.06)
    A = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    A[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
    img = cv2.warpAffine(img, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    lm = target @ A[:, :2].T + A[:, 2]
    # Lighting: overall gain, a directional gradient, gamma, a little sensor noise.
    theta = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(0, 0.35)
    x, y = np.linspace(-0.5, 0.5, w)[None, :], np.linspace(-0.5, 0.5, h)[:, None]
    grad = 1 + slope * (np.cos(theta) * x + np.sin(theta) * y)
    f = img.astype(np.float32) / 255.0
    f = f ** rng.uniform(0.85, 1.2)
    f = f * (rng.uniform(0.85, 1.12) * grad)[:, :, None]
    f = f + rng.normal(0, 0.008, f.shape).astype(np.float32)
    return (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8), lm


@dataclass(frozen=True)
class Subject:
    """One simulated patient: a person showing a condition on some of their photos (indices into the photo list)."""

    condition: str
    changes: tuple[str, ...]
    person: str
    photos: tuple[int, ...]


def assign_people(photos: Sequence[FacePhoto], conditions: dict[str, tuple[str, ...]], *, n_subjects: int,
                  max_photos: int, rng: np.random.Generator) -> list[Subject]:  # fmt: skip
    """Give each condition ``n_subjects`` different people, each on 1..``max_photos`` of their own photos.

    No photo is used twice. People are drawn so that they show about as many conditions each (with P people,
    ``len(conditions) * n_subjects / P`` each, give or take one): the people with the fewest conditions so far first,
    then those with the most unused photos, ties broken at random. Pure: the same ``rng`` state gives the same plan.

    Raises:
        PhenosynthError: too few people, or too few unused photos left for a condition.
    """
    order: dict[str, list[int]] = {}
    for i, ph in enumerate(photos):
        order.setdefault(ph.person, []).append(i)
    if len(order) < n_subjects:
        raise PhenosynthError(f"{n_subjects} people per condition need at least {n_subjects} people; "
                              f"the photos show {len(order)}.")
    unused = {p: [idx[j] for j in rng.permutation(len(idx))] for p, idx in order.items()}
    n_conditions = dict.fromkeys(order, 0)
    plan = []
    for cond, changes in conditions.items():
        counts = sorted(int(c) for c in rng.integers(1, max_photos + 1, n_subjects))[::-1]
        tiebreak = dict(zip(unused, rng.random(len(unused))))
        people = sorted(unused, key=lambda p: (n_conditions[p], -len(unused[p]), tiebreak[p]))
        chosen: list[Subject] = []
        for count in counts:
            person = next((p for p in people if len(unused[p]) >= count), None)
            if person is None:
                total = sum(len(v) for v in unused.values())
                raise PhenosynthError(
                    f"Not enough photos for condition {cond}: {n_subjects} people with up to {max_photos} unused "
                    f"photos each are needed; {total} unused photos are left. Give more photos or people, fewer "
                    "conditions, or a smaller n_subjects / max_photos.")
            people.remove(person)
            n_conditions[person] += 1
            chosen.append(Subject(cond, tuple(changes), person, tuple(unused[person][:count])))
            unused[person] = unused[person][count:]
        plan.extend(sorted(chosen, key=lambda s: s.person))
    return plan


def yaw_asymmetry(landmarks: np.ndarray) -> float:
    """How far a face is turned left or right, from its 68 landmarks: ``|d0 - d16| / (d0 + d16)`` with ``d0``, ``d16``
    the distances from the nose tip (30) to the two ends of the jaw line (0, 16); 0 for a frontal face.

    >>> lm = np.zeros((68, 2)); lm[0], lm[16], lm[30] = (-1, 0), (1, 0), (0, 0.5)
    >>> yaw_asymmetry(lm)
    0.0
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    d0, d16 = np.linalg.norm(lm[30] - lm[0]), np.linalg.norm(lm[30] - lm[16])
    return float(abs(d0 - d16) / (d0 + d16))


def most_frontal(photos: Sequence[FacePhoto], per_person: int) -> list[FacePhoto]:
    """The ``per_person`` photos of each person with the smallest :func:`yaw_asymmetry` (ties: the earlier photo),
    people in their first-seen order. Head turns move the landmarks more than a simulated change does, so the demo
    draws its conditions on the most frontal photos."""
    by_person: dict[str, list[FacePhoto]] = {}
    for ph in photos:
        by_person.setdefault(ph.person, []).append(ph)
    return [ph for group in by_person.values()
            for ph in sorted(group, key=lambda p: yaw_asymmetry(p.landmarks))[:per_person]]


def _check_out_dir(root: Path, conditions: dict[str, tuple[str, ...]], overwrite: bool) -> None:
    """Refuse unknown changes and an existing dataset (unless ``overwrite``, which removes its images)."""
    unknown = sorted({c for cs in conditions.values() for c in cs} - set(CHANGES))
    if unknown:
        raise PhenosynthError(f"Unknown craniofacial change(s) {unknown}. Valid: {', '.join(sorted(CHANGES))}.")
    if (root / "demo_metadata.csv").exists() and not overwrite:
        raise PhenosynthError(f"{root} already holds a demo dataset. Pick another folder or pass overwrite=True.")
    if overwrite:
        import shutil

        for folder in ("images", "donors"):
            if (root / folder).exists():
                shutil.rmtree(root / folder)


def _draw_subject(root: Path, subject: Subject, photos: Sequence[FacePhoto], srng: np.random.Generator,
                  strength_scale: float) -> Iterator[tuple[dict, dict]]:  # fmt: skip
    """Write the photos of ``subject``, yielding each one's metadata row and ground-truth row."""
    from PIL import Image

    strength = srng.uniform(0.7, 1.3) * strength_scale
    jitter = {key: srng.uniform(0.85, 1.15) for key in subject.changes}
    cond = subject.condition
    (root / "images" / cond).mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(subject.photos, start=1):
        photo = photos[i]
        iod = _iod(photo.landmarks)
        target = photo.landmarks
        for key in subject.changes:
            target = CHANGES[key].apply(target, strength * jitter[key], iod)
        img, lm = _render(photo.image, photo.landmarks, target, srng)
        rel = f"images/{cond}/{subject.person}_{k}.png"
        Image.fromarray(img).save(root / rel, format="PNG", compress_level=1)
        yield ({"path": rel, "label": cond, "subject_id": subject.person},
               {"path": rel, "label": cond, "subject_id": subject.person, "source": photo.source,
                "strength": round(float(strength), 4), "landmarks": lm.ravel().tolist()})


def _write_donors(root: Path, donors: Sequence[FacePhoto]) -> Path:
    """The donor photos as they are (no condition), in ``donors/``, listed in ``donors.csv`` (path, subject_id)."""
    from PIL import Image

    (root / "donors").mkdir(parents=True, exist_ok=True)
    rows, seen = [], {}
    for ph in donors:
        seen[ph.person] = seen.get(ph.person, 0) + 1
        rel = f"donors/{ph.person}_{seen[ph.person]}.png"
        Image.fromarray(ph.image).save(root / rel, format="PNG", compress_level=1)
        rows.append({"path": rel, "subject_id": ph.person, "source": ph.source})
    atomic_write(root / DONORS_CSV, lambda p: pd.DataFrame(rows).to_csv(p, index=False))
    return root / DONORS_CSV


def _condition_rows(conditions: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """conditions.csv: each condition's HPO terms and changes."""
    return [
        {
            "condition": cond,
            "hpo_ids": ";".join(CHANGES[c].hpo_id for c in changes),
            "hpo_names": ";".join(CHANGES[c].hpo_name for c in changes),
            "changes": ";".join(changes),
            "description": f"SIMULATED condition: {', '.join(CHANGES[c].hpo_name.lower() for c in changes)}",
        }
        for cond, changes in conditions.items()
    ]


def simulate_conditions(
    photos: Sequence[FacePhoto],
    out_dir: str | Path,
    *,
    credit: str,
    seed: int = 0,
    n_subjects: int = 4,
    max_photos: int = 1,
    strength: float = 1.0,
    conditions: dict[str, tuple[str, ...]] | None = None,
    donors: Sequence[FacePhoto] = (),
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> DemoDataset:
    """Draw simulated conditions on photos of different people and write an ingestable folder to ``out_dir``.

    Each condition (its fixed craniofacial changes) goes to ``n_subjects`` different people
    (:func:`assign_people`), each on 1..``max_photos`` of their photos, at a random strength per (person,
    condition); each photo gets a random pose and lighting. The layout::

        images/<condition>/<person>_<k>.png   the photos (one sub-folder per simulated condition)
        demo_metadata.csv                      path,label,subject_id (subject_id: the person)
        ground_truth_landmarks.parquet         path,label,subject_id,source,strength + the landmarks drawn
        conditions.csv                         condition -> HPO term ids, names and the changes applied
        donors/<person>_<k>.png, donors.csv    ``donors`` as they are: people kept out of every condition
        README.txt                             what this is (SIMULATED) and ``credit`` for the photos

    Deterministic: the same photos, ``seed`` and options give byte-identical images and tables.

    Args:
        photos: the people's photos (RGB uint8 with their dlib68 landmarks).
        credit: a paragraph for README.txt naming where the photos come from and their terms of use.
        strength: scales every change (each (person, condition) draws its strength from U(0.7, 1.3) x ``strength``).
        conditions: condition -> change keys (default :data:`CONDITIONS`; keys of :data:`CHANGES`).
        donors: photos of people who must not show any condition (e.g. identities for identity-free generators).
        overwrite: replace an existing dataset in ``out_dir``.
    """
    root = Path(out_dir).expanduser().absolute()
    conditions = dict(CONDITIONS if conditions is None else conditions)
    _check_out_dir(root, conditions, overwrite)
    both = sorted({p.person for p in photos} & {d.person for d in donors})
    if both:
        raise PhenosynthError(f"Donors must not show a condition, but {both[:5]} are among both photos and donors.")
    if not strength > 0:
        raise PhenosynthError(f"strength must be positive, got {strength}.")
    rng = np.random.default_rng(seed)
    plan = assign_people(photos, conditions, n_subjects=n_subjects, max_photos=max_photos, rng=rng)
    total = sum(len(s.photos) for s in plan)
    meta_rows, lm_rows = [], []
    report(on_progress, 0, total)
    for subject in plan:
        srng = np.random.default_rng(rng.integers(2**63))
        for meta, lm_row in _draw_subject(root, subject, photos, srng, strength):
            meta_rows.append(meta)
            lm_rows.append(lm_row)
            report(on_progress, len(meta_rows), total)
    lm_df = pd.DataFrame(lm_rows)
    atomic_write(root / "ground_truth_landmarks.parquet", lambda p: lm_df.to_parquet(p, index=False))
    atomic_write(root / "conditions.csv", lambda p: pd.DataFrame(_condition_rows(conditions)).to_csv(p, index=False))
    donors_csv = _write_donors(root, donors) if donors else None
    n_people = len({s.person for s in plan})
    readme = README.format(
        credit=credit, per_condition=n_subjects, seed=seed, n_images=total, n_conditions=len(conditions),
        n_subjects=n_people, root=root,
        donor_files=", donors/ and donors.csv (people kept out of every condition, photos unchanged)" if donors else "",
        donor_count=f"; {len(donors)} donor photos of {len({d.person for d in donors})} other people" if donors else "",
    )
    (root / "README.txt").write_text(readme, encoding="utf-8")
    meta_path = root / "demo_metadata.csv"
    atomic_write(meta_path, lambda p: pd.DataFrame(meta_rows).to_csv(p, index=False))  # last: marks completion
    (root / "demo_params.json").write_text(json.dumps(
        {"seed": seed, "n_subjects": n_subjects, "max_photos": max_photos, "strength": strength,
         "conditions": conditions}, indent=1))
    log.info("simulated conditions: %d images of %d people in %s", total, n_people, root)
    return DemoDataset(root=root, images_dir=root / "images", metadata_csv=meta_path,
                       landmarks_path=root / "ground_truth_landmarks.parquet", conditions_csv=root / "conditions.csv",
                       readme_path=root / "README.txt", n_images=total, n_subjects=n_people,
                       conditions=tuple(conditions), donors_csv=donors_csv, n_donor_photos=len(donors))


#: The demo's condition strength and photos per person (the most frontal of the 6 shipped), chosen by a shape68
#: real-only check (docs/ARCHITECTURE.md, "The demo"): at strength 1 on all 6 photos top-1 was 8.8 % (chance 4 %).
DEMO_STRENGTH = 1.5
DEMO_PHOTOS_PER_PERSON = 5


def build_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_subjects: int = 4,
    max_photos: int = 2,
    strength: float = DEMO_STRENGTH,
    photos_per_person: int = DEMO_PHOTOS_PER_PERSON,
    conditions: dict[str, tuple[str, ...]] | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> DemoDataset:
    """The demo dataset: :func:`simulate_conditions` on the ORL faces shipped with the package
    (:mod:`phenosynth.demo.orl`), its condition pool showing the conditions and its donor pool written as donors.

    Args:
        n_subjects: different people per condition; each on 1..``max_photos`` photos.
        strength: scales every change (see :func:`simulate_conditions`).
        photos_per_person: the conditions are drawn on each person's ``photos_per_person`` most frontal photos
            (:func:`most_frontal`); the donors keep all of theirs.
        conditions: condition -> change keys (default :data:`CONDITIONS`).
        overwrite: replace an existing demo dataset in ``out_dir``.
    """
    from phenosynth.demo.orl import CREDIT, DEMO_SCALE, load_shipped_faces

    photos = most_frontal(load_shipped_faces("condition", scale=DEMO_SCALE), photos_per_person)
    return simulate_conditions(
        photos, out_dir, credit=CREDIT, seed=seed, n_subjects=n_subjects, max_photos=max_photos, strength=strength,
        conditions=conditions, donors=load_shipped_faces("donor", scale=DEMO_SCALE), overwrite=overwrite,
        on_progress=on_progress)
