"""Educator pages for cohorts, invitations and quizzes: cohorts (members, invitation links, a CSV of emails ->
accounts with set-password links), quizzes and pre-/post-test pairs assigned to a cohort. Every route depends on
:func:`current_educator` (403 for a trainee, /login when signed out)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from phenosynth.edu import cohorts as C
from phenosynth.edu import quizzes as Q
from phenosynth.edu.db import Answer, Attempt, Cohort, Deck, Exercise, Invitation, Membership, User
from phenosynth.edu.deps import current_educator, get_db, render

router = APIRouter(tags=["cohorts"], dependencies=[Depends(current_educator)])

#: Largest CSV of emails accepted.
MAX_CSV_BYTES = 512 * 1024


def _cohort(db: Session, cohort_id: int) -> Cohort:
    cohort = db.get(Cohort, cohort_id)
    if cohort is None:
        raise HTTPException(status_code=404, detail=f"No cohort {cohort_id}.")
    return cohort


def _cohort_page(request: Request, db: Session, cohort: Cohort, *, link: str | None = None,
                 error: str | None = None, status_code: int = 200) -> Response:
    invitations = db.scalars(select(Invitation).where(Invitation.cohort_id == cohort.id, Invitation.email.is_(None))
                             .order_by(Invitation.created_at.desc())).all()
    exercises = db.scalars(select(Exercise).where(Exercise.cohort_id == cohort.id).order_by(Exercise.id)).all()
    return render(request, "cohort.html", {"cohort": cohort, "members": C.members(db, cohort),
                                           "invitations": invitations, "exercises": exercises, "link": link,
                                           "error": error}, status_code=status_code)


@router.get("/cohorts")
def list_cohorts(request: Request, db: Session = Depends(get_db, scope="function")) -> Response:
    cohorts = db.scalars(select(Cohort).order_by(Cohort.created_at.desc())).all()
    sizes = dict(db.execute(select(Cohort.id, func.count()).join(Membership, Membership.cohort_id == Cohort.id)
                            .group_by(Cohort.id)).all())
    return render(request, "cohorts.html", {"cohorts": cohorts, "sizes": sizes})


@router.post("/cohorts")
def new_cohort(name: str = Form(""), db: Session = Depends(get_db, scope="function"),
               user: User = Depends(current_educator)) -> Response:
    cohort = C.create_cohort(db, user, name)
    return RedirectResponse(f"/cohorts/{cohort.id}", status_code=303)


@router.get("/cohorts/{cohort_id:int}")
def show_cohort(request: Request, cohort_id: int, db: Session = Depends(get_db, scope="function")) -> Response:
    return _cohort_page(request, db, _cohort(db, cohort_id))


@router.post("/cohorts/{cohort_id:int}/invitations")
def new_link(request: Request, cohort_id: int, max_uses: str = Form(""), expires_days: str = Form("14"),
             db: Session = Depends(get_db, scope="function"), user: User = Depends(current_educator)) -> Response:
    cohort = _cohort(db, cohort_id)
    try:
        uses = int(max_uses) if max_uses.strip() else None
        days = float(expires_days) if expires_days.strip() else None
    except ValueError:
        return _cohort_page(request, db, cohort, error="Uses and days must be numbers.", status_code=422)
    try:
        new = C.create_link_invitation(db, cohort, user, max_uses=uses,
                                       expires_in=timedelta(days=days) if days is not None else None)
    except C.CohortError as exc:
        return _cohort_page(request, db, cohort, error=str(exc), status_code=422)
    return _cohort_page(request, db, cohort, link=C.invitation_url(str(request.base_url), new.token))


@router.post("/cohorts/{cohort_id:int}/invitations/csv")
async def invite_csv(request: Request, cohort_id: int, file: UploadFile = File(...), download: str = Form(""),
                     db: Session = Depends(get_db, scope="function"), user: User = Depends(current_educator)) -> Response:
    cohort = _cohort(db, cohort_id)
    data = await file.read(MAX_CSV_BYTES + 1)
    try:
        if len(data) > MAX_CSV_BYTES:
            raise C.CohortError(f"The CSV is larger than {MAX_CSV_BYTES // 1024} KiB.")
        rows = C.invite_emails(db, cohort, user, C.parse_email_csv(data))
    except C.CohortError as exc:
        return _cohort_page(request, db, cohort, error=str(exc), status_code=422)
    table = C.links_csv(rows, str(request.base_url))
    if download:
        return Response(table, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="cohort-{cohort.id}-links.csv"'})
    return render(request, "invitation_links.html", {"cohort": cohort, "rows": rows, "csv": table,
                                                     "base_url": str(request.base_url).rstrip("/")})


# --- quizzes -----------------------------------------------------------------------------------------------------------


def _int_or_none(value: str, what: str) -> int | None:
    try:
        return int(value) if value.strip() else None
    except ValueError:
        raise Q.QuizError(f"{what} must be a whole number.") from None


@router.get("/exercises")
def list_exercises(request: Request, db: Session = Depends(get_db, scope="function")) -> Response:
    exercises = db.scalars(select(Exercise).where(Exercise.kind.in_(Q.QUIZ_KINDS))
                           .order_by(Exercise.created_at.desc(), Exercise.id.desc())).all()
    return render(request, "exercises.html", {
        "exercises": exercises, "decks": db.scalars(select(Deck).order_by(Deck.name)).all(),
        "cohorts": db.scalars(select(Cohort).order_by(Cohort.name)).all(),
        "decks_by_id": {d.id: d for d in db.scalars(select(Deck))},
        "cohorts_by_id": {c.id: c for c in db.scalars(select(Cohort))}})


@router.post("/exercises")
def new_exercise(title: str = Form(""), deck_id: int = Form(...), cohort_id: str = Form(""),
                 kind: str = Form("quiz"), n: str = Form("20"), order: str = Form("fixed"),
                 n_choices: str = Form(""), time_limit_s: str = Form(""), feedback: str = Form("each"),
                 seed: str = Form("0"), n_pre: str = Form("1"), n_post: str = Form("1"),
                 db: Session = Depends(get_db, scope="function"), user: User = Depends(current_educator)) -> Response:
    deck = db.get(Deck, deck_id)
    if deck is None:
        raise HTTPException(status_code=404, detail=f"No deck {deck_id}.")
    cohort_pk = _int_or_none(cohort_id, "The cohort")
    cohort = _cohort(db, cohort_pk) if cohort_pk is not None else None
    settings = Q.QuizSettings(n=_int_or_none(n, "The number of images") or 0, order=order,  # type: ignore[arg-type]
                              n_choices=_int_or_none(n_choices, "The number of options"),
                              time_limit_s=_int_or_none(time_limit_s, "The time limit"),
                              feedback=feedback, seed=_int_or_none(seed, "The seed") or 0)  # type: ignore[arg-type]
    if kind == "prepost":
        pre, _ = Q.create_pre_post(db, user, deck, cohort, title, settings,
                                   n_pre_per_condition=_int_or_none(n_pre, "Pre-test images") or 0,
                                   n_post_per_condition=_int_or_none(n_post, "Post-test images") or 0)
        return RedirectResponse(f"/exercises/{pre.id}", status_code=303)
    if kind != "quiz":
        raise Q.QuizError(f"Unknown kind '{kind}' (use: quiz, prepost).")
    ex = Q.create_quiz(db, user, deck, cohort, title, settings)
    return RedirectResponse(f"/exercises/{ex.id}", status_code=303)


@router.get("/exercises/{exercise_id:int}")
def show_exercise(request: Request, exercise_id: int, db: Session = Depends(get_db, scope="function")) -> Response:
    ex = db.get(Exercise, exercise_id)
    if ex is None or ex.kind not in Q.QUIZ_KINDS:
        raise HTTPException(status_code=404, detail=f"No quiz {exercise_id}.")
    attempts = db.execute(select(Attempt, User).join(User, User.id == Attempt.user_id)
                          .where(Attempt.exercise_id == ex.id).order_by(User.email)).all()
    rows = []
    for attempt, trainee in attempts:
        answers = Q.answers_of(db, attempt)
        rows.append({"email": trainee.email, "answered": len(answers), "n": len(attempt.items),
                     "correct": sum(a.chosen_label == a.correct_label for a in answers.values()),
                     "finished": Q.close_if_expired(db, attempt)})
    return render(request, "exercise.html", {
        "ex": ex, "deck": db.get(Deck, ex.deck_id), "cohort": db.get(Cohort, ex.cohort_id) if ex.cohort_id else None,
        "paired": db.get(Exercise, ex.paired_with_id) if ex.paired_with_id else None, "rows": rows,
        "n_answers": db.scalar(select(func.count()).select_from(Answer).join(Attempt).where(
            Attempt.exercise_id == ex.id))})
