"""Counselling sheets: ``phenosynth sheet -w WS --condition C``, a printable one-page HTML (and PDF) per condition.

The sheet shows a grid of the condition's **audited, shareable synthetic faces** (the selection of
:func:`phenosynth.audit.export.shareable_images`, the same as exports), the condition's features in plain language
(:mod:`phenosynth.edu.annotations`), and a line saying what the faces are (:func:`disclaimer`, from the facts of
their runs: computer-generated, or computer-altered photographs of consenting donors). The images are re-encoded
(fresh PNG pixels, no metadata, at most :data:`MAX_SIDE` px) and embedded in the HTML as data URIs, so the file is
self-contained and names no workspace path or image id. It refuses real photos, images of runs never audited, images
the audit flagged or the gate held back, and images of generators that transform the patients' own photos
(``shape-warp``: augmentation, not synthesis; a sheet saying its faces belong to no real child cannot show them).

The PDF is Chromium's print to PDF (``chromium --headless --print-to-pdf``); without Chromium the HTML is written
and :attr:`SheetResult.pdf_note` says why there is no PDF (print the HTML from any browser).
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from phenosynth.audit.export import shareable_images
from phenosynth.audit.gate import audit_staleness, gate_reasons, synthetic_runs
from phenosynth.audit.privacy import audit_dir, run_uses_patient_pixels
from phenosynth.data.filenames import safe_name
from phenosynth.data.manifest import DONOR as DONOR_SOURCE
from phenosynth.data.manifest import SYNTHETIC
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.edu.annotations import Annotation
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: What a sheet's faces are, by where their pixels come from. GENERATED: drawn by a model, no photo's pixels in them.
#: DONOR: a donor's photo (a volunteer who agreed to its use, ingested with ``--donors``) altered to show the
#: condition's features (phenotype-transfer with donor identities).
GENERATED = "generated"
DONOR = "donor"
#: The line on a sheet, by the set of kinds of its faces (:func:`disclaimer`)
DISCLAIMERS = {
    frozenset({GENERATED}): "These faces are computer-generated. They are not photographs of real people and belong "
                            "to no real child.",
    frozenset({DONOR}): "These faces are computer-altered photographs of volunteers who agreed to their use. They are "
                        "not photographs of any patient or of a child with this condition.",
    frozenset({GENERATED, DONOR}): "Some of these faces are computer-generated; the others are computer-altered "
                                   "photographs of volunteers who agreed to their use. None is a photograph of any "
                                   "patient or of a child with this condition.",
}
#: A face's alternative text, by its kind
FACE_ALT = {GENERATED: "Computer-generated face", DONOR: "Computer-altered photograph of a volunteer"}
MAX_SIDE = 320  # px per face: about 200 dpi at the grid's 40 mm
COLUMNS = 4
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass(frozen=True)
class RunFacts:
    """What a sheet needs to know of one generator run to say what its faces are: the donor faces (manifest
    ``source=donor``) whose pixels its images hold, from the run's ``run.json`` (``donor_images``) and the images'
    lineage (``parents``)."""

    run: str
    generator: str
    donor_images: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """:data:`DONOR` when the run's faces are altered donor photos, else :data:`GENERATED`."""
        return DONOR if self.donor_images else GENERATED


def disclaimer(runs: Sequence[RunFacts]) -> str:
    """The sheet's line on what its faces are, true for every run they come from (:data:`DISCLAIMERS`).

    >>> disclaimer([RunFacts("fastgan-seed0", "fastgan")]).split(". ")[0]
    'These faces are computer-generated'
    >>> disclaimer([RunFacts("pt", "phenotype-transfer", ("d1", "d2"))]).split(". ")[0]
    'These faces are computer-altered photographs of volunteers who agreed to their use'
    """
    if not runs:
        raise ValueError("a sheet's line needs the facts of at least one run")
    return DISCLAIMERS[frozenset(r.kind for r in runs)]


def run_facts(ws: Workspace, manifest: pd.DataFrame, images: pd.DataFrame) -> dict[str, RunFacts]:
    """Run -> :class:`RunFacts` for the runs of ``images`` (rows with ``image_id`` and ``run``): the donors its
    ``run.json`` records, and the donor faces among the pixel parents of the images shown."""
    donors = set(manifest.loc[manifest["source"].astype(str) == DONOR_SOURCE, "image_id"].astype(str))
    by_id = manifest.set_index(manifest["image_id"].astype(str))
    facts = {}
    for run, rows in images.groupby(images["run"].astype(str), sort=True):
        path = ws.synthetic_dir / safe_name(run) / "run.json"
        try:
            record = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            record = {}
        recorded = record.get("donor_images", []) if isinstance(record, dict) else []
        found = set(map(str, recorded if isinstance(recorded, list) else []))
        ids = [i for i in rows["image_id"].astype(str) if i in by_id.index]
        for parents in by_id.loc[ids, "parents"]:  # lists of image ids (load_manifest)
            found |= donors & set(map(str, parents))
        generators = sorted(set(by_id.loc[ids, "generator"].astype(str))) if ids else []
        facts[run] = RunFacts(run=run, generator=", ".join(generators), donor_images=tuple(sorted(found)))
    return facts


@dataclass(frozen=True)
class SheetResult:
    """What :func:`write_sheet` wrote."""

    html: Path
    pdf: Path | None
    pdf_note: str  # why there is no PDF ("" when there is one)
    n_images: int
    runs: tuple[str, ...]  # the generator runs the faces come from
    notes: tuple[str, ...]  # runs passed over, and why
    disclaimer: str = ""  # the sheet's line on what the faces are (:func:`disclaimer`)


def _check_condition(manifest: pd.DataFrame, condition: str) -> None:
    labels = sorted(set(manifest["label"].dropna().astype(str)))
    if condition not in labels:
        close = difflib.get_close_matches(condition, labels, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Conditions: {', '.join(labels[:20])}."
        raise PhenosynthError(f"No condition '{condition}' in this workspace.{hint}")


def _refusal(ws: Workspace, image_id: str, condition: str, manifest: pd.DataFrame, runs: pd.Series,
             audited: set[str], stale: dict[str, str], gate: dict[str, str]) -> str:
    """Why ``image_id`` may not go on a sheet of ``condition`` (asked only of images that are not shareable)."""
    rows = manifest[manifest["image_id"].astype(str) == image_id]
    if rows.empty:
        return "not an image of this workspace"
    r = rows.iloc[0]
    if r["source"] != SYNTHETIC:
        return f"a {r['source']} photo, not a synthetic face"
    if str(r["label"]) != condition:
        return f"an image of '{r['label']}', not of '{condition}'"
    if isinstance(r["exclude_reason"], str):
        return f"excluded from the workspace ({r['exclude_reason']})"
    run = runs.get(rows.index[0])
    if run_uses_patient_pixels(ws, str(run), [r["generator"]]):
        return f"made by '{r['generator']}' from a patient's photo (augmentation, not a synthetic face)"
    if run not in audited:
        return f"its run '{run}' was never audited (phenosynth audit -w WS --run {run})"
    if run in stale:
        return f"its run '{run}' has a stale audit: {stale[run]} (phenosynth audit -w WS --run {run})"
    return gate.get(image_id, "not shareable by the audit")


def select_sheet_images(ws: Workspace, condition: str, *, run: str | None = None,
                        image_ids: Sequence[str] | None = None, n: int = 12
                        ) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """``(images, notes)``: up to ``n`` audited, shareable synthetic images of ``condition`` (audit rows with
    ``path``; ``image_ids`` in the order given, else the first ``n`` by run and image_id) and notes on runs passed
    over. ``run``: only that generator run (default: every audited run with images of the condition).

    Raises:
        PhenosynthError: unknown condition; no synthetic image of it; ``run`` (or every run) never audited or an
            augmentation run; an asked-for image that is not shareable (each one named with its reason); no
            image left.
    """
    if n < 1:
        raise PhenosynthError(f"A sheet needs at least one face (--n {n}).")
    manifest = ws.load_manifest()
    _check_condition(manifest, condition)
    runs = synthetic_runs(manifest)
    mine = manifest.loc[runs.index]
    mine = mine[mine["label"].astype(str) == condition]
    wanted = [run] if run is not None else sorted(set(runs[mine.index]))
    if not wanted:
        raise PhenosynthError(f"Condition '{condition}' has no synthetic images: generate some first "
                              "(phenosynth generate -w WS --generator NAME), then audit them.")
    audited = {r for r in set(runs) if (audit_dir(ws, r) / "audit.parquet").exists()}
    stale = {r: why for r in audited if (why := audit_staleness(ws, manifest, r)) is not None}
    notes, pool = [], []
    for r in wanted:
        generators = set(manifest.loc[runs.index[runs == r], "generator"].astype(str))
        if run_uses_patient_pixels(ws, r, generators):
            notes.append(f"run '{r}' ({', '.join(sorted(generators))}) transforms the patients' own photos "
                         "(augmentation): its images cannot go on a sheet of faces that belong to no real child")
        elif r not in audited:
            notes.append(f"run '{r}' was never audited (phenosynth audit -w WS --run {r})")
        elif r in stale:
            notes.append(f"run '{r}' has a stale audit: {stale[r]} (phenosynth audit -w WS --run {r})")
        else:
            rows = shareable_images(ws, r, manifest)[0]
            pool.append(rows[rows["label"].astype(str) == condition].assign(run=r))
    shareable = pd.concat(pool, ignore_index=True) if pool else pd.DataFrame(columns=["image_id", "path", "run"])
    if image_ids is not None:
        ids = [str(i) for i in image_ids]
        ok = set(shareable["image_id"].astype(str))
        gate = gate_reasons(ws, manifest)
        refused = [f"{i[:12]}: {_refusal(ws, i, condition, manifest, runs, audited, stale, gate)}"
                   for i in ids if i not in ok]
        if refused:
            raise PhenosynthError(f"{len(refused)} image(s) cannot go on a counselling sheet, which takes only "
                                  "audited, unflagged synthetic faces: " + "; ".join(refused) + ".")
        chosen = shareable.set_index(shareable["image_id"].astype(str)).loc[ids].reset_index(drop=True)
    else:
        chosen = shareable.sort_values(["run", "image_id"]).head(n).reset_index(drop=True)
    if chosen.empty:
        why = "; ".join(notes) if notes else "the audit flagged every one of them (or the gate held them back)"
        raise PhenosynthError(f"No audited, unflagged synthetic face of '{condition}' to put on a sheet: {why}.")
    return chosen, tuple(notes)


def embedded_png(path: Path, max_side: int = MAX_SIDE) -> str:
    """``path`` as a ``data:image/png;base64,...`` URI: fresh RGB pixels (no metadata travels along), the longer
    side at most ``max_side`` px."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise PhenosynthError(f"Cannot read synthetic image {path} ({exc}). Restore or regenerate it.") from None
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    Image.frombytes("RGB", rgb.size, rgb.tobytes()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_sheet(condition: str, annotation: Annotation | None, faces: Sequence[tuple[str, str]], source: str,
                 line: str) -> str:
    """The sheet's HTML (Jinja2, autoescaped; ``templates/counselling_sheet.html``): ``faces`` as (data URI, kind
    of face: :data:`GENERATED` or :data:`DONOR`), ``line`` the :func:`disclaimer`."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("phenosynth.edu", "templates"), autoescape=select_autoescape(["html"]))
    a = annotation
    return env.get_template("counselling_sheet.html").render(
        title=a.name if a else condition, description=a.description if a else "",
        features=a.plain_features() if a else [], hpo=list(a.hpo) if a else [],
        images=[(uri, FACE_ALT[kind]) for uri, kind in faces], columns=COLUMNS, disclaimer=line, source=source)


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on the PATH, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def print_to_pdf(html: Path, pdf: Path, browser: str, timeout: float = 120.0) -> str:
    """Print ``html`` to ``pdf`` with headless Chromium; "" on success, else why not."""
    with tempfile.TemporaryDirectory(prefix="phenosynth-chromium-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-pdf-header-footer", f"--user-data-dir={profile}",
               f"--print-to-pdf={pdf}", html.resolve().as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses root without it; the page is our own, script-free file
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{browser} failed ({exc})"
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return f"{browser} did not print the PDF ({tail[0]})"
    return ""


def write_sheet(ws: Workspace, condition: str, *, annotations: dict[str, Annotation] | None = None,
                run: str | None = None, image_ids: Sequence[str] | None = None, n: int = 12,
                out: str | Path | None = None, pdf: bool = True, browser: str | None = None) -> SheetResult:
    """Write the counselling sheet of ``condition``: ``out`` (default ``WS/sheets/<condition>.html``; a ``.pdf``
    path names the PDF and the HTML goes beside it) and, with ``pdf`` and Chromium (``browser``, default: found on
    the PATH), the PDF of the same name. See :func:`select_sheet_images` for which faces and the refusals."""
    images, notes = select_sheet_images(ws, condition, run=run, image_ids=image_ids, n=n)
    facts = run_facts(ws, ws.load_manifest(), images)
    faces = [(embedded_png(ws.resolve(str(p))), facts[str(r)].kind) for p, r in zip(images["path"], images["run"])]
    runs = tuple(sorted(facts))
    line = disclaimer(list(facts.values()))
    source = (f"Made with phenosynth from generator run(s) {', '.join(runs)}. Every face passed the privacy audit: "
              "no identity match to a real training photo and no near-copy of one.")
    html_text = render_sheet(condition, (annotations or {}).get(condition), faces, source, line)
    out = Path(out).expanduser() if out is not None else ws.root / "sheets" / f"{safe_name(condition)}.html"
    html_path = out.with_suffix(".html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(html_path, lambda p: Path(p).write_text(html_text, encoding="utf-8"))
    pdf_path, note = None, ""
    if not pdf:
        note = "PDF not asked for"
    elif (browser := browser or find_chromium()) is None:
        note = "no PDF engine: Chromium is not installed (apt-get install chromium); print the HTML from a browser"
    else:
        target = out.with_suffix(".pdf")
        note = print_to_pdf(html_path, target, browser)
        pdf_path = None if note else target
    if note:
        log.info("counselling sheet of %s: no PDF (%s)", condition, note)
    log.info("counselling sheet of %s: %d face(s) from %s -> %s", condition, len(images), ", ".join(runs), html_path)
    return SheetResult(html=html_path, pdf=pdf_path, pdf_note=note, n_images=len(images), runs=runs, notes=notes,
                       disclaimer=line)


__all__ = ["write_sheet", "select_sheet_images", "render_sheet", "embedded_png", "print_to_pdf", "find_chromium",
           "SheetResult", "RunFacts", "run_facts", "disclaimer", "DISCLAIMERS", "GENERATED", "DONOR", "FACE_ALT"]
