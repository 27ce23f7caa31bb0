"""Request dependencies of the teaching app: one database session per request, the signed-in user, roles, the CSRF
check, and the page renderer that puts the session's CSRF token into every form."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from phenosynth.edu.db import EDUCATOR, User, session_scope
from phenosynth.edu.security import CSRF_FIELD, CSRF_SESSION_KEY, UNSAFE_METHODS, Slots, SlotsBusy, \
    csrf_token_valid, new_csrf_token

CSRF_REFUSED = "CSRF token missing or invalid: reload the page and send the form again."
#: Image files up to this size are read by the route and sent in one piece (:func:`gated_file`).
INLINE_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Viewer:
    """What a page shows of the signed-in user (plain values: pages rendered after the request's database session
    ended, e.g. error pages, never touch a detached ORM object)."""

    id: int
    email: str
    role: str


class LoginRequired(Exception):
    """Raised by :func:`current_user` for a signed-out request; the app answers with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def get_db(request: Request) -> Iterator[Session]:
    """The request's session. Routes declare it ``Depends(get_db, scope="function")``: it is closed (its connection
    back in the pool) as soon as the route function returns, not after the response is sent (a file response reads
    its file on the thread pool, and a connection held while waiting for a thread starves the pool: see
    :func:`current_user`)."""
    yield from session_scope(request.app.state.sessions)


def current_user(request: Request, db: Session = Depends(get_db, scope="function")) -> User:
    """The signed-in, active user; :class:`LoginRequired` otherwise.

    It ends its read transaction before it returns, so the connection goes back to the pool: FastAPI runs this
    dependency and the route on separate turns of the thread pool, and a request holding a connection while it waits
    for its next thread deadlocks under load (every thread waiting for a connection, every connection held by a
    request waiting for a thread; the pool's 30 s timeout then fails them). With a connection held only while a
    thread works on the request, the pool (:func:`phenosynth.edu.db.make_engine`: 50) never runs out before the
    thread pool (40)."""
    user_id = request.session.get("user_id")
    user = db.get(User, user_id) if isinstance(user_id, int) else None
    db.commit()  # nothing written: this gives the connection back (expire_on_commit=False keeps ``user`` loaded)
    if user is None or not user.active:
        request.session.pop("user_id", None)
        raise LoginRequired(quote(request.url.path, safe="/"))
    request.state.viewer = Viewer(user.id, user.email, user.role)
    return user


@contextlib.asynccontextmanager
async def _turn(slots: Slots) -> AsyncIterator[None]:
    """A slot of ``slots`` for the rest of the request; 503 with ``Retry-After`` when too many wait."""
    try:
        async with slots.slot():
            yield
    except SlotsBusy as exc:
        raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None


async def password_slot(request: Request) -> AsyncIterator[None]:
    """A turn at hashing a password (the app's :class:`phenosynth.edu.security.Slots`), held until the route
    returns: routes that check or set a password declare it ``Depends(password_slot, scope="function")`` before their
    database session. While waiting, a request holds no worker thread; when too many wait, 503 with ``Retry-After``."""
    async with _turn(request.app.state.hashing):
        yield


async def quiz_start_slot(request: Request) -> AsyncIterator[None]:
    """A turn at starting a quiz (:func:`phenosynth.edu.security.quiz_start_slots`), declared like
    :func:`password_slot`: a class pressing "start" together queues here, holding no worker thread, instead of
    slowing every page of the trainees already answering."""
    async with _turn(request.app.state.quiz_starts):
        yield


def current_educator(user: User = Depends(current_user)) -> User:
    """The signed-in educator; 403 for a trainee."""
    if user.role != EDUCATOR:
        raise HTTPException(status_code=403, detail="This page is for educators.")
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = request.session[CSRF_SESSION_KEY] = new_csrf_token()
    return token


async def csrf_protect(request: Request) -> None:
    """App-wide: a POST/PUT/PATCH/DELETE must carry the session's token in the form field ``csrf_token`` (403)."""
    if request.method not in UNSAFE_METHODS:
        return
    try:
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
    except HTTPException:
        raise
    except Exception:  # noqa: BLE001 - a body that is not a form carries no token
        submitted = None
    if not csrf_token_valid(request.session.get(CSRF_SESSION_KEY), submitted):
        raise HTTPException(status_code=403, detail=CSRF_REFUSED)


def render(request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    """A page from ``templates/``; every page gets ``csrf_token``, the signed-in ``user`` (or None) and ``request``."""
    ctx = {"csrf_token": csrf_token(request), "csrf_field": CSRF_FIELD, "user": getattr(request.state, "viewer", None)}
    ctx.update(context or {})
    return request.app.state.templates.TemplateResponse(request, template, ctx, status_code=status_code)



def gated_file(locate: Any) -> Response:
    """The file ``locate()`` names, or 403 with the reason when the deck gate refuses it (``locate`` raises
    :class:`phenosynth.edu.decks.DeckError`): every image route serves through this, so the gate is checked again as
    a file is served (a re-audit that flags an image, or a retired image, answers 403)."""
    from fastapi.responses import FileResponse

    from phenosynth.edu.decks import DeckError

    try:
        path = locate()
    except DeckError as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    st = path.stat()
    response = FileResponse(path, stat_result=st, headers={"Cache-Control": "private, max-age=300"})
    if st.st_size > INLINE_FILE_BYTES:
        return response
    # a face image is tens of kB: read it here, on the route's worker thread, rather than let FileResponse stat,
    # open, read and close it in four more trips through the thread pool (each one a wait in its queue under load);
    # the same headers (type, ETag, Last-Modified, caching), the length of the bytes actually read
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return Response(path.read_bytes(), headers=headers)


def gated_image(request: Request, image: Any) -> Response:
    """:func:`gated_file` of deck image ``image``."""
    from phenosynth.edu.decks import image_path

    return gated_file(lambda: image_path(image, request.app.state.images, request.app.state.edu_dir))
