"""report.html: the pieces of a study's report turned into what the Jinja2 template ``study/templates/report.html``
shows (autoescaped; the only markup passed in is pandas' own table of training-set sizes)."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenosynth.study.report.context import WorkspaceStats
from phenosynth.study.report.tables import display_name, group_spans, metric_columns, metric_header, table_rows
from phenosynth.study.report.uncertainty import LEVEL, N_BOOT, SEED


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


def plural(n: int, word: str) -> str:
    """``n word`` or ``n words``.

    >>> plural(1, "seed"), plural(3, "seed")
    ('1 seed', '3 seeds')
    """
    return f"{n} {word}" + ("" if n == 1 else "s")


def figure_view(paths: list[Path], caption: str) -> dict[str, Any]:
    """A figure for the template: its PNG inline (the report is one self-contained file) and every format linked."""
    png = next(p for p in paths if p.suffix == ".png")
    return {"png_base64": base64.b64encode(png.read_bytes()).decode(), "caption": caption, "stem": png.stem,
            "links": [(p.name, p.suffix[1:].upper()) for p in paths]}


def dataset_items(stats: WorkspaceStats) -> dict[str, Any] | None:
    summ = stats.manifest
    if not summ:
        return None
    donors = {"donor faces (identities, never a class or a split)": summ["donors"]} if summ.get("donors") else {}
    return {
        "images in the manifest": summ["images"], "real": summ["real"], "synthetic": summ["synthetic"], **donors,
        "usable": summ["usable"], "classes": summ["classes"], "subjects": summ["subjects"],
        "real images by split": ", ".join(f"{k}: {v}" for k, v in summ["by_split"].items()) or "–",
        "excluded, by reason": ", ".join(f"{k}: {v}" for k, v in summ["excluded"].items()) or "none",
    }


def selection_items(spec: dict[str, Any], stats: WorkspaceStats) -> dict[str, Any]:
    info = dict(stats.synthetic or {})
    if not spec:
        return info
    per_class = spec.get("per_class")
    counts = "not recorded" if per_class is None else (
        "images per class" if per_class else "images in total, over all classes")
    return {"selection strategy": spec.get("selection"), "n counts": counts,
            "ranking representation": spec.get("representation"), **info}


def config_items(config: dict[str, Any]) -> dict[str, Any]:
    spec = config.get("spec") or {}
    items: dict[str, Any] = {}
    if spec:
        items["backbones"] = ", ".join(f"{b['name']} ({b['weights']})" for b in spec.get("backbones", []))
        trainer = spec.get("trainer") or {}
        hparams = trainer.get("hparams")
        items["trainer"] = f"{in_words(trainer.get('mode'))} (" + (
            f"hyper-parameters {in_words(hparams)})" if hparams else "its default hyper-parameters)")
        seeds = spec.get("seeds") or []
        items["folds x seeds"] = (f"{in_words(spec.get('folds'))} folds x {plural(len(seeds), 'seed')}"
                                  + (f" ({in_words(seeds)})" if seeds else ""))
        items["validate on"] = spec.get("validate_on")
        items["preprocessing"] = spec.get("preprocessing")
    if config.get("manifest"):
        items["manifest digest"] = config["manifest"].get("digest")
    if config.get("packages"):
        items["packages"] = ", ".join(f"{k} {v}" for k, v in config["packages"].items())
    return items


def top1_ci_rows(ci: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The rows of the test-set interval table (:func:`phenosynth.study.report.uncertainty.top1_test_ci`), in %."""
    if ci is None:
        return []
    names = [display_name(b) for b in ci["backbone"]]
    return [{"span": span, "backbone": name, "setting": r.setting, "top1": f"{100 * r.top1_mean:.1f}",
             "interval": f"{100 * r.ci_low:.1f}–{100 * r.ci_high:.1f}", "n_test": r.n_test}
            for span, name, r in zip(group_spans(names), names, ci.itertuples())]


def render_report(*, name: str, subtitle: str, notice: str | None, warnings: list[str], summary: pd.DataFrame,
                  top1_ci: pd.DataFrame | None, figure_title: str, figures: list[dict[str, Any]],
                  figures_left_out: dict[str, str], stats: WorkspaceStats, sizes: pd.DataFrame | None,
                  config: dict[str, Any], audit: list[dict[str, Any]] | None = None,
                  unseen: dict[str, Any] | None = None) -> str:
    """report.html as a string (``audit``: the rows of :func:`phenosynth.study.report.audit_section.audit_rows`;
    ``unseen``: the section of :func:`phenosynth.study.report.unseen_section.write_unseen_tables`, None: no
    section)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("phenosynth.study", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["in_words"] = in_words
    spec = config.get("spec") or {}
    n_test = (int(top1_ci["n_test"].min()), int(top1_ci["n_test"].max())) if top1_ci is not None else (0, 0)
    ci = {"level": f"{100 * LEVEL:g}", "n_boot": N_BOOT, "seed": SEED,
          "n_test": str(n_test[0]) if n_test[0] == n_test[1] else f"{n_test[0]}–{n_test[1]}"}
    sizes_html = None if sizes is None else Markup(sizes.to_html(index=False, border=0, classes="frame", na_rep="–"))
    return env.get_template("report.html").render(
        name=name, subtitle=subtitle, notice=notice, warnings=warnings,
        table_header=["Backbone", "Training data", *(metric_header(m) for m in metric_columns(summary))],
        table_rows=table_rows(summary), top1_ci=top1_ci_rows(top1_ci), ci=ci, figure_title=figure_title,
        figures=figures, figures_left_out=figures_left_out, dataset=dataset_items(stats), faces=stats.faces,
        selection=selection_items(spec, stats), sizes=sizes_html, config=config_items(config), audit=audit or [],
        unseen=unseen)
