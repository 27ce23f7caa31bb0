"""Figure 1: one figure per top-k metric (PNG for the report, SVG and PDF for a paper), byte-identical on rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.data.workspace import atomic_write
from phenosynth.study.report.tables import display_name, format_n, metric_columns, metric_header

#: Formats written beside each other for every figure (PNG for the report, SVG and PDF for a paper).
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
#: Metadata that would make reruns differ (dates) left out, so the same results give byte-identical files.
_FIGURE_METADATA: dict[str, dict[str, Any]] = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
_STYLE_LABELS = {"synthetic": "synthetic only", "real": "real only", "mixed": "real + synthetic"}


def _percent_with_clipped_sd(mean: pd.Series, sd: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Means in % and SD error bars (2, N) cut at 0 and 100 %, an accuracy's range.

    >>> y, err = _percent_with_clipped_sd(pd.Series([0.98, 0.02]), pd.Series([0.05, float("nan")]))
    >>> y.tolist(), err.round(6).tolist()
    ([98.0, 2.0], [[5.0, 0.0], [2.0, 0.0]])
    """
    y = 100 * mean.to_numpy(dtype=float)
    e = 100 * sd.fillna(0).to_numpy(dtype=float)
    return y, np.clip(np.vstack([np.minimum(e, y), np.minimum(e, 100 - y)]), 0, None)


def is_real_only(summary: pd.DataFrame) -> bool:
    """True when no configuration trained on synthetic images."""
    return bool((summary["regime"] == "real").all())


def trivial_metrics(summary: pd.DataFrame, n_classes: int | None) -> dict[str, str]:
    """Top-k columns (k > 1) whose figure would say nothing, with the reason: k covers every class, or every
    configuration's mean is 100 %. Top-1 is always drawn.

    >>> s = pd.DataFrame({"top1_mean": [0.5], "top5_mean": [1.0], "top10_mean": [0.9], "top30_mean": [1.0]})
    >>> trivial_metrics(s, 20)
    {'top5': "every setting's mean is 100 %", 'top30': 'k ≥ the 20 classes'}
    """
    out: dict[str, str] = {}
    for m in metric_columns(summary):
        k = int(m[3:])
        if k == 1:
            continue
        means = summary[f"{m}_mean"].dropna().to_numpy(dtype=float)
        if n_classes and k >= n_classes:
            out[m] = f"k ≥ the {n_classes} classes"
        elif len(means) and np.isclose(means, 1.0, rtol=0, atol=1e-9).all():
            out[m] = "every setting's mean is 100 %"
    return out


def topk_figure(summary: pd.DataFrame, metric: str) -> Any:
    """The figure of one top-k ``metric`` (a :class:`matplotlib.figure.Figure`, not drawn anywhere).

    With synthetic training sets: top-k against n per backbone, synthetic-only as solid lines with SD error bars,
    real-only as a dashed horizontal line in the backbone's colour, real + synthetic as a diamond at its n. A
    real-only study: one bar per backbone. Accuracy axes and error bars stay within [0, 100] %; one legend.
    """
    from matplotlib.figure import Figure

    if is_real_only(summary):
        return _bar_figure(summary, metric, Figure(figsize=(7.5, 4.8), dpi=120))
    return _line_figure(summary, metric, Figure(figsize=(7.5, 4.8), dpi=120))


def _colours() -> tuple:
    import matplotlib

    return matplotlib.colormaps["tab10"].colors


def _bar_figure(summary: pd.DataFrame, metric: str, fig: Any) -> Any:
    ax = fig.subplots()
    colours = _colours()
    names = [display_name(b) for b in summary["backbone"]]
    y, err = _percent_with_clipped_sd(summary[f"{metric}_mean"], summary[f"{metric}_sd"])
    ax.bar(range(len(names)), y, yerr=err, capsize=4, width=0.6,
                  color=[colours[i % len(colours)] for i in range(len(names))])
    for x, (v, up) in enumerate(zip(y, err[1])):  # the mean above its error bar
        ax.annotate(f"{v:.1f}", (x, v + up), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{metric_header(metric)} accuracy (%)")
    ax.set_title(f"{metric_header(metric)} accuracy, real training images only (mean ± SD over folds)", pad=12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _line_figure(summary: pd.DataFrame, metric: str, fig: Any) -> Any:
    from matplotlib.lines import Line2D

    ax = fig.subplots()
    colours = _colours()
    ns = sorted(set(summary.loc[summary["regime"] != "real", "n_synthetic"]))
    handles = []
    for i, backbone in enumerate(dict.fromkeys(summary["backbone"])):
        colour = colours[i % len(colours)]
        rows = summary[summary["backbone"] == backbone]
        syn = rows[rows["regime"] == "synthetic"].sort_values("n_synthetic")
        if not syn.empty:
            y, err = _percent_with_clipped_sd(syn[f"{metric}_mean"], syn[f"{metric}_sd"])
            ax.errorbar(syn["n_synthetic"], y, yerr=err, color=colour, marker="o", ms=5, lw=1.8, capsize=3,
                        clip_on=False)
        real = rows[rows["regime"] == "real"]
        if not real.empty:
            ax.axhline(100 * real[f"{metric}_mean"].iloc[0], color=colour, ls="--", lw=1.3, alpha=0.9, clip_on=False)
        mixed = rows[rows["regime"] == "mixed"].sort_values("n_synthetic")
        if not mixed.empty:
            y, err = _percent_with_clipped_sd(mixed[f"{metric}_mean"], mixed[f"{metric}_sd"])
            ax.errorbar(mixed["n_synthetic"], y, yerr=err, color=colour, marker="D", ms=8, mfc="white", mew=2,
                        ls="none", capsize=3, clip_on=False)
        handles.append(Line2D([], [], color=colour, lw=6, label=display_name(backbone)))
    present = set(summary["regime"])
    styles = {"synthetic": dict(marker="o", lw=1.8), "real": dict(ls="--", lw=1.3),
              "mixed": dict(marker="D", mfc="white", mew=2, ls="none")}
    handles += [Line2D([], [], color="0.3", label=_STYLE_LABELS[r], **styles[r])
                for r in ("synthetic", "real", "mixed") if r in present]
    ax.set_xticks(ns, [format_n(n) for n in ns])
    pad = (max(ns) - min(ns)) * 0.06 or max(ns) * 0.1
    ax.set_xlim(min(ns) - pad, max(ns) + pad)
    lo, hi = ax.get_ylim()
    lo, hi = max(0.0, lo), min(100.0, hi)  # an accuracy axis never shows values outside [0, 100] %
    if hi - lo < 10:  # at least 10 points tall, so a flat result (e.g. every mean 100 %) is not a zoomed-in line
        lo, hi = (max(0.0, hi - 10), hi) if hi - 10 >= 0 else (0.0, 10.0)
    ax.set_ylim(lo, hi)
    ax.spines[["top", "right"]].set_visible(False)  # a result at 100 % is not hidden in the frame
    ax.set_xlabel("number of synthetic training images (n)")
    ax.set_ylabel(f"{metric_header(metric)} accuracy (%)")
    ax.set_title(f"{metric_header(metric)} accuracy on the held-out real test set (mean ± SD over folds)", pad=12)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def figure_paths(run_dir: Path, metric: str) -> list[Path]:
    """``figure_<metric>.png`` / ``.svg`` / ``.pdf`` in ``run_dir``."""
    return [run_dir / f"figure_{metric}.{fmt}" for fmt in FIGURE_FORMATS]


def save_figure(fig: Any, paths: list[Path]) -> list[Path]:
    """Write ``fig`` to each path in the format its suffix names, byte-identical for identical figures."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "phenosynth"}):  # SVG element ids from a fixed salt, not random
        for path in paths:
            fmt = path.suffix[1:]
            atomic_write(path, lambda p, f=fmt: fig.savefig(p, format=f, bbox_inches="tight",
                                                            metadata=_FIGURE_METADATA[f]))
    return paths


def plot_topk(summary: pd.DataFrame, metric: str, run_dir: Path) -> list[Path]:
    """Write the figure of ``metric`` (:func:`topk_figure`) as PNG, SVG and PDF into ``run_dir``."""
    return save_figure(topk_figure(summary, metric), figure_paths(run_dir, metric))




def figure_caption(summary: pd.DataFrame, metric: str) -> str:
    """What the figure of ``metric`` shows, in words."""
    if is_real_only(summary):
        return f"{metric_header(metric)} accuracy per backbone, trained on real images only; error bars: SD over folds."
    present = set(summary["regime"])
    parts = [f"{metric_header(metric)} accuracy against n (solid: synthetic only"]
    if "real" in present:
        parts.append("dashed: real only")
    if "mixed" in present:
        parts.append("diamond: real + synthetic")
    return "; ".join(parts) + "); error bars: SD over folds, within 0–100 %."


def figure_title(summary: pd.DataFrame) -> str:
    """The heading of Figure 1."""
    if is_real_only(summary):
        return "top-k accuracy per backbone, real training images only"
    return "top-k accuracy against the number of synthetic images"
