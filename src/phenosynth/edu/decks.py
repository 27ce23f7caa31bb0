"""Decks: conditions with their annotations and synthetic faces, built from a workspace's audited generator runs.

**The deck gate.** A deck takes a workspace image only when it is synthetic, belongs to a generator run that was
audited (``WS/audit/<run>/audit.parquet``, read with :func:`phenosynth.audit.privacy.load_audit`) and passes the
audit gate (:func:`phenosynth.audit.gate.gate_reasons`: shareable, and audited). Stricter than the training gate, a
run that was never audited, or whose audit is stale, gives no image at all, and neither does a run whose images hold
patients' pixels (:func:`phenosynth.audit.privacy.run_uses_patient_pixels`: shape-warp, morphs of patients' faces). :func:`workspace_images` gives every image's verdict (``refused``:
the reason, or None) with its audit scores; :func:`add_images` checks it again on the server for each image it is
asked to add, and the image route checks it again when it serves a file (a re-audit that flags an image takes it out
of every deck's pages at once).

**Zips.** :func:`export_deck` writes ``deck.json`` and ``images/NNNN.png`` (re-encoded: pixels only, no metadata);
:func:`import_deck` reads such a zip defensively: size and entry-count limits, no absolute paths, ``..``, backslashes,
links or encrypted entries, declared and actual sizes and compression ratios bounded (decompression bombs), PNG or
JPEG only and decoded through :mod:`phenosynth.data.imageio` under a pixel limit; nothing is extracted by path, each
image is re-encoded and stored as ``WS/edu/images/<sha256>.png``. An imported image keeps the audit record of the
zip (its pixels cannot be re-audited without the real photos of the workspace it came from): one whose record is
missing or not shareable is refused with the reason, like a workspace image.
"""

from __future__ import annotations

import io
import json
import logging
import math
import posixpath
import re
import stat
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from phenosynth.audit.export import SCORE_COLUMNS
from phenosynth.audit.gate import audit_staleness, gate_reasons, synthetic_runs
from phenosynth.audit.privacy import PRIVACY_FLAGS, audit_dir, load_audit, run_uses_patient_pixels
from phenosynth.data.manifest import SYNTHETIC
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.edu.db import FROM_IMPORT, FROM_WORKSPACE, Deck, DeckCondition, DeckImage, User
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

REASON_REAL = "a real photo (decks take synthetic images only)"
REASON_NOT_SYNTHETIC = "not a synthetic image (source '{source}'; decks take synthetic images only)"
REASON_UNKNOWN = "not an image of this workspace"
REASON_RUN_UNAUDITED = "not audited: run '{run}' has no audit (phenosynth audit -w WS --run {run})"
REASON_PATIENT_PIXELS = ("made from patients' own photos: run '{run}' holds patient pixels (shape-warp, or morphs of "
                         "patients' faces), so its faces are not computer-generated people")
REASON_RUN_STALE = "stale audit: {why} (phenosynth audit -w WS --run {run})"
REASON_EXCLUDED = "left out of the workspace: {reason}"
REASON_NO_AUDIT_RECORD = "no audit record in the deck zip"

_HPO = re.compile(r"^HP:\d{7}$")
DECK_FORMAT = "phenosynth-deck"
DECK_VERSION = 1


class DeckError(PhenosynthError):
    """A deck request that cannot be carried out (bad annotation, hostile or broken zip, unknown image)."""


# --- the deck gate over a workspace -----------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """A JSON value from a pandas/numpy cell (NaN -> None)."""
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if v is None or v is pd.NA:
        return None
    return v


def audit_record(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """The audit scores a deck keeps and shows for one image: distances and similarities (never the ids of the
    photos they refer to), its flags and whether it is shareable."""
    return {c: _plain(row.get(c)) for c in (*SCORE_COLUMNS, "flags", "shareable")}


def workspace_images(ws: Workspace) -> pd.DataFrame:
    """Every manifest image as a deck sees it, indexed by ``image_id``: ``condition``, ``path``, ``source``, ``run``,
    ``refused`` (the reason, or None when a deck may take it) and ``audit`` (:func:`audit_record`, or None)."""
    manifest = ws.load_manifest()
    ids = manifest["image_id"].astype(str)
    runs = synthetic_runs(manifest).reindex(manifest.index)
    audits = {run: load_audit(ws, run)[0].assign(image_id=lambda f: f["image_id"].astype(str)).set_index("image_id")
              for run in sorted(set(runs.dropna())) if (audit_dir(ws, run) / "audit.parquet").exists()}
    stale = {run: why for run in audits if (why := audit_staleness(ws, manifest, run)) is not None}
    patient_pixels = {run for run in audits if run_uses_patient_pixels(
        ws, run, manifest.loc[runs.index[runs == run], "generator"].astype(str))}
    gated = gate_reasons(ws, manifest)
    excluded = manifest["exclude_reason"] if "exclude_reason" in manifest.columns else pd.Series(None, manifest.index)
    rows = []
    for k, image_id in enumerate(ids):
        source, run, why = str(manifest["source"].iat[k]), runs.iat[k], excluded.iat[k]
        record = None
        if source != SYNTHETIC:
            refused = REASON_REAL if source == "real" else REASON_NOT_SYNTHETIC.format(source=source)
        elif isinstance(why, str) and why:
            refused = REASON_EXCLUDED.format(reason=why)
        elif run not in audits:
            refused = REASON_RUN_UNAUDITED.format(run=run)
        elif run in stale:  # the gate treats a stale run as never audited; a deck refuses it outright
            refused = REASON_RUN_STALE.format(why=stale[run], run=run)
        elif run in patient_pixels:  # the audit passing a warp of a patient does not make it a stranger's face
            refused = REASON_PATIENT_PIXELS.format(run=run)
        else:
            refused = gated.get(image_id)
            if image_id in audits[run].index:
                record = audit_record(audits[run].loc[image_id])
        label = manifest["label"].iat[k]
        rows.append({"image_id": image_id, "condition": str(label) if isinstance(label, str) else "",
                     "path": str(manifest["path"].iat[k]), "source": source, "run": run if isinstance(run, str) else "",
                     "refused": refused, "audit": record})
    frame = pd.DataFrame(rows, columns=["image_id", "condition", "path", "source", "run", "refused", "audit"])
    frame = frame.drop_duplicates("image_id").set_index("image_id")
    frame["refused"] = pd.Series([r if isinstance(r, str) else None for r in frame["refused"]], index=frame.index,
                                 dtype=object)  # None, never NaN, for an image a deck may take
    return frame


class WorkspaceImages:
    """:func:`workspace_images` of one workspace, read again whenever the manifest or an audit file changes (the
    app keeps one on ``app.state``; nothing at module level)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._table: pd.DataFrame | None = None

    def _stamp(self) -> tuple[Any, ...]:
        files = [self.ws.manifest_path, *sorted((self.ws.root / "audit").glob("*/audit.parquet"))]
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists())

    def table(self) -> pd.DataFrame:
        with self._lock:
            key = self._stamp()
            if key != self._key or self._table is None:
                self._table, self._key = workspace_images(self.ws), key
            return self._table

    def runs(self) -> list[str]:
        """The workspace's generator runs (synthetic images only)."""
        t = self.table()
        return sorted(set(t.loc[t["source"] == SYNTHETIC, "run"]) - {""})

    def verdict(self, image_id: str) -> str | None:
        """Why a deck refuses ``image_id`` now, or None."""
        t = self.table()
        if image_id not in t.index:
            return REASON_UNKNOWN
        reason = t.at[image_id, "refused"]
        return reason if isinstance(reason, str) else None

    def file(self, image_id: str) -> Path:
        """The file of a workspace image a deck may show; :class:`DeckError` with the reason otherwise."""
        reason = self.verdict(image_id)
        if reason is not None:
            raise DeckError(f"Image {image_id[:12]} is refused: {reason}.")
        return self.ws.resolve(str(self.table().at[image_id, "path"]))


# --- decks ------------------------------------------------------------------------------------------------------------


def create_deck(db: Session, owner: User, name: str, description: str = "", conditions: Iterable[str] = ()) -> Deck:
    """A new deck with (unannotated) ``conditions``."""
    name = name.strip()
    if not name:
        raise DeckError("A deck needs a name.")
    deck = Deck(name=name[:200], description=description.strip(), owner_id=owner.id)
    for k, c in enumerate(dict.fromkeys(str(c) for c in conditions if str(c))):
        deck.conditions.append(DeckCondition(name=c, position=k))
    db.add(deck)
    db.commit()
    return deck


def condition_named(db: Session, deck: Deck, name: str) -> DeckCondition:
    """The deck's condition ``name``, created (at the end) when missing."""
    for c in deck.conditions:
        if c.name == name:
            return c
    cond = DeckCondition(name=name, position=len(deck.conditions))
    deck.conditions.append(cond)
    db.flush()
    return cond


@dataclass
class AddResult:
    added: list[DeckImage] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    already: list[str] = field(default_factory=list)


def add_images(db: Session, deck: Deck, images: WorkspaceImages, image_ids: Iterable[str]) -> AddResult:
    """Add workspace images through the deck gate; each refused image comes back with its reason."""
    table = images.table()
    have = {i.image_id for i in deck.images}
    result = AddResult()
    position = max((i.position for i in deck.images), default=-1) + 1
    for image_id in dict.fromkeys(str(i).strip() for i in image_ids if str(i).strip()):
        reason = images.verdict(image_id)
        if reason is not None:
            result.refused.append((image_id, reason))
            continue
        if image_id in have:
            result.already.append(image_id)
            continue
        row = table.loc[image_id]
        cond = condition_named(db, deck, row["condition"])
        img = DeckImage(image_id=image_id, origin=FROM_WORKSPACE, run=row["run"], position=position, condition=cond,
                        audit=row["audit"] or {})
        deck.images.append(img)
        result.added.append(img)
        position += 1
    db.commit()
    if result.refused:
        log.info("deck %s refused %d image(s)", deck.id, len(result.refused))
    return result


def reorder(db: Session, deck: Deck, positions: dict[int, float]) -> None:
    """New order of the deck's images: by the given number (deck image id -> number), ties and images without a
    number in their current order; positions are renumbered 0, 1, 2, ..."""
    current = sorted(deck.images, key=lambda i: i.position)
    keyed = sorted(enumerate(current), key=lambda t: (positions.get(t[1].id, math.inf), t[0]))
    for k, (_, img) in enumerate(keyed):
        img.position = k
    db.commit()


def set_retired(db: Session, deck: Deck, deck_image_id: int, retired: bool) -> DeckImage:
    img = deck_image(deck, deck_image_id)
    img.retired = retired
    db.commit()
    return img


def deck_image(deck: Deck, deck_image_id: int) -> DeckImage:
    for img in deck.images:
        if img.id == deck_image_id:
            return img
    raise DeckError(f"Deck '{deck.name}' has no image {deck_image_id}.")


def parse_hpo_terms(text: str) -> list[str]:
    """HPO term ids from text separated by commas, semicolons, spaces or lines; :class:`DeckError` naming a bad one.

    >>> parse_hpo_terms("HP:0000316, HP:0000286;HP:0000316")
    ['HP:0000316', 'HP:0000286']
    """
    terms = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    bad = [t for t in terms if not _HPO.match(t)]
    if bad:
        raise DeckError(f"Not an HPO term id: {', '.join(bad)} (write them as HP:0000316).")
    return list(dict.fromkeys(terms))


def annotate(db: Session, condition: DeckCondition, *, name: str, hpo_terms: str, features_text: str,
             description: str) -> DeckCondition:
    """Set a condition's annotation (name, HPO terms, key features in words, description)."""
    name = name.strip()
    if not name:
        raise DeckError("A condition needs a name.")
    if any(c.name == name and c.id != condition.id for c in condition.deck.conditions):
        raise DeckError(f"The deck already has a condition named '{name}'.")
    condition.hpo_terms = parse_hpo_terms(hpo_terms)
    condition.name, condition.features_text, condition.description = name[:200], features_text.strip(), description.strip()
    db.commit()
    return condition


def image_path(deck_img: DeckImage, images: WorkspaceImages, edu_dir: Path) -> Path:
    """The file of a deck image, checked now: a workspace image must still pass the deck gate."""
    if deck_img.origin == FROM_IMPORT:
        path = edu_dir / "images" / f"{deck_img.image_id}.png"
        if not re.fullmatch(r"[0-9a-f]{64}", deck_img.image_id) or not path.is_file():
            raise DeckError(f"The imported image {deck_img.image_id[:12]} is missing from {path.parent}.")
        return path
    return images.file(deck_img.image_id)


# --- zip export and import ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded deck zip may hold."""

    max_zip_bytes: int = 64 * 1024 * 1024
    max_entries: int = 2001
    max_entry_bytes: int = 16 * 1024 * 1024  # one image (uncompressed)
    max_total_bytes: int = 512 * 1024 * 1024  # all entries, uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed, per entry
    max_pixels: int = 4096 * 4096
    max_json_bytes: int = 2 * 1024 * 1024


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    hpo_terms: list[str] = Field(default_factory=list, max_length=200)
    features_text: str = Field(default="", max_length=20000)
    description: str = Field(default="", max_length=20000)


class _Image(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(max_length=200)
    condition: str
    position: int = 0
    retired: bool = False
    audit: dict[str, Any] | None = None


class _DeckFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    version: int
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20000)
    conditions: list[_Condition] = Field(max_length=1000)
    images: list[_Image] = Field(max_length=2000)


def _png_bytes(rgb: np.ndarray) -> bytes:
    """Pixels only, as PNG: no EXIF, text chunks or ICC profile travel along."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def export_deck(deck: Deck, images: WorkspaceImages, edu_dir: Path) -> tuple[bytes, list[tuple[str, str]]]:
    """The deck as zip bytes (deck.json + images/NNNN.png) and the images left out with their reasons (a workspace
    image that no longer passes the deck gate)."""
    from phenosynth.data.imageio import ImageDecodeError, load_rgb

    buf, left_out, records = io.BytesIO(), [], []
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for img in sorted(deck.images, key=lambda i: i.position):
            try:
                rgb = load_rgb(image_path(img, images, edu_dir))
            except (DeckError, ImageDecodeError) as exc:
                left_out.append((img.image_id, str(exc)))
                continue
            name = f"images/{len(records):04d}.png"
            zf.writestr(name, _png_bytes(rgb))
            records.append({"file": name, "condition": img.condition.name, "position": img.position,
                            "retired": img.retired, "audit": img.audit})
        doc = {"format": DECK_FORMAT, "version": DECK_VERSION, "name": deck.name, "description": deck.description,
               "conditions": [{"name": c.name, "hpo_terms": list(c.hpo_terms), "features_text": c.features_text,
                               "description": c.description} for c in deck.conditions],
               "images": records}
        zf.writestr("deck.json", json.dumps(doc, indent=1, ensure_ascii=False))
    return buf.getvalue(), left_out


def _check_entry_name(name: str) -> None:
    if (not name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name) or "\x00" in name
            or any(part in ("..", "") for part in name.rstrip("/").split("/"))
            or posixpath.normpath(name) != name.rstrip("/")):
        raise DeckError(f"Refused zip: the entry '{name[:120]}' has a path outside the deck folder.")


def _read_entries(data: bytes, limits: ZipLimits) -> dict[str, bytes]:
    """The zip's files by name, after every check of the module docstring; :class:`DeckError` for the first problem."""
    if len(data) > limits.max_zip_bytes:
        raise DeckError(f"Refused zip: {len(data):,} bytes is more than the limit of {limits.max_zip_bytes:,}.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise DeckError("Refused upload: not a zip file.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise DeckError(f"Refused zip: {len(infos)} entries, more than the limit of {limits.max_entries}.")
        total, out = 0, {}
        for info in infos:
            _check_entry_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise DeckError(f"Refused zip: the entry '{info.filename}' is a symbolic link.")
            if info.flag_bits & 0x1:
                raise DeckError(f"Refused zip: the entry '{info.filename}' is encrypted.")
            if info.is_dir():
                continue
            if info.filename != "deck.json" and not re.fullmatch(r"images/[A-Za-z0-9_.-]{1,100}\.(png|jpe?g)",
                                                                  info.filename, flags=re.I):
                raise DeckError(f"Refused zip: unexpected entry '{info.filename}' (a deck zip holds deck.json and "
                                "images/*.png or *.jpg only).")
            cap = limits.max_json_bytes if info.filename == "deck.json" else limits.max_entry_bytes
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > cap or ratio > limits.max_ratio:
                raise DeckError(f"Refused zip: '{info.filename}' unpacks to {info.file_size:,} bytes (ratio "
                                f"{ratio:.0f}:1): a decompression bomb or an oversized file (limits {cap:,} bytes, "
                                f"{limits.max_ratio:.0f}:1).")
            try:
                with zf.open(info) as f:
                    content = f.read(cap + 1)  # never trust the declared size
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                raise DeckError(f"Refused zip: cannot read '{info.filename}' ({exc}).") from None
            if len(content) > cap or len(content) > max(info.compress_size, 1) * limits.max_ratio:
                raise DeckError(f"Refused zip: '{info.filename}' unpacks to more than its header says: a "
                                "decompression bomb.")
            total += len(content)
            if total > limits.max_total_bytes:
                raise DeckError(f"Refused zip: more than {limits.max_total_bytes:,} bytes unpacked in all.")
            if info.filename in out:
                raise DeckError(f"Refused zip: the entry '{info.filename}' appears twice.")
            out[info.filename] = content
    if "deck.json" not in out:
        raise DeckError("Refused zip: no deck.json (export a deck from phenosynth serve to see the format).")
    return out


def _decode_upload_image(name: str, content: bytes, limits: ZipLimits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from phenosynth.data.imageio import ImageDecodeError, decode_rgb_bytes

    try:
        with Image.open(io.BytesIO(content)) as probe:
            kind = probe.format
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        kind = None
    if kind not in ("PNG", "JPEG"):
        raise DeckError(f"Refused zip: '{name}' is not a PNG or JPEG image.")
    try:
        return decode_rgb_bytes(content, max_pixels=limits.max_pixels)[0]
    except ImageDecodeError as exc:
        raise DeckError(f"Refused zip: '{name}': {exc}.") from None


@dataclass
class ImportResult:
    deck: Deck
    imported: int
    refused: list[tuple[str, str]]  # (file in the zip, reason)


def import_deck(db: Session, owner: User, data: bytes, edu_dir: Path, limits: ZipLimits = ZipLimits()) -> ImportResult:
    """A new deck from zip bytes (see the module docstring); :class:`DeckError` refuses a hostile or broken zip whole."""
    entries = _read_entries(data, limits)
    try:
        doc = _DeckFile.model_validate_json(entries["deck.json"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DeckError(f"Refused zip: deck.json is not a deck ({where}: {first['msg']}).") from None
    if (doc.format, doc.version) != (DECK_FORMAT, DECK_VERSION):
        raise DeckError(f"Refused zip: deck.json has format {doc.format!r} version {doc.version}; expected "
                        f"{DECK_FORMAT!r} version {DECK_VERSION}.")
    names = [c.name for c in doc.conditions]
    if len(set(names)) != len(names):
        raise DeckError("Refused zip: deck.json names a condition twice.")
    for c in doc.conditions:
        parse_hpo_terms(" ".join(c.hpo_terms))
    pixels: dict[str, np.ndarray] = {}
    for img in doc.images:
        if img.file not in entries or not img.file.startswith("images/"):
            raise DeckError(f"Refused zip: deck.json lists '{img.file[:120]}', which the zip does not hold.")
        if img.condition not in names:
            raise DeckError(f"Refused zip: '{img.file}' is of condition '{img.condition[:120]}', which deck.json "
                            "does not list.")
        pixels[img.file] = _decode_upload_image(img.file, entries[img.file], limits)

    deck = Deck(name=doc.name.strip()[:200] or "imported deck", description=doc.description, owner_id=owner.id)
    conditions = {}
    for k, c in enumerate(doc.conditions):
        conditions[c.name] = DeckCondition(name=c.name, hpo_terms=list(dict.fromkeys(c.hpo_terms)),
                                           features_text=c.features_text, description=c.description, position=k)
        deck.conditions.append(conditions[c.name])
    refused: list[tuple[str, str]] = []
    folder = edu_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for k, img in enumerate(sorted(doc.images, key=lambda i: i.position)):
        record = img.audit or {}
        flags = [f for f in (record.get("flags") or []) if f in PRIVACY_FLAGS]
        if not record:
            refused.append((img.file, REASON_NO_AUDIT_RECORD))
            continue
        if record.get("shareable") is not True or flags:
            refused.append((img.file, "audit: " + (", ".join(flags) or "not shareable")))
            continue
        png = _png_bytes(pixels[img.file])
        from phenosynth.data.imageio import sha256_bytes

        image_id = sha256_bytes(png)
        if image_id in seen:
            refused.append((img.file, "the same image twice"))
            continue
        seen.add(image_id)
        target = folder / f"{image_id}.png"
        if not target.exists():
            atomic_write(target, lambda p, b=png: Path(p).write_bytes(b))
        deck.images.append(DeckImage(image_id=image_id, origin=FROM_IMPORT, run="", position=k, retired=img.retired,
                                     condition=conditions[img.condition],
                                     audit={c: record.get(c) for c in (*SCORE_COLUMNS, "flags", "shareable")}))
    db.add(deck)
    db.commit()
    log.info("imported deck %s: %d image(s), %d refused", deck.name, len(seen), len(refused))
    return ImportResult(deck=deck, imported=len(seen), refused=refused)


def deck_by_id(db: Session, deck_id: int) -> Deck | None:
    return db.scalar(select(Deck).where(Deck.id == deck_id))


__all__ = ["workspace_images", "WorkspaceImages", "create_deck", "add_images", "AddResult", "reorder", "set_retired",
           "annotate", "parse_hpo_terms", "image_path", "export_deck", "import_deck", "ImportResult", "ZipLimits",
           "DeckError", "audit_record", "deck_by_id", "REASON_REAL", "REASON_RUN_UNAUDITED", "REASON_UNKNOWN"]
