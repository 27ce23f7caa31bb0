"""Teaching statistics against hand-computed values (phenosynth.edu.scoring)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phenosynth.edu import scoring as S
from phenosynth.errors import PhenosynthError

CONDITIONS = ["A", "B", "C"]
TRUE = list("AAAABBBCCC")
CHOSEN = list("AABABBACCB")
CONF = [5, 4, 5, 3, 2, 5, 1, 4, 3, 2]
MS = [1200, 3400, 800, 5000, 2600, 1500, 9000, 2100, 4000, 3000]


def answers(true=TRUE, chosen=CHOSEN, conf=CONF, ms=MS, phase="post", trainee="t1") -> pd.DataFrame:
    return pd.DataFrame({"trainee": trainee, "condition_true": true, "condition_chosen": chosen, "confidence": conf,
                         "response_ms": ms, "phase": phase, "correct": [t == c for t, c in zip(true, chosen)]})


def test_accuracy_confusion_sensitivity_specificity_by_hand():
    a = answers()
    assert S.accuracy(a) == pytest.approx(0.7)
    cm = S.confusion(a, CONDITIONS)
    assert cm.to_numpy().tolist() == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    ss = S.sensitivity_specificity(a, CONDITIONS).set_index("condition")
    # A: 3 of its 4 images called A; of the 6 others, one (a B) called A
    assert ss.loc["A", ["tp", "fn", "fp", "tn"]].tolist() == [3, 1, 1, 5]
    assert ss["sensitivity"].tolist() == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert ss["specificity"].tolist() == pytest.approx([5 / 6, 5 / 7, 7 / 7])


def test_a_condition_never_shown_has_no_sensitivity_but_a_specificity():
    ss = S.sensitivity_specificity(answers(), ["A", "B", "C", "D"]).set_index("condition")
    assert np.isnan(ss.loc["D", "sensitivity"]) and ss.loc["D", "n_shown"] == 0
    assert ss.loc["D", "specificity"] == 1.0  # never chosen among the 10 images of other conditions


def test_confidence_mapping_brier_and_reliability_by_hand():
    # k = 3 options: 1 -> 1/3, 2 -> 1/2, 3 -> 2/3, 4 -> 5/6, 5 -> 1
    assert S.confidence_probability([1, 2, 3, 4, 5], 3) == pytest.approx([1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0])
    a = answers()
    # squared errors: 0, 1/36, 1, 4/36, 9/36, 0, 4/36, 1/36, 4/36, 9/36 -> sum 17/9 over 10 answers
    assert S.brier_score(a, CONDITIONS) == pytest.approx(17 / 90)
    rel = S.reliability(a, CONDITIONS)
    assert rel["confidence"].tolist() == [1, 2, 3, 4, 5] and rel["n"].tolist() == [1, 2, 2, 2, 3]
    assert rel["stated"].tolist() == pytest.approx([1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0])
    assert rel["observed"].tolist() == pytest.approx([0, 0.5, 1, 1, 2 / 3])


def test_n_choices_column_changes_chance_and_calibration():
    a = answers().assign(n_choices=2)  # shown with 2 options: rating 1 = 0.5
    assert S.confidence_probability([1], 2)[0] == 0.5
    o = S.odds_ratio_vs_chance(a, CONDITIONS)
    assert o.chance == 0.5 and o.odds_ratio == pytest.approx((0.7 / 0.3) / 1.0)


def test_median_response_time():
    assert S.median_response_ms(answers()) == 2800.0


def test_odds_ratio_against_guessing_by_hand():
    from scipy.stats import beta, binom

    o = S.odds_ratio_vs_chance(answers(), CONDITIONS)
    assert (o.n, o.n_correct, o.chance) == (10, 7, pytest.approx(1 / 3))
    assert o.odds_ratio == pytest.approx((7 / 3) / (1 / 2))  # odds 0.7/0.3 against odds of a 1-in-3 guess
    lo, hi = beta.ppf(0.025, 7, 4), beta.ppf(0.975, 8, 3)  # Clopper-Pearson
    assert o.ci_low == pytest.approx(lo / (1 - lo) / 0.5) and o.ci_high == pytest.approx(hi / (1 - hi) / 0.5)
    pmf = binom.pmf(np.arange(11), 10, 1 / 3)  # two-sided exact test: outcomes no likelier than 7 of 10
    assert o.p_value == pytest.approx(pmf[pmf <= pmf[7] * (1 + 1e-7)].sum())


def test_guessing_gives_an_odds_ratio_near_one_and_all_right_gives_infinity():
    g = answers(chosen=list("ABCABCABCA"))  # cycling through the options: right at 0, 3, 4, 8 -> 4 of 10
    assert int(g["correct"].sum()) == 4
    o = S.odds_ratio_vs_chance(g, CONDITIONS)
    assert o.odds_ratio == pytest.approx((4 / 6) / 0.5) and o.ci_low < 1 < o.ci_high
    perfect = S.odds_ratio_vs_chance(answers(chosen=TRUE), CONDITIONS)
    assert perfect.odds_ratio == np.inf and perfect.ci_low > 1 and perfect.ci_high == np.inf


def _pre_post() -> pd.DataFrame:
    # per trainee (pre, post) correct out of 2: t1 (1, 2), t2 (0, 1), t3 (1, 1) -> changes 0.5, 0.5, 0
    rows = []
    for t, (pre, post) in {"t1": (1, 2), "t2": (0, 1), "t3": (1, 1)}.items():
        for phase, k in (("pre", pre), ("post", post)):
            for i in range(2):
                rows.append({"trainee": t, "condition_true": "A", "condition_chosen": "A" if i < k else "B",
                             "confidence": 3, "response_ms": 1000, "phase": phase, "correct": i < k})
    return pd.DataFrame(rows)


def test_pre_post_change_paired_t_interval_by_hand():
    c = S.pre_post_change(_pre_post())
    assert (c.pre, c.post, c.n_trainees) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 3)
    assert c.change == pytest.approx(1 / 3)
    # sd of (0.5, 0.5, 0) = sqrt(1/12), sem = sqrt(1/12)/sqrt(3) = 1/6, t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 / 6
    assert (c.ci_low, c.ci_high) == (pytest.approx(1 / 3 - half), pytest.approx(1 / 3 + half))
    assert c.method == "paired t over trainees"


def test_pre_post_bootstrap_is_seeded_and_one_trainee_resamples_answers():
    a = _pre_post()
    b1, b2 = (S.pre_post_change(a, method="bootstrap", seed=3) for _ in range(2))
    assert b1 == b2 and b1.ci_low <= b1.change <= b1.ci_high and b1.ci_high <= 0.5  # mean of 3 in {0, .5}
    one = S.pre_post_change(a[a["trainee"] == "t1"], seed=0)
    assert one.method == "bootstrap over answers" and one.change == 0.5 and one.n_trainees == 1
    assert one.ci_low <= 0.5 <= one.ci_high
    with pytest.raises(PhenosynthError, match="both a pre-test and a post-test"):
        S.pre_post_change(a[a["phase"] == "pre"])


def test_cohort_and_trainee_progress_and_exports():
    a = pd.concat([answers(trainee="t1"), answers(chosen=TRUE, trainee="t2"), _pre_post()], ignore_index=True)
    cohort, per = S.cohort_progress(a, CONDITIONS)
    assert [p.who for p in per] == ["t1", "t2", "t3"]
    t1 = per[0]
    assert t1.n_answers == 14 and t1.accuracy == pytest.approx((7 + 1 + 2) / 14)  # 10 answers + 2 pre, 2 post
    assert per[1].per_condition["sensitivity"].tolist()[1:] == [1.0, 1.0]
    assert cohort.n_answers == 10 + 10 + 12 and cohort.pre_post.n_trainees == 3
    summary = S.summary_frame([*per, cohort])
    assert summary["who"].tolist() == ["t1", "t2", "t3", "cohort"]
    assert summary.loc[3, "accuracy"] == pytest.approx((7 + 10 + 6) / 32)
    pc = S.per_condition_frame([*per, cohort])
    assert len(pc) == 4 * 3 and list(pc.columns[:2]) == ["who", "condition"]
    doc = json.loads(per[1].to_json())  # t2: every post answer right -> infinite odds ratio becomes null
    assert doc["confusion"]["labels"] == CONDITIONS and doc["summary"]["who"] == "t2"
    assert doc["per_condition"][0]["condition"] == "A" and "NaN" not in per[1].to_json()


def test_practice_answers_are_left_out_of_the_test_statistics_by_default():
    a = pd.concat([answers(), answers(chosen=TRUE, phase="practice")], ignore_index=True)
    assert S.progress(a, CONDITIONS).accuracy == pytest.approx(0.7)
    assert S.progress(a, CONDITIONS, phases=["practice"]).accuracy == 1.0


@pytest.mark.parametrize("change, message", [
    ({"confidence": 6}, "confidence outside 1-5"),
    ({"phase": "final"}, "Unknown phase 'final'"),
    ({"correct": True}, "'correct' must equal"),
])
def test_bad_answers_are_refused_with_a_clear_message(change, message):
    a = answers().assign(**change)
    with pytest.raises(PhenosynthError, match=message):
        S.progress(a, CONDITIONS)
    with pytest.raises(PhenosynthError, match="lack the column"):
        S.check_answers(a.drop(columns=["response_ms"]))
