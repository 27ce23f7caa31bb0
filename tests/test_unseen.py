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


# --- every training cell scores the unseen conditions (issue 15, item 5) ------------------------------------------------


def _angles(*degrees: float) -> list[list[float]]:
    return [[float(np.cos(np.radians(d))), float(np.sin(np.radians(d)))] for d in degrees]


#: Seen conditions: (fold-0 photo, fold-1 photo, test photo) as angles in the plane (cosine distance ranks by angle).
SEEN_ANGLES = {"A": (0, 5, 2), "B": (90, 75, 92), "C": (180, 185, 182), "D": (300, 302, 301), "E": (315, 317, 316),
               "F": (325, 327, 326), "G": (330, 332, 331)}
#: Unseen photos: (image_id, condition, subject, angle). W has one subject: nothing to match, skipped.
UNSEEN_ANGLES = [("u1", "U", "u1", 40), ("u2", "U", "u2", 60), ("v1", "V", "v1", 250), ("v2", "V", "v2", 340),
                 ("w1", "W", "w1", 130), ("w2", "W", "w1", 131)]


def angle_workspace(root, *, unseen: bool = True) -> tuple[Workspace, list[str], np.ndarray]:
    """7 seen conditions (a photo in fold 0, one in fold 1, one test photo each) and 3 unseen ones, every photo its
    own 2-d embedding at a hand-chosen angle (no image files: the features are given); ``unseen=False``: the same
    workspace without the unseen photos."""
    rows, degrees = [], []

    def add(image_id, label, subject, split_, fold, degree):
        rows.append({"image_id": image_id, "path": f"{image_id}.png", "label": label, "subject_id": subject,
                     "source": "real", "split": split_, "fold": fold})
        degrees.append(degree)

    for label, (f0, f1, test) in SEEN_ANGLES.items():
        add(f"{label}0", label, f"{label}-s0", "train", 0, f0)
        add(f"{label}1", label, f"{label}-s1", "train", 1, f1)
        add(f"{label}t", label, f"{label}-st", "test", None, test)
    for image_id, label, subject, degree in UNSEEN_ANGLES if unseen else []:
        add(image_id, label, subject, "unseen", None, degree)
    ws = Workspace.open(root / "ws", create=True)
    ws.save_manifest(conform(pd.DataFrame(rows)))
    return ws, [r["image_id"] for r in rows], np.array(_angles(*degrees), dtype=np.float32)


@pytest.mark.parametrize("mode", ["probe", "gallery"])
def test_train_cell_scores_unseen_conditions_as_a_hand_computation_says(tmp_path, mode):
    from phenosynth.training import TrainConfig, train_cell

    ws, ids, X = angle_workspace(tmp_path)
    cfg = TrainConfig(backbone="angles", weights="none", mode=mode, folds=2, hparams={"C": 1.0} if mode == "probe"
                      else {})
    rows = {fold: train_cell(ws, cfg, fold, 0, features=(ids, X)) for fold in (0, 1)}
    # Label space: 7 seen + 3 unseen = 10 conditions. Fold 0's seen gallery is its training set, the fold-1 photos
    # (A 5, B 75, C 185, D 302, E 317, F 327, G 332 degrees); fold 1's the fold-0 photos (A 0, B 90, ...).
    # u1 (40): U's u2 (60) at 20 beats B (35) and A: hit in both folds.
    # u2 (60): fold 0: B's 75 (15) beats U's u1 (20): rank 2; fold 1: B at 90 (30): hit.
    # v1 (250): D 52 / 50, C 65 / 70, E 67 / 65, F 77 / 75, G 82 / 80 degrees, then V's v2 (90): rank 6 in both.
    # v2 (340): G 8, F 13, E 23, A 25 / 20, D 38, U's u1 60, then V's v1 (90): rank 7 in both.
    # W's two photos are one subject: nothing to match them with, skipped.
    expected = {0: {"unseen_top1": 1 / 4, "unseen_top5": 2 / 4}, 1: {"unseen_top1": 2 / 4, "unseen_top5": 2 / 4}}
    for fold, row in rows.items():
        assert {k: row[k] for k in expected[fold]} == pytest.approx(expected[fold]), fold
        assert row["unseen_top10"] == row["unseen_top30"] == 1.0  # k >= the 10 conditions
        assert (row["unseen_conditions"], row["unseen_queries"], row["unseen_skipped"]) == (2, 4, 2)
        assert row["n_classes"] == 7 and row["n_test"] == 7  # the seen side is the 7 seen conditions only


def test_seen_numbers_and_a_split_without_unseen_conditions_are_unchanged(tmp_path, monkeypatch):
    from phenosynth.training import RESULT_COLUMNS, TrainConfig, train_cell
    from phenosynth.training import cell as C

    with_unseen = angle_workspace(tmp_path / "a")
    without = angle_workspace(tmp_path / "b", unseen=False)
    cfg = TrainConfig(backbone="angles", weights="none", mode="probe", folds=2)
    rows = {name: train_cell(ws, cfg, 0, 0, features=(ids, X)) for name, (ws, ids, X) in
            (("with", with_unseen), ("without", without))}
    assert list(rows["without"]) == RESULT_COLUMNS  # no unseen_* column at all
    assert {c for c in rows["with"] if c not in RESULT_COLUMNS} == {
        "unseen_top1", "unseen_top5", "unseen_top10", "unseen_top30", "unseen_conditions", "unseen_queries",
        "unseen_skipped"}
    # the code before unseen scoring: the same cell with the unseen step switched off
    monkeypatch.setattr(C, "_with_unseen", lambda ws, config, row, skipped, *a: (row, skipped))
    before = {name: train_cell(ws, cfg, 0, 0, features=(ids, X)) for name, (ws, ids, X) in
              (("with", with_unseen), ("without", without))}
    drop = ["fit_seconds"]
    assert {k: v for k, v in rows["without"].items() if k not in drop} == \
        {k: v for k, v in before["without"].items() if k not in drop}
    assert {k: rows["with"][k] for k in RESULT_COLUMNS if k not in drop} == \
        {k: v for k, v in before["with"].items() if k not in drop}


def test_the_head_never_fits_an_unseen_condition(tmp_path, monkeypatch):
    from phenosynth.models.trainers import ProbeClassifier
    from phenosynth.training import TrainConfig, train_cell

    ws, ids, X = angle_workspace(tmp_path)
    fitted = []
    original = ProbeClassifier.fit

    def spy(self, X_, y, **kw):
        fitted.append((np.asarray(X_).copy(), np.asarray(y).copy(), kw["n_classes"]))
        return original(self, X_, y, **kw)

    monkeypatch.setattr(ProbeClassifier, "fit", spy)
    row = train_cell(ws, TrainConfig(backbone="angles", weights="none", mode="probe", folds=2, hparams={"C": 1.0}),
                     0, 0, features=(ids, X))
    assert row["unseen_queries"] == 4 and len(fitted) == 1
    Xfit, yfit, n_classes = fitted[0]
    model_classes = ProbeClassifier(C=1.0).fit(Xfit, yfit, n_classes=n_classes).classes_
    assert n_classes == 7 and list(model_classes) == list(range(7))  # the 7 seen conditions, nothing else
    unseen_rows = X[[ids.index(i) for i, *_ in UNSEEN_ANGLES]]
    assert not any(np.isclose(Xfit, u, atol=1e-6).all(axis=1).any() for u in unseen_rows)  # no unseen photo fitted


def test_ensembles_and_views_score_unseen_conditions_like_the_cell(tmp_path):
    """An ensemble cell's unseen numbers average its members' condition scores over the cell's gallery; a TTA cell
    embeds each image as the mean of its normalised views."""
    from phenosynth.training import TrainConfig, train_cell

    ws, ids, X = angle_workspace(tmp_path)
    noise = np.random.default_rng(0).normal(0, 1, X.shape).astype(np.float32)
    feats = {("a", "identity"): (ids, X), ("b", "identity"): (ids, noise)}
    row = train_cell(ws, TrainConfig(backbone="a+b", weights="none", mode="gallery", folds=2), 0, 0, features=feats)
    pos = [ids.index(i) for i, *_ in UNSEEN_ANGLES]
    gallery = [ids.index(f"{c}1") for c in SEEN_ANGLES]  # fold 0's gallery: the fold-1 photos
    out = score_unseen([X[pos], noise[pos]], [c for _, c, _, _ in UNSEEN_ANGLES], [s for _, _, s, _ in UNSEEN_ANGLES],
                       [X[gallery], noise[gallery]], list(SEEN_ANGLES), ks=(1, 5, 10, 30))
    assert {k: row[f"unseen_{k}"] for k in ("top1", "top5", "top10", "top30", "queries", "skipped")} == \
        pytest.approx(out.iloc[0][["top1", "top5", "top10", "top30", "queries", "skipped"]].to_dict())
    # test-time views: each image's embedding is the mean of its L2-normalised views (here a rotated copy)
    from phenosynth.models.trainers import l2_normalised

    turned = np.array(_angles(*np.degrees(np.arctan2(X[:, 1], X[:, 0])) + 25), dtype=np.float32)
    views = {("a", "identity"): (ids, X), ("a", "flip"): (ids, 3 * turned)}
    tta = train_cell(ws, TrainConfig(backbone="a", weights="none", mode="gallery", folds=2, tta=["flip"]), 0, 0,
                     features=views)
    mean = np.mean([l2_normalised(X), l2_normalised(turned)], axis=0)
    out = score_unseen(mean[pos], [c for _, c, _, _ in UNSEEN_ANGLES], [s for _, _, s, _ in UNSEEN_ANGLES],
                       mean[gallery], list(SEEN_ANGLES), ks=(1, 5))
    assert (tta["unseen_top1"], tta["unseen_top5"]) == pytest.approx((out.at[0, "top1"], out.at[0, "top5"]))


def test_score_unseen_ensemble_is_the_mean_of_the_members_distances():
    # member 1: u1 at 0, u2 at 20, S at 50 degrees -> each query's nearest is the other U photo (hits);
    # member 2: u1 at 0, u2 at 80, S at 30 -> S is nearer (misses). Mean cosine distances: u1: U (.060 + .826) / 2 =
    # .443 vs S (.357 + .134) / 2 = .246; u2: U .443 vs S (.134 + .357) / 2 = .246 -> both miss.
    m1 = np.array(_angles(0, 20), np.float32), np.array(_angles(50), np.float32)
    m2 = np.array(_angles(0, 80), np.float32), np.array(_angles(30), np.float32)
    args = (["U", "U"], ["u1", "u2"])
    assert score_unseen(m1[0], *args, m1[1], ["S"], ks=(1,)).at[0, "top1"] == 1.0
    assert score_unseen(m2[0], *args, m2[1], ["S"], ks=(1,)).at[0, "top1"] == 0.0
    both = score_unseen([m1[0], m2[0]], *args, [m1[1], m2[1]], ["S"], ks=(1,))
    assert both.at[0, "top1"] == 0.0 and both.at[0, "queries"] == 2
    # m per member: member 1 with m = 2 averages U's one photo and has the same ranking
    assert score_unseen([m1[0], m2[0]], *args, [m1[1], m2[1]], ["S"], m=[2, 1], ks=(1,)).at[0, "top1"] == 0.0
    with pytest.raises(ValueError, match="one entry per ensemble member"):
        score_unseen([m1[0], m2[0]], *args, [m1[1]], ["S"])


# --- a study, its report, the train CLI ---------------------------------------------------------------------------------


def _angle_study(tmp_path, *, unseen: bool, mode: str = "gallery"):
    from phenosynth.study.runner import save_feature_file

    ws, ids, X = angle_workspace(tmp_path, unseen=unseen)
    save_feature_file(ws.root / "features", "shape68", ids, X)
    spec = {"backbones": ["shape68"], "regimes": {"real": True}, "folds": 2, "trainer": {"mode": mode},
            "features_from": str(ws.root / "features")}
    return ws, spec


def test_a_study_reports_seen_and_unseen_conditions_apart(tmp_path):
    from phenosynth.study.runner import run_study

    ws, spec = _angle_study(tmp_path, unseen=True)
    res = run_study(ws, spec, "s", executor="serial")
    df = pd.read_csv(res.run_dir / "results.csv")
    assert len(df) == 2 and df["unseen_top1"].tolist() == [0.25, 0.5]  # the hand computation above, per fold
    assert df["unseen_top5"].tolist() == [0.5, 0.5] and set(df["unseen_queries"]) == {4}
    assert list(df.columns[:13]) == ["backbone", "regime", "n_synthetic", "fold", "seed", "top1", "top5", "top10",
                                     "top30", "macro_f1", "n_train", "n_test", "n_synthetic_requested"]
    md = (res.run_dir / "table_unseen.md").read_text()
    assert "| Shape-68 | Real | seen | " in md
    assert "|  |  | unseen | 37.5 (17.7) | 50.0 (0.0) | 100.0 (0.0) | 100.0 (0.0) |" in md
    assert "Unseen: 2 conditions held out whole" in md and "4 photos matched" in md and "2 photos skipped" in md
    tidy = pd.read_csv(res.run_dir / "table_unseen.csv")
    assert tidy["subset"].tolist() == ["seen", "unseen"] and tidy.loc[1, "top1_mean"] == pytest.approx(0.375)
    html = (res.run_dir / "report.html").read_text()
    assert "<h2>Unseen conditions</h2>" in html and "ranked among the 7 seen + 2 unseen conditions" in html
    assert "<td>unseen</td><td class=\"num\">37.5 (17.7)</td>" in html
    # Table 1 and Figure 1 stay the seen numbers: the table is the same as from the seen columns alone
    from phenosynth.study.report import summarize_results, table_markdown

    seen_only = df.drop(columns=[c for c in df.columns if c.startswith("unseen_")])
    assert (res.run_dir / "table.md").read_text().startswith(table_markdown(summarize_results(seen_only)))
    # a resumed study gives the same results.csv
    before = (res.run_dir / "results.csv").read_bytes()
    next((res.run_dir / "cells").glob("*fold1.json")).unlink()
    run_study(ws, spec, "s", executor="serial", resume=True)
    assert (res.run_dir / "results.csv").read_bytes() == before
    # the probe study matches the unseen conditions with the same gallery: the same unseen numbers
    probe = run_study(ws, {**spec, "trainer": {"mode": "probe", "C": 1.0}}, "p", executor="serial")
    pd.testing.assert_frame_equal(pd.read_csv(probe.run_dir / "results.csv").filter(like="unseen_"),
                                  df.filter(like="unseen_"))


def test_a_study_without_unseen_conditions_is_as_before(tmp_path, monkeypatch):
    from phenosynth.study.runner import run_study
    from phenosynth.training import cell as C

    ws, spec = _angle_study(tmp_path, unseen=False)
    res = run_study(ws, spec, "s", executor="serial")
    html = (res.run_dir / "report.html").read_text()
    assert "Unseen conditions" not in html and not (res.run_dir / "table_unseen.md").exists()
    assert not [c for c in pd.read_csv(res.run_dir / "results.csv").columns if c.startswith("unseen")]
    monkeypatch.setattr(C, "_with_unseen", lambda ws, config, row, skipped, *a: (row, skipped))  # the code before
    old = run_study(ws, spec, "old", executor="serial")
    for name in ("results.csv", "table.md", "table.csv", "table.tex"):
        assert (res.run_dir / name).read_bytes() == (old.run_dir / name).read_bytes(), name


def test_train_cli_prints_seen_and_unseen_results_apart(tmp_path, make_colour_workspace, monkeypatch):
    from phenosynth.models import backbones as B
    from torch import nn

    ws, paths = make_colour_workspace(tmp_path, n_classes=5, per_class=8, synthetic_per_class=2)
    r = split(ws, test_size=0.25, folds=3, seed=0, unseen_fraction=0.2)
    monkeypatch.setattr("phenosynth.faces.align.ensure_aligned_crops",
                        lambda ws_, ids, size=224, on_progress=None, **kw: {i: paths[i] for i in ids})

    def tiny(spec, path):
        import torch

        torch.manual_seed(0)
        return B.TorchBackbone(spec, nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                   nn.Flatten()))

    with B.registered_backbone(B.BackboneSpec(name="test-tiny-unseen", embed_dim=8, native_input_size=32), tiny):
        res = runner.invoke(app, ["train", "-w", str(ws.root), "--backbone", "test-tiny-unseen", "--weights", "none",
                                  "--preprocessing", "native", "--folds", "3", "--name", "t"])
        assert res.exit_code == 0, res.output
        out = " ".join(res.output.split())
        assert "seen conditions: held-out real test set, mean (SD) over 3 model(s)" in out
        assert "unseen conditions: 1 held out whole, 8 photos matched by gallery" in out
        assert "label space 4 seen + 1 unseen" in out and "0 skipped" in out
        df = pd.read_csv(ws.runs_dir / "t" / "results.csv")
        assert (df["unseen_queries"] == 8).all() and (df["n_classes"] == 4).all()
        assert df["unseen_top1"].between(0, 1).all()
        # finetune reads crops itself; its unseen photos are matched on the backbone's cached features
        from phenosynth.training import TrainConfig, train_cell

        cfg = TrainConfig(backbone="test-tiny-unseen", weights="none", preprocessing="native", mode="finetune",
                          folds=3, hparams={"epochs": 1, "batch_size": 8})
        row = train_cell(ws, cfg, 0, 0)
        probe = train_cell(ws, TrainConfig(backbone="test-tiny-unseen", weights="none", preprocessing="native",
                                           folds=3), 0, 0)
        assert row["unseen_queries"] == 8 and row["unseen_top1"] == probe["unseen_top1"]
    assert len(r.unseen_conditions) == 1


def test_cells_given_their_sets_find_the_unseen_conditions_themselves(tmp_path):
    from phenosynth.training import TrainConfig
    from phenosynth.training.cell import _run_cell, cell_sets

    for unseen, expected in ((True, {"unseen_top1": 0.25, "unseen_queries": 4}), (False, {})):
        ws, ids, X = angle_workspace(tmp_path / str(unseen), unseen=unseen)
        cfg = TrainConfig(backbone="angles", weights="none", mode="gallery", folds=2)
        row, skipped = _run_cell(ws, cfg, 0, 0, (ids, X), sets=cell_sets(ws, ws.load_manifest(), cfg, 0, 0))
        assert {k: row[k] for k in row if k.startswith("unseen_") and k in expected} == expected
        assert any(k.startswith("unseen_") for k in row) == unseen


def test_unseen_section_tables_from_a_results_frame():
    from phenosynth.study.report.unseen_section import unseen_counts, unseen_markdown, unseen_summary

    base = {"backbone": "dlib_resnet128", "n_synthetic": 0, "n_synthetic_requested": 0, "n_classes": 32,
            "top5": 1.0, "top10": 1.0, "top30": 1.0, "unseen_top5": 0.9, "unseen_top10": 1.0, "unseen_top30": 1.0,
            "unseen_conditions": 8, "unseen_skipped": 1}
    results = pd.DataFrame([
        {**base, "regime": "real", "top1": 0.8, "unseen_top1": 0.5, "unseen_queries": 79},
        {**base, "regime": "real", "top1": 0.6, "unseen_top1": 0.7, "unseen_queries": 80},
        {**base, "regime": "synthetic", "n_synthetic": 40, "n_synthetic_requested": 40, "top1": 0.4,
         "unseen_top1": float("nan"), "unseen_queries": 0},
    ])
    summary = unseen_summary(results)
    assert summary[["regime", "subset", "runs"]].values.tolist() == [
        ["real", "seen", 2], ["real", "unseen", 2], ["synthetic", "seen", 1], ["synthetic", "unseen", 1]]
    assert summary["top1_mean"].tolist()[:3] == pytest.approx([0.7, 0.6, 0.4])
    counts = unseen_counts(results)
    assert counts == {"conditions": "8", "queries": "0–80", "skipped": "1", "seen": "32"}
    md = unseen_markdown(summary, counts)
    assert "| dlib ResNet-128 | Real | seen | 70.0 (14.1) | 100.0 (0.0) |" in md
    assert "|  | Syn 40 | seen | 40.0 | 100.0 |" in md and "|  |  | unseen | – | 90.0 |" in md
    assert unseen_summary(results.drop(columns=[c for c in results if c.startswith("unseen_")])) is None
