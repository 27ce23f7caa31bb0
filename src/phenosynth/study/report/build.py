"""The study's report, rebuilt from ``results.csv`` alone (plus config.yaml and the workspace for context when they
are there): Table 1 (``table.md``, ``table.csv``, ``table.tex``), Figure 1 (``figure_top1.{png,svg,pdf}`` and one per
k that is not trivially 100 %), the seen vs unseen table (``table_unseen.{md,csv}``, only when the split held unseen
conditions) and ``report.html``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from phenosynth.data.workspace import atomic_write
from phenosynth.errors import PhenosynthError
from phenosynth.study.report.audit_section import audit_rows
from phenosynth.study.report.cautions import collect_warnings
from phenosynth.study.report.context import workspace_root, workspace_stats
from phenosynth.study.report.figures import (
    figure_caption,
    figure_paths,
    figure_title,
    plot_topk,
    trivial_metrics,
)
from phenosynth.study.report.page import figure_view, plural, render_report
from phenosynth.study.report.tables import (
    metric_columns,
    metric_header,
    summarize_results,
    table_csv_frame,
    table_latex,
    table_markdown,
    training_set_sizes,
)
from phenosynth.study.report.uncertainty import top1_test_ci
from phenosynth.study.report.unseen_section import write_unseen_tables


class ReportError(PhenosynthError):
    """The run folder has no usable results.csv."""


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    run_dir: Path
    files: list[Path] = field(default_factory=list)
    summary: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    figures_left_out: dict[str, str] = field(default_factory=dict)
    """Top-k figures not drawn because they would say nothing ("Top-10" -> the reason); report.html says so too."""


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``results.csv`` (checked) and ``config.yaml`` (empty when absent) of ``run_dir``."""
    results_path = run_dir / "results.csv"
    if not results_path.exists():
        raise ReportError(f"{results_path} does not exist. Run the study first: phenosynth study SPEC.yaml -w WS "
                          f"--name {run_dir.name}")
    results = pd.read_csv(results_path)
    missing = [c for c in ("backbone", "regime", "n_synthetic", "top1") if c not in results.columns]
    if missing or results.empty:
        raise ReportError(f"{results_path} has no results to report"
                          + (f" (missing columns: {', '.join(missing)})" if missing else "") + ".")
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return results, config


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return path


def write_tables(run_dir: Path, summary: pd.DataFrame, notice: str | None) -> list[Path]:
    """``table.md`` (with the spec's notice under it), ``table.csv`` and ``table.tex``."""
    md = _write_text(run_dir / "table.md", table_markdown(summary) + (f"\n**{notice}**\n" if notice else ""))
    csv_frame = table_csv_frame(summary)
    atomic_write(run_dir / "table.csv", lambda p: csv_frame.to_csv(p, index=False))
    return [md, run_dir / "table.csv", _write_text(run_dir / "table.tex", table_latex(summary))]


def write_figures(run_dir: Path, summary: pd.DataFrame, left_out: dict[str, str]) -> tuple[list[Path], list[dict]]:
    """A figure per top-k metric not in ``left_out`` (whose stale files are deleted); the files and their views for
    report.html."""
    files, views = [], []
    for m in metric_columns(summary):
        if m in left_out:
            for stale in figure_paths(run_dir, m):  # a figure the report says it left out is not left lying there
                stale.unlink(missing_ok=True)
            continue
        paths = plot_topk(summary, m, run_dir)
        files.extend(paths)
        views.append(figure_view(paths, figure_caption(summary, m)))
    return files, views


def _n_classes(results: pd.DataFrame, ws_classes: int | None) -> int | None:
    """Classes the models chose among: the trainer's ``n_classes`` column, else the workspace's class count."""
    if "n_classes" in results.columns:
        n = pd.to_numeric(results["n_classes"], errors="coerce").dropna()
        if len(n):
            return int(n.max())
    return ws_classes


def build_report(run_dir: str | os.PathLike[str], *, ws: Any = None) -> Report:
    """(Re)build every report file of ``run_dir`` from its ``results.csv`` (and ``config.yaml`` + workspace when
    present; ``ws``, a :class:`Workspace` or its folder, overrides the workspace config.yaml names). Returns the
    files written."""
    run_dir = Path(run_dir).expanduser().resolve()
    results, config = load_run(run_dir)
    spec = config.get("spec") or {}
    ws_root = workspace_root(ws, config, run_dir)
    summary = summarize_results(results)
    rep = Report(run_dir=run_dir, summary=summary)
    rep.files += write_tables(run_dir, summary, spec.get("notice"))
    stats = workspace_stats(ws_root, spec.get("representation"))
    left_out = trivial_metrics(summary, _n_classes(results, stats.n_classes))
    rep.figures_left_out = {metric_header(m): why for m, why in left_out.items()}
    figure_files, figures = write_figures(run_dir, summary, left_out)
    rep.files += figure_files
    rep.warnings = collect_warnings(results, summary, config, stats, ws_root)
    unseen_files, unseen = write_unseen_tables(run_dir, results)
    rep.files += unseen_files
    subtitle = (f"{plural(len(results), 'trained model')} · {plural(results['backbone'].nunique(), 'backbone')} · "
                f"workspace {ws_root if ws_root else '(not available)'}")
    page = render_report(
        name=config.get("name", run_dir.name), subtitle=subtitle, notice=spec.get("notice"), warnings=rep.warnings,
        summary=summary, top1_ci=top1_test_ci(results), figure_title=figure_title(summary), figures=figures,
        figures_left_out=rep.figures_left_out, stats=stats, sizes=training_set_sizes(results), config=config,
        audit=audit_rows(ws_root), unseen=unseen)
    rep.files.append(_write_text(run_dir / "report.html", page))
    return rep
