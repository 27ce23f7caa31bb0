"""Passwords, CSRF tokens and the sign-in rate limit of the teaching app.

- Passwords: ``pwdlib``'s recommended hasher (Argon2id through ``argon2-cffi``); :class:`Passwords` also keeps a hash of
  a random password so that a sign-in with an unknown email costs the same time as one with a wrong password.
- CSRF: the synchronizer-token pattern (OWASP's first recommendation). Each session (the signed session cookie of
  Starlette's ``SessionMiddleware``, itsdangerous) holds a random token; every form carries it in the hidden field
  ``csrf_token`` and every state-changing request is refused (403) unless the field equals the session's token
  (:func:`csrf_token_valid`, constant-time). We write these few lines rather than take ``starlette-csrf``: that
  package implements the double-submit *cookie* pattern (a second, unsigned cookie compared with a header), was last
  released in 2023, and would add a cookie the signed session already makes unnecessary.
- Hashing slots: :class:`HashingSlots` lets only a few Argon2 computations run at once (each takes its 64 MiB and,
  with argon2-cffi's 4 lanes, 4 threads); the requests beyond wait their turn in the event loop, holding no worker
  thread, so a class signing in at the same second cannot take every thread the quiz pages need. Past
  ``max_waiting`` the app answers 503 with a ``Retry-After`` estimate instead of queueing without end.
- Rate limit: :func:`login_blocked` counts the failed sign-ins stored in ``login_failures`` for the email and for the
  client address over a sliding window; the store is the database, so it holds across restarts and worker processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from phenosynth.edu.db import LoginFailure, utcnow

CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "csrf"
#: Methods that change state and therefore need the CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Passwords:
    """Argon2id hashing: pwdlib's recommended settings (argon2-cffi's defaults: 3 passes over 64 MiB), or lighter
    ones given as ``Argon2Hasher`` arguments (tests: ``Passwords(time_cost=1, memory_cost=8192)``). A hash records
    its own parameters, so hashes made with other settings still verify."""

    def __init__(self, **argon2_settings: int) -> None:
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher

        self._hasher = PasswordHash((Argon2Hasher(**argon2_settings),)) if argon2_settings else (
            PasswordHash.recommended())
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password: str, stored_hash: str | None) -> bool:
        """Whether ``password`` matches ``stored_hash``; ``None`` (no such user) spends the same time and is False."""
        if stored_hash is None:
            self._hasher.verify(password, self._dummy)
            return False
        try:
            return bool(self._hasher.verify(password, stored_hash))
        except Exception:  # noqa: BLE001 - an unreadable stored hash never signs anyone in
            return False


class HashingBusy(Exception):
    """More password checks are waiting than :class:`HashingSlots` queues; ``retry_after_s`` estimates when one
    would get its turn (the app answers 503 with that ``Retry-After``)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"The server is busy checking other passwords: try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


def default_hashing_concurrency(cpus: int | None = None) -> int:
    """One Argon2 computation per 4 CPUs (argon2-cffi runs each on 4 lanes, 4 threads), at least one.

    >>> default_hashing_concurrency(2), default_hashing_concurrency(8), default_hashing_concurrency(16)
    (1, 2, 4)
    """
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) // 4)


class HashingSlots:
    """At most ``concurrency`` holders at once (Argon2 sign-ins and password settings); up to ``max_waiting`` more
    wait for a slot as suspended coroutines (no worker thread held); beyond that :meth:`slot` raises
    :class:`HashingBusy` at once. Thread-safe, and not bound to one event loop (tests run several).

    ``concurrency`` default: :func:`default_hashing_concurrency`. ``max_waiting`` default 128: a class of 100 signing
    in at the same second all get in (the last after about 100 Argon2 checks, ~10-25 s on 2 cores), a flood does
    not queue for minutes."""

    def __init__(self, concurrency: int | None = None, max_waiting: int = 128) -> None:
        self.concurrency = concurrency if concurrency is not None else default_hashing_concurrency()
        if self.concurrency < 1 or max_waiting < 0:
            raise ValueError("HashingSlots needs concurrency >= 1 and max_waiting >= 0.")
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()
        self._mean_s = 0.3  # running mean of a slot's holding time (seconds), for Retry-After; Argon2's order

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> int:
        """Seconds until the last waiter would get its turn (at least 1)."""
        return max(1, math.ceil((len(self._waiters) + 1) * self._mean_s / self.concurrency))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._acquire()
        started = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - started
            with self._lock:
                self._mean_s += 0.2 * (held - self._mean_s)
            self._release()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running < self.concurrency and not self._waiters:
                self._running += 1
                return
            if len(self._waiters) >= self.max_waiting:
                raise HashingBusy(self.retry_after_s())
            turn: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, turn))
        try:
            await turn
        except asyncio.CancelledError:  # the client went away while waiting
            with self._lock:
                if (loop, turn) in self._waiters:
                    self._waiters.remove((loop, turn))
                    raise
            self._release()  # the slot was handed over just as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        with self._lock:
            while self._waiters:
                loop, turn = self._waiters.popleft()
                if not loop.is_closed():  # the slot passes straight to the next waiter (_running unchanged)
                    loop.call_soon_threadsafe(_grant, turn)
                    return
            self._running -= 1


def _grant(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_valid(session_token: object, submitted: object) -> bool:
    """Whether the submitted form token equals the session's (both non-empty strings; constant-time comparison).

    >>> csrf_token_valid("abc", "abc"), csrf_token_valid("abc", "abd"), csrf_token_valid(None, ""), csrf_token_valid("", "")
    (True, False, False, False)
    """
    if not isinstance(session_token, str) or not isinstance(submitted, str) or not session_token:
        return False
    return hmac.compare_digest(session_token.encode(), submitted.encode())


@dataclass(frozen=True)
class LoginLimit:
    """At most ``max_failures`` failed sign-ins per email and per client address within ``window_s`` seconds."""

    max_failures: int = 5
    window_s: float = 15 * 60


def login_blocked(db: Session, email: str, client: str, limit: LoginLimit, now: datetime | None = None) -> float:
    """Seconds until a sign-in for ``email`` from ``client`` is allowed again (0: allowed now)."""
    now = now or utcnow()
    since = now - timedelta(seconds=limit.window_s)
    worst = 0.0
    for column, value in ((LoginFailure.email, email), (LoginFailure.client, client)):
        times = db.scalars(select(LoginFailure.at).where(column == value, LoginFailure.at > since)
                           .order_by(LoginFailure.at.desc()).limit(limit.max_failures)).all()
        if len(times) >= limit.max_failures:
            oldest = _aware(times[-1])
            worst = max(worst, (oldest + timedelta(seconds=limit.window_s) - now).total_seconds())
    return max(worst, 0.0)


def record_login_failure(db: Session, email: str, client: str, limit: LoginLimit, now: datetime | None = None) -> None:
    """Store one failed sign-in and drop the failures older than the window (the table stays small)."""
    now = now or utcnow()
    db.add(LoginFailure(email=email, client=client, at=now))
    db.execute(LoginFailure.__table__.delete().where(LoginFailure.at < now - timedelta(seconds=limit.window_s)))
    db.commit()


def clear_login_failures(db: Session, email: str) -> None:
    """A successful sign-in forgets the email's failures (the client address keeps its own)."""
    db.execute(LoginFailure.__table__.delete().where(LoginFailure.email == email))
    db.commit()


def _aware(t: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were stored in UTC."""
    from datetime import timezone

    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


__all__ = ["Passwords", "HashingSlots", "HashingBusy", "default_hashing_concurrency", "new_csrf_token",
           "csrf_token_valid", "LoginLimit", "login_blocked", "record_login_failure",
           "clear_login_failures", "CSRF_FIELD", "CSRF_SESSION_KEY", "UNSAFE_METHODS"]
