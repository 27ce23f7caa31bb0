"""The trainee's side: signing up through an invitation link (or setting the password of an invited account), and
taking a quiz one image at a time (answer + confidence, response time from the browser with the server's as a
fallback, feedback after each answer or at the end, results, resume).

A trainee reaches only quizzes assigned to their cohorts and only their own attempts (404 otherwise: another
trainee's attempt is not even confirmed to exist); images are served per question of the trainee's own attempt and
go through the deck gate again (a re-audit that flags an image stops it at once).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from phenosynth.edu import cohorts as C
from phenosynth.edu import quizzes as Q
from phenosynth.edu.accounts import AccountError
from phenosynth.edu.db import Attempt, Deck, DeckImage, Exercise, User
from phenosynth.edu.deps import Viewer, current_user, gated_image, get_db, password_slot, quiz_start_slot, render
from phenosynth.edu.security import CSRF_SESSION_KEY, new_csrf_token

router = APIRouter(tags=["quiz"])


# --- invitations (signed out, or signed in as a trainee) -------------------------------------------------------------


def _signed_in(request: Request, db: Session) -> User | None:
    user_id = request.session.get("user_id")
    user = db.get(User, user_id) if isinstance(user_id, int) else None
    if user is not None and user.active:
        request.state.viewer = Viewer(user.id, user.email, user.role)
        return user
    return None


def _invite_page(request: Request, db: Session, token: str, *, error: str | None = None,
                 status_code: int = 200) -> Response:
    try:
        inv = C.valid_invitation(db, token)
    except C.CohortError as exc:
        return render(request, "error.html", {"status": 404, "message": str(exc)}, status_code=404)
    from phenosynth.edu.db import Cohort

    return render(request, "invite.html", {"inv": inv, "cohort": db.get(Cohort, inv.cohort_id), "token": token,
                                           "me": _signed_in(request, db), "error": error}, status_code=status_code)


@router.get("/invite/{token}")
def invite_page(request: Request, token: str, db: Session = Depends(get_db, scope="function")) -> Response:
    return _invite_page(request, db, token)


@router.post("/invite/{token}")
def accept_invite(request: Request, token: str, email: str = Form(""), password: str = Form(""),
                  display_name: str = Form(""), _turn: None = Depends(password_slot, scope="function"),
                  db: Session = Depends(get_db, scope="function")) -> Response:
    me = _signed_in(request, db)
    try:
        inv = C.valid_invitation(db, token)
        if me is not None and inv.email is None:
            C.join_by_link(db, token, me)
            return RedirectResponse("/", status_code=303)
        if inv.email is None:
            user = C.sign_up_by_link(db, request.app.state.passwords, token, email, password, display_name)
        else:
            user = C.set_password_by_invitation(db, request.app.state.passwords, token, password)
    except (C.CohortError, AccountError) as exc:
        db.rollback()
        return _invite_page(request, db, token, error=str(exc), status_code=422)
    request.session.clear()  # signed in as the new account, in a new session
    request.session["user_id"] = user.id
    request.session[CSRF_SESSION_KEY] = new_csrf_token()
    return RedirectResponse("/", status_code=303)


# --- taking a quiz ------------------------------------------------------------------------------------------------------


def _quiz(db: Session, user: User, exercise_id: int) -> Exercise:
    ex = Q.assigned_quiz(db, user, exercise_id)
    if ex is None:
        raise HTTPException(status_code=404, detail="No such quiz is assigned to you.")
    return ex


def _attempt(db: Session, user: User, attempt_id: int) -> Attempt:
    attempt = db.get(Attempt, attempt_id)
    if attempt is None or attempt.user_id != user.id:
        raise HTTPException(status_code=404, detail="No such attempt of yours.")
    return attempt


@router.get("/quizzes/{exercise_id:int}")
def quiz_start_page(request: Request, exercise_id: int, db: Session = Depends(get_db, scope="function"),
                    user: User = Depends(current_user)) -> Response:
    ex = _quiz(db, user, exercise_id)
    return render(request, "quiz_start.html", {"ex": ex, "settings": Q.settings_of(ex),
                                               "n": len(ex.settings["items"]), "status": Q.status_of(db, user, ex),
                                               "attempt": Q.attempt_of(db, user, ex)})


@router.post("/quizzes/{exercise_id:int}/start")
def start_quiz(exercise_id: int, _turn: None = Depends(quiz_start_slot, scope="function"),
               db: Session = Depends(get_db, scope="function"), user: User = Depends(current_user)) -> Response:
    attempt = Q.open_attempt(db, user, _quiz(db, user, exercise_id))
    return RedirectResponse(f"/attempts/{attempt.id}", status_code=303)


@router.get("/attempts/{attempt_id:int}")
def question_page(request: Request, attempt_id: int, db: Session = Depends(get_db, scope="function"),
                  user: User = Depends(current_user)) -> Response:
    attempt = _attempt(db, user, attempt_id)
    answers = Q.answers_of(db, attempt)
    k = Q.next_item(attempt, answers)
    if k is None or Q.close_if_expired(db, attempt):
        return RedirectResponse(f"/attempts/{attempt.id}/results", status_code=303)
    Q.show_item(db, attempt, k)
    ex = db.get(Exercise, attempt.exercise_id)
    left = Q.seconds_left(attempt)
    return render(request, "quiz_question.html", {
        "attempt": attempt, "ex": ex, "k": k, "question": attempt.items[k], "n": len(attempt.items),
        "seconds_left": None if left is None else max(0, int(left))})


def _int(value: str) -> int | None:
    try:
        return int(float(value)) if value.strip() else None
    except ValueError:
        return None


@router.post("/attempts/{attempt_id:int}/answers")
def answer(request: Request, attempt_id: int, item: int = Form(...), chosen: str = Form(""),
           confidence: str = Form(""), response_ms: str = Form(""), db: Session = Depends(get_db, scope="function"),
           user: User = Depends(current_user)) -> Response:
    attempt = _attempt(db, user, attempt_id)
    try:
        Q.record_answer(db, attempt, item, chosen, _int(confidence), _int(response_ms))
    except Q.TimeUp as exc:
        return render(request, "error.html", {"status": 409, "message": str(exc),
                                              "back": f"/attempts/{attempt.id}/results"}, status_code=409)
    except Q.QuizError as exc:
        return render(request, "error.html", {"status": 422, "message": str(exc),
                                              "back": f"/attempts/{attempt.id}"}, status_code=422)
    ex = db.get(Exercise, attempt.exercise_id)
    if Q.settings_of(ex).feedback == "each":
        return RedirectResponse(f"/attempts/{attempt.id}/feedback/{item}", status_code=303)
    return RedirectResponse(f"/attempts/{attempt.id}", status_code=303)


@router.get("/attempts/{attempt_id:int}/feedback/{item:int}")
def feedback_page(request: Request, attempt_id: int, item: int, db: Session = Depends(get_db, scope="function"),
                  user: User = Depends(current_user)) -> Response:
    attempt = _attempt(db, user, attempt_id)
    ex = db.get(Exercise, attempt.exercise_id)
    answers = Q.answers_of(db, attempt)
    if item not in answers:
        raise HTTPException(status_code=404, detail=f"Question {item + 1} is not answered yet.")
    if Q.settings_of(ex).feedback != "each" and not Q.close_if_expired(db, attempt):
        raise HTTPException(status_code=403, detail="This quiz shows its feedback at the end.")
    return render(request, "quiz_feedback.html", {
        "attempt": attempt, "ex": ex, "fb": Q.feedback(db, attempt, answers[item]), "n": len(attempt.items),
        "done": Q.next_item(attempt, answers) is None or attempt.finished_at is not None})


@router.get("/attempts/{attempt_id:int}/results")
def results_page(request: Request, attempt_id: int, db: Session = Depends(get_db, scope="function"),
                 user: User = Depends(current_user)) -> Response:
    attempt = _attempt(db, user, attempt_id)
    if not Q.close_if_expired(db, attempt):
        return RedirectResponse(f"/attempts/{attempt.id}", status_code=303)
    answers = Q.answers_of(db, attempt)
    ex = db.get(Exercise, attempt.exercise_id)
    conditions = Q.deck_conditions(db, ex.deck_id)
    return render(request, "quiz_results.html", {
        "attempt": attempt, "ex": ex, "res": Q.result(attempt, answers),
        "feedback": [Q.feedback(db, attempt, answers[k], conditions) for k in sorted(answers)]})


@router.get("/attempts/{attempt_id:int}/images/{item:int}")
def question_image(request: Request, attempt_id: int, item: int, db: Session = Depends(get_db, scope="function"),
                   user: User = Depends(current_user)) -> Response:
    attempt = _attempt(db, user, attempt_id)
    if Q.assigned_quiz(db, user, attempt.exercise_id) is None or not 0 <= item < len(attempt.items):
        raise HTTPException(status_code=404, detail="No such image in your quizzes.")
    img = db.get(DeckImage, attempt.items[item]["deck_image_id"])
    if img is None:
        raise HTTPException(status_code=404, detail="No such image in your quizzes.")
    return gated_image(request, img)


def trainee_home(db: Session, user: User) -> list[dict[str, object]]:
    """The quizzes (and pre-/post-tests) assigned to ``user``: title, kind, deck, status and the page to open.
    Practice is listed by :func:`phenosynth.edu.routes.practice.practice_rows` (open or closed by the educator)."""
    rows = []
    for ex in Q.assigned_exercises(db, user):
        if ex.kind not in Q.QUIZ_KINDS:
            continue
        deck = db.get(Deck, ex.deck_id)
        rows.append({"ex": ex, "deck": deck.name if deck else "", "url": f"/quizzes/{ex.id}",
                     "status": Q.status_of(db, user, ex)})
    return rows
