"""Sign-in (rate-limited), sign-out and the home page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from phenosynth.edu.accounts import authenticate, normalise_email
from phenosynth.edu.db import EDUCATOR, User
from phenosynth.edu.deps import csrf_token, current_user, get_db, password_slot, render
from phenosynth.edu.security import CSRF_SESSION_KEY, clear_login_failures, login_blocked, new_csrf_token, \
    record_login_failure

router = APIRouter(tags=["auth"])

WRONG_CREDENTIALS = "Wrong email or password."


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` or a full URL).

    >>> safe_next("/decks/3"), safe_next("//evil.example"), safe_next("https://evil.example"), safe_next(None)
    ('/decks/3', '/', '/', '/')
    """
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": safe_next(next)})


@router.post("/login")
def login(request: Request, email: str = Form(""), password: str = Form(""), next: str = Form("/"),
          _turn: None = Depends(password_slot, scope="function"), db: Session = Depends(get_db, scope="function")
          ) -> Response:
    limit = request.app.state.login_limit
    email = normalise_email(email)
    client = request.client.host if request.client else "unknown"
    wait = login_blocked(db, email, client, limit)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        return render(request, "login.html", {"next": safe_next(next), "email": email,
                                              "error": f"Too many failed sign-ins. Try again in {minutes} minute(s)."},
                      status_code=429)
    user = authenticate(db, request.app.state.passwords, email, password)
    if user is None:
        record_login_failure(db, email, client, limit)
        return render(request, "login.html", {"next": safe_next(next), "email": email, "error": WRONG_CREDENTIALS},
                      status_code=401)
    clear_login_failures(db, email)
    request.session.clear()  # a new session on sign-in (no fixation), with a new CSRF token
    request.session["user_id"] = user.id
    request.session[CSRF_SESSION_KEY] = new_csrf_token()
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db, scope="function")) -> Response:
    if user.role == EDUCATOR:
        return RedirectResponse("/decks", status_code=303)
    from phenosynth.edu.routes.practice import due_today, practice_rows
    from phenosynth.edu.routes.quiz import trainee_home

    csrf_token(request)
    return render(request, "home.html", {"exercises": trainee_home(db, user), "practice": practice_rows(db, user),
                                         "due_today": due_today(db, user)})
