"""What a reader of the numbers must know: the warnings at the top of report.html and of ``phenosynth report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from phenosynth.study.report.context import WorkspaceStats
from phenosynth.study.report.tables import KS, configurations, display_name, setting_label


def collect_warnings(results: pd.DataFrame, summary: pd.DataFrame, config: dict[str, Any],
                     stats: WorkspaceStats, ws_root: Path | None = None) -> list[str]:
    """Plain-text warnings about ``results`` (its Table 1 ``summary``), its study's ``config`` and workspace
    (``ws_root``: also the audit summary of the synthetic runs it could use)."""
    spec = config.get("spec") or {}
    return [*_weight_warnings(spec), *_workspace_warnings(stats), *_missing_runs(results, spec),
            *_sampling_warnings(results, summary, spec), *_audit_warnings(ws_root, results, spec)]


def _audit_warnings(ws_root: Path | None, results: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """The audit summary of the synthetic runs a study with synthetic regimes could use (phenosynth.audit.gate)."""
    if ws_root is None or not (ws_root / "manifest.parquet").exists() or (results["regime"] == "real").all():
        return []
    from phenosynth.audit.gate import audit_warnings
    from phenosynth.data.workspace import Workspace

    ws = Workspace(ws_root)
    return audit_warnings(ws, ws.load_manifest(), enabled=bool(spec.get("privacy_gate", True)))


def _weight_warnings(spec: dict[str, Any]) -> list[str]:
    return [f"{display_name(b['name'])}: weights 'none' (random initialisation) — its numbers say nothing about "
            "pretrained features; put the weights in place and rerun."
            for b in spec.get("backbones", []) if b.get("weights") == "none"]


def _workspace_warnings(stats: WorkspaceStats) -> list[str]:
    warnings: list[str] = []
    absent = (stats.manifest or {}).get("classes_absent_from_test") or []
    if absent:
        shown = ", ".join(absent[:10]) + (f", … ({len(absent) - 10} more)" if len(absent) > 10 else "")
        warnings.append(f"{len(absent)} of {stats.manifest['classes']} classes have no real test image ({shown}); "
                        "top-k is measured over the classes that do.")
    for reason, count in stats.flagged.items():
        warnings.append(f"{count} synthetic images are flagged and left out: {reason}.")
    n_classes = stats.n_classes
    trivial = [k for k in KS if n_classes and k >= n_classes]
    if trivial:
        what = ", ".join(f"Top-{k}" for k in trivial)
        verb = "covers every class and is" if len(trivial) == 1 else "cover every class and are"
        warnings.append(f"Only {n_classes} classes: {what} {verb} trivially 100 %.")
    return warnings


def _missing_runs(results: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    folds, seeds = spec.get("folds"), spec.get("seeds")
    if not (folds and seeds):
        return []
    expected = int(folds) * len(seeds)
    groups = configurations(results, sort=True)
    counts, low, high = groups.size(), groups["n_synthetic"].min(), groups["n_synthetic"].max()
    return [f"{display_name(key[0])} / {setting_label(key[1], int(low[key]), int(high[key]))}: {c} of "
            f"{expected} runs finished." for key, c in counts[counts < expected].items()]


def _sampling_warnings(results: pd.DataFrame, summary: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    if "top1_sd" in summary.columns:
        syn = summary[(summary["regime"] == "synthetic") & (summary["runs"] > 1)]
        if len(syn) and (syn["top1_sd"].fillna(0) == 0).all() and spec.get("validate_on", "real") == "real":
            warnings.append(
                "Synthetic-only results have SD 0: with validate_on real their training set is the same in every "
                "fold apart from the children of each fold's validation photos (the folds mostly choose "
                "hyper-parameters), so this SD is near 0 by construction, not a measure of variability "
                "(validate_on: pool gives each fold its own training set).")
    if "n_test" in results.columns and (pd.to_numeric(results["n_test"], errors="coerce") < 30).any():
        warnings.append("Fewer than 30 test images: the SD over folds understates the uncertainty of the test set "
                        "itself.")
    return warnings
