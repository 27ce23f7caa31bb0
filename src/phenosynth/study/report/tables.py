"""Table 1 from a results frame: the per-configuration summary and its Markdown, LaTeX, CSV and HTML-row forms.

Pure functions: a results frame (one row per trained model, metrics as fractions) in, a frame or a string out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.evaluate.metrics import format_mean_sd

KS: tuple[int, ...] = (1, 5, 10, 30)
METRICS: tuple[str, ...] = tuple(f"top{k}" for k in KS)
REGIME_RANK = {"real": 0, "synthetic": 1, "mixed": 2}

#: How the paper names the backbones in its table; other names are shown as they are.
DISPLAY_NAMES = {
    "resnet152": "ResNet152",
    "densenet169": "DenseNet169",
    "vgg16": "VGG16",
    "swin_t": "Swin-T",
    "clip_vit_b32": "CLIP ViT-B/32",
    "facenet": "FaceNet",
    "mobilenet_v2": "MobileNetV2",
    "dlib_resnet128": "dlib ResNet-128",
    "shape68": "Shape-68",
}


def display_name(backbone: str) -> str:
    return DISPLAY_NAMES.get(backbone, backbone)


def format_n(n: int) -> str:
    """n as the paper writes it.

    >>> format_n(2000), format_n(2500), format_n(400)
    ('2k', '2.5k', '400')
    """
    n = int(n)
    if n >= 1000:
        return f"{n / 1000:g}k"
    return str(n)


def setting_label(regime: str, n: int, n_high: int | None = None) -> str:
    """The row label of a regime in Table 1; ``n`` (to ``n_high``) is what the models trained on.

    >>> setting_label("real", 0), setting_label("synthetic", 2000), setting_label("mixed", 10000)
    ('Real', 'Syn 2k', 'Real + syn 10k')
    >>> setting_label("synthetic", 13, 15)
    'Syn 13-15'
    """
    shown = format_n(n) if n_high is None or int(n_high) == int(n) else f"{format_n(n)}-{format_n(n_high)}"
    if regime == "real":
        return "Real"
    if regime == "synthetic":
        return f"Syn {shown}"
    return f"Real + syn {shown}"


def configuration_n(results: pd.DataFrame) -> pd.Series:
    """The n that names a configuration (its folds and seeds are one table row): ``n_synthetic_requested`` (-1 for
    "all") when results.csv has it, else ``n_synthetic`` (older runs). Labels use the actual ``n_synthetic``."""
    if "n_synthetic_requested" not in results.columns:
        return pd.to_numeric(results["n_synthetic"], errors="coerce").fillna(0).astype(int)
    return pd.to_numeric(results["n_synthetic_requested"], errors="coerce").fillna(-1).astype(int)


def configurations(results: pd.DataFrame, *, sort: bool = False) -> Any:
    """``results`` grouped by configuration (backbone, regime, requested n ``_n``): in the order the study ran them,
    or sorted by those keys."""
    return results.assign(_n=configuration_n(results)).groupby(["backbone", "regime", "_n"], sort=sort)


def in_table_order(frame: pd.DataFrame, backbones: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` (columns ``backbone, regime, n_synthetic``) in Table 1's order: backbones as listed, then
    real, synthetic, mixed, then n."""
    keyed = frame.assign(_b=frame["backbone"].map(backbones.index), _r=frame["regime"].map(REGIME_RANK).fillna(9))
    return keyed.sort_values(["_b", "_r", "n_synthetic"], kind="stable").drop(columns=["_b", "_r"])


def summarize_results(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof=1) of each metric per backbone x regime x n, in table order.

    Returns one row per configuration: ``backbone, regime, n_synthetic, setting, runs, top1_mean, top1_sd, ...,
    best_top1, ...`` where ``best_topK`` marks the best synthetic-only mean of its backbone (ties all marked).
    Metrics in ``results`` are fractions in [0, 1].
    """
    metrics = [m for m in (*METRICS, "macro_f1") if m in results.columns]
    order = list(dict.fromkeys(results["backbone"]))  # backbones in the order the study ran them
    rows = []
    for (backbone, regime, _), grp in configurations(results):
        trained = pd.to_numeric(grp["n_synthetic"], errors="coerce").fillna(0).astype(int)  # what was trained on
        row: dict[str, Any] = {"backbone": backbone, "regime": regime, "n_synthetic": int(round(trained.mean())),
                               "setting": setting_label(regime, int(trained.min()), int(trained.max())),
                               "runs": int(len(grp))}
        for m in metrics:
            vals = pd.to_numeric(grp[m], errors="coerce").dropna().to_numpy(dtype=float)
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = in_table_order(table, order)
    for m in METRICS:
        if f"{m}_mean" not in table.columns:
            continue
        syn = table[table["regime"] == "synthetic"]
        best = syn.groupby("backbone")[f"{m}_mean"].transform("max")
        table[f"best_{m}"] = False
        table.loc[syn.index, f"best_{m}"] = np.isclose(syn[f"{m}_mean"], best, rtol=0, atol=1e-12)
    return table.reset_index(drop=True)


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """The top-k metrics ``summary`` has, in order."""
    return [m for m in METRICS if f"{m}_mean" in summary.columns]


def metric_header(m: str) -> str:
    """``"top5"`` -> ``"Top-5"``."""
    return f"Top-{m[3:]}"


def group_spans(names: Sequence[str]) -> list[int]:
    """For a column shown with each name on the first row of its run only: the run's length on its first row, 0 on
    the rows below (a Markdown blank, a LaTeX ``\\multirow`` span, an HTML group border).

    >>> group_spans(["a", "a", "a", "b", "c", "c"])
    [3, 0, 0, 1, 2, 0]
    """
    spans = [0] * len(names)
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            spans[start] = i - start
            start = i
    return spans


def table_layout(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 as strings: Backbone, Training data, Top-1, Top-5, Top-10, Top-30 ("mean (SD)")."""
    out = pd.DataFrame({"Backbone": summary["backbone"].map(display_name), "Training data": summary["setting"]})
    for m in metric_columns(summary):
        out[metric_header(m)] = [format_mean_sd(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_sd"])]
    return out


def table_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Table 1's body, row by row: ``span`` (see :func:`group_spans`), ``backbone``, ``setting`` and ``cells``, a
    list of ``(text, bold)`` with bold the best synthetic-only result of the backbone in that column."""
    layout = table_layout(summary)
    metrics = metric_columns(summary)
    return [{"span": span, "backbone": layout.at[i, "Backbone"], "setting": layout.at[i, "Training data"],
             "cells": [(layout.at[i, metric_header(m)], bool(summary.at[i, f"best_{m}"])) for m in metrics]}
            for i, span in zip(layout.index, group_spans(list(layout["Backbone"])))]


def runs_caption(summary: pd.DataFrame) -> str:
    """How many runs each mean is over: ``"3"`` or ``"2–3"``."""
    n_runs = sorted(set(summary["runs"]))
    return str(n_runs[0]) if len(n_runs) == 1 else f"{n_runs[0]}–{n_runs[-1]}"


def table_markdown(summary: pd.DataFrame) -> str:
    """Markdown table; the backbone name on its first row only; best synthetic-only results in ``**bold**``."""
    metrics = metric_columns(summary)
    cols = ["Backbone", "Training data", *(metric_header(m) for m in metrics)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(metrics)) + "|"]
    for row in table_rows(summary):
        cells = [row["backbone"] if row["span"] else "", row["setting"]]
        cells += [f"**{v}**" if bold else v for v, bold in row["cells"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Top-k accuracy (%) on the held-out real test set, mean (SD) over {runs_caption(summary)} runs "
                 "(folds x seeds). Bold: best synthetic-only result per backbone.")
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    """Escape LaTeX's special characters.

    >>> _tex_escape("swin_t & 50%")
    'swin\\\\_t \\\\& 50\\\\%'
    """
    text = text.replace("\\", r"\textbackslash ")
    for a, b in (("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def table_latex(summary: pd.DataFrame, *, caption: str | None = None, label: str = "tab:topk") -> str:
    """A booktabs + multirow table in the paper's layout; best synthetic-only results in ``\\textbf``."""
    metrics = metric_columns(summary)
    caption = caption or ("Top-$k$ accuracy (\\%) on the held-out real test set, mean (SD) over folds. "
                          "Bold: best synthetic-only result per backbone.")
    out = [
        "% requires \\usepackage{booktabs} and \\usepackage{multirow}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        "\\begin{tabular}{ll" + "c" * len(metrics) + "}",
        "\\toprule",
        "Backbone & Training data & " + " & ".join(metric_header(m) for m in metrics) + " \\\\",
        "\\midrule",
    ]
    for i, row in enumerate(table_rows(summary)):
        if row["span"] and i:
            out.append("\\midrule")
        first = f"\\multirow{{{row['span']}}}{{*}}{{{_tex_escape(row['backbone'])}}}" if row["span"] else ""
        cells = [first, _tex_escape(row["setting"])] + [f"\\textbf{{{v}}}" if bold else v for v, bold in row["cells"]]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def table_csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The layout strings plus the numbers behind them (fractions, not %)."""
    layout = table_layout(summary)
    layout.insert(2, "n_synthetic", summary["n_synthetic"])
    layout.insert(3, "runs", summary["runs"])
    layout.insert(0, "backbone_id", summary["backbone"])
    num = summary[[c for c in summary.columns if c.endswith(("_mean", "_sd")) or c.startswith("best_")]]
    return pd.concat([layout, num], axis=1)


def training_set_sizes(results: pd.DataFrame) -> pd.DataFrame | None:
    """Mean training and test images per setting of the first backbone (None when results.csv has neither)."""
    extra = [c for c in ("n_train", "n_test") if c in results.columns]
    if not extra:
        return None
    groups = configurations(results)
    sizes = groups[extra].mean().round(1)
    sizes.insert(0, "setting", [setting_label(r, lo, hi) for (_, r, _), lo, hi in
                                zip(sizes.index, groups["n_synthetic"].min(), groups["n_synthetic"].max())])
    sizes = sizes.reset_index()
    sizes = sizes[sizes["backbone"] == sizes["backbone"].iloc[0]].drop(columns=["backbone", "regime", "_n"])
    return sizes.rename(columns={"n_train": "training images (mean)", "n_test": "test images (mean)"})
