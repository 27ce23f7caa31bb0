"""Perceptual-learning practice (issue 13, item 3, practice part): many short trials, immediate feedback with the
annotated features, the next condition from :func:`phenosynth.edu.practice.next_condition` over the trainee's
history on the deck, one FSRS card per (trainee, condition) reviewed after every answer.

**Which decks.** A deck is open for practice when it has an Exercise of kind ``practice`` whose settings do not say
``"open": false``; the educator opens and closes it with the button on the deck page (``POST
/decks/{id}/practice``). An exercise with no cohort is open to every trainee; one with a cohort only to that cohort's
members (the cohorts pages may create such exercises; none is needed here).

**Held-back images.** A face the deck's pre-/post-test pairs hold back for the post-test (their
``held_back_image_ids``) is never practised, nor served by the practice image route: practising it would turn the
post-test into a memory test.

**A trial.** ``GET /practice/{exercise}`` picks the condition (adaptive: error rate and slowness; once every
condition is mastered, the FSRS cards that are due, most overdue first) and its least-shown image, and remembers the
trial in the signed session (exercise, image, the time it was shown). ``POST /practice/{exercise}/answer`` stores
an Answer (its phase is the exercise's kind, ``practice``) with the response time measured by the server from that
time, reviews the card, and shows the feedback: right or wrong, the face again, the condition's annotation.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import TYPE_CHECKING

import pandas as pd
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from phenosynth.edu import decks as D
from phenosynth.edu import practice as PR
from phenosynth.edu import quizzes as Q
from phenosynth.edu.annotations import PLAIN_LANGUAGE
from phenosynth.edu.db import (EDUCATOR, Answer, Attempt, Cohort, Deck, DeckCondition, DeckImage, Exercise,
                               Membership, ReviewCard, User, utcnow)
from phenosynth.edu.deps import current_educator, current_user, gated_image, get_db, render
from phenosynth.edu.progress import cohort_members

if TYPE_CHECKING:
    import fsrs

router = APIRouter(tags=["practice"])

TRIAL_KEY = "practice_trial"
NOT_YOURS = "This practice is not open to you."


def _aware(t: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were stored in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _is_open(ex: Exercise) -> bool:
    return ex.kind == "practice" and (ex.settings or {}).get("open", True) is not False


def open_practice(db: Session, user: User) -> list[Exercise]:
    """The practice exercises ``user`` may do: open, and without a cohort or of a cohort ``user`` belongs to."""
    mine = select(Membership.cohort_id).where(Membership.user_id == user.id)
    rows = db.scalars(select(Exercise).where(Exercise.kind == "practice")
                      .where((Exercise.cohort_id.is_(None)) | Exercise.cohort_id.in_(mine)).order_by(Exercise.id))
    return [ex for ex in rows if _is_open(ex)]


def _exercise(db: Session, exercise_id: int, user: User) -> Exercise:
    ex = db.get(Exercise, exercise_id)
    if ex is None or ex.kind != "practice":
        raise HTTPException(status_code=404, detail=f"No practice {exercise_id}.")
    if user.role != EDUCATOR and ex.id not in {e.id for e in open_practice(db, user)}:
        raise HTTPException(status_code=403, detail=NOT_YOURS)
    return ex


def _usable_images(request: Request, db: Session, deck_id: int) -> list[DeckImage]:
    """The deck's images a trainee may practise with now: not retired, not held back for a post-test
    (:func:`phenosynth.edu.quizzes.held_back`) and through the deck gate (checked again here)."""
    out = []
    hidden = Q.held_back(db, deck_id)
    for img in db.scalars(select(DeckImage).where(DeckImage.deck_id == deck_id, DeckImage.retired.is_(False))
                          .order_by(DeckImage.position, DeckImage.id)):
        if img.id in hidden:
            continue
        try:
            D.image_path(img, request.app.state.images, request.app.state.edu_dir)
        except D.DeckError:
            continue
        out.append(img)
    return out


def history(db: Session, user: User, deck_id: int) -> pd.DataFrame:
    """The trainee's practice answers on the deck, oldest first: ``condition_true, correct, response_ms, image_id``."""
    rows = db.execute(select(Answer.correct_label, Answer.chosen_label, Answer.response_ms, Answer.deck_image_id)
                      .join(Attempt, Answer.attempt_id == Attempt.id).join(Exercise, Attempt.exercise_id == Exercise.id)
                      .where(Attempt.user_id == user.id, Exercise.deck_id == deck_id, Exercise.kind == "practice")
                      .order_by(Answer.answered_at, Answer.id)).all()
    return pd.DataFrame([{"condition_true": t, "correct": t == c, "response_ms": float(ms), "image_id": str(i)}
                         for t, c, ms, i in rows], columns=["condition_true", "correct", "response_ms", "image_id"])


def cards_of(db: Session, user: User, condition_ids: list[int] | None = None) -> dict[int, ReviewCard]:
    q = select(ReviewCard).where(ReviewCard.user_id == user.id)
    if condition_ids is not None:
        q = q.where(ReviewCard.condition_id.in_(condition_ids))
    return {rc.condition_id: rc for rc in db.scalars(q)}


def end_of_today(now: datetime | None = None) -> datetime:
    """The last moment of ``now``'s day in UTC: a card due by then counts as due today."""
    now = (now or utcnow()).astimezone(timezone.utc)
    return datetime.combine(now.date(), time.max, tzinfo=timezone.utc)


def due_today(db: Session, user: User, now: datetime | None = None, condition_ids: list[int] | None = None) -> int:
    """How many of the trainee's FSRS cards (of ``condition_ids``; default all) fall due by the end of today (UTC)."""
    cards = {str(k): stored_card(rc) for k, rc in cards_of(db, user, condition_ids).items()}
    return len(PR.due_conditions(cards, end_of_today(now)))


def cohort_activity(db: Session, cohort: Cohort, now: datetime | None = None,
                    deck_id: int | None = None) -> PR.PracticeActivity:
    """The practice of ``cohort``'s trainees (:func:`phenosynth.edu.practice.practice_activity`): their practice
    trials and FSRS cards (on deck ``deck_id``, default every deck; a deck is its id), cards due by the end of today."""
    members = cohort_members(db, cohort)
    ids = [u.id for u in members]
    trials = (select(User.email, Exercise.deck_id, Answer.correct_label, Answer.chosen_label, Answer.response_ms,
                     Answer.answered_at)
              .join(Attempt, Answer.attempt_id == Attempt.id).join(Exercise, Attempt.exercise_id == Exercise.id)
              .join(User, Attempt.user_id == User.id)
              .where(Exercise.kind == "practice", Attempt.user_id.in_(ids)).order_by(Answer.answered_at, Answer.id))
    cards = (select(User.email, DeckCondition.deck_id, DeckCondition.name, ReviewCard.due)
             .join(DeckCondition, ReviewCard.condition_id == DeckCondition.id).join(User, ReviewCard.user_id == User.id)
             .where(ReviewCard.user_id.in_(ids)))
    if deck_id is not None:
        trials, cards = trials.where(Exercise.deck_id == deck_id), cards.where(DeckCondition.deck_id == deck_id)
    trial_frame = pd.DataFrame([(who, deck, true, true == chosen, ms, _aware(at))
                                for who, deck, true, chosen, ms, at in db.execute(trials)], columns=PR.TRIAL_COLUMNS)
    card_frame = pd.DataFrame([(who, deck, name, _aware(due)) for who, deck, name, due in db.execute(cards)],
                              columns=PR.CARD_COLUMNS)
    return PR.practice_activity(trial_frame, card_frame, [u.email for u in members], end_of_today(now))


def practice_rows(db: Session, user: User) -> list[dict[str, object]]:
    """The practice the trainee may do (:func:`open_practice`), each with its deck and the number of the deck's
    conditions due for review today: the rows of the trainee's home page and of ``/practice``."""
    exercises = open_practice(db, user)
    decks = {d.id: d for d in db.scalars(select(Deck).where(Deck.id.in_([e.deck_id for e in exercises])))}
    return [{"ex": ex, "deck": decks[ex.deck_id], "url": f"/practice/{ex.id}",
             "due": due_today(db, user, condition_ids=[c.id for c in decks[ex.deck_id].conditions])}
            for ex in exercises]


def stored_card(rc: ReviewCard) -> "fsrs.Card":
    """The ``fsrs`` card of a stored row (its due date timezone-aware)."""
    import fsrs

    card = fsrs.Card.from_dict(rc.card)
    card.due = _aware(card.due)
    return card


def choose_trial(request: Request, db: Session, user: User, ex: Exercise) -> tuple[DeckImage, str] | None:
    """The next trial's image and its condition name, or None when every condition is mastered and none is due."""
    images = _usable_images(request, db, ex.deck_id)
    by_name = {img.condition.name: img.condition for img in images}
    if not by_name:
        raise HTTPException(status_code=409, detail="This deck has no image to practise with yet.")
    past = history(db, user, ex.deck_id)
    condition = PR.next_condition(past, sorted(by_name), seed=user.id)
    if condition is None:
        names = {c.id: c.name for c in by_name.values()}
        cards = {names[cid]: stored_card(rc) for cid, rc in cards_of(db, user, list(names)).items()}
        due = PR.due_conditions(cards, utcnow())
        if not due:
            return None
        condition = due[0]
    frame = pd.DataFrame({"image_id": [str(i.id) for i in images], "condition": [i.condition.name for i in images]})
    pk = int(PR.next_image(condition, frame, past))
    return next(i for i in images if i.id == pk), condition


def _attempt(db: Session, user: User, ex: Exercise) -> Attempt:
    """Today's sitting of ``user`` at ``ex`` (a new Attempt each UTC day)."""
    start = datetime.combine(utcnow().date(), time.min, tzinfo=timezone.utc)
    for a in db.scalars(select(Attempt).where(Attempt.user_id == user.id, Attempt.exercise_id == ex.id)
                        .order_by(Attempt.id.desc()).limit(1)):
        if _aware(a.started_at) >= start:
            return a
    a = Attempt(exercise_id=ex.id, user_id=user.id)
    db.add(a)
    db.flush()
    return a


def review_card(db: Session, user: User, condition: DeckCondition, correct: bool, response_ms: int,
                now: datetime) -> ReviewCard:
    """The (trainee, condition) FSRS card after this answer (made on the first one)."""
    rc = db.scalar(select(ReviewCard).where(ReviewCard.user_id == user.id, ReviewCard.condition_id == condition.id))
    card = stored_card(rc) if rc is not None and rc.card else PR.new_card(str(user.id), str(condition.id), now)
    card, _ = PR.review(card, correct, response_ms, now)
    if rc is None:
        rc = ReviewCard(user_id=user.id, condition_id=condition.id)
        db.add(rc)
    rc.card, rc.due = card.to_dict(), card.due
    return rc


# --- pages -------------------------------------------------------------------------------------------------------------


@router.get("/practice")
def practice_list(request: Request, db: Session = Depends(get_db, scope="function"), user: User = Depends(current_user)) -> Response:
    return render(request, "practice_list.html", {"practice": practice_rows(db, user), "due_today": due_today(db, user)})


@router.get("/practice/{exercise_id:int}")
def trial(request: Request, exercise_id: int, db: Session = Depends(get_db, scope="function"),
          user: User = Depends(current_user)) -> Response:
    ex = _exercise(db, exercise_id, user)
    chosen = choose_trial(request, db, user, ex)
    if chosen is None:
        request.session.pop(TRIAL_KEY, None)
        return render(request, "practice_done.html", {"exercise": ex, "due_today": due_today(db, user)})
    img, _ = chosen
    request.session[TRIAL_KEY] = {"exercise": ex.id, "image": img.id, "shown": utcnow().isoformat()}
    names = [c.name for c in db.scalars(select(DeckCondition).where(DeckCondition.deck_id == ex.deck_id)
                                        .order_by(DeckCondition.position, DeckCondition.id))
             if c.name in {i.condition.name for i in _usable_images(request, db, ex.deck_id)}]
    return render(request, "practice_trial.html", {"exercise": ex, "image": img, "choices": names})


@router.post("/practice/{exercise_id:int}/answer")
def answer(request: Request, exercise_id: int, image: int = Form(...), chosen: str = Form(""),
           confidence: int = Form(3), db: Session = Depends(get_db, scope="function"), user: User = Depends(current_user)) -> Response:
    ex = _exercise(db, exercise_id, user)
    shown = request.session.get(TRIAL_KEY) or {}
    if shown.get("exercise") != ex.id or shown.get("image") != image:
        return RedirectResponse(f"/practice/{ex.id}", status_code=303)  # a stale or replayed form: a fresh trial
    img = db.get(DeckImage, image)
    if img is None or img.deck_id != ex.deck_id or img.id in Q.held_back(db, ex.deck_id):
        raise HTTPException(status_code=404, detail="No such image in this practice.")
    if not 1 <= confidence <= 5:
        raise HTTPException(status_code=422, detail="Confidence is a rating from 1 to 5.")
    now = utcnow()
    shown_at = datetime.fromisoformat(shown["shown"])
    ms = max(0, int((now - shown_at) / timedelta(milliseconds=1)))
    correct = chosen == img.condition.name
    db.add(Answer(attempt_id=_attempt(db, user, ex).id, deck_image_id=img.id, chosen_label=chosen[:200],
                  correct_label=img.condition.name, confidence=confidence, response_ms=ms, shown_at=shown_at,
                  answered_at=now))
    rc = review_card(db, user, img.condition, correct, ms, now)
    db.commit()
    request.session.pop(TRIAL_KEY, None)
    c = img.condition
    hpo = [(t, PLAIN_LANGUAGE.get(t, "")) for t in c.hpo_terms or []]
    return render(request, "practice_feedback.html", {
        "exercise": ex, "image": img, "condition": c, "chosen": chosen, "correct": correct, "response_ms": ms,
        "hpo": hpo, "next_due": _aware(rc.due)})


@router.get("/practice/{exercise_id:int}/images/{image_pk:int}")
def practice_image(request: Request, exercise_id: int, image_pk: int, db: Session = Depends(get_db, scope="function"),
                   user: User = Depends(current_user)) -> Response:
    """A face of the practice's deck, through the deck gate (never a retired, refused or other deck's image)."""
    ex = _exercise(db, exercise_id, user)
    img = db.get(DeckImage, image_pk)
    if img is None or img.deck_id != ex.deck_id or img.retired or img.id in Q.held_back(db, ex.deck_id):
        raise HTTPException(status_code=404, detail="No such image in this practice.")
    return gated_image(request, img)


@router.post("/decks/{deck_id:int}/practice", dependencies=[Depends(current_educator)])
def set_practice(deck_id: int, open: str = Form("1"), db: Session = Depends(get_db, scope="function"),
                 user: User = Depends(current_educator)) -> Response:
    """Open (``open=1``) or close (``open=0``) a deck for practice by every trainee."""
    deck = D.deck_by_id(db, deck_id)
    if deck is None:
        raise HTTPException(status_code=404, detail=f"No deck {deck_id}.")
    ex = db.scalar(select(Exercise).where(Exercise.deck_id == deck.id, Exercise.kind == "practice",
                                          Exercise.cohort_id.is_(None)).order_by(Exercise.id).limit(1))
    if ex is None:
        ex = Exercise(deck_id=deck.id, kind="practice", title=f"Practice: {deck.name}"[:200], created_by=user.id,
                      settings={})
        db.add(ex)
    ex.settings = {**(ex.settings or {}), "open": open == "1"}
    db.commit()
    return RedirectResponse(f"/decks/{deck.id}", status_code=303)


def deck_practice_open(db: Session, deck_id: int) -> bool:
    """Whether the deck's practice (for every trainee) is open: the deck page's button says so."""
    ex = db.scalar(select(Exercise).where(Exercise.deck_id == deck_id, Exercise.kind == "practice",
                                          Exercise.cohort_id.is_(None)).order_by(Exercise.id).limit(1))
    return ex is not None and _is_open(ex)


@router.get("/cohorts/{cohort_id:int}/practice", dependencies=[Depends(current_educator)])
def cohort_practice(request: Request, cohort_id: int, deck: int | None = None,
                    db: Session = Depends(get_db, scope="function")) -> Response:
    """The educator's view of a cohort's practice: per trainee and per condition, trials, accuracy, median response
    time and the FSRS cards due today (``?deck=ID``: one deck's)."""
    cohort = db.get(Cohort, cohort_id)
    if cohort is None:
        raise HTTPException(status_code=404, detail=f"No cohort {cohort_id}.")
    activity = cohort_activity(db, cohort, deck_id=deck)
    decks = {d.id: d for d in db.scalars(select(Deck).order_by(Deck.name, Deck.id))}
    if deck is not None and deck not in decks:
        raise HTTPException(status_code=404, detail=f"No deck {deck}.")
    practised = sorted(set(activity.per_condition["deck"]) | ({deck} if deck is not None else set()))
    return render(request, "cohort_practice.html", {
        "cohort": cohort, "activity": activity, "decks": decks, "deck": deck,
        "deck_links": [decks[d] for d in practised if d in decks],
        "per_trainee": activity.per_trainee.to_dict("records"),
        "per_condition": activity.per_condition.to_dict("records")})
