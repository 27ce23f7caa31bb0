"""GestaltMatcher-style matching (issue 15): the gallery scorer on hand-made embeddings, test-time augmentation
views (they differ, each has its own feature cache, the identity cache key is unchanged), model ensembles, and mode
gallery end to end (train_cell, ``train --mode gallery --tta``, a study spec)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

from phenosynth.errors import PhenosynthError
from phenosynth.evaluate.metrics import topk_accuracies
from phenosynth.models import backbones as B
from phenosynth.models.trainers import GalleryMatcher, condition_distances, l2_normalised
from phenosynth.models.views import MIRROR68, apply_view, apply_view_to_landmarks, tta_views
from phenosynth.training import TrainConfig, train_cell
from phenosynth.training.cell import cell_sets

TINY = "test-tiny-gallery"


# --- the scorer on hand-made embeddings -------------------------------------------------------------------------------


def _unit(*angles_deg: float) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], 1)


def test_first_hit_per_condition_scores_the_nearest_gallery_image():
    # condition 0: one image at 10 deg and one at 170 deg; condition 1: images at 60 and 90 deg
    gallery, gy = _unit(10, 170, 60, 90), np.array([0, 0, 1, 1])
    query = _unit(0)
    m = GalleryMatcher().fit(gallery, gy, n_classes=2)
    expected = [1 - np.cos(np.radians(10)), 1 - np.cos(np.radians(60))]
    np.testing.assert_allclose(m.distances(query)[0], expected, atol=1e-6)
    np.testing.assert_allclose(m.decision_function(query)[0], [-d for d in expected], atol=1e-6)
    np.testing.assert_allclose(m.predict_proba(query)[0], [1 - d / 2 for d in expected], atol=1e-6)
    assert m.predict(query).tolist() == [0]
    # the far image of condition 0 does not matter: only the first hit counts
    far_only = GalleryMatcher().fit(_unit(10, 60, 90), np.array([0, 1, 1]), n_classes=2)
    np.testing.assert_allclose(far_only.distances(query), m.distances(query), atol=1e-6)
    # scale of the query or the gallery does not matter (cosine)
    np.testing.assert_allclose(GalleryMatcher().fit(5 * gallery, gy, n_classes=2).distances(3 * query),
                               m.distances(query), atol=1e-6)


def test_m_nearest_is_the_mean_of_the_m_nearest_and_of_all_when_fewer():
    gallery, gy = _unit(10, 170, 60, 90, 100), np.array([0, 0, 1, 1, 1])
    query = _unit(0)
    d = 1 - np.cos(np.radians([10, 170, 60, 90, 100]))
    m2 = GalleryMatcher(m=2).fit(gallery, gy, n_classes=2).distances(query)[0]
    np.testing.assert_allclose(m2, [(d[0] + d[1]) / 2, (d[2] + d[3]) / 2], atol=1e-6)
    # m=2 turns the ranking round: condition 0's second image is far away
    assert GalleryMatcher(m=1).fit(gallery, gy, n_classes=2).predict(query).tolist() == [0]
    assert GalleryMatcher(m=2).fit(gallery, gy, n_classes=2).predict(query).tolist() == [1]
    m5 = GalleryMatcher(m=5).fit(gallery, gy, n_classes=2).distances(query)[0]
    np.testing.assert_allclose(m5, [d[:2].mean(), d[2:].mean()], atol=1e-6)
    with pytest.raises(ValueError, match="m must be at least 1"):
        GalleryMatcher(m=0).fit(gallery, gy)


def test_ties_and_a_condition_only_in_the_gallery_go_through_the_shared_metrics():
    # conditions 0 and 2 both have an image at exactly the query's angle +-30 deg: a tie; condition 1 is far;
    # condition 3 is in the label space without gallery images (ranks last); condition 2 is "only in the gallery"
    # (no class of the trained label space needed: the scorer's label space is n_classes)
    gallery, gy = _unit(30, 150, -30), np.array([0, 1, 2])
    m = GalleryMatcher().fit(gallery, gy, n_classes=4)
    query = _unit(0, 0)
    s = m.predict_proba(query)
    assert s[0, 0] == s[0, 2] > s[0, 1] > s[0, 3] == 0.0
    assert np.isneginf(m.decision_function(query)[:, 3]).all()
    labels = list(range(4))
    # scikit-learn breaks the tie towards the higher index: truth 2 is a top-1 hit, truth 0 is not, both top-2
    res = topk_accuracies(np.array([0, 2]), s, (1, 2, 3), labels)
    assert res == {"top1": 0.5, "top2": 1.0, "top3": 1.0}
    # a query of the gallery-only condition is matched to it
    assert m.predict(_unit(-31)).tolist() == [2]


def test_condition_distances_on_normalised_rows_is_pure():
    g = l2_normalised(np.array([[1.0, 1.0], [0.0, 2.0]]))
    q = l2_normalised(np.array([[0.0, 3.0]]))
    out = condition_distances(q, g, np.array([1, 0]), 3)
    np.testing.assert_allclose(out[0, :2], [0.0, 1 - np.sqrt(0.5)], atol=1e-6)
    assert np.isinf(out[0, 2])


# --- views ------------------------------------------------------------------------------------------------------------


def test_tta_views_are_every_combination_and_unknown_names_are_refused():
    assert tta_views([]) == ["identity"]
    assert tta_views(["gray"]) == ["identity", "gray"]
    assert tta_views(["gray", "flip"]) == ["identity", "flip", "gray", "flip+gray"]
    with pytest.raises(PhenosynthError, match="Unknown test-time augmentation 'blur'.*flip, gray"):
        tta_views(["flip", "blur"])
    with pytest.raises(PhenosynthError, match="blur"):
        TrainConfig(tta=["blur"])


def test_image_views_flip_and_gray_the_crop():
    img = np.zeros((4, 6, 3), np.uint8)
    img[1, 0] = (200, 10, 30)
    flipped, gray = apply_view(img, "flip"), apply_view(img, "gray")
    assert flipped[1, 5].tolist() == [200, 10, 30] and flipped[1, 0].tolist() == [0, 0, 0]
    luma = round(0.299 * 200 + 0.587 * 10 + 0.114 * 30)
    assert gray[1, 0].tolist() == [luma] * 3
    assert apply_view(img, "flip+gray")[1, 5].tolist() == [luma] * 3
    assert apply_view(img, "identity") is img


def test_landmark_flip_mirrors_and_renumbers_left_and_right():
    assert sorted(MIRROR68.tolist()) == list(range(68)) and (MIRROR68[MIRROR68] == np.arange(68)).all()
    rng = np.random.default_rng(0)
    pts = rng.uniform(10, 90, (2, 68, 2))
    boxes = np.array([[0.0, 0.0, 100.0, 100.0], [5.0, 0.0, 95.0, 100.0]])
    once = apply_view_to_landmarks(pts, boxes, "flip")
    assert once[0, 36, 0] == pytest.approx(100 - pts[0, 45, 0]) and once[0, 36, 1] == pts[0, 45, 1]
    np.testing.assert_allclose(apply_view_to_landmarks(once, boxes, "flip"), pts)
    np.testing.assert_array_equal(apply_view_to_landmarks(pts, boxes, "gray"), pts)  # no geometry in colour


def _tiny(spec: B.BackboneSpec, path: Path | None) -> B.TorchBackbone:
    """A seeded random CNN at 32x32 whose output depends on colour and on left/right position."""
    import torch

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 15 * 15, 8))
    return B.TorchBackbone(spec, net)


@pytest.fixture
def tiny_ws(tmp_path, monkeypatch, make_colour_workspace):
    ws, paths = make_colour_workspace(tmp_path)

    def fake_crops(ws_, image_ids, size=224, on_progress=None, **kw):
        return {i: paths[i] for i in image_ids}

    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops", fake_crops)
    with B.registered_backbone(B.BackboneSpec(name=TINY, embed_dim=8, native_input_size=32), _tiny):
        yield ws, paths


def test_tta_views_differ_and_are_cached_apart_with_the_identity_key_unchanged(tiny_ws, monkeypatch):
    from phenosynth.models import features as F

    ws, paths = tiny_ws
    ids = sorted(paths)[:6]
    # the no-TTA cache key is the one caches had before views existed
    assert F.cache_key("mobilenet_v2", "none", "paper", "dlib-hog+dlib68") == "mobilenet_v2-paper-none-dlib-hog+dlib68"
    X = {v: F.extract_features(ws, TINY, ids, weights="none", preprocessing="native", num_workers=0, view=v)[1]
         for v in tta_views(["flip", "gray"])}
    folders = sorted(p.name for p in (ws.cache_dir / "features").iterdir())
    base = f"{TINY}-native-none-crops"
    assert folders == [base, f"{base}-view-flip", f"{base}-view-flip+gray", f"{base}-view-gray"]
    for view in ("flip", "gray", "flip+gray"):
        assert not np.allclose(X[view], X["identity"], atol=1e-4), view
        meta = json.loads((ws.cache_dir / "features" / f"{base}-view-{view}" / "meta.json").read_text())
        assert meta["view"] == view
    assert "view" not in json.loads((ws.cache_dir / "features" / base / "meta.json").read_text())
    # the flip view is the features of the mirrored crop, read back from its own cache without computing
    monkeypatch.setattr(F, "create_backbone", lambda *a, **k: pytest.fail("computed instead of read from cache"))
    again = F.extract_features(ws, TINY, ids, weights="none", preprocessing="native", view="flip")[1]
    np.testing.assert_array_equal(again, X["flip"])


# --- mode gallery in a cell: sources, TTA, ensembles ------------------------------------------------------------------


def test_gallery_cell_real_and_synthetic_galleries(tiny_ws):
    ws, _ = tiny_ws
    for regime, n_train in (("real", 16), ("synthetic", 16), ("mixed", 32)):
        cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", regime=regime, mode="gallery",
                          selection="random", folds=3, seeds=[0])
        row = train_cell(ws, cfg, fold=0, seed=0)
        # real training photos outside fold 0 (6 per class x 4, 2 of each class in fold 0 are queries), the 16
        # synthetic images, or both; the 8 test photos are queries
        assert row["mode"] == "gallery" and row["n_train"] == n_train and row["n_test"] == 8, regime
        assert row["n_val"] == 8 and json.loads(row["hparams"]) == {"m": 1}
        assert row["top1"] >= 0.5  # twice chance: colours are easy, even for a random CNN


def test_tta_in_a_gallery_cell_averages_the_normalised_view_embeddings(tiny_ws):
    ws, paths = tiny_ws
    from phenosynth.models.features import extract_features

    cfg = TrainConfig(backbone=TINY, weights="none", preprocessing="native", mode="gallery", folds=3, tta=["flip"])
    classes, sets, label_of = cell_sets(ws, ws.load_manifest(), cfg, 1, 0)
    ids = sorted(paths)
    feats = {(TINY, v): extract_features(ws, TINY, ids, weights="none", preprocessing="native", num_workers=0,
                                         view=v) for v in ("identity", "flip")}
    row = train_cell(ws, cfg, fold=1, seed=0, features=feats)

    def embed(sub):
        pos = {i: k for k, i in enumerate(feats[TINY, "identity"][0])}
        return np.mean([l2_normalised(feats[TINY, v][1][[pos[i] for i in sub]]) for v in ("identity", "flip")], 0)

    index = {c: k for k, c in enumerate(classes)}
    y = lambda sub: np.array([index[label_of[i]] for i in sub])  # noqa: E731
    m = GalleryMatcher().fit(embed(sets["train"]), y(sets["train"]), n_classes=len(classes))
    expected = topk_accuracies(y(sets["test"]), m.predict_proba(embed(sets["test"])), labels=range(len(classes)))
    assert {k: row[k] for k in expected} == expected
    with pytest.raises(PhenosynthError, match="per backbone and view"):
        train_cell(ws, cfg, fold=1, seed=0, features=feats[TINY, "identity"])


def _hand_made_features(ws, rng):
    """Member 'a' separates the classes, member 'b' is noise."""
    m = ws.load_manifest()
    ids = m["image_id"].astype(str).tolist()
    labels, _ = pd.factorize(m["label"])
    a = 3 * np.eye(8)[labels] + rng.normal(0, 1, (len(ids), 8))
    b = rng.normal(0, 1, (len(ids), 8))
    return {("a", "identity"): (ids, a.astype(np.float32)), ("b", "identity"): (ids, b.astype(np.float32))}


@pytest.mark.parametrize("mode,hp", [("gallery", {"m": 2}), ("probe", {"C": 1.0})])
def test_ensemble_scores_are_the_mean_of_the_members_scores(tiny_ws, mode, hp):
    ws, _ = tiny_ws
    feats = _hand_made_features(ws, np.random.default_rng(0))
    cfg = TrainConfig(backbone="a+b", weights="none", mode=mode, folds=3, hparams=hp)
    assert cfg.members() == [("a", "none"), ("b", "none")]
    row = train_cell(ws, cfg, fold=2, seed=0, features=feats)
    classes, sets, label_of = cell_sets(ws, ws.load_manifest(), cfg, 2, 0)
    index = {c: k for k, c in enumerate(classes)}
    y = lambda sub: np.array([index[label_of[i]] for i in sub])  # noqa: E731
    from phenosynth.models.trainers import TRAINERS

    member_scores = []
    for member in ("a", "b"):
        ids, X = feats[member, "identity"]
        pos = {i: k for k, i in enumerate(ids)}
        rows = lambda sub: X[[pos[i] for i in sub]]  # noqa: E731,B023
        model = TRAINERS.create(mode, **hp, random_state=0).fit(rows(sets["train"]), y(sets["train"]),
                                                              n_classes=len(classes))
        member_scores.append(model.predict_proba(rows(sets["test"])))
    expected = topk_accuracies(y(sets["test"]), np.mean(member_scores, 0), labels=range(len(classes)))
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert row["backbone"] == "a+b" and json.loads(row["hparams"]) == {"a": hp, "b": hp}
    alone_b = topk_accuracies(y(sets["test"]), member_scores[1], labels=range(len(classes)))
    assert row["top1"] > alone_b["top1"]  # the informative member lifts the noise member


def test_ensemble_config_errors():
    with pytest.raises(PhenosynthError, match="finetune takes one backbone"):
        TrainConfig(backbone="a+b", mode="finetune")
    with pytest.raises(PhenosynthError, match="2 members but weights"):
        TrainConfig(backbone="a+b", weights="x+y+z").members()
    with pytest.raises(PhenosynthError, match="twice"):
        TrainConfig(backbone="a+a")


# --- the CLI and a study ------------------------------------------------------------------------------------------------


def test_cli_train_mode_gallery_with_tta(tiny_ws):
    from typer.testing import CliRunner

    from phenosynth.cli import app

    ws, _ = tiny_ws
    res = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--weights", "none",
                                   "--preprocessing", "native", "--folds", "3", "--mode", "gallery", "--tta",
                                   "flip, gray", "--nearest", "2", "--name", "g"])
    assert res.exit_code == 0, res.output
    assert "gallery · tta flip+gray" in " ".join(res.output.split())
    df = pd.read_csv(ws.runs_dir / "g" / "results.csv")
    assert len(df) == 3 and set(df["mode"]) == {"gallery"} and set(df["hparams"]) == {'{"m": 2}'}
    import yaml

    assert yaml.safe_load((ws.runs_dir / "g" / "config.yaml").read_text())["tta"] == ["flip", "gray"]
    assert len(list((ws.cache_dir / "features").iterdir())) == 4  # one cache per view
    bad = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--nearest", "2"])
    assert bad.exit_code == 2 and "--nearest applies to --mode gallery" in bad.output
    bad = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--backbone", TINY, "--tta", "blur"])
    assert bad.exit_code == 2 and "Unknown test-time augmentation 'blur'" in bad.output


def test_study_spec_mode_gallery_with_an_ensemble_end_to_end(tmp_path, make_feature_workspace):
    from phenosynth.study.runner import StudyError, run_study
    from phenosynth.study.spec import SpecError, spec_from_dict

    ws = make_feature_workspace(tmp_path)
    spec = {"backbones": ["shape68", ["shape68", "mobilenet_v2"]], "regimes": {"real": True, "synthetic": [60]},
            "folds": 2, "selection": "random", "trainer": {"mode": "gallery", "m": [1, 3]},
            "features_from": str(ws.root / "features")}
    parsed = spec_from_dict(spec)
    assert parsed.trainer.hparams == {"m": [1, 3]}
    assert parsed.backbones[1].name == "shape68+mobilenet_v2" and len(parsed.backbones[1].members) == 2
    res = run_study(ws, spec, "g", executor="serial")
    df = pd.read_csv(res.run_dir / "results.csv")
    assert df["backbone"].tolist() == ["shape68"] * 4 + ["shape68+mobilenet_v2"] * 4
    assert df["regime"].tolist() == ["real", "real", "synthetic", "synthetic"] * 2
    assert set(df["mode"]) == {"gallery"} and (df["n_test"] == 6).all()
    assert df.loc[df["regime"] == "synthetic", "n_train"].tolist() == [60] * 4  # a synthetic gallery of 60
    assert (df["top1"] > 1 / 6).all()  # the class-centred features are matched above chance
    assert "shape68+mobilenet_v2" in (res.run_dir / "table.md").read_text()
    with pytest.raises(SpecError, match="trainer 'gallery' has no parameter 'k'"):
        spec_from_dict({**spec, "trainer": {"mode": "gallery", "k": 1}})
    with pytest.raises(StudyError, match=r"view flip\): expected .*shape68@flip.npz"):
        run_study(ws, {**spec, "tta": ["flip"]}, "g2", executor="serial")
