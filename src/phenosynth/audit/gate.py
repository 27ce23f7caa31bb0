"""The privacy gate: training sets (and exports) take only the audited, shareable images of an audited run.

:func:`gate` is the one place the rule lives. A synthetic image of a generator run that has been audited
(``WS/audit/<run>/audit.parquet`` exists) is left out of the selectable candidates when its audit row is not
``shareable`` (reason ``"audit: identity-match"``, ``"audit: near-copy, no-face"``, ...) or when it has no audit row
at all (an image of the run the audit did not score: reason :data:`REASON_UNAUDITED`). The images of a run that was
never audited pass unchanged (:func:`audit_warnings` makes the report say so).

An audit is *stale* when the workspace changed since (:mod:`phenosynth.audit.inputs`: re-split, real photos added
or removed, the run gained or lost images): a stale audit counts as none. Training warns and treats the run as never
audited; exports (and every other use that shares images) refuse it (:func:`current_audit`).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from phenosynth.audit.inputs import RERUN_HINT, manifest_inputs, stale_reason
from phenosynth.audit.privacy import PRIVACY_FLAGS, audit_dir, load_audit, run_of
from phenosynth.data.manifest import SYNTHETIC
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

REASON_PREFIX = "audit: "
REASON_UNAUDITED = "audit: not scored by its run's audit (re-run the audit)"


def synthetic_runs(manifest: pd.DataFrame) -> pd.Series:
    """The generator run of every synthetic row of ``manifest`` (index: the manifest's)."""
    syn = manifest[manifest["source"] == SYNTHETIC]
    params = syn["params"] if "params" in syn.columns else pd.Series(None, index=syn.index)
    return pd.Series([run_of(p, g) for p, g in zip(params, syn["generator"])], index=syn.index, dtype=object)


def audited_runs(ws: Workspace, runs: Any) -> dict[str, pd.DataFrame]:
    """run -> its audit.parquet (``image_id``, ``flags``, ``shareable``), for the runs of ``runs`` that were audited."""
    out = {}
    for run in sorted(set(runs)):
        path = audit_dir(ws, run) / "audit.parquet"
        if path.exists():
            out[run] = pd.read_parquet(path, columns=["image_id", "flags", "shareable"])
    return out


def audit_staleness(ws: Workspace, manifest: pd.DataFrame, run: str) -> str | None:
    """Why the stored audit of ``run`` no longer describes the workspace whose full manifest is ``manifest`` (None:
    it does, or the run was never audited)."""
    import json

    path = audit_dir(ws, run) / "summary.json"
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text()).get("inputs")
    except ValueError:
        return "its summary.json is unreadable"
    return stale_reason(recorded, manifest_inputs(manifest, run))


def current_audit(ws: Workspace, run: str, manifest: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The stored audit of ``run`` (:func:`phenosynth.audit.privacy.load_audit`) for a use that shares its images
    (export, teaching decks): refused when the run was never audited or its audit is stale.

    Raises:
        PhenosynthError: never audited, or stale (the message says why and to re-run the audit).
    """
    frame, summary = load_audit(ws, run)
    why = audit_staleness(ws, ws.load_manifest() if manifest is None else manifest, run)
    if why is not None:
        raise PhenosynthError(f"The audit of run '{run}' is stale: {why}. Its verdicts no longer hold; "
                              + RERUN_HINT.format(ws=ws.root, run=run) + ".")
    return frame, summary


def gate_reasons(ws: Workspace, manifest: pd.DataFrame) -> dict[str, str]:
    """image_id -> why the gate leaves it out, for every synthetic image of an audited run that is not shareable.

    ``manifest`` is the workspace's full manifest (the audits' staleness is judged on it). A run whose audit is stale
    is treated as never audited (a warning is logged; :func:`audit_warnings` puts it in the report).
    """
    if not (ws.root / "audit").is_dir():  # nothing was ever audited: nothing to read
        return {}
    runs = synthetic_runs(manifest)
    audits = audited_runs(ws, runs)
    reasons: dict[str, str] = {}
    for run, frame in audits.items():
        why = audit_staleness(ws, manifest, run)
        if why is not None:
            log.warning("the audit of synthetic run %s is stale (%s): its images are treated as unaudited; %s",
                        run, why, RERUN_HINT.format(ws=ws.root, run=run))
            continue
        verdict = {
            str(i): None if ok else REASON_PREFIX + ", ".join(f for f in flags if f in PRIVACY_FLAGS)
            for i, flags, ok in zip(frame["image_id"], frame["flags"], frame["shareable"])
        }
        for image_id in manifest.loc[runs.index[runs == run], "image_id"].astype(str):
            reason = verdict.get(image_id, REASON_UNAUDITED)
            if reason is not None:
                reasons[image_id] = reason
    return reasons


def gate(ws: Workspace, manifest: pd.DataFrame, enabled: bool = True) -> tuple[pd.DataFrame, dict[str, str]]:
    """``(manifest, reasons)``: ``manifest`` with the non-shareable synthetic images of audited runs excluded
    (``exclude_reason`` set, so selection never picks them) and image_id -> reason of each image left out.

    ``enabled=False`` (``--privacy-gate off``) returns ``manifest`` unchanged and no reasons. Images already excluded
    keep their own reason; a run never audited is untouched.
    """
    if not enabled:
        return manifest, {}
    reasons = gate_reasons(ws, manifest)
    ids = manifest["image_id"].astype(str)
    hit = ids.isin(list(reasons)) & manifest["exclude_reason"].isna()
    if not hit.any():
        return manifest, {}
    out = manifest.copy()
    out.loc[hit, "exclude_reason"] = ids[hit].map(reasons)
    log.info("privacy gate: %d synthetic image(s) of audited runs left out", int(hit.sum()))
    return out, {i: reasons[i] for i in ids[hit]}


def audit_warnings(ws: Workspace, manifest: pd.DataFrame, *, enabled: bool = True) -> list[str]:
    """Report lines on the audit of the synthetic images a run could use: per generator run, its audit summary (or
    that it was never audited, so its images were used without a privacy check)."""
    import json

    runs = synthetic_runs(manifest[manifest["exclude_reason"].isna()])
    lines = []
    for run in sorted(set(runs)):
        n = int((runs == run).sum())
        summary_path = audit_dir(ws, run) / "summary.json"
        if not summary_path.exists():
            lines.append(f"Synthetic run '{run}' ({n} images) was never audited: its images were used without a "
                         f"privacy check (phenosynth audit -w WS --run {run}).")
            continue
        why = audit_staleness(ws, manifest, run)
        if why is not None:
            lines.append(f"Synthetic run '{run}' ({n} images) has a stale audit ({why}): it was treated as never "
                         f"audited and its images were used without a privacy check ("
                         + RERUN_HINT.format(ws=ws.root, run=run) + ").")
            continue
        s = json.loads(summary_path.read_text())
        r = s["run"]
        gated = ("the privacy gate left out its non-shareable images" if enabled
                 else "the privacy gate was OFF: its non-shareable images were used")
        lines.append(
            f"Synthetic run '{run}' was audited ({s['settings']['embedder']}, {s['created']}): "
            f"{r['n_matched']} of {r['n_measured']} measured images match a real training photo "
            f"({100 * r['matched_share']:.1f} %, stranger rate {100 * r['stranger_rate']:.1f} %), membership AUC "
            f"{r['membership_auc']:.2f}; {r['n_shareable']} of {r['n_images']} shareable; {gated}.")
    return lines


__all__ = ["gate", "gate_reasons", "audit_warnings", "audit_staleness", "current_audit", "synthetic_runs",
           "REASON_UNAUDITED"]
