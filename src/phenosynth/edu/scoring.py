"""Teaching statistics: pure functions over a frame of a trainee's (or a cohort's) answers.

An answers frame has one row per answered image, columns :data:`ANSWER_COLUMNS`:

- ``trainee`` (str), ``condition_true`` and ``condition_chosen`` (condition labels), ``correct`` (bool),
- ``confidence`` (int 1-5, the trainee's rating), ``response_ms`` (time to answer),
- ``phase``: ``pre`` | ``post`` (a test before / after learning) | ``quiz`` (a test on its own) | ``practice``,
- optional ``n_choices``: the number of answer options the image was shown with (default: every condition).

The numbers are those of Waikel et al. (JAMA Netw Open 2024; residents classified images of Kabuki and Noonan
syndromes with a confidence rating): accuracy, per condition **sensitivity and specificity** (one condition against
the rest), the confusion matrix, the calibration of the confidence ratings (Brier score, reliability table), the
median response time, the pre -> post change with a confidence interval, and the odds of a correct answer against
the odds of guessing (chance = 1 / number of options).

Confidence -> probability (:func:`confidence_probability`): a rating of 1 means "guessing" (probability ``1/k`` for
``k`` options) and 5 means "certain" (1.0), linearly in between: ``p = 1/k + (c - 1) / 4 * (1 - 1/k)``. With 4
options: 1 -> 0.25, 2 -> 0.4375, 3 -> 0.625, 4 -> 0.8125, 5 -> 1.0.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError

ANSWER_COLUMNS = ["trainee", "condition_true", "condition_chosen", "confidence", "response_ms", "phase", "correct"]
PHASES = ("pre", "post", "quiz", "practice")
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)


def check_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """``answers`` with its columns checked (raises :class:`PhenosynthError` naming what is wrong); ``correct`` as
    bool. ``correct`` must agree with ``condition_true == condition_chosen``."""
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise PhenosynthError(f"The answers lack the column(s) {', '.join(missing)} (need: {', '.join(ANSWER_COLUMNS)}).")
    bad_conf = ~answers["confidence"].isin(CONFIDENCE_LEVELS)
    if bad_conf.any():
        raise PhenosynthError(f"{int(bad_conf.sum())} answer(s) have a confidence outside 1-5 "
                              f"(e.g. {answers.loc[bad_conf, 'confidence'].iloc[0]!r}).")
    bad_phase = ~answers["phase"].isin(PHASES)
    if bad_phase.any():
        raise PhenosynthError(f"Unknown phase {answers.loc[bad_phase, 'phase'].iloc[0]!r} (use: {', '.join(PHASES)}).")
    out = answers.copy()
    out["correct"] = out["correct"].astype(bool)
    disagree = out["correct"] != (out["condition_true"].astype(str) == out["condition_chosen"].astype(str))
    if disagree.any():
        raise PhenosynthError(f"{int(disagree.sum())} answer(s) are marked correct/incorrect against their chosen "
                              "condition; 'correct' must equal condition_true == condition_chosen.")
    return out


def conditions_of(answers: pd.DataFrame) -> list[str]:
    """Every condition shown or chosen, sorted (the label space when the caller gives none)."""
    return sorted(set(answers["condition_true"].astype(str)) | set(answers["condition_chosen"].astype(str)))


def n_choices(answers: pd.DataFrame, conditions: Sequence[str]) -> np.ndarray:
    """Per answer, how many options it was chosen from: the ``n_choices`` column, else ``len(conditions)``."""
    if "n_choices" in answers.columns:
        k = answers["n_choices"].fillna(len(conditions)).to_numpy(dtype=float)
    else:
        k = np.full(len(answers), float(len(conditions)))
    if (k < 2).any():
        raise PhenosynthError("An answer was chosen from fewer than 2 options: chance and calibration are undefined.")
    return k


def accuracy(answers: pd.DataFrame) -> float:
    """Share of correct answers (NaN when there are none).

    >>> accuracy(pd.DataFrame({"correct": [True, False, True, True]}))
    0.75
    """
    return float(answers["correct"].mean()) if len(answers) else float("nan")


def confusion(answers: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """The confusion matrix (rows: the true condition, columns: the chosen one; counts), over all ``conditions``."""
    from sklearn.metrics import confusion_matrix

    labels = list(conditions)
    m = confusion_matrix(answers["condition_true"].astype(str), answers["condition_chosen"].astype(str), labels=labels)
    return pd.DataFrame(m, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="chosen"))


def sensitivity_specificity(answers: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """Per condition, one against the rest: ``condition, n_shown, tp, fn, fp, tn, sensitivity, specificity``.

    sensitivity = tp / (tp + fn): of the images of the condition, the share called that condition;
    specificity = tn / (tn + fp): of the images of other conditions, the share *not* called that condition.
    NaN where the denominator is 0 (a condition never shown, or only one condition shown).
    """
    from sklearn.metrics import multilabel_confusion_matrix

    labels = list(conditions)
    mcm = multilabel_confusion_matrix(answers["condition_true"].astype(str), answers["condition_chosen"].astype(str),
                                      labels=labels)  # (C, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp, fn, tp = (mcm[:, i, j] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    return pd.DataFrame({"condition": labels, "n_shown": tp + fn, "tp": tp, "fn": fn, "fp": fp, "tn": tn,
                         "sensitivity": sens, "specificity": spec})


def confidence_probability(confidence: Iterable[int] | np.ndarray, k: float | np.ndarray) -> np.ndarray:
    """The probability of being right that a confidence rating states: 1 -> ``1/k`` (a guess among ``k`` options),
    5 -> 1.0, linear in between (module docstring).

    >>> confidence_probability([1, 3, 5], 4).tolist()
    [0.25, 0.625, 1.0]
    """
    c = np.asarray(confidence, dtype=float)
    chance = 1.0 / np.asarray(k, dtype=float)
    return chance + (c - 1.0) / 4.0 * (1.0 - chance)


def brier_score(answers: pd.DataFrame, conditions: Sequence[str]) -> float:
    """Mean squared difference between the stated probability (:func:`confidence_probability`) and the outcome
    (1 = correct): 0 is perfect, lower is better (NaN when there are no answers)."""
    from sklearn.metrics import brier_score_loss

    if not len(answers):
        return float("nan")
    p = confidence_probability(answers["confidence"], n_choices(answers, conditions))
    return float(brier_score_loss(answers["correct"].astype(int), p, labels=[0, 1]))


def reliability(answers: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """The reliability table: per confidence level 1-5 (the natural bins), ``confidence, n, stated`` (mean stated
    probability), ``observed`` (share correct; NaN for an unused level). A calibrated trainee has observed ~ stated."""
    p = confidence_probability(answers["confidence"], n_choices(answers, conditions))
    frame = pd.DataFrame({"confidence": answers["confidence"].astype(int).to_numpy(), "stated": p,
                          "correct": answers["correct"].astype(float).to_numpy()})
    g = frame.groupby("confidence").agg(n=("correct", "size"), stated=("stated", "mean"), observed=("correct", "mean"))
    g = g.reindex(list(CONFIDENCE_LEVELS))
    g["n"] = g["n"].fillna(0).astype(int)
    return g.reset_index()


def median_response_ms(answers: pd.DataFrame) -> float:
    """Median time to answer, in milliseconds (NaN when there are no answers)."""
    return float(answers["response_ms"].median()) if len(answers) else float("nan")


@dataclass(frozen=True)
class PrePostChange:
    """Accuracy before and after learning, and the change with a confidence interval."""

    pre: float  # accuracy over the pre-test answers (of the trainees with both tests)
    post: float
    change: float  # post - pre (paired: mean of the per-trainee changes)
    ci_low: float
    ci_high: float
    level: float
    n_trainees: int  # trainees with both a pre- and a post-test
    method: str  # "paired t over trainees" | "paired bootstrap over trainees" | "bootstrap over answers"


def pre_post_change(answers: pd.DataFrame, *, method: str = "t", level: float = 0.95, n_boot: int = 2000,
                    seed: int = 0) -> PrePostChange:
    """The pre -> post change of accuracy with a ``level`` confidence interval.

    With two or more trainees who took both tests the change is paired by trainee: each trainee's post accuracy minus
    their pre accuracy; the interval is Student's t over those changes (``method="t"``) or a percentile bootstrap of
    their mean (``method="bootstrap"``, ``n_boot`` resamples, ``seed``). With one trainee the answers are resampled
    within each test (bootstrap of the difference of the two accuracies).
    """
    from scipy import stats

    if method not in ("t", "bootstrap"):
        raise PhenosynthError(f"Unknown interval method {method!r} (use: t, bootstrap).")
    tests = answers[answers["phase"].isin(["pre", "post"])]
    per = tests.groupby(["trainee", "phase"])["correct"].mean().unstack("phase")
    both = per.dropna(subset=["pre", "post"]) if {"pre", "post"} <= set(per.columns) else per.iloc[0:0]
    if both.empty:
        raise PhenosynthError("No trainee has answers in both a pre-test and a post-test: no change to measure.")
    paired = tests[tests["trainee"].isin(both.index)]
    pre, post = (float(paired.loc[paired["phase"] == ph, "correct"].mean()) for ph in ("pre", "post"))
    rng = np.random.default_rng(seed)
    alpha = 1.0 - level
    if len(both) >= 2:
        d = (both["post"] - both["pre"]).to_numpy(dtype=float)
        change = float(d.mean())
        if method == "t":
            sem = stats.sem(d)
            lo, hi = (change, change) if sem == 0 else stats.t.interval(level, len(d) - 1, loc=change, scale=sem)
            how = "paired t over trainees"
        else:
            res = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                                  rng=rng)
            lo, hi = res.confidence_interval
            how = "paired bootstrap over trainees"
    else:
        a = paired.loc[paired["phase"] == "pre", "correct"].to_numpy(dtype=float)
        b = paired.loc[paired["phase"] == "post", "correct"].to_numpy(dtype=float)
        change = post - pre
        boots = (rng.choice(b, (n_boot, len(b))).mean(1) - rng.choice(a, (n_boot, len(a))).mean(1))
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        how = "bootstrap over answers"
    return PrePostChange(pre=pre, post=post, change=change, ci_low=float(lo), ci_high=float(hi), level=level,
                         n_trainees=len(both), method=how)


@dataclass(frozen=True)
class OddsAgainstGuessing:
    """The odds of a correct answer over the odds of a guess (Waikel et al.'s measure), with an exact interval."""

    odds_ratio: float  # (p / (1 - p)) / (c / (1 - c)); inf when every answer is right, 0 when none is
    ci_low: float
    ci_high: float
    level: float
    p_value: float  # exact binomial test of p = c (two-sided)
    n: int
    n_correct: int
    chance: float  # c: the mean over answers of 1 / number of options


def _odds(p: float) -> float:
    return math.inf if p >= 1 else p / (1 - p)


def odds_ratio_vs_chance(answers: pd.DataFrame, conditions: Sequence[str], *, level: float = 0.95) -> OddsAgainstGuessing:
    """Odds of a correct answer against the odds of guessing among the options (chance ``1/k``): 1 = no better than
    guessing. The interval is the exact (Clopper-Pearson) interval of the share correct mapped to odds ratios; the
    p-value is the exact binomial test against the chance rate."""
    from scipy.stats import binomtest

    n, x = len(answers), int(answers["correct"].sum())
    if n == 0:
        raise PhenosynthError("No answers: the odds ratio against guessing is undefined.")
    chance = float(np.mean(1.0 / n_choices(answers, conditions)))
    test = binomtest(x, n, chance)
    ci = test.proportion_ci(confidence_level=level, method="exact")
    base = _odds(chance)
    return OddsAgainstGuessing(odds_ratio=_odds(x / n) / base, ci_low=_odds(ci.low) / base,
                               ci_high=_odds(ci.high) / base, level=level, p_value=float(test.pvalue), n=n,
                               n_correct=x, chance=chance)


@dataclass(frozen=True)
class Progress:
    """One trainee's (or a cohort's) numbers; frames for the charts and the CSV/JSON export."""

    who: str
    n_answers: int
    accuracy: float
    brier: float
    median_response_ms: float
    odds: OddsAgainstGuessing | None
    per_condition: pd.DataFrame  # sensitivity_specificity
    confusion: pd.DataFrame
    reliability: pd.DataFrame
    pre_post: PrePostChange | None

    def summary_row(self) -> dict[str, Any]:
        """One flat row (the summary CSV's)."""
        row: dict[str, Any] = {"who": self.who, "n_answers": self.n_answers, "accuracy": self.accuracy,
                               "brier": self.brier, "median_response_ms": self.median_response_ms}
        o = self.odds
        row |= {"odds_ratio_vs_chance": o.odds_ratio if o else np.nan, "odds_ci_low": o.ci_low if o else np.nan,
                "odds_ci_high": o.ci_high if o else np.nan, "odds_p_value": o.p_value if o else np.nan,
                "chance": o.chance if o else np.nan}
        pp = self.pre_post
        row |= {"pre": pp.pre if pp else np.nan, "post": pp.post if pp else np.nan,
                "change": pp.change if pp else np.nan, "change_ci_low": pp.ci_low if pp else np.nan,
                "change_ci_high": pp.ci_high if pp else np.nan}
        return row

    def to_json(self) -> str:
        """Everything as JSON (NaN and infinity as null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, (float, np.floating)):
                return None if not math.isfinite(float(v)) else float(v)
            if isinstance(v, np.integer):
                return int(v)
            return v

        doc = {"who": self.who, "summary": self.summary_row(),
               "odds": asdict(self.odds) if self.odds else None,
               "pre_post": asdict(self.pre_post) if self.pre_post else None,
               "per_condition": self.per_condition.to_dict(orient="records"),
               "confusion": {"labels": list(self.confusion.index), "counts": self.confusion.to_numpy().tolist()},
               "reliability": self.reliability.to_dict(orient="records")}
        return json.dumps(clean(doc), indent=2, ensure_ascii=False)


def progress(answers: pd.DataFrame, conditions: Sequence[str] | None = None, *, who: str = "",
             phases: Sequence[str] = ("pre", "post"), seed: int = 0) -> Progress:
    """Every number for the answers in ``phases`` (default: the tests, not practice); the pre -> post change when
    both tests were taken. ``conditions``: the label space (default: every condition in ``answers``)."""
    answers = check_answers(answers)
    labels = list(conditions) if conditions is not None else conditions_of(answers)
    scored = answers[answers["phase"].isin(list(phases))]
    try:
        pp = pre_post_change(answers, seed=seed)
    except PhenosynthError:
        pp = None
    return Progress(
        who=who, n_answers=len(scored), accuracy=accuracy(scored), brier=brier_score(scored, labels),
        median_response_ms=median_response_ms(scored),
        odds=odds_ratio_vs_chance(scored, labels) if len(scored) else None,
        per_condition=sensitivity_specificity(scored, labels), confusion=confusion(scored, labels),
        reliability=reliability(scored, labels), pre_post=pp)


def cohort_progress(answers: pd.DataFrame, conditions: Sequence[str] | None = None, *,
                    phases: Sequence[str] = ("pre", "post"), seed: int = 0) -> tuple[Progress, list[Progress]]:
    """``(cohort, per trainee)``: the cohort's numbers over all its answers (its pre -> post change paired by
    trainee) and each trainee's own, in trainee order."""
    answers = check_answers(answers)
    labels = list(conditions) if conditions is not None else conditions_of(answers)
    cohort = progress(answers, labels, who="cohort", phases=phases, seed=seed)
    trainees = [progress(g, labels, who=str(t), phases=phases, seed=seed)
                for t, g in answers.groupby("trainee", sort=True)]
    return cohort, trainees


def summary_frame(results: Sequence[Progress]) -> pd.DataFrame:
    """The summary CSV: one row per :class:`Progress` (trainees, then the cohort as the caller orders them)."""
    return pd.DataFrame([r.summary_row() for r in results])


def per_condition_frame(results: Sequence[Progress]) -> pd.DataFrame:
    """The per-condition CSV: ``who`` + :func:`sensitivity_specificity`'s columns, stacked."""
    return pd.concat([r.per_condition.assign(who=r.who) for r in results], ignore_index=True)[
        ["who", "condition", "n_shown", "tp", "fn", "fp", "tn", "sensitivity", "specificity"]]


__all__ = ["ANSWER_COLUMNS", "check_answers", "accuracy", "confusion", "sensitivity_specificity",
           "confidence_probability", "brier_score", "reliability", "median_response_ms", "pre_post_change",
           "PrePostChange", "odds_ratio_vs_chance", "OddsAgainstGuessing", "Progress", "progress", "cohort_progress",
           "summary_frame", "per_condition_frame"]
