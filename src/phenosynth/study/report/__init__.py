"""A study's report from its results.csv, one module per job:

- :mod:`.tables`: Table 1 (summary, Markdown, LaTeX, CSV), pure functions of a results frame;
- :mod:`.figures`: Figure 1, one figure per top-k metric in PNG, SVG and PDF;
- :mod:`.uncertainty`: the bootstrap interval of each setting's top-1 over the test images;
- :mod:`.context`: statistics of the workspace the study ran on;
- :mod:`.cautions`: the warnings a reader of the numbers must see;
- :mod:`.unseen_section`: seen vs unseen conditions' top-k (only when the split held unseen conditions);
- :mod:`.page`: report.html, rendered by Jinja2 from ``study/templates/report.html``;
- :mod:`.build`: :func:`build_report`, which reads the run folder and writes every file.
"""

from phenosynth.study.report.build import Report, ReportError, build_report
from phenosynth.study.report.cautions import collect_warnings
from phenosynth.study.report.context import WorkspaceStats, workspace_stats
from phenosynth.study.report.figures import (
    FIGURE_FORMATS,
    figure_paths,
    is_real_only,
    plot_topk,
    save_figure,
    topk_figure,
    trivial_metrics,
)
from phenosynth.study.report.page import in_words
from phenosynth.study.report.tables import (
    DISPLAY_NAMES,
    KS,
    METRICS,
    configuration_n,
    display_name,
    format_n,
    setting_label,
    summarize_results,
    table_csv_frame,
    table_latex,
    table_layout,
    table_markdown,
)
from phenosynth.study.report.uncertainty import top1_bootstrap_ci, top1_test_ci

__all__ = [
    "DISPLAY_NAMES", "FIGURE_FORMATS", "KS", "METRICS", "Report", "ReportError", "WorkspaceStats", "build_report",
    "collect_warnings", "configuration_n", "display_name", "figure_paths", "format_n", "in_words", "is_real_only",
    "plot_topk", "save_figure", "setting_label", "summarize_results", "table_csv_frame", "table_latex",
    "table_layout", "table_markdown", "top1_bootstrap_ci", "top1_test_ci", "topk_figure", "trivial_metrics",
    "workspace_stats",
]
