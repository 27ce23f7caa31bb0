"""Quizzes: exercises of kind ``quiz`` (and the ``pretest`` / ``posttest`` pair) over a deck, assigned to a cohort,
and the trainee's attempts at them.

**Making a quiz.** :func:`create_quiz` draws the questions once, with :func:`phenosynth.edu.practice.assemble_quiz`
(``N`` images balanced over the deck's conditions; the options every condition or the ``k`` most confusable ones),
and stores them in the exercise's settings. The most confusable conditions come from the confusion matrix of the
answers already given on the deck (:func:`phenosynth.edu.practice.confusability_from_confusion`); while there are
none, the other options are a seeded random draw. The questions are always shuffled once (a round-robin order,
A, B, A, B, ..., would give answers away); ``order="fixed"`` then asks every trainee in that order, ``order="random"``
gives each trainee their own seeded order. :func:`create_pre_post` splits the deck's images with
:func:`phenosynth.edu.practice.pre_post_split`: the pre-test and post-test images are disjoint, the post-test's are
images the cohort was never shown on the deck (:func:`shown_to_cohort`: a second pair never re-asks the first pair's
post-test), and both exercises record the post-test images as ``held_back_image_ids`` and the rest as
``practice_image_ids``; :func:`held_back` keeps those images out of practice and out of quizzes made later on the
deck.

**Taking a quiz.** One attempt per trainee and quiz (:func:`open_attempt` resumes it). Questions are answered in
order; the question on screen and the time it was first shown are stored, so the server measures the response time
when the browser's measure is missing or impossible. :func:`record_answer` is idempotent: the answer to a question
is stored once (a unique constraint on ``(attempt_id, item)``; a second submit, even a concurrent one, returns the
first answer). A time limit is enforced by the server: an answer after the deadline (plus a few seconds' grace for
the network) is refused and the attempt closed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from phenosynth.edu import practice, scoring
from phenosynth.edu.cohorts import cohort_ids_of
from phenosynth.edu.db import (Answer, Attempt, Cohort, Deck, DeckCondition, DeckImage, Exercise, Membership, User,
                               utcnow)
from phenosynth.edu.security import _aware
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

QUIZ_KINDS = ("quiz", "pretest", "posttest")
#: Seconds after the deadline an answer is still taken (the time it spends on the network).
GRACE_S = 5.0
#: A browser-measured response time longer than the server's by more than this is not believed.
CLIENT_SLACK_MS = 2000
FEEDBACK = ("each", "end")


class QuizError(PhenosynthError):
    """A quiz request that cannot be carried out (bad settings, an answer out of turn, an invalid choice)."""


class TimeUp(QuizError):
    """The attempt's time limit is over; the answer was not stored."""


@dataclass(frozen=True)
class QuizSettings:
    """What an educator chooses for a quiz. ``n_choices`` None: every condition of the deck is an option."""

    n: int
    order: Literal["fixed", "random"] = "fixed"
    n_choices: int | None = None
    time_limit_s: int | None = None
    feedback: Literal["each", "end"] = "each"
    seed: int = 0

    def check(self) -> QuizSettings:
        if self.n < 1:
            raise QuizError("A quiz needs at least one image.")
        if self.order not in ("fixed", "random"):
            raise QuizError(f"Unknown order '{self.order}' (use: fixed, random).")
        if self.feedback not in FEEDBACK:
            raise QuizError(f"Unknown feedback '{self.feedback}' (use: each, end).")
        if self.time_limit_s is not None and self.time_limit_s < 10:
            raise QuizError("A time limit must be at least 10 seconds (or none).")
        return self


def deck_pool(deck: Deck) -> pd.DataFrame:
    """The deck's active (not retired) images as ``image_id`` (the deck image's id, as text) and ``condition``."""
    rows = [{"image_id": str(i.id), "condition": i.condition.name} for i in deck.images if not i.retired]
    return pd.DataFrame(rows, columns=["image_id", "condition"])


def held_back(db: Session, deck_id: int) -> set[int]:
    """The deck images held back for a post-test: the ``held_back_image_ids`` of every pre-/post-test pair on the
    deck (whichever cohort it is for). Practice never shows them and a new quiz never asks them (its feedback would
    give the post-test's answers away)."""
    out: set[int] = set()
    for settings in db.scalars(select(Exercise.settings).where(Exercise.deck_id == deck_id,
                                                               Exercise.kind.in_(("pretest", "posttest")))):
        out.update(int(i) for i in (settings or {}).get("held_back_image_ids", []))
    return out


def shown_to_cohort(db: Session, deck_id: int, cohort_id: int | None) -> set[int]:
    """The deck images a cohort has seen or will see by what it was given: the questions of every quiz and pre-/
    post-test of the deck assigned to the cohort (``cohort_id`` None: to no cohort), and every deck image its members
    answered (practice, and quizzes of any cohort)."""
    to_cohort = Exercise.cohort_id.is_(None) if cohort_id is None else Exercise.cohort_id == cohort_id
    out: set[int] = set()
    for settings in db.scalars(select(Exercise.settings).where(Exercise.deck_id == deck_id,
                                                               Exercise.kind.in_(QUIZ_KINDS), to_cohort)):
        out.update(int(q["deck_image_id"]) for q in (settings or {}).get("items", []))
    if cohort_id is not None:
        members = select(Membership.user_id).where(Membership.cohort_id == cohort_id)
        out.update(db.scalars(select(Answer.deck_image_id).join(Attempt, Attempt.id == Answer.attempt_id)
                              .join(DeckImage, DeckImage.id == Answer.deck_image_id)
                              .where(DeckImage.deck_id == deck_id, Attempt.user_id.in_(members)).distinct()))
    return out


def deck_answers(db: Session, deck: Deck) -> pd.DataFrame:
    """Every answer given on the deck's images: ``condition_true``, ``condition_chosen``, ``correct``."""
    rows = db.execute(select(Answer.correct_label, Answer.chosen_label).join(
        DeckImage, DeckImage.id == Answer.deck_image_id).where(DeckImage.deck_id == deck.id)).all()
    frame = pd.DataFrame(rows, columns=["condition_true", "condition_chosen"])
    return frame.assign(correct=frame["condition_true"] == frame["condition_chosen"])


def deck_confusability(db: Session, deck: Deck) -> pd.DataFrame | None:
    """Confusability of the deck's conditions from the answers so far (None while there are none)."""
    answers = deck_answers(db, deck)
    if answers.empty:
        return None
    return practice.confusability_from_confusion(scoring.confusion(answers, [c.name for c in deck.conditions]))


def _questions(pool: pd.DataFrame, n: int, settings: QuizSettings, deck: Deck,
               confusability: pd.DataFrame | None) -> list[dict[str, Any]]:
    items = practice.assemble_quiz(pool, n, seed=settings.seed, order="random", n_choices=settings.n_choices,
                                   confusability=confusability, conditions=[c.name for c in deck.conditions])
    return [{"deck_image_id": int(q.image_id), "condition": q.condition, "choices": list(q.choices)} for q in items]


def _exercise(deck: Deck, cohort: Cohort | None, educator: User, kind: str, title: str, settings: QuizSettings,
              questions: list[dict[str, Any]], **extra: Any) -> Exercise:
    title = title.strip()
    if not title:
        raise QuizError("A quiz needs a title.")
    return Exercise(deck_id=deck.id, cohort_id=cohort.id if cohort is not None else None, kind=kind, title=title[:200],
                    settings=asdict(settings) | {"items": questions} | extra, created_by=educator.id)


def create_quiz(db: Session, educator: User, deck: Deck, cohort: Cohort | None, title: str,
                settings: QuizSettings) -> Exercise:
    """A quiz of ``settings.n`` images of the deck, assigned to ``cohort``."""
    settings.check()
    pool = deck_pool(deck)
    pool = pool[~pool["image_id"].astype(int).isin(held_back(db, deck.id))]
    ex = _exercise(deck, cohort, educator, "quiz", title, settings,
                   _questions(pool, settings.n, settings, deck, deck_confusability(db, deck)))
    db.add(ex)
    db.commit()
    return ex


def create_pre_post(db: Session, educator: User, deck: Deck, cohort: Cohort | None, title: str,
                    settings: QuizSettings, *, n_pre_per_condition: int, n_post_per_condition: int
                    ) -> tuple[Exercise, Exercise]:
    """A pre-test and a post-test on disjoint images (``settings.n`` is ignored: each test asks all of its images).
    The post-test's (held-back) images are images the cohort has not been shown in the deck's earlier quizzes, tests
    and practice (:func:`shown_to_cohort`); the pre-test prefers them too. Too few of them: a :class:`QuizError`
    that says how many are needed and how many are left per condition."""
    settings.check()
    seen = shown_to_cohort(db, deck.id, cohort.id if cohort is not None else None)
    try:
        split = practice.pre_post_split(deck_pool(deck), n_pre_per_condition, n_post_per_condition,
                                        seed=settings.seed, seen={str(i) for i in seen})
    except PhenosynthError as e:
        raise QuizError(str(e)) from None
    confusability = deck_confusability(db, deck)
    ids = {part: [int(i) for i in getattr(split, part)["image_id"]] for part in ("pre", "post", "practice")}
    shared = {"held_back_image_ids": ids["post"], "practice_image_ids": ids["practice"]}
    tests = []
    for kind, part in (("pretest", split.pre), ("posttest", split.post)):
        s = QuizSettings(**(asdict(settings) | {"n": len(part)}))
        tests.append(_exercise(deck, cohort, educator, kind, f"{title.strip()} ({kind[:-4]}-test)", s,
                               _questions(part, len(part), s, deck, confusability), **shared))
    pre, post = tests
    db.add_all([pre, post])
    db.flush()
    pre.paired_with_id, post.paired_with_id = post.id, pre.id
    db.commit()
    return pre, post


def settings_of(ex: Exercise) -> QuizSettings:
    s = ex.settings
    return QuizSettings(n=int(s["n"]), order=s.get("order", "fixed"), n_choices=s.get("n_choices"),
                        time_limit_s=s.get("time_limit_s"), feedback=s.get("feedback", "each"),
                        seed=int(s.get("seed", 0)))


# --- trainees ----------------------------------------------------------------------------------------------------------


def assigned_exercises(db: Session, user: User) -> list[Exercise]:
    """The exercises assigned to the cohorts ``user`` belongs to, newest first."""
    cohorts = cohort_ids_of(db, user)
    if not cohorts:
        return []
    return list(db.scalars(select(Exercise).where(Exercise.cohort_id.in_(cohorts)).order_by(Exercise.created_at.desc(),
                                                                                            Exercise.id.desc())))


def assigned_quiz(db: Session, user: User, exercise_id: int) -> Exercise | None:
    """The quiz ``exercise_id`` if it is assigned to one of ``user``'s cohorts, else None."""
    ex = db.get(Exercise, exercise_id)
    if ex is None or ex.kind not in QUIZ_KINDS or ex.cohort_id not in cohort_ids_of(db, user):
        return None
    return ex


def attempt_of(db: Session, user: User, exercise: Exercise) -> Attempt | None:
    return db.scalar(select(Attempt).where(Attempt.exercise_id == exercise.id, Attempt.user_id == user.id)
                     .order_by(Attempt.id).limit(1))


def open_attempt(db: Session, user: User, exercise: Exercise, now: datetime | None = None) -> Attempt:
    """The trainee's attempt at the quiz: the existing one (resumed, or finished), else a new one with its
    questions in their order and its deadline."""
    existing = attempt_of(db, user, exercise)
    if existing is not None:
        return existing
    now = now or utcnow()
    s = settings_of(exercise)
    questions = list(exercise.settings["items"])
    if s.order == "random":
        questions = [questions[i] for i in np.random.default_rng([s.seed, user.id]).permutation(len(questions))]
    attempt = Attempt(exercise_id=exercise.id, user_id=user.id, started_at=now, items=questions,
                      deadline_at=now + timedelta(seconds=s.time_limit_s) if s.time_limit_s else None)
    db.add(attempt)
    db.commit()
    first = attempt_of(db, user, exercise)
    if first is not None and first.id != attempt.id:  # a concurrent start made one first: keep that one only
        db.delete(attempt)
        db.commit()
        return first
    return attempt


def answers_of(db: Session, attempt: Attempt) -> dict[int, Answer]:
    """item -> answer."""
    return {a.item: a for a in db.scalars(select(Answer).where(Answer.attempt_id == attempt.id)) if a.item is not None}


def next_item(attempt: Attempt, answered: dict[int, Answer] | set[int]) -> int | None:
    """The first unanswered question, None when all are answered."""
    return next((k for k in range(len(attempt.items)) if k not in answered), None)


def seconds_left(attempt: Attempt, now: datetime | None = None) -> float | None:
    if attempt.deadline_at is None:
        return None
    return (_aware(attempt.deadline_at) - (now or utcnow())).total_seconds()


def close_if_expired(db: Session, attempt: Attempt, now: datetime | None = None) -> bool:
    """Close the attempt when its time is up (plus the grace); True when it is closed (now or before)."""
    left = seconds_left(attempt, now)
    if attempt.finished_at is None and left is not None and left < -GRACE_S:
        attempt.finished_at = _aware(attempt.deadline_at)
        db.commit()
    return attempt.finished_at is not None


def show_item(db: Session, attempt: Attempt, k: int, now: datetime | None = None) -> None:
    """Record that question ``k`` is on screen (the first time it is shown: a reload keeps the clock running)."""
    if attempt.shown_item != k:
        attempt.shown_item, attempt.shown_at = k, now or utcnow()
        db.commit()


def response_ms(attempt: Attempt, k: int, client_ms: int | None, now: datetime) -> int:
    """The browser's measure when it is plausible (0 to the server's measure plus :data:`CLIENT_SLACK_MS`), else
    the server's (from when the question was first shown), else 0."""
    server = None
    if attempt.shown_item == k and attempt.shown_at is not None:
        server = max(0, int((now - _aware(attempt.shown_at)).total_seconds() * 1000))
    if client_ms is not None and client_ms >= 0 and (server is None or client_ms <= server + CLIENT_SLACK_MS):
        return int(client_ms)
    return server if server is not None else 0


@dataclass(frozen=True)
class Recorded:
    answer: Answer
    duplicate: bool  # True: this question had been answered already; nothing was stored


def record_answer(db: Session, attempt: Attempt, k: int, chosen: str, confidence: int | None,
                  client_ms: int | None = None, now: datetime | None = None) -> Recorded:
    """Store the answer to question ``k`` (once: a repeat returns the stored answer)."""
    now = now or utcnow()
    stored = db.scalar(select(Answer).where(Answer.attempt_id == attempt.id, Answer.item == k))
    if stored is not None:
        return Recorded(stored, duplicate=True)
    if close_if_expired(db, attempt, now):
        raise TimeUp("The time limit of this quiz is over: the answer was not stored.") if (
            attempt.deadline_at is not None and _aware(attempt.deadline_at) <= now) else QuizError(
            "This quiz is finished: the answer was not stored.")
    if not 0 <= k < len(attempt.items):
        raise QuizError(f"This quiz has no question {k + 1}.")
    expected = next_item(attempt, answers_of(db, attempt))
    if expected != k:
        raise QuizError(f"Answer question {expected + 1} first." if expected is not None else
                        "Every question of this quiz is answered.")
    question = attempt.items[k]
    if chosen not in question["choices"]:
        raise QuizError("Choose one of the conditions offered.")
    if confidence is None or not 1 <= confidence <= 5:
        raise QuizError("Rate your confidence from 1 (guessing) to 5 (certain).")
    answer = Answer(attempt_id=attempt.id, item=k, deck_image_id=question["deck_image_id"], chosen_label=chosen,
                    correct_label=question["condition"], confidence=confidence,
                    response_ms=response_ms(attempt, k, client_ms, now),
                    shown_at=attempt.shown_at if attempt.shown_item == k else None, answered_at=now)
    db.add(answer)
    try:
        db.flush()
    except IntegrityError:  # a concurrent submit of the same question won the race
        db.rollback()
        return Recorded(db.scalar(select(Answer).where(Answer.attempt_id == attempt.id, Answer.item == k)), True)
    if k == len(attempt.items) - 1:
        attempt.finished_at = now
    db.commit()
    return Recorded(answer, duplicate=False)


@dataclass(frozen=True)
class Feedback:
    """What a trainee sees after a question: the right condition and its annotation."""

    item: int
    chosen: str
    correct: str
    is_correct: bool
    confidence: int
    condition: DeckCondition | None


def feedback(db: Session, attempt: Attempt, answer: Answer,
             conditions: dict[str, DeckCondition] | None = None) -> Feedback:
    """The feedback on ``answer``; ``conditions`` (:func:`deck_conditions`) spares a query per answer on a page that
    shows many."""
    if conditions is None:
        ex = db.get(Exercise, attempt.exercise_id)
        cond = db.scalar(select(DeckCondition).where(DeckCondition.deck_id == ex.deck_id,
                                                     DeckCondition.name == answer.correct_label))
    else:
        cond = conditions.get(answer.correct_label)
    return Feedback(item=answer.item, chosen=answer.chosen_label, correct=answer.correct_label,
                    is_correct=answer.chosen_label == answer.correct_label, confidence=answer.confidence,
                    condition=cond)


def deck_conditions(db: Session, deck_id: int) -> dict[str, DeckCondition]:
    """The deck's conditions by name."""
    return {c.name: c for c in db.scalars(select(DeckCondition).where(DeckCondition.deck_id == deck_id))}


@dataclass(frozen=True)
class QuizResult:
    n_items: int
    n_answered: int
    n_correct: int
    accuracy: float  # over the questions answered
    per_condition: pd.DataFrame  # scoring.sensitivity_specificity


def result(attempt: Attempt, answers: dict[int, Answer]) -> QuizResult:
    frame = pd.DataFrame([{"condition_true": a.correct_label, "condition_chosen": a.chosen_label,
                           "correct": a.correct_label == a.chosen_label} for a in answers.values()],
                         columns=["condition_true", "condition_chosen", "correct"])
    conditions = sorted({q["condition"] for q in attempt.items} | {c for q in attempt.items for c in q["choices"]})
    per_condition = scoring.sensitivity_specificity(frame, conditions) if len(frame) else pd.DataFrame()
    return QuizResult(n_items=len(attempt.items), n_answered=len(frame), n_correct=int(frame["correct"].sum()),
                      accuracy=scoring.accuracy(frame), per_condition=per_condition)


def status_of(db: Session, user: User, exercise: Exercise) -> str:
    """``not started``, ``in progress`` or ``finished`` (an attempt past its time limit counts as finished)."""
    attempt = attempt_of(db, user, exercise)
    if attempt is None:
        return "not started"
    return "finished" if close_if_expired(db, attempt) else "in progress"


__all__ = ["QuizError", "TimeUp", "QuizSettings", "QUIZ_KINDS", "deck_pool", "held_back", "shown_to_cohort",
           "deck_answers",
           "deck_confusability", "create_quiz", "create_pre_post", "settings_of", "assigned_exercises", "assigned_quiz", "attempt_of",
           "open_attempt", "answers_of", "next_item", "seconds_left", "close_if_expired", "show_item", "response_ms",
           "Recorded", "record_answer", "Feedback", "feedback", "deck_conditions", "QuizResult", "result", "status_of",
           "GRACE_S"]
