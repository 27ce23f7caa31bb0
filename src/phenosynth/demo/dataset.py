"""The embedded demo dataset: SIMULATED faces, so that every command runs on a fresh machine with no data.

Every image is the public-domain NASA portrait that scikit-image ships (``skimage.data.astronaut()``, Eileen
Collins), re-shaped by a piecewise-affine warp of its 68 landmarks. A simulated "condition" is a named combination of
craniofacial shape changes that dysmorphology describes (each with its HPO term); each simulated subject gets the
condition at a random strength plus an identity variation of their own (face proportions, skin tone), and each photo
a random pose and lighting. Nothing here is a real patient or a real syndrome.

Layout written by :func:`build_demo_dataset` (``out_dir``)::

    images/<condition>/<subject>_<k>.png     the photos (one sub-folder per simulated condition)
    demo_metadata.csv                          path,label,subject_id,age,sex   (paths relative to out_dir)
    ground_truth_landmarks.parquet             path + the 68 landmarks (x, y flattened) used to draw each image
    conditions.csv                             condition -> HPO term ids, names and the changes applied
    README.txt                                 what this is (SIMULATED) and where the portrait comes from

Ingest it with ``phenosynth ingest OUT/demo_metadata.csv -w WS``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
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

#: The portrait's crop (a square around the face) before resizing to the demo size.
_CROP_SIDE_IN_FACE_WIDTHS = 2.3

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

#: Simulated condition -> the changes it combines. Names are invented; no real syndrome is meant.
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
}

README = """\
phenosynth demo dataset — SIMULATED FACES, NOT REAL PATIENTS
===========================================================

Every image in this folder is SIMULATED. All of them are made from ONE public-domain photograph: the NASA portrait
of astronaut Eileen Collins that scikit-image ships as skimage.data.astronaut() (public domain, NASA). Its 68 facial
landmarks were found with dlib and moved by a piecewise-affine (Delaunay) warp.

A "condition" here (sim01 ... sim{n:02d}) is an invented combination of craniofacial shape changes that
dysmorphology describes (hypertelorism, slanted palpebral fissures, micrognathia, ...), listed with their HPO term ids
in conditions.csv. They are NOT real syndromes and say nothing about any real person or disorder. Each simulated
subject has the changes at a random strength plus identity variation (face proportions, skin tone); each photo has
random pose and lighting. Ages and sexes in demo_metadata.csv are random labels, not properties of the images.

Files: images/<condition>/<subject>_<k>.png, demo_metadata.csv (path,label,subject_id,age,sex),
ground_truth_landmarks.parquet (the 68 landmarks each image was drawn with, x/y flattened, in pixels),
conditions.csv. Built by phenosynth.demo.dataset.build_demo_dataset(seed={seed}): {n_images} images,
{n_conditions} conditions, {n_subjects} subjects.

Use: phenosynth ingest {root}/demo_metadata.csv -w WS
"""


@dataclass(frozen=True)
class DemoDataset:
    """Where :func:`build_demo_dataset` wrote things, and how much."""

    root: Path
    images_dir: Path
    metadata_csv: Path
    landmarks_path: Path
    conditions_csv: Path
    readme_path: Path
    n_images: int
    n_subjects: int
    conditions: tuple[str, ...]

    def metadata(self) -> pd.DataFrame:
        return pd.read_csv(self.metadata_csv)

    def landmarks(self) -> dict[str, np.ndarray]:
        """Relative image path -> its ``(68, 2)`` ground-truth landmarks."""
        df = pd.read_parquet(self.landmarks_path)
        return {p: np.asarray(v, dtype=np.float64).reshape(68, 2) for p, v in zip(df["path"], df["landmarks"])}


def base_portrait(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut portrait cropped square around the face and resized: ``(size, size, 3)`` uint8 and its 68
    dlib landmarks ``(68, 2)`` in that image (detected once per process, with dlib-hog + dlib68)."""
    img, lm = _base_portrait(size)
    return img.copy(), lm.copy()


@functools.lru_cache(maxsize=4)
def _base_portrait(size: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from skimage import data

    from phenosynth.faces.detectors import create_detector, create_landmarker

    full = data.astronaut()
    dets = create_detector("dlib-hog").detect(full, 1)
    if not dets:  # pragma: no cover - the portrait is a clear frontal face
        raise PhenosynthError("dlib found no face in skimage's astronaut portrait; is dlib installed correctly?")
    det = max(dets, key=lambda d: d.area)
    lm = create_landmarker("dlib68")(full, det)
    x0, y0, x1, y1 = det.box
    side = _CROP_SIDE_IN_FACE_WIDTHS * (x1 - x0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.05 * side
    cx0, cy0 = cx - side / 2, cy - side / 2
    s = size / side
    A = np.array([[s, 0, -cx0 * s], [0, s, -cy0 * s]])
    img = cv2.warpAffine(full, A, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
    return img, lm @ A[:, :2].T + A[:, 2]


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[_EYE_L].mean(0) - lm[_EYE_R].mean(0)))


def _identity(lm: np.ndarray, rng: np.random.Generator, iod: float) -> np.ndarray:
    """A subject's own face proportions: face width, eye size, nose length, mouth height, brow height."""
    out = lm.copy()
    c = lm[27:36].mean(0)
    out[:, 0] = c[0] + (out[:, 0] - c[0]) * (1 + rng.normal(0, 0.03))  # face width
    for sl in (_EYE_L, _EYE_R):
        ec = out[sl].mean(0)
        out[sl] = ec + (out[sl] - ec) * (1 + rng.normal(0, 0.06))  # eye size
    out[_NOSE_BASE, 1] += rng.normal(0, 0.03) * iod  # nose length
    out[_MOUTH, 1] += rng.normal(0, 0.025) * iod
    out[17:27, 1] += rng.normal(0, 0.03) * iod  # brows
    out[0:17] += rng.normal(0, 0.012 * iod, (17, 2))  # jaw line
    return out


def _render(base: np.ndarray, base_lm: np.ndarray, target: np.ndarray, rng: np.random.Generator,
            tint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Warp to ``target``, then a random pose (similarity) and lighting; returns image and its landmarks."""
    import cv2

    size = base.shape[0]
    img = warp_to_landmarks(base, base_lm, target)
    angle = rng.uniform(-7, 7)
    scale = rng.uniform(0.94, 1.06)
    A = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    A[:, 2] += rng.uniform(-0.03, 0.03, 2) * size
    img = cv2.warpAffine(img, A, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    lm = target @ A[:, :2].T + A[:, 2]
    # Lighting: overall gain, a directional gradient, gamma, the subject's tint, a little sensor noise.
    x = np.linspace(-0.5, 0.5, size)
    theta = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0, 0.35) * (np.cos(theta) * x[None, :] + np.sin(theta) * x[:, None])
    f = img.astype(np.float32) / 255.0
    f = f ** rng.uniform(0.85, 1.2)
    f = f * (rng.uniform(0.85, 1.12) * grad)[:, :, None] * tint[None, None, :]
    f = f + rng.normal(0, 0.008, f.shape).astype(np.float32)
    return (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8), lm


@dataclass(frozen=True)
class _Subject:
    """One simulated subject of the plan: condition, its changes, id and number of photos."""

    condition: str
    changes: tuple[str, ...]
    subject_id: str
    n_photos: int


def _check_out_dir(root: Path, conditions: dict[str, tuple[str, ...]], overwrite: bool) -> None:
    """Refuse unknown changes and an existing dataset (unless ``overwrite``, which removes its images)."""
    unknown = sorted({c for cs in conditions.values() for c in cs} - set(CHANGES))
    if unknown:
        raise PhenosynthError(f"Unknown craniofacial change(s) {unknown}. Valid: {', '.join(sorted(CHANGES))}.")
    if (root / "demo_metadata.csv").exists() and not overwrite:
        raise PhenosynthError(f"{root} already holds a demo dataset. Pick another folder or pass overwrite=True.")
    if (root / "images").exists() and overwrite:
        import shutil

        shutil.rmtree(root / "images")


def _plan(conditions: dict[str, tuple[str, ...]], n_subjects: int, max_photos: int,
          rng: np.random.Generator) -> list[_Subject]:
    """``n_subjects`` per condition, each with 1..``max_photos`` photos."""
    return [_Subject(cond, changes, f"{cond}-s{si + 1}", int(rng.integers(1, max_photos + 1)))
            for cond, changes in conditions.items() for si in range(n_subjects)]


def _draw_subject(root: Path, subject: _Subject, base: np.ndarray, base_lm: np.ndarray, iod: float,
                  srng: np.random.Generator) -> Iterator[tuple[dict, dict]]:
    """Write the photos of ``subject``, yielding each one's metadata row and landmark row."""
    from PIL import Image

    target = _identity(base_lm, srng, iod)
    strength = srng.uniform(0.7, 1.3)
    for key in subject.changes:
        target = CHANGES[key].apply(target, strength * srng.uniform(0.85, 1.15), iod)
    tint = np.clip(1 + srng.normal(0, 0.05, 3), 0.85, 1.15).astype(np.float32)
    age = round(float(srng.uniform(1.0, 16.0)), 1)
    sex = str(srng.choice(["F", "M"]))
    cond, sid = subject.condition, subject.subject_id
    (root / "images" / cond).mkdir(parents=True, exist_ok=True)
    for k in range(1, subject.n_photos + 1):
        img, lm = _render(base, base_lm, target, srng, tint)
        rel = f"images/{cond}/{sid}_{k}.png"
        Image.fromarray(img).save(root / rel, format="PNG", compress_level=1)
        yield ({"path": rel, "label": cond, "subject_id": sid, "age": age, "sex": sex},
               {"path": rel, "label": cond, "subject_id": sid, "strength": round(float(strength), 4),
                "landmarks": lm.ravel().tolist()})


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


def build_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_subjects: int = 5,
    max_photos: int = 2,
    size: int = 256,
    conditions: dict[str, tuple[str, ...]] | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> DemoDataset:
    """Write the simulated demo dataset to ``out_dir`` (see the module docstring) and describe it.

    Deterministic: the same ``seed`` (and options) gives byte-identical images and tables.

    Args:
        n_subjects: simulated subjects per condition; each gets 1..``max_photos`` photos.
        size: side of the square images in pixels.
        conditions: condition -> change keys (default :data:`CONDITIONS`; keys of :data:`CHANGES`).
        overwrite: replace an existing demo dataset in ``out_dir``.
    """
    root = Path(out_dir).expanduser().absolute()
    conditions = dict(CONDITIONS if conditions is None else conditions)
    _check_out_dir(root, conditions, overwrite)
    base, base_lm = base_portrait(size)
    iod = _iod(base_lm)
    rng = np.random.default_rng(seed)
    plan = _plan(conditions, n_subjects, max_photos, rng)
    total = sum(s.n_photos for s in plan)
    meta_rows, lm_rows = [], []
    report(on_progress, 0, total)
    for subject in plan:
        srng = np.random.default_rng(rng.integers(2**63))
        for meta, lm_row in _draw_subject(root, subject, base, base_lm, iod, srng):
            meta_rows.append(meta)
            lm_rows.append(lm_row)
            report(on_progress, len(meta_rows), total)
    lm_df = pd.DataFrame(lm_rows)
    atomic_write(root / "ground_truth_landmarks.parquet", lambda p: lm_df.to_parquet(p, index=False))
    atomic_write(root / "conditions.csv", lambda p: pd.DataFrame(_condition_rows(conditions)).to_csv(p, index=False))
    readme = README.format(n=len(conditions), seed=seed, n_images=total, n_conditions=len(conditions),
                           n_subjects=len(plan), root=root)  # fmt: skip
    (root / "README.txt").write_text(readme, encoding="utf-8")
    meta_path = root / "demo_metadata.csv"
    atomic_write(meta_path, lambda p: pd.DataFrame(meta_rows).to_csv(p, index=False))  # last: marks completion
    (root / "demo_params.json").write_text(
        json.dumps({"seed": seed, "n_subjects": n_subjects, "max_photos": max_photos, "size": size}, indent=1)
    )
    log.info("demo dataset: %d simulated images in %s", total, root)
    return DemoDataset(root=root, images_dir=root / "images", metadata_csv=meta_path,
                       landmarks_path=root / "ground_truth_landmarks.parquet", conditions_csv=root / "conditions.csv",
                       readme_path=root / "README.txt", n_images=total, n_subjects=len(plan),
                       conditions=tuple(conditions))
