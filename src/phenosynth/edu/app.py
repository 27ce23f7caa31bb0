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
from phenosynth.edu.security import LoginLimit, Passwords
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SECRET_FILE = "edu.secret"
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


def create_app(workspace: str | Path, db_url: str | None = None, secret: str | None = None, *,
               login_limit: LoginLimit = LoginLimit(), zip_limits: ZipLimits = ZipLimits(),
               https_only: bool = False, passwords: Passwords | None = None) -> FastAPI:
    """The app for ``workspace`` (which must exist); the database at ``db_url`` (default ``WS/edu.sqlite``) is
    migrated to the current schema first. ``passwords`` (default: pwdlib's recommended Argon2id) hashes passwords.
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
        return render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                      status_code=exc.status_code)

    @app.exception_handler(PhenosynthError)
    async def _user_error(request: Request, exc: PhenosynthError) -> Response:
        return render(request, "error.html", {"status": 400, "message": str(exc)}, status_code=400)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    app.add_middleware(SessionMiddleware, secret_key=secret or workspace_secret(ws.root), session_cookie="phenosynth",
                       same_site="lax", https_only=https_only, max_age=12 * 3600)
    app.add_middleware(BodyLimit, max_bytes=zip_limits.max_zip_bytes + 1024 * 1024)
    return app


__all__ = ["create_app", "workspace_secret", "BodyLimit"]
