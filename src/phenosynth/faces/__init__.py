"""The face stage: detectors + landmarkers (registries), the face pass (``faces.parquet``), alignment and the crop
cache, landmark representations (registry), and piecewise-affine warping."""

from phenosynth.faces.warp import warp_to_landmarks
from phenosynth.faces.landmarks import five_from_68, five_points, order_is_sane
from phenosynth.faces.representations import (
    REPRESENTATIONS,
    class_prototypes,
    cosine_similarity_to,
    list_representations,
    represent,
)

__all__ = [
    "REPRESENTATIONS",
    "class_prototypes",
    "cosine_similarity_to",
    "five_from_68",
    "five_points",
    "list_representations",
    "order_is_sane",
    "represent",
    "warp_to_landmarks",
]


def __getattr__(name: str):  # lazy: the face pass pulls in pandas/dlib only when used
    if name in {"run_face_pass", "load_faces", "face_exclusions", "resolve_face_settings", "FaceSettingsError",
                "FacePassSummary"}:
        from phenosynth.faces import facepass

        return getattr(facepass, name)
    if name in {"ensure_aligned_crops", "align_face"}:
        from phenosynth.faces import align

        return getattr(align, name)
    if name in {"create_detector", "create_landmarker", "list_detectors", "list_landmarkers"}:
        from phenosynth.faces import detectors

        return getattr(detectors, name)
    raise AttributeError(name)
