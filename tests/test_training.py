"""Trainers (probe determinism, se-head, a two-step fine-tune of a tiny model) and train_cell / train end to end on a
tiny workspace of random-colour images with monkeypatched face crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError, WorkspaceError
from phenosynth.models import backbones as B
from phenosynth.models.trainers import TRAINERS, FineTuneClassifier, ProbeClassifier, SEHeadClassifier
from phenosynth.training import RESULT_COLUMNS, TrainConfig, train, train_cell
from tests._workspaces import write_faces_parquet

TINY = "test-tiny"


def _tiny(spec: B.BackboneSpec, path: Path | None) -> B.TorchBackbone:
    """A seeded 2-layer CNN at 32x32: the diffusers-style dummy backbone."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return B.TorchBackbone(spec, net)


@pytest.fixture(autouse=True)
def _tiny_backbone():
    """The tiny backbone exists for this module's tests only (other modules iterate over the registry)."""
    with B.registered_backbone(B.BackboneSpec(name=TINY, embed_dim=8, native_input_size=32), _tiny):
        yield


def _blobs(n_per_class: int = 15, n_classes: int = 4, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, (n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centers[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32)
    return X, y


# --- trainers on arrays ---------------------------------------------------------------------------------------------


def test_trainer_registry():
    assert TRAINERS.names() == ["finetune", "gallery", "probe", "se-head"]


def test_probe_is_bit_identical_on_rerun_and_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    a = ProbeClassifier(C=0.5).fit(X, y, n_classes=6)
    b = ProbeClassifier(C=0.5).fit(X, y, n_classes=6)
    pa, pb = a.predict_proba(X), b.predict_proba(X)
    assert np.array_equal(pa, pb)
    assert pa.shape == (60, 6) and np.allclose(pa.sum(1), 1, atol=1e-5)
    assert (pa[:, 4:] == 0).all()  # classes never seen in training get no probability
    ref = LogisticRegression(C=0.5, max_iter=1000, tol=1e-8).fit(StandardScaler().fit_transform(X), y)
    sk = ref.predict_proba(StandardScaler().fit_transform(X))
    np.testing.assert_allclose(pa[:, :4], sk, atol=2e-3)


def test_probe_in_row_space_when_features_outnumber_images():
    X, y = _blobs(n_per_class=5, d=200)  # n=20 << d=200: solved in the 20-d row space
    clf = ProbeClassifier(C=1.0).fit(X, y)
    assert clf.coef_.shape == (4, 200)
    assert (clf.predict(X) == y).mean() == 1.0


def test_se_head_trains_keeps_best_validation_epoch_and_is_deterministic():
    X, y = _blobs()
    Xv, yv = _blobs(n_per_class=5, seed=1)
    a = SEHeadClassifier(epochs=5, lr=1e-2, random_state=3).fit(X, y, n_classes=4, X_val=Xv, y_val=yv)
    b = SEHeadClassifier(epochs=5, lr=1e-2, random_state=3).fit(X, y, n_classes=4, X_val=Xv, y_val=yv)
    assert np.isfinite(a.loss_curve_).all() and len(a.val_curve_) == 5
    assert np.array_equal(a.predict_proba(Xv), b.predict_proba(Xv))
    best = max(a.val_curve_)
    assert (a.predict(Xv) == yv).mean() == pytest.approx(best)
    assert a.model_.gate[0].out_features == 20 // 16


def _crop_files(tmp_path: Path, n: int, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 30, 30], [30, 30, 220]])
    y = np.arange(n) % 2
    paths = []
    for i in range(n):
        img = np.clip(colours[y[i]] + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        p = tmp_path / f"c{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths, y


def test_finetune_tiny_model_two_steps_on_cpu(tmp_path):
    paths, y = _crop_files(tmp_path, 8)
    clf = FineTuneClassifier(backbone=TINY, weights="none", preprocessing="native", batch_size=4, epochs=3,
                             max_steps=2, lr=1e-3, device="cpu", random_state=0)
    clf.fit(paths, y, n_classes=3, X_val=paths[:4], y_val=y[:4])
    assert len(clf.loss_curve_) == 2 and np.isfinite(clf.loss_curve_).all()
    proba = clf.predict_proba(paths)
    assert proba.shape == (8, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    again = FineTuneClassifier(backbone=TINY, weights="none", preprocessing="native", batch_size=4, epochs=3,
                               max_steps=2, lr=1e-3, device="cpu", random_state=0).fit(
        paths, y, n_classes=3, X_val=paths[:4], y_val=y[:4])
    assert np.array_equal(proba, again.predict_proba(paths))


# --- end to end on a tiny workspace ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_ws(tmp_path, monkeypatch, make_colour_workspace):
    ws, paths = make_colour_workspace(tmp_path)
    m = ws.load_manifest()
    no_face = sorted(m.loc[(m["source"] == "real") & (m["split"] == "train"), "image_id"])[0]

    def fake_crops(ws_, image_ids, size=224, on_progress=None, **kw):
        return {i: paths[i] for i in image_ids if i != no_face}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)
    return ws, paths, no_face


def test_train_cell_real_regime_row(tiny_ws):
    ws, paths, no_face = tiny_ws
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="real", folds=3, seeds=[0])
    row = train_cell(ws, cfg, fold=1, seed=0)
    assert set(RESULT_COLUMNS) <= set(row)
    assert row["n_classes"] == 4 and row["n_test"] + row["n_train"] + row["n_val"] + row["n_skipped"] == 32
    assert row["n_skipped"] == 1  # the image without a face, with its reason
    assert row["top1"] <= row["top5"] <= row["top10"] <= row["top30"] == 1.0
    assert row["top1"] >= 0.75  # colours are easy
    assert json.loads(row["hparams"])["C"] in (0.1, 1.0, 10.0)
    again = train_cell(ws, cfg, fold=1, seed=0)
    assert {k: v for k, v in again.items() if k != "fit_seconds"} == {k: v for k, v in row.items() if k != "fit_seconds"}


@pytest.mark.parametrize("regime,validate_on", [("synthetic", "real"), ("mixed", "real"), ("mixed", "pool")])
def test_train_cell_synthetic_regimes(tiny_ws, regime, validate_on):
    ws, _, _ = tiny_ws
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime=regime, n_synthetic=8,
                      selection="random", validate_on=validate_on, folds=3, hparams={"C": 1.0})
    row = train_cell(ws, cfg, fold=0, seed=0)
    assert row["regime"] == regime and row["n_synthetic_requested"] == 8 and row["selection"] == "random"
    # n_synthetic is what the model trained on: with validate_on pool, the fold's share of the 8 validates instead
    assert row["n_synthetic"] == 8 if validate_on == "real" else 0 < row["n_synthetic"] < 8
    # 24 real training images (8 in fold 0) + 8 selected synthetic; one real image has no face
    if regime == "synthetic":
        assert row["n_train"] == 8 and row["n_val"] + row["n_skipped"] == 8
    else:
        assert row["n_train"] + row["n_val"] + row["n_skipped"] == 32
        assert row["n_val"] + row["n_skipped"] > (8 if validate_on == "pool" else 7)
    assert row["top1"] == 1.0  # all 8 test images right: each class has its own colour


def test_train_writes_results_and_refuses_to_overwrite(tiny_ws):
    ws, _, _ = tiny_ws
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", folds=3, seeds=[0, 1],
                      hparams={"C": [0.1, 1.0]})
    seen = []
    df = train(ws, cfg, "r1", on_progress=lambda d, t: seen.append((d, t)))
    assert len(df) == 6 and sorted(df["fold"].unique()) == [0, 1, 2]
    out = pd.read_csv(ws.runs_dir / "r1" / "results.csv")
    assert list(out.columns[:12]) == ["backbone", "regime", "n_synthetic", "fold", "seed", "top1", "top5", "top10",
                                      "top30", "macro_f1", "n_train", "n_test"]
    assert (out["n_test"] == out["n_test"].iloc[0]).all()  # every fold on the same test set
    skipped = pd.read_csv(ws.runs_dir / "r1" / "skipped.csv")
    assert len(skipped) == 1 and "no usable face" in skipped["reason"].iloc[0]
    assert (ws.runs_dir / "r1" / "config.yaml").exists()
    assert "fit_seconds" not in out.columns and "fit_seconds" in pd.read_csv(ws.runs_dir / "r1" / "timings.csv")
    assert seen[-1] == (6, 6)
    with pytest.raises(WorkspaceError, match="fresh --name"):
        train(ws, cfg, "r1")
    df2 = train(ws, cfg, "r2")  # features cached: identical numbers, byte for byte
    pd.testing.assert_frame_equal(df.drop(columns="fit_seconds"), df2.drop(columns="fit_seconds"))
    assert (ws.runs_dir / "r1" / "results.csv").read_bytes() == (ws.runs_dir / "r2" / "results.csv").read_bytes()


def test_se_head_and_finetune_modes_through_train_cell(tiny_ws):
    ws, _, _ = tiny_ws
    for mode, hp in (("se-head", {"epochs": 2}), ("finetune", {"epochs": 1, "batch_size": 8, "lr": 1e-3})):
        cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", mode=mode, folds=3, hparams=hp)
        row = train_cell(ws, cfg, fold=2, seed=0)
        assert row["mode"] == mode and row["n_test"] == 8
        # 2 and 4 of the 8 test images right: two epochs of a random-initialised tiny CNN, fixed seed
        assert row["top1"] == {"se-head": 0.25, "finetune": 0.5}[mode]


def test_config_errors_are_user_errors(tiny_ws):
    ws, _, _ = tiny_ws
    with pytest.raises(PhenosynthError, match="real, synthetic, mixed"):
        TrainConfig(regime="synth")
    with pytest.raises(PhenosynthError, match="--folds 3"):
        train(ws, TrainConfig(backbone=TINY, weights="none", folds=5), "x")


def test_cli_train_prints_mean_sd_table(tiny_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _, _ = tiny_ws
    res = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none",
                                   "--preprocessing", "native", "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "┃        top1 ┃        top5 ┃       top10 ┃       top30 ┃    macro_f1 ┃" in res.output
    assert "│ 100.0 (0.0) │ 100.0 (0.0) │ 100.0 (0.0) │ 100.0 (0.0) │ 100.0 (0.0) │" in res.output  # mean (SD), %
    assert "3 model(s) on 15 training images (mean), 8 test images, 4 classes; 1 image(s) skipped per fold" in " ".join(
        res.output.split())
    assert (ws.runs_dir / f"{TINY}-real-probe-1" / "results.csv").exists()
    res2 = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", "nope", "--folds", "3"])
    assert res2.exit_code == 2 and "Unknown backbone" in res2.output


def test_synthetic_regime_without_synthetic_images_says_what_to_run(tmp_path, monkeypatch, make_colour_workspace):
    ws, paths = make_colour_workspace(tmp_path, synthetic_per_class=0)
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    cfg = TrainConfig(backbone=TINY, weights="none", regime="mixed", selection="random", folds=3)
    with pytest.raises(PhenosynthError, match="phenosynth generate"):
        train(ws, cfg, "m1")
    assert not (ws.runs_dir / "m1").exists()  # a failed start leaves no run folder behind


def test_synthetic_children_of_the_validation_fold_never_train_that_fold(tiny_ws):
    from phenosynth.training.cell import cell_sets

    ws, _, _ = tiny_ws
    m = ws.load_manifest()
    fold0 = m.loc[(m["source"] == "real") & (m["fold"] == 0), "image_id"].tolist()
    syn_idx = m.index[m["source"] == "synthetic"]
    for k, i in enumerate(syn_idx):  # every other synthetic image is a child of a fold-0 photo
        m.at[i, "parents"] = [fold0[k % len(fold0)]] if k % 2 == 0 else []
    ws.save_manifest(m)
    children = set(m.loc[syn_idx[::2], "image_id"])
    cfg = TrainConfig(backbone=TINY, weights="none", regime="synthetic", selection="random", folds=3)  # n: all
    _, sets0, _ = cell_sets(ws, ws.load_manifest(), cfg, fold=0, seed=0)
    assert sets0["train"] and not children & set(sets0["train"])
    _, sets1, _ = cell_sets(ws, ws.load_manifest(), cfg, fold=1, seed=0)
    assert children <= set(sets1["train"])  # other folds may use them


def test_folds_sharing_a_training_set_reuse_the_fit_with_identical_results(tiny_ws):
    from phenosynth.training.cell import FitCache

    ws, _, _ = tiny_ws
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="synthetic", n_synthetic=8,
                      selection="random", folds=3, hparams={"C": [0.1, 1.0]})
    cache = FitCache()
    first = train_cell(ws, cfg, fold=0, seed=0, fit_cache=cache)
    reused = train_cell(ws, cfg, fold=1, seed=0, fit_cache=cache)  # same synthetic training set, other fold
    assert cache.fits == 1 and len(cache) == 1
    fresh = train_cell(ws, cfg, fold=1, seed=0)  # no cache: fits its own, nothing global to clear
    drop = lambda r: {k: v for k, v in r.items() if k != "fit_seconds"}  # noqa: E731
    assert drop(reused) == drop(fresh) and first["n_train"] == reused["n_train"]
    other_seed = train_cell(ws, cfg, fold=1, seed=1, fit_cache=cache)  # another seed: another fit, not a reuse
    assert cache.fits == 2 and drop(other_seed) == drop(train_cell(ws, cfg, fold=1, seed=1))


def test_train_fits_a_shared_training_set_once_and_selects_once_per_cell(tiny_ws, monkeypatch):
    from phenosynth.models.trainers import TRAINERS
    from phenosynth.synth import selection

    ws, _, _ = tiny_ws
    fits, selections = [], []
    probe = TRAINERS.get("probe")
    real_fit, real_select = probe.fit, selection.select_for_training
    monkeypatch.setattr(probe, "fit", lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k))
    monkeypatch.setattr(selection, "select_for_training",
                        lambda *a, **k: selections.append(k["where"]) or real_select(*a, **k))
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="synthetic", n_synthetic=8,
                      selection="random", folds=3, seeds=[0], hparams={"C": [0.1, 1.0]})
    df = train(ws, cfg, "shared")
    assert sorted(selections) == ["fold 0", "fold 1", "fold 2"]  # one selection per cell
    assert len(fits) == 2  # one grid of 2 C values, fitted once for the 3 folds that train on the same images
    assert df["n_train"].nunique() == 1 and len(df) == 3


def test_train_on_one_class_is_a_user_error(tmp_path, monkeypatch, make_colour_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, paths = make_colour_workspace(tmp_path, n_classes=1)
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", folds=3)
    with pytest.raises(PhenosynthError, match=r"1 class\(es\) with a usable real image \(class0\); a classifier "
                                              "needs at least 2"):
        train(ws, cfg, "one")
    res = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none",
                                   "--preprocessing", "native", "--folds", "3"])
    assert res.exit_code == 2 and "needs at least 2" in res.output and "top1" not in res.output
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())


# --- honest n (issue 9, item 4) --------------------------------------------------------------------------------------


def test_n_above_what_a_fold_has_is_refused_naming_the_count(tiny_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.synth.selection import NotEnoughSyntheticError

    ws, _, _ = tiny_ws  # 16 usable synthetic images, none a child of a validation photo
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="synthetic", n_synthetic=500,
                      selection="random", folds=3)
    with pytest.raises(NotEnoughSyntheticError, match="n = 500 synthetic images asked for, but only 16 are available "
                                                      r"in fold 0, fold 1, fold 2 \(fold 0: 16, fold 1: 16"):
        train(ws, cfg, "big")
    assert not (ws.runs_dir / "big").exists()
    res = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none",
                                   "--preprocessing", "native", "--folds", "3", "--regime", "synthetic",
                                   "--selection", "random", "--n-synthetic", "500"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "only 16 are available" in out and "--allow-fewer" in out


def test_allow_fewer_records_requested_and_actual_n_and_the_report_labels_the_actual(tiny_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.study.report import build_report

    ws, _, _ = tiny_ws
    res = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none",
                                   "--preprocessing", "native", "--folds", "3", "--regime", "synthetic",
                                   "--selection", "random", "--n-synthetic", "500", "--allow-fewer", "--name", "few"])
    assert res.exit_code == 0, res.output
    assert "n=16 (asked 500)" in res.output
    out = pd.read_csv(ws.runs_dir / "few" / "results.csv")
    assert out["n_synthetic"].tolist() == [16, 16, 16] and out["n_synthetic_requested"].tolist() == [500, 500, 500]
    rep = build_report(ws.runs_dir / "few")
    table = (ws.runs_dir / "few" / "table.md").read_text()
    assert rep.summary["setting"].tolist() == ["Syn 16"] and "Syn 16" in table and "500" not in table


def test_default_all_is_one_row_labelled_by_what_each_fold_trained_on(tiny_ws):
    from phenosynth.study.report import build_report

    ws, _, _ = tiny_ws
    m = ws.load_manifest()
    fold0 = m.loc[(m["source"] == "real") & (m["fold"] == 0), "image_id"].tolist()
    syn_idx = m.index[m["source"] == "synthetic"]
    for k, i in enumerate(syn_idx[::2]):  # 8 of the 16 synthetic images are children of fold-0 photos
        m.at[i, "parents"] = [fold0[k % len(fold0)]]
    ws.save_manifest(m)
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="synthetic", selection="random",
                      folds=3, hparams={"C": 1.0})
    df = train(ws, cfg, "all")
    assert df["n_synthetic"].tolist() == [8, 16, 16]  # fold 0 cannot use the children of its validation photos
    out = pd.read_csv(ws.runs_dir / "all" / "results.csv")
    assert out["n_synthetic_requested"].isna().all()  # "all"
    rep = build_report(ws.runs_dir / "all")
    assert rep.summary["setting"].tolist() == ["Syn 8-16"] and rep.summary["runs"].tolist() == [3]


# --- face settings (issue 9, item 7) ---------------------------------------------------------------------------------


def test_train_with_several_face_settings_refuses_to_guess_and_uses_the_chosen_one(tmp_path, monkeypatch,
                                                                                   make_colour_workspace):
    from typer.testing import CliRunner

    from phenosynth.cli import app
    from phenosynth.faces.facepass import FaceSettingsError

    ws, paths = make_colour_workspace(tmp_path)
    ids = ws.load_manifest()["image_id"].astype(str).tolist()
    write_faces_parquet(ws, *[pd.DataFrame({"image_id": ids, "detector": d, "landmarker": lm, "status": "ok"})
                              for d, lm in (("dlib-hog", "dlib68"), ("mtcnn", "mtcnn5"))])
    asked = []

    def fake_crops(ws_, image_ids, size=224, on_progress=None, *, detector=None, landmarker=None):
        asked.append((detector, landmarker))
        return {i: paths[i] for i in image_ids}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)
    cfg = dict(backbone=TINY, weights="none", preprocessing="native", folds=3, hparams={"C": 1.0})
    with pytest.raises(FaceSettingsError, match="--detector dlib-hog --landmarker dlib68; --detector mtcnn "
                                                "--landmarker mtcnn5"):
        train(ws, TrainConfig(**cfg), "guess")
    base = ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none", "--preprocessing", "native",
            "--folds", "3"]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "choose one with --detector and --landmarker" in " ".join(res.output.split())
    assert asked == []  # nothing was cropped with a guessed setting
    res = CliRunner().invoke(app, base + ["--detector", "mtcnn", "--landmarker", "mtcnn5", "--name", "m"])
    assert res.exit_code == 0, res.output
    assert set(asked) == {("mtcnn", "mtcnn5")}
    assert [p.name.endswith("mtcnn+mtcnn5") for p in (ws.cache_dir / "features").iterdir()] == [True]
    assert yaml_config(ws.runs_dir / "m")["detector"] == "mtcnn"


def yaml_config(run_dir):
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _subject_on_both_sides(ws: Workspace) -> list[str]:
    m = ws.load_manifest()
    real = m[m["source"] == "real"]
    i_test, i_train = real.index[real["split"] == "test"][0], real.index[real["split"] == "train"][0]
    m.loc[i_test, "subject_id"] = m.loc[i_train, "subject_id"]
    ws.save_manifest(m)
    return [m.at[i_test, "path"], m.at[i_train, "path"]]


def _usable_child_of_a_test_photo(ws: Workspace) -> list[str]:
    m = ws.load_manifest()
    test_photo = m.loc[(m["source"] == "real") & (m["split"] == "test"), "image_id"].iloc[0]
    i = m.index[m["source"] == "synthetic"][0]
    m.at[i, "parents"] = [test_photo]  # a hand edit: usable, yet warped from a test photo
    ws.save_manifest(m)
    return [m.at[i, "path"]]


def _run_fit_on_a_test_photo(ws: Workspace) -> list[str]:
    m = ws.load_manifest()
    test_photo = m.loc[(m["source"] == "real") & (m["split"] == "test"), "image_id"].iloc[0]
    syn = m.index[m["source"] == "synthetic"][:3]
    m.loc[syn, "params"] = json.dumps({"run": "r1"})
    ws.save_manifest(m)
    (ws.synthetic_dir / "r1").mkdir(parents=True)
    (ws.synthetic_dir / "r1" / "run.json").write_text(json.dumps({"run": "r1", "training_images": [test_photo]}))
    return m.loc[syn, "path"].tolist()


@pytest.mark.parametrize("plant", [_subject_on_both_sides, _usable_child_of_a_test_photo, _run_fit_on_a_test_photo])
def test_train_refuses_a_workspace_whose_split_leaks_naming_the_images(tiny_ws, plant):
    from phenosynth.errors import LeakageError

    ws, _, _ = tiny_ws
    named = plant(ws)
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="mixed", selection="random",
                      folds=3, seeds=[0], hparams={"C": 1.0})
    with pytest.raises(LeakageError) as err:
        train(ws, cfg, "leaky")
    msg = str(err.value)
    assert all(p in msg for p in named)
    assert f"phenosynth split -w {ws.root} --test-size T --folds K --seed S, with the options you split with" in msg
    assert not (ws.runs_dir / "leaky").exists()
    with pytest.raises(LeakageError):
        train_cell(ws, cfg, fold=0, seed=0)


# --- the mixed regime's synthetic weight ----------------------------------------------------------------------------


def test_synthetic_sample_weights_give_each_class_w_times_its_real_weight():
    from phenosynth.training.cell import synthetic_sample_weights

    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    syn = np.array([0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], bool)  # class 2: no real training photo
    w = synthetic_sample_weights(y, syn, 0.5)
    assert (w[~syn] == 1.0).all()
    totals = {c: float(w[syn & (y == c)].sum()) for c in (0, 1, 2)}
    # w x real photos of the class (2 and 1); class 2 gets w x the mean real count 1.5
    assert totals == pytest.approx({0: 1.0, 1: 0.5, 2: 0.75})
    assert w[2] == pytest.approx(1 / 3) and w[6] == pytest.approx(0.25)
    assert synthetic_sample_weights(y, syn, None) is None  # concatenation: no weights at all


def _spy_probe_fits(monkeypatch) -> list:
    seen = []
    real_fit = ProbeClassifier.fit

    def fit(self, X, y, **kw):
        seen.append((self.C, np.asarray(y).copy(), kw.get("sample_weight")))
        return real_fit(self, X, y, **kw)

    monkeypatch.setattr(ProbeClassifier, "fit", fit)
    return seen


def test_mixed_cell_weighs_its_synthetic_images_and_records_the_chosen_weight(tiny_ws, monkeypatch):
    ws, _, _ = tiny_ws
    seen = _spy_probe_fits(monkeypatch)
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="mixed", n_synthetic=8,
                      selection="random", folds=3, hparams={"C": 1.0}, synthetic_weight=0.5)
    row = train_cell(ws, cfg, fold=0, seed=0)
    assert json.loads(row["hparams"]) == {"C": 1.0, "synthetic_weight": 0.5}
    assert len(seen) == 1
    _, y, w = seen[0]
    syn = np.arange(len(y)) >= len(y) - 8  # real training photos first, then the 8 synthetic images
    assert (w[~syn] == 1.0).all() and row["n_synthetic"] == 8
    for c in np.unique(y[syn]):  # each class's synthetic images weigh half its real training photos together
        assert w[syn & (y == c)].sum() == pytest.approx(0.5 * (~syn & (y == c)).sum())
    assert w[syn].sum() == pytest.approx(0.5 * (~syn).sum())


def test_a_list_of_synthetic_weights_is_a_grid_axis_and_none_is_concatenation(tiny_ws, monkeypatch):
    ws, _, _ = tiny_ws
    seen = _spy_probe_fits(monkeypatch)
    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="mixed", n_synthetic=8,
                      selection="random", folds=3, hparams={"C": [0.1, 1.0]}, synthetic_weight=["none", 2, 0.25])
    assert cfg.synthetic_weight == [None, 2.0, 0.25]
    row = train_cell(ws, cfg, fold=1, seed=0)
    assert len(seen) == 6  # 2 C x 3 weights, each fitted
    assert [s[2] is None for s in seen] == [True, False, False] * 2
    assert {s[2][-1] for s in seen if s[2] is not None} != {1.0}
    chosen = json.loads(row["hparams"])
    # every image right on validation at the first grid point (C 0.1, concatenation): first best wins
    assert chosen == {"C": 0.1, "synthetic_weight": None} and row["top1"] == 1.0
    plain = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime="mixed", n_synthetic=8,
                        selection="random", folds=3, hparams={"C": [0.1, 1.0]})
    seen.clear()
    row_plain = train_cell(ws, plain, fold=1, seed=0)
    assert [s[2] for s in seen] == [None, None]  # the default: no sample weights, exactly as before the option
    assert row_plain["top1"] == row["top1"] and json.loads(row_plain["hparams"]) == {"C": 0.1}


def test_synthetic_weight_errors_name_the_problem():
    with pytest.raises(PhenosynthError, match="regime 'real' has no real and synthetic images to balance"):
        TrainConfig(regime="real", synthetic_weight=1.0)
    with pytest.raises(PhenosynthError, match="does not apply to mode gallery"):
        TrainConfig(regime="mixed", mode="gallery", synthetic_weight=1.0)
    with pytest.raises(PhenosynthError, match="positive and finite, not -1"):
        TrainConfig(regime="mixed", synthetic_weight=[1.0, -1])
    with pytest.raises(PhenosynthError, match="positive number or none"):
        TrainConfig(regime="mixed", synthetic_weight="half")
    with pytest.raises(PhenosynthError, match="repeats a value"):
        TrainConfig(regime="mixed", synthetic_weight=[1, 1.0])


def test_cli_train_synthetic_weight(tiny_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _, _ = tiny_ws
    base = ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none", "--preprocessing", "native",
            "--folds", "3", "--selection", "random", "--n-synthetic", "8"]
    res = CliRunner().invoke(app, base + ["--regime", "mixed", "--synthetic-weight", "1,0.5", "--name", "w"])
    assert res.exit_code == 0, res.output
    assert "synthetic weight 1,0.5" in res.output
    out = pd.read_csv(ws.runs_dir / "w" / "results.csv")
    assert {json.loads(h)["synthetic_weight"] for h in out["hparams"]} <= {1.0, 0.5} and len(out) == 3
    bad = CliRunner().invoke(app, base + ["--regime", "synthetic", "--synthetic-weight", "1"])
    assert bad.exit_code != 0 and "Use --regime mixed" in " ".join(bad.output.split())
