"""ORL faces (the Olivetti Research Laboratory database of faces, AT&T Laboratories Cambridge) for the simulated
conditions: the subset shipped with the package, and the full database read from its folder.

The package ships ``orl_faces/``: 40 people x 6 photos as 92 x 112 grey PNG (the original pixels), their 68 dlib
landmarks in ``faces.csv`` (computed once by ``tools/ship_orl_faces.py`` with :func:`landmark_faces`, so the demo
needs no face detection to build its dataset) and the database's README with its credit. ``faces.csv`` marks each
person's pool: ``condition`` (the people the demo's simulated conditions are drawn on) or ``donor`` (people kept out
of every condition, for uses that need faces of non-patients).

Faces are upscaled by :data:`DEMO_SCALE` (bicubic) before use: dlib's HOG detector finds the ORL faces at their own
size only with retries, and at twice the size at the first attempt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from phenosynth.demo.dataset import FacePhoto
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: Upscaling of the 92 x 112 ORL photos for the demo (to 184 x 224) and for landmark detection.
DEMO_SCALE = 2.0
#: Landmark columns of ``faces.csv``: x0, y0, x1, y1, ..., x67, y67 (pixels of the shipped 92 x 112 photo).
LANDMARK_COLUMNS = [f"{axis}{i}" for i in range(68) for axis in ("x", "y")]
POOLS = ("condition", "donor")

CREDIT = """\
The photos are from the ORL Database of Faces (now "The Database of Faces", AT&T Laboratories Cambridge), taken
between April 1992 and April 1994 at the Olivetti Research Laboratory in Cambridge, UK. They are used for research
with attribution, as the database asks: credit goes to the Olivetti Research Laboratory; the reference is
F. Samaria and A. Harter, "Parameterisation of a stochastic model for human face identification", 2nd IEEE Workshop
on Applications of Computer Vision, December 1994, Sarasota (Florida). The people shown are volunteers, not
patients; the conditions drawn on them are simulated."""


def shipped_dir() -> Path:
    """The folder of the ORL subset inside the installed package."""
    return Path(str(files("phenosynth.demo").joinpath("orl_faces")))


def scale_landmarks(landmarks: np.ndarray, scale: float) -> np.ndarray:
    """Landmarks of an image resized by ``scale`` (pixel centres map onto pixel centres, as in OpenCV)."""
    return (np.asarray(landmarks, dtype=np.float64) + 0.5) * scale - 0.5


def upscale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (bicubic), as RGB uint8."""
    import cv2

    rgb = np.dstack([image] * 3) if image.ndim == 2 else image
    if scale == 1:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def load_shipped_faces(pool: str | None = None, *, scale: float = DEMO_SCALE) -> list[FacePhoto]:
    """The shipped ORL photos (of ``pool``: ``condition`` or ``donor``; ``None``: all) upscaled by ``scale``, with
    their landmarks."""
    from PIL import Image

    if pool is not None and pool not in POOLS:
        raise PhenosynthError(f"Unknown ORL pool {pool!r}; valid: {', '.join(POOLS)}.")
    folder = shipped_dir()
    table = pd.read_csv(folder / "faces.csv")
    if pool is not None:
        table = table[table["pool"] == pool]
    out = []
    for row, lm in zip(table.itertuples(index=False), table[LANDMARK_COLUMNS].to_numpy(np.float64)):
        with Image.open(folder / row.file) as im:
            image = np.asarray(im.convert("L"))
        out.append(FacePhoto(upscale(image, scale), scale_landmarks(lm.reshape(68, 2), scale), row.person,
                             f"orl/{row.person}/{row.photo}"))
    return out


def person_id(folder_name: str) -> str:
    """``s7`` -> ``s07``: ORL folder names padded so that they sort in order."""
    return f"s{int(folder_name[1:]):02d}" if folder_name[1:].isdigit() else folder_name


def read_orl_folder(root: str | os.PathLike[str], people: Iterable[int] | None = None,
                    photos: Iterable[int] | None = None) -> list[tuple[str, int, np.ndarray]]:  # fmt: skip
    """``(person, photo, grey image)`` of the ORL database at ``root`` (``s1 .. s40``, ``1.pgm .. 10.pgm``).

    Raises:
        PhenosynthError: ``root`` is not an ORL folder.
    """
    from PIL import Image

    root = Path(root)
    people = list(range(1, 41) if people is None else people)
    photos = list(range(1, 11) if photos is None else photos)
    missing = [f"s{p}/{k}.pgm" for p in people for k in photos if not (root / f"s{p}" / f"{k}.pgm").is_file()]
    if missing:
        raise PhenosynthError(f"{root} is not the ORL database of faces (s1..s40/1..10.pgm): {len(missing)} files "
                              f"missing, e.g. {missing[0]}.")
    out = []
    for p in people:
        for k in photos:
            with Image.open(root / f"s{p}" / f"{k}.pgm") as im:
                out.append((person_id(f"s{p}"), k, np.asarray(im.convert("L"))))
    return out


LandmarkedPhoto = tuple[str, int, np.ndarray, np.ndarray]  # person, photo number, grey image, landmarks (68, 2)


def landmark_faces(images: Sequence[tuple[str, int, np.ndarray]], *,
                   detect_scale: float = DEMO_SCALE) -> tuple[list[LandmarkedPhoto], list[str]]:  # fmt: skip
    """dlib-hog + dlib68 landmarks of each ``(person, photo, image)``, found on the image upscaled by
    ``detect_scale`` and returned in the image's own pixels.

    Returns:
        ``(person, photo, image, landmarks (68, 2))`` of each image with a face, and ``person/photo`` of those
        without one.
    """
    from phenosynth.faces.detectors import create_detector, create_landmarker
    from phenosynth.faces.facepass import analyse_image

    detector, landmarker = create_detector("dlib-hog"), create_landmarker("dlib68")
    found, missed = [], []
    for person, photo, image in images:
        result = analyse_image(upscale(image, detect_scale), detector, landmarker)
        if result.landmarks is None:
            missed.append(f"{person}/{photo}")
            continue
        found.append((person, photo, image, scale_landmarks(result.landmarks, 1 / detect_scale)))
    if missed:
        log.info("no face found in %d ORL photos: %s", len(missed), ", ".join(missed))
    return found, missed


def orl_face_photos(root: str | os.PathLike[str], *, scale: float = DEMO_SCALE,
                    people: Iterable[int] | None = None) -> list[FacePhoto]:  # fmt: skip
    """Every photo of the ORL database at ``root`` in which a face is found, upscaled by ``scale``, with its
    dlib68 landmarks (detected on the upscaled photo)."""
    found, _ = landmark_faces(read_orl_folder(root, people), detect_scale=scale)
    return [FacePhoto(upscale(img, scale), scale_landmarks(lm, scale), person, f"orl/{person}/{photo}")
            for person, photo, img, lm in found]
