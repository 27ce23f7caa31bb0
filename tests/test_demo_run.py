"""`run_demo` end to end on a small demo dataset (3 conditions, 4 ORL people each) and a small study: every stage runs
once, in order, with the results of a fixed seed; the donors are ingested and lend every synthetic image its pixels,
and the audit of the generator run is in the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from phenosynth.audit.gate import gate_reasons
from phenosynth.data.workspace import Workspace
from phenosynth.demo.dataset import CONDITIONS
from phenosynth.demo.run import STAGES, run_demo
from phenosynth.study.spec import StudySpec

SMALL = {k: CONDITIONS[k] for k in ("sim01", "sim05", "sim09")}
SPEC = {"backbones": ["shape68"], "regimes": {"real": True, "synthetic": [4]}, "folds": 2,
        "selection": "top-per-class", "representation": "shape68", "trainer": {"mode": "probe", "hparams": {"C": [1.0]}},
        "generator": {"name": "phenotype-transfer", "per_class": 6, "seed": 0, "options": {"strength": 1.5}}}


@pytest.mark.slow  # about 60 CPU seconds: ten stages, one after another in this process
def test_a_small_demo_runs_every_stage_in_order(tmp_path):
    spec = StudySpec.model_validate(SPEC)
    progress: list[tuple[int, int]] = []
    res = run_demo(tmp_path / "demo", spec=spec, executor="serial", on_progress=lambda d, t: progress.append((d, t)),
                   dataset_options={"n_subjects": 4, "conditions": SMALL})
    out = (tmp_path / "demo").resolve()
    assert (res.out, res.workspace, res.run_dir) == (out, out / "workspace", out / "workspace" / "runs" / "demo")
    assert progress == [(i, 10) for i in range(1, 11)] and list(res.timings) == list(STAGES)
    ws = Workspace.open(res.workspace)
    m = ws.load_manifest()
    real, synthetic = m[m["source"] == "real"], m[m["source"] == "synthetic"]
    assert real["label"].value_counts().sort_index().to_dict() == {"sim01": 6, "sim05": 6, "sim09": 7}
    assert real.groupby("label")["subject_id"].nunique().eq(4).all()  # four different people per condition
    assert real.groupby("label")["split"].apply(lambda s: (s == "test").sum()).to_dict() == {
        "sim01": 1, "sim05": 2, "sim09": 2}
    donors = m[m["source"] == "donor"]  # the dataset's donor pool, ingested as donor faces
    assert len(donors) == 48 and donors["subject_id"].nunique() == 8
    assert donors["label"].isna().all() and donors["split"].isna().all() and donors["fold"].isna().all()
    assert not set(donors["subject_id"]) & set(real["subject_id"])
    assert synthetic["label"].value_counts().sort_index().to_dict() == {"sim01": 6, "sim05": 6, "sim09": 6}
    assert set(synthetic["generator"]) == {"phenotype-transfer"}
    parents = {p for ps in synthetic["parents"] for p in ps}
    assert parents and parents <= set(donors["image_id"])  # every synthetic image's pixels are a donor's
    run_json = json.loads((ws.root / "synthetic" / "phenotype-transfer-seed0" / "run.json").read_text())
    assert run_json["settings"]["strength"] == 1.5  # the spec's generator options reach the generator
    summary = json.loads((ws.root / "audit" / "phenotype-transfer-seed0" / "summary.json").read_text())
    assert summary["settings"]["embedder"] == "dlib_resnet128" and summary["run"]["n_images"] == 18
    # the privacy gate keeps the flagged images out of every training set (7 of the 18 are shareable here: the few
    # real photos leave dlib's documented threshold, 0.6, in force, which the rest fall under)
    flagged = pd.read_parquet(ws.root / "audit" / "phenotype-transfer-seed0" / "audit.parquet")
    assert int(flagged["shareable"].sum()) == summary["run"]["n_shareable"] == 7
    assert len(gate_reasons(ws, m)) == 11
    assert res.audit.run == "phenotype-transfer-seed0" and res.audit.text.startswith("run phenotype-transfer-seed0 ")
    assert set(pd.read_parquet(ws.root / "ranking.parquet")["image_id"]) == set(synthetic["image_id"])
    results = pd.read_csv(res.run_dir / "results.csv")
    assert results[["regime", "n_synthetic", "fold"]].values.tolist() == [
        ["real", 0, 0], ["real", 0, 1], ["synthetic", 4, 0], ["synthetic", 4, 1]]
    assert results["top1"].tolist() == pytest.approx([2 / 5] * 4)
    assert results["n_test"].tolist() == [5] * 4
    assert results["n_train"].tolist() == [7, 7, 4, 4]
    html = (res.run_dir / "report.html").read_text()
    audit_section = html[html.index("<h2>Privacy audit</h2>"):html.index("<h2>Configuration</h2>")]
    assert "<code>phenotype-transfer-seed0</code> (phenotype-transfer; dlib_resnet128)" in audit_section
    assert "not audited" not in audit_section
    assert f"{100 * summary['run']['matched_share']:.1f} %" in audit_section


def test_the_demo_command_ends_with_the_audit_verdict(tmp_path, monkeypatch):
    """`phenosynth demo` prints the audit's verdict (from run_demo's result) before its closing lines."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import phenosynth.demo.run as demo_run
    from phenosynth.audit.verdict import audit_verdict
    from phenosynth.cli import app

    verdict = audit_verdict({"run": {"run": "phenotype-transfer-seed0", "matched_share": 0.12, "stranger_rate": 0.05,
                                     "membership_auc": 0.58}})
    result = demo_run.DemoResult(
        out=tmp_path, workspace=tmp_path / "workspace", run_dir=tmp_path / "run", audit=verdict,
        study=SimpleNamespace(prepare_seconds=1.0, n_cells=2, seconds=3.0), timings={"dataset": 1.0}, seconds=4.0)
    monkeypatch.setattr(demo_run, "run_demo", lambda *a, **k: result)
    out = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert ("Privacy audit: run phenotype-transfer-seed0 FAILS the audit: 12.0 % identity-matched (stranger rate "
            "5.0 % + 2 points exceeded), membership AUC 0.58 (<= 0.6).") in out.output
    assert out.output.index("Privacy audit:") < out.output.index("Demo finished in 4 s.")
