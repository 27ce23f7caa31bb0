"""Practice and quizzes: the pure logic of what a trainee sees next (no database, no web).

- **Perceptual-learning practice** (Kellman's perceptual learning modules): many short classification trials with
  immediate feedback. The next condition is drawn at random with weights that grow with the trainee's error rate
  and slowness on it (:func:`condition_weights`); a condition is *retired* once the last ``retire_after`` answers on
  it were correct and faster than ``fast_ms`` (Kellman's mastery criterion: accuracy **and** fluency); the condition
  just shown is not shown again straight away. Deterministic: the draw is seeded by ``(seed, number of trials so
  far)``, so the same history and seed give the same next trial.
- **Spaced repetition across days** with FSRS (the ``fsrs`` package; ``pip install 'phenosynth[edu]'``): one card per
  (trainee, condition); each practice answer is a review rated from correctness and response time
  (:func:`rating_from_answer`); cards serialise with ``Card.to_dict()`` / ``Card.from_dict()``.
- **Quizzes**: N images, fixed or random order, the options either every condition of the deck or the ``k`` most
  confusable ones (:func:`confusability_from_confusion`, :func:`confusability_from_prototypes`), and a pre-test /
  post-test split that holds images back from practice (:func:`pre_post_split`).

A practice history is a frame of one trainee's practice answers in the order given, with at least the columns
``condition_true``, ``correct``, ``response_ms`` (:mod:`phenosynth.edu.scoring`'s answer columns).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Collection, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from phenosynth._optional import require
from phenosynth.errors import PhenosynthError

if TYPE_CHECKING:
    import fsrs


# --- perceptual-learning practice ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PracticeSettings:
    """How practice adapts. Times in milliseconds."""

    retire_after: int = 3  # consecutive correct answers, each faster than fast_ms, retire a condition
    fast_ms: float = 5000.0  # a fluent answer (Kellman's response-time target)
    error_weight: float = 4.0  # weight added per unit of (smoothed) error rate
    slow_weight: float = 1.0  # weight added per multiple of fast_ms the median correct answer took beyond fast_ms
    max_slowness: float = 3.0  # cap on that multiple
    base_weight: float = 1.0  # every active condition's weight floor


@dataclass(frozen=True)
class ConditionProgress:
    """A trainee's practice so far on one condition."""

    condition: str
    n: int
    n_correct: int
    fluent_streak: int  # trailing run of correct answers faster than fast_ms
    median_correct_ms: float  # NaN before the first correct answer
    retired: bool


def condition_progress(history: pd.DataFrame, conditions: Sequence[str],
                       settings: PracticeSettings = PracticeSettings()) -> dict[str, ConditionProgress]:
    """condition -> :class:`ConditionProgress` for every condition of ``conditions`` (unseen ones included)."""
    shown = history["condition_true"].astype(str).to_numpy()
    right = history["correct"].to_numpy(dtype=bool)
    ms = history["response_ms"].to_numpy(dtype=float)
    out = {}
    for cond in conditions:
        mine = shown == cond
        correct, took = right[mine], ms[mine]
        slips = np.flatnonzero(~(correct & (took <= settings.fast_ms)))
        streak = len(correct) - (int(slips[-1]) + 1 if len(slips) else 0)
        out[cond] = ConditionProgress(condition=cond, n=len(correct), n_correct=int(correct.sum()),
                                      fluent_streak=streak,
                                      median_correct_ms=float(np.median(took[correct])) if correct.any() else np.nan,
                                      retired=streak >= settings.retire_after)
    return out


def condition_weights(progress: Mapping[str, ConditionProgress],
                      settings: PracticeSettings = PracticeSettings()) -> dict[str, float]:
    """condition -> unnormalised draw weight, 0 for a retired condition:
    ``base + error_weight * (1 - (n_correct + 1) / (n + 2)) + slow_weight * clip(median_correct_ms / fast_ms - 1,
    0, max_slowness)``. The error rate is smoothed (Laplace: an unseen condition counts as 50 % wrong), and slowness
    counts only correct answers (a wrong answer already weighs through the error rate).

    >>> p = ConditionProgress("A", n=4, n_correct=2, fluent_streak=0, median_correct_ms=10000.0, retired=False)
    >>> condition_weights({"A": p})["A"]  # 1 + 4 * (1 - 3/6) + 1 * (10000/5000 - 1)
    4.0
    """
    out = {}
    for cond, p in progress.items():
        if p.retired:
            out[cond] = 0.0
            continue
        error = 1.0 - (p.n_correct + 1) / (p.n + 2)
        slow = 0.0 if p.median_correct_ms != p.median_correct_ms else float(
            np.clip(p.median_correct_ms / settings.fast_ms - 1.0, 0.0, settings.max_slowness))
        out[cond] = settings.base_weight + settings.error_weight * error + settings.slow_weight * slow
    return out


def next_condition(history: pd.DataFrame, conditions: Sequence[str], *, seed: int,
                   settings: PracticeSettings = PracticeSettings()) -> str | None:
    """The condition of the next practice trial, or None when every condition is retired (the module is done).

    Drawn with :func:`condition_weights`, never the condition of the last trial while another is active; the
    random draw is seeded by ``(seed, len(history))``.
    """
    if not conditions:
        raise PhenosynthError("Practice needs at least one condition.")
    weights = condition_weights(condition_progress(history, conditions, settings), settings)
    names = sorted(weights)
    w = np.array([weights[c] for c in names])
    if len(history) and (w > 0).sum() > 1:
        last = str(history["condition_true"].iloc[-1])
        if last in weights:
            w[names.index(last)] = 0.0
    if not (w > 0).any():
        return None
    rng = np.random.default_rng([seed, len(history)])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def next_image(condition: str, images: pd.DataFrame, history: pd.DataFrame) -> str:
    """The image of ``condition`` to show next: the one shown least often so far in ``history`` (column
    ``image_id``; ties: the earliest in ``images``' order). ``images``: ``image_id, condition``."""
    pool = images.loc[images["condition"].astype(str) == condition, "image_id"].astype(str).tolist()
    if not pool:
        raise PhenosynthError(f"The deck has no image of condition '{condition}'.")
    shown = history["image_id"].astype(str).value_counts() if "image_id" in history.columns else pd.Series(dtype=int)
    return min(pool, key=lambda i: (int(shown.get(i, 0)), pool.index(i)))


# --- spaced repetition (FSRS) ----------------------------------------------------------------------------------------


def _fsrs() -> "fsrs":
    return require("fsrs", extra="edu", purpose="spaced-repetition practice")


def scheduler(desired_retention: float = 0.9) -> "fsrs.Scheduler":
    """The FSRS scheduler practice uses: the package's default parameters, no interval fuzzing (fuzz draws from
    Python's global random state; without it the same reviews give the same due dates)."""
    return _fsrs().Scheduler(desired_retention=desired_retention, enable_fuzzing=False)


def card_id(trainee: str, condition: str) -> int:
    """A stable card id per (trainee, condition): the first 6 bytes of a SHA-256 (FSRS's own default is the clock).

    >>> card_id("t1", "A") == card_id("t1", "A") != card_id("t1", "B")
    True
    """
    return int.from_bytes(hashlib.sha256(f"{trainee}\x00{condition}".encode()).digest()[:6], "big")


def new_card(trainee: str, condition: str, now: datetime) -> "fsrs.Card":
    """A new card for (trainee, condition), due at ``now`` (timezone-aware, UTC)."""
    return _fsrs().Card(card_id=card_id(trainee, condition), due=_utc(now))


def rating_from_answer(correct: bool, response_ms: float, settings: PracticeSettings = PracticeSettings()
                       ) -> "fsrs.Rating":
    """FSRS rating of a practice answer: wrong -> Again; right but slower than twice ``fast_ms`` -> Hard; right
    within ``fast_ms`` / 2 -> Easy; otherwise Good."""
    Rating = _fsrs().Rating
    if not correct:
        return Rating.Again
    if response_ms > 2 * settings.fast_ms:
        return Rating.Hard
    return Rating.Easy if response_ms <= settings.fast_ms / 2 else Rating.Good


def review(card: "fsrs.Card", correct: bool, response_ms: float, when: datetime, *,
           sched: "fsrs.Scheduler | None" = None, settings: PracticeSettings = PracticeSettings()
           ) -> tuple["fsrs.Card", "fsrs.ReviewLog"]:
    """``card`` after a practice answer at ``when`` (its new due date in ``card.due``) and the review log."""
    sched = sched or scheduler()
    return sched.review_card(card, rating_from_answer(correct, response_ms, settings), review_datetime=_utc(when),
                             review_duration=int(response_ms))


def due_conditions(cards: Mapping[str, "fsrs.Card"], now: datetime) -> list[str]:
    """Conditions whose card is due at ``now``, most overdue first (ties by name)."""
    now = _utc(now)
    return [c for c, card in sorted(cards.items(), key=lambda kv: (kv[1].due, kv[0])) if card.due <= now]


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise PhenosynthError("Times for spaced repetition must be timezone-aware (UTC).")
    return t.astimezone(timezone.utc)


# --- quizzes ---------------------------------------------------------------------------------------------------------


def confusability_from_confusion(confusion: pd.DataFrame) -> pd.DataFrame:
    """Symmetric confusability of two conditions from a confusion matrix (rows true, columns chosen, same labels):
    the mean of the two directions' error rates, ``(C[i, j] / n_i + C[j, i] / n_j) / 2``; diagonal NaN."""
    c = confusion.to_numpy(dtype=float)
    rows = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(rows > 0, c / np.where(rows > 0, rows, 1), 0.0)
    sym = (rate + rate.T) / 2
    np.fill_diagonal(sym, np.nan)
    return pd.DataFrame(sym, index=confusion.index, columns=confusion.index)


def confusability_from_prototypes(prototypes: np.ndarray, conditions: Sequence[str]) -> pd.DataFrame:
    """Confusability as the cosine similarity of condition prototypes (``prototypes``: (C, d), e.g. mean embeddings
    of each condition's images); diagonal NaN."""
    from sklearn.metrics.pairwise import cosine_similarity

    p = np.asarray(prototypes, dtype=float)
    if p.ndim != 2 or len(p) != len(conditions):
        raise PhenosynthError(f"Need one prototype row per condition: got {p.shape} for {len(conditions)} conditions.")
    s = cosine_similarity(p)
    np.fill_diagonal(s, np.nan)
    return pd.DataFrame(s, index=list(conditions), columns=list(conditions))


def most_confusable(confusability: pd.DataFrame, condition: str, n: int) -> list[str]:
    """The ``n`` conditions most confusable with ``condition`` (highest first; ties by name)."""
    row = confusability.loc[condition].drop(condition)
    order = sorted(row.index, key=lambda c: (-(row[c] if row[c] == row[c] else -np.inf), str(c)))
    return [str(c) for c in order[:n]]


@dataclass(frozen=True)
class QuizItem:
    image_id: str
    condition: str  # the true condition
    choices: tuple[str, ...]  # the options shown, the true condition among them


def assemble_quiz(images: pd.DataFrame, n: int, *, seed: int, order: Literal["fixed", "random"] = "fixed",
                  n_choices: int | None = None, confusability: pd.DataFrame | None = None,
                  conditions: Sequence[str] | None = None) -> list[QuizItem]:
    """A quiz of ``n`` images of ``images`` (``image_id, condition``), balanced over conditions (round robin over
    the conditions, a seeded random image of each in turn).

    ``order``: ``fixed`` keeps the round-robin order (condition by condition, sorted), ``random`` shuffles it.
    ``n_choices``: None offers every condition (sorted); ``k`` offers the true condition and the ``k - 1`` most
    confusable ones by ``confusability`` (or ``k - 1`` seeded random ones without it), in a seeded random order.
    ``conditions``: the deck's label space (default: the conditions of ``images``).
    """
    rng = np.random.default_rng(seed)
    labels = sorted(map(str, conditions if conditions is not None else images["condition"].unique()))
    if n_choices is not None and not 2 <= n_choices <= len(labels):
        raise PhenosynthError(f"A question needs 2 to {len(labels)} options (the deck's conditions); got {n_choices}.")
    pools = {c: list(rng.permutation(images.loc[images["condition"].astype(str) == c, "image_id"].astype(str)))
             for c in labels}
    if n > sum(map(len, pools.values())):
        raise PhenosynthError(f"The quiz asks for {n} images; the deck has {sum(map(len, pools.values()))}.")
    picked: list[tuple[str, str]] = []
    while len(picked) < n:
        for c in labels:
            if pools[c] and len(picked) < n:
                picked.append((pools[c].pop(), c))
    if order == "random":
        picked = [picked[i] for i in rng.permutation(len(picked))]
    elif order != "fixed":
        raise PhenosynthError(f"Unknown quiz order {order!r} (use: fixed, random).")
    items = []
    for image_id, cond in picked:
        if n_choices is None:
            choices = tuple(labels)
        else:
            others = (most_confusable(confusability, cond, n_choices - 1) if confusability is not None
                      else list(rng.choice([c for c in labels if c != cond], n_choices - 1, replace=False)))
            choices = tuple(str(c) for c in rng.permutation([cond, *others]))
        items.append(QuizItem(image_id=image_id, condition=cond, choices=choices))
    return items


# --- a cohort's practice at a glance (the educator's page) ------------------------------------------------------------

#: :func:`practice_activity`'s inputs: one practice trial a row, one FSRS card a row
TRIAL_COLUMNS = ["trainee", "deck", "condition", "correct", "response_ms", "answered_at"]
CARD_COLUMNS = ["trainee", "deck", "condition", "due"]


@dataclass(frozen=True)
class PracticeActivity:
    """A group's practice: ``per_trainee`` (trainee, trials, accuracy, median_response_ms, last_trial, cards, due,
    due_conditions: [(deck, condition), ...]) has a row for every trainee asked about, practised or not;
    ``per_condition`` (deck, condition, trials, accuracy, median_response_ms, trainees, cards, due) a row for every
    (deck, condition) practised or with a card. ``due``: cards due for review by ``due_by``; accuracy and median NaN
    without a trial."""

    per_trainee: pd.DataFrame
    per_condition: pd.DataFrame
    due_by: datetime


def _trial_stats(trials: pd.DataFrame) -> dict[str, float]:
    return {"trials": len(trials),
            "accuracy": float(trials["correct"].mean()) if len(trials) else np.nan,
            "median_response_ms": float(trials["response_ms"].median()) if len(trials) else np.nan}


def practice_activity(trials: pd.DataFrame, cards: pd.DataFrame, trainees: Sequence[str],
                      due_by: datetime) -> PracticeActivity:
    """Trials, accuracy, median response time and FSRS cards due, per trainee and per (deck, condition).

    ``trials``: :data:`TRIAL_COLUMNS` (``answered_at`` and ``due`` timezone-aware); ``cards``: :data:`CARD_COLUMNS`;
    ``due_by``: a card is due when its ``due`` is at or before it (the app passes the end of today, UTC).

    >>> from datetime import timedelta
    >>> NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    >>> t = pd.DataFrame([["ann", "D", "A", True, 900, NOW], ["ann", "D", "A", False, 1500, NOW],
    ...                   ["ann", "D", "B", True, 2000, NOW]], columns=TRIAL_COLUMNS)
    >>> c = pd.DataFrame([["ann", "D", "A", NOW], ["ann", "D", "B", NOW + timedelta(days=3)]], columns=CARD_COLUMNS)
    >>> a = practice_activity(t, c, ["ann", "bob"], NOW)
    >>> a.per_trainee[["trainee", "trials", "median_response_ms", "due"]].to_dict("records")
    [{'trainee': 'ann', 'trials': 3, 'median_response_ms': 1500.0, 'due': 1}, {'trainee': 'bob', 'trials': 0, \
'median_response_ms': nan, 'due': 0}]
    >>> a.per_trainee["due_conditions"].tolist()
    [[('D', 'A')], []]
    >>> a.per_condition[["condition", "trials", "accuracy", "trainees", "cards", "due"]].to_dict("records")
    [{'condition': 'A', 'trials': 2, 'accuracy': 0.5, 'trainees': 1, 'cards': 1, 'due': 1}, {'condition': 'B', \
'trials': 1, 'accuracy': 1.0, 'trainees': 1, 'cards': 1, 'due': 0}]
    """
    if due_by.tzinfo is None:
        raise PhenosynthError("practice_activity needs a timezone-aware time (due_by).")
    trials = trials[TRIAL_COLUMNS].assign(correct=trials["correct"].astype(bool),
                                          response_ms=trials["response_ms"].astype(float))
    cards = cards[CARD_COLUMNS].assign(is_due=[d <= due_by for d in cards["due"]]) if len(cards) else \
        pd.DataFrame(columns=[*CARD_COLUMNS, "is_due"])
    per_trainee = []
    for who in trainees:
        mine, own_cards = trials[trials["trainee"] == who], cards[cards["trainee"] == who]
        due = own_cards[own_cards["is_due"].astype(bool)].sort_values(["deck", "condition"])
        per_trainee.append({"trainee": who, **_trial_stats(mine),
                            "last_trial": mine["answered_at"].max() if len(mine) else None,
                            "cards": len(own_cards), "due": len(due),
                            "due_conditions": list(zip(due["deck"], due["condition"]))})
    keys = sorted(set(zip(trials["deck"], trials["condition"])) | set(zip(cards["deck"], cards["condition"])))
    per_condition = []
    for deck, cond in keys:
        mine = trials[(trials["deck"] == deck) & (trials["condition"] == cond)]
        own_cards = cards[(cards["deck"] == deck) & (cards["condition"] == cond)]
        per_condition.append({"deck": deck, "condition": cond, **_trial_stats(mine),
                              "trainees": int(mine["trainee"].nunique()), "cards": len(own_cards),
                              "due": int(own_cards["is_due"].astype(bool).sum())})
    return PracticeActivity(
        per_trainee=pd.DataFrame(per_trainee, columns=["trainee", "trials", "accuracy", "median_response_ms",
                                                       "last_trial", "cards", "due", "due_conditions"]),
        per_condition=pd.DataFrame(per_condition, columns=["deck", "condition", "trials", "accuracy",
                                                           "median_response_ms", "trainees", "cards", "due"]),
        due_by=due_by)


@dataclass(frozen=True)
class PrePostSplit:
    """Disjoint image sets: the pre-test, the post-test (held back from practice) and the practice pool."""

    pre: pd.DataFrame
    post: pd.DataFrame
    practice: pd.DataFrame


def pre_post_split(images: pd.DataFrame, n_pre_per_condition: int, n_post_per_condition: int, *,
                   seed: int, seen: Collection[str] = ()) -> PrePostSplit:
    """Per condition, a seeded random ``n_pre_per_condition`` images for the pre-test and ``n_post_per_condition``
    others for the post-test; the rest is the practice pool. The post-test images are never practised, so the
    post-test measures recognition of new faces, not memory of seen ones. Each condition needs at least
    ``n_pre + n_post + 1`` images (one left to practise).

    ``seen``: image ids the trainees were already shown (earlier quizzes, tests, practice). The post-test takes only
    unseen images; the pre-test takes unseen ones while more than the post-test's are left, then seen ones. Without
    ``seen`` the split is the same as with an empty one.

    Raises:
        PhenosynthError: a condition with too few images, or with fewer unseen images than the post-test needs
            (every such condition named with how many it has left).
    """
    rng = np.random.default_rng(seed)
    seen_ids = {str(i) for i in seen}
    parts: dict[str, list[pd.DataFrame]] = {"pre": [], "post": [], "practice": []}
    need = n_pre_per_condition + n_post_per_condition + 1
    short: list[str] = []
    for cond, group in images.groupby(images["condition"].astype(str), sort=True):
        if len(group) < need:
            raise PhenosynthError(f"Condition '{cond}' has {len(group)} image(s); a pre-test of "
                                  f"{n_pre_per_condition}, a post-test of {n_post_per_condition} and practice need "
                                  f"{need}.")
        g = group.iloc[rng.permutation(len(group))]
        was_seen = g["image_id"].astype(str).isin(seen_ids).to_numpy()
        unseen, shown = g[~was_seen], g[was_seen]
        if len(unseen) < n_post_per_condition:
            short.append(f"'{cond}' {len(unseen)}")
            continue
        k = min(n_pre_per_condition, len(unseen) - n_post_per_condition)  # pre-test images from the unseen ones
        parts["pre"].append(pd.concat([unseen.iloc[:k], shown.iloc[:n_pre_per_condition - k]]))
        parts["post"].append(unseen.iloc[k:k + n_post_per_condition])
        parts["practice"].append(pd.concat([unseen.iloc[k + n_post_per_condition:],
                                            shown.iloc[n_pre_per_condition - k:]]))
    if short:
        raise PhenosynthError(
            f"A post-test of {n_post_per_condition} image(s) per condition needs that many images of each condition "
            f"that the trainees have not been shown yet (in an earlier quiz, test or practice of this deck); unseen "
            f"images left: {', '.join(short)}. Add images to the deck, or ask fewer post-test images.")
    return PrePostSplit(**{k: pd.concat(v) if v else images.iloc[0:0] for k, v in parts.items()})


__all__ = ["PracticeSettings", "ConditionProgress", "condition_progress", "condition_weights", "next_condition",
           "next_image", "scheduler", "card_id", "new_card", "rating_from_answer", "review", "due_conditions",
           "confusability_from_confusion", "confusability_from_prototypes", "most_confusable", "QuizItem",
           "assemble_quiz", "PrePostSplit", "pre_post_split", "PracticeActivity", "practice_activity",
           "TRIAL_COLUMNS", "CARD_COLUMNS"]
