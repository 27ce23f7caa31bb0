"""The privacy audit of a workspace's synthetic images: identity leakage, membership, pixel copies, duplicates.

For every generator run (``params["run"]`` of the synthetic manifest rows) :func:`audit` writes
``WS/audit/<run>/audit.parquet`` (one row per synthetic image, columns :data:`AUDIT_COLUMNS`, with a ``flags`` list)
and ``WS/audit/<run>/summary.json`` (calibration, per-run shares, membership AUC, settings, and ``inputs``: what it
measured, :mod:`phenosynth.audit.inputs`), both atomically.

- **Identity**: embeddings of an identity embedder from the backbone registry (default ``dlib_resnet128``), cached
  by :func:`phenosynth.models.features.extract_features`. The threshold is calibrated on the workspace's own real
  photos (:func:`phenosynth.audit.stats.calibrate_threshold`); a synthetic image whose nearest real *training* photo
  is closer than the threshold is an ``identity-match``. The baseline of a run's matched share is the *stranger
  rate*: the share of real photos whose nearest training photo of another person is under the threshold (the
  nearest of many photos is a minimum of many impostor distances, so it is far above the pairwise impostor rate).
- **Membership**: each real photo's distance to the nearest synthetic image of its condition in the run; the ROC
  AUC of training patients against held-out test patients (0.5 = nothing remembered).
- **Copies**: Hamming distance of the 64-bit perceptual hashes (manifest ``phash``, imagehash at ingest/generate)
  to every real photo, and SSIM of the aligned crops (grey, 112 px) against the image's parents and its nearest
  real photos by identity and by hash; at most ``phash_bits`` bits or an SSIM of at least ``ssim_threshold`` is a
  ``near-copy``.
- **Duplicates**: a synthetic image within ``duplicate_bits`` bits of an earlier image of the same run is a
  ``duplicate`` (redundancy, not a privacy flag: the first of each group is kept).
- An image without a usable face cannot be measured for identity and is flagged ``no-face``.
- **VLM reports** (optional, ``vlm``): columns ``vlm_status``, ``vlm_error``, ``vlm_report`` and the summary's
  ``reports`` (:mod:`phenosynth.audit.vlm`).

A re-audit of a run replaces that run's files (they are derived from the workspace and deterministic); the new
summary records what it replaced (``replaces``), and :class:`RunAudit.replaced` says so to the caller.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from phenosynth.audit import stats
from phenosynth.audit.fidelity import Fidelity
from phenosynth.audit.vlm import ReportAudit, VLMConfig, report_assessor
from phenosynth.data.manifest import REAL, TEST, TRAIN, require_real_train, synthetic, usable
from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError
from phenosynth.progress import ProgressCallback

log = logging.getLogger(__name__)

FLAG_IDENTITY = "identity-match"
FLAG_COPY = "near-copy"
FLAG_NO_FACE = "no-face"
FLAG_DUPLICATE = "duplicate"
#: Flags that make an image unshareable (docs/DESIGN.md, Privacy contract); ``duplicate`` is redundancy only.
PRIVACY_FLAGS = (FLAG_IDENTITY, FLAG_COPY, FLAG_NO_FACE)

AUDIT_COLUMNS = [
    "image_id", "path", "label", "run", "generator", "parents", "has_face",
    "nearest_real_id", "nearest_real_distance", "nearest_real_label", "nearest_same_condition", "nearest_is_parent",
    "parent_distance", "identity_match",
    "phash_nearest_id", "phash_bits", "ssim_nearest_id", "ssim", "near_copy",
    "synthetic_nn_id", "synthetic_nn_distance", "synthetic_nn_phash_bits", "duplicate",
    "flags", "shareable",
]  # fmt: skip

#: Side of the grey crops SSIM compares.
SSIM_SIDE = 112


#: What an export of, and the audit summary of, a run of a generator that transforms the patients' own photos says.
AUGMENTATION_NOTE = ("augmentation of patient photos, not privacy-preserving synthesis; only images the audit passed "
                     "are included")


def transforms_patient_photos(generators: Iterable[object]) -> bool:
    """Whether any of these registered generators makes its images from the patients' own pixels (the generator class's
    ``uses_patient_pixels``, e.g. shape-warp): its output is augmentation, not synthesis (docs/DESIGN.md)."""
    from phenosynth.synth.generators import GENERATORS

    return any(isinstance(g, str) and g in GENERATORS and bool(getattr(GENERATORS.get(g), "uses_patient_pixels", False))
               for g in generators)


def run_uses_patient_pixels(ws: Workspace, run: str, generators: Iterable[object]) -> bool:
    """Whether the images of generator run ``run`` hold patient pixels: its ``run.json``'s per-run
    ``uses_patient_pixels`` (phenotype-transfer: False with donor identities, True with morphs of patients' photos),
    else, for runs recorded before that key or ingested as synthetic, the generators' class attribute
    (:func:`transforms_patient_photos`)."""
    from phenosynth.synth.generation import safe_name

    path = ws.synthetic_dir / safe_name(run) / "run.json"
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        record = {}
    flag = record.get("uses_patient_pixels") if isinstance(record, dict) else None
    return bool(flag) if isinstance(flag, bool) else transforms_patient_photos(generators)


@dataclass
class RunAudit:
    """One generator run's audit (the CLI prints it; summary.json holds it)."""

    run: str
    generator: str
    n_images: int
    n_measured: int  # with a face embedding
    n_matched: int
    matched_share: float  # n_matched / n_measured
    matched_ci: tuple[float, float]  # Wilson 95 %
    matched_own_parent: int  # matches whose nearest real photo is one of the image's own parents
    stranger_rate: float  # share of real photos matched by their nearest training photo of *another* person
    stranger_ci: tuple[float, float]  # Wilson 95 %: the baseline to compare matched_share with
    membership_auc: float
    membership_ci: tuple[float, float]
    n_members: int  # real training photos scored for membership
    n_nonmembers: int  # real test photos scored
    n_near_copies: int
    n_duplicates: int
    n_no_face: int
    n_shareable: int
    median_distance: float
    parquet_path: Path
    summary_path: Path
    replaced: str | None = None  # when this audit replaced an earlier one: its creation time
    #: (distance to the nearest synthetic image, is a training patient) per scored real photo: the ROC's data
    membership_roc: tuple[np.ndarray, np.ndarray] = field(repr=False, default_factory=lambda: (np.zeros(0), np.zeros(0, bool)))
    html_path: Path | None = None
    fidelity: Fidelity | None = None  # KID and phenotype agreement (summary.json ``fidelity``)
    reports: ReportAudit | None = None  # VLM phenotype reports (summary.json ``reports``; audit.vlm)
    uses_patient_pixels: bool | None = None  # the run's images hold patient pixels (:func:`run_uses_patient_pixels`)

    @property
    def transforms_patient_photos(self) -> bool:
        """The run's images hold the patients' own pixels: the per-run record, else the generator's class attribute
        (:func:`run_uses_patient_pixels`)."""
        if self.uses_patient_pixels is not None:
            return self.uses_patient_pixels
        return transforms_patient_photos(self.generator.split(", "))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parquet_path"], d["summary_path"] = str(self.parquet_path), str(self.summary_path)
        d["html_path"] = None if self.html_path is None else str(self.html_path)
        del d["membership_roc"], d["fidelity"], d["reports"]
        return d


@dataclass
class AuditResult:
    """What :func:`audit` found, over the audited runs."""

    embedder: str
    metric: str
    calibration: stats.Calibration
    runs: list[RunAudit]
    n_real: int  # real photos with an embedding (the calibration set)
    n_real_train: int
    seconds: float
    genuine: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    impostor: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def run_of(params: object, generator: object) -> str:
    """The generator run a synthetic image belongs to: ``params["run"]``, else its generator name, else ``unknown``.

    >>> run_of('{"run": "shape-warp-seed0", "seed": 0}', "shape-warp"), run_of(None, "import")
    ('shape-warp-seed0', 'import')
    """
    if isinstance(params, str) and params:
        try:
            value = json.loads(params).get("run")
        except (ValueError, AttributeError):
            value = None
        if value:
            return str(value)
    return str(generator) if isinstance(generator, str) and generator else "unknown"


def audit_dir(ws: Workspace, run: str) -> Path:
    """``WS/audit/<run>``."""
    from phenosynth.data.filenames import safe_name

    return ws.root / "audit" / safe_name(run)


def embed_faces(
    ws: Workspace, embedder: str, ids: list[str], weights: str, preprocessing: str, on_progress: ProgressCallback | None
) -> dict[str, np.ndarray]:
    """image_id -> identity embedding (float64; facenet's L2-normalised) of each of ``ids`` with a usable face,
    through the feature cache."""
    from phenosynth.models.features import extract_features

    kept, X = extract_features(ws, embedder, ids, weights=weights, preprocessing=preprocessing,
                               on_progress=on_progress)
    X = np.asarray(X, dtype=np.float64)
    if embedder == "facenet" and len(X):  # its threshold is defined on L2-normalised embeddings
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return dict(zip(kept, X))


def _grey_crops(ws: Workspace, ids: list[str]) -> dict[str, np.ndarray]:
    """Aligned crops (the face stage's cache) as ``(SSIM_SIDE, SSIM_SIDE)`` float64 grey images."""
    from PIL import Image

    from phenosynth.data.imageio import load_rgb
    from phenosynth.faces import align
    from phenosynth.models.features import CROP_SIZE

    paths = align.ensure_aligned_crops(ws, ids, size=CROP_SIZE)
    out = {}
    for i, p in paths.items():
        grey = Image.fromarray(load_rgb(p)).convert("L").resize((SSIM_SIDE, SSIM_SIDE), Image.BILINEAR)
        out[i] = np.asarray(grey, dtype=np.float64)
    return out


def _stack(emb: dict[str, np.ndarray], ids: list[str]) -> np.ndarray:
    return np.stack([emb[i] for i in ids]) if ids else np.zeros((0, 1))


@dataclass
class _Reference:
    """The real side every run is compared with: calibration, training embeddings, hashes and the stranger rate."""

    real_e: pd.DataFrame  # real photos with an embedding (column ``subject`` added)
    genuine: np.ndarray
    impostor: np.ndarray
    calibration: stats.Calibration
    metric: str
    train_ids: list[str]
    X_train: np.ndarray
    train_label: dict[str, str]
    hash_ids: list[str]
    hashes: list[str]
    stranger: tuple[int, int]


@dataclass(frozen=True)
class _CopyRules:
    phash_bits: int
    ssim_threshold: float
    duplicate_bits: int


def audit(
    ws: Workspace,
    run: str | None = None,
    embedder: str = "dlib_resnet128",
    *,
    weights: str = "default",
    preprocessing: str = "native",
    metric: str | None = None,
    quantile: float = 0.001,
    phash_bits: int = 4,
    ssim_threshold: float = 0.9,
    duplicate_bits: int = 2,
    n_boot: int = 1000,
    seed: int = 0,
    kid_backbone: str | None = "mobilenet_v2",
    probe_backbone: str | None = "shape68",
    kid_subsets: int = 100,
    vlm: VLMConfig | None = None,
    on_progress: ProgressCallback | None = None,
) -> AuditResult:
    """Audit the synthetic images of ``run`` (default: every run) against the workspace's real photos; write
    ``WS/audit/<run>/{audit.parquet, summary.json, audit.html}`` per run.

    Args:
        ws: a split workspace with the face pass run on its real and synthetic images.
        run: one generator run (``WS/synthetic/<run>``); None audits each run found in the manifest.
        embedder: identity embedder from the backbone registry (``dlib_resnet128``, ``facenet``, any other name).
        weights, preprocessing: passed to the feature extractor (``native``: the embedder's own input size and
            normalisation).
        metric: ``euclidean`` | ``cosine``; default: the metric of the embedder's documented threshold, else cosine.
        quantile: the impostor quantile that bounds the threshold (0.001 = 0.1 %).
        phash_bits, ssim_threshold: a synthetic image within ``phash_bits`` bits of a real photo, or with an SSIM of
            at least ``ssim_threshold`` to one, is a near-copy.
        duplicate_bits: hash distance under which a synthetic image duplicates an earlier one of its run.
        n_boot, seed: the membership AUC's bootstrap (resampling subjects); ``seed`` also seeds the KID subsets and
            the split-half baseline.
        kid_backbone, kid_subsets: fidelity (:mod:`phenosynth.audit.fidelity`): KID in this backbone's feature space
            over ``kid_subsets`` subsets; None skips it.
        probe_backbone: the phenotype-agreement probe's backbone; None skips it.
        vlm: VLM phenotype reports of the synthetic images and the real training photos, compared by
            :mod:`phenosynth.audit.report_similarity` (:mod:`phenosynth.audit.vlm`); None skips them.
        on_progress: ``(done, total)`` of the embedding step (the slow part; cached for the next audit).

    Raises:
        PhenosynthError: no synthetic images (or none of ``run``), no split, no face embedding of a real training
            photo, or too few real subjects to calibrate an embedder that has no documented threshold.
    """
    t0 = time.perf_counter()
    metric, doc = resolve_metric(embedder, metric)
    manifest = ws.load_manifest()
    syn, runs = _synthetic_rows(ws, manifest, run)
    real = usable(manifest)
    real = real[real["source"] == REAL]
    require_real_train(manifest, ws.root)
    reports_of = report_assessor(ws, _with_subject(ws, real[real["split"] == TRAIN]), syn, vlm)
    emb = embed_faces(ws, embedder, real["image_id"].astype(str).tolist() + syn["image_id"].astype(str).tolist(),
                      weights, preprocessing, on_progress)
    ref = _reference(ws, emb, real, embedder, doc, metric, quantile)
    settings = {"embedder": embedder, "weights": weights, "preprocessing": preprocessing, "metric": metric,
                "quantile": quantile, "phash_bits": phash_bits, "ssim_threshold": ssim_threshold,
                "duplicate_bits": duplicate_bits, "n_boot": n_boot, "seed": seed,
                "documented_source": None if doc is None else doc.source, "kid_backbone": kid_backbone,
                "probe_backbone": probe_backbone, "kid_subsets": kid_subsets,
                "vlm": None if vlm is None else vlm.settings()}
    fidelity_of = _fidelity_assessor(ws, real, syn, kid_backbone, probe_backbone, kid_subsets=kid_subsets, seed=seed)
    rules = _CopyRules(phash_bits, ssim_threshold, duplicate_bits)
    from phenosynth.audit.inputs import manifest_inputs

    results = []
    for r in runs:
        frame, run_audit = _audit_run(ws, r, syn[syn["run"] == r], emb, ref, rules, n_boot=n_boot, seed=seed)
        run_audit.fidelity = fidelity_of(r)
        frame, run_audit.reports = reports_of(r, frame)
        _write_run(ws, run_audit, frame, ref, settings, manifest_inputs(manifest, r))
        results.append(run_audit)
    return AuditResult(embedder=embedder, metric=metric, calibration=ref.calibration, runs=results,
                       n_real=len(ref.real_e), n_real_train=len(ref.train_ids), seconds=time.perf_counter() - t0,
                       genuine=ref.genuine, impostor=ref.impostor)


def resolve_metric(embedder: str, metric: str | None) -> tuple[str, stats.DocumentedThreshold | None]:
    """The distance to use and the embedder's documented threshold when it is defined in that distance."""
    doc = stats.documented_threshold(embedder)
    metric = metric or stats.default_metric(embedder)
    if metric not in stats.METRICS:
        raise PhenosynthError(f"Unknown distance '{metric}'. Use one of: {', '.join(stats.METRICS)}.")
    if doc is not None and metric != doc.metric:
        log.warning("%s's documented threshold is a %s distance; with %s only the impostor quantile applies",
                    embedder, doc.metric, metric)
        doc = None
    return metric, doc


def _synthetic_rows(ws: Workspace, manifest: pd.DataFrame, run: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The synthetic rows to audit (column ``run`` added) and their runs, sorted."""
    syn = synthetic(manifest).copy()
    if syn.empty:
        raise PhenosynthError(f"Workspace {ws.root} has no synthetic images to audit. Run first: "
                              f"phenosynth generate -w {ws.root}")
    syn["run"] = [run_of(p, g) for p, g in zip(syn["params"], syn["generator"])]
    runs = sorted(syn["run"].unique())
    if run is None:
        return syn, runs
    if run not in runs:
        raise PhenosynthError(f"No synthetic images of run '{run}' in {ws.root}. Runs: {', '.join(runs)}.")
    return syn[syn["run"] == run], [run]


def _with_subject(ws: Workspace, real: pd.DataFrame) -> pd.DataFrame:
    """``real`` with a ``subject`` column: its subject id, else (no subject recorded) the image itself, with subjects
    joined as the split joined them (near-duplicate photos filed under two subject ids, ``split_report.csv``): a
    re-encoded copy of a patient under another id is the same person, not an impostor pair at distance ~0."""
    from phenosynth.data.leakage import recorded_near_duplicates
    from phenosynth.data.split import subject_groups

    out = real.copy()
    subjects = out["subject_id"].astype("object").where(out["subject_id"].notna(), out["image_id"]).astype(str)
    ids = out["image_id"].astype(str).to_numpy()
    present = set(ids)
    pairs = [(a, b, 0) for a, b in recorded_near_duplicates(ws) if a in present and b in present]
    out["subject"] = subject_groups(ids, subjects.to_numpy(), pairs)[0]
    return out


def calibrate_identity(
    ws: Workspace, emb: dict[str, np.ndarray], real: pd.DataFrame, embedder: str,
    doc: stats.DocumentedThreshold | None, metric: str, quantile: float,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, stats.Calibration]:
    """The identity threshold on the workspace's real photos ``real`` (those with an embedding in ``emb``):
    ``(those rows with a ``subject`` column, genuine distances, impostor distances, calibration)``. The audit and the
    donor screening (:mod:`phenosynth.audit.donors`) both decide "same person" by it."""
    real_e = _with_subject(ws, real[real["image_id"].astype(str).isin(emb)])
    cal_ids = real_e["image_id"].astype(str).tolist()
    genuine, impostor = stats.genuine_impostor_distances(_stack(emb, cal_ids), real_e["subject"].to_numpy(), metric)
    try:
        calibration = stats.calibrate_threshold(genuine, impostor, None if doc is None else doc.value,
                                                quantile=quantile, metric=metric)
    except ValueError as exc:
        raise PhenosynthError(f"Cannot calibrate {embedder}: {exc}") from None
    if len(impostor) and not calibration.quantile_estimable:
        log.warning("only %d impostor pairs: their %.2g quantile is not estimable (close to their minimum)%s",
                    len(impostor), quantile, "" if doc is None else "; the documented threshold is used")
    return real_e, genuine, impostor, calibration


def _reference(ws: Workspace, emb: dict[str, np.ndarray], real: pd.DataFrame, embedder: str,
               doc: stats.DocumentedThreshold | None, metric: str, quantile: float) -> _Reference:
    """Calibrate the threshold on the real photos and gather what each run is compared with."""
    real_e, genuine, impostor, calibration = calibrate_identity(ws, emb, real, embedder, doc, metric, quantile)
    cal_ids = real_e["image_id"].astype(str).tolist()
    train = real_e[real_e["split"] == TRAIN]
    train_ids = train["image_id"].astype(str).tolist()
    if not train_ids:
        raise PhenosynthError(f"No real training photo of {ws.root} has a face embedding by {embedder}. Run first: "
                              f"phenosynth faces -w {ws.root}")
    X_train = _stack(emb, train_ids)
    real_hash = real[real["phash"].notna()]
    return _Reference(
        real_e=real_e, genuine=genuine, impostor=impostor, calibration=calibration, metric=metric,
        train_ids=train_ids, X_train=X_train, train_label=dict(zip(train_ids, train["label"].astype(str))),
        hash_ids=real_hash["image_id"].astype(str).tolist(), hashes=real_hash["phash"].astype(str).tolist(),
        stranger=_stranger_matches(emb, real_e, train, cal_ids, X_train, calibration, metric),
    )


def _fidelity_assessor(ws: Workspace, real: pd.DataFrame, syn: pd.DataFrame, kid_backbone: str | None,
                       probe_backbone: str | None, *, kid_subsets: int, seed: int) -> Callable[[str], Fidelity]:
    """Extract the fidelity features of every image once; returns run -> that run's :class:`Fidelity`."""
    from phenosynth.audit import fidelity as fid

    real = _with_subject(ws, real)
    train, test = real[real["split"] == TRAIN], real[real["split"] == TEST]
    syn_ids = syn["image_id"].astype(str).tolist()
    kid_feats, kid_note = ({}, None) if kid_backbone is None else fid.backbone_features(
        ws, kid_backbone, train["image_id"].astype(str).tolist() + syn_ids)
    probe_feats, probe_note = ({}, None) if probe_backbone is None else fid.backbone_features(
        ws, probe_backbone, pd.concat([train, test])["image_id"].astype(str).tolist() + syn_ids)

    def assess(run: str) -> Fidelity:
        rows = syn[syn["run"] == run]
        out = fid.Fidelity(kid_backbone, probe_backbone, notes=[n for n in (kid_note, probe_note) if n])
        if kid_backbone is not None and kid_note is None:
            out.kid = fid.kid_table(kid_feats, train, rows, subsets=kid_subsets, seed=seed)
        if probe_backbone is not None and probe_note is None:
            out.phenotype = fid.phenotype_table(probe_feats, train, test, rows, seed=seed)
        return out

    return assess


def _write_run(ws: Workspace, run_audit: RunAudit, frame: pd.DataFrame, ref: _Reference,
               settings: dict[str, Any], inputs: dict[str, Any]) -> None:
    """audit.parquet, summary.json (with ``inputs``: what it measured, :mod:`phenosynth.audit.inputs`) and
    audit.html of one run."""
    from phenosynth.audit.html import write_audit_html

    run_audit.html_path = run_audit.parquet_path.parent / "audit.html"
    created = _write(run_audit, frame, ref.calibration, settings, n_real=len(ref.real_e), inputs=inputs)
    write_audit_html(ws, run_audit.parquet_path.parent, run_audit, frame, ref.calibration, ref.genuine,
                     ref.impostor, run_audit.membership_roc, settings, created)


def _audit_run(
    ws: Workspace, run: str, rows: pd.DataFrame, emb: dict[str, np.ndarray], ref: _Reference, rules: _CopyRules,
    *, n_boot: int, seed: int,
) -> tuple[pd.DataFrame, RunAudit]:
    """Score every synthetic image of one run (the audit.parquet frame) and sum the run up."""
    rows = rows.reset_index(drop=True)
    ids = rows["image_id"].astype(str).tolist()
    parents = [list(p) for p in rows["parents"]]
    nn, parent_d = _identity(emb, ids, parents, ref)
    syn_nn = _synthetic_neighbours(emb, ids, ref.metric)
    ph_nn, dup, syn_ph = _hash_neighbours(ids, rows["phash"], ref, rules.duplicate_bits)
    candidates = {  # SSIM against the parents and the nearest real photos by identity and by hash
        i: list(dict.fromkeys([*ps, *([nn[i][0]] if i in nn else []), *([ph_nn[i][0]] if i in ph_nn else [])]))
        for i, ps in zip(ids, parents)
    }
    ssim_best = _best_ssim(ws, ids, candidates)
    records = []
    for n, i in enumerate(ids):
        nid, d = nn.get(i, (None, np.nan))
        match = bool(i in nn and d < ref.calibration.threshold)
        ph, ss = ph_nn.get(i), ssim_best.get(i)
        copy = bool((ph is not None and ph[1] <= rules.phash_bits) or (ss is not None and ss[1] >= rules.ssim_threshold))
        flags = [f for f, on in ((FLAG_IDENTITY, match), (FLAG_COPY, copy), (FLAG_NO_FACE, i not in emb),
                                 (FLAG_DUPLICATE, dup.get(i, False))) if on]
        label = str(rows.at[n, "label"])
        records.append({
            "image_id": i, "path": str(rows.at[n, "path"]), "label": label, "run": run,
            "generator": str(rows.at[n, "generator"]) if pd.notna(rows.at[n, "generator"]) else "",
            "parents": parents[n], "has_face": i in emb,
            "nearest_real_id": nid, "nearest_real_distance": float(d),
            "nearest_real_label": ref.train_label.get(nid) if nid else None,
            "nearest_same_condition": bool(nid is not None and ref.train_label[nid] == label),
            "nearest_is_parent": bool(nid is not None and nid in parents[n]),
            "parent_distance": parent_d.get(i, np.nan), "identity_match": match,
            "phash_nearest_id": ph[0] if ph else None, "phash_bits": ph[1] if ph else pd.NA,
            "ssim_nearest_id": ss[0] if ss else None, "ssim": ss[1] if ss else np.nan, "near_copy": copy,
            "synthetic_nn_id": syn_nn[i][0] if i in syn_nn else None,
            "synthetic_nn_distance": syn_nn[i][1] if i in syn_nn else np.nan,
            "synthetic_nn_phash_bits": syn_ph.get(i, pd.NA), "duplicate": bool(dup.get(i, False)),
            "flags": flags, "shareable": not any(f in PRIVACY_FLAGS for f in flags),
        })
    frame = pd.DataFrame(records, columns=AUDIT_COLUMNS)
    frame["phash_bits"] = frame["phash_bits"].astype("Int64")
    frame["synthetic_nn_phash_bits"] = frame["synthetic_nn_phash_bits"].astype("Int64")
    return frame, _run_summary(ws, run, frame, emb, ref, n_boot=n_boot, seed=seed)


def _identity(emb: dict[str, np.ndarray], ids: list[str], parents: list[list[str]],
              ref: _Reference) -> tuple[dict[str, tuple[str, float]], dict[str, float]]:
    """Per measured image: (nearest real training photo, its distance); and the distance to the nearest parent."""
    measured = [i for i in ids if i in emb]
    d_nn, i_nn = stats.nearest_neighbours(_stack(emb, measured), ref.X_train, ref.metric)
    nn = {i: (ref.train_ids[j], d) for i, j, d in zip(measured, i_nn, d_nn)}
    parent_d = {}
    for i, ps in zip(ids, parents):
        pe = [p for p in ps if p in emb]
        if i in emb and pe:
            parent_d[i] = float(stats.distance_matrix(emb[i][None], _stack(emb, pe), ref.metric).min())
    return nn, parent_d


def _synthetic_neighbours(emb: dict[str, np.ndarray], ids: list[str], metric: str) -> dict[str, tuple[str, float]]:
    """Per measured image: its nearest other synthetic image of the run (identity space) and their distance."""
    measured = [i for i in ids if i in emb]
    if len(measured) < 2:
        return {}
    X = _stack(emb, measured)
    s_d, s_i = stats.nearest_neighbours(X, X, metric, exclude_self=True)
    return {i: (measured[j], float(d)) for i, j, d in zip(measured, s_i, s_d)}


def _hash_neighbours(
    ids: list[str], hashes: pd.Series, ref: _Reference, duplicate_bits: int
) -> tuple[dict[str, tuple[str, int]], dict[str, bool], dict[str, int]]:
    """Perceptual hashes: per hashed image its nearest real photo (id, bits), whether it duplicates an earlier image
    of the run, and the bits to its nearest other synthetic image."""
    has_hash = hashes.notna().to_numpy()
    hash_ids = [i for i, h in zip(ids, has_hash) if h]
    hash_vals = hashes[has_hash].astype(str).tolist()
    ph_nn: dict[str, tuple[str, int]] = {}
    if hash_ids and ref.hash_ids:
        bits = stats.phash_bits(hash_vals, ref.hashes)
        j = bits.argmin(axis=1)
        ph_nn = {i: (ref.hash_ids[k], int(bits[n, k])) for n, (i, k) in enumerate(zip(hash_ids, j))}
    dup: dict[str, bool] = {}
    syn_ph: dict[str, int] = {}
    if hash_ids:
        S = stats.phash_bits(hash_vals, hash_vals)
        dup = dict(zip(hash_ids, stats.first_of_near_duplicates(S, duplicate_bits)))
        if len(hash_ids) > 1:
            np.fill_diagonal(S, 65)
            syn_ph = dict(zip(hash_ids, S.min(axis=1).astype(int)))
    return ph_nn, dup, syn_ph


def _best_ssim(ws: Workspace, ids: list[str], candidates: dict[str, list[str]]) -> dict[str, tuple[str, float]]:
    """Per image: the candidate real photo with the highest SSIM of the aligned grey crops, and that SSIM."""
    from skimage.metrics import structural_similarity

    grey = _grey_crops(ws, list(dict.fromkeys(ids + [c for cs in candidates.values() for c in cs])))
    best: dict[str, tuple[str, float]] = {}
    for i in ids:
        if i not in grey:
            continue
        scored = [(c, float(structural_similarity(grey[i], grey[c], data_range=255.0)))
                  for c in candidates[i] if c in grey]
        if scored:
            best[i] = max(scored, key=lambda t: t[1])
    return best


def _run_summary(ws: Workspace, run: str, frame: pd.DataFrame, emb: dict[str, np.ndarray], ref: _Reference, *,
                 n_boot: int, seed: int) -> RunAudit:
    """The run's :class:`RunAudit` from its frame, with the membership test."""
    auc, lo, hi, n_mem, n_non, *roc = _membership(emb, ref.real_e, frame, ref.metric, n_boot=n_boot, seed=seed)
    n_meas = int(frame["has_face"].sum())
    n_match = int(frame["identity_match"].sum())
    out = audit_dir(ws, run)
    return RunAudit(
        run=run, generator=", ".join(sorted(set(frame["generator"]) - {""})) or "unknown", n_images=len(frame),
        n_measured=n_meas, n_matched=n_match, matched_share=n_match / n_meas if n_meas else float("nan"),
        matched_ci=stats.wilson_ci(n_match, n_meas),
        matched_own_parent=int((frame["identity_match"] & frame["nearest_is_parent"]).sum()),
        stranger_rate=ref.stranger[0] / ref.stranger[1] if ref.stranger[1] else float("nan"),
        stranger_ci=stats.wilson_ci(*ref.stranger),
        membership_auc=auc, membership_ci=(lo, hi), n_members=n_mem, n_nonmembers=n_non,
        n_near_copies=int(frame["near_copy"].sum()), n_duplicates=int(frame["duplicate"].sum()),
        n_no_face=int((~frame["has_face"]).sum()), n_shareable=int(frame["shareable"].sum()),
        median_distance=float(np.nanmedian(frame["nearest_real_distance"])) if n_meas else float("nan"),
        parquet_path=out / "audit.parquet", summary_path=out / "summary.json", membership_roc=(roc[0], roc[1]),
        uses_patient_pixels=run_uses_patient_pixels(ws, run, set(frame["generator"]) - {""}),
    )


def _stranger_matches(
    emb: dict[str, np.ndarray], real_e: pd.DataFrame, train: pd.DataFrame, cal_ids: list[str], X_train: np.ndarray,
    cal: stats.Calibration, metric: str,
) -> tuple[int, int]:
    """``(k, n)``: of ``n`` real photos, ``k`` have a real training photo of another person closer than the threshold.

    This is the matched share a synthetic image of a stranger would get under the same nearest-neighbour protocol;
    the pairwise impostor rate is not comparable, since the nearest of many training photos is the minimum of many
    impostor distances (0.1 % per pair is ~21 % per image against 240 photos)."""
    best = stats.nearest_other_subject(_stack(emb, cal_ids), real_e["subject"].to_numpy(), X_train,
                                       train["subject"].to_numpy(), metric)
    return int((best < cal.threshold).sum()), int(len(best))


def _membership(
    emb: dict[str, np.ndarray], real_e: pd.DataFrame, frame: pd.DataFrame, metric: str, *, n_boot: int, seed: int
) -> tuple[float, float, float, int, int, np.ndarray, np.ndarray]:
    measured = frame[frame["has_face"]]
    dist, member, groups = [], [], []
    for label, syn_rows in measured.groupby("label", sort=True):
        reals = real_e[(real_e["label"].astype(str) == label) & real_e["split"].isin([TRAIN, TEST])]
        if reals.empty:
            continue
        rid = reals["image_id"].astype(str).tolist()
        d, _ = stats.nearest_neighbours(_stack(emb, rid), _stack(emb, syn_rows["image_id"].tolist()), metric)
        dist.extend(d)
        member.extend((reals["split"] == TRAIN).tolist())
        groups.extend(reals["subject"].astype(str).tolist())
    member_arr = np.array(member, dtype=bool)
    auc, lo, hi = stats.membership_auc(np.array(dist), member_arr, groups=np.array(groups), n_boot=n_boot, seed=seed)
    return auc, lo, hi, int(member_arr.sum()), int((~member_arr).sum()), np.array(dist, dtype=float), member_arr


def _write(run_audit: RunAudit, frame: pd.DataFrame, cal: stats.Calibration, settings: dict[str, Any],
           n_real: int, inputs: dict[str, Any]) -> str:
    """Write audit.parquet and summary.json; returns the summary's creation time."""
    previous = None
    if run_audit.summary_path.exists():
        try:
            old = json.loads(run_audit.summary_path.read_text())
            previous = {"created": old.get("created"), "settings": old.get("settings")}
        except ValueError:
            previous = {"created": None, "settings": "unreadable summary.json"}
        run_audit.replaced = str(previous["created"])
        log.info("re-audit of run %s replaces the audit of %s", run_audit.run, previous["created"])
    atomic_write(run_audit.parquet_path, lambda p: frame.to_parquet(p, index=False))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {
        "created": created,
        "run": run_audit.to_dict(),
        "calibration": cal.to_dict(),
        "n_real_photos": n_real,
        "settings": settings,
        "inputs": inputs,
        "flags": {f: int(frame["flags"].map(lambda fl, f=f: f in fl).sum())
                  for f in (FLAG_IDENTITY, FLAG_COPY, FLAG_NO_FACE, FLAG_DUPLICATE)},
        "replaces": previous,
        "fidelity": None if run_audit.fidelity is None else run_audit.fidelity.to_dict(),
        "reports": None if run_audit.reports is None else run_audit.reports.to_dict(),
    }
    atomic_write(run_audit.summary_path,
                 lambda p: Path(p).write_text(json.dumps(summary, indent=2, default=_json_default)))
    return created


def _json_default(o: object) -> object:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def load_audit(ws: Workspace, run: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The stored audit of ``run``: ``(audit.parquet frame, summary dict)``; raises when the run was never audited."""
    folder = audit_dir(ws, run)
    if not (folder / "audit.parquet").exists():
        raise PhenosynthError(f"Run '{run}' has not been audited. Run: phenosynth audit -w {ws.root} --run {run}")
    return pd.read_parquet(folder / "audit.parquet"), json.loads((folder / "summary.json").read_text())


__all__ = ["audit", "load_audit", "run_uses_patient_pixels", "AuditResult", "RunAudit", "AUDIT_COLUMNS", "PRIVACY_FLAGS", "run_of", "audit_dir"]
