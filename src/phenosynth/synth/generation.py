"""``phenosynth generate``: fit a registered generator on the real training faces of a workspace and save its samples.

Images go to ``WS/synthetic/<run>/<label>/<index>_<id>.png``; each becomes a manifest row with ``source=synthetic``,
``generator``, ``parents`` (its pixel parents: the training images or donor faces whose pixels it holds),
``statistic_parents`` (training images that only shaped a statistic it was drawn from), ``params`` (JSON) and
``split=train``, and ``WS/synthetic/<run>/run.json`` records the run (its fit set ``training_images``, the role of
that fit set ``fit_set_role``, the donors it used, and ``uses_patient_pixels``). A generator that takes identities
(``accepts_identities``) is handed the workspace's donor faces that have landmarks. Work is spread over processes by chunks of a class; every image is
a pure function of ``(seed, label, index)``, so the output does not depend on the number of processes, and running
the same command again adds nothing new.

A generator with ``in_process`` (a GPU model such as ``dreambooth-lora``) is never forked into CPU worker processes:
it samples in this process, or with ``executor="ray"`` as one Ray task per condition (one GPU each, see
:mod:`phenosynth.synth.scaleout`); it gets the run's folder before ``fit`` (``Generator.bind_run``) to keep its
per-condition models there. ``blank_redraws`` in an image's params (black or blank outputs drawn again) are summed in
``run.json`` and the summary.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.data.filenames import safe_name
from phenosynth.data.manifest import (
    REAL, SYNTHETIC, TRAIN, append_rows, donors, params_json, real_classes, require_real_train,
)
from phenosynth.data.workspace import Workspace, atomic_write, locks_workspace
from phenosynth.errors import LeakageError, PhenosynthError
from phenosynth.parallel import worker_count, worker_map
from phenosynth.progress import ProgressCallback, report
from phenosynth.synth.generators import Generator, create_generator
from phenosynth.synth.generators.base import Identities, SyntheticSample
from phenosynth.synth.scaleout import check_executor

log = logging.getLogger(__name__)

#: Images per unit of parallel work (progress granularity).
CHUNK = 10


@dataclass
class GenerateSummary:
    """What ``generate`` did (the CLI prints it)."""

    run: str
    generator: str
    seed: int
    out_dir: Path
    classes: int
    images: int
    new_images: int
    per_class: dict[str, int]
    training_images: int
    skipped_training: dict[str, str] = field(default_factory=dict)  # image_id -> reason
    classes_without_faces: list[str] = field(default_factory=list)  # real classes no training face represents
    seconds: float = 0.0
    workers: int = 1
    resumed_images: int = 0  # images an interrupted earlier call of this run left on disk, taken as they were
    orphans_removed: list[str] = field(default_factory=list)  # files of an interrupted call this run did not make
    temp_files_removed: int = 0  # half-written files of a killed call
    uses_patient_pixels: bool = False  # run.json's: the images hold patient pixels (exports/sheets refuse by default)
    notes: list[str] = field(default_factory=list)  # what the user should be told (the generator's notes())
    blank_redraws: int = 0  # black or blank outputs that were drawn again (new images of this call)
    executor: str = "local"

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 -> PNG bytes (deterministic: fixed compression level, no metadata)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


# --- one chunk of a class (in a worker process, or in this one) ----------------------------------------------------


@dataclass(frozen=True)
class _ChunkMaker:
    """Makes chunks of one run's images: built once per process that runs the run (the fitted generator is sent to a
    worker process once, with its pool's initializer)."""

    generator: Generator
    out_dir: Path
    root: Path
    seed: int
    run: str
    known: frozenset[str]  # image_ids already in the manifest

    def __call__(self, task: tuple[str, int, int]) -> tuple[str, int, list[dict[str, Any]]]:
        """Generate images ``start .. stop - 1`` of one class, write the new ones; return (label, images made,
        manifest rows of the images not already in the manifest)."""
        from phenosynth.data.imageio import sha256_bytes

        label, start, stop = task
        folder = self.out_dir / safe_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        rows, made = [], 0
        for s in self.generator.sample(stop - start, self.seed, labels=[label], start=start):
            data = encode_png(s.image)
            image_id = sha256_bytes(data)
            made += 1
            path = folder / f"{s.index:05d}_{image_id[:12]}.png"
            if image_id in self.known:  # the same bytes are already in the manifest (an earlier run)
                continue
            if not path.exists():  # one left by an interrupted call is complete (written under a temporary name)
                atomic_write(path, lambda p, d=data: Path(p).write_bytes(d))
            rows.append(self._row(s, image_id, path))
        return label, made, rows

    def _row(self, s: SyntheticSample, image_id: str, path: Path) -> dict[str, Any]:
        import imagehash
        from PIL import Image

        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            rel = str(path)
        return {
            "image_id": image_id,
            "path": rel,
            "label": s.label,
            "subject_id": pd.NA,
            "source": SYNTHETIC,
            "generator": self.generator.name,
            "parents": list(s.parents),
            "statistic_parents": list(s.statistic_parents),
            "split": TRAIN,
            "fold": pd.NA,
            "exclude_reason": pd.NA,
            "width": int(s.image.shape[1]),
            "height": int(s.image.shape[0]),
            "phash": str(imagehash.phash(Image.fromarray(s.image))),
            "params": params_json({"run": self.run, **s.params}),
            "_index": s.index,
        }


# --- driver ---------------------------------------------------------------------------------------------------------


def leftover_files(ws: Workspace, run_dir: Path, manifest: pd.DataFrame) -> tuple[list[Path], list[Path]]:
    """What a killed ``generate`` can leave in ``run_dir``: (temporary files of writes cut short, images that are
    not in the manifest because the call died before it saved the manifest)."""
    if not run_dir.exists():
        return [], []
    temp = sorted(p for p in run_dir.rglob(".*.tmp") if p.is_file())
    listed = set(manifest["path"].astype(str))
    images = sorted(p for p in run_dir.rglob("*.png") if p.is_file() and not p.name.startswith("."))
    return temp, [p for p in images if ws.relpath(p) not in listed and str(p) not in listed]


def _warn_about_other_unfinished_runs(ws: Workspace, run: str, manifest: pd.DataFrame) -> None:
    for other in sorted(p for p in ws.synthetic_dir.glob("*") if p.is_dir() and p.name != run):
        temp, orphans = leftover_files(ws, other, manifest)
        if temp or orphans:
            log.warning(
                "Run %s was interrupted: %d image(s) not in the manifest and %d temporary file(s) in %s. Finish it "
                "with the same command (generate --name %s), or delete that folder.",
                other.name, len(orphans), len(temp), other, other.name,
            )  # fmt: skip


def _training_faces(
    ws: Workspace, train: pd.DataFrame, faces: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of ``train`` that have landmarks (+ a ``landmarks`` column), and the skipped ones with a reason."""
    ids = train["image_id"].astype(str)
    have = ids.isin(faces.index)
    if not have.any():
        raise PhenosynthError(
            f"None of the {len(train)} real training images has face landmarks. "
            f"Run first: phenosynth faces -w {ws.root}"
        )
    skipped = {i: "no face landmarks (no face found, or not processed by `phenosynth faces`)" for i in ids[~have]}
    kept = train[have.to_numpy()].copy()
    kept["landmarks"] = [np.asarray(faces.at[i, "landmarks"], dtype=np.float64) for i in kept["image_id"].astype(str)]
    npts = kept["landmarks"].map(len)
    main = int(npts.mode().iloc[0])
    if (npts != main).any():
        for i in kept.loc[npts != main, "image_id"].astype(str):
            skipped[i] = f"landmarks with a different number of points than the others ({main})"
        kept = kept[npts == main]
    return kept, skipped


@locks_workspace
def generate(
    ws: Workspace,
    generator: str = "shape-warp",
    per_class: int = 100,
    seed: int = 0,
    name: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    n_jobs: int | None = None,
    faces: pd.DataFrame | None = None,
    on_progress: ProgressCallback | None = None,
    executor: str = "local",
) -> GenerateSummary:
    """Fit ``generator`` on the workspace's real training faces and save ``per_class`` images per condition.

    Args:
        ws: the workspace (split, with the face pass run).
        generator: registry name (``phenosynth.synth.generators.list_generators()``).
        per_class: images per condition.
        seed: the run's seed; image ``i`` of a condition is a pure function of (seed, condition, i).
        name: run name (folder under ``WS/synthetic``); default ``<generator>-seed<seed>``.
        options: generator constructor options (``None`` values keep its defaults).
        classes: only these conditions (default: every condition with a training face).
        n_jobs: worker processes (default: :func:`phenosynth.parallel.worker_count`, every core; they start as
            :mod:`phenosynth.parallel` says, so a script that calls this needs the usual
            ``if __name__ == "__main__":`` guard); ``n_jobs=1`` uses none.
        faces: landmarks table indexed by image_id with a ``landmarks`` ``(K, 2)`` column (default: ``load_faces``).
        on_progress: ``(done, total)`` callback, in images.
        executor: ``local`` (processes of this machine; a generator with ``in_process`` runs in this one) or ``ray``
            (an ``in_process`` generator trains and samples each condition as a Ray task with one GPU).

    Raises:
        PhenosynthError: no split yet, no training faces, unknown generator or class.
        LeakageError: never in normal use; raised if anything but real training images reaches the generator.
    """
    t0 = time.perf_counter()
    if per_class < 1:
        raise PhenosynthError(f"--per-class must be at least 1 (got {per_class}).")
    check_executor(executor)
    manifest = ws.load_manifest()
    run = safe_name(name or f"{generator}-seed{seed}")
    out_dir = ws.synthetic_dir / run
    gen, kept, skipped, donor_ids = _fitted_generator(ws, manifest, generator, options, faces, out_dir, executor)
    todo = _classes_to_make(gen, classes)
    temp_files, orphans = _clean_interrupted_call(ws, run, out_dir, manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    maker_args = (gen, out_dir, ws.root, int(seed), run, frozenset(manifest["image_id"].astype(str)))
    if gen.in_process and executor == "ray":
        rows, made, workers = _make_images_on_ray(maker_args, todo, per_class, on_progress)
    else:
        rows, made, workers = _make_images(maker_args, todo, per_class, 1 if gen.in_process else n_jobs, on_progress)
    new = _checked_new_rows(rows, set(kept["image_id"].astype(str)), set(donor_ids), generator)
    redraws = sum(int(json.loads(p).get("blank_redraws", 0)) for p in new["params"]) if len(new) else 0
    seconds = time.perf_counter() - t0
    record = {
        "run": run, "generator": generator, "seed": int(seed), "per_class": int(per_class),
        "settings": gen.get_params(), "classes": len(todo), "images": sum(made.values()), "new_images": len(new),
        "training_images": sorted(_fit_set(out_dir, gen.fit_image_ids_)), "fit_set_role": gen.fit_set_role,
        "donor_images": sorted(donor_ids), "uses_patient_pixels": bool(gen.uses_patient_pixels),
        "skipped_training": skipped, "seconds": round(seconds, 3), "workers": workers, "executor": executor,
        "blank_redraws": redraws,
    }  # fmt: skip
    # The record of the run's fit set goes first, then the manifest rows (whose images are all written by now): a
    # kill between the two leaves images that the next call resumes, never rows whose run the lineage rule cannot see.
    atomic_write(out_dir / "run.json", lambda p: Path(p).write_text(json.dumps(record, indent=2, default=str)))
    manifest, added = _append_to_manifest(ws, new)
    resumed, stale = _sort_out_orphans(ws, run, orphans, new)
    summary = GenerateSummary(
        run=run,
        generator=generator,
        seed=int(seed),
        out_dir=out_dir,
        classes=len(todo),
        images=sum(made.values()),
        new_images=added,
        per_class={str(k): int(v) for k, v in made.items()},
        training_images=len(gen.fit_image_ids_),
        skipped_training=skipped,
        classes_without_faces=sorted(set(real_classes(manifest)) - set(gen.classes_)),
        seconds=seconds,
        workers=workers,
        resumed_images=len(resumed),
        orphans_removed=[ws.relpath(p) for p in stale],
        temp_files_removed=len(temp_files),
        uses_patient_pixels=bool(gen.uses_patient_pixels),
        notes=gen.notes(),
        blank_redraws=redraws,
        executor=executor,
    )
    log.info("generated %d images (%d new) in %.1fs with %d workers", summary.images, summary.new_images, seconds,
             workers)
    return summary


def _fitted_generator(
    ws: Workspace, manifest: pd.DataFrame, generator: str, options: dict[str, Any] | None, faces: pd.DataFrame | None,
    run_dir: Path, executor: str,
) -> tuple[Generator, pd.DataFrame, dict[str, str], list[str]]:
    """The generator fitted on the real training faces (and the donors, if it takes identities); the training rows it
    saw (with ``landmarks``); the training images it did not see, with the reason; the donor image_ids it got."""
    real = manifest[manifest["source"] == REAL]
    if real.empty:
        raise PhenosynthError(f"Workspace {ws.root} has no real images. Run first: phenosynth ingest SRC -w {ws.root}")
    train = require_real_train(manifest, ws.root)
    gen = create_generator(generator, **(options or {}))
    gen.bind_run(run_dir, executor=executor)
    if faces is None:
        from phenosynth.faces.facepass import load_faces

        faces = load_faces(ws)
    kept, skipped = _training_faces(ws, train, faces)
    if skipped:
        log.warning("%d real training image(s) are not used by the generator (no usable landmarks)", len(skipped))

    from phenosynth.data.imageio import load_rgb

    images = [load_rgb(ws.resolve(p)) for p in kept["path"].astype(str)]
    identities = _donor_identities(ws, manifest, faces) if gen.accepts_identities else None
    gen.fit(
        images,
        np.stack(list(kept["landmarks"])),
        kept["label"].astype(str).tolist(),
        image_ids=kept["image_id"].astype(str).tolist(),
        splits=kept["split"].tolist(),
        sources=kept["source"].tolist(),
        folds=kept["fold"].tolist(),
        subjects=kept["subject_id"].tolist(),
        identities=identities,
    )
    # the donors it took (a generator may leave them aside, e.g. phenotype-transfer identities=morphs)
    used = set(getattr(gen, "donor_ids_", [] if identities is None else identities.image_ids))
    return gen, kept, skipped, [] if identities is None else [i for i in identities.image_ids if i in used]


def _donor_identities(ws: Workspace, manifest: pd.DataFrame, faces: pd.DataFrame) -> Identities | None:
    """The workspace's usable donor faces that have landmarks (with as many points as the training faces' landmarker
    gives), or None when there are none."""
    from phenosynth.data.imageio import load_rgb

    rows = donors(manifest)
    rows = rows[rows["image_id"].astype(str).isin(faces.index)]
    if rows.empty:
        return None
    ids = rows["image_id"].astype(str).tolist()
    missing = len(donors(manifest)) - len(ids)
    if missing:
        log.warning("%d donor face(s) have no landmarks and lend no identity (run `phenosynth faces`)", missing)
    return Identities(
        images=[load_rgb(ws.resolve(p)) for p in rows["path"].astype(str)],
        landmarks=np.stack([np.asarray(faces.at[i, "landmarks"], dtype=np.float64) for i in ids]),
        image_ids=ids, sources=rows["source"].tolist(), splits=rows["split"].tolist(),
        subjects=rows["subject_id"].astype(str).tolist(),
    )


def _classes_to_make(gen: Generator, classes: list[str] | None) -> list[str]:
    """``classes`` (default: every class the generator was fitted on); a class it has no face of is an error."""
    todo = gen.classes_ if classes is None else [str(c) for c in classes]
    unknown = sorted(set(todo) - set(gen.classes_))
    if unknown:
        raise PhenosynthError(f"No training face for condition(s) {unknown}; choose among {gen.classes_[:10]}...")
    return todo


def _append_to_manifest(ws: Workspace, new: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The manifest (as saved) with the ``new`` rows, and how many rows it gained."""
    manifest = ws.load_manifest()
    before = len(manifest)
    if len(new):
        manifest = append_rows(manifest, new)
        ws.save_manifest(manifest)
    return manifest, len(manifest) - before


def _clean_interrupted_call(
    ws: Workspace, run: str, out_dir: Path, manifest: pd.DataFrame
) -> tuple[list[Path], list[Path]]:
    """Remove the temporary files a killed call of this run left; return them and its complete images that never
    reached the manifest (taken as they are if this call makes them again, every image being a pure function of
    seed, condition and index; else removed at the end)."""
    temp_files, orphans = leftover_files(ws, out_dir, manifest)
    for p in temp_files:
        p.unlink(missing_ok=True)
    if temp_files or orphans:
        log.warning("Run %s was interrupted before: %d image(s) not in the manifest, %d temporary file(s) removed; "
                    "resuming it", run, len(orphans), len(temp_files))
    _warn_about_other_unfinished_runs(ws, run, manifest)
    return temp_files, orphans


def _make_images(
    maker_args: tuple, todo: list[str], per_class: int, n_jobs: int | None, on_progress: ProgressCallback | None
) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """Make ``per_class`` images of every class in ``todo`` in chunks of :data:`CHUNK` by ``_ChunkMaker(*maker_args)``
    on :func:`phenosynth.parallel.worker_count` processes: (new manifest rows, images made per class, processes)."""
    tasks = [(label, s, min(s + CHUNK, per_class)) for label in todo for s in range(0, per_class, CHUNK)]
    total = len(todo) * per_class
    workers = worker_count(n_jobs, len(tasks))
    rows: list[dict[str, Any]] = []
    made: dict[str, int] = {label: 0 for label in todo}
    report(on_progress, 0, total)
    with worker_map(workers, _ChunkMaker, *maker_args) as run:
        for label, n_made, chunk in run(tasks, 1):
            made[label] += n_made
            rows.extend(chunk)
            report(on_progress, sum(made.values()), total)
    return rows, made, workers


def _make_images_on_ray(
    maker_args: tuple, todo: list[str], per_class: int, on_progress: ProgressCallback | None
) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """As :func:`_make_images`, one Ray task per class (:func:`phenosynth.synth.scaleout.remote_tasks`): (new
    manifest rows, images made per class, tasks)."""
    from phenosynth.synth.scaleout import ray_session, remote_tasks

    rows: list[dict[str, Any]] = []
    made: dict[str, int] = {label: 0 for label in todo}
    report(on_progress, 0, len(todo) * per_class)
    with ray_session() as ray:
        for _, (label, n_made, chunk) in remote_tasks(ray, _make_chunk, [(c, 0, per_class) for c in todo],
                                                      maker_args):
            made[label] += n_made
            rows.extend(chunk)
            report(on_progress, sum(made.values()), len(todo) * per_class)
    return rows, made, len(todo)


def _make_chunk(task: tuple[str, int, int], maker_args: tuple) -> tuple[str, int, list[dict[str, Any]]]:
    return _ChunkMaker(*maker_args)(task)


def _checked_new_rows(rows: list[dict[str, Any]], train_ids: set[str], donor_ids: set[str],
                      generator: str) -> pd.DataFrame:
    """The new manifest rows in (label, index) order; :class:`LeakageError` if a pixel parent is neither a training
    image nor a donor, or a statistic parent is not a training image."""
    columns = ["image_id", "label", "parents", "statistic_parents", "_index"]
    new = pd.DataFrame(rows, columns=list(rows[0]) if rows else columns)
    new = new.sort_values(["label", "_index"], kind="mergesort").drop(columns="_index")
    bad = [p for ps in new["parents"] for p in ps if p not in train_ids and p not in donor_ids]
    bad += [p for ps in new["statistic_parents"] for p in ps if p not in train_ids]
    if bad:  # the interface guarantees this cannot happen; refuse to write rather than trust it
        raise LeakageError(f"Generator '{generator}' reported parents outside the training set (e.g. {bad[0]}).")
    return new


def _fit_set(out_dir: Path, fitted: list[str]) -> set[str]:
    """The training images the generator learned from in this call (``Generator.fit_image_ids_``), and in every
    earlier call with this run name (they stay on record)."""
    fit_set = set(fitted)
    if (out_dir / "run.json").exists():
        try:
            fit_set |= set(json.loads((out_dir / "run.json").read_text()).get("training_images", []))
        except ValueError:
            log.warning("Could not read %s; rewriting it", out_dir / "run.json")
    return fit_set


def _sort_out_orphans(ws: Workspace, run: str, orphans: list[Path], new: pd.DataFrame) -> tuple[list[Path], list[Path]]:
    """The images of an interrupted call that this call made again (resumed), and the others (removed)."""
    made_paths = {ws.resolve(str(p)) for p in new["path"]} if len(new) else set()
    resumed = [p for p in orphans if p in made_paths]
    stale = [p for p in orphans if p not in made_paths]
    for p in stale:  # e.g. an interrupted call with a larger --per-class: not this run's images now
        p.unlink(missing_ok=True)
    if stale:
        log.warning("Removed %d image(s) of an interrupted call of run %s that this call did not make (e.g. %s)",
                    len(stale), run, stale[0].name)
    return resumed, stale
