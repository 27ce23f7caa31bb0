"""A teaching workspace to try the app on: the demo's simulated photos through the pipeline up to the privacy audit,
and a first educator account with a generated password (``phenosynth serve --seed-demo``, ``make serve``).

    dataset -> ingest -> split -> faces -> generate (the demo spec's generator, as ``phenosynth demo``)
            -> faces of the synthetic images -> audit

Each stage is skipped when its output is already there, so a second call only reuses the workspace (and a workspace
made by ``phenosynth demo`` is audited and used as it is). Decks take only the images the audit passed: with a
generator whose images keep the patients' identity (shape-warp) that may be none, which the result reports rather
than fails on.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenosynth.progress import ProgressCallback, report

log = logging.getLogger(__name__)

SEED_STAGES = ("dataset", "ingest", "donors", "split", "faces", "generate", "faces-syn", "audit")
#: The seeded educator's email unless another is given.
DEFAULT_EDUCATOR_EMAIL = "educator@example.org"


@dataclass(frozen=True)
class SeedResult:
    """What :func:`seed_demo` made. ``password`` is the generated password of a **new** educator account (None when
    an educator existed already or the password was given): show it once, it is stored only as an Argon2 hash."""

    workspace: Path
    run: str
    n_synthetic: int
    n_shareable: int
    shareable_by_condition: dict[str, int] = field(default_factory=dict)
    educator_email: str = ""
    educator_created: bool = False
    password: str | None = None


def generated_password() -> str:
    """A random password for a seeded account (128 bits, URL-safe; longer than the accounts' minimum)."""
    return secrets.token_urlsafe(16)


def build_demo_workspace(workspace: str | Path, dataset_dir: str | Path, *,
                         dataset_options: dict[str, Any] | None = None, audit_options: dict[str, Any] | None = None,
                         per_class: int | None = None, workers: int | None = None, seed: int = 0,
                         on_progress: ProgressCallback | None = None) -> tuple[Any, str]:
    """The demo's simulated photos in ``dataset_dir``, ingested into ``workspace``, split, faces found, synthetic faces
    generated with the demo spec's generator and audited; ``(Workspace, run)``. ``dataset_options``: arguments of
    :func:`~phenosynth.demo.dataset.build_demo_dataset` (a tiny dataset for tests); ``audit_options``: of
    :func:`~phenosynth.audit.privacy.audit` (e.g. another ``embedder``); ``per_class``: synthetic images per condition
    (default: the demo spec's); ``workers``: processes of the face pass and of generation (default: every core;
    1 runs them in this process)."""
    from phenosynth.audit.privacy import audit, audit_dir
    from phenosynth.data import manifest as mf
    from phenosynth.data.filenames import safe_name
    from phenosynth.data.ingest import ingest
    from phenosynth.data.split import split
    from phenosynth.data.workspace import Workspace
    from phenosynth.demo.dataset import DONORS_CSV, build_demo_dataset
    from phenosynth.demo.run import DEFAULT_GENERATOR
    from phenosynth.faces import run_face_pass
    from phenosynth.study.spec import GeneratorSpec, load_spec
    from phenosynth.synth import generate

    spec = load_spec("demo")
    gen = spec.generator if isinstance(spec.generator, GeneratorSpec) else GeneratorSpec(name=DEFAULT_GENERATOR)
    dataset_dir = Path(dataset_dir).expanduser().absolute()
    meta = dataset_dir / "demo_metadata.csv"
    ws = Workspace.open(workspace, create=True)
    run = safe_name(f"{gen.name}-seed{gen.seed}")  # generate's own default run name, given explicitly

    def stage(key: str, done: bool, fn) -> None:
        log.info("seed: %s%s", key, " already done, skipped" if done else "")
        if not done:
            fn()
        report(on_progress, SEED_STAGES.index(key) + 1, len(SEED_STAGES))

    stage("dataset", meta.exists(), lambda: build_demo_dataset(dataset_dir, seed=seed, **dict(dataset_options or {})))
    stage("ingest", ws.manifest_path.exists(), lambda: ingest(meta, ws))
    donors_csv = dataset_dir / DONORS_CSV  # the donor pool: the identities of the demo's identity-free generator
    stage("donors", not donors_csv.exists() or bool((ws.load_manifest()["source"] == mf.DONOR).any()),
          lambda: ingest(donors_csv, ws, donors=True))
    stage("split", bool(ws.load_manifest()["split"].notna().any()),
          lambda: split(ws, test_size=0.25, folds=spec.folds, seed=42))
    stage("faces", ws.faces_path.exists(), lambda: run_face_pass(ws, workers=workers))
    have = bool((mf.synthetic(ws.load_manifest())["generator"] == gen.name).any())
    stage("generate", have, lambda: generate(ws, generator=gen.name, per_class=per_class or gen.per_class,
                                             seed=gen.seed, name=run, n_jobs=workers, options=gen.options))
    stage("faces-syn", False, lambda: run_face_pass(ws, workers=workers))  # only the new (synthetic) images
    stage("audit", (audit_dir(ws, run) / "audit.parquet").exists(),
          lambda: audit(ws, run, **dict(audit_options or {})))
    return ws, run


def seed_demo(workspace: str | Path, dataset_dir: str | Path, *, educator_email: str = DEFAULT_EDUCATOR_EMAIL,
              password: str | None = None, db_url: str | None = None, dataset_options: dict[str, Any] | None = None,
              audit_options: dict[str, Any] | None = None, per_class: int | None = None, workers: int | None = None,
              passwords: Any = None, on_progress: ProgressCallback | None = None) -> SeedResult:
    """An audited demo workspace (:func:`build_demo_workspace`) and its first educator account: ``educator_email``
    with ``password``, or a generated one returned in :attr:`SeedResult.password` (never written anywhere). An existing
    educator account is left as it is. Counts the images a deck may take (the audit gate)."""
    from phenosynth.audit.export import shareable_images
    from phenosynth.edu import db as edu_db
    from phenosynth.edu.accounts import ensure_first_educator
    from phenosynth.edu.security import Passwords

    ws, run = build_demo_workspace(workspace, dataset_dir, dataset_options=dataset_options,
                                   audit_options=audit_options, per_class=per_class, workers=workers,
                                   on_progress=on_progress)
    rows, frame, _ = shareable_images(ws, run)
    by_condition = {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
    engine = edu_db.make_engine(db_url or edu_db.default_url(ws.root))
    try:
        edu_db.migrate(engine)
        new_password = password or generated_password()
        with edu_db.session_factory(engine)() as db:
            made = ensure_first_educator(db, passwords or Passwords(), educator_email, new_password)
    finally:
        engine.dispose()
    log.info("seeded %s: run %s, %d of %d synthetic images shareable", ws.root, run, len(rows), len(frame))
    return SeedResult(workspace=ws.root, run=run, n_synthetic=len(frame), n_shareable=len(rows),
                      shareable_by_condition=by_condition, educator_email=made.email, educator_created=made.created,
                      password=new_password if made.created and password is None else None)


__all__ = ["seed_demo", "build_demo_workspace", "SeedResult", "generated_password", "DEFAULT_EDUCATOR_EMAIL",
           "SEED_STAGES"]
