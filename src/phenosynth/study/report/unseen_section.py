"""The "Unseen conditions" section of a study's report: seen and unseen top-k side by side per backbone x setting,
from results.csv's ``unseen_*`` columns (:mod:`phenosynth.training.unseen`); absent when the study had none.

Seen: each cell's own model (its trainer: a head, or the gallery) on the held-out real test photos of the seen
conditions, i.e. Table 1's numbers. Unseen: gallery matching of the unseen conditions' photos, leave-one-subject-out,
ranked among the seen + unseen conditions, with the cell's training set as the seen gallery. Pure functions of a
results frame, plus :func:`write_unseen_tables`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from phenosynth.data.workspace import atomic_write
from phenosynth.evaluate.metrics import format_mean_sd
from phenosynth.study.report.tables import (
    METRICS,
    configurations,
    display_name,
    group_spans,
    in_table_order,
    metric_header,
    setting_label,
)
from phenosynth.training.unseen import SEEN_SUBSET, UNSEEN_PREFIX, UNSEEN_SUBSET

#: The section's files in the run folder (written only when the study had unseen conditions).
UNSEEN_TABLE_FILES = ("table_unseen.md", "table_unseen.csv")


def has_unseen(results: pd.DataFrame) -> bool:
    """True when results.csv has the unseen conditions' columns (the split held some; a model that could score none
    of their photos, e.g. precomputed features without them, shows "–" and 0 queries)."""
    return f"{UNSEEN_PREFIX}top1" in results.columns


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    vals = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    return (float(vals.mean()) if len(vals) else math.nan, float(vals.std(ddof=1)) if len(vals) > 1 else math.nan)


def _span(values: pd.Series) -> str:
    """``"12"`` or ``"10–12"`` over the cells (integers)."""
    vals = pd.to_numeric(values, errors="coerce").dropna()
    if vals.empty:
        return "–"
    lo, hi = int(vals.min()), int(vals.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def unseen_summary(results: pd.DataFrame) -> pd.DataFrame | None:
    """Two rows per configuration (backbone x regime x n), ``subset`` ``seen`` then ``unseen``: ``backbone, regime,
    n_synthetic, setting, subset, runs, top1_mean, top1_sd, ...`` (fractions; the metrics results.csv has), in
    Table 1's order. None when there are no unseen numbers."""
    if not has_unseen(results):
        return None
    metrics = [m for m in METRICS if m in results.columns and f"{UNSEEN_PREFIX}{m}" in results.columns]
    order = list(dict.fromkeys(results["backbone"]))
    rows = []
    for (backbone, regime, _), grp in configurations(results):
        trained = pd.to_numeric(grp["n_synthetic"], errors="coerce").fillna(0).astype(int)
        base = {"backbone": backbone, "regime": regime, "n_synthetic": int(round(trained.mean())),
                "setting": setting_label(regime, int(trained.min()), int(trained.max())), "runs": int(len(grp))}
        for subset, prefix in ((SEEN_SUBSET, ""), (UNSEEN_SUBSET, UNSEEN_PREFIX)):
            row = {**base, "subset": subset}
            for m in metrics:
                row[f"{m}_mean"], row[f"{m}_sd"] = _mean_sd(grp[f"{prefix}{m}"])
            rows.append(row)
    table = pd.DataFrame(rows)
    # in_table_order sorts stably, so each configuration's seen row stays above its unseen row
    return in_table_order(table, order).reset_index(drop=True)


def unseen_counts(results: pd.DataFrame) -> dict[str, str]:
    """How many unseen conditions and queries were scored and how many queries skipped (no photo of another
    subject), over the cells (``"12"`` or ``"10–12"``), and the seen classes (``n_classes``)."""
    out = {key: _span(results.get(f"{UNSEEN_PREFIX}{key}", pd.Series(dtype=float)))
           for key in ("conditions", "queries", "skipped")}
    out["seen"] = _span(results["n_classes"]) if "n_classes" in results.columns else "–"
    return out


def _metrics(summary: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if f"{m}_mean" in summary.columns]


def unseen_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """The section's table body for report.html: ``span`` (rows of the backbone, see
    :func:`~phenosynth.study.report.tables.group_spans`), ``backbone``, ``setting`` (on a configuration's first row),
    ``subset`` and ``cells`` (mean (SD) in %)."""
    names = [display_name(b) for b in summary["backbone"]]
    out = []
    for i, (span, name) in enumerate(zip(group_spans(names), names)):
        r = summary.iloc[i]
        out.append({"span": span, "backbone": name, "setting": r["setting"] if r["subset"] == SEEN_SUBSET else "",
                    "subset": r["subset"],
                    "cells": [format_mean_sd(r[f"{m}_mean"], r[f"{m}_sd"]) for m in _metrics(summary)]})
    return out


def unseen_markdown(summary: pd.DataFrame, counts: dict[str, str]) -> str:
    """``table_unseen.md``: the section's table and what it is."""
    metrics = _metrics(summary)
    lines = ["| Backbone | Training data | Subset | " + " | ".join(metric_header(m) for m in metrics) + " |",
             "|---|---|---|" + "---:|" * len(metrics)]
    for row in unseen_rows(summary):
        lines.append(f"| {row['backbone'] if row['span'] else ''} | {row['setting']} | {row['subset']} | "
                     + " | ".join(row["cells"]) + " |")
    lines += ["", caption(counts)]
    return "\n".join(lines) + "\n"


def caption(counts: dict[str, str]) -> str:
    """What the seen and unseen numbers are, with the counts."""
    return (f"Top-k accuracy (%), mean (SD) over folds x seeds. Seen: each model on the held-out real test photos of "
            f"the {counts['seen']} seen conditions (Table 1). Unseen: {counts['conditions']} conditions held out whole "
            f"(split --unseen-fraction), {counts['queries']} photos matched by gallery (leave-one-subject-out: the "
            f"model's training set plus the unseen photos of the other subjects), ranked among seen + unseen "
            f"conditions; {counts['skipped']} photos skipped (their condition has no photo of another subject).")


def unseen_csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """``table_unseen.csv``: one row per configuration and subset, fractions (not %)."""
    return summary.assign(backbone_name=summary["backbone"].map(display_name))


def write_unseen_tables(run_dir: Path, results: pd.DataFrame) -> tuple[list[Path], dict[str, Any] | None]:
    """``table_unseen.{md,csv}`` and the section for report.html (None, and the files removed, when the study had
    no unseen conditions)."""
    summary = unseen_summary(results)
    if summary is None:
        for name in UNSEEN_TABLE_FILES:
            (run_dir / name).unlink(missing_ok=True)  # a rebuild of a run without them leaves none lying there
        return [], None
    counts = unseen_counts(results)
    md, csv = (run_dir / name for name in UNSEEN_TABLE_FILES)
    text = unseen_markdown(summary, counts)
    atomic_write(md, lambda p: Path(p).write_text(text, encoding="utf-8"))
    frame = unseen_csv_frame(summary)
    atomic_write(csv, lambda p: frame.to_csv(p, index=False))
    section = {"header": ["Backbone", "Training data", "Subset", *(metric_header(m) for m in _metrics(summary))],
               "rows": unseen_rows(summary), "counts": counts, "caption": caption(counts),
               "files": list(UNSEEN_TABLE_FILES)}
    return [md, csv], section

