"""A shareable data set from one audited generator run: ``phenosynth export -w WS --run RUN OUT/``.

Only the run's audited, shareable synthetic images go out (the privacy gate's rule, :func:`phenosynth.audit.gate.
gate_reasons`), re-encoded as PNG without metadata under neutral names (``<condition>/<index>.png``), with
``metadata.csv`` (file, condition, generator, seed, audit scores) and ``DATASHEET.md`` (how the run was made, what the
audit found, the limits). Nothing that points back to a patient leaves: no image ids, parent ids, source paths,
subject ids or the run's list of training photos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from phenosynth.audit.gate import current_audit, gate_reasons, synthetic_runs
from phenosynth.audit.privacy import AUGMENTATION_NOTE, run_uses_patient_pixels
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: run.json keys a datasheet may quote (not ``training_images`` / ``skipped_training``: those are real image ids).
RUN_KEYS = ("run", "generator", "seed", "per_class", "classes", "images")
#: Audit scores copied to metadata.csv (distances and similarities only: never the ids of the photos they refer to).
SCORE_COLUMNS = ["nearest_real_distance", "nearest_same_condition", "nearest_is_parent", "parent_distance",
                 "phash_bits", "ssim", "synthetic_nn_distance", "duplicate"]
METADATA_COLUMNS = ["file", "condition", "generator", "seed", *SCORE_COLUMNS]


@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    out: Path
    n_exported: int
    n_left_out: int  # images of the run the audit (or the gate) keeps back
    per_condition: dict[str, int]


def _safe_settings(settings: Any, forbidden: set[str]) -> dict[str, Any]:
    """Scalar generator settings that are neither paths nor mention a real image or subject."""
    out = {}
    for k, v in (settings or {}).items() if isinstance(settings, dict) else ():
        if isinstance(v, (bool, int, float)) or (
                isinstance(v, str) and "/" not in v and "\\" not in v and not any(f in v for f in forbidden)):
            out[str(k)] = v
    return out


def export(ws: Workspace, run: str, out: str | Path, *, allow_patient_pixels: bool = False) -> ExportResult:
    """Write the shareable images of audited ``run`` to ``out`` (which must not exist, or be empty).

    Raises:
        PhenosynthError: the run was never audited or its audit is stale (the workspace changed since:
            :func:`phenosynth.audit.gate.current_audit`), ``out`` exists and is not empty, or no image is shareable.
    """
    from phenosynth.synth.generation import safe_name

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PhenosynthError(f"{out} exists and is not empty; export into a new folder.")
    manifest = ws.load_manifest()
    rows, frame, summary = shareable_images(ws, run, manifest)
    if rows.empty:
        raise PhenosynthError(f"No image of run '{run}' passed the audit: nothing to export.")

    real = manifest[manifest["source"] != "synthetic"]
    forbidden = set(real["image_id"].astype(str)) | set(real["subject_id"].dropna().astype(str)) | set(
        real["path"].astype(str))
    forbidden = {f for f in forbidden if len(f) >= 4}

    run_record: dict[str, Any] = {}
    run_json = ws.root / "synthetic" / safe_name(run) / "run.json"
    if run_json.exists():
        full = json.loads(run_json.read_text())
        run_record = {k: full[k] for k in RUN_KEYS if k in full}
        run_record["settings"] = _safe_settings(full.get("settings"), forbidden)

    augmentation = run_uses_patient_pixels(ws, run, rows["generator"].unique())
    if augmentation and not allow_patient_pixels:
        raise PhenosynthError(
            f"Run '{run}' holds patient pixels (run.json uses_patient_pixels: its images are patients' photos warped "
            "or blended, e.g. shape-warp or phenotype-transfer morphs), so it is not exported by default. A run with "
            "donor identities is; to share this one anyway, as augmentation of patient photos: --allow-patient-pixels."
        )
    folders = condition_folders(rows["label"].astype(str).unique())
    # Written into a hidden sibling and renamed to ``out`` at the end: a failed export leaves nothing behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.mkdir()
    try:
        per_condition = _write_export(ws, tmp, rows, folders, run_record)
        n_left = len(frame) - len(rows)
        text = datasheet(run, run_record, summary, len(rows), n_left, per_condition, augmentation=augmentation)
        atomic_write(tmp / "DATASHEET.md", lambda p: Path(p).write_text(text))
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %d image(s) of run %s to %s (%d held back)", len(rows), run, out, n_left)
    return ExportResult(out=out, n_exported=len(rows), n_left_out=n_left, per_condition=per_condition)


def shareable_images(ws: Workspace, run: str, manifest: pd.DataFrame | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(rows, audit frame, summary)``: the audit rows (plus the manifest's ``path`` and ``params``) of the images of
    audited ``run`` that may leave the workspace: in the manifest, not excluded, audited ``shareable`` and not held
    back by the privacy gate; sorted by label and image_id. The one selection behind exports, decks and counselling
    sheets.

    Raises:
        PhenosynthError: the run was never audited, or its audit is stale (the workspace changed since).
    """
    manifest = ws.load_manifest() if manifest is None else manifest
    frame, summary = current_audit(ws, run, manifest)
    runs = synthetic_runs(manifest)
    in_run = manifest.loc[runs.index[runs == run]]
    in_run = in_run[in_run["exclude_reason"].isna()]
    held_back = gate_reasons(ws, manifest)
    # the file's path from the manifest, its owner (as decks take it), not the audit's copy of it
    rows = frame.drop(columns=["path"], errors="ignore").merge(in_run[["image_id", "path", "params"]], on="image_id",
                                                                how="inner")
    rows = rows[rows["shareable"] & ~rows["image_id"].isin(list(held_back))]
    return rows.sort_values(["label", "image_id"]).reset_index(drop=True), frame, summary


def condition_folders(labels: Iterable[str]) -> dict[str, str]:
    """A distinct folder name per condition label: ``safe_name`` of the label, with ``-2``, ``-3``, ... appended (in
    sorted label order) when two labels map to the same name (``Down syndrome`` and ``Down_syndrome``).

    >>> condition_folders(["Down_syndrome", "Down syndrome", "A"])
    {'A': 'A', 'Down syndrome': 'Down_syndrome', 'Down_syndrome': 'Down_syndrome-2'}
    """
    from phenosynth.synth.generation import safe_name

    out: dict[str, str] = {}
    taken: set[str] = set()
    for label in sorted(set(labels)):
        base = name = safe_name(label)
        k = 1
        while name.lower() in taken:  # also distinct on case-insensitive file systems
            k += 1
            name = f"{base}-{k}"
        taken.add(name.lower())
        out[label] = name
    return out


def _write_export(ws: Workspace, out: Path, rows: pd.DataFrame, folders: dict[str, str],
                  run_record: dict[str, Any]) -> dict[str, int]:
    """The images (re-encoded: fresh pixels only, no EXIF, text or ICC profile) and metadata.csv; per condition its
    number of images."""
    from PIL import Image, UnidentifiedImageError

    records, per_condition = [], {}
    for label, group in rows.groupby("label", sort=True):
        folder = folders[str(label)]
        (out / folder).mkdir()
        for k, r in enumerate(group.itertuples(index=False)):
            rel = f"{folder}/{k:05d}.png"
            src = ws.resolve(str(r.path))
            try:
                with Image.open(src) as im:
                    rgb = im.convert("RGB")
            except (OSError, UnidentifiedImageError) as exc:
                raise PhenosynthError(f"Cannot read synthetic image {src} ({exc}); nothing was exported. Restore or "
                                      "regenerate the file, then export again.") from None
            Image.frombytes("RGB", rgb.size, rgb.tobytes()).save(out / rel, format="PNG")  # no info travels along
            try:
                seed = json.loads(r.params).get("seed") if isinstance(r.params, str) else None
            except ValueError:
                seed = None
            records.append({"file": rel, "condition": str(label), "generator": r.generator,
                            "seed": seed if seed is not None else run_record.get("seed"),
                            **{c: getattr(r, c) for c in SCORE_COLUMNS}})
        per_condition[str(label)] = len(group)
    meta = pd.DataFrame(records, columns=METADATA_COLUMNS)
    atomic_write(out / "metadata.csv", lambda p: meta.to_csv(p, index=False))
    return per_condition


def datasheet(run: str, record: dict[str, Any], summary: dict[str, Any], n: int, n_left: int,
              per_condition: dict[str, int], *, augmentation: bool = False) -> str:
    """The export's DATASHEET.md: how it was made, what the audit found, its limits. ``augmentation``: the run's
    images hold the patients' own pixels (:func:`phenosynth.audit.privacy.run_uses_patient_pixels`)."""
    r, cal, st = summary["run"], summary["calibration"], summary["settings"]
    settings = record.get("settings") or {}
    made = "\n".join(f"- {k}: {record[k]}" for k in RUN_KEYS if k in record) or "- (run.json not found)"
    made += ("\n- generator settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())) if settings else ""
    conds = "\n".join(f"| {c} | {k} |" for c, k in per_condition.items())
    what = (f"\n**These images are the patients' own photos transformed by the generator: {AUGMENTATION_NOTE}.**\n"
            if augmentation else "")
    unestimable = "" if cal.get("quantile_estimable", True) else (
        f"\n  Too few different-person pairs ({cal.get('n_impostor')}) to estimate that quantile "
        "(quantile_estimable: false): " + ("the documented threshold is used." if cal.get("documented") is not None
                                           else "it is close to their minimum."))

    return f"""# Datasheet: synthetic faces of generator run `{run}`

{n} synthetic face images in {len(per_condition)} conditions, exported by `phenosynth export`. {n_left} image(s) of
the run were held back by the privacy audit (identity match, near-copy, no measurable face, or not audited).
{what}
## How it was made
{made}

| condition | images |
|---|---|
{conds}

## What the audit found (whole run, before export; audited {summary.get("created")})
- Identity embedder: {st.get("embedder")} ({st.get("metric")} distance); threshold {cal.get("threshold"):.4g}
  (documented {cal.get("documented")}, impostor {100 * cal.get("quantile", 0):g} % quantile
  {cal.get("impostor_quantile"):.4g}), calibrated on {summary.get("n_real_photos")} real photos.{unestimable}
- Matched to a real training photo: {r["n_matched"]} of {r["n_measured"]} measured images ({_pct(r["matched_share"])},
  95 % CI {_pct(r["matched_ci"][0])} to {_pct(r["matched_ci"][1])}); stranger rate (the same protocol on real photos of
  other people): {_pct(r["stranger_rate"])}.
- Membership AUC (training vs held-out patients, 0.5 = nothing remembered): {r["membership_auc"]:.3f}
  (95 % CI {r["membership_ci"][0]:.3f} to {r["membership_ci"][1]:.3f}).
- Pixel near-copies: {r["n_near_copies"]}; near-duplicates within the run: {r["n_duplicates"]}; no face: {r["n_no_face"]}.
{fidelity_section(summary.get("fidelity"))}

`metadata.csv` gives per image: file, condition, generator, seed and its audit scores (distance to the nearest real
training photo, whether that photo was of the same condition or the image's own parent, SSIM, hash bits, distance to
the nearest other synthetic image). It names no real photo, parent or patient.

## Limits
- Passing the audit means no real training photo was found within the calibrated identity threshold of this
  embedder, and no pixel near-copy; it is not a proof of anonymity. The identity check is weaker on low-resolution
  photos (benchmarks/results/audit.md: on ORL's 92 x 112 photos, 3 of 8 strangers had a look-alike among the
  training people and matched with 20 % of their photos), and a different embedder or a larger reference set can
  find matches this audit did not.
- A membership AUC well above 0.5 means the generator remembers its training patients as a whole, even when the
  exported images themselves passed.
- The images carry the conditions' phenotype only as far as the generator does; they are not diagnostic material.
"""


def _num(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.4f}"


def fidelity_section(fid: dict[str, Any] | None) -> str:
    """The datasheet's fidelity lines: KID per condition beside its split-half baseline, and phenotype agreement."""
    if not fid:
        return "- Fidelity: not measured (audited before fidelity was part of the audit)."
    lines = [f"- Fidelity: {note}" for note in fid.get("notes", [])]
    if fid.get("kid"):
        lines.append(f"- KID ({fid['kid_backbone']} features; synthetic vs real training photos, beside the KID of "
                     "two halves of the real photos split by subject):")
        lines += [f"  - {k['condition']}: {_num(k['kid'])} (real vs real {_num(k['baseline'])})"
                  + (f"; {k['note']}" if k["note"] else "") for k in fid["kid"]]
    if fid.get("phenotype"):
        lines.append(f"- Phenotype agreement (a {fid['probe_backbone']} probe fit on the real training photos; share "
                     "classified as their own condition):")
        lines += [f"  - {p['condition']}: synthetic {_pct(p['synthetic_accuracy'])} of {p['n_synthetic']}, real test "
                  f"photos {_pct(p['test_accuracy'])} of {p['n_test']}" + (f"; {p['note']}" if p["note"] else "")
                  for p in fid["phenotype"]]
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


__all__ = ["export", "shareable_images", "ExportResult", "datasheet", "METADATA_COLUMNS"]
