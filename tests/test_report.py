"""Table 1 / Figure 1 / report.html from a hand-made results.csv: numbers, bold best synthetic, real-only row."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from phenosynth.study.report import (
    ReportError,
    build_report,
    summarize_results,
    table_latex,
    table_markdown,
    topk_figure,
)
from phenosynth.study.spec import StudySpec


def _rows(backbone, regime, n, top1s, top5s=None):
    top5s = top5s or [t + 0.2 for t in top1s]
    return [{"backbone": backbone, "regime": regime, "n_synthetic": n, "fold": f, "seed": 0, "top1": t1,
             "top5": t5, "top10": t1 + 0.3, "top30": t1 + 0.4, "macro_f1": t1 / 2, "n_train": 100 + n,
             "n_test": 40} for f, (t1, t5) in enumerate(zip(top1s, top5s))]


def _results():
    rows = []
    rows += _rows("resnet152", "real", 0, [0.30, 0.32, 0.34])
    rows += _rows("resnet152", "synthetic", 2000, [0.20, 0.22, 0.24])
    rows += _rows("resnet152", "synthetic", 4000, [0.25, 0.26, 0.27])
    rows += _rows("resnet152", "mixed", 4000, [0.35, 0.36, 0.37])
    rows += _rows("vgg16", "real", 0, [0.10, 0.10, 0.10])
    rows += _rows("vgg16", "synthetic", 2000, [0.15] * 3, [0.30] * 3)
    rows += _rows("vgg16", "synthetic", 4000, [0.12] * 3, [0.40] * 3)
    rows += _rows("vgg16", "mixed", 4000, [0.16] * 3)
    return pd.DataFrame(rows)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "ws" / "runs" / "paper"
    run.mkdir(parents=True)
    _results().to_csv(run / "results.csv", index=False)
    config = {"name": "paper", "spec": {"backbones": [{"name": "resnet152", "weights": "default"},
                                                      {"name": "vgg16", "weights": "none"}],
                                        "folds": 3, "seeds": [0], "selection": "top-per-class",
                                        "trainer": {"mode": "probe", "hparams": {}}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_markdown_table_numbers_bold_and_real_row():
    md = table_markdown(summarize_results(_results()))
    lines = md.splitlines()
    assert lines[0] == "| Backbone | Training data | Top-1 | Top-5 | Top-10 | Top-30 |"
    assert lines[2] == "| ResNet152 | Real | 32.0 (2.0) | 52.0 (2.0) | 62.0 (2.0) | 72.0 (2.0) |"
    assert lines[3] == "|  | Syn 2k | 22.0 (2.0) | 42.0 (2.0) | 52.0 (2.0) | 62.0 (2.0) |"
    assert lines[4] == "|  | Syn 4k | **26.0 (1.0)** | **46.0 (1.0)** | **56.0 (1.0)** | **66.0 (1.0)** |"
    assert lines[5] == "|  | Real + syn 4k | 36.0 (1.0) | 56.0 (1.0) | 66.0 (1.0) | 76.0 (1.0) |"
    # bold is per column: VGG16's best top-1 is at 2k, its best top-5 at 4k
    assert lines[7] == "|  | Syn 2k | **15.0 (0.0)** | 30.0 (0.0) | **45.0 (0.0)** | **55.0 (0.0)** |"
    assert lines[8] == "|  | Syn 4k | 12.0 (0.0) | **40.0 (0.0)** | 42.0 (0.0) | 52.0 (0.0) |"
    assert "mean (SD) over 3 runs" in md


def test_latex_table():
    tex = table_latex(summarize_results(_results()))
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "Backbone & Training data & Top-1 & Top-5 & Top-10 & Top-30 \\\\" in tex
    assert "\\multirow{4}{*}{ResNet152} & Real & 32.0 (2.0) & 52.0 (2.0) & 62.0 (2.0) & 72.0 (2.0) \\\\" in tex
    assert " & Syn 4k & \\textbf{26.0 (1.0)} & \\textbf{46.0 (1.0)}" in tex
    assert tex.count("\\textbf") == 8 and tex.count("\\midrule") == 2


def test_build_report_writes_every_file(run_dir):
    rep = build_report(run_dir)
    names = sorted(p.name for p in rep.files)
    assert names == sorted([f"figure_top{k}.{fmt}" for k in (1, 5, 10, 30) for fmt in ("png", "svg", "pdf")]
                           + ["report.html", "table.csv", "table.md", "table.tex"])
    with Image.open(run_dir / "figure_top1.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    svg = ElementTree.parse(run_dir / "figure_top1.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "Top-1 accuracy on the held-out real test set" in (run_dir / "figure_top1.svg").read_text()
    assert (run_dir / "figure_top1.pdf").read_bytes().startswith(b"%PDF-")
    table = pd.read_csv(run_dir / "table.csv")
    assert table["Top-1"].tolist()[:2] == ["32.0 (2.0)", "22.0 (2.0)"]
    assert table["top1_mean"].iloc[0] == pytest.approx(0.32)
    assert table["best_top1"].tolist() == [False, False, True, False, False, True, False, False]
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "<b>26.0 (1.0)</b>" in page
    assert "VGG16: weights &#39;none&#39; (random initialisation)" in page


def test_report_cli_rebuilds_from_results_csv(run_dir):
    from phenosynth.cli import app

    (run_dir / "table.md").write_text("stale")
    out = CliRunner().invoke(app, ["report", str(run_dir)])
    assert out.exit_code == 0, out.output
    assert "report.html" in out.output
    assert (run_dir / "table.md").read_text().startswith("| Backbone |")


def test_report_without_results_says_what_to_do(tmp_path):
    with pytest.raises(ReportError, match="results.csv does not exist. Run the study first"):
        build_report(tmp_path)
    from phenosynth.cli import app

    out = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert out.exit_code == 2 and "Run the study first" in out.output


def test_a_spec_notice_heads_the_report_and_the_table(tmp_path):
    import yaml

    from phenosynth.study.report import build_report

    run = tmp_path / "ws" / "runs" / "r"
    run.mkdir(parents=True)
    rows = [{"backbone": "resnet152", "regime": r, "n_synthetic": n, "fold": f, "seed": 0, "top1": 0.5 + 0.01 * f,
             "top5": 0.7, "top10": 0.8, "top30": 0.9, "macro_f1": 0.4, "n_train": 10, "n_test": 40}
            for r, n in (("real", 0), ("synthetic", 2000)) for f in range(3)]
    import pandas as pd

    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "spec": {"notice": "SIMULATED DATA."}}))
    build_report(run)
    assert "<b>SIMULATED DATA.</b>" in (run / "report.html").read_text()
    assert (run / "table.md").read_text().rstrip().endswith("**SIMULATED DATA.**")


def _errorbar_ys(ax) -> np.ndarray:
    """Every y of every error bar segment and data point drawn on ``ax``."""
    from matplotlib.container import ErrorbarContainer

    ys = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            data_line, _, barcols = c.lines
            ys.append(np.asarray(data_line.get_ydata(), dtype=float))
            for col in barcols:
                ys += [np.asarray(seg)[:, 1] for seg in col.get_segments()]
    return np.concatenate(ys)


def test_accuracy_axes_and_error_bars_stay_within_0_and_100():
    rows = _rows("resnet152", "real", 0, [0.90, 0.95, 1.0], [1.0] * 3)
    rows += _rows("resnet152", "synthetic", 2000, [0.80, 1.0, 1.0], [0.8, 1.0, 1.0])  # mean 93.3, SD 11.5
    rows += _rows("resnet152", "synthetic", 4000, [0.0, 0.0, 0.1], [0.0, 0.0, 0.1])  # mean 3.3, SD 5.8
    rows += _rows("resnet152", "mixed", 4000, [0.9, 1.0, 1.0], [0.9, 1.0, 1.0])
    summary = summarize_results(pd.DataFrame(rows))
    for metric in ("top1", "top5"):
        ax = topk_figure(summary, metric).axes[0]
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 100
        ys = _errorbar_ys(ax)
        assert ys.min() == pytest.approx(0.0) and ys.max() == pytest.approx(100.0)  # cut, not beyond
        assert len(ys) > 6


def test_each_figure_has_one_legend_naming_only_what_is_drawn():
    from matplotlib.legend import Legend

    summary = summarize_results(pd.DataFrame(
        _rows("resnet152", "real", 0, [0.3, 0.32]) + _rows("resnet152", "synthetic", 2000, [0.2, 0.22])
        + _rows("vgg16", "synthetic", 2000, [0.1, 0.12]) + _rows("vgg16", "synthetic", 4000, [0.15, 0.12])))
    fig = topk_figure(summary, "top1")
    legends = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, Legend)] + fig.legends
    assert len(legends) == 1
    labels = [t.get_text() for t in legends[0].get_texts()]
    assert labels == ["ResNet152", "VGG16", "synthetic only", "real only"]  # no "real + synthetic": none drawn


def test_a_real_only_study_gets_a_bar_chart_per_backbone(tmp_path):
    from matplotlib.container import BarContainer

    results = pd.DataFrame(_rows("resnet152", "real", 0, [0.30, 0.32, 0.34]) + _rows("vgg16", "real", 0, [0.1] * 3))
    results["n_classes"] = 5  # Top-5 and up are trivial: only Top-1 is drawn, a quicker test
    ax = topk_figure(summarize_results(results), "top1").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and [b.get_height() for b in bars[0]] == pytest.approx([32.0, 10.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ResNet152", "VGG16"]
    assert "synthetic" not in ax.get_xlabel() and ax.get_ylim() == (0.0, 100.0)
    run = tmp_path / "r"
    run.mkdir()
    results.to_csv(run / "results.csv", index=False)
    build_report(run)
    page = (run / "report.html").read_text()
    assert "real training images only" in page and "against the number of synthetic images" not in page


def test_trivially_100_percent_topk_figures_are_left_out_and_the_report_says_so(tmp_path):
    rows = _rows("resnet152", "real", 0, [0.3, 0.4]) + _rows("resnet152", "synthetic", 2000, [0.2, 0.3])
    results = pd.DataFrame(rows).assign(top5=1.0, n_classes=8)  # Top-5 is 100 % everywhere; Top-10/30: k >= 8
    run = tmp_path / "r"
    run.mkdir()
    results.to_csv(run / "results.csv", index=False)
    (run / "figure_top10.png").write_bytes(b"stale figure of an earlier build")
    rep = build_report(run)
    assert rep.figures_left_out == {"Top-5": "every setting's mean is 100 %", "Top-10": "k ≥ the 8 classes",
                                    "Top-30": "k ≥ the 8 classes"}
    assert sorted(p.name for p in run.glob("figure_*")) == ["figure_top1.pdf", "figure_top1.png", "figure_top1.svg"]
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    assert ("No figure for Top-5 (trivially 100 %: every setting&#39;s mean is 100 %); Top-10 (trivially 100 %: "
            "k ≥ the 8 classes); Top-30 (trivially 100 %: k ≥ the 8 classes); see Table 1.") in page
    out = CliRunner().invoke(__import__("phenosynth.cli", fromlist=["app"]).app, ["report", str(run)])
    assert out.exit_code == 0 and "No Top-10 figure: trivially 100 % (k ≥ the 8 classes)." in out.output


def test_figures_are_byte_identical_when_rebuilt(run_dir):
    _results().assign(n_classes=5).to_csv(run_dir / "results.csv", index=False)  # Top-1 only: a quicker test
    build_report(run_dir)
    first = {p.name: p.read_bytes() for p in run_dir.glob("figure_*")}
    build_report(run_dir)
    assert sorted(first) == ["figure_top1.pdf", "figure_top1.png", "figure_top1.svg"]
    assert {p.name: p.read_bytes() for p in run_dir.glob("figure_*")} == first


def test_report_html_says_settings_in_words_not_python_values(run_dir):
    import re

    spec = StudySpec(backbones=["resnet152", {"name": "vgg16", "weights": "none"}],
                     regimes={"synthetic": [2000, 4000], "mixed": [4000]}, folds=3,
                     trainer={"mode": "probe", "hparams": {"C": [0.1, 1.0]}})
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"name": "paper", "spec": spec.resolved(),
                                                         "manifest": {"digest": "abc"}}))
    _results().assign(n_classes=5).to_csv(run_dir / "results.csv", index=False)  # Top-1 only: a quicker test
    build_report(run_dir)
    page = (run_dir / "report.html").read_text()
    body = page[page.index("<body>"):]
    text = re.sub(r"<[^>]+>", " ", re.sub(r"data:image/png;base64,[^\"]+", "", body))
    assert not re.findall(r"\b(True|False|None|nan)\b|\[|\{", text)
    assert "images in total, over all classes" in text
    assert "probe (hyper-parameters C: 0.1, 1.0)" in text and "3 folds x 1 seed (0)" in text


def test_one_helper_puts_the_backbone_on_the_first_row_of_its_group():
    from phenosynth.study.report.tables import group_spans, table_rows

    assert group_spans(["a", "a", "b", "c", "c", "c"]) == [2, 0, 1, 3, 0, 0]
    assert group_spans([]) == []
    rows = table_rows(summarize_results(_results()))
    assert [(r["span"], r["backbone"]) for r in rows] == [(4, "ResNet152"), (0, "ResNet152"), (0, "ResNet152"),
                                                          (0, "ResNet152"), (4, "VGG16"), (0, "VGG16"),
                                                          (0, "VGG16"), (0, "VGG16")]
    assert rows[2]["cells"][0] == ("26.0 (1.0)", True)


def test_report_html_shows_a_seeded_bootstrap_interval_of_each_test_set_top1(run_dir):
    import html
    import re

    from phenosynth.study.report import top1_bootstrap_ci, top1_test_ci

    ci = top1_test_ci(_results())
    assert list(ci["setting"][:4]) == ["Real", "Syn 2k", "Syn 4k", "Real + syn 4k"]  # Table 1's order
    # ResNet152 / Real: mean 32 % of 40 images = 12.8 hits -> 12 images right, one 0.8, 27 wrong
    lo, hi = ci.loc[0, ["ci_low", "ci_high"]]
    assert lo < 0.32 < hi and (lo, hi) == top1_bootstrap_ci(0.32, 40)
    assert 0.12 < hi - lo < 0.35  # about 2 x 1.96 x sqrt(.32 x .68 / 40) = 0.29
    assert (ci["n_test"] == 40).all()
    build_report(run_dir)
    page = html.unescape((run_dir / "report.html").read_text())
    assert "95 % percentile bootstrap interval over its 40 test" in page
    assert f"<td>Real</td><td class=\"num\">32.0</td><td class=\"num\">{100 * lo:.1f}–{100 * hi:.1f}</td>" in page
    first = re.findall(r"\d+\.\d–\d+\.\d", page)
    build_report(run_dir)
    assert re.findall(r"\d+\.\d–\d+\.\d", html.unescape((run_dir / "report.html").read_text())) == first
    assert len(first) == 8


def test_the_widest_interval_holds_the_point_estimate_and_narrows_with_more_test_images():
    from phenosynth.study.report import top1_bootstrap_ci
    from phenosynth.study.report.uncertainty import widest_shares

    shares = widest_shares(0.986, 24)  # 23.66 hits: 23 images right in every fold, one in 2 of 3 folds
    assert shares.sum() == pytest.approx(0.986 * 24) and shares.tolist().count(1.0) == 23
    lo, hi = top1_bootstrap_ci(0.986, 24)
    assert lo < 0.986 <= hi == 1.0
    narrow = top1_bootstrap_ci(0.5, 400)
    wide = top1_bootstrap_ci(0.5, 40)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2  # sqrt(10) times narrower


def test_a_workspace_given_as_a_folder_is_read(run_dir, tmp_path):
    from phenosynth.study.report import workspace_stats
    from phenosynth.study.report.context import workspace_root

    ws = tmp_path / "ws"
    _results().assign(n_classes=5).to_csv(run_dir / "results.csv", index=False)  # Top-1 only: a quicker test
    build_report(run_dir, ws=ws)
    assert f"workspace {ws}</p>" in (run_dir / "report.html").read_text()  # was "workspace /" (Path.root)
    assert workspace_root(ws, {}, tmp_path / "run") == ws  # not Path.root ("/"), as before
    assert workspace_root(None, {}, tmp_path / "a" / "run") is None
    assert workspace_stats(None).manifest is None and workspace_stats(ws).n_classes is None


def _two_runs_one_audited(tmp_path):
    """A workspace with synthetic images of runs r1 (audited: 2 of 3 images flagged) and r2 (never audited)."""
    import json

    from tests._workspaces import image_row, save_rows

    from phenosynth.data.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws", create=True)
    rows = [image_row(ws, ws.root / "synthetic" / run / f"{k}.png",
                      np.full((8, 8, 3), 10 * k + (run == "r2"), dtype=np.uint8), label="A", source="synthetic",
                      generator="phenotype-transfer", params=json.dumps({"run": run, "seed": k}), split="train")
            for run in ("r1", "r2") for k in range(3)]
    save_rows(ws, rows)
    d = ws.root / "audit" / "r1"
    d.mkdir(parents=True)
    pd.DataFrame({"image_id": [r["image_id"] for r in rows[:3]], "flags": [[], ["identity-match"], ["no-face"]],
                  "shareable": [True, False, False]}).to_parquet(d / "audit.parquet", index=False)
    run = {"run": "r1", "generator": "phenotype-transfer", "n_images": 3, "n_shareable": 1, "n_matched": 1,
           "n_measured": 2, "matched_share": 0.125,
           "matched_ci": [0.05, 0.26], "stranger_rate": 0.1, "stranger_ci": [0.04, 0.2], "membership_auc": 0.55,
           "membership_ci": [0.41, 0.69]}
    fidelity = {"phenotype": [{"condition": "all conditions", "synthetic_accuracy": 0.9, "test_accuracy": 0.25}]}
    (d / "summary.json").write_text(json.dumps({"run": run, "settings": {"embedder": "dlib_resnet128"}, "created": "x",
                                                "fidelity": fidelity}))
    return ws


def test_report_html_shows_each_runs_audit_or_says_not_audited(run_dir, tmp_path):
    import re

    ws = _two_runs_one_audited(tmp_path)
    _results().assign(n_classes=5).to_csv(run_dir / "results.csv", index=False)
    build_report(run_dir, ws=ws.root)
    html = (run_dir / "report.html").read_text()
    section = html[html.index("<h2>Privacy audit</h2>"):html.index("<h2>Configuration</h2>")]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", section)]
    assert cells[:8] == ["r1 (phenotype-transfer; dlib_resnet128)", "3", "12.5 % [5.0–26.0]", "10.0 % [4.0–20.0]",
                         "0.55 [0.41–0.69]", "2", "90 % / 25 %", "fails"]  # 12.5 % > 10 % + 2 points
    assert cells[8:] == ["r2", "3", "not audited: its images were used without a privacy check"]
