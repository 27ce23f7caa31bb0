"""Table 1 / Figure 1 / report.html from a hand-made results.csv: numbers, bold best synthetic, real-only row."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from phenosynth.study.report import ReportError, build_report, summarize_results, table_latex, table_markdown


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
    assert names == ["figure_top1.png", "figure_top10.png", "figure_top30.png", "figure_top5.png", "report.html",
                     "table.csv", "table.md", "table.tex"]
    with Image.open(run_dir / "figure_top1.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    table = pd.read_csv(run_dir / "table.csv")
    assert table["Top-1"].tolist()[:2] == ["32.0 (2.0)", "22.0 (2.0)"]
    assert table["top1_mean"].iloc[0] == pytest.approx(0.32)
    assert table["best_top1"].tolist() == [False, False, True, False, False, True, False, False]
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "<b>26.0 (1.0)</b>" in page
    assert "VGG16: weights &#x27;none&#x27; (random initialisation)" in page


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
