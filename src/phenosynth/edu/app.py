"""The teaching app's FastAPI factory: ``create_app(workspace, db_url=None, secret=None)``.

Server-rendered Jinja2 pages (autoescaped), static files served by the app (a Content-Security-Policy of
``default-src 'self'`` keeps every page off CDNs), signed session cookies (Starlette's ``SessionMiddleware``,
itsdangerous), a CSRF check on every state-changing request (an app-wide dependency: see
:mod:`phenosynth.edu.security`), roles as dependencies (:mod:`phenosynth.edu.deps`), one router per resource
(:mod:`phenosynth.edu.routes`). The database is migrated (Alembic ``upgrade head``) when the app is made.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phenosynth.data.workspace import Workspace
from phenosynth.edu import db as edu_db
from phenosynth.edu.decks import WorkspaceImages, ZipLimits
from phenosynth.edu.deps import LoginRequired, csrf_protect, render
from phenosynth.edu.security import LoginLimit, Passwords, Slots, default_hashing_concurrency, quiz_start_slots
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SECRET_FILE = "edu.secret"
#: What ``phenosynth serve --workers N`` hands its worker processes (:func:`app_from_environment`).
WORKSPACE_ENV, DB_URL_ENV, WORKERS_ENV = "PHENOSYNTH_EDU_WORKSPACE", "PHENOSYNTH_EDU_DB_URL", "PHENOSYNTH_EDU_WORKERS"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def workspace_secret(root: Path) -> str:
    """The session-signing secret: ``PHENOSYNTH_SECRET`` if set, else ``WS/edu.secret`` (made once, mode 0600), so
    sessions survive a restart."""
    env = os.environ.get("PHENOSYNTH_SECRET")
    if env:
        return env
    path = Path(root) / SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class BodyLimit:
    """Refuse (413) a request whose body is larger than ``max_bytes``, by its Content-Length or as it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await Response("Upload too large.", status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, "Upload too large.")
            return message

        await self.app(scope, limited, send)


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response that does not set them itself. A plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs each request through an extra task and
    memory streams, a cost paid on every quiz page and image."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in self._headers
                                                                          if k not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(workspace: str | Path, db_url: str | None = None, secret: str | None = None, *,
               login_limit: LoginLimit = LoginLimit(), zip_limits: ZipLimits = ZipLimits(),
               https_only: bool = False, passwords: Passwords | None = None,
               hashing: Slots | None = None) -> FastAPI:
    """The app for ``workspace`` (which must exist); the database at ``db_url`` (default ``WS/edu.sqlite``) is
    migrated to the current schema first. ``passwords`` (default: pwdlib's recommended Argon2id) hashes passwords;
    ``hashing`` (default: :class:`Slots` sized to the machine) bounds how many do at once.
    """
    ws = Workspace.open(workspace)
    url = db_url or edu_db.default_url(ws.root)
    engine = edu_db.make_engine(url)
    edu_db.migrate(engine)

    app = FastAPI(title="phenosynth teaching app", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(csrf_protect)])
    app.state.workspace = ws
    app.state.engine = engine
    app.state.sessions = edu_db.session_factory(engine)
    app.state.passwords = passwords or Passwords()
    app.state.hashing = hashing or Slots()
    app.state.quiz_starts = quiz_start_slots()
    app.state.images = WorkspaceImages(ws)
    app.state.edu_dir = ws.root / "edu"
    app.state.login_limit = login_limit
    app.state.zip_limits = zip_limits
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))

    from phenosynth.edu.routes import routers

    for router in routers():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                          status_code=exc.status_code)
        response.headers.update(exc.headers or {})  # e.g. Retry-After on a 503
        return response

    @app.exception_handler(PhenosynthError)
    async def _user_error(request: Request, exc: PhenosynthError) -> Response:
        return render(request, "error.html", {"status": 400, "message": str(exc)}, status_code=400)

    app.add_middleware(SessionMiddleware, secret_key=secret or workspace_secret(ws.root), session_cookie="phenosynth",
                       same_site="lax", https_only=https_only, max_age=12 * 3600)
    app.add_middleware(BodyLimit, max_bytes=zip_limits.max_zip_bytes + 1024 * 1024)
    app.add_middleware(SecurityHeaders)
    return app


def app_from_environment() -> FastAPI:
    """:func:`create_app` for one of uvicorn's worker processes (``phenosynth serve --workers N`` runs
    ``uvicorn.run("phenosynth.edu.app:app_from_environment", factory=True, workers=N)``): the workspace and database
    from :data:`WORKSPACE_ENV` / :data:`DB_URL_ENV`; the machine's password-hashing slots shared out among the
    :data:`WORKERS_ENV` workers (each process keeps its own). The session secret is the workspace's, the same in
    every worker; the sign-in rate limit lives in the database, so it holds across workers."""
    workspace = os.environ.get(WORKSPACE_ENV)
    if not workspace:
        raise PhenosynthError(f"{WORKSPACE_ENV} is not set: start the app with `phenosynth serve -w WS --workers N`.")
    workers = max(1, int(os.environ.get(WORKERS_ENV, "1")))
    return create_app(workspace, db_url=os.environ.get(DB_URL_ENV) or None,
                      hashing=Slots(concurrency=max(1, default_hashing_concurrency() // workers)))


__all__ = ["create_app", "app_from_environment", "workspace_secret", "BodyLimit", "WORKSPACE_ENV", "DB_URL_ENV",
           "WORKERS_ENV", "SecurityHeaders"]
