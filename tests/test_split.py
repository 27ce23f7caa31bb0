"""Leakage-safe split on a 103-class few-shot set built in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data import Workspace
from phenosynth.data.manifest import conform
from phenosynth.data.leakage import PARENT_IN_TEST, leakage_problems, near_duplicate_pairs
from phenosynth.data.split import assign_folds, assign_test, split
from phenosynth.errors import PhenosynthError

runner = CliRunner()


def few_shot_manifest(n_classes: int = 103, seed: int = 0) -> pd.DataFrame:
    """Like RDFace: ~4.4 photos per class, 1-3 photos per subject, some single-photo classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_classes):
        n_subjects = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.35, 0.25]))
        for s in range(n_subjects):
            for k in range(int(rng.integers(1, 3))):
                iid = f"{c:03d}{s}{k}".ljust(64, "0")
                rows.append({"image_id": iid, "path": f"/data/c{c}/s{s}_{k}.png", "label": f"cond{c:03d}",
                             "subject_id": f"c{c}-s{s}", "source": "real",
                             "phash": f"{rng.integers(0, 2**63):016x}"})
    return conform(pd.DataFrame(rows))


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.save_manifest(few_shot_manifest())
    return ws


def test_split_on_103_classes_meets_the_protocol(ws):
    r = split(ws, test_size=0.25, folds=5, seed=42)
    m = ws.load_manifest()
    assert r.classes == 103
    assert 0.20 <= r.test_fraction <= 0.30
    train, test = m[m["split"] == "train"], m[m["split"] == "test"]
    assert set(train["label"]) == set(m["label"])  # every class present in training
    assert not set(train["subject_id"]) & set(test["subject_id"])  # no subject across splits
    assert test["fold"].isna().all() and train["fold"].between(0, 4).all()
    assert train.groupby("subject_id")["fold"].nunique().max() == 1  # a subject sits in one fold
    singles = m.groupby("label")["subject_id"].nunique()
    assert set(r.singleton_classes) == set(singles[singles == 1].index)
    assert not set(r.singleton_classes) & set(test["label"])
    assert leakage_problems(m) == []


def test_split_is_deterministic_for_a_seed(ws, tmp_path):
    split(ws, seed=42)
    first = ws.load_manifest()[["image_id", "split", "fold"]]
    split(ws, seed=42)
    second = ws.load_manifest()[["image_id", "split", "fold"]]
    pd.testing.assert_frame_equal(first, second)
    split(ws, seed=7)
    assert not ws.load_manifest()["split"].equals(first["split"])


def test_split_does_not_depend_on_row_order(ws, tmp_path):
    split(ws, seed=1)
    a = ws.load_manifest().set_index("image_id")[["split", "fold"]].sort_index()
    other = Workspace.open(tmp_path / "ws2", create=True)
    other.save_manifest(few_shot_manifest().sample(frac=1.0, random_state=3))
    split(other, seed=1)
    b = other.load_manifest().set_index("image_id")[["split", "fold"]].sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_synthetic_images_never_in_test_or_fold_and_children_of_test_are_flagged(ws):
    m = ws.load_manifest()
    real_ids = m["image_id"].tolist()
    syn = conform(pd.DataFrame([
        {"image_id": f"s{i}".ljust(64, "f"), "path": f"synthetic/r/{i}.png", "label": m.at[i, "label"],
         "subject_id": f"syn{i}", "source": "synthetic", "generator": "shape-warp", "parents": [real_ids[i]]}
        for i in range(len(m))
    ]))
    ws.save_manifest(pd.concat([m, syn], ignore_index=True))
    r = split(ws, seed=42)
    out = ws.load_manifest()
    s = out[out["source"] == "synthetic"]
    assert (s["split"] == "train").all() and s["fold"].isna().all()
    test_ids = set(out.loc[out["split"].eq("test") & out["source"].eq("real"), "image_id"])
    flagged = s[s["exclude_reason"] == PARENT_IN_TEST]
    assert len(flagged) == len(test_ids) == len(r.flagged_synthetic)
    assert all(p[0] in test_ids for p in flagged["parents"])
    report = pd.read_csv(ws.split_report_path)
    assert (report["kind"] == "synthetic-parent-in-test").sum() == len(test_ids)
    # a re-split with another seed un-flags children whose parent went back to training
    split(ws, seed=3)
    again = ws.load_manifest()
    test_ids = set(again.loc[again["split"].eq("test") & again["source"].eq("real"), "image_id"])
    now = again[(again["source"] == "synthetic") & (again["exclude_reason"] == PARENT_IN_TEST)]
    assert {p[0] for p in now["parents"]} == test_ids


def test_near_duplicates_across_train_and_test_are_grouped_and_reported(ws):
    r0 = split(ws, seed=42)
    assert r0.near_duplicate_groups == []
    m = ws.load_manifest()
    t = m.index[m["split"] == "test"][0]
    tr = m.index[m["split"] == "train"][0]
    h = int(m.at[tr, "phash"], 16) ^ 0b101  # two bits away: a near-duplicate under another subject
    m.loc[t, "phash"] = f"{h:016x}"
    ws.save_manifest(m)
    r = split(ws, seed=42)
    pair = sorted([m.at[t, "image_id"], m.at[tr, "image_id"]])
    assert r.near_duplicate_groups == [pair] and r.near_duplicate_images == 2
    out = ws.load_manifest().set_index("image_id")
    assert out.loc[pair[0], "split"] == out.loc[pair[1], "split"]  # one side now
    assert out.loc[pair[0], "fold"] is pd.NA or out.loc[pair[0], "fold"] == out.loc[pair[1], "fold"]
    subjects = {m.at[t, "subject_id"], m.at[tr, "subject_id"]}
    assert out.loc[out["subject_id"].isin(subjects), "split"].nunique() == 1  # both subjects, whole
    rep = pd.read_csv(ws.split_report_path, dtype=str)
    row = rep[rep["kind"] == "near-duplicate-grouped"].iloc[0]
    assert {row["image_id"], row["other_image_id"]} == set(pair)
    assert "within 2 bits" in row["detail"]
    assert leakage_problems(ws.load_manifest()) == []


def test_assign_test_keeps_single_subject_classes_in_training():
    labels = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c"])
    groups = np.array(["a1", "a1", "a1", "b1", "b2", "c1", "c2", "c3", "c4"])
    for seed in range(20):
        test = assign_test(labels, groups, test_size=0.25, seed=seed)
        assert not test[:3].any()  # class a: one subject
        for lab in "bc":
            assert (~test[labels == lab]).any()


def test_assign_folds_refuses_more_folds_than_subjects():
    with pytest.raises(PhenosynthError, match="Use fewer --folds"):
        assign_folds(np.array(["a", "b"]), np.array(["s1", "s2"]), folds=5, seed=0)


def test_near_duplicate_pairs_distance():
    h = pd.Series(["ffff000000000000", "ffff000000000003", "0000ffffffffffff", "fffe000000000000"],
                  index=["t1", "r1", "r2", "r3"])
    assert near_duplicate_pairs(h, max_distance=4) == [("t1", "r1", 2), ("t1", "r3", 1), ("r1", "r3", 3)]
    assert near_duplicate_pairs(h, max_distance=4, block=1) == near_duplicate_pairs(h, max_distance=4)


def test_split_cli_prints_summary(ws):
    res = runner.invoke(app, ["split", "-w", str(ws.root), "--seed", "42"])
    assert res.exit_code == 0, res.output
    assert "103" in res.output and "have no test image" in res.output


def test_split_rejects_bad_options(ws):
    res = runner.invoke(app, ["split", "-w", str(ws.root), "--test-size", "1.5"])
    assert res.exit_code == 2 and "--test-size must be between 0 and 1" in res.output


def test_split_cli_says_near_duplicates_were_kept_on_one_side(ws):
    m = ws.load_manifest()
    for a, b in ((0, 5), (1, 6)):  # two near-duplicate pairs (one bit apart) under other subjects
        m.loc[b, "phash"] = f"{int(m.at[a, 'phash'], 16) ^ 1:016x}"
    ws.save_manifest(m)
    res = runner.invoke(app, ["split", "-w", str(ws.root), "--seed", "42"])
    assert res.exit_code == 0, res.output
    assert "2 near-duplicate group(s) (4 images under different subjects) kept on one side" in " ".join(res.output.split())


# --- subjects (or near-duplicate groups) with images in two classes ---------------------------------------------------


def _one_side_and_a_training_image_per_class(labels, groups, test) -> None:
    sides = pd.Series(test).groupby(np.asarray(groups)).nunique()
    assert sides.max() == 1, f"on both sides: {sorted(sides[sides > 1].index)}"
    for lab in np.unique(labels):
        assert (~test[labels == lab]).any(), f"class {lab} has no training image"


def test_assign_test_keeps_a_subject_filed_under_two_classes_on_one_side():
    # s1 is the only subject of class A and also one of class B: it stays in training, all of it
    labels = np.array(["A", "A", "B", "B", "B", "C", "C", "C"])
    groups = np.array(["s1", "s1", "s1", "s2", "s3", "s4", "s5", "s6"])
    for seed in range(100):
        test = assign_test(labels, groups, test_size=0.34, seed=seed)
        assert not test[groups == "s1"].any(), seed
        _one_side_and_a_training_image_per_class(labels, groups, test)


def test_assign_test_moves_a_subject_back_to_training_with_all_of_its_images():
    # random class layouts where a third of the subjects also have a photo filed under another class
    for seed in range(60):
        rng = np.random.default_rng(seed)
        labels, groups = [], []
        for c in range(6):
            for s in range(int(rng.integers(1, 4))):
                labels += [f"c{c}"] * int(rng.integers(1, 3))
                groups += [f"c{c}s{s}"] * (len(labels) - len(groups))
        for g in rng.choice(np.unique(groups), size=len(set(groups)) // 3, replace=False):
            labels.append(f"c{int(rng.integers(0, 6))}")
            groups.append(g)
        labels, groups = np.array(labels), np.array(groups)
        for test_size in (0.25, 0.5):
            test = assign_test(labels, groups, test_size=test_size, seed=seed)
            _one_side_and_a_training_image_per_class(labels, groups, test)


def _reused_subject_ids_manifest() -> pd.DataFrame:
    """Subject ids reused across class folders (--subject-regex on ``<class>/<subject>_k.png``): s1 in A and B, s2 in
    A and D."""
    rng, hashes = np.random.default_rng(0), np.random.default_rng(1)
    rows = []
    layout = (("A", ["s1", "s2"]), ("B", ["s1", "s3", "s4"]), ("C", ["s5", "s6", "s7"]), ("D", ["s2", "s8"]))
    for lab, subjects in layout:
        for s in subjects:
            for k in range(int(rng.integers(1, 4))):
                rows.append({"image_id": f"{lab}{s}{k}".ljust(64, "0"), "path": f"/data/{lab}/{s}_{k}.png",
                             "label": lab, "subject_id": s, "source": "real",
                             "phash": f"{hashes.integers(0, 2**63):016x}"})
    return conform(pd.DataFrame(rows))


def _near_duplicate_copies_manifest() -> pd.DataFrame:
    """Copies of a photo filed under another class and subject (same perceptual hash): a1's photo as b1's (the only
    subject of class B), c1's photo as d2's."""
    rows = []
    for lab, subjects in (("A", ["a1", "a1", "a2"]), ("B", ["b1"]), ("C", ["c1", "c2", "c3"]), ("D", ["d1", "d2"]),
                          ("E", ["e1", "e2"])):
        for k, s in enumerate(subjects):
            rows.append({"image_id": f"{lab}{s}{k}".ljust(64, "0"), "path": f"/data/{lab}/{s}_{k}.png", "label": lab,
                         "subject_id": s, "source": "real", "phash": f"{(k + 1) * 7919 + ord(lab) * 104729:016x}"})
    copies = {"b1": "a1", "d2": "c1"}
    by_subject = {r["subject_id"]: r for r in rows}
    for copy, original in copies.items():
        by_subject[copy]["phash"] = by_subject[original]["phash"]  # the files do not exist: the hash decides
    return conform(pd.DataFrame(rows))


@pytest.mark.parametrize("manifest", [_reused_subject_ids_manifest, _near_duplicate_copies_manifest])
def test_split_keeps_a_subject_spanning_two_classes_on_one_side(tmp_path, manifest):
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.save_manifest(manifest())
    for seed in range(20):
        r = split(ws, test_size=0.5, folds=2, seed=seed)  # raised LeakageError for some seeds before
        m = ws.load_manifest()
        assert r.n_test > 0 and leakage_problems(m, near_duplicates=[]) == []
        groups = m["subject_id"].replace({"b1": "a1", "d2": "c1"})  # the near-duplicate copies: one group each
        test = (m["split"] == "test").to_numpy()
        _one_side_and_a_training_image_per_class(m["label"].to_numpy(), groups.to_numpy(), test)
