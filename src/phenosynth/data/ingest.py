"""Ingest: bring a user's photos (an external synthetic set, or donor faces) into a workspace's manifest.

Donor faces (``donors=True``) are faces of people who are not patients and lend their identity to identity-free
generators: they get ``source=donor`` and no label, split or fold. A folder's sub-folder names are never labels for
them: each sub-folder is one donor person (its name the ``subject_id``), a file at the top level is its own subject.

Every file looked at and not taken is written to ``ingest_report.csv`` with a reason; a batch never dies on one bad
file; running the same ingest twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from phenosynth.data.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, inspect_bytes
from phenosynth.data.leakage import DEFAULT_NEAR_DUPLICATE_BITS, exclude_patient_donors
from phenosynth.data.manifest import DONOR, MANIFEST_COLUMNS, REAL, SYNTHETIC, append_rows, real_classes
from phenosynth.data.workspace import LOCK_FILE, LOCK_HOLDER_FILE, Workspace, atomic_write, locks_workspace
from phenosynth.errors import PhenosynthError
from phenosynth.parallel import worker_count, worker_map
from phenosynth.progress import ProgressCallback, report
from phenosynth.registry import Registry

log = logging.getLogger(__name__)

REPORT_COLUMNS = ["source", "path", "label", "reason", "detail"]
CSV_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class Candidate:
    """A file a layout proposes to ingest."""

    path: Path  # as found (absolute, not symlink-resolved)
    shown: str  # path as the user knows it (relative to the source) for the report
    label: str
    subject_id: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Skip:
    """A file looked at and not taken."""

    shown: str
    reason: str  # short category, counted in the summary
    detail: str
    label: str | None = None


@dataclass(frozen=True)
class LayoutOptions:
    path_col: str = "path"
    label_col: str = "label"
    subject_col: str | None = None
    subject_regex: str | None = None
    #: Donor faces: no label (a folder's sub-folders are donor persons, a table needs no label column).
    donors: bool = False


@dataclass
class IngestResult:
    source: Path
    layout: str
    looked_at: int = 0
    added: int = 0
    already_present: int = 0
    skipped: Counter = field(default_factory=Counter)
    unknown_labels: list[str] = field(default_factory=list)
    report_path: Path | None = None
    source_kind: str = REAL  # REAL, SYNTHETIC or DONOR: what the taken images became
    #: Donor faces (of the whole manifest) excluded as near-duplicates of patient photos, after this ingest.
    donors_like_patients: list[str] = field(default_factory=list)

    @property
    def taken(self) -> int:
        return self.added + self.already_present


Layout = Callable[[Path, LayoutOptions], tuple[list[Candidate], list[Skip]]]
LAYOUTS: Registry[tuple[list[Candidate], list[Skip]]] = Registry("layout")


# ---------------------------------------------------------------------------------------------------------------------
# Layouts


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini", "__MACOSX")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _files_under(folder: Path, root: Path) -> Iterator[Path | Skip]:
    """Every regular file under ``folder`` (sorted), or a :class:`Skip` for hidden entries and foreign symlinks."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            p = here / d
            shown = p.relative_to(root).as_posix()
            if _is_hidden(d):
                yield Skip(shown + "/", "hidden", "hidden folder ignored")
            elif p.is_symlink():
                yield Skip(shown + "/", "symlink", f"symbolic link to a folder not followed ({os.readlink(p)})")
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and not (here / d).is_symlink())
        for name in sorted(filenames):
            p = here / name
            shown = p.relative_to(root).as_posix()
            if _is_hidden(name):
                yield Skip(shown, "hidden", "hidden file ignored")
                continue
            if p.is_symlink():
                target = p.resolve()
                if not target.exists():
                    yield Skip(shown, "symlink", f"broken symbolic link ({os.readlink(p)})")
                    continue
                if not _inside(target, real_root):
                    yield Skip(shown, "symlink", f"symbolic link to {target}, outside the source folder: not followed")
                    continue
            yield p


def _subject_from(regex: re.Pattern[str] | None, shown: str) -> str | None:
    if regex is None:
        return None
    m = regex.search(shown)
    return (m.group(1) if m.groups() else m.group(0)) if m else None


@LAYOUTS.register("folder")
def folder_layout(src: Path, opts: LayoutOptions) -> tuple[list[Candidate], list[Skip]]:
    """One sub-folder per class; files in nested sub-folders belong to the top-level class. Donors: see
    :func:`donor_folder_layout`."""
    if not src.is_dir():
        raise PhenosynthError(f"Layout 'folder' needs a folder, but {src} is a file.")
    if opts.donors:
        return donor_folder_layout(src, opts)
    regex = re.compile(opts.subject_regex) if opts.subject_regex else None
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    for entry in sorted(src.iterdir()):
        shown = entry.relative_to(src).as_posix()
        if _is_hidden(entry.name):
            skips.append(Skip(shown + ("/" if entry.is_dir() else ""), "hidden", "hidden entry ignored"))
        elif entry.is_symlink() and entry.is_dir():
            skips.append(Skip(shown + "/", "symlink", f"symbolic link to a folder not followed ({os.readlink(entry)})"))
        elif entry.is_dir():
            for item in _files_under(entry, src):
                if isinstance(item, Skip):
                    skips.append(Skip(item.shown, item.reason, item.detail, entry.name))
                else:
                    rel = item.relative_to(src).as_posix()
                    candidates.append(Candidate(item.absolute(), rel, entry.name, _subject_from(regex, rel)))
        else:
            skips.append(Skip(shown, "not-in-class-folder", "file at the top level: put images in one folder per class"))
    return candidates, skips


def donor_folder_layout(src: Path, opts: LayoutOptions) -> tuple[list[Candidate], list[Skip]]:
    """Donor faces in a folder: no labels. A file at the top level is its own subject; the files under a sub-folder
    (nested folders included) are one donor person, the sub-folder's name their ``subject_id`` (ORL-style ``s1/``,
    ``s2/``, ...). ``--subject-regex`` overrides both."""
    regex = re.compile(opts.subject_regex) if opts.subject_regex else None
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    for item in _files_under(src, src):
        if isinstance(item, Skip):
            skips.append(item)
            continue
        rel = item.relative_to(src).as_posix()
        person = rel.split("/")[0] if "/" in rel else None
        candidates.append(Candidate(item.absolute(), rel, "", _subject_from(regex, rel) or person))
    return candidates, skips


@LAYOUTS.register("csv")
def csv_layout(src: Path, opts: LayoutOptions) -> tuple[list[Candidate], list[Skip]]:
    """A table with a path column and a label column; optional subject column; every other column is metadata.

    Relative paths are relative to the table's folder.
    """
    table = src if src.is_file() else _single_table(src)
    sep = "\t" if table.suffix.lower() == ".tsv" else ","
    try:
        df = pd.read_csv(table, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001
        raise PhenosynthError(f"Cannot read the table {table}: {exc}") from None
    subject_col = opts.subject_col or ("subject_id" if "subject_id" in df.columns else None)
    label_col = None if opts.donors else opts.label_col
    if opts.donors and opts.label_col in df.columns and df[opts.label_col].str.strip().ne("").any():
        raise PhenosynthError(
            f"{table.name} has labels in column '{opts.label_col}', but donor faces carry no condition label (they "
            "are not patients). Drop the column, or ingest these photos without --donors if they are patients."
        )
    for col, option in ((opts.path_col, "--path-col"), (label_col, "--label-col"), (subject_col, "--subject-col")):
        if col is not None and col not in df.columns:
            raise PhenosynthError(
                f"Column '{col}' not found in {table.name} (columns: {', '.join(df.columns)}). Name it with {option}."
            )
    meta_cols = [c for c in df.columns if c not in (opts.path_col, opts.label_col, subject_col)]
    regex = re.compile(opts.subject_regex) if opts.subject_regex else None
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    for row in df.to_dict("records"):
        shown = row[opts.path_col]
        label = "" if opts.donors else row[opts.label_col].strip()
        path = Path(shown)
        path = path if path.is_absolute() else table.parent / path
        if not shown or not (label or opts.donors):
            skips.append(Skip(shown or "(empty)", "missing-value", "row without a path or a label", label or None))
        elif not path.exists():
            skips.append(Skip(shown, "missing-file", f"file not found: {path}", label))
        elif not path.is_file():
            skips.append(Skip(shown, "not-a-file", f"not a regular file: {path}", label))
        else:
            subject = row[subject_col].strip() if subject_col and row[subject_col].strip() else _subject_from(regex, shown)
            meta = tuple((c, row[c]) for c in meta_cols)
            candidates.append(Candidate(path.absolute(), shown, label, subject, meta))
    return candidates, skips


def _single_table(folder: Path) -> Path:
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in CSV_SUFFIXES and not _is_hidden(p.name))
    if len(tables) != 1:
        raise PhenosynthError(
            f"Layout 'csv' on a folder needs exactly one .csv/.tsv table in {folder}; found {len(tables)}. "
            "Pass the table itself as SRC."
        )
    return tables[0]


def detect_layout(src: Path) -> str:
    """``csv`` for a table (or a folder holding one table and no class folders), else ``folder``."""
    if src.is_file():
        if src.suffix.lower() in CSV_SUFFIXES:
            return "csv"
        raise PhenosynthError(f"{src} is a file but not a .csv/.tsv table; pass a folder or a table.")
    entries = [p for p in src.iterdir() if not _is_hidden(p.name)]
    has_class_dirs = any(p.is_dir() for p in entries)
    tables = [p for p in entries if p.suffix.lower() in CSV_SUFFIXES]
    if not has_class_dirs and len(tables) == 1:
        return "csv"
    return "folder"


# ---------------------------------------------------------------------------------------------------------------------
# Decoding (parallel) and merging


@dataclass(frozen=True)
class _FileInspector:
    """Reads and decodes one candidate file: ``("ok", ImageInfo)`` or ``("error", (reason, detail))``."""

    max_pixels: int

    def __call__(self, path: Path) -> tuple[str, object]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return "error", ("unreadable", f"cannot read file: {exc.strerror or exc}")
        try:
            return "ok", inspect_bytes(data, max_pixels=self.max_pixels)
        except ImageDecodeError as exc:
            return "error", (exc.reason, str(exc))


#: Files per decoding process: fewer files are decoded in the calling process.
FILES_PER_WORKER = 16


def _inspect_all(
    paths: list[Path], max_pixels: int, workers: int | None, on_progress: ProgressCallback | None
) -> list[tuple[str, object]]:
    """The decoding result of every path, in the order of ``paths`` (on :func:`phenosynth.parallel.worker_count`
    processes)."""
    total = len(paths)
    n_workers = worker_count(workers, total, min_items_per_worker=FILES_PER_WORKER)
    report(on_progress, 0, total)
    results = []
    with worker_map(n_workers, _FileInspector, max_pixels) as run:
        for i, r in enumerate(run(paths, 8), 1):
            results.append(r)
            report(on_progress, i, total)
    return results


def _normalise_label(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", label.casefold())


def match_labels(labels: Iterable[str], known: Iterable[str]) -> dict[str, str | None]:
    """Map each label to a known real class: exact, else ignoring case, spaces and punctuation; else ``None``.

    >>> match_labels(["Kabuki syndrome", "foo"], ["KABUKI_SYNDROME", "Noonan"])
    {'Kabuki syndrome': 'KABUKI_SYNDROME', 'foo': None}
    """
    known = list(known)
    by_norm = {_normalise_label(k): k for k in known}
    return {lab: lab if lab in known else by_norm.get(_normalise_label(lab)) for lab in dict.fromkeys(labels)}


@locks_workspace
def ingest(
    src: str | os.PathLike[str],
    workspace: Workspace,
    *,
    layout: str = "auto",
    synthetic: bool = False,
    generator: str | None = None,
    donors: bool = False,
    options: LayoutOptions = LayoutOptions(),
    on_conflict: str = "exclude",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> IngestResult:
    """Add the images of ``src`` to the workspace manifest and write every skipped file to ``ingest_report.csv``.

    ``on_conflict``: what to do with identical bytes found under two labels: ``exclude`` (default: none of the copies
    is taken) or ``first`` (the copy with the first path is taken). Identical bytes under one label are always
    de-duplicated (first path kept). Re-running on the same source adds nothing and rewrites the same report rows.
    ``workers``: decoding processes (default: :func:`phenosynth.parallel.worker_count`; fewer than 32 files are
    decoded in this process).

    ``donors``: the images are donor faces (``source=donor``, no label, never split; see the module docstring). A file
    already in the manifest as another kind (a patient photo brought as a donor, a donor brought as a patient photo)
    is not taken (``identical-to-real`` / ``identical-to-donor`` / ``identical-to-synthetic`` in the report): one
    image is never both. After every ingest into a workspace with donors, a donor face that is a near-duplicate of a
    patient photo is excluded (:func:`phenosynth.data.leakage.exclude_patient_donors`; ``donors_like_patients``).
    """
    src_path = Path(src).expanduser().absolute()
    if not src_path.exists():
        raise PhenosynthError(f"Source {src_path} does not exist.")
    if on_conflict not in ("exclude", "first"):
        raise PhenosynthError(f"--on-conflict must be 'exclude' or 'first', not '{on_conflict}'.")
    if layout == "rdface-syn":
        layout, synthetic, generator = "folder", True, generator or "rdface-syn"
    if donors and synthetic:
        raise PhenosynthError("--donors and --synthetic exclude each other: donor faces are photos of real people who "
                              "lend their identity, not synthetic images.")
    if donors:
        options = replace(options, donors=True)
    kind = DONOR if donors else SYNTHETIC if synthetic else REAL
    chosen = detect_layout(src_path) if layout == "auto" else layout
    layout_fn = LAYOUTS.get(chosen)
    if synthetic and not generator:
        raise PhenosynthError("--synthetic needs --generator NAME (e.g. --generator rdface-syn).")
    candidates, skips = layout_fn(src_path, options)

    manifest = workspace.load_manifest()
    result = IngestResult(source=src_path, layout=chosen, looked_at=len(candidates) + len(skips), source_kind=kind)
    if synthetic:
        candidates = _with_real_labels(candidates, manifest, skips, result)
    good = _decoded(candidates, skips, max_pixels, workers, on_progress)
    rows = _dedupe(good, skips, on_conflict)
    rows = _against_manifest(rows, manifest, skips, result, kind)
    result.added = len(rows)
    result.skipped = Counter(s.reason for s in skips)
    if result.taken == 0:
        # Nothing to write into a new workspace (it is left uncreated); an existing one keeps the reasons on record.
        if workspace.manifest_path.exists():
            result.report_path = _write_report(workspace, src_path, skips)
        raise NothingIngestedError(_nothing_taken(result, skips))
    if rows:
        new = _manifest_rows(rows, workspace, kind, generator if synthetic else None)
        updated, result.donors_like_patients = exclude_patient_donors(workspace, append_rows(manifest, new),
                                                                      max_distance=DEFAULT_NEAR_DUPLICATE_BITS)
        workspace.save_manifest(updated)
    elif not workspace.manifest_path.exists():
        workspace.save_manifest(manifest)
    result.report_path = _write_report(workspace, src_path, skips)
    log.info("ingest %s: %d added, %d already present, %d skipped", src_path, result.added, result.already_present,
             len(skips))
    return result


def _with_real_labels(
    candidates: list[Candidate], manifest: pd.DataFrame, skips: list[Skip], result: IngestResult
) -> list[Candidate]:
    """Synthetic candidates relabelled with the real class their label matches (:func:`match_labels`); the others
    go to ``skips`` as ``unknown-label`` (and their labels to ``result.unknown_labels``)."""
    known = real_classes(manifest)
    if not known:
        raise PhenosynthError(
            "No real images in the workspace yet: ingest the real photos first, so synthetic labels can be matched."
        )
    mapping = match_labels((c.label for c in candidates), known)
    result.unknown_labels = sorted(lab for lab, m in mapping.items() if m is None)
    kept = []
    for c in candidates:
        if mapping[c.label] is None:
            skips.append(Skip(c.shown, "unknown-label", f"label '{c.label}' is not one of the real classes", c.label))
        else:
            kept.append(Candidate(c.path, c.shown, mapping[c.label], c.subject_id, c.metadata))
    return kept


def _decoded(
    candidates: list[Candidate], skips: list[Skip], max_pixels: int, workers: int | None,
    on_progress: ProgressCallback | None,
) -> list[tuple[Candidate, object]]:
    """(candidate, ImageInfo) of every candidate that decodes; the others go to ``skips`` with the reason."""
    decoded = _inspect_all([c.path for c in candidates], max_pixels, workers, on_progress)
    good: list[tuple[Candidate, object]] = []
    for cand, (status, payload) in zip(candidates, decoded):
        if status == "ok":
            good.append((cand, payload))
        else:
            reason, detail = payload
            skips.append(Skip(cand.shown, reason, detail, cand.label))
    return good


def _manifest_rows(rows: list[tuple[Candidate, object]], workspace: Workspace, source: str,
                   generator: str | None) -> pd.DataFrame:
    """The new manifest rows of ``source``: real photos, synthetic images of ``generator`` or donor faces (no label,
    never a split)."""
    return pd.DataFrame(
        [
            {
                "image_id": info.image_id,
                "path": workspace.relpath(cand.path),
                "label": pd.NA if source == DONOR else cand.label,
                "subject_id": cand.subject_id or info.image_id,
                "source": source,
                "generator": generator if source == SYNTHETIC else pd.NA,
                "parents": [],
                "split": "train" if source == SYNTHETIC else pd.NA,
                "width": info.width,
                "height": info.height,
                "phash": info.phash,
                **_metadata_columns(cand.metadata),
            }
            for cand, info in rows
        ]
    )


@contextmanager
def workspace_for_ingest(root: str | os.PathLike[str]) -> Iterator[Workspace]:
    """``Workspace.open(root, create=True)`` for an ingest: if the folder did not exist and the ingest fails, the
    folder is removed again when it holds nothing but the workspace lock (a failed ingest writes nothing into a new
    workspace), so a typo or an empty source leaves no empty workspace behind. Let go of the lock before this exits."""
    path = Path(root).expanduser().resolve()
    created = not path.exists()
    ws = Workspace.open(path, create=True)
    try:
        yield ws
    except BaseException:
        if created and {p.name for p in path.iterdir()} <= {LOCK_FILE, LOCK_HOLDER_FILE}:
            try:  # only lock files: never removes anything written
                (path / LOCK_FILE).unlink(missing_ok=True)
                (path / LOCK_HOLDER_FILE).unlink(missing_ok=True)
                path.rmdir()
            except OSError:
                pass
        raise


class NothingIngestedError(PhenosynthError):
    """An ingest found no image it could take (nothing was added to the workspace)."""


def _nothing_taken(result: IngestResult, skips: list[Skip]) -> str:
    """The error message of an ingest that took nothing: how many files, why each kind was skipped, examples."""
    if result.looked_at == 0 and result.source_kind == DONOR:
        return (f"No image taken from {result.source}: it holds no files for layout '{result.layout}' (a folder of "
                "donor faces needs images, at the top level or one sub-folder per donor person; a table needs a path "
                "column).")
    if result.looked_at == 0:
        return (f"No image taken from {result.source}: it holds no files for layout '{result.layout}' (a folder "
                "needs one sub-folder per class with images in it; a table needs path and label columns).")
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.skipped.items()))
    examples = "; ".join(f"{s.shown} ({s.reason}: {s.detail})" for s in sorted(skips, key=lambda s: s.shown)[:3])
    return (f"No image taken from {result.source}: looked at {result.looked_at} file(s), skipped all of them "
            f"({reasons}). For example: {examples}.")


def _metadata_columns(metadata: tuple[tuple[str, str], ...]) -> dict[str, str]:
    out = {}
    for col, value in metadata:
        out[f"{col}_user" if col in MANIFEST_COLUMNS else col] = value
    return out


def _dedupe(good: list[tuple[Candidate, object]], skips: list[Skip], on_conflict: str) -> list[tuple[Candidate, object]]:
    """Identical bytes: same label -> keep the first path; different labels -> a label conflict."""
    by_id: dict[str, list[tuple[Candidate, object]]] = {}
    for cand, info in good:
        by_id.setdefault(info.image_id, []).append((cand, info))
    kept = []
    for image_id, copies in by_id.items():
        copies.sort(key=lambda ci: ci[0].shown)
        labels = sorted({c.label for c, _ in copies})
        first = copies[0]
        if len(labels) > 1:
            where = "; ".join(f"{c.shown} [{c.label}]" for c, _ in copies)
            if on_conflict == "first":
                kept.append(first)
                rest = copies[1:]
                detail = f"identical bytes under labels {', '.join(labels)} ({where}); kept {first[0].shown}"
            else:
                rest = copies
                detail = f"identical bytes under labels {', '.join(labels)} ({where}); excluded (--on-conflict first keeps one)"
            skips.extend(Skip(c.shown, "label-conflict", detail, c.label) for c, _ in rest)
            continue
        kept.append(first)
        skips.extend(Skip(c.shown, "duplicate", f"identical bytes to {first[0].shown}", c.label) for c, _ in copies[1:])
    kept.sort(key=lambda ci: ci[0].shown)
    return kept


def _against_manifest(
    rows: list[tuple[Candidate, object]], manifest: pd.DataFrame, skips: list[Skip], result: IngestResult,
    source: str,
) -> list[tuple[Candidate, object]]:
    """Rows not yet in the manifest; the others are counted as already present (same label and source) or reported."""
    existing = manifest.set_index("image_id")[["label", "source", "path"]] if len(manifest) else None
    fresh = []
    for cand, info in rows:
        if existing is None or info.image_id not in existing.index:
            fresh.append((cand, info))
            continue
        old = existing.loc[info.image_id]
        where = f"identical bytes already in the manifest as {old['path']}"
        if DONOR in (old["source"], source) and old["source"] != source:
            skips.append(Skip(cand.shown, f"identical-to-{old['source']}", f"{where} (a {old['source']} image): "
                              f"{_DONOR_CONFLICT}", cand.label or None))
        elif old["source"] == source == DONOR or (old["label"] == cand.label and old["source"] == source):
            result.already_present += 1
        elif old["source"] == REAL and source == SYNTHETIC:
            skips.append(Skip(cand.shown, "identical-to-real",
                              f"{where} (a real photo): a synthetic set must not contain real photos", cand.label))
        elif old["label"] != cand.label:
            skips.append(Skip(cand.shown, "label-conflict", f"{where} with label '{old['label']}'", cand.label))
        else:
            skips.append(Skip(cand.shown, "duplicate", f"{where} ({old['source']})", cand.label))
    return fresh


_DONOR_CONFLICT = ("one image cannot be both a donor face (a non-patient lending an identity) and a patient photo or "
                   "a synthetic image; remove it from one of the two sources")


def _write_report(workspace: Workspace, src: Path, skips: list[Skip]) -> Path:
    """Replace this source's rows in ingest_report.csv (so a re-run rewrites, never duplicates, them)."""
    path = workspace.ingest_report_path
    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else pd.DataFrame(columns=REPORT_COLUMNS)
    old = old[old["source"] != str(src)]
    new = pd.DataFrame(
        [{"source": str(src), "path": s.shown, "label": s.label or "", "reason": s.reason, "detail": s.detail}
         for s in sorted(skips, key=lambda s: (s.shown, s.reason))],
        columns=REPORT_COLUMNS,
    )
    table = pd.concat([old, new], ignore_index=True) if len(old) else new
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path
