"""Run a study: prepare (generate if asked, extract features once per backbone), then train every cell of the grid
with an executor, storing each finished cell atomically so that a killed study resumes where it stopped.

Layout of ``WS/runs/NAME/``::

    config.yaml      resolved spec + package versions + manifest digest (a resume must match it)
    cells/<id>.json  one finished cell (its results row), written via tmp file + os.replace
    cells/<id>.error.txt   a failed cell's traceback (retried by --resume)
    results.csv      every cell's row, in grid order (deterministic: timing columns go to timings.csv); when the
                     split holds unseen conditions, each row also has the unseen_* columns
                     (phenosynth.training.unseen), the other columns staying the seen conditions' numbers
    timings.csv      the cells' ``*_seconds`` columns
    table.{md,csv,tex}, figure_top*.png, report.html   (phenosynth.study.report)

A cell function has the signature ``fn(ws: Workspace, spec: StudySpec, cell: Cell) -> dict`` (one results row) and is
given to workers as a ``"module:function"`` string or an importable function; the default trains the cell with
:func:`phenosynth.training.train_cell` on the features extracted up front. A cell function that also takes a keyword
``cache`` is given the :class:`CellCache` of the executor call running it (features loaded and models fitted by the
cells before it); there is no module-level state.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
import yaml

from phenosynth import __version__
from phenosynth.data import manifest as mf
from phenosynth.data.leakage import assert_no_leakage
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import PhenosynthError
from phenosynth import parallel
from phenosynth.parallel import limit_threads, worker_count
from phenosynth.progress import ProgressCallback, report
from phenosynth.registry import Registry
from phenosynth.study.grid import Cell, expand_grid
from phenosynth.study.spec import GeneratorSpec, SpecError, StudySpec, spec_from_dict
from phenosynth.training.cell import CONTRACT_COLUMNS

log = logging.getLogger(__name__)

CellFunction = Callable[[Workspace, StudySpec, Cell], dict]
CellFunctionRef = Union[str, CellFunction]

DEFAULT_CELL_FUNCTION = "phenosynth.study.runner:train_study_cell"
PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "torch", "torchvision", "timm", "open_clip_torch", "dlib-bin",
            "pydantic", "ray")


class StudyError(PhenosynthError):
    """A study cannot start, cannot resume, or finished with failed cells."""


# --- cells: what one worker does -------------------------------------------------------------------------------------
def resolve_cell_function(ref: CellFunctionRef) -> CellFunction:
    """``"package.module:function"`` -> the function; a callable is returned as it is."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    if not module or not name:
        raise StudyError(f"Cell function '{ref}' should look like 'package.module:function'.")
    return getattr(importlib.import_module(module), name)


class CellCache:
    """What consecutive cells of one executor call share (owned by that call: the serial executor's whole run, or one
    batch of cells sent to a worker process): the features of the last two backbones used, and the probe fits of
    cells that train on the same data (:class:`phenosynth.training.cell.FitCache`, keyed by content digests)."""

    def __init__(self, max_feature_sets: int = 2) -> None:
        from phenosynth.training.cell import FitCache

        self.max_feature_sets = max_feature_sets
        self.features: dict[tuple, tuple[list[str], np.ndarray]] = {}
        self.fits = FitCache()


def study_image_ids(ws: Workspace) -> list[str]:
    """Every image a study's cells may use: usable real images with a split, and usable synthetic images."""
    df = mf.usable(ws.load_manifest())
    keep = ((df["source"] == mf.REAL) & df["split"].notna()) | (df["source"] == mf.SYNTHETIC)
    return df.loc[keep, "image_id"].astype(str).tolist()


def cell_features(ws: Workspace, spec: StudySpec, cell: Cell,
                  cache: CellCache | None = None) -> dict[tuple[str, str], tuple[list[str], np.ndarray]]:
    """The cell's features ``{(backbone, view): (ids, X (N, d) float32)}`` for every backbone of the cell (one, or
    an ensemble's members) and every test-time view of ``spec.tta``, each loaded once per ``cache`` and kept there
    for later cells (``cache=None``: loaded for this call only).

    From ``spec.features_from`` (``<backbone>.npz`` with arrays ``ids`` and ``X``; a view other than identity:
    ``<backbone>@<view>.npz``) when set, else from the workspace's feature cache (filled up front by
    :func:`prepare_study`, so this only reads it).
    """
    config = train_config(spec, cell)
    views = config.views()
    out = {}
    for backbone, weights in config.members():
        for view in views:
            out[backbone, view] = _member_features(ws, spec, backbone, weights, view, cache,
                                                   keep=len(config.members()) * len(views))
    return out


def _member_features(ws: Workspace, spec: StudySpec, backbone: str, weights: str, view: str,
                     cache: CellCache | None, keep: int) -> tuple[list[str], np.ndarray]:
    key = (str(ws.root), backbone, weights, spec.preprocessing, spec.features_from, spec.detector, spec.landmarker,
           view)
    if cache is not None and key in cache.features:
        return cache.features[key]
    if spec.features_from:
        features = load_feature_file(Path(spec.features_from), backbone, view)
    else:
        from phenosynth.models.features import extract_features

        ids, X = extract_features(ws, backbone, study_image_ids(ws), weights=weights,
                                  preprocessing=spec.preprocessing, detector=spec.detector,
                                  landmarker=spec.landmarker, view=view)
        features = (list(ids), X)
    if cache is not None:
        # bounded memory (cells arrive backbone-major): the last two cells' worth of feature sets
        while len(cache.features) >= max(cache.max_feature_sets, 2 * keep):
            cache.features.pop(next(iter(cache.features)))
        cache.features[key] = features
    return features


def feature_file(folder: Path, backbone: str, view: str = "identity") -> Path:
    suffix = "" if view == "identity" else f"@{view}"
    return folder / f"{backbone.replace(':', '-').replace('/', '-')}{suffix}.npz"


def save_feature_file(folder: Path, backbone: str, ids: list[str], X: np.ndarray, view: str = "identity") -> Path:
    """Write precomputed features for ``spec.features_from``: ``ids`` (N,) and ``X`` (N, d) float32."""
    path = feature_file(folder, backbone, view)
    atomic_write(path, lambda p: np.savez(open(p, "wb"), ids=np.asarray(ids, dtype=str), X=X.astype(np.float32)))
    return path


def load_feature_file(folder: Path, backbone: str, view: str = "identity") -> tuple[list[str], np.ndarray]:
    path = feature_file(folder, backbone, view)
    if not path.exists():
        raise StudyError(f"No precomputed features for backbone '{backbone}': expected {path} "
                         "(an .npz with arrays ids (N,) and X (N, d)); fix features_from: in the spec.")
    with np.load(path) as data:
        return data["ids"].astype(str).tolist(), np.ascontiguousarray(data["X"], dtype=np.float32)


def train_config(spec: StudySpec, cell: Cell) -> "TrainConfig":  # noqa: F821 (lazy import)
    """The :class:`~phenosynth.training.TrainConfig` of one cell of ``spec``."""
    from phenosynth.training import TrainConfig

    return TrainConfig(
        backbone=cell.backbone,
        weights=cell.weights,
        preprocessing=spec.preprocessing,
        regime=cell.regime,
        n_synthetic=cell.n_synthetic,
        selection=spec.selection,
        per_class=spec.per_class,
        representation=spec.representation,
        mode=spec.trainer.mode,
        validate_on=spec.validate_on,
        folds=spec.folds,
        seeds=[cell.seed],
        hparams=dict(spec.trainer.hparams),
        allow_fewer=spec.allow_fewer,
        detector=spec.detector,
        landmarker=spec.landmarker,
        privacy_gate=spec.privacy_gate,
        tta=list(spec.tta),
        synthetic_weight=spec.synthetic_weight if cell.regime == "mixed" else None,
    )


def train_study_cell(ws: Workspace, spec: StudySpec, cell: Cell, *, cache: CellCache | None = None) -> dict:
    """The default cell function: train and score one fold/seed of one backbone x regime x n configuration
    (features and fits shared through ``cache`` with the cells run before it)."""
    from phenosynth.training import train_cell
    from phenosynth.training.cell import run_folds

    config = train_config(spec, cell)
    fold = run_folds(ws, config)[cell.fold]  # the grid's i-th fold is the workspace's i-th fold
    return train_cell(ws, config, fold, cell.seed, features=cell_features(ws, spec, cell, cache),
                      fit_cache=cache.fits if cache is not None else None)


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs, picklable: the workspace root, the resolved spec and the cell function."""

    workspace: str
    spec: dict
    cell_fn: CellFunctionRef


@dataclass(frozen=True)
class CellFailure:
    message: str
    traceback: str
    user_error: bool


def _takes_cache(fn: CellFunction) -> bool:
    try:
        return "cache" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def run_cell(job: CellJob, cell: Cell, cache: CellCache | None = None) -> dict | CellFailure:
    """Run one cell in this process (sharing ``cache`` with the caller's other cells, when the cell function takes
    one); exceptions come back as a :class:`CellFailure` instead of killing the pool."""
    try:
        spec = StudySpec.model_validate(job.spec)
        ws = Workspace(Path(job.workspace))
        fn = resolve_cell_function(job.cell_fn)
        row = fn(ws, spec, cell, cache=cache) if cache is not None and _takes_cache(fn) else fn(ws, spec, cell)
        return _plain(dict(row))
    except Exception as exc:  # noqa: BLE001 - reported per cell, the study goes on
        return CellFailure(f"{type(exc).__name__}: {exc}", traceback.format_exc(), isinstance(exc, PhenosynthError))


def run_cells(job: CellJob, cells: list[Cell]) -> list[dict | CellFailure]:
    """Run several cells one after another in this process, sharing one :class:`CellCache`."""
    cache = CellCache()
    return [run_cell(job, cell, cache) for cell in cells]


def fold_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Consecutive cells that differ only in their fold, as groups (grid order kept)."""
    groups: list[list[Cell]] = []
    for cell in cells:
        if groups and replace(groups[-1][0], fold=0) == replace(cell, fold=0):
            groups[-1].append(cell)
        else:
            groups.append([cell])
    return groups


def _plain(row: dict) -> dict:
    """numpy scalars -> Python scalars, so the row is JSON and round-trips exactly."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[str(k)] = v
    return out


# --- executors -----------------------------------------------------------------------------------------------------
Executor = Callable[[CellJob, list[Cell]], Iterator[tuple[Cell, Union[dict, CellFailure]]]]
EXECUTORS: Registry[Executor] = Registry("executor")


@EXECUTORS.register("serial")
def serial_executor(**_: Any) -> Executor:
    """Cells one after another in this process (debugging; BLAS/torch use their own threads)."""

    def execute(job: CellJob, cells: list[Cell]) -> Iterator[tuple[Cell, dict | CellFailure]]:
        cache = CellCache()  # this call's cells share loaded features and fits; nothing outlives the call
        for cell in cells:
            yield cell, run_cell(job, cell, cache)

    return execute


@EXECUTORS.register("local")
def local_executor(*, workers: int | None = None, **_: Any) -> Executor:
    """A pool of worker processes (:func:`phenosynth.parallel.process_pool`: one per core, one thread each); results
    arrive as cells finish."""
    worker_count(workers, 0)  # a --workers below 1 fails here, before any work

    def execute(job: CellJob, cells: list[Cell]) -> Iterator[tuple[Cell, dict | CellFailure]]:
        n_workers = worker_count(workers, len(cells))
        if n_workers == 1:
            yield from serial_executor()(job, cells)
            return
        from concurrent.futures import FIRST_COMPLETED, wait

        with parallel.process_pool(n_workers) as pool:
            # The folds of one configuration go to one worker (they may share fitted models), and a short queue
            # per worker keeps the work roughly in grid (backbone-major) order.
            todo = iter(fold_groups(cells))
            pending: dict = {}
            for group in todo:
                pending[pool.submit(run_cells, job, group)] = group
                if len(pending) >= 2 * n_workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    group = pending.pop(fut)
                    yield from zip(group, fut.result())
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending[pool.submit(run_cells, job, nxt)] = nxt

    return execute


@EXECUTORS.register("ray")
def ray_executor(*, address: str | None = None, workers: int | None = None, **_: Any) -> Executor:
    """Cells as Ray tasks: on the cluster at ``address`` (``auto`` or ``ray://host:port``), else on a local Ray with
    one CPU per worker. The workspace must be on a file system every Ray node sees."""
    from phenosynth._optional import require

    ray = require("ray", extra="ray", purpose="the ray executor")

    def execute(job: CellJob, cells: list[Cell]) -> Iterator[tuple[Cell, dict | CellFailure]]:
        started_here = not ray.is_initialized()
        if started_here:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=worker_count(workers, len(cells)), include_dashboard=False, log_to_driver=False)
        try:
            remote = ray.remote(num_cpus=1)(_ray_cell)
            job_ref = ray.put(job)
            refs = {remote.remote(job_ref, cell): cell for cell in cells}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    cell = refs.pop(ref)
                    try:
                        yield cell, ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a worker died
                        yield cell, CellFailure(f"Ray task failed: {exc}", traceback.format_exc(), False)
        finally:
            if started_here:
                ray.shutdown()

    return execute


def _ray_cell(job: CellJob, cell: Cell) -> dict | CellFailure:
    limit_threads(1)
    return run_cell(job, cell)


# --- the study -----------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    """What :func:`run_study` did."""

    run_dir: Path
    n_cells: int
    n_resumed: int
    n_ran: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    results: pd.DataFrame | None = None
    report_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    prepare_seconds: float = 0.0


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "phenosynth": __version__}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def manifest_digest(df: pd.DataFrame) -> str:
    """SHA-256 of the manifest's content (rows sorted by image_id, paths left out): equal data, equal digest. Donor
    faces are left out: no cell ever reads them, so ingesting donors does not block a ``--resume``."""
    df = df[df["source"] != mf.DONOR] if not df.empty else df
    if df.empty:
        return "empty"
    flat = mf.to_csv_frame(df).drop(columns=["path"]).sort_values("image_id").reset_index(drop=True)
    return hashlib.sha256(flat.to_csv(index=False).encode()).hexdigest()


def cells_dir(run_dir: Path) -> Path:
    return run_dir / "cells"


def read_finished(run_dir: Path, cells: Iterable[Cell]) -> dict[str, dict]:
    """Rows of the cells already stored under ``cells/`` (only those of this grid; a corrupt file counts as not run)."""
    out: dict[str, dict] = {}
    for cell in cells:
        path = cells_dir(run_dir) / f"{cell.cell_id}.json"
        if path.exists():
            try:
                out[cell.cell_id] = json.loads(path.read_text())["row"]
            except (ValueError, KeyError):
                log.warning("ignoring unreadable cell file %s (will be run again)", path)
    return out


def write_cell(run_dir: Path, cell: Cell, row: dict) -> Path:
    path = cells_dir(run_dir) / f"{cell.cell_id}.json"
    text = json.dumps({"cell": cell.as_dict(), "row": row}, sort_keys=False)
    atomic_write(path, lambda p: Path(p).write_text(text))
    (cells_dir(run_dir) / f"{cell.cell_id}.error.txt").unlink(missing_ok=True)
    return path


def assemble_results(spec: StudySpec, cells: list[Cell], rows: dict[str, dict]) -> pd.DataFrame:
    """One row per finished cell, in grid order; the DESIGN.md columns first."""
    records = []
    for cell in cells:
        if cell.cell_id not in rows:
            continue
        row = dict(rows[cell.cell_id])
        # n_synthetic: what the cell's model trained on (the cell function reports it); the grid's n is the request
        row.update(backbone=cell.backbone, regime=cell.regime, n_synthetic_requested=cell.n_synthetic,
                   fold=cell.fold, seed=cell.seed)
        row.setdefault("n_synthetic", cell.n_synthetic)
        row.setdefault("weights", cell.weights)
        row.setdefault("mode", spec.trainer.mode)
        row.setdefault("selection", spec.selection if cell.regime != "real" else "")
        records.append(row)
    df = pd.DataFrame.from_records(records)
    for col in CONTRACT_COLUMNS:  # the contract first, then whatever else the cell function reports
        if col not in df.columns:
            df[col] = np.nan
    return df[CONTRACT_COLUMNS + [c for c in df.columns if c not in CONTRACT_COLUMNS]]


def _config(ws: Workspace, spec: StudySpec, name: str, n_cells: int) -> dict[str, Any]:
    df = ws.load_manifest()
    summary = mf.summarize(df) if not df.empty else {}
    return {
        "name": name,
        "workspace": str(ws.root),
        "spec": spec.resolved(),
        "cells": n_cells,
        "manifest": {"digest": manifest_digest(df), "images": summary.get("images", 0),
                     "real": summary.get("real", 0), "synthetic": summary.get("synthetic", 0),
                     "classes": summary.get("classes", 0)},
        "packages": package_versions(),
    }


def _check_resume(run_dir: Path, config: dict[str, Any]) -> None:
    stored = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    try:  # a run stored before the spec grew keys holds them at their defaults
        stored["spec"] = StudySpec.model_validate(stored.get("spec")).resolved()
    except Exception:  # noqa: BLE001 - an unreadable stored spec is reported as a difference below
        pass
    if stored.get("spec") != config["spec"]:
        old, new = stored.get("spec") or {}, config["spec"]
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise StudyError(
            f"Cannot resume {run_dir}: its spec differs in {', '.join(keys)}. Resume with the same spec, or start "
            "a new run with another --name."
        )
    if stored.get("manifest", {}).get("digest") != config["manifest"]["digest"]:
        raise StudyError(
            f"Cannot resume {run_dir}: the workspace's manifest changed since the run started (images were added, "
            "re-split or excluded), so finished and new cells would not be comparable. Start a new run with another "
            "--name."
        )


def _largest_config(spec: StudySpec) -> "TrainConfig":  # noqa: F821 (lazy import)
    """The training configuration of the spec's cell with the largest n (the one that needs the most images)."""
    return train_config(spec, next(c for c in expand_grid(spec) if c.n_synthetic == spec.max_n))


def _check_folds_and_counts(ws: Workspace, spec: StudySpec, df: pd.DataFrame, *, extra_synthetic: int = 0
                            ) -> list[int]:
    """The spec's folds against the workspace's, and the largest n against what every fold can give (the training
    layer's one check, counting every usable image: no ranking needed, so it fails fast). ``extra_synthetic``: images
    per class that the spec's generator will add before the cells run (they do not exist yet, so they are counted
    whole). Returns the folds the study runs."""
    have_folds = sorted(int(f) for f in mf.real_train(df)["fold"].dropna().unique()) if not df.empty else []
    if not have_folds:
        raise StudyError(f"The workspace has no validation folds yet. Run first: phenosynth split -w {ws.root}")
    if spec.folds > len(have_folds):
        raise SpecError(f"The spec asks for folds: {spec.folds}, but the workspace has {len(have_folds)}. Set "
                        f"folds: {len(have_folds)} in the spec, or re-split: phenosynth split -w {ws.root} "
                        f"--folds {spec.folds}")
    folds = have_folds[: spec.folds]
    if spec.max_n == 0:
        return folds
    if extra_synthetic:
        classes = mf.real_classes(df)
        have = mf.synthetic(df)["label"].value_counts()
        if spec.per_class:
            most = min(int(have.get(c, 0)) for c in classes) + extra_synthetic
            what = f"{most} per class"
        else:
            most = int(have.reindex(classes).fillna(0).sum()) + extra_synthetic * len(classes)
            what = f"{most} in all"
        if spec.max_n > most:
            raise SpecError(f"The spec asks for n = {spec.max_n} synthetic images{' per class' if spec.per_class else ''}"
                            f", but there will be at most {what}, counting the {extra_synthetic} images per class that "
                            "the spec's generator would make. Lower the n values under regimes:, or raise generator: "
                            "per_class:.")
        return folds
    from phenosynth.training.cell import check_synthetic_available

    check_synthetic_available(ws, replace(_largest_config(spec), selection="random"), folds, df)
    return folds


def _will_generate(spec: StudySpec, df: pd.DataFrame) -> bool:
    """True when preparation makes synthetic images with the spec's generator (the workspace has none of it)."""
    return (spec.max_n > 0 and isinstance(spec.generator, GeneratorSpec)
            and not (mf.synthetic(df)["generator"] == spec.generator.name).any())


def check_study(ws: Workspace, spec: StudySpec, *, cell_fn: CellFunctionRef | None = None) -> None:
    """Everything about a study that can be checked without doing any work, so that a study that cannot run fails
    before its run folder exists: the selection strategy, representation, trainer and generator names; and, for the
    default cell function, the workspace's folds, every n against the usable synthetic images, and each backbone's
    weights file (:class:`~phenosynth.errors.MissingWeightsError`) or precomputed feature file.

    A custom ``cell_fn`` decides itself what it needs from the workspace, so only the names are checked for it.
    """
    from phenosynth.models.trainers import TRAINERS
    from phenosynth.synth.ranking import check_representation
    from phenosynth.synth.selection import get_strategy

    get_strategy(spec.selection)
    check_representation(spec.representation)
    trainer = TRAINERS.get(spec.trainer.mode)
    if isinstance(spec.generator, GeneratorSpec):
        from phenosynth.synth.generators import GENERATORS

        GENERATORS.get(spec.generator.name)
    if cell_fn is not None:
        return
    from phenosynth.models.backbones import backbone_spec
    from phenosynth.models.weights import resolve_weights

    df = ws.load_manifest()
    generated = spec.generator.per_class if isinstance(spec.generator, GeneratorSpec) else 0
    _check_folds_and_counts(ws, spec, df, extra_synthetic=generated if _will_generate(spec, df) else 0)
    needs_weights = not spec.features_from or getattr(trainer, "input_kind", "features") != "features"
    from phenosynth.models.views import tta_views

    if getattr(trainer, "input_kind", "features") != "features" and any(b.members for b in spec.backbones):
        raise SpecError(f"Trainer '{spec.trainer.mode}' takes one backbone per cell; ensembles combine feature "
                        "trainers (probe, se-head, gallery).")
    for b in (p for choice in spec.backbones for p in choice.parts()):
        backbone = backbone_spec(b.name)  # unknown names raise here
        if needs_weights:
            resolve_weights(backbone, b.weights)  # MissingWeightsError naming the file and folder; never downloads
        for view in tta_views(spec.tta) if spec.features_from else ():
            path = feature_file(Path(spec.features_from), b.name, view)
            if not path.exists():
                raise StudyError(f"No precomputed features for backbone '{b.name}'"
                                 f"{'' if view == 'identity' else f' (view {view})'}: expected {path} (an .npz with "
                                 "arrays ids (N,) and X (N, d)); fix features_from: in the spec.")


def prepare_study(ws: Workspace, spec: StudySpec, on_progress: ProgressCallback | None = None) -> None:
    """Before the cells: generate + rank synthetic images if the spec names a generator and the workspace has none
    of it, check every n against what is available, and extract features of every backbone once (cached).

    Writes only to the workspace (never to a run folder); :func:`run_study` creates the run folder after it."""
    df = ws.load_manifest()
    if _will_generate(spec, df) and isinstance(spec.generator, GeneratorSpec):
        from phenosynth import synth
        from phenosynth.faces.facepass import load_faces, resolve_face_settings, run_face_pass

        gen = spec.generator
        detector, landmarker = resolve_face_settings(ws, spec.detector, spec.landmarker)
        log.info("generating %d synthetic images per class with %s", gen.per_class, gen.name)
        synth.generate(ws, generator=gen.name, per_class=gen.per_class, seed=gen.seed, options=gen.options,
                       faces=load_faces(ws, detector, landmarker))
        # landmarks + crops of the new images, with the same face setting (processes new images only)
        run_face_pass(ws, detector=detector, landmarker=landmarker)
        df = ws.load_manifest()
    folds = _check_folds_and_counts(ws, spec, df)
    if spec.max_n > 0 and len(mf.synthetic(df)):
        from phenosynth.synth.selection import get_strategy, load_ranking

        if get_strategy(spec.selection).needs_scores and load_ranking(ws, spec.representation).empty:
            from phenosynth import synth

            log.info("ranking synthetic images by %s", spec.representation)
            synth.rank(ws, representation=spec.representation, detector=spec.detector, landmarker=spec.landmarker)
    if spec.max_n > 0:  # exactly, now that the images are ranked
        from phenosynth.training.cell import check_synthetic_available, warn_unranked

        check_synthetic_available(ws, _largest_config(spec), folds, df)
        warn_unranked(ws, _largest_config(spec), df)  # once here; the cells' selections stay quiet about it
    if spec.features_from:
        return
    from phenosynth.models.features import extract_features

    from phenosynth.models.views import tta_views

    ids = study_image_ids(ws)
    jobs = list(dict.fromkeys((p.name, p.weights, view) for b in spec.backbones for p in b.parts()
                              for view in tta_views(spec.tta)))
    for i, (name, weights, view) in enumerate(jobs):
        log.info("features: %s%s (%d images)", name, "" if view == "identity" else f" view {view}", len(ids))
        extract_features(ws, name, ids, weights=weights, preprocessing=spec.preprocessing,
                         detector=spec.detector, landmarker=spec.landmarker, view=view)
        report(on_progress, i + 1, len(jobs))


def is_unstarted_leftover(run_dir: Path) -> bool:
    """True for a run folder that a study failing to start left behind before this was fixed: ``config.yaml`` and
    an empty ``cells/``, nothing else. Such a folder holds no result and may be replaced by a new run of its name."""
    if not run_dir.is_dir():
        return False
    entries = {p.name for p in run_dir.iterdir()}
    return entries <= {"config.yaml", "cells"} and (not (run_dir / "cells").exists()
                                                    or not any((run_dir / "cells").iterdir()))


@locks_workspace
def run_study(
    ws: Workspace | str | os.PathLike[str],
    spec: StudySpec | dict,
    name: str,
    *,
    resume: bool = False,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    cell_fn: CellFunctionRef | None = None,
    build_report: bool = True,
    on_prepare: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> StudyResult:
    """Run (or ``resume``) the study ``name`` of ``spec`` in ``ws``; returns what ran and where the outputs are.

    With the default ``cell_fn`` the study first runs :func:`prepare_study` (generation if asked, features of every
    backbone once); a custom ``cell_fn`` (``"module:function"``, see the module docstring) replaces the training of
    one cell and skips that preparation. ``executor`` is a name in :data:`EXECUTORS` (``local``, ``ray``,
    ``serial``); ``address`` is the Ray cluster to join. ``on_progress(done, total)`` counts cells, resumed ones
    included.
    """
    t0 = time.perf_counter()
    ws = ws if isinstance(ws, Workspace) else Workspace.open(ws)
    spec = spec if isinstance(spec, StudySpec) else spec_from_dict(spec)
    spec = spec.with_paths_from(Path.cwd())  # config.yaml stores absolute paths: re-runnable from anywhere
    if not name or any(ch in name for ch in "/\\") or name.startswith("."):
        raise StudyError(f"Run name '{name}' is not a plain folder name; use e.g. --name paper-2026.")
    execute = EXECUTORS.get(executor)(address=address, workers=workers)  # unknown executor: before any work
    assert_no_leakage(ws)  # a leaking split (e.g. a hand-edited manifest) is refused before anything is written
    cells = expand_grid(spec)
    run_dir = ws.runs_dir / name
    resuming = _check_run_can_start(ws, spec, name, len(cells), resume=resume, cell_fn=cell_fn)

    finished = read_finished(run_dir, cells)
    todo = [c for c in cells if c.cell_id not in finished]
    result = StudyResult(run_dir=run_dir, n_cells=len(cells), n_resumed=len(finished), n_ran=0)
    if todo and cell_fn is None:
        tp = time.perf_counter()
        prepare_study(ws, spec, on_progress=on_prepare)  # writes to the workspace only, never to run_dir
        result.prepare_seconds = time.perf_counter() - tp
    if not resuming:  # the run folder is made only now, after the study could start
        _create_run_folder(run_dir, _config(ws, spec, name, len(cells)))  # the data the cells train on
    report(on_progress, len(finished), len(cells))
    job = CellJob(workspace=str(ws.root), spec=spec.resolved(), cell_fn=cell_fn or DEFAULT_CELL_FUNCTION)
    _run_and_store_cells(execute, job, todo, finished, result, created_run_folder=not resuming,
                         on_progress=on_progress)

    result.results = _write_results(run_dir, spec, cells)
    if result.failed:
        result.seconds = time.perf_counter() - t0
        raise _failed_cells_error(result, n_finished=len(finished))
    if build_report:
        from phenosynth.study.report import build_report as _build_report

        result.report_files = _build_report(run_dir, ws=ws).files
    result.seconds = time.perf_counter() - t0
    return result


def _check_run_can_start(ws: Workspace, spec: StudySpec, name: str, n_cells: int, *, resume: bool,
                         cell_fn: CellFunctionRef | None) -> bool:
    """Everything that can fail without doing work fails here, before the run folder exists: a run ``name`` that
    exists (allowed only with ``resume``, and only for a study run), :func:`check_study`, and a resumed run's spec
    and manifest against this call's. Returns whether the run resumes (its folder holds a started run)."""
    run_dir = ws.runs_dir / name
    if run_dir.exists() and not is_unstarted_leftover(run_dir):
        if not resume:
            raise StudyError(
                f"Run '{name}' already exists in {ws.runs_dir}. Finish it with --resume, or choose another --name."
            )
        if not (run_dir / "config.yaml").exists():
            raise StudyError(f"{run_dir} exists but is not a study run (no config.yaml); choose another --name.")
    check_study(ws, spec, cell_fn=cell_fn)
    resuming = (run_dir / "config.yaml").exists() and not is_unstarted_leftover(run_dir)
    if resuming:
        _check_resume(run_dir, _config(ws, spec, name, n_cells))
    return resuming


def _create_run_folder(run_dir: Path, config: dict[str, Any]) -> None:
    """A new run folder: an empty ``cells/`` and ``config.yaml`` (replacing a leftover of a run that never started,
    which holds no results)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cells_dir(run_dir).mkdir(parents=True)
    text = yaml.safe_dump(config, sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda p: Path(p).write_text(text))


def _run_and_store_cells(execute: Executor, job: CellJob, todo: list[Cell], finished: dict[str, dict],
                         result: StudyResult, *, created_run_folder: bool,
                         on_progress: ProgressCallback | None) -> None:
    """Run the ``todo`` cells with ``execute``, storing each outcome as it arrives: a finished cell's row in
    ``cells/<id>.json`` (added to ``finished``, counted in ``result.n_ran``), a failed cell's traceback in
    ``cells/<id>.error.txt`` (added to ``result.failed``). ``on_progress(done, total)`` after every cell."""
    run_dir = result.run_dir
    try:
        for cell, outcome in (execute(job, todo) if todo else ()):
            if isinstance(outcome, CellFailure):
                log.warning("cell %s failed: %s", cell.key, outcome.message)
                err = cells_dir(run_dir) / f"{cell.cell_id}.error.txt"
                atomic_write(err, lambda p, o=outcome: Path(p).write_text(o.traceback))
                result.failed.append((cell.key, outcome.message))
            else:
                write_cell(run_dir, cell, outcome)
                finished[cell.cell_id] = outcome
                result.n_ran += 1
            report(on_progress, len(finished), result.n_cells)
    except BaseException:
        # The executor itself failed (e.g. Ray could not start) or the user interrupted it: a run folder this call
        # created and that holds no finished or failed cell is removed, so the name stays free.
        if created_run_folder and not any(cells_dir(run_dir).iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _write_results(run_dir: Path, spec: StudySpec, cells: list[Cell]) -> pd.DataFrame:
    """Write ``results.csv`` (every finished cell's row in grid order, without the ``*_seconds`` columns, so it is
    bit-identical across runs) and ``timings.csv`` (those columns); returns the results table."""
    results = assemble_results(spec, cells, read_finished(run_dir, cells))
    timing_cols = [c for c in results.columns if c.endswith("_seconds")]
    timings = results[["backbone", "regime", "n_synthetic", "fold", "seed", *timing_cols]]
    results = results.drop(columns=timing_cols)
    atomic_write(run_dir / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(run_dir / "timings.csv", lambda p: timings.to_csv(p, index=False))
    return results


def _failed_cells_error(result: StudyResult, *, n_finished: int) -> StudyError:
    """The error of a study whose cells ran but some failed (the finished ones are kept for --resume)."""
    first_key, first = result.failed[0]
    return StudyError(
        f"{len(result.failed)} of {result.n_cells} cells failed (first: {first_key}: {first}). "
        f"Tracebacks are in {cells_dir(result.run_dir)}/*.error.txt; fix the cause and rerun with --resume "
        f"({n_finished} finished cells are kept)."
    )
