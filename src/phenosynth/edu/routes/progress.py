"""Progress pages (issue 13, item 4): the educator sees every trainee and every cohort, with CSV/JSON exports; a
trainee sees only their own page (``/progress/me``; any other trainee's page is 403)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from phenosynth.data.filenames import safe_name
from phenosynth.edu import progress as P
from phenosynth.edu.db import EDUCATOR, TRAINEE, Cohort, User
from phenosynth.edu.deps import current_educator, current_user, get_db, render

router = APIRouter(tags=["progress"])

OTHERS_PROGRESS = "A trainee sees only their own progress."


def _trainee(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None or user.role != TRAINEE:
        raise HTTPException(status_code=404, detail=f"No trainee {user_id}.")
    return user


def _cohort(db: Session, cohort_id: int) -> Cohort:
    cohort = db.get(Cohort, cohort_id)
    if cohort is None:
        raise HTTPException(status_code=404, detail=f"No cohort {cohort_id}.")
    return cohort


def _page(request: Request, report: P.Report, base: str, *, educator: bool) -> Response:
    p = report.progress
    return render(request, "progress.html", {
        "report": report, "p": p, "charts": P.charts(p) if p is not None else {}, "base": base,
        "views": list(P.VIEWS), "educator": educator, "tables": P.EXPORT_TABLES,
        "n_practice": int((report.answers["phase"] == "practice").sum())})


def _export(report: P.Report, name: str, fmt: str, table: str) -> Response:
    if fmt not in ("csv", "json"):
        raise HTTPException(status_code=404, detail=f"No export format '{fmt}' (use: csv, json).")
    if fmt == "json":
        return Response(P.export_json(report), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}-{report.view}.json"'})
    frame = P.export_table(report, table)
    return Response(frame.to_csv(index=False), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}-{report.view}-{table}.csv"'})


@router.get("/progress/me")
def my_progress(user: User = Depends(current_user)) -> Response:
    if user.role == EDUCATOR:
        return RedirectResponse("/progress", status_code=303)
    return RedirectResponse(f"/progress/trainees/{user.id}", status_code=303)


@router.get("/progress/trainees/{user_id:int}")
def trainee_page(request: Request, user_id: int, view: str = "tests", deck: int | None = None,
                 db: Session = Depends(get_db, scope="function"), user: User = Depends(current_user)) -> Response:
    if user.role != EDUCATOR and user.id != user_id:
        raise HTTPException(status_code=403, detail=OTHERS_PROGRESS)
    report = P.trainee_report(db, _trainee(db, user_id), view=view, deck_id=deck)
    return _page(request, report, f"/progress/trainees/{user_id}", educator=user.role == EDUCATOR)


@router.get("/progress", dependencies=[Depends(current_educator)])
def overview(request: Request, view: str = "tests", db: Session = Depends(get_db, scope="function")) -> Response:
    trainees = list(db.scalars(select(User).where(User.role == TRAINEE).order_by(User.email)))
    report = P.group_report(db, "All trainees", trainees, view=view)
    by_email = {m.who: m for m in report.members}
    cohorts = list(db.scalars(select(Cohort).order_by(Cohort.name)))
    return render(request, "progress_index.html", {
        "report": report, "rows": [(t, by_email.get(t.email)) for t in trainees], "cohorts": cohorts,
        "views": list(P.VIEWS)})


@router.get("/progress/trainees/{user_id:int}/export.{fmt}", dependencies=[Depends(current_educator)])
def trainee_export(user_id: int, fmt: str, view: str = "tests", table: str = "summary", deck: int | None = None,
                   db: Session = Depends(get_db, scope="function")) -> Response:
    trainee = _trainee(db, user_id)
    return _export(P.trainee_report(db, trainee, view=view, deck_id=deck), safe_name(trainee.email), fmt, table)


@router.get("/progress/cohorts/{cohort_id:int}", dependencies=[Depends(current_educator)])
def cohort_page(request: Request, cohort_id: int, view: str = "tests", deck: int | None = None,
                db: Session = Depends(get_db, scope="function")) -> Response:
    report = P.cohort_report(db, _cohort(db, cohort_id), view=view, deck_id=deck)
    return _page(request, report, f"/progress/cohorts/{cohort_id}", educator=True)


@router.get("/progress/cohorts/{cohort_id:int}/export.{fmt}", dependencies=[Depends(current_educator)])
def cohort_export(cohort_id: int, fmt: str, view: str = "tests", table: str = "summary", deck: int | None = None,
                  db: Session = Depends(get_db, scope="function")) -> Response:
    cohort = _cohort(db, cohort_id)
    return _export(P.cohort_report(db, cohort, view=view, deck_id=deck), safe_name(cohort.name), fmt, table)

