"""`run_demo` end to end on a small demo dataset (3 conditions, 4 ORL people each) and a small study: every stage runs
once, in order, with the results of a fixed seed."""

from __future__ import annotations

import pandas as pd
import pytest

from phenosynth.data.workspace import Workspace
from phenosynth.demo.dataset import CONDITIONS
from phenosynth.demo.run import STAGES, run_demo
from phenosynth.study.spec import StudySpec

SMALL = {k: CONDITIONS[k] for k in ("sim01", "sim05", "sim09")}
SPEC = {"backbones": ["shape68"], "regimes": {"real": True, "synthetic": [4]}, "folds": 2,
        "selection": "top-per-class", "representation": "shape68", "trainer": {"mode": "probe", "hparams": {"C": [1.0]}},
        "generator": {"name": "shape-warp", "per_class": 3, "seed": 0}}


@pytest.mark.slow  # about 30 CPU seconds: eight stages, one after another in this process
def test_a_small_demo_runs_every_stage_in_order(tmp_path):
    spec = StudySpec.model_validate(SPEC)
    progress: list[tuple[int, int]] = []
    res = run_demo(tmp_path / "demo", spec=spec, executor="serial", on_progress=lambda d, t: progress.append((d, t)),
                   dataset_options={"n_subjects": 4, "conditions": SMALL})
    out = (tmp_path / "demo").resolve()
    assert (res.out, res.workspace, res.run_dir) == (out, out / "workspace", out / "workspace" / "runs" / "demo")
    assert progress == [(i, 8) for i in range(1, 9)] and list(res.timings) == list(STAGES)
    ws = Workspace.open(res.workspace)
    m = ws.load_manifest()
    real, synthetic = m[m["source"] == "real"], m[m["source"] == "synthetic"]
    assert real["label"].value_counts().sort_index().to_dict() == {"sim01": 7, "sim05": 7, "sim09": 8}
    assert real.groupby("label")["subject_id"].nunique().eq(4).all()  # four different people per condition
    assert real.groupby("label")["split"].apply(lambda s: (s == "test").sum()).to_dict() == {
        "sim01": 2, "sim05": 2, "sim09": 2}
    donors = pd.read_csv(out / "dataset" / "donors.csv")  # written with the dataset, not ingested
    assert len(donors) == 48 and not set(donors["subject_id"]) & set(m["subject_id"].dropna())
    assert synthetic["label"].value_counts().sort_index().to_dict() == {"sim01": 3, "sim05": 3, "sim09": 3}
    assert set(synthetic["generator"]) == {"shape-warp"}
    assert set(pd.read_parquet(ws.root / "ranking.parquet")["image_id"]) == set(synthetic["image_id"])
    results = pd.read_csv(res.run_dir / "results.csv")
    assert results[["regime", "n_synthetic", "fold"]].values.tolist() == [
        ["real", 0, 0], ["real", 0, 1], ["synthetic", 4, 0], ["synthetic", 4, 1]]
    assert results["top1"].tolist() == pytest.approx([4 / 6, 2 / 6, 4 / 6, 4 / 6])
    assert results["n_test"].tolist() == [6] * 4
    assert results["n_train"].tolist() == [8, 8, 4, 4]
    assert (res.run_dir / "report.html").stat().st_size > 0
