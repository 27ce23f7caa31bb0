"""``phenosynth rank``: score every synthetic image by how much it looks like its condition (RDFace's filter).

For a representation (``rdface25``, ``shape68`` — landmark based — or ``embed:BACKBONE``, a backbone's image
embedding), the prototype of each condition is the mean vector of its **real training** images (never test images,
never synthetic ones). A synthetic image's ``rank_score`` is the cosine similarity of its vector to its own
condition's prototype; ``own_class_rank`` is the rank of its own condition among all prototypes (1 = the nearest),
for context. Results go to ``WS/ranking.parquet`` with columns ``image_id, representation, rank_score,
own_class_rank``; ranking again with the same representation replaces that representation's rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenosynth.data.manifest import require_real_train, synthetic
from phenosynth.data.workspace import Workspace, locks_workspace
from phenosynth.errors import PhenosynthError
from phenosynth.progress import ProgressCallback, report
from phenosynth.synth.ranking_table import save_ranking

log = logging.getLogger(__name__)

LANDMARK_REPRESENTATIONS = ("rdface25", "shape68")


@dataclass
class RankSummary:
    """What ``rank`` did (the CLI prints it)."""

    representation: str
    ranked: int
    not_ranked: dict[str, int]  # reason -> count
    classes: int
    mean_score: float
    median_score: float
    own_class_top1: float  # share of ranked images whose own condition's prototype is the nearest
    per_class_mean: dict[str, float] = field(default_factory=dict)
    path: str = ""
    seconds: float = 0.0


# --- pure core ------------------------------------------------------------------------------------------------------


def rank_scores(
    X_real: np.ndarray, real_labels: Sequence[str], X_synth: np.ndarray, synth_labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine to own-class prototype and own-class rank.

    Args:
        X_real: ``(N, d)`` vectors of real training images; real_labels: ``(N,)``.
        X_synth: ``(M, d)`` vectors of synthetic images; synth_labels: ``(M,)``, each a class of ``real_labels``.

    Returns:
        rank_score ``(M,)`` float, own_class_rank ``(M,)`` int (1 + number of prototypes strictly more similar).

    >>> s, r = rank_scores(np.array([[1.0, 0], [0, 1]]), ["a", "b"], np.array([[1.0, 0.2], [1.0, 0.1]]), ["a", "b"])
    >>> s.round(3).tolist(), r.tolist()
    ([0.981, 0.1], [1, 2])
    """
    from phenosynth.faces.representations import class_prototypes, cosine_similarity_to

    classes, P = class_prototypes(X_real, [str(v) for v in real_labels])
    col = {c: k for k, c in enumerate(classes)}
    missing = sorted({str(v) for v in synth_labels} - set(col))
    if missing:
        raise ValueError(f"no real training prototype for class(es) {missing[:5]}")
    idx = np.array([col[str(v)] for v in synth_labels], dtype=int)
    S = cosine_similarity_to(X_synth, P)  # (M, C)
    own = S[np.arange(len(idx)), idx] if len(idx) else np.zeros(0)
    ranks = 1 + (S > own[:, None]).sum(axis=1) if len(idx) else np.zeros(0, dtype=int)
    return own.astype(np.float64), ranks.astype(int)


# --- vectors from the workspace ------------------------------------------------------------------------------------


def _landmark_vectors(
    ws: Workspace, image_ids: list[str], representation: str, faces: pd.DataFrame | None,
    detector: str | None = None, landmarker: str | None = None,
) -> tuple[list[str], np.ndarray]:
    from phenosynth.faces.representations import represent

    if faces is None:
        from phenosynth.faces.facepass import load_faces

        faces = load_faces(ws, detector, landmarker)
    have = [i for i in image_ids if i in faces.index]
    if not have:
        return [], np.zeros((0, 0))
    sub = faces.loc[have]
    from phenosynth.faces.facepass import face_boxes, face_landmarks

    lm, boxes = face_landmarks(sub).astype(np.float64), face_boxes(sub)
    try:
        X = represent(representation, lm, boxes)
    except ValueError as exc:
        raise PhenosynthError(
            f"Cannot compute '{representation}' from the stored landmarks ({exc}). For shape68 run the face pass "
            f"with 68-point landmarks: phenosynth faces -w {ws.root} --landmarks dlib68"
        ) from None
    return have, X


def check_representation(representation: str) -> str:
    """Return ``representation`` if it is ``rdface25``, ``shape68`` or ``embed:BACKBONE``; raise a PhenosynthError
    naming the valid ones otherwise (before any work starts)."""
    if representation in LANDMARK_REPRESENTATIONS:
        return representation
    if representation.startswith("embed:"):
        if not representation.split(":", 1)[1]:
            raise PhenosynthError("Name a backbone after 'embed:', e.g. --representation embed:mobilenet_v2")
        return representation
    raise PhenosynthError(
        f"Unknown representation '{representation}'. Valid: {', '.join(LANDMARK_REPRESENTATIONS)}, embed:BACKBONE."
    )


def representation_vectors(
    ws: Workspace,
    image_ids: Sequence[str],
    representation: str,
    *,
    faces: pd.DataFrame | None = None,
    detector: str | None = None,
    landmarker: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(kept_ids, X (N, d))`` for ``image_ids`` under ``representation``; images without a face (or without an
    embedding) are left out, the order otherwise follows ``image_ids``. Faces (landmarks, or the aligned crops of
    ``embed:``) are those of ``detector``/``landmarker`` (``None``: see
    :func:`phenosynth.faces.facepass.resolve_face_settings`)."""
    ids = [str(i) for i in image_ids]
    check_representation(representation)
    if representation in LANDMARK_REPRESENTATIONS:
        return _landmark_vectors(ws, ids, representation, faces, detector, landmarker)
    from phenosynth.models.features import extract_features

    kept, X = extract_features(ws, representation.split(":", 1)[1], ids, weights="default", detector=detector,
                               landmarker=landmarker, on_progress=on_progress)
    return list(kept), np.asarray(X, dtype=np.float64)


def _processed_ids(ws: Workspace, detector: str, landmarker: str) -> set[str]:
    """image_ids the face pass has looked at (whatever it found) with these settings."""
    from phenosynth.faces.facepass import load_faces

    return set(load_faces(ws, detector, landmarker, ok_only=False).index.astype(str))


# --- driver ---------------------------------------------------------------------------------------------------------


@locks_workspace
def rank(
    ws: Workspace,
    representation: str = "rdface25",
    *,
    faces: pd.DataFrame | None = None,
    detector: str | None = None,
    landmarker: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> RankSummary:
    """Score every usable synthetic image against its condition's real-training prototype; store
    ``WS/ranking.parquet``.

    Args:
        representation: ``rdface25``, ``shape68`` or ``embed:BACKBONE``.
        faces: the face table (``load_faces(ws, ok_only=False)`` format: indexed by image_id, one row per image the
            face pass processed, ``status``, ``landmarks``, box columns); default: read from the workspace.
        detector / landmarker: the face settings to use when ``faces.parquet`` holds several (``None``: the only
            one stored; several and none given raises, see :func:`phenosynth.faces.facepass.resolve_face_settings`).

    Raises:
        PhenosynthError: no synthetic images; synthetic images the face pass has not processed yet (run
            ``phenosynth faces``); no real training image with a face.
    """
    t0 = time.perf_counter()
    check_representation(representation)
    synth, train = _rankable(ws)
    synth_ids = synth["image_id"].astype(str).tolist()
    is_landmark = representation in LANDMARK_REPRESENTATIONS
    faces, detector, landmarker = _faces_for_ranking(ws, synth_ids, is_landmark, faces, detector, landmarker)
    real_ids, X_real = representation_vectors(ws, train["image_id"].astype(str).tolist(), representation, faces=faces,
                                              detector=detector, landmarker=landmarker)
    if not real_ids:
        raise PhenosynthError(
            f"No real training image has a '{representation}' vector (no faces found). "
            f"Check: phenosynth faces -w {ws.root}"
        )
    real_labels = train.set_index(train["image_id"].astype(str)).loc[real_ids, "label"].astype(str).tolist()
    kept_ids, X_syn = representation_vectors(ws, synth_ids, representation, faces=faces, detector=detector,
                                             landmarker=landmarker, on_progress=on_progress)
    labels = synth.set_index(synth["image_id"].astype(str))["label"].astype(str)
    ids, scores, ranks, not_ranked = _score_synthetic(X_real, real_labels, kept_ids, X_syn, labels,
                                                      len(synth_ids), is_landmark)
    for reason, count in not_ranked.items():
        log.warning("%d synthetic image(s) not ranked: %s", count, reason)

    table = pd.DataFrame(
        {"image_id": ids, "representation": representation, "rank_score": scores, "own_class_rank": ranks}
    )
    path = save_ranking(ws, table, representation)
    report(on_progress, len(synth_ids), len(synth_ids))
    return _summary(representation, ids, scores, ranks, [labels[i] for i in ids], not_ranked, str(path),
                    time.perf_counter() - t0)


def _rankable(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The workspace's usable synthetic images and real training images; raises when either is missing."""
    manifest = ws.load_manifest()
    synth = synthetic(manifest)
    if synth.empty:
        raise PhenosynthError(
            f"Workspace {ws.root} has no usable synthetic images to rank. Make some with: "
            f"phenosynth generate -w {ws.root} --generator shape-warp (or bring them with ingest --synthetic)"
        )
    train = require_real_train(manifest, ws.root)
    return synth, train


def _faces_for_ranking(ws: Workspace, synth_ids: list[str], is_landmark: bool, faces: pd.DataFrame | None,
                       detector: str | None, landmarker: str | None) -> tuple[pd.DataFrame | None, str | None,
                                                                              str | None]:
    """``(faces, detector, landmarker)`` to rank with: the face settings resolved, every synthetic image checked to
    have been through the face pass, and (for landmark representations) the usable faces loaded."""
    # every representation needs the face pass: landmarks directly, embeddings through the aligned crops
    if faces is None:
        from phenosynth.faces.facepass import resolve_face_settings

        detector, landmarker = resolve_face_settings(ws, detector, landmarker)
        processed = _processed_ids(ws, detector, landmarker)
        setting = f" with --detector {detector} --landmarks {landmarker}"
    else:
        processed, setting = set(faces.index.astype(str)), ""
    unprocessed = [i for i in synth_ids if i not in processed]
    if unprocessed:
        raise PhenosynthError(
            f"{len(unprocessed)} of {len(synth_ids)} synthetic images have not been through the face pass{setting} "
            f"yet, so they have no landmarks. Run: phenosynth faces -w {ws.root}{setting}   (it processes new "
            "images only)"
        )
    if is_landmark:
        if faces is not None and "status" in faces.columns:
            from phenosynth.faces.facepass import is_ok

            faces = faces[faces["status"].map(is_ok)]
        elif faces is None:
            from phenosynth.faces.facepass import load_faces

            faces = load_faces(ws, detector, landmarker)
    return faces, detector, landmarker


def _score_synthetic(X_real: np.ndarray, real_labels: list[str], kept_ids: list[str], X_syn: np.ndarray,
                     labels: pd.Series, n_synthetic: int, is_landmark: bool) -> tuple[
        list[str], np.ndarray, np.ndarray, dict[str, int]]:
    """``(ids, rank_score, own_class_rank, not_ranked reason -> count)`` of the synthetic images that have a
    vector (``kept_ids``) and a real training prototype for their condition."""
    not_ranked: dict[str, int] = {}
    n_noface = n_synthetic - len(kept_ids)
    if n_noface:
        not_ranked["no face found" if is_landmark else "no embedding (no face crop)"] = n_noface
    real_set = set(real_labels)
    has_proto = np.array([labels[i] in real_set for i in kept_ids], dtype=bool)
    if (~has_proto).any():
        not_ranked["condition has no real training face"] = int((~has_proto).sum())
    ids = [i for i, ok in zip(kept_ids, has_proto) if ok]
    X_syn = X_syn[has_proto] if len(kept_ids) else X_syn
    if ids:
        scores, ranks = rank_scores(X_real, real_labels, X_syn, [labels[i] for i in ids])
    else:
        scores, ranks = np.zeros(0), np.zeros(0, dtype=int)
    return ids, scores, ranks, not_ranked


def _summary(representation: str, ids: list[str], scores: np.ndarray, ranks: np.ndarray, id_labels: list[str],
             not_ranked: dict[str, int], path: str, seconds: float) -> RankSummary:
    per_class = pd.Series(scores, index=id_labels).groupby(level=0).mean() if ids else pd.Series()
    return RankSummary(
        representation=representation,
        ranked=len(ids),
        not_ranked=not_ranked,
        classes=int(len(per_class)),
        mean_score=float(np.mean(scores)) if len(scores) else float("nan"),
        median_score=float(np.median(scores)) if len(scores) else float("nan"),
        own_class_top1=float(np.mean(ranks == 1)) if len(ranks) else float("nan"),
        per_class_mean={str(k): float(v) for k, v in per_class.items()},
        path=path,
        seconds=seconds,
    )
