"""The study's report, rebuilt from ``results.csv`` alone (plus the workspace for context when it is there):
Table 1 (``table.md``, ``table.csv``, ``table.tex``), Figure 1 (``figure_top1.{png,svg,pdf}`` and one per k that is
not trivially 100 %) and ``report.html`` with the dataset, face-pass and selection statistics and warnings.

The table functions are pure (a results frame in, a frame/str out); :func:`build_report` does the I/O.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import yaml

from phenosynth.data.workspace import atomic_write
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10, 30)
METRICS: tuple[str, ...] = tuple(f"top{k}" for k in KS)
REGIME_RANK = {"real": 0, "synthetic": 1, "mixed": 2}
TEMPLATE = Path(__file__).parent / "templates" / "report.html"

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


class ReportError(PhenosynthError):
    """The run folder has no usable results.csv."""


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


def summarize_results(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof=1) of each metric per backbone x regime x n, in table order.

    Returns one row per configuration: ``backbone, regime, n_synthetic, setting, runs, top1_mean, top1_sd, ...,
    best_top1, ...`` where ``best_topK`` marks the best synthetic-only mean of its backbone (ties all marked).
    Metrics in ``results`` are fractions in [0, 1].
    """
    metrics = [m for m in (*METRICS, "macro_f1") if m in results.columns]
    order = list(dict.fromkeys(results["backbone"]))  # backbones in the order the study ran them
    rows = []
    keyed = results.assign(_n=configuration_n(results))
    for (backbone, regime, _), grp in keyed.groupby(["backbone", "regime", "_n"], sort=False):
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
    table["_b"] = table["backbone"].map(order.index)
    table["_r"] = table["regime"].map(REGIME_RANK).fillna(9)
    table = table.sort_values(["_b", "_r", "n_synthetic"], kind="stable").drop(columns=["_b", "_r"])
    for m in METRICS:
        if f"{m}_mean" not in table.columns:
            continue
        syn = table[table["regime"] == "synthetic"]
        best = syn.groupby("backbone")[f"{m}_mean"].transform("max")
        table[f"best_{m}"] = False
        table.loc[syn.index, f"best_{m}"] = np.isclose(syn[f"{m}_mean"], best, rtol=0, atol=1e-12)
    return table.reset_index(drop=True)


def format_mean_sd(mean: float, sd: float) -> str:
    """Percent with one decimal: ``0.3512, 0.0309 -> '35.1 (3.1)'``; a single run has no SD.

    >>> format_mean_sd(0.3512, 0.0309), format_mean_sd(0.5, float("nan"))
    ('35.1 (3.1)', '50.0')
    """
    if math.isnan(mean):
        return "–"
    if math.isnan(sd):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ({100 * sd:.1f})"


def _metric_columns(summary: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if f"{m}_mean" in summary.columns]


def _header(m: str) -> str:
    return f"Top-{m[3:]}"


def table_layout(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 as strings: Backbone, Training data, Top-1, Top-5, Top-10, Top-30 ("mean (SD)")."""
    out = pd.DataFrame({"Backbone": summary["backbone"].map(display_name), "Training data": summary["setting"]})
    for m in _metric_columns(summary):
        out[_header(m)] = [format_mean_sd(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_sd"])]
    return out


def table_markdown(summary: pd.DataFrame) -> str:
    """Markdown table; the backbone name on its first row only; best synthetic-only results in ``**bold**``."""
    layout = table_layout(summary)
    metrics = _metric_columns(summary)
    cols = list(layout.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(metrics)) + "|"]
    prev = None
    for i, row in layout.iterrows():
        cells = [row["Backbone"] if row["Backbone"] != prev else "", row["Training data"]]
        prev = row["Backbone"]
        for m in metrics:
            v = row[_header(m)]
            cells.append(f"**{v}**" if summary.at[i, f"best_{m}"] else v)
        lines.append("| " + " | ".join(cells) + " |")
    n_runs = sorted(set(summary["runs"]))
    runs = str(n_runs[0]) if len(n_runs) == 1 else f"{n_runs[0]}–{n_runs[-1]}"
    lines.append("")
    lines.append(f"Top-k accuracy (%) on the held-out real test set, mean (SD) over {runs} runs (folds x seeds). "
                 "Bold: best synthetic-only result per backbone.")
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
    layout = table_layout(summary)
    metrics = _metric_columns(summary)
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
        "Backbone & Training data & " + " & ".join(_header(m) for m in metrics) + " \\\\",
        "\\midrule",
    ]
    groups = list(dict.fromkeys(layout["Backbone"]))
    for g_i, name in enumerate(groups):
        idx = layout.index[layout["Backbone"] == name]
        for j, i in enumerate(idx):
            first = f"\\multirow{{{len(idx)}}}{{*}}{{{_tex_escape(name)}}}" if j == 0 else ""
            cells = [first, _tex_escape(layout.at[i, "Training data"])]
            for m in metrics:
                v = layout.at[i, _header(m)]
                cells.append(f"\\textbf{{{v}}}" if summary.at[i, f"best_{m}"] else v)
            out.append(" & ".join(cells) + " \\\\")
        if g_i < len(groups) - 1:
            out.append("\\midrule")
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


def table_html(summary: pd.DataFrame) -> str:
    layout = table_layout(summary)
    metrics = _metric_columns(summary)
    parts = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in layout.columns) + "</tr>"]
    prev = None
    for i, row in layout.iterrows():
        new = row["Backbone"] != prev
        cells = [f"<td>{html.escape(row['Backbone']) if new else ''}</td>",
                 f"<td>{html.escape(row['Training data'])}</td>"]
        prev = row["Backbone"]
        for m in metrics:
            v = html.escape(row[_header(m)])
            cells.append(f'<td class="num">{"<b>" + v + "</b>" if summary.at[i, f"best_{m}"] else v}</td>')
        tr = '<tr class="group">' if new and i else "<tr>"
        parts.append(tr + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


# --- figures ---------------------------------------------------------------------------------------------------------
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
    for m in _metric_columns(summary):
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
    ax.set_ylabel(f"{_header(metric)} accuracy (%)")
    ax.set_title(f"{_header(metric)} accuracy, real training images only (mean ± SD over folds)", pad=12)
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
    ax.set_ylabel(f"{_header(metric)} accuracy (%)")
    ax.set_title(f"{_header(metric)} accuracy on the held-out real test set (mean ± SD over folds)", pad=12)
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


# --- context from the workspace --------------------------------------------------------------------------------------
def in_words(value: Any) -> str:
    """A value as a reader of the report says it: no raw Python ``True``/``None``/``[...]``/``{...}``.

    >>> in_words(True), in_words(None), in_words([0, 1]), in_words({"C": [0.1, 1.0]}), in_words(0.5)
    ('yes', 'not recorded', '0, 1', 'C: 0.1, 1.0', '0.5')
    """
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not recorded"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {in_words(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(in_words(v) for v in value) or "none"
    return str(value)


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(in_words(v))}</td></tr>"
                   for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _frame_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="frame", na_rep="–")


def _ranking(ws: Any, representation: str | None) -> pd.DataFrame | None:
    try:
        from phenosynth.synth.selection import load_ranking

        return load_ranking(ws, representation)
    except Exception as exc:  # noqa: BLE001 - the report shows what it can
        log.warning("no ranking statistics: %s", exc)
        return None


def dataset_context(ws_root: Path | None, representation: str | None = None) -> dict[str, Any]:
    """Manifest summary, face-pass and selection statistics from the workspace (empty where absent)."""
    ctx: dict[str, Any] = {"summary": None, "faces": None, "synthetic": None, "flagged": {}, "n_classes": None}
    if ws_root is None or not (ws_root / "manifest.parquet").exists():
        return ctx
    from phenosynth.data import manifest as mf
    from phenosynth.data.workspace import Workspace

    ws = Workspace(ws_root)
    df = ws.load_manifest()
    ctx["summary"] = mf.summarize(df)
    ctx["n_classes"] = ctx["summary"]["classes"]
    syn_all = df[df["source"] == mf.SYNTHETIC]
    ctx["flagged"] = {str(k): int(v) for k, v in syn_all["exclude_reason"].dropna().value_counts().items()}
    syn = mf.synthetic(df)
    if len(syn):
        per_class = syn["label"].value_counts()
        info: dict[str, Any] = {
            "usable synthetic images": len(syn),
            "by generator": ", ".join(f"{g}: {c}" for g, c in syn["generator"].fillna("?").value_counts().items()),
            "per class (min / median / max)": f"{per_class.min()} / {per_class.median():g} / {per_class.max()}",
            "classes with synthetic images": f"{per_class.size} of {ctx['n_classes']}",
        }
        ranking = _ranking(ws, representation)
        if ranking is not None and len(ranking):
            info["ranked by"] = str(ranking["representation"].iloc[0])
            info["rank score, cosine to own class prototype (mean / min / max)"] = (
                f"{ranking['rank_score'].mean():.3f} / {ranking['rank_score'].min():.3f} / "
                f"{ranking['rank_score'].max():.3f}")
            info["closest to own class prototype (own class ranked 1st)"] = (
                f"{100 * (ranking['own_class_rank'] == 1).mean():.1f} %")
        ctx["synthetic"] = info
    if ws.faces_path.exists():
        try:
            faces = pd.read_parquet(ws.faces_path, columns=None)
            status = faces["status"].astype(str)
            ctx["faces"] = {
                "rows": len(faces),
                "settings": ", ".join(sorted({f"{d}/{lm}" for d, lm in zip(faces.get("detector", ["?"] * len(faces)),
                                                                           faces.get("landmarker", ["?"] * len(faces)))})),
                "ok (one face)": int((status == "ok").sum()),
                "ok, largest of several faces": int(status.str.startswith("ok-largest").sum()),
                "no face": int((status == "no-face").sum()),
                "errors": int(status.str.startswith("error").sum()),
            }
            if "score" in faces.columns:
                s = pd.to_numeric(faces["score"], errors="coerce").dropna()
                if len(s):
                    ctx["faces"]["detection score (median)"] = f"{s.median():.3f}"
        except Exception as exc:  # noqa: BLE001 - the report shows what it can
            log.warning("could not read %s: %s", ws.faces_path, exc)
    return ctx


def collect_warnings(results: pd.DataFrame, config: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    """Things a reader of the numbers must know (plain-text lines)."""
    warnings: list[str] = []
    spec = config.get("spec") or {}
    for b in spec.get("backbones", []):
        if b.get("weights") == "none":
            warnings.append(f"{display_name(b['name'])}: weights 'none' (random initialisation) — its numbers say "
                            "nothing about pretrained features; put the weights in place and rerun.")
    summary = ctx.get("summary")
    if summary:
        absent = summary.get("classes_absent_from_test") or []
        if absent:
            shown = ", ".join(absent[:10]) + (f", … ({len(absent) - 10} more)" if len(absent) > 10 else "")
            warnings.append(f"{len(absent)} of {summary['classes']} classes have no real test image ({shown}); "
                            "top-k is measured over the classes that do.")
    for reason, count in (ctx.get("flagged") or {}).items():
        warnings.append(f"{count} synthetic images are flagged and left out: {reason}.")
    n_classes = ctx.get("n_classes")
    if n_classes:
        trivial = [k for k in KS if k >= n_classes]
        if trivial:
            what = ", ".join(f"Top-{k}" for k in trivial)
            verb = "covers every class and is" if len(trivial) == 1 else "cover every class and are"
            warnings.append(f"Only {n_classes} classes: {what} {verb} trivially 100 %.")
    folds, seeds = spec.get("folds"), spec.get("seeds")
    if folds and seeds:
        expected = int(folds) * len(seeds)
        keyed = results.assign(_n=configuration_n(results))
        groups = keyed.groupby(["backbone", "regime", "_n"])
        counts, low, high = groups.size(), groups["n_synthetic"].min(), groups["n_synthetic"].max()
        short = counts[counts < expected]
        for key, c in short.items():
            b, r = key[0], key[1]
            warnings.append(f"{display_name(b)} / {setting_label(r, int(low[key]), int(high[key]))}: {c} of "
                            f"{expected} runs finished.")
    sd_cols = [c for c in ("top1_sd",) if c in ctx.get("_summary", pd.DataFrame()).columns]
    if sd_cols:
        syn = ctx["_summary"]
        syn = syn[(syn["regime"] == "synthetic") & (syn["runs"] > 1)]
        if len(syn) and (syn["top1_sd"].fillna(0) == 0).all() and spec.get("validate_on", "real") == "real":
            warnings.append("Synthetic-only results have SD 0: with validate_on real their training set is the same "
                            "in every fold apart from the children of each fold's validation photos (the folds mostly "
                            "choose hyper-parameters), so this SD is near 0 by construction, not a measure of variability (validate_on: pool gives each fold its own training set).")
    if "n_test" in results.columns and (pd.to_numeric(results["n_test"], errors="coerce") < 30).any():
        warnings.append("Fewer than 30 test images: the SD over folds understates the uncertainty of the test set "
                        "itself.")
    return warnings


def _audit_warnings(ws_root: Path | None, results: pd.DataFrame, config: dict[str, Any]) -> list[str]:
    """The audit summary of the synthetic runs a run with synthetic regimes could use (phenosynth.audit.gate)."""
    if ws_root is None or not (ws_root / "manifest.parquet").exists() or (results["regime"] == "real").all():
        return []
    from phenosynth.audit.gate import audit_warnings
    from phenosynth.data.workspace import Workspace

    ws = Workspace(ws_root)
    gate_on = bool((config.get("spec") or config).get("privacy_gate", True))
    return audit_warnings(ws, ws.load_manifest(), enabled=gate_on)


# --- the report ------------------------------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`build_report` wrote."""

    run_dir: Path
    files: list[Path] = field(default_factory=list)
    summary: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    figures_left_out: dict[str, str] = field(default_factory=dict)
    """Top-k figures not drawn because they would say nothing ("Top-10" -> the reason); report.html says so too."""


def _figure_tag(paths: list[Path], caption: str) -> str:
    """The PNG inline (the report is one self-contained file), with links to every format beside it."""
    png = next(p for p in paths if p.suffix == ".png")
    data = base64.b64encode(png.read_bytes()).decode()
    links = " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.suffix[1:].upper())}</a>' for p in paths)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(png.stem)}: {links})</figcaption></figure>")


def _figure_caption(summary: pd.DataFrame, metric: str) -> str:
    if is_real_only(summary):
        return f"{_header(metric)} accuracy per backbone, trained on real images only; error bars: SD over folds."
    present = set(summary["regime"])
    parts = [f"{_header(metric)} accuracy against n (solid: synthetic only"]
    if "real" in present:
        parts.append("dashed: real only")
    if "mixed" in present:
        parts.append("diamond: real + synthetic")
    return "; ".join(parts) + "); error bars: SD over folds, within 0–100 %."


def _n_classes(results: pd.DataFrame, ctx: dict[str, Any]) -> int | None:
    """Classes the models chose among: the trainer's ``n_classes`` column, else the workspace's class count."""
    if "n_classes" in results.columns:
        n = pd.to_numeric(results["n_classes"], errors="coerce").dropna()
        if len(n):
            return int(n.max())
    return ctx.get("n_classes")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return path


def build_report(run_dir: str | os.PathLike[str], *, ws: Any = None) -> Report:
    """(Re)build every report file of ``run_dir`` from its ``results.csv`` (and ``config.yaml`` + workspace when
    present). Returns the files written."""
    run_dir = Path(run_dir).expanduser().resolve()
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
    if ws is not None:
        ws_root: Path | None = Path(getattr(ws, "root", ws))
    elif config.get("workspace") and Path(config["workspace"]).exists():
        ws_root = Path(config["workspace"])
    else:
        ws_root = run_dir.parent.parent if (run_dir.parent.parent / "manifest.parquet").exists() else None

    summary = summarize_results(results)
    rep = Report(run_dir=run_dir, summary=summary)
    notice = (config.get("spec") or {}).get("notice")
    rep.files.append(_write_text(run_dir / "table.md", table_markdown(summary) + (f"\n**{notice}**\n" if notice else "")))
    csv_frame = table_csv_frame(summary)
    atomic_write(run_dir / "table.csv", lambda p: csv_frame.to_csv(p, index=False))
    rep.files.append(run_dir / "table.csv")
    rep.files.append(_write_text(run_dir / "table.tex", table_latex(summary)))
    ctx = dataset_context(ws_root, (config.get("spec") or {}).get("representation"))
    left_out = trivial_metrics(summary, _n_classes(results, ctx))
    rep.figures_left_out = {_header(m): why for m, why in left_out.items()}
    figures = []
    for m in _metric_columns(summary):
        if m in left_out:
            for stale in figure_paths(run_dir, m):  # a figure the report says it left out is not left lying there
                stale.unlink(missing_ok=True)
            continue
        paths = plot_topk(summary, m, run_dir)
        rep.files.extend(paths)
        figures.append(_figure_tag(paths, _figure_caption(summary, m)))
    if left_out:
        figures.append("<p>No figure for " + "; ".join(f"{_header(m)} (trivially 100 %: {html.escape(why)})"
                                                       for m, why in left_out.items()) + "; see Table 1.</p>")
    ctx["_summary"] = summary
    rep.warnings = collect_warnings(results, config, ctx) + _audit_warnings(ws_root, results, config)
    warnings_html = ('<div class="warn"><ul>' + "".join(f"<li>{html.escape(w)}</li>" for w in rep.warnings)
                     + "</ul></div>") if rep.warnings else '<p class="ok">None.</p>'
    summ = ctx.get("summary")
    if summ:
        dataset = _kv_table({
            "images in the manifest": summ["images"], "real": summ["real"], "synthetic": summ["synthetic"],
            "usable": summ["usable"], "classes": summ["classes"], "subjects": summ["subjects"],
            "real images by split": ", ".join(f"{k}: {v}" for k, v in summ["by_split"].items()) or "–",
            "excluded, by reason": ", ".join(f"{k}: {v}" for k, v in summ["excluded"].items()) or "none",
        })
    else:
        dataset = "<p>The workspace is not available; only results.csv was used.</p>"
    faces = _kv_table(ctx["faces"]) if ctx.get("faces") else "<p>No faces.parquet in the workspace.</p>"
    selection_info = dict(ctx.get("synthetic") or {})
    spec = config.get("spec") or {}
    if spec:
        per_class = spec.get("per_class")
        selection_info = {"selection strategy": spec.get("selection"),
                          "n counts": "not recorded" if per_class is None else (
                              "images per class" if per_class else "images in total, over all classes"),
                          "ranking representation": spec.get("representation"), **selection_info}
    extra = [c for c in ("n_train", "n_test") if c in results.columns]
    if extra:
        groups = results.assign(_n=configuration_n(results)).groupby(["backbone", "regime", "_n"], sort=False)
        sizes = groups[extra].mean().round(1)
        sizes.insert(0, "setting", [setting_label(r, lo, hi) for (_, r, _), lo, hi in
                                    zip(sizes.index, groups["n_synthetic"].min(), groups["n_synthetic"].max())])
        sizes = sizes.reset_index()
        sizes = sizes[sizes["backbone"] == sizes["backbone"].iloc[0]].drop(columns=["backbone", "regime", "_n"])
        sizes = sizes.rename(columns={"n_train": "training images (mean)", "n_test": "test images (mean)"})
        size_html = "<p>Training-set sizes per setting (first backbone):</p>" + _frame_html(sizes)
    else:
        size_html = ""
    selection = (_kv_table(selection_info) if selection_info else "<p>No synthetic images.</p>") + size_html
    cfg_items: dict[str, Any] = {}
    if spec:
        cfg_items["backbones"] = ", ".join(f"{b['name']} ({b['weights']})" for b in spec.get("backbones", []))
        trainer = spec.get("trainer") or {}
        hparams = trainer.get("hparams")
        cfg_items["trainer"] = f"{in_words(trainer.get('mode'))} (" + (
            f"hyper-parameters {in_words(hparams)})" if hparams else "its default hyper-parameters)")
        seeds = spec.get("seeds") or []
        cfg_items["folds x seeds"] = (f"{in_words(spec.get('folds'))} folds x {_plural(len(seeds), 'seed')}"
                                      + (f" ({in_words(seeds)})" if seeds else ""))
        cfg_items["validate on"] = spec.get("validate_on")
        cfg_items["preprocessing"] = spec.get("preprocessing")
    if config.get("manifest"):
        cfg_items["manifest digest"] = config["manifest"].get("digest")
    if config.get("packages"):
        cfg_items["packages"] = ", ".join(f"{k} {v}" for k, v in config["packages"].items())
    n_models = len(results)
    subtitle = (f"{_plural(n_models, 'trained model')} · {_plural(results['backbone'].nunique(), 'backbone')} · "
                f"workspace {html.escape(str(ws_root) if ws_root else '(not available)')}")
    page = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        name=html.escape(config.get("name", run_dir.name)),
        subtitle=subtitle,
        notice=(f'<p class="warn"><b>{html.escape(spec["notice"])}</b></p>' if spec and spec.get("notice") else ""),
        warnings=warnings_html,
        table=table_html(summary),
        figure_title=("top-k accuracy per backbone, real training images only" if is_real_only(summary) else
                      "top-k accuracy against the number of synthetic images"),
        figures="\n".join(figures),
        dataset=dataset,
        faces=faces,
        selection=selection,
        config=_kv_table(cfg_items) if cfg_items else "<p>No config.yaml.</p>",
    )
    rep.files.append(_write_text(run_dir / "report.html", page))
    return rep
