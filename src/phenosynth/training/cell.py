"""One training configuration under k-fold CV: :class:`TrainConfig`, :func:`train_cell` (one fold x seed -> one
``results.csv`` row) and :func:`train` (every fold x seed -> ``WS/runs/NAME/results.csv``).

Fold semantics. For fold ``f`` the model trains on the real training images not in fold ``f`` (plus the selected
synthetic images for ``mixed``; only the selected synthetic images for ``synthetic``) and validates on real fold
``f`` (``validate_on="real"``, default) or on fold ``f`` of the whole pool, real + synthetic
(``validate_on="pool"``; synthetic images get a fold from their image_id). Validation picks the hyper-parameters
(and the checkpoint of the epoch-based trainers). Every fold's model is then scored on the same held-out real test
set. The label space is :func:`phenosynth.data.manifest.real_classes`.

Mode ``gallery`` (GestaltMatcher-style matching) fits nothing: the cell's training set is the gallery (regime
``real``: the real training photos outside the validation fold; ``synthetic``: the selected synthetic images, chosen
like a training set -- strategy, n, privacy gate, fold rule; ``mixed``: both), the validation fold's photos and the
test photos are queries. Its one hyper-parameter ``m`` (a condition's distance = mean of its ``m`` nearest gallery
embeddings; 1 = the first hit) is chosen on the validation fold like any other.

Weight of the synthetic images (``synthetic_weight``, regime ``mixed``; :func:`synthetic_sample_weights`): by default a
mixed training set is the plain concatenation, every image weighing 1, so with 2-3 real photos and 10-40 synthetic
images per class the synthetic images dominate the loss. ``synthetic_weight = w`` gives each class's synthetic images
together ``w`` times the weight of that class's real training photos (each synthetic image ``w r_c / s_c``; a real
photo 1), whatever n is. A list is a hyper-parameter axis chosen on the validation fold with the trainer's own grid
(``None`` in it: plain concatenation); the chosen value is in results.csv's ``hparams``. Trainers get it as
``fit(..., sample_weight=)``; the gallery fits nothing and refuses it.

Test-time augmentation (``tta``: ``flip``, ``gray``; every combination is a view, :mod:`phenosynth.models.views`):
the gallery averages each image's L2-normalised view embeddings, the heads average their ``predict_proba`` over the
views of each validation/test image (they train on the identity view).

Ensembles: ``backbone`` may name several backbones joined by ``+`` (``dlib_resnet128+mobilenet_v2``; ``weights``
one value for all, or one per member joined by ``+``). Each member is fitted (and its hyper-parameters chosen) on its
own features; the cell's scores are the mean of the members' ``predict_proba`` (heads: probabilities; gallery: the
condition scores ``1 - d/2``, i.e. the mean of the members' nearest cosine distances). ``finetune`` takes one backbone.

Unseen conditions (``split --unseen-fraction``): when the split holds some, every cell, whatever its mode, also
matches their photos by gallery (leave-one-subject-out, the cell's training set as the seen gallery, the same
backbones, views and ensemble; :mod:`phenosynth.training.unseen`) and its row gains the ``unseen_*`` columns; the
other columns are the seen conditions' numbers, exactly as without unseen conditions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phenosynth.audit.gate import gate
from phenosynth.data.leakage import FitSets, assert_no_leakage, exclude_validation_children, load_pixel_fit_sets
from phenosynth.data.manifest import real_classes, real_test, real_train
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import PhenosynthError, WorkspaceError
from phenosynth.evaluate.metrics import TOPK, macro_f1, topk_accuracies, topk_accuracy
from phenosynth.progress import ProgressCallback, report

if TYPE_CHECKING:
    from phenosynth.training.unseen import UnseenPhotos

log = logging.getLogger(__name__)

REGIMES = ("real", "synthetic", "mixed")
MODES = ("probe", "se-head", "finetune", "gallery")
VALIDATE_ON = ("real", "pool")
#: Hyper-parameter grids used when a config gives none for its mode (lists are searched on the validation fold).
DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    "probe": {"C": [0.1, 1.0, 10.0]},
    "se-head": {"epochs": 50},
    "finetune": {"epochs": 10},
    "gallery": {"m": 1},
}
#: The columns every ``results.csv`` starts with, a training run's and a study's alike (docs/DESIGN.md).
CONTRACT_COLUMNS = [
    "backbone", "regime", "n_synthetic", "fold", "seed", "top1", "top5", "top10", "top30", "macro_f1", "n_train",
    "n_test", "n_synthetic_requested",
]
#: A training run's ``results.csv`` columns: the contract, then provenance.
RESULT_COLUMNS = CONTRACT_COLUMNS + [
    "n_val", "val_top1", "n_classes", "n_skipped", "selection", "mode", "weights", "preprocessing", "validate_on",
    "hparams", "fit_seconds",
]
#: Columns that vary from run to run; :func:`train` writes them to timings.csv, not results.csv.
TIMING_COLUMNS = ["fit_seconds"]


@dataclass
class TrainConfig:
    """One configuration: backbone x regime x n x selection x mode (folds and seeds are run by :func:`train`)."""

    backbone: str = "mobilenet_v2"
    weights: str = "default"
    preprocessing: str = "paper"
    regime: str = "real"
    n_synthetic: int | None = None  # None: every selected synthetic image
    selection: str = "top-per-class"
    per_class: bool = False
    representation: str | None = None
    allow_fewer: bool = False  # train on what there is when n_synthetic is more than a fold has (else refuse)
    detector: str | None = None  # face setting of faces.parquet (None: the only one there; several -> refuse)
    landmarker: str | None = None
    privacy_gate: bool = True  # skip the non-shareable synthetic images of audited runs (phenosynth.audit.gate)
    mode: str = "probe"
    validate_on: str = "real"
    folds: int = 5
    seeds: Sequence[int] = (42,)
    hparams: dict[str, Any] = field(default_factory=dict)
    tta: Sequence[str] = ()  # test-time augmentations (flip, gray); their views are averaged (module docstring)
    #: mixed only: total weight of a class's synthetic images relative to its real ones (None: concatenation); a list
    #: is chosen on the validation fold like the trainer's hyper-parameters (module docstring)
    synthetic_weight: float | Sequence[float | None] | None = None

    def __post_init__(self) -> None:
        self.synthetic_weight = check_synthetic_weight(self.synthetic_weight, self.regime, self.mode)
        for name, value, valid in (("regime", self.regime, REGIMES), ("mode", self.mode, MODES),
                                   ("validate_on", self.validate_on, VALIDATE_ON)):
            if value not in valid:
                raise PhenosynthError(f"Unknown {name} '{value}'. Use one of: {', '.join(valid)}.")
        if self.folds < 2:
            raise PhenosynthError(f"--folds must be at least 2, not {self.folds}.")
        if self.regime != "real" and self.n_synthetic is not None and self.n_synthetic < 1:
            raise PhenosynthError(f"--n-synthetic must be positive for regime '{self.regime}'.")
        self.seeds = [int(s) for s in self.seeds]
        from phenosynth.models.views import AUGMENTATIONS, tta_views

        tta_views(self.tta)  # unknown names: a clear error
        asked = {str(a).strip() for a in self.tta}
        self.tta = [a for a in AUGMENTATIONS if a in asked]
        members = self.members()
        if len(members) > 1 and self.mode == "finetune":
            raise PhenosynthError(f"An ensemble ({self.backbone}) combines feature trainers (probe, se-head, "
                                  "gallery); --mode finetune takes one backbone.")
        names = [b for b, _ in members]
        if len(set(names)) != len(names) or not all(names):
            raise PhenosynthError(f"Ensemble '{self.backbone}' names a backbone twice or an empty one.")

    def members(self) -> list[tuple[str, str]]:
        """``(backbone, weights)`` of each model: one, or the members of an ensemble (``a+b``; ``weights`` one value
        for all or one per member joined by ``+``).

        >>> TrainConfig(backbone="dlib_resnet128+mobilenet_v2").members()
        [('dlib_resnet128', 'default'), ('mobilenet_v2', 'default')]
        """
        names = self.backbone.split("+")
        if len(names) == 1:
            return [(self.backbone, self.weights)]
        weights = self.weights.split("+")
        if len(weights) == 1:
            weights = weights * len(names)
        if len(weights) != len(names):
            raise PhenosynthError(f"Ensemble '{self.backbone}' has {len(names)} members but weights "
                                  f"'{self.weights}' give {len(weights)}; give one value, or one per member "
                                  "joined by '+'.")
        return list(zip(names, weights))

    def views(self) -> list[str]:
        """The test-time augmentation views of :attr:`tta` (``['identity']`` without TTA)."""
        from phenosynth.models.views import tta_views

        return tta_views(self.tta)

    def grid(self) -> list[dict[str, Any]]:
        """Every hyper-parameter combination to try (list values are axes; scalars are fixed), in a fixed order.

        >>> TrainConfig(hparams={"C": [0.1, 1.0], "max_iter": 50}).grid()
        [{'C': 0.1, 'max_iter': 50}, {'C': 1.0, 'max_iter': 50}]
        """
        from sklearn.model_selection import ParameterGrid  # lazy: sklearn costs ~1 s of every CLI start-up

        hp = dict(self.hparams) if self.hparams else dict(DEFAULT_HPARAMS.get(self.mode, {}))
        if self.synthetic_weight is not None:
            hp[SYNTHETIC_WEIGHT] = list(self.synthetic_weight)
        return list(ParameterGrid({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in hp.items()}))


# --------------------------------------------------------------------------------------------------------------------

#: The grid key of the mixed regime's synthetic weight (a cell-level hyper-parameter, not the trainer's).
SYNTHETIC_WEIGHT = "synthetic_weight"


def check_synthetic_weight(value: Any, regime: str, mode: str) -> list[float | None] | None:
    """``synthetic_weight`` as a list of candidates (None stays None: plain concatenation); each positive and
    finite or None (concatenation), no repeats; only for regime ``mixed`` and a trainer that fits.

    >>> check_synthetic_weight(0.5, "mixed", "probe"), check_synthetic_weight([None, 1], "mixed", "probe")
    ([0.5], [None, 1.0])
    """
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise PhenosynthError("synthetic_weight is an empty list; give one weight, a list of weights, or leave it out.")
    if regime != "mixed":
        raise PhenosynthError(f"synthetic_weight weighs the synthetic images of a mixed training set; regime "
                              f"'{regime}' has no real and synthetic images to balance. Use --regime mixed.")
    if mode == "gallery":
        raise PhenosynthError("synthetic_weight does not apply to mode gallery: the gallery fits nothing, every "
                              "gallery image counts once.")
    out: list[float | None] = []
    for v in values:
        try:
            w = None if v is None or str(v).lower() in ("none", "null", "concat") else float(v)
        except (TypeError, ValueError):
            raise PhenosynthError(f"synthetic_weight must be a positive number or none (concatenation), "
                                  f"not {v!r}.") from None
        if w is not None and not (np.isfinite(w) and w > 0):
            raise PhenosynthError(f"synthetic_weight must be positive and finite, not {v!r}.")
        out.append(w)
    if len(set(out)) != len(out):
        raise PhenosynthError(f"synthetic_weight repeats a value: {values}.")
    return out


def synthetic_sample_weights(y: np.ndarray, is_synthetic: np.ndarray, weight: float | None) -> np.ndarray | None:
    """Per-sample weights of a mixed training set (None for ``weight`` None: concatenation). Real samples weigh 1;
    the ``s_c`` synthetic samples of class ``c`` weigh ``weight * r_c / s_c`` each, so they total ``weight`` times
    the class's ``r_c`` real samples. A class with no real training sample (all its photos validate) is given the
    mean ``r_c`` of the classes that have some. Pure.

    >>> synthetic_sample_weights(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 1, 1, 1, 0, 1], bool), 0.5).tolist()
    [1.0, 0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 1.0, 0.5]
    """
    if weight is None:
        return None
    y = np.asarray(y)
    is_synthetic = np.asarray(is_synthetic, bool)
    real_counts = np.bincount(y[~is_synthetic], minlength=int(y.max()) + 1 if len(y) else 0).astype(np.float64)
    syn_counts = np.bincount(y[is_synthetic], minlength=len(real_counts)).astype(np.float64)
    has_real = real_counts > 0
    fallback = float(real_counts[has_real].mean()) if has_real.any() else 1.0
    per_class_real = np.where(has_real, real_counts, fallback)
    out = np.ones(len(y), np.float64)
    syn_y = y[is_synthetic]
    out[is_synthetic] = weight * per_class_real[syn_y] / syn_counts[syn_y]
    return out


def pool_fold(image_id: str, folds: int) -> int:
    """Validation fold of a synthetic image under ``validate_on="pool"``: stable, from its content hash.

    >>> pool_fold("000000000000007" + "f" * 49, 5)   # the first 15 hex digits, modulo the folds
    2
    """
    return int(str(image_id)[:15], 16) % folds


def selected_synthetic(ws: Workspace, manifest: pd.DataFrame, config: TrainConfig, seed: int, *,
                       where: str = "the workspace") -> list[str]:
    """The synthetic image_ids a ``synthetic``/``mixed`` cell trains on (empty for ``real``); ``manifest`` is the
    fold's (children of its validation photos excluded), ``where`` names it in errors. An ``n_synthetic`` above what
    it holds raises :class:`~phenosynth.synth.selection.NotEnoughSyntheticError` unless ``config.allow_fewer``."""
    if config.regime == "real":
        return []
    from phenosynth.synth.selection import select_for_training

    return list(select_for_training(ws, manifest, strategy=config.selection, n=config.n_synthetic,
                                    per_class=config.per_class, seed=seed, representation=config.representation,
                                    allow_fewer=config.allow_fewer, where=where, detector=config.detector,
                                    landmarker=config.landmarker, warn_unranked=False))


def fold_manifest(manifest: pd.DataFrame, fold: int, pixel_fit_sets: FitSets | None = None) -> pd.DataFrame:
    """The manifest fold ``fold`` selects synthetic images from: images whose pixels come from its validation photos
    excluded (the fold rule, :func:`phenosynth.data.leakage.exclude_validation_children`; ``pixel_fit_sets`` from
    :func:`~phenosynth.data.leakage.load_pixel_fit_sets`)."""
    rt = real_train(manifest)
    in_fold = rt["fold"].fillna(-1).astype(int) == fold
    return exclude_validation_children(manifest, rt.loc[in_fold, "image_id"].astype(str).tolist(), pixel_fit_sets)


def synthetic_available(ws: Workspace, config: TrainConfig, folds: Sequence[int],
                        manifest: pd.DataFrame | None = None) -> dict[int, int]:
    """fold -> the largest n_synthetic selection can give that fold (after the fold rule, exclusions and, for
    score-based selection, unranked images; with ``per_class`` the fewest of any class)."""
    from phenosynth.synth.selection import candidate_counts, selectable_count, selection_candidates

    manifest = gate(ws, ws.load_manifest() if manifest is None else manifest, config.privacy_gate)[0]
    out = {}
    pixel_fit_sets = load_pixel_fit_sets(ws)
    for fold in folds:
        fm = fold_manifest(manifest, fold, pixel_fit_sets)
        cand = selection_candidates(ws, fm, strategy=config.selection, representation=config.representation,
                                    warn_unranked=False)
        out[int(fold)] = selectable_count(candidate_counts(fm, cand), per_class=config.per_class)
    return out


def check_synthetic_available(ws: Workspace, config: TrainConfig, folds: Sequence[int],
                              manifest: pd.DataFrame | None = None) -> None:
    """Refuse (before any work) a ``config.n_synthetic`` that some fold cannot give, naming what each fold has
    (:func:`phenosynth.synth.selection.check_n_available`); nothing to check for ``real``, n "all" or
    ``allow_fewer``."""
    if config.regime == "real" or config.n_synthetic is None or config.allow_fewer:
        return
    from phenosynth.synth.selection import check_n_available

    available = synthetic_available(ws, config, folds, manifest)
    check_n_available(config.n_synthetic, {f"fold {f}": a for f, a in available.items()},
                      per_class=config.per_class)


def warn_unranked(ws: Workspace, config: TrainConfig, manifest: pd.DataFrame | None = None) -> None:
    """Log once, for the whole manifest, how many synthetic images a score-based selection leaves out for want of a
    rank score (the per-fold selections of a run stay quiet about it)."""
    from phenosynth.synth.selection import get_strategy, selection_candidates

    if config.regime != "real" and get_strategy(config.selection).needs_scores:
        selection_candidates(ws, ws.load_manifest() if manifest is None else manifest, strategy=config.selection,
                             representation=config.representation)


@dataclass
class CellData:
    """The image_ids and class indices of one fold's training, validation and test sets, plus what was skipped."""

    classes: list[str]
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    skipped: list[tuple[str, str, str]]  # (image_id, role, reason)
    n_selected: int = 0
    n_synthetic_trained: int = 0  # synthetic images in train_ids: what results.csv records as n_synthetic
    is_synthetic: np.ndarray | None = None  # (len(train_ids),) bool: which training images are synthetic


def cell_sets(ws: Workspace, manifest: pd.DataFrame, config: TrainConfig, fold: int, seed: int) -> tuple[
        list[str], dict[str, list[str]], dict[str, str]]:
    """``(classes, {"train"|"val"|"test"|"selected": ids}, label_of)`` for one fold, before checking features/crops
    (``selected``: every synthetic image chosen for the cell)."""
    classes = real_classes(manifest)
    if len(classes) < 2:
        raise PhenosynthError(
            f"The workspace has {len(classes)} class(es) with a usable real image ({', '.join(classes) or 'none'}); "
            f"a classifier needs at least 2. Ingest photos of more conditions: phenosynth ingest SRC -w {ws.root}"
        )
    rt = real_train(manifest)
    if rt.empty or rt["fold"].isna().all():
        raise WorkspaceError(f"The workspace has no validation folds yet. Run first: phenosynth split -w {ws.root}")
    te = real_test(manifest)
    if te.empty:
        raise WorkspaceError(f"The workspace has no held-out test images. Run first: phenosynth split -w {ws.root}")
    folds = sorted(int(f) for f in rt["fold"].dropna().unique())
    if fold not in folds:
        raise PhenosynthError(f"Fold {fold} does not exist; the workspace's folds are {folds}.")
    in_fold = rt["fold"].fillna(-1).astype(int) == fold
    real_val = rt.loc[in_fold, "image_id"].astype(str).tolist()
    real_tr = rt.loc[~in_fold, "image_id"].astype(str).tolist()
    gated = gate(ws, manifest, config.privacy_gate)[0]
    syn = selected_synthetic(ws, fold_manifest(gated, fold, load_pixel_fit_sets(ws)), config, seed,
                             where=f"fold {fold}")
    if config.regime != "real" and not syn:
        raise PhenosynthError(
            f"Regime '{config.regime}' needs synthetic images, but none were selected. Make some first: "
            f"phenosynth generate -w {ws.root} --generator NAME, then phenosynth faces and phenosynth rank."
        )
    syn_val: list[str] = []
    if config.validate_on == "pool" and syn:
        syn_val = [i for i in syn if pool_fold(i, len(folds)) == folds.index(fold)]
        syn = [i for i in syn if pool_fold(i, len(folds)) != folds.index(fold)]
    train_ids = {"real": real_tr, "synthetic": syn, "mixed": real_tr + syn}[config.regime]
    sets = {"train": train_ids, "val": real_val + syn_val, "test": te["image_id"].astype(str).tolist(),
            "selected": syn + syn_val}
    label_of = dict(zip(manifest["image_id"].astype(str), manifest["label"].astype(str)))
    return classes, sets, label_of


def _labelled(ids: list[str], label_of: dict[str, str], index: dict[str, int], role: str,
              available: set[str] | None, skipped: list[tuple[str, str, str]], missing_reason: str) -> tuple[
        list[str], np.ndarray]:
    keep = []
    for i in ids:
        if label_of.get(i) not in index:
            skipped.append((i, role, "label is not a real class"))
        elif available is not None and i not in available:
            skipped.append((i, role, missing_reason))
        else:
            keep.append(i)
    return keep, np.array([index[label_of[i]] for i in keep], dtype=np.int64)


#: What :func:`cell_sets` returns: ``(classes, {"train"|"val"|"test"|"selected": ids}, label_of)``.
CellSets = tuple[list[str], dict[str, list[str]], dict[str, str]]


def _build(ws: Workspace, config: TrainConfig, fold: int, cell: CellSets, available: set[str] | None,
           missing_reason: str) -> CellData:
    classes, sets, label_of = cell
    index = {c: j for j, c in enumerate(classes)}
    skipped: list[tuple[str, str, str]] = []
    tr, ytr = _labelled(sets["train"], label_of, index, "train", available, skipped, missing_reason)
    va, yva = _labelled(sets["val"], label_of, index, "val", available, skipped, missing_reason)
    te, yte = _labelled(sets["test"], label_of, index, "test", available, skipped, missing_reason)
    if skipped:
        log.info("fold %s: %d image(s) skipped (%s)", fold, len(skipped),
                    ", ".join(f"{r}: {n}" for r, n in pd.Series([s[2] for s in skipped]).value_counts().items()))
    if not tr:
        raise PhenosynthError(
            f"Fold {fold} of regime '{config.regime}' has no training images with a usable face; check "
            f"`phenosynth faces -w {ws.root}` (faces.parquet status) for these images."
        )
    if not te:
        raise PhenosynthError("No test image has a usable face; check `phenosynth faces` and the split.")
    trained_on = sorted({classes[k] for k in ytr})
    if len(trained_on) < 2:
        raise PhenosynthError(
            f"Fold {fold} of regime '{config.regime}' has training images of {len(trained_on)} class only "
            f"({', '.join(trained_on)}); a classifier needs at least 2."
        )
    selected = set(sets["selected"])
    return CellData(classes, tr, va, te, ytr, yva, yte, skipped, len(selected),
                    sum(1 for i in tr if i in selected), np.array([i in selected for i in tr], bool))


class FitCache:
    """Models fitted along a hyper-parameter grid, kept for cells that train on the very same data (e.g. the folds
    of a synthetic-only configuration), keyed by :func:`fit_key` (a digest of the full training data). Owned by the
    caller: :func:`train` holds one per run, a study worker one per batch of cells; bounded to ``size`` entries.
    ``fits`` counts the grids actually fitted."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.fits = 0
        self._models: OrderedDict[str, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._models)

    def get(self, key: str) -> list[Any] | None:
        return self._models.get(key)

    def put(self, key: str, models: list[Any]) -> None:
        self._models[key] = models
        while len(self._models) > self.size:
            self._models.popitem(last=False)


def fit_key(config: TrainConfig, seed: int, X: np.ndarray, y: np.ndarray, n_classes: int,
            is_synthetic: np.ndarray | None = None) -> str:
    """Identity of one fit along the hyper-parameter grid: trainer, grid, seed, and a digest of every byte of the
    training features and labels (and, when the grid weighs synthetic images, of which samples are synthetic)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([config.mode, config.grid(), seed, n_classes, list(X.shape), str(X.dtype)],
                        sort_keys=True).encode())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    if config.synthetic_weight is not None and is_synthetic is not None:
        h.update(np.ascontiguousarray(is_synthetic, dtype=bool).tobytes())
    h.update(np.ascontiguousarray(X).tobytes())
    return h.hexdigest()


def _weighting(hp: dict[str, Any], data: CellData) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the trainer's hyper-parameters, fit's sample_weight keyword)`` of one grid point: the cell-level
    ``synthetic_weight`` taken out of ``hp`` and turned into :func:`synthetic_sample_weights` (nothing for
    concatenation, so trainers fit exactly as without the option)."""
    if SYNTHETIC_WEIGHT not in hp:
        return hp, {}
    hp = dict(hp)
    weight = hp.pop(SYNTHETIC_WEIGHT)
    if weight is None or data.is_synthetic is None:
        return hp, {}
    return hp, {"sample_weight": synthetic_sample_weights(data.y_train, data.is_synthetic, weight)}


def _fit_grid(config: TrainConfig, seed: int, data: CellData, Xtr: Any, Xva: Any, n_classes: int,
              fit_cache: FitCache | None) -> list[Any]:
    """One fitted model per hyper-parameter combination of ``config.grid()``, from ``fit_cache`` when the same
    training data was fitted before (only for trainers that never look at the validation set while fitting)."""
    from phenosynth.models.trainers import TRAINERS

    trainer_cls = TRAINERS.get(config.mode)
    shareable = (fit_cache is not None and trainer_cls.input_kind == "features"
                 and not getattr(trainer_cls, "uses_validation", True))
    key = fit_key(config, seed, Xtr, data.y_train, n_classes, data.is_synthetic) if shareable else None
    models = fit_cache.get(key) if key is not None else None
    if models is not None:
        return models
    extra = {"backbone": config.backbone, "weights": config.weights, "preprocessing": config.preprocessing,
             **({"tta": list(config.tta)} if config.tta else {})} if config.mode == "finetune" else {}
    models, prev = [], None
    for hp in config.grid():
        hp, weighting = _weighting(hp, data)
        model = TRAINERS.create(config.mode, **extra, **hp, random_state=seed)
        if prev is not None and hasattr(model, "warm_start_from"):
            model.warm_start_from(prev)  # a path over the grid: same data, only C (or the weights) change
        prev = model
        model.fit(Xtr, data.y_train, n_classes=n_classes, X_val=Xva if len(data.val_ids) else None,
                  y_val=data.y_val if len(data.val_ids) else None, **weighting)
        models.append(model)
    if key is not None:
        fit_cache.fits += 1
        fit_cache.put(key, models)
    return models


#: Features of a cell: ``(backbone, view) -> (image_ids, X (N, d))`` for every member and test-time view.
FeatureViews = dict[tuple[str, str], tuple[Sequence[str], np.ndarray]]


def as_feature_views(config: TrainConfig,
                     features: tuple[Sequence[str], np.ndarray] | FeatureViews | None) -> FeatureViews | None:
    """``features`` as :data:`FeatureViews`: a plain ``(ids, X)`` pair is the single backbone's identity view."""
    if features is None or isinstance(features, dict):
        return features
    if len(config.members()) > 1 or len(config.views()) > 1:
        raise PhenosynthError("An ensemble or test-time augmentation needs features per backbone and view "
                              "({(backbone, view): (ids, X)}), not one (ids, X) pair.")
    return {(config.backbone, "identity"): features}


def _view_means(rows: dict[str, tuple[dict[str, int], np.ndarray]], sub: list[str], average: Any) -> Any:
    """``average`` over the views (in order) of the rows of ``sub``; the one view itself when there is one."""
    per_view = [X[[row_of[i] for i in sub]] for row_of, X in rows.values()]
    return per_view[0] if len(per_view) == 1 else average(per_view)


def _run_cell(ws: Workspace, config: TrainConfig, fold: int, seed: int,
              features: tuple[Sequence[str], np.ndarray] | FeatureViews | None, *,
              sets: CellSets | None = None,
              fit_cache: FitCache | None = None,
              unseen: UnseenPhotos | None = None) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """One fold x seed: its sets (``sets``: :func:`cell_sets` already computed, so selection runs once per cell),
    the grid fitted (or taken from ``fit_cache``) per ensemble member, each member's best model on validation scored
    on the test set (views and members averaged, see the module docstring); plus the unseen conditions' columns when
    the split holds some (``unseen``: :func:`~phenosynth.training.unseen.unseen_photos`, else read here)."""
    from phenosynth.models.trainers import TRAINERS

    if sets is not None and unseen is None and set(sets[2].values()) <= set(sets[0]):
        unseen = _unseen_photos(None)  # every label of the manifest is a seen class: no unseen condition
    if sets is None or unseen is None:
        manifest = ws.load_manifest()
        sets = cell_sets(ws, manifest, config, fold, seed) if sets is None else sets
        unseen = _unseen_photos(manifest) if unseen is None else unseen
    wanted = sorted({i for s in sets[1].values() for i in s})
    trainer_cls = TRAINERS.get(config.mode)
    if trainer_cls.input_kind != "features":
        row, skipped = _run_image_cell(ws, config, fold, seed, sets, wanted)
        return _with_unseen(ws, config, row, skipped, sets, unseen, None, {})
    feats = as_feature_views(config, features) or _features(ws, config, sorted(set(wanted) | set(unseen.ids)))
    views = config.views()
    rows = {member: {v: ({str(i): r for r, i in enumerate(feats[member, v][0])}, feats[member, v][1])
                     for v in views} for member, _ in config.members()}
    available = set.intersection(*(set(row_of) for by_view in rows.values() for row_of, _ in by_view.values()))
    data = _build(ws, config, fold, sets, available, "no features (no usable face crop)")
    n_classes = len(data.classes)
    t0 = time.perf_counter()
    val_scores, test_scores, chosen, best_scores = [], [], {}, []
    for member, by_view in rows.items():
        if trainer_cls.tta_averages == "embeddings":  # gallery: one embedding per image, the mean of its views
            from phenosynth.models.trainers import l2_normalised

            def embed(sub: list[str], by_view=by_view) -> np.ndarray:
                return _view_means(by_view, sub, lambda Xs: np.mean([l2_normalised(x) for x in Xs], axis=0))

            get_train, scorer = embed, lambda model, sub, embed=embed: model.predict_proba(embed(sub))
        else:  # heads: trained on the identity view, their scores averaged over the views
            def get_train(sub: list[str], by_view=by_view) -> np.ndarray:
                row_of, X = by_view["identity"]
                return X[[row_of[i] for i in sub]]

            def scorer(model: Any, sub: list[str], by_view=by_view) -> np.ndarray:
                per_view = [model.predict_proba(X[[row_of[i] for i in sub]]) for row_of, X in by_view.values()]
                return per_view[0] if len(per_view) == 1 else np.mean(per_view, axis=0)

        best, best_score, best_hp = _select(config, seed, data, get_train, scorer, n_classes, fit_cache)
        chosen[member] = best_hp
        best_scores.append(best_score)
        val_scores.append(scorer(best, data.val_ids) if len(data.val_ids) else None)
        test_scores.append(scorer(best, data.test_ids))
    if len(rows) == 1:
        scores, best_score, best_hp = test_scores[0], best_scores[0], chosen[config.members()[0][0]]
    else:  # ensemble: members' scores averaged; its validation top-1 from the averaged validation scores
        scores = np.mean(test_scores, axis=0)
        best_score = topk_accuracy(data.y_val, np.mean(val_scores, axis=0), 1) if len(data.val_ids) else 0.0
        best_hp = chosen
    fit_seconds = time.perf_counter() - t0
    row = _result_row(config, fold, seed, data, scores, best_score, best_hp, fit_seconds)
    return _with_unseen(ws, config, row, data.skipped, (data.classes, {"train": data.train_ids}, sets[2]), unseen,
                        rows, chosen)


def _unseen_photos(manifest: pd.DataFrame | None) -> UnseenPhotos:
    """:func:`phenosynth.training.unseen.unseen_photos` of ``manifest`` (None: none)."""
    from phenosynth.training.unseen import UnseenPhotos, unseen_photos

    return UnseenPhotos() if manifest is None else unseen_photos(manifest)


def _with_unseen(ws: Workspace, config: TrainConfig, row: dict[str, Any], skipped: list[tuple[str, str, str]],
                 sets: CellSets, unseen: UnseenPhotos, members: dict[str, Any] | None,
                 chosen: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """``row`` plus the unseen conditions' columns (:func:`phenosynth.training.unseen.unseen_columns`: gallery
    matching, leave-one-subject-out, the cell's training set ``sets[1]["train"]`` as the seen gallery) when the
    split holds unseen conditions; ``row`` as it is otherwise. ``members``: the cell's features by member and view
    (None: a cell that reads crops, e.g. ``finetune``: its backbone's features are read from the cache);
    ``chosen``: the hyper-parameters chosen per member (mode ``gallery``: its ``m``)."""
    if not unseen:
        return row, skipped
    from phenosynth.training.unseen import unseen_columns

    classes, cell, label_of = sets
    gallery = list(cell["train"])
    if members is None:  # the frozen backbone's features, through the feature cache
        feats = _features(ws, config, sorted(set(gallery) | set(unseen.ids)))
        members = {b: {v: ({str(i): r for r, i in enumerate(feats[b, v][0])}, feats[b, v][1])
                       for v in config.views()} for b, _ in config.members()}
    have = set.intersection(*(set(row_of) for by_view in members.values() for row_of, _ in by_view.values()))
    seen = set(classes)
    gallery = [i for i in gallery if i in have and label_of.get(i) in seen]
    m = {b: int(hp.get("m", 1)) for b, hp in chosen.items()} if config.mode == "gallery" else {}
    columns, left_out = unseen_columns(members, gallery, [label_of[i] for i in gallery], unseen, classes, m)
    return {**row, **columns}, skipped + left_out


def _select(config: TrainConfig, seed: int, data: CellData, get: Any, scorer: Any, n_classes: int,
            fit_cache: FitCache | None) -> tuple[Any, float, dict[str, Any]]:
    """``(best model, its validation top-1, its hyper-parameters)`` over ``config.grid()`` (first best wins; 0.0
    when there is no validation set)."""
    best, best_score, best_hp = None, -1.0, {}
    Xtr, Xva = get(data.train_ids), get(data.val_ids)
    for hp, model in zip(config.grid(), _fit_grid(config, seed, data, Xtr, Xva, n_classes, fit_cache)):
        score = topk_accuracy(data.y_val, scorer(model, data.val_ids), 1) if len(data.val_ids) else 0.0
        if score > best_score:
            best, best_score, best_hp = model, score, hp
    return best, best_score, best_hp


def _run_image_cell(ws: Workspace, config: TrainConfig, fold: int, seed: int, sets: CellSets,
                    wanted: list[str]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """A cell of a trainer that reads aligned crops itself (``finetune``; its ``tta`` averages the views)."""
    from phenosynth.faces.align import ensure_aligned_crops

    crops = ensure_aligned_crops(ws, wanted, size=224, detector=config.detector, landmarker=config.landmarker)
    data = _build(ws, config, fold, sets, set(crops), "no usable face crop")
    t0 = time.perf_counter()
    best, best_score, best_hp = _select(config, seed, data, lambda sub: [crops[i] for i in sub],
                                        lambda model, sub: model.predict_proba([crops[i] for i in sub]),
                                        len(data.classes), None)
    fit_seconds = time.perf_counter() - t0
    return _result_row(config, fold, seed, data, best.predict_proba([crops[i] for i in data.test_ids]), best_score,
                       best_hp, fit_seconds), data.skipped


def _result_row(config: TrainConfig, fold: int, seed: int, data: CellData, scores: np.ndarray, best_score: float,
                best_hp: dict[str, Any], fit_seconds: float) -> dict[str, Any]:
    n_classes = len(data.classes)
    labels = list(range(n_classes))
    return {
        "backbone": config.backbone, "regime": config.regime,
        # n_synthetic: what this model trained on; n_synthetic_requested: what was asked (NA: "all")
        "n_synthetic": int(data.n_synthetic_trained),
        "fold": int(fold), "seed": int(seed),
        **{k: float(v) for k, v in topk_accuracies(data.y_test, scores, TOPK, labels).items()},
        "macro_f1": macro_f1(data.y_test, scores.argmax(1), labels),
        "n_train": len(data.train_ids), "n_test": len(data.test_ids),
        "n_synthetic_requested": 0 if config.regime == "real" else (
            None if config.n_synthetic is None else int(config.n_synthetic)),
        "n_val": len(data.val_ids),
        "val_top1": float(best_score) if len(data.val_ids) else float("nan"), "n_classes": n_classes,
        "n_skipped": len(data.skipped), "selection": config.selection if config.regime != "real" else "",
        "mode": config.mode, "weights": config.weights, "preprocessing": config.preprocessing,
        "validate_on": config.validate_on, "hparams": json.dumps(best_hp, sort_keys=True),
        "fit_seconds": round(fit_seconds, 3),
    }


def train_cell(ws: Workspace, config: TrainConfig, fold: int, seed: int, *,
               features: tuple[Sequence[str], np.ndarray] | FeatureViews | None = None,
               fit_cache: FitCache | None = None) -> dict[str, Any]:
    """Train one fold x seed of ``config`` and score it on the held-out real test set: one ``results.csv`` row.

    ``features`` = ``(image_ids, X (N, d))`` already extracted for this backbone, or :data:`FeatureViews` (one per
    ensemble member and test-time view); else they are extracted, from the cache when present. ``fit_cache``: models fitted by earlier cells, reused when this cell trains on the very
    same data (results are identical; without it every cell fits its own). The row holds DESIGN.md's columns plus
    ``n_val, val_top1, n_classes, n_skipped, selection, mode, weights, preprocessing, validate_on, hparams`` (the chosen ones, JSON) and ``fit_seconds``;
    when the split holds unseen conditions, also :data:`phenosynth.training.unseen.UNSEEN_COLUMNS`.

    Raises :class:`~phenosynth.errors.LeakageError` (naming the images) when the workspace's split leaks the test set
    into training (:func:`phenosynth.data.leakage.assert_no_leakage`).
    """
    assert_no_leakage(ws)
    return _run_cell(ws, config, fold, seed, features, fit_cache=fit_cache)[0]


def _features(ws: Workspace, config: TrainConfig, ids: list[str],
              on_progress: ProgressCallback | None = None) -> FeatureViews:
    """Every member's features of every view of ``config`` (each view cached apart)."""
    from phenosynth.models.features import extract_features

    jobs = [(b, w, v) for b, w in config.members() for v in config.views()]
    out: FeatureViews = {}
    for k, (backbone, weights, view) in enumerate(jobs):
        step = on_progress if on_progress is None or len(jobs) == 1 else (
            lambda d, t, k=k: on_progress(k * t + d, len(jobs) * t))
        out[backbone, view] = extract_features(ws, backbone, ids, weights=weights,
                                               preprocessing=config.preprocessing, detector=config.detector,
                                               landmarker=config.landmarker, on_progress=step, view=view)
    return out


def run_folds(ws: Workspace, config: TrainConfig) -> list[int]:
    """The folds :func:`train` runs: the first ``config.folds`` of the workspace's folds."""
    rt = real_train(ws.load_manifest())
    folds = sorted(int(f) for f in rt["fold"].dropna().unique())
    if not folds:
        raise WorkspaceError(f"The workspace has no validation folds yet. Run first: phenosynth split -w {ws.root}")
    if config.folds > len(folds):
        raise PhenosynthError(
            f"--folds {config.folds} asks for more folds than the workspace has ({len(folds)}). Use --folds "
            f"{len(folds)} or re-run: phenosynth split -w {ws.root} --folds {config.folds}"
        )
    return folds[: config.folds]


@locks_workspace
def train(ws: Workspace, config: TrainConfig, name: str,
          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Run every fold x seed of ``config``; write ``WS/runs/NAME/{config.yaml,results.csv,timings.csv,skipped.csv}``.

    Refuses to overwrite an existing run folder, and to train on a workspace whose split leaks the test set into
    training (:func:`phenosynth.data.leakage.assert_no_leakage`: ``LeakageError`` naming the images). Features are
    extracted (or read from the cache) once, up front. Progress: feature extraction first, then one step per trained
    model.
    """
    run_dir = ws.runs_dir / name
    if run_dir.exists():
        raise WorkspaceError(f"Run folder {run_dir} already exists; choose a fresh --name (runs are never overwritten).")
    assert_no_leakage(ws)
    folds = run_folds(ws, config)
    check_synthetic_available(ws, config, folds)  # an n some fold cannot give: refused before anything is written
    warn_unranked(ws, config)
    run_dir.mkdir(parents=True)
    try:
        return _train_into(ws, config, name, run_dir, folds, on_progress)
    except BaseException:
        if not (run_dir / "results.csv").exists():  # nothing trained: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_into(ws: Workspace, config: TrainConfig, name: str, run_dir: Path, folds: list[int],
                on_progress: ProgressCallback | None) -> pd.DataFrame:
    import yaml

    manifest = ws.load_manifest()
    atomic_write(run_dir / "config.yaml",
                 lambda p: Path(p).write_text(yaml.safe_dump({**asdict(config), "seeds": list(config.seeds),
                                                              "run_folds": folds, "name": name}, sort_keys=False)))
    features = None
    from phenosynth.models.trainers import TRAINERS

    # every fold's sets, selected once: each fold selects synthetic images without its own children
    sets = {(fold, seed): cell_sets(ws, manifest, config, fold, seed) for seed in config.seeds for fold in folds}
    unseen = _unseen_photos(manifest)
    if TRAINERS.get(config.mode).input_kind == "features":
        ids = {i for _, cell, _ in sets.values() for s in cell.values() for i in s} | set(unseen.ids)
        features = _features(ws, config, sorted(ids), on_progress)
    rows, skipped = [], {}
    if config.regime != "real":  # what the privacy gate left out of the candidates, with the audit's reasons
        skipped.update({(i, reason): "synthetic candidate" for i, reason in gate(ws, manifest, config.privacy_gate)[1].items()})
    total = len(folds) * len(config.seeds)
    fit_cache = FitCache()  # folds that train on the same data share their fitted models
    for seed in config.seeds:
        for fold in folds:
            row, sk = _run_cell(ws, config, fold, seed, features, sets=sets[fold, seed], fit_cache=fit_cache,
                                unseen=unseen)
            rows.append(row)
            for image_id, role, reason in sk:
                skipped.setdefault((image_id, reason), role)
            df = _results_frame(rows)
            keys = ["backbone", "regime", "n_synthetic", "fold", "seed"]
            # timings apart, so results.csv is bit-identical across reruns
            atomic_write(run_dir / "results.csv", lambda p: df.drop(columns=TIMING_COLUMNS).to_csv(p, index=False))
            atomic_write(run_dir / "timings.csv", lambda p: df[keys + TIMING_COLUMNS].to_csv(p, index=False))
            report(on_progress, len(rows), total)
            log.info("fold %s seed %s: top1 %.3f", fold, seed, row["top1"])
    sk_df = pd.DataFrame([(i, role, reason) for (i, reason), role in sorted(skipped.items())],
                         columns=["image_id", "role", "reason"])
    atomic_write(run_dir / "skipped.csv", lambda p: sk_df.to_csv(p, index=False))
    if len(sk_df):
        log.warning("%d image(s) skipped, with reasons, in %s", len(sk_df), run_dir / "skipped.csv")
    return _results_frame(rows)


def _results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A run's results: :data:`RESULT_COLUMNS`, then the unseen conditions' columns when the split has them."""
    from phenosynth.training.unseen import unseen_columns_in

    df = pd.DataFrame(rows)
    return df[RESULT_COLUMNS + unseen_columns_in(df.columns)]
