"""Unseen conditions (``split --unseen-fraction``): held out whole, never a generator's input, a fold or a head's
label space; scored by gallery matching, leave-one-subject-out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data import Workspace
from phenosynth.data.leakage import UNSEEN_SOURCE, assert_no_leakage, leakage_problems, resplit_command
from phenosynth.data.manifest import conform, real_classes, real_unseen, unseen_conditions
from phenosynth.data.split import UNSEEN_SOURCE_KIND, choose_unseen, split
from phenosynth.errors import LeakageError, PhenosynthError
from phenosynth.synth.lineage import check_training_parents
from phenosynth.training.unseen import score_unseen

runner = CliRunner()


def manifest(n_classes: int = 12, subjects: int = 3, photos: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"image_id": f"{c:02d}{s}{k}".ljust(64, "0"), "path": f"/d/c{c}/s{s}_{k}.png", "label": f"cond{c:02d}",
             "subject_id": f"c{c}-s{s}", "source": "real", "phash": f"{rng.integers(0, 2**63):016x}"}
            for c in range(n_classes) for s in range(subjects) for k in range(photos)]
    return conform(pd.DataFrame(rows))


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    m = manifest()
    real_ids = m["image_id"].tolist()
    syn = conform(pd.DataFrame([  # one pixel child and one statistic child of every real photo
        {"image_id": f"p{i}".ljust(64, "f"), "path": f"synthetic/r/p{i}.png", "label": m.at[i, "label"],
         "source": "synthetic", "generator": "shape-warp", "parents": [real_ids[i]]} for i in range(len(m))
    ] + [
        {"image_id": f"t{i}".ljust(64, "e"), "path": f"synthetic/r/t{i}.png", "label": m.at[i, "label"],
         "source": "synthetic", "generator": "phenotype-transfer", "statistic_parents": [real_ids[i]]}
        for i in range(len(m))
    ]))
    ws.save_manifest(pd.concat([m, syn], ignore_index=True))
    return ws


def test_unseen_conditions_are_held_out_whole_never_folded_and_outside_the_label_space(ws):
    r = split(ws, test_size=0.25, folds=3, seed=42, unseen_fraction=0.25)
    m = ws.load_manifest()
    assert len(r.unseen_conditions) == 3 and r.n_unseen == 3 * 6
    assert unseen_conditions(m) == r.unseen_conditions
    real = m[m["source"] == "real"]
    in_unseen = real["label"].isin(r.unseen_conditions)
    assert (real.loc[in_unseen, "split"] == "unseen").all()  # every photo of an unseen condition
    assert real.loc[~in_unseen, "split"].isin(["train", "test"]).all()
    assert real.loc[in_unseen, "fold"].isna().all()  # never a fold
    assert len(real_unseen(m)) == 18
    assert not set(real_classes(m)) & set(r.unseen_conditions)  # never a trained head's label space
    assert len(real_classes(m)) == 9 == r.classes
    # every synthetic image that learned from an unseen photo (pixel or statistic parent) is excluded
    unseen_ids = set(real.loc[in_unseen, "image_id"])
    syn = m[m["source"] == "synthetic"]
    from_unseen = syn["parents"].map(lambda p: bool(set(p) & unseen_ids)) | \
        syn["statistic_parents"].map(lambda p: bool(set(p) & unseen_ids))
    assert from_unseen.sum() == 36 and (syn.loc[from_unseen, "exclude_reason"] == UNSEEN_SOURCE).all()
    report = pd.read_csv(ws.split_report_path)
    assert (report["kind"] == UNSEEN_SOURCE_KIND).sum() == 36
    assert leakage_problems(m) == []
    assert json.loads((ws.root / "split.json").read_text())["unseen_conditions"] == r.unseen_conditions
    assert "--unseen-fraction 0.25" in resplit_command(ws)
    assert_no_leakage(ws)  # a clean split passes the re-check


def test_unseen_choice_is_deterministic_by_seed(ws):
    split(ws, seed=42, folds=3, unseen_fraction=0.25)
    first = ws.load_manifest()[["image_id", "split", "fold", "exclude_reason"]]
    split(ws, seed=42, folds=3, unseen_fraction=0.25)
    pd.testing.assert_frame_equal(first, ws.load_manifest()[["image_id", "split", "fold", "exclude_reason"]])
    classes = [f"c{i}" for i in range(20)]
    picks = {tuple(choose_unseen(classes, fraction=0.2, seed=s)) for s in range(5)}
    assert len(picks) > 1 and all(len(p) == 4 for p in picks)
    assert choose_unseen(classes, fraction=0.2, seed=3) == choose_unseen(list(reversed(classes)), fraction=0.2,
                                                                         seed=3)


def test_without_unseen_fraction_the_split_is_unchanged(ws):
    split(ws, seed=42, folds=3)
    m = ws.load_manifest()
    assert not (m["split"] == "unseen").any() and len(real_classes(m)) == 12
    assert "unseen_fraction" not in json.loads((ws.root / "split.json").read_text())


def test_unseen_photos_are_refused_to_a_generator(ws):
    split(ws, seed=42, folds=3, unseen_fraction=0.25)
    m = ws.load_manifest()
    unseen = real_unseen(m)
    with pytest.raises(LeakageError, match="unseen conditions .*were handed to a generator"):
        check_training_parents(unseen["image_id"].tolist(), unseen["split"].tolist(), unseen["source"].tolist())


def test_leakage_recheck_flags_unseen_violations(ws):
    split(ws, seed=42, folds=3, unseen_fraction=0.25)
    m = ws.load_manifest()
    unseen = real_unseen(m)
    a, b = unseen.index[:2]
    # a usable synthetic image whose statistic parent is an unseen photo (a record written after the split)
    syn_i = m.index[(m["source"] == "synthetic") & m["exclude_reason"].isna()][0]
    bad = m.copy()
    bad.at[syn_i, "statistic_parents"] = [str(m.at[a, "image_id"])]
    with pytest.raises(LeakageError, match="learned from a photo of an unseen condition"):
        assert_no_leakage(bad)
    # an unseen photo in a fold
    bad = m.copy()
    bad.at[a, "fold"] = 0
    assert any("unseen conditions in a validation fold" in p for p in leakage_problems(bad))
    # an unseen condition's photo moved to train / test
    for side in ("train", "test"):
        bad = m.copy()
        bad.at[b, "split"] = side
        problems = leakage_problems(bad)
        assert any(f"unseen condition(s) {m.at[b, 'label']}" in p for p in problems), problems
    # a generator run fit on an unseen photo: every image of that run
    bad = m.copy()
    bad.at[syn_i, "params"] = json.dumps({"run": "r1"})
    problems = leakage_problems(bad, {"r1": [str(m.at[a, "image_id"])]})
    assert any("unseen condition" in p for p in problems)


def test_split_rejects_bad_unseen_fraction(ws):
    with pytest.raises(PhenosynthError, match="--unseen-fraction"):
        split(ws, unseen_fraction=1.0)
    result = runner.invoke(app, ["split", "-w", str(ws.root), "--folds", "3", "--unseen-fraction", "-0.1"])
    assert result.exit_code == 2 and "--unseen-fraction" in result.output


def test_split_cli_holds_out_unseen_conditions(ws):
    result = runner.invoke(app, ["split", "-w", str(ws.root), "--folds", "3", "--unseen-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    assert "3 condition(s) held out whole as unseen (18 real photos)" in result.output


def test_cell_sets_never_hold_an_unseen_condition(tmp_path, make_colour_workspace):
    from phenosynth.training.cell import TrainConfig, cell_sets

    ws, _ = make_colour_workspace(tmp_path, n_classes=5, per_class=8, synthetic_per_class=2)
    r = split(ws, test_size=0.25, folds=3, seed=0, unseen_fraction=0.2)
    assert len(r.unseen_conditions) == 1
    m = ws.load_manifest()
    cfg = TrainConfig(backbone="shape68", weights="none", regime="mixed", selection="random", folds=3)
    classes, sets, label_of = cell_sets(ws, m, cfg, fold=0, seed=0)
    assert r.unseen_conditions[0] not in classes and len(classes) == 4
    used = {label_of[i] for ids in sets.values() for i in ids}
    assert used == set(classes)  # no unseen photo, and no synthetic image of an unseen condition, in any set


# --- leave-one-subject-out scoring on hand-made embeddings ------------------------------------------------------------


def test_score_unseen_leave_one_subject_out_on_hand_made_embeddings():
    e = np.eye(4, dtype=np.float32)
    # unseen condition U: subjects u1 (two photos near axis 0) and u2 (near axis 0); unseen V: v1, v2 near axis 1;
    # W: a single subject (nothing to match: skipped). Seen gallery: condition S on axis 2.
    unseen_X = np.stack([e[0], e[0] + 0.1 * e[3], e[0] + 0.05 * e[2], e[1], e[1] + 0.2 * e[0], e[3]])
    labels = ["U", "U", "U", "V", "V", "W"]
    subjects = ["u1", "u1", "u2", "v1", "v2", "w1"]
    seen_X, seen_labels = np.stack([e[2], e[2] + 0.1 * e[1]]), ["S", "S"]
    out = score_unseen(unseen_X, labels, subjects, seen_X, seen_labels, ks=(1, 2))
    assert out.to_dict("records") == [{"subset": "unseen", "conditions": 2, "queries": 5, "skipped": 1,
                                       "top1": 1.0, "top2": 1.0}]
    # the query's own subject is never its gallery (else every query would match itself: top-1 1.0): u2 moved
    # towards V. u1's photos: nearest U is u2 (cos .29) > V's v2 (.20): hits; u2: V (v2) beats U (u1): miss;
    # v1: V (v2, .98) beats U (u2, .96): hit; v2: U (u2, .995) beats V (v1, .98): miss -> top-1 3/5; top-2 all.
    unseen_X2 = unseen_X.copy()
    unseen_X2[2] = e[1] + 0.3 * e[0]
    out2 = score_unseen(unseen_X2, labels, subjects, seen_X, seen_labels, ks=(1, 2))
    assert out2.at[0, "queries"] == 5 and out2.at[0, "top1"] == pytest.approx(3 / 5)
    assert out2.at[0, "top2"] == pytest.approx(1.0)


def test_score_unseen_without_photos_is_a_user_error():
    with pytest.raises(PhenosynthError, match="--unseen-fraction"):
        score_unseen(np.zeros((0, 3)), [], [], np.eye(3), ["a", "b", "c"])
