"""The study runner: grid -> cells stored atomically, results.csv in grid order, resume after kill -9, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from phenosynth.data.workspace import Workspace
from phenosynth.study.grid import expand_grid
from phenosynth.study.runner import StudyError, run_study
from phenosynth.study.spec import SpecError, StudySpec

SPEC = {
    "backbones": ["shape68", {"name": "mobilenet_v2", "weights": "none"}],
    "regimes": {"real": True, "synthetic": [20, 40], "mixed": [40]},
    "folds": 3,
    "seeds": [0],
}


@pytest.fixture()
def ws(tmp_path):
    return Workspace.open(tmp_path / "ws", create=True)


def test_serial_run_writes_cells_results_config_and_report(ws, fakes):
    res = run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score")
    run = ws.runs_dir / "r1"
    assert res.n_cells == 2 * 4 * 3 == len(list((run / "cells").glob("*.json")))
    df = pd.read_csv(run / "results.csv")
    assert list(df.columns[:12]) == ["backbone", "regime", "n_synthetic", "fold", "seed", "top1", "top5", "top10",
                                     "top30", "macro_f1", "n_train", "n_test"]
    assert [tuple(r) for r in df[["backbone", "regime", "n_synthetic", "fold"]].head(4).itertuples(index=False)] == [
        ("shape68", "real", 0, 0), ("shape68", "real", 0, 1), ("shape68", "real", 0, 2), ("shape68", "synthetic", 20, 0)]
    assert df["weights"].tolist()[-1] == "none"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["spec"]["regimes"]["synthetic"] == [20, 40]
    assert config["spec"]["trainer"]["mode"] == "probe"  # defaults resolved
    assert "numpy" in config["packages"] and "python" in config["packages"]
    assert config["manifest"]["digest"]
    for f in ("table.md", "table.csv", "table.tex", "figure_top1.png", "figure_top30.png", "report.html"):
        assert (run / f).stat().st_size > 0, f


def test_refuses_to_overwrite_without_resume(ws, fakes):
    run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score", build_report=False)
    with pytest.raises(StudyError, match="already exists.*--resume"):
        run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score")


def test_resume_with_a_different_spec_is_refused(ws, fakes):
    run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score", build_report=False)
    changed = {**SPEC, "folds": 4}
    with pytest.raises(StudyError, match="spec differs in folds"):
        run_study(ws, changed, "r1", resume=True, executor="serial", cell_fn="fake_cells:score")


def test_resume_after_kill_9_gives_identical_results(ws, fakes, tmp_path):
    run_study(ws, SPEC, "straight", executor="serial", cell_fn="fake_cells:score", build_report=False)
    script = textwrap.dedent(f"""
        from phenosynth.study.runner import run_study
        run_study({str(ws.root)!r}, {SPEC!r}, "killed", executor="serial", cell_fn="fake_cells:crash_after")
    """)
    env = {**os.environ, "FAKE_RUN_DIR": str(ws.runs_dir / "killed"), "CRASH_AFTER": "5"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # killed by SIGKILL part-way
    cells = ws.runs_dir / "killed" / "cells"
    assert len(list(cells.glob("*.json"))) == 5
    assert not list(cells.glob(".*.tmp"))  # no half-written cell files
    assert not (ws.runs_dir / "killed" / "results.csv").exists()
    res = run_study(ws, SPEC, "killed", resume=True, executor="serial", cell_fn="fake_cells:score",
                    build_report=False)
    assert (res.n_resumed, res.n_ran) == (5, 24 - 5)
    assert (ws.runs_dir / "killed" / "results.csv").read_bytes() == (ws.runs_dir / "straight" / "results.csv").read_bytes()


def test_failed_cells_are_reported_kept_apart_and_retried_on_resume(ws, fakes, monkeypatch):
    with pytest.raises(StudyError, match=r"6 of 24 cells failed .*mixed is broken.*--resume"):
        run_study(ws, SPEC, "f", executor="serial", cell_fn="fake_cells:fail_on_mixed")
    cells = ws.runs_dir / "f" / "cells"
    assert len(list(cells.glob("*.error.txt"))) == 6
    assert len(pd.read_csv(ws.runs_dir / "f" / "results.csv")) == 18
    monkeypatch.setenv("FAKE_FIXED", "1")
    res = run_study(ws, SPEC, "f", resume=True, executor="serial", cell_fn="fake_cells:fail_on_mixed",
                    build_report=False)
    assert (res.n_resumed, res.n_ran) == (18, 6)
    assert not list(cells.glob("*.error.txt"))
    assert len(pd.read_csv(ws.runs_dir / "f" / "results.csv")) == 24


def test_local_executor_uses_two_processes_and_matches_serial(ws, fakes, tmp_path, monkeypatch, pool_starts):
    spec = {**SPEC, "backbones": ["shape68"], "folds": 2}
    monkeypatch.setenv("FAKE_SYNC_DIR", str(tmp_path / "sync"))  # with_pid waits there until 2 workers check in
    monkeypatch.setenv("FAKE_WORKERS", "2")
    run_study(ws, spec, "serial", executor="serial", cell_fn="fake_cells:score", build_report=False)
    run_study(ws, spec, "local", executor="local", workers=2, cell_fn="fake_cells:with_pid", build_report=False)
    serial = pd.read_csv(ws.runs_dir / "serial" / "results.csv")
    local = pd.read_csv(ws.runs_dir / "local" / "results.csv")
    assert local["pid"].nunique() == 2 and os.getpid() not in set(local["pid"])
    assert pool_starts == [2]  # through the one pool helper (phenosynth.parallel)
    pd.testing.assert_frame_equal(serial.drop(columns="pid"), local.drop(columns="pid"))


def test_unknown_executor_and_bad_run_name(ws, fakes):
    from phenosynth.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"^Unknown executor 'rey'\. Did you mean 'ray'\? Valid: local, ray, serial\.$"):
        run_study(ws, SPEC, "x", executor="rey", cell_fn="fake_cells:score")
    with pytest.raises(StudyError, match="not a plain folder name"):
        run_study(ws, SPEC, "../x", executor="serial", cell_fn="fake_cells:score")


def test_n_larger_than_available_is_checked_against_the_workspace(ws, fakes):
    from phenosynth.data.manifest import conform
    from phenosynth.study.runner import prepare_study
    from phenosynth.synth.selection import NotEnoughSyntheticError

    rows = [{"image_id": f"r{i}", "path": f"r{i}.png", "label": f"c{i % 2}", "source": "real", "split": "train",
             "fold": i % 3}
            for i in range(4)]
    rows += [{"image_id": f"s{i}", "path": f"s{i}.png", "label": f"c{i % 2}", "source": "synthetic",
              "generator": "shape-warp", "split": "train"} for i in range(30)]
    ws.save_manifest(conform(pd.DataFrame(rows)))
    with pytest.raises(NotEnoughSyntheticError, match="n = 40 synthetic images asked for, but only 30 are available "
                                                      "in fold 0, fold 1, fold 2"):
        prepare_study(ws, StudySpec.model_validate({**SPEC, "features_from": str(ws.root)}))


def test_grid_cells_are_stable():
    cells = expand_grid(StudySpec.model_validate(SPEC))
    assert len(cells) == 24 and len({c.cell_id for c in cells}) == 24
    assert cells[0].cell_id == "shape68__real-0__seed0__fold0"
    assert cells[-1].key == "mobilenet_v2|mixed|40|seed0|fold2"


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_on_a_local_ray_matches_serial(ws, fakes):
    pytest.importorskip("ray")
    spec = {**SPEC, "backbones": ["shape68"], "folds": 2}
    run_study(ws, spec, "serial", executor="serial", cell_fn="fake_cells:score", build_report=False)
    res = run_study(ws, spec, "ray", executor="ray", workers=2, cell_fn="fake_cells:score", build_report=False)
    assert res.n_ran == 8
    assert (ws.runs_dir / "ray" / "results.csv").read_bytes() == (ws.runs_dir / "serial" / "results.csv").read_bytes()


def test_cli_study_with_the_real_trainer_then_resume_and_refusal(tmp_path, make_feature_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws = make_feature_workspace(tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "backbones": ["shape68", "mobilenet_v2"], "regimes": {"real": True, "synthetic": [30, 60], "mixed": [60]},
        "folds": 2, "trainer": {"mode": "probe", "hparams": {"C": [1.0]}},
        "features_from": str(ws.root / "features")}))
    runner = CliRunner()
    out = runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial"])
    assert out.exit_code == 0, out.output
    assert "16 cells (16 trained now, 0 resumed)" in out.output
    df = pd.read_csv(ws.runs_dir / "tiny" / "results.csv")
    assert len(df) == 16 and df["top1"].between(0, 1).all() and (df["top5"] >= df["top1"]).all()
    assert df.loc[df["regime"] == "synthetic", "n_train"].tolist() == [30, 30, 60, 60] * 2
    assert set(df["n_test"]) == {6}
    again = runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial"])
    assert again.exit_code == 2 and "already exists" in again.output
    resumed = runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial", "--resume"])
    assert resumed.exit_code == 0 and "(0 trained now, 16 resumed)" in resumed.output


def test_demo_never_reuses_a_previous_runs_name(ws):
    from phenosynth.demo.run import free_run_name

    assert free_run_name(ws) == "demo"
    (ws.runs_dir / "demo").mkdir(parents=True)
    (ws.runs_dir / "demo-2").mkdir()
    assert free_run_name(ws) == "demo-3"


def test_study_allow_fewer_records_requested_and_actual_n_and_labels_the_actual(tmp_path, make_feature_workspace):
    ws = make_feature_workspace(tmp_path, per_class_syn=5, dims=(("shape68", 12),))  # 30 synthetic images
    spec = {"backbones": ["shape68"], "regimes": {"real": False, "synthetic": [40]}, "folds": 2,
            "trainer": {"mode": "probe", "hparams": {"C": [1.0]}}, "features_from": str(ws.root / "features"),
            "allow_fewer": True}
    res = run_study(ws, spec, "few", executor="serial")
    df = pd.read_csv(res.run_dir / "results.csv")
    assert df["n_synthetic"].tolist() == [30, 30] and df["n_synthetic_requested"].tolist() == [40, 40]
    assert "Syn 30" in (res.run_dir / "table.md").read_text()


def _tiny_spec(ws, **changes):
    spec = {"backbones": ["shape68"], "regimes": {"real": True, "synthetic": [30]}, "folds": 2,
            "trainer": {"mode": "probe", "hparams": {"C": [0.01, 1.0]}}, "features_from": "ws/features"}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize("change, message", [
    ({"regimes": {"real": True, "synthetic": [500]}},
     "n = 500 synthetic images asked for, but only 120 are available"),
    ({"folds": 5}, "asks for folds: 5, but the workspace has 2"),
    ({"selection": "top-per-clas"}, "Unknown selection strategy 'top-per-clas'"),
    ({"generator": "shape-wrap"}, "Unknown generator 'shape-wrap'"),
    ({"features_from": "nowhere"}, "No precomputed features for backbone 'shape68'"),
    ({"backbones": [{"name": "mobilenet_v2", "weights": "missing.pth"}], "features_from": None},
     "missing.pth for mobilenet_v2 does not exist"),
])
def test_a_study_that_cannot_start_leaves_no_run_folder(tmp_path, change, message, make_feature_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws = make_feature_workspace(tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(_tiny_spec(ws, **change)))
    out = CliRunner().invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial"])
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()) and "Traceback" not in out.output
    assert not (ws.runs_dir / "tiny").exists()


def test_the_name_of_a_study_that_failed_to_start_works_after_the_fix(tmp_path, make_feature_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws = make_feature_workspace(tmp_path)
    spec = tmp_path / "tiny.yaml"
    runner = CliRunner()
    spec.write_text(yaml.safe_dump(_tiny_spec(ws, regimes={"real": True, "synthetic": [500]})))
    assert runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial"]).exit_code == 2
    spec.write_text(yaml.safe_dump(_tiny_spec(ws)))  # the cause fixed: n within what the workspace has
    out = runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial"])
    assert out.exit_code == 0, out.output
    assert "4 cells (4 trained now, 0 resumed)" in out.output
    assert len(pd.read_csv(ws.runs_dir / "tiny" / "results.csv")) == 4


def test_a_half_made_run_folder_left_by_older_versions_does_not_block_its_name(tmp_path, make_feature_workspace):
    ws = make_feature_workspace(tmp_path)
    leftover = ws.runs_dir / "tiny"
    (leftover / "cells").mkdir(parents=True)
    (leftover / "config.yaml").write_text("name: tiny\n")  # what a study failing in preparation used to leave
    spec = StudySpec.model_validate(_tiny_spec(ws, features_from=str(ws.root / "features")))
    res = run_study(ws, spec, "tiny", executor="serial", build_report=False)
    assert res.n_ran == 4 and yaml.safe_load((leftover / "config.yaml").read_text())["spec"]["folds"] == 2


def test_a_failure_after_the_folder_exists_removes_the_folder_it_made(ws, fakes, monkeypatch):
    import phenosynth.study.runner as runner_module

    def broken_executor(**_):
        def execute(job, cells):
            raise RuntimeError("the cluster went away")
            yield  # pragma: no cover

        return execute

    monkeypatch.setitem(runner_module.EXECUTORS._entries, "broken", broken_executor)
    with pytest.raises(RuntimeError, match="went away"):
        run_study(ws, SPEC, "r1", executor="broken", cell_fn="fake_cells:score")
    assert not (ws.runs_dir / "r1").exists()
    run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score", build_report=False)


def test_a_rerun_from_the_runs_config_yaml_gives_byte_identical_results(tmp_path, monkeypatch, make_feature_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.study.spec import load_spec

    ws = make_feature_workspace(tmp_path, dims=(("shape68", 3),))  # few dims: accuracies below 100 %
    spec = tmp_path / "specs" / "tiny.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(_tiny_spec(ws, features_from="../ws/features")))  # relative to the spec file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()
    first = runner.invoke(app, ["study", str(spec), "-w", str(ws.root), "--executor", "serial", "--name", "first"])
    assert first.exit_code == 0, first.output
    config = ws.runs_dir / "first" / "config.yaml"
    assert yaml.safe_load(config.read_text())["spec"]["features_from"] == str(ws.root / "features")
    assert load_spec(config) == load_spec(spec)
    again = runner.invoke(app, ["study", str(config), "-w", str(ws.root), "--executor", "serial", "--name", "again"])
    assert again.exit_code == 0, again.output
    results = (ws.runs_dir / "first" / "results.csv").read_bytes()
    assert (ws.runs_dir / "again" / "results.csv").read_bytes() == results
    top1 = pd.read_csv(ws.runs_dir / "first" / "results.csv")["top1"]
    assert len(top1) == 4 and top1.between(0.05, 0.99).all()  # real numbers, not a trivial 100 %


def test_n_beyond_what_the_specs_generator_would_make_fails_before_generating(tmp_path, make_feature_workspace):
    ws = make_feature_workspace(tmp_path, per_class_syn=0)
    before = ws.manifest_path.read_bytes()
    spec = {"backbones": ["shape68"], "regimes": {"synthetic": [500]}, "folds": 2,
            "generator": {"name": "shape-warp", "per_class": 2}}
    with pytest.raises(SpecError, match=r"there will be at most 12 in all, counting the 2 images per class that "
                                        r"the spec's generator would make"):
        run_study(ws, spec, "gen", executor="serial")
    assert ws.manifest_path.read_bytes() == before and not (ws.runs_dir / "gen").exists()


def test_serial_study_shares_fits_within_a_run_and_nothing_across_runs(tmp_path, monkeypatch, make_feature_workspace):
    from phenosynth.models.trainers import TRAINERS

    ws = make_feature_workspace(tmp_path, dims=(("shape68", 3),))
    probe = TRAINERS.get("probe")
    fits = []
    real_fit = probe.fit
    monkeypatch.setattr(probe, "fit", lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k))
    spec = _tiny_spec(ws, features_from=str(ws.root / "features"), regimes={"real": True, "synthetic": [30]})
    run_study(ws, spec, "one", executor="serial", build_report=False)
    first = len(fits)
    # real: 2 folds x 2 C values; synthetic: both folds train on the same 30 images, so one grid of 2 for both
    assert first == 6
    run_study(ws, spec, "two", executor="serial", build_report=False)  # a fresh run fits again: no state left over
    assert len(fits) == 2 * first
    assert (ws.runs_dir / "one" / "results.csv").read_bytes() == (ws.runs_dir / "two" / "results.csv").read_bytes()


def test_a_cell_function_taking_a_cache_gets_one_per_executor_call(ws, fakes, tmp_path):
    (fakes / "cache_cells.py").write_text(textwrap.dedent('''
        from fake_cells import score


        def visits(ws, spec, cell, *, cache):
            cache.visits = getattr(cache, "visits", 0) + 1
            return {**score(ws, spec, cell), "visits": cache.visits}
    '''))
    spec = {**SPEC, "backbones": ["shape68"], "folds": 2}
    for name in ("a", "b"):
        run_study(ws, spec, name, executor="serial", cell_fn="cache_cells:visits", build_report=False)
        assert pd.read_csv(ws.runs_dir / name / "results.csv")["visits"].tolist() == list(range(1, 9))
    run_study(ws, spec, "local", executor="local", workers=2, cell_fn="cache_cells:visits", build_report=False)
    assert pd.read_csv(ws.runs_dir / "local" / "results.csv")["visits"].tolist() == [1, 2] * 4  # one per fold group


def test_resume_after_the_manifest_changed_is_refused_and_keeps_the_run(ws, fakes):
    import re

    from phenosynth.data.manifest import conform

    run_study(ws, SPEC, "r1", executor="serial", cell_fn="fake_cells:score", build_report=False)
    run_dir = ws.runs_dir / "r1"
    results = (run_dir / "results.csv").read_bytes()
    ws.save_manifest(conform(pd.DataFrame([{"image_id": "new", "path": "new.png", "label": "c0", "source": "real"}])))
    message = (f"Cannot resume {run_dir}: the workspace's manifest changed since the run started (images were added, "
               "re-split or excluded), so finished and new cells would not be comparable. Start a new run with another "
               "--name.")
    with pytest.raises(StudyError, match=f"^{re.escape(message)}$"):
        run_study(ws, SPEC, "r1", resume=True, executor="serial", cell_fn="fake_cells:score")
    assert len(list((run_dir / "cells").glob("*.json"))) == 24 and (run_dir / "results.csv").read_bytes() == results
