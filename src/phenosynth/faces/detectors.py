"""Face detectors and landmarkers, each a registry of small classes with one method.

Detectors (``detect(image, upsample) -> list[Detection]``):

- ``dlib-hog`` (default): dlib's HOG + linear SVM frontal face detector.
- ``dlib-cnn``: dlib's MMOD CNN detector (``mmod_human_face_detector.dat``); more robust to pose, slow on CPU.
- ``mtcnn``: MTCNN with the weights that ship inside the facenet-pytorch wheel; also returns 5 landmarks.

Landmarkers (``__call__(image, detection) -> (K, 2)``; every 5-point landmarker returns RetinaFace order: left eye,
right eye, nose, left mouth corner, right mouth corner, as seen in the image):

- ``dlib68`` (default): dlib's 68-point shape predictor (iBUG 300-W layout).
- ``dlib5``: dlib's 5-point shape predictor (eye corners + nose base), converted to the RetinaFace 5-point order
  with :func:`phenosynth.faces.landmarks.five_from_dlib5` (mouth corners estimated from the template).
- ``mtcnn5``: MTCNN's 5 points (RetinaFace order). Reuses the detector's points when the detector is ``mtcnn``,
  otherwise runs MTCNN on a crop around the box.

dlib model files come from the ``face-recognition-models`` package, located with importlib (its own helper needs
``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from phenosynth._optional import require
from phenosynth.errors import MissingDependencyError, MissingWeightsError
from phenosynth.faces.landmarks import five_from_dlib5, five_points
from phenosynth.registry import Registry

DEFAULT_DETECTOR = "dlib-hog"
DEFAULT_LANDMARKER = "dlib68"


@dataclass
class Detection:
    """One face: ``box`` ``(4,)`` as x0, y0, x1, y1 in pixels, a detector ``score``, and ``landmarks5``
    ``(5, 2)`` when the detector gives them (MTCNN)."""

    box: np.ndarray
    score: float
    landmarks5: np.ndarray | None = field(default=None)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Detection]:
        """``image`` ``(H, W, 3)`` uint8 RGB -> faces found."""
        ...


class Landmarker(Protocol):
    name: str
    n_points: int

    def __call__(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """``(K, 2)`` landmark positions (x, y) for the face in ``detection``."""
        ...

    def five(self, landmarks: np.ndarray) -> np.ndarray:
        """The RetinaFace-order 5 points ``(5, 2)`` from this landmarker's own points."""
        ...


DETECTORS: Registry[Detector] = Registry("face detector")
LANDMARKERS: Registry[Landmarker] = Registry("landmarker")


def list_detectors() -> list[str]:
    return DETECTORS.names()


def list_landmarkers() -> list[str]:
    return LANDMARKERS.names()


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> Detector:
    return DETECTORS.create(name, **kwargs)


def create_landmarker(name: str = DEFAULT_LANDMARKER, **kwargs: Any) -> Landmarker:
    return LANDMARKERS.create(name, **kwargs)


# --- dlib ----------------------------------------------------------------------------------------------------------
def _dlib() -> Any:
    return require("dlib", extra="faces", package="dlib-bin", purpose="face detection and landmarks")


def dlib_model_path(filename: str) -> Path:
    """Path of a dlib model file shipped by ``face-recognition-models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "The dlib model files are not installed (package 'face-recognition-models'). "
            "Install them with: pip install 'phenosynth[faces]'"
        )
    path = Path(spec.origin).parent / "models" / filename
    if not path.exists():
        raise MissingWeightsError(
            f"dlib model file {path} is missing; reinstall: pip install --force-reinstall face-recognition-models"
        )
    return path


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def _rect_box(r: Any) -> np.ndarray:
    return np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64)


@DETECTORS.register("dlib-hog")
class DlibHogDetector:
    """dlib's HOG frontal face detector. ``threshold`` is dlib's ``adjust_threshold`` (0 = dlib's default).

    ``grayscale`` (default): run HOG on the luminance instead of the colour channels — about 1.5x faster, identical
    on grayscale photos and practically so on colour ones (dlib takes the strongest channel gradient otherwise).
    """

    name = "dlib-hog"

    def __init__(self, threshold: float = 0.0, grayscale: bool = True) -> None:
        self.threshold = threshold
        self.grayscale = grayscale
        self._detector = _dlib().get_frontal_face_detector()

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Detection]:
        img = np.asarray(image)
        if self.grayscale and img.ndim == 3:
            import cv2

            img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        elif img.ndim == 3 or not self.grayscale:
            img = _rgb(img)
        rects, scores, _ = self._detector.run(np.ascontiguousarray(img, dtype=np.uint8), int(upsample), self.threshold)
        return [Detection(_rect_box(r), float(s)) for r, s in zip(rects, scores)]


@DETECTORS.register("dlib-cnn")
class DlibCnnDetector:
    """dlib's MMOD CNN face detector (slow on CPU; more robust to pose and scale)."""

    name = "dlib-cnn"

    def __init__(self) -> None:
        self._detector = _dlib().cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Detection]:
        dets = self._detector(_rgb(image), int(upsample))
        return [Detection(_rect_box(d.rect), float(d.confidence)) for d in dets]


def mtcnn_module() -> Any:
    """facenet-pytorch's MTCNN module, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        return require("facenet_pytorch.models.mtcnn", extra="faces", package="facenet-pytorch", purpose="MTCNN")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            "MTCNN needs facenet-pytorch. Install it without its outdated pins: pip install --no-deps facenet-pytorch"
        ) from exc


def _mtcnn(**kwargs: Any) -> Any:
    return mtcnn_module().MTCNN(keep_all=True, device="cpu", **kwargs)


@DETECTORS.register("mtcnn")
class MtcnnDetector:
    """MTCNN (facenet-pytorch, bundled weights); ``upsample`` enlarges the image 2**upsample times first."""

    name = "mtcnn"

    def __init__(self, min_face_size: int = 20, threshold: float | None = None) -> None:
        kw: dict[str, Any] = {"min_face_size": min_face_size}
        if threshold is not None:
            kw["thresholds"] = [0.6, 0.7, threshold]
        self._mtcnn = _mtcnn(**kw)

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Detection]:
        import cv2

        img = _rgb(image)
        scale = 2.0 ** max(int(upsample) - 1, 0)  # upsample=1 is MTCNN's native pyramid (it already goes down to 20 px)
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        boxes, probs, points = self._mtcnn.detect(img, landmarks=True)
        if boxes is None:
            return []
        return [
            Detection(np.asarray(b, dtype=np.float64) / scale, float(p), np.asarray(pt, dtype=np.float64) / scale)
            for b, p, pt in zip(boxes, probs, points)
        ]


@LANDMARKERS.register("dlib68")
class Dlib68Landmarker:
    """dlib's 68-point shape predictor."""

    name = "dlib68"
    n_points = 68

    def __init__(self) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))

    def __call__(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
        shape = self._predictor(_rgb(image), self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def five(self, landmarks: np.ndarray) -> np.ndarray:
        return five_points(landmarks)


@LANDMARKERS.register("dlib5")
class Dlib5Landmarker:
    """dlib's 5-point shape predictor, returned in RetinaFace order like every 5-point landmarker: eye centres
    (from dlib's eye corners), the nose (dlib's nose base) and mouth corners estimated from the template (dlib's
    5-point model has no mouth points; see :func:`phenosynth.faces.landmarks.five_from_dlib5`)."""

    name = "dlib5"
    n_points = 5

    def __init__(self) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))

    def raw(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """dlib's own 5 points ``(5, 2)``: image-right eye corners, image-left eye corners, nose base."""
        x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
        shape = self._predictor(_rgb(image), self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def __call__(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return five_from_dlib5(self.raw(image, detection))

    def five(self, landmarks: np.ndarray) -> np.ndarray:
        return np.asarray(landmarks, dtype=np.float64).reshape(5, 2)


@LANDMARKERS.register("mtcnn5")
class Mtcnn5Landmarker:
    """MTCNN's 5 points (eye centres, nose tip, mouth corners)."""

    name = "mtcnn5"
    n_points = 5

    def __init__(self) -> None:
        self._mtcnn = None

    def __call__(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        if detection.landmarks5 is not None:
            return np.asarray(detection.landmarks5, dtype=np.float64)
        if self._mtcnn is None:
            self._mtcnn = _mtcnn(min_face_size=20)
        img = _rgb(image)
        h, w = img.shape[:2]
        x0, y0, x1, y1 = detection.box
        m = 0.3 * max(x1 - x0, y1 - y0)
        cx0, cy0 = int(max(x0 - m, 0)), int(max(y0 - m, 0))
        cx1, cy1 = int(min(x1 + m, w)), int(min(y1 + m, h))
        boxes, _, points = self._mtcnn.detect(img[cy0:cy1, cx0:cx1], landmarks=True)
        if boxes is None:
            raise RuntimeError("MTCNN found no landmarks inside the detected face box")
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.asarray(points[int(np.argmax(areas))], dtype=np.float64) + [cx0, cy0]

    def five(self, landmarks: np.ndarray) -> np.ndarray:
        return np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
