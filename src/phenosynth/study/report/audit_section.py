"""The "Privacy audit" section of report.html: one row per generator run of the workspace's synthetic images, from
its stored audit (``WS/audit/<run>/summary.json``, :func:`phenosynth.audit.privacy.load_audit`), or 'not audited'."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: What the section says of a run without a stored audit.
NOT_AUDITED = "not audited"


def _pct_ci(share: float, ci: Any) -> str:
    if share is None or math.isnan(float(share)):
        return "–"
    lo, hi = ci if ci else (math.nan, math.nan)
    return f"{100 * share:.1f} % [{100 * lo:.1f}–{100 * hi:.1f}]"


def _phenotype(summary: dict[str, Any]) -> str:
    """Phenotype agreement over all conditions (the audit's real-trained probe on the synthetic images vs on the
    real test photos), when the audit measured it."""
    from phenosynth.audit.fidelity import OVERALL

    rows = ((summary.get("fidelity") or {}).get("phenotype")) or []
    overall = next((r for r in rows if r.get("condition") == OVERALL), None)
    if overall is None:
        return "not measured"
    return f"{100 * overall['synthetic_accuracy']:.0f} % / {100 * overall['test_accuracy']:.0f} %"


def audit_row(run: str, n_images: int, summary: dict[str, Any] | None) -> dict[str, Any]:
    """The section's row of one run (``summary``: its summary.json contents, None when never audited)."""
    if summary is None:
        return {"run": run, "images": n_images, "audited": False, "verdict": NOT_AUDITED}
    from phenosynth.audit.verdict import audit_verdict

    r = summary["run"]
    verdict = audit_verdict(summary)
    return {
        "run": run, "images": r["n_images"], "audited": True, "generator": r["generator"],
        "embedder": summary["settings"]["embedder"],
        "matched": _pct_ci(r["matched_share"], r["matched_ci"]),
        "stranger": _pct_ci(r["stranger_rate"], r["stranger_ci"]),
        "auc": f"{r['membership_auc']:.2f} [{r['membership_ci'][0]:.2f}–{r['membership_ci'][1]:.2f}]",
        "flagged": r["n_images"] - r["n_shareable"], "phenotype": _phenotype(summary),
        "verdict": "passes" if verdict.passed else "fails", "passed": verdict.passed,
    }


def audit_rows(ws_root: Path | None) -> list[dict[str, Any]]:
    """A row per generator run with synthetic images in the workspace's manifest (runs in name order)."""
    if ws_root is None or not (ws_root / "manifest.parquet").exists():
        return []
    from phenosynth.audit.gate import synthetic_runs
    from phenosynth.audit.privacy import load_audit
    from phenosynth.data.workspace import Workspace
    from phenosynth.errors import PhenosynthError

    ws = Workspace(ws_root)
    runs = synthetic_runs(ws.load_manifest())
    rows = []
    for run, n in sorted(runs.value_counts().items()):
        try:
            _, summary = load_audit(ws, run)
        except PhenosynthError:
            summary = None
        except (OSError, ValueError) as exc:  # the report shows what it can
            log.warning("unreadable audit of run %s: %s", run, exc)
            summary = None
        rows.append(audit_row(str(run), int(n), summary))
    return rows
