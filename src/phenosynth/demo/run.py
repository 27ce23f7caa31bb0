"""The end-to-end demo: the embedded demo dataset through every stage, ending in a study report.

    dataset -> ingest -> split -> faces -> generate (shape-warp) -> faces of the synthetic images -> rank
            -> study (study/specs/demo.yaml)

Each stage is skipped when its output is already in ``OUT`` (so a second ``phenosynth demo`` reuses the workspace
and only runs a new study, under a new run name), which also makes an interrupted demo cheap to finish.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenosynth.data import manifest as mf
from phenosynth.data.workspace import Workspace
from phenosynth.progress import ProgressCallback, report
from phenosynth.study.runner import StudyResult, run_study
from phenosynth.study.spec import GeneratorSpec, StudySpec, load_spec

log = logging.getLogger(__name__)

STAGES = ("dataset", "ingest", "split", "faces", "generate", "faces-syn", "rank", "study")


@dataclass
class DemoResult:
    """Where the demo put things and how long each stage took (seconds; 0 when skipped as already done)."""

    out: Path
    workspace: Path
    run_dir: Path
    study: StudyResult
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


# --- stages: each runs in a fresh process (the stages' own worker pools fork, which is only safe from a process
# that has not yet started BLAS/OpenMP/torch threads; a long-lived demo process has) --------------------------------
def in_fresh_process(fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` in a new (spawned) Python process and wait; its exceptions are raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(fn, *args).result()


def _make_dataset(data_dir: str, seed: int, options: dict[str, Any]) -> None:
    from phenosynth.demo.dataset import build_demo_dataset

    build_demo_dataset(data_dir, seed=seed, **options)


def _ingest(meta: str, root: str) -> None:
    from phenosynth.data.ingest import ingest

    ingest(meta, Workspace.open(root))


def _split(root: str, folds: int) -> None:
    from phenosynth.data.split import split

    split(Workspace.open(root), test_size=0.25, folds=folds, seed=42)


def _faces(root: str) -> None:
    from phenosynth.faces import run_face_pass

    run_face_pass(Workspace.open(root))


def _generate(root: str, generator: str, per_class: int, seed: int) -> None:
    from phenosynth import synth

    synth.generate(Workspace.open(root), generator=generator, per_class=per_class, seed=seed)


def _rank(root: str, representation: str) -> None:
    from phenosynth import synth

    synth.rank(Workspace.open(root), representation=representation)


def free_run_name(ws: Workspace, base: str = "demo") -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first run name not yet used in ``ws``."""
    name, i = base, 1
    while (ws.runs_dir / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def run_demo(
    out: str | os.PathLike[str] = "phenosynth-demo",
    *,
    name: str | None = None,
    resume: bool = False,
    spec: StudySpec | None = None,
    executor: str = "local",
    seed: int = 0,
    dataset_options: dict[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
) -> DemoResult:
    """Run the whole demo into ``out`` (``out/dataset``: the images; ``out/workspace``: the workspace).

    ``name`` is the study's run name (default ``demo``, or the next free ``demo-N``: a previous demo's run is never
    overwritten); ``resume`` finishes the run ``name`` if it was interrupted. ``on_progress`` counts stages.
    ``dataset_options``: keyword arguments of :func:`~phenosynth.demo.dataset.build_demo_dataset` (e.g. fewer
    ``conditions`` or ``n_subjects`` for a quick check; default: the full demo dataset).
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser().resolve()
    spec = spec or load_spec("demo")
    data_dir = out / "dataset"
    ws = Workspace.open(out / "workspace", create=True)
    timings: dict[str, float] = {}

    def stage(key: str, done: bool, fn) -> None:
        t = time.perf_counter()
        if done:
            log.info("demo: %s already done, skipped", key)
        else:
            log.info("demo: %s", key)
            fn()
        timings[key] = time.perf_counter() - t
        report(on_progress, STAGES.index(key) + 1, len(STAGES))

    meta = data_dir / "demo_metadata.csv"
    root = str(ws.root)
    stage("dataset", meta.exists(), lambda: in_fresh_process(_make_dataset, str(data_dir), seed,
                                                                  dict(dataset_options or {})))
    stage("ingest", ws.manifest_path.exists(), lambda: in_fresh_process(_ingest, str(meta), root))
    stage("split", bool(ws.load_manifest()["split"].notna().any()),
          lambda: in_fresh_process(_split, root, spec.folds))
    stage("faces", ws.faces_path.exists(), lambda: in_fresh_process(_faces, root))
    gen = spec.generator if isinstance(spec.generator, GeneratorSpec) else GeneratorSpec(name="shape-warp")
    have_synthetic = bool((mf.synthetic(ws.load_manifest())["generator"] == gen.name).any())
    stage("generate", have_synthetic, lambda: in_fresh_process(_generate, root, gen.name, gen.per_class, gen.seed))
    stage("faces-syn", False, lambda: in_fresh_process(_faces, root))  # processes only the new (synthetic) images
    stage("rank", False, lambda: in_fresh_process(_rank, root, spec.representation))

    run_name = name or free_run_name(ws)
    holder: dict[str, StudyResult] = {}
    stage("study", False, lambda: holder.setdefault(
        "r", run_study(ws, spec, run_name, resume=resume, executor=executor)))
    result = holder["r"]
    return DemoResult(out=out, workspace=ws.root, run_dir=result.run_dir, study=result, timings=timings,
                      seconds=time.perf_counter() - t0)
