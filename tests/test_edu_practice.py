"""Practice (adaptive choice, FSRS scheduling) and quiz assembly (phenosynth.edu.practice)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from phenosynth.edu import practice as P
from phenosynth.errors import PhenosynthError

fsrs = pytest.importorskip("fsrs", reason="FSRS scheduling needs the edu extra: pip install 'phenosynth[edu]'")

CONDITIONS = ["A", "B", "C"]
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def history(rows: list[tuple[str, bool, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["condition_true", "correct", "response_ms"])


def test_three_fast_correct_answers_retire_a_condition_and_a_slow_one_does_not():
    s = P.PracticeSettings(retire_after=3, fast_ms=5000)
    h = history([("A", True, 900), ("A", False, 800), ("A", True, 1000), ("A", True, 1200), ("A", True, 1500),
                 ("B", True, 900), ("B", True, 9000), ("B", True, 900)])
    p = P.condition_progress(h, CONDITIONS, s)
    assert (p["A"].fluent_streak, p["A"].retired) == (3, True)  # the wrong answer reset the streak
    assert (p["B"].fluent_streak, p["B"].retired) == (1, False)  # a correct but slow answer breaks fluency
    assert (p["C"].n, p["C"].retired) == (0, False)
    w = P.condition_weights(p, s)
    assert w["A"] == 0.0
    # B: 1 + 4 * (1 - 4/5) + 1 * clip(900/5000 - 1) = 1.8; C unseen: 1 + 4 * 0.5 = 3
    assert w["B"] == pytest.approx(1.8) and w["C"] == pytest.approx(3.0)


def test_weak_and_slow_conditions_are_drawn_more_often():
    s = P.PracticeSettings()
    weak = [("A", False, 3000)] * 4
    slow = [("B", True, 12000)] * 4
    strong = [("C", True, 4000), ("C", True, 6000), ("C", True, 4000), ("C", False, 4000)]  # not retired
    h = history(weak + slow + strong + [("D", True, 1)])  # last trial D (not practised): no repeat rule in play
    w = P.condition_weights(P.condition_progress(h, CONDITIONS, s), s)
    # A: 1 + 4 * 5/6; B: 1 + 4 * 1/6 + (12000/5000 - 1); C: 1 + 4 * 2/6
    assert [w[c] for c in CONDITIONS] == pytest.approx([1 + 20 / 6, 1 + 4 / 6 + 1.4, 1 + 8 / 6])
    counts = Counter(P.next_condition(h, CONDITIONS, seed=seed) for seed in range(300))
    assert counts["A"] > counts["B"] > counts["C"] > 0  # wrong > slow > mostly right and fast


def test_next_condition_is_deterministic_avoids_repeats_and_ends_when_all_are_retired():
    h = history([("A", True, 900), ("B", False, 900)])
    picks = {P.next_condition(h, CONDITIONS, seed=7) for _ in range(5)}
    assert len(picks) == 1 and picks != {"B"}  # same seed and history: same trial; never the last condition again
    assert len({P.next_condition(h, CONDITIONS, seed=s) for s in range(30)}) == 2  # A and C both come up
    done = history([(c, True, 900) for c in CONDITIONS for _ in range(3)])
    assert P.next_condition(done, CONDITIONS, seed=0) is None
    only = history([("A", True, 900)] * 3 + [("B", False, 900)])
    assert {P.next_condition(only, ["A", "B"], seed=s) for s in range(10)} == {"B"}  # the only active one repeats


def test_next_image_shows_the_least_shown_image_first():
    images = pd.DataFrame({"image_id": ["a1", "a2", "a3", "b1"], "condition": ["A", "A", "A", "B"]})
    h = pd.DataFrame({"image_id": ["a1", "a2", "a1"], "condition_true": "A", "correct": True, "response_ms": 1})
    assert P.next_image("A", images, h) == "a3"
    assert P.next_image("A", images, h.iloc[:0]) == "a1"
    with pytest.raises(PhenosynthError, match="no image of condition 'C'"):
        P.next_image("C", images, h)


# --- FSRS through the real package -----------------------------------------------------------------------------------


def test_ratings_from_correctness_and_time():
    s = P.PracticeSettings(fast_ms=4000)
    assert [P.rating_from_answer(c, ms, s) for c, ms in
            ((False, 500), (True, 9000), (True, 1500), (True, 3000))] == [
        fsrs.Rating.Again, fsrs.Rating.Hard, fsrs.Rating.Easy, fsrs.Rating.Good]


def test_a_failed_card_is_due_sooner_than_a_good_one_and_good_reviews_space_out():
    good = P.new_card("t1", "A", NOW)
    failed = P.new_card("t1", "B", NOW)
    assert good.card_id == P.card_id("t1", "A") and good.due == NOW
    good, log = P.review(good, True, 3000, NOW)
    failed, _ = P.review(failed, False, 3000, NOW)
    assert log.rating == fsrs.Rating.Good and log.review_duration == 3000
    assert failed.due < good.due
    # review each when due, always right and fluent: the intervals grow to days
    card, when, gaps = P.new_card("t1", "C", NOW), NOW, []
    for _ in range(6):
        card, _ = P.review(card, True, 1000, when)
        gaps.append(card.due - when)
        when = card.due
    assert gaps[-1] > timedelta(days=7) and gaps == sorted(gaps)
    # a lapse after that brings the card back within the day
    lapsed, _ = P.review(card, False, 1000, when)
    assert lapsed.due - when < timedelta(days=1) < gaps[-1]


def test_fsrs_schedules_are_reproducible_and_cards_round_trip():
    def run():
        card = P.new_card("t9", "A", NOW)
        when = NOW
        for correct, ms in ((True, 1000), (True, 6000), (False, 2000), (True, 1000), (True, 800)):
            card, _ = P.review(card, correct, ms, when)
            when = card.due + timedelta(hours=1)
        return card

    a, b = run(), run()
    assert a.to_dict() == b.to_dict()
    assert fsrs.Card.from_dict(a.to_dict()).due == a.due


def test_due_conditions_and_naive_times_are_refused():
    cards = {"A": P.new_card("t", "A", NOW), "B": P.new_card("t", "B", NOW - timedelta(days=1)),
             "C": P.new_card("t", "C", NOW + timedelta(days=2))}
    assert P.due_conditions(cards, NOW) == ["B", "A"]
    with pytest.raises(PhenosynthError, match="timezone-aware"):
        P.due_conditions(cards, datetime(2026, 3, 2))


# --- quizzes ---------------------------------------------------------------------------------------------------------


def deck(per_condition: int = 5, conditions=("A", "B", "C", "D")) -> pd.DataFrame:
    return pd.DataFrame([{"image_id": f"{c}{i}", "condition": c} for c in conditions for i in range(per_condition)])


def test_confusability_from_a_confusion_matrix_by_hand():
    labels = ["A", "B", "C"]
    cm = pd.DataFrame([[8, 2, 0], [4, 6, 0], [0, 1, 9]], index=labels, columns=labels)
    conf = P.confusability_from_confusion(cm)
    # A-B: (2/10 + 4/10)/2 = 0.3; A-C: 0; B-C: (0/10 + 1/10)/2 = 0.05
    assert conf.loc["A", "B"] == pytest.approx(0.3) == conf.loc["B", "A"]
    assert conf.loc["B", "C"] == pytest.approx(0.05) and conf.loc["A", "C"] == 0
    assert P.most_confusable(conf, "C", 2) == ["B", "A"] and P.most_confusable(conf, "A", 1) == ["B"]


def test_confusability_from_prototypes_is_cosine_similarity():
    protos = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    conf = P.confusability_from_prototypes(protos, ["A", "B", "C"])
    assert conf.loc["A", "B"] == pytest.approx(0.8) and conf.loc["A", "C"] == pytest.approx(0.0)
    assert P.most_confusable(conf, "B", 2) == ["A", "C"]  # 0.8 vs 0.6
    with pytest.raises(PhenosynthError, match="one prototype row per condition"):
        P.confusability_from_prototypes(protos, ["A", "B"])


def test_a_quiz_is_balanced_seeded_and_fixed_or_random_order():
    d = deck()
    fixed = P.assemble_quiz(d, 10, seed=0)
    assert [q.condition for q in fixed] == list("ABCDABCDAB")
    assert len({q.image_id for q in fixed}) == 10 and all(q.choices == ("A", "B", "C", "D") for q in fixed)
    assert P.assemble_quiz(d, 10, seed=0) == fixed and P.assemble_quiz(d, 10, seed=1) != fixed
    shuffled = P.assemble_quiz(d, 10, seed=0, order="random")
    assert sorted(q.image_id for q in shuffled) == sorted(q.image_id for q in fixed)
    assert [q.condition for q in shuffled] != [q.condition for q in fixed]
    with pytest.raises(PhenosynthError, match="asks for 21 images; the deck has 20"):
        P.assemble_quiz(d, 21, seed=0)


def test_quiz_choices_are_the_k_most_confusable_conditions():
    labels = ["A", "B", "C", "D"]
    cm = pd.DataFrame([[5, 3, 2, 0], [3, 5, 0, 2], [1, 0, 9, 0], [0, 0, 0, 10]], index=labels, columns=labels)
    conf = P.confusability_from_confusion(cm)
    quiz = P.assemble_quiz(deck(), 8, seed=3, n_choices=3, confusability=conf)
    by_cond = {q.condition: set(q.choices) for q in quiz}
    assert by_cond["A"] == {"A", "B", "C"} and by_cond["D"] == {"D", "B", "A"}
    assert all(q.condition in q.choices and len(q.choices) == 3 for q in quiz)
    random_distractors = P.assemble_quiz(deck(), 8, seed=3, n_choices=2)
    assert all(len(set(q.choices)) == 2 and q.condition in q.choices for q in random_distractors)
    with pytest.raises(PhenosynthError, match="2 to 4 options"):
        P.assemble_quiz(deck(), 4, seed=0, n_choices=5)


def test_pre_post_split_holds_post_test_images_back_from_practice():
    s = P.pre_post_split(deck(per_condition=6), 2, 2, seed=0)
    pre, post, prac = (set(f["image_id"]) for f in (s.pre, s.post, s.practice))
    assert len(pre) == len(post) == 8 and len(prac) == 8
    assert not (pre & post) and not (post & prac) and not (pre & prac)
    assert (s.post.groupby("condition").size() == 2).all()
    assert P.pre_post_split(deck(per_condition=6), 2, 2, seed=0).post.equals(s.post)
    with pytest.raises(PhenosynthError, match="Condition 'A' has 4 image"):
        P.pre_post_split(deck(per_condition=4), 2, 2, seed=0)


def test_pre_post_split_asks_the_post_test_only_unseen_images_and_says_how_many_are_left():
    images = deck(per_condition=5, conditions=("A", "B"))
    plain = P.pre_post_split(images, 1, 2, seed=4)
    assert P.pre_post_split(images, 1, 2, seed=4, seen=()).post.equals(plain.post)  # nothing seen: the same split
    seen = {"A0", "A1", "A2", "B0"}  # A: 2 unseen (A3, A4), B: 4
    s = P.pre_post_split(images, 1, 2, seed=4, seen=seen)
    assert set(s.post["image_id"]) & seen == set() and sorted(s.post.loc[s.post["condition"] == "A", "image_id"]) == [
        "A3", "A4"]
    assert set(s.pre.loc[s.pre["condition"] == "A", "image_id"]) <= seen  # A has no unseen image left for it
    assert set(s.pre.loc[s.pre["condition"] == "B", "image_id"]) <= {"B1", "B2", "B3", "B4"}  # B still has some
    parts = [set(f["image_id"]) for f in (s.pre, s.post, s.practice)]
    assert sum(map(len, parts)) == 10 and set.union(*parts) == set(images["image_id"])  # a partition
    with pytest.raises(PhenosynthError) as err:
        P.pre_post_split(images, 1, 2, seed=4, seen=seen | {"A3", "B1", "B2", "B3"})
    assert str(err.value) == (
        "A post-test of 2 image(s) per condition needs that many images of each condition that the trainees have not "
        "been shown yet (in an earlier quiz, test or practice of this deck); unseen images left: 'A' 1, 'B' 1. Add "
        "images to the deck, or ask fewer post-test images.")


def test_practice_activity_counts_trials_and_due_cards_per_trainee_and_condition():
    trials = pd.DataFrame([("ann", 1, "A", True, 700, NOW), ("ann", 1, "A", True, 900, NOW),
                           ("ann", 2, "A", False, 4000, NOW), ("bob", 1, "B", False, 2500, NOW)],
                          columns=P.TRIAL_COLUMNS)
    cards = pd.DataFrame([("ann", 1, "A", NOW - timedelta(days=1)), ("ann", 2, "A", NOW + timedelta(hours=1)),
                          ("bob", 1, "B", NOW), ("cy", 1, "C", NOW - timedelta(days=9))], columns=P.CARD_COLUMNS)
    a = P.practice_activity(trials, cards, ["ann", "bob", "cy", "dee"], NOW)
    t = a.per_trainee.set_index("trainee")
    assert t["trials"].tolist() == [3, 1, 0, 0] and t.loc["ann", "accuracy"] == pytest.approx(2 / 3)
    assert t.loc["ann", "median_response_ms"] == 900 and np.isnan(t.loc["dee", "accuracy"])
    assert t["due"].tolist() == [1, 1, 1, 0] and t["cards"].tolist() == [2, 1, 1, 0]  # a card due at NOW is due
    assert t.loc["ann", "due_conditions"] == [(1, "A")] and t.loc["cy", "due_conditions"] == [(1, "C")]
    c = a.per_condition.set_index(["deck", "condition"])
    assert list(c.index) == [(1, "A"), (1, "B"), (1, "C"), (2, "A")]  # the same name in two decks: two rows
    assert c.loc[(1, "A"), ["trials", "trainees", "cards", "due"]].tolist() == [2, 1, 1, 1]
    assert c.loc[(2, "A"), ["trials", "accuracy", "due"]].tolist() == [1, 0.0, 0]
    assert c.loc[(1, "C"), "trials"] == 0 and c.loc[(1, "C"), "due"] == 1  # a card, no trial in the data
    empty = P.practice_activity(trials.iloc[0:0], cards.iloc[0:0], ["ann"], NOW)
    assert empty.per_trainee["trials"].tolist() == [0] and empty.per_condition.empty
    with pytest.raises(PhenosynthError, match="timezone-aware"):
        P.practice_activity(trials, cards, ["ann"], datetime(2026, 3, 2))
