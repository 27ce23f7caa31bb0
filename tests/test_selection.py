"""Selection strategies on hand-made candidates, and the workspace façade."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError
from phenosynth.registry import UnknownNameError
from phenosynth.synth.selection import (
    allocate_per_class,
    select,
    NotEnoughSyntheticError,
    select_for_training,
    strategy_names,
)


def candidates() -> pd.DataFrame:
    """Class A: 6 images (scores .9 .. .4), B: 3 images (.95 .85 .85 — a tie), C: 1 image (.1)."""
    rows = [(f"a{i}", "A", s) for i, s in enumerate([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])]
    rows += [("b0", "B", 0.95), ("b2", "B", 0.85), ("b1", "B", 0.85)]
    rows += [("c0", "C", 0.1)]
    return pd.DataFrame(rows, columns=["image_id", "label", "rank_score"])


def labels_of(ids: list[str]) -> Counter:
    return Counter(i[0].upper() for i in ids)


def test_registry_lists_every_strategy_and_rejects_unknown_names() -> None:
    assert strategy_names() == ["diverse", "diverse-score", "random", "top-global", "top-per-class"]
    with pytest.raises(UnknownNameError, match="top-per-class"):
        select(candidates(), "top-per-clas", 3)


def test_allocation_spreads_a_total_evenly_as_availability_allows() -> None:
    assert allocate_per_class({"A": 6, "B": 3, "C": 1}, 7) == {"A": 3, "B": 3, "C": 1}
    assert allocate_per_class({"A": 6, "B": 3, "C": 1}, 6) == {"A": 3, "B": 2, "C": 1}
    assert allocate_per_class({"A": 6, "B": 3, "C": 1}, 2) == {"A": 1, "B": 1, "C": 0}
    assert allocate_per_class({"A": 6, "B": 3, "C": 1}, 100) == {"A": 6, "B": 3, "C": 1}


def test_top_per_class_takes_the_best_of_each_class_with_ties_by_image_id() -> None:
    chosen = select(candidates(), "top-per-class", 6)
    assert labels_of(chosen) == {"A": 3, "B": 2, "C": 1}
    # best first; b1 beats b2 on the tie because its id sorts first
    assert chosen == ["b0", "a0", "b1", "a1", "a2", "c0"]
    # row order does not matter
    shuffled = candidates().sample(frac=1.0, random_state=3)
    assert select(shuffled, "top-per-class", 6) == chosen


def test_top_per_class_per_class_n() -> None:
    chosen = select(candidates(), "top-per-class", 2, per_class=True)
    assert labels_of(chosen) == {"A": 2, "B": 2, "C": 1}
    assert set(chosen) == {"a0", "a1", "b0", "b1", "c0"}


def test_top_global_ignores_classes() -> None:
    chosen = select(candidates(), "top-global", 4)
    assert chosen == ["b0", "a0", "b1", "b2"]
    assert "c0" not in select(candidates(), "top-global", 9)
    assert len(select(candidates(), "top-global", 1, per_class=True)) == 3  # 1 x 3 classes


def test_n_larger_than_available_takes_all_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="phenosynth.synth.selection"):
        for name in strategy_names():
            vectors = np.eye(len(candidates())) if name == "diverse" else None  # diverse needs its vectors
            chosen = select(candidates(), name, 50, vectors=vectors)
            assert sorted(chosen) == sorted(candidates()["image_id"]), name
    assert "only 10 are available" in caplog.text


def test_random_is_stratified_and_deterministic_by_seed() -> None:
    a = select(candidates(), "random", 6, seed=1)
    assert labels_of(a) == {"A": 3, "B": 2, "C": 1}
    assert select(candidates().sample(frac=1.0, random_state=0), "random", 6, seed=1) == a
    draws = {tuple(select(candidates(), "random", 6, seed=s)) for s in range(10)}
    assert len(draws) > 1
    # random needs no scores
    assert len(select(candidates().drop(columns="rank_score"), "random", 4)) == 4


def test_diverse_skips_near_duplicates_by_vector() -> None:
    cand = pd.DataFrame(
        {"image_id": ["x0", "x1", "x2", "x3"], "label": "X", "rank_score": [0.9, 0.8, 0.7, 0.6]}
    )
    # x1 is a near-copy of x0; x2 and x3 point elsewhere
    vectors = np.array([[1.0, 0.0, 0.0], [0.99, 0.01, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert select(cand, "top-per-class", 2) == ["x0", "x1"]
    assert select(cand, "diverse", 2, vectors=vectors) == ["x0", "x2"]
    # the quota is still met from skipped images when nothing else is left
    assert select(cand, "diverse", 4, vectors=vectors) == ["x0", "x1", "x2", "x3"]


def test_diverse_without_vectors_is_an_error_and_diverse_score_is_the_explicit_option() -> None:
    cand = pd.DataFrame(
        {"image_id": ["x0", "x1", "x2", "x3"], "label": "X", "rank_score": [0.9, 0.8999, 0.5, 0.1]}
    )
    with pytest.raises(PhenosynthError, match="diverse selection needs the representation vectors.*diverse-score"):
        select(cand, "diverse", 2)
    assert select(cand, "diverse-score", 2) == ["x0", "x2"]


def test_score_strategies_need_scores() -> None:
    with pytest.raises(PhenosynthError, match="rank_score"):
        select(candidates().drop(columns="rank_score"), "top-per-class", 3)


def _workspace_with_synthetic(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    real = pd.DataFrame(
        {
            "image_id": ["rA", "rB", "rC", "rT"],
            "path": ["r/a.png", "r/b.png", "r/c.png", "r/t.png"],
            "label": ["A", "B", "C", "A"],
            "subject_id": ["sa", "sb", "sc", "st"],
            "source": "real",
            "split": ["train", "train", "train", "test"],
        }
    )
    cand = candidates()
    synth = pd.DataFrame(
        {
            "image_id": cand["image_id"],
            "path": [f"synthetic/run/{i}.png" for i in cand["image_id"]],
            "label": cand["label"],
            "source": "synthetic",
            "generator": "shape-warp",
            "parents": [["rA"] if lab == "A" else ["rB"] if lab == "B" else ["rC"] for lab in cand["label"]],
            "split": "train",
        }
    )
    excluded = pd.DataFrame(
        {"image_id": ["zz"], "path": ["synthetic/run/zz.png"], "label": ["A"], "source": "synthetic",
         "split": "train", "exclude_reason": ["parent in test set"]}
    )
    ws.save_manifest(pd.concat([real, synth, excluded], ignore_index=True))
    return ws


def test_facade_asks_for_rank_when_scores_are_missing(tmp_path) -> None:
    ws = _workspace_with_synthetic(tmp_path)
    manifest = ws.load_manifest()
    with pytest.raises(PhenosynthError, match="phenosynth rank -w"):
        select_for_training(ws, manifest, strategy="top-per-class", n=6)
    # random needs no scores, and never picks an excluded image
    chosen = select_for_training(ws, manifest, strategy="random", n=None, seed=0)  # n None: all
    assert sorted(chosen) == sorted(candidates()["image_id"])


def test_facade_refuses_an_n_above_what_is_available_unless_allowed_fewer(tmp_path) -> None:
    ws = _workspace_with_synthetic(tmp_path)
    manifest = ws.load_manifest()
    n_usable = len(candidates())  # the excluded image does not count
    with pytest.raises(NotEnoughSyntheticError, match=f"n = 100 synthetic images asked for, but only {n_usable} are "
                                                      "available in fold 3.*--allow-fewer"):
        select_for_training(ws, manifest, strategy="random", n=100, seed=0, where="fold 3")
    with pytest.raises(NotEnoughSyntheticError, match="per class.*only 1 are available in the class with the fewest"):
        select_for_training(ws, manifest, strategy="random", n=2, per_class=True)  # class C has 1
    chosen = select_for_training(ws, manifest, strategy="random", n=100, seed=0, allow_fewer=True)
    assert sorted(chosen) == sorted(candidates()["image_id"])


def test_facade_uses_stored_scores_and_leaves_unranked_out(tmp_path) -> None:
    ws = _workspace_with_synthetic(tmp_path)
    ranked = candidates()[candidates()["image_id"] != "a0"]  # a0: no face found
    ranking = pd.DataFrame(
        {"image_id": ranked["image_id"], "representation": "rdface25", "rank_score": ranked["rank_score"],
         "own_class_rank": 1}
    )
    other = ranking.assign(representation="shape68", rank_score=-ranking["rank_score"])
    pd.concat([ranking, other]).to_parquet(ws.root / "ranking.parquet", index=False)
    manifest = ws.load_manifest()
    chosen = select_for_training(ws, manifest, strategy="top-per-class", n=6)
    assert chosen == ["b0", "b1", "a1", "a2", "a3", "c0"]
    flipped = select_for_training(ws, manifest, strategy="top-per-class", n=1, per_class=True,
                                  representation="shape68")
    assert set(flipped) == {"a5", "b1", "c0"}  # b1, b2 tie: b1 sorts first
    assert labels_of(select_for_training(ws, manifest, strategy="diverse-score", n=6)) == {"A": 3, "B": 2, "C": 1}
    # diverse needs representation vectors; this workspace has no faces.parquet: an error, never a silent fallback
    with pytest.raises(PhenosynthError, match="diverse selection needs 'rdface25' vectors.*--selection diverse-score"):
        select_for_training(ws, manifest, strategy="diverse", n=6)
