"""Passwords, CSRF tokens and the sign-in rate limit of the teaching app.

- Passwords: ``pwdlib``'s recommended hasher (Argon2id through ``argon2-cffi``); :class:`Passwords` also keeps a hash of
  a random password so that a sign-in with an unknown email costs the same time as one with a wrong password.
- CSRF: the synchronizer-token pattern (OWASP's first recommendation). Each session (the signed session cookie of
  Starlette's ``SessionMiddleware``, itsdangerous) holds a random token; every form carries it in the hidden field
  ``csrf_token`` and every state-changing request is refused (403) unless the field equals the session's token
  (:func:`csrf_token_valid`, constant-time). We write these few lines rather than take ``starlette-csrf``: that
  package implements the double-submit *cookie* pattern (a second, unsigned cookie compared with a header), was last
  released in 2023, and would add a cookie the signed session already makes unnecessary.
- Slots (:class:`Slots`): a few requests of one costly kind at a time, the rest waiting their turn in the event loop,
  holding no worker thread; past ``max_waiting`` the app answers 503 with a ``Retry-After`` estimate instead of
  queueing without end. Two kinds take turns: Argon2 computations (each takes its 64 MiB and, with argon2-cffi's 4
  lanes, 4 threads), so a class signing in at the same second cannot take every thread the quiz pages need; and
  quiz starts (:data:`QUIZ_START_CONCURRENCY`), so a class pressing "start" at once waits at the start while the
  trainees already in the quiz get their pages.
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


class SlotsBusy(Exception):
    """More requests are waiting than :class:`Slots` queues; ``retry_after_s`` estimates when one would get its turn
    (the app answers 503 with that ``Retry-After``)."""

    def __init__(self, retry_after_s: int, busy_with: str = "checking other passwords") -> None:
        super().__init__(f"The server is busy {busy_with}: try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


def default_hashing_concurrency(cpus: int | None = None) -> int:
    """One Argon2 computation per 4 CPUs (argon2-cffi runs each on 4 lanes, 4 threads), at least one.

    >>> default_hashing_concurrency(2), default_hashing_concurrency(8), default_hashing_concurrency(16)
    (1, 2, 4)
    """
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) // 4)


#: Quiz starts one at a time per server process (each is a few ms of CPU under the GIL; more at once only slows every
#: other request): 100 trainees pressing "start" together wait their turn at the start, ~1 s for the last on 2 cores,
#: while the pages of the trainees already answering are served at once (benchmarks/results/serve_load.md).
QUIZ_START_CONCURRENCY = 1
#: A start waits this long for its turn at most, then goes ahead: turns spread a class's burst of starts, but when
#: the server is overloaded for minutes (starts arriving faster than one at a time can serve them) they would build
#: a queue that grows without end (measured: starts waiting 5-11 s in the saturation test).
QUIZ_START_MAX_WAIT_S = 1.0
#: More starts than this waiting at once get a 503 with Retry-After.
QUIZ_START_MAX_WAITING = 1000


def quiz_start_slots() -> Slots:
    """The slots quiz starts take turns in (:data:`QUIZ_START_CONCURRENCY`, one set per server process)."""
    return Slots(QUIZ_START_CONCURRENCY, QUIZ_START_MAX_WAITING, busy_with="starting other trainees' quizzes",
                 max_wait_s=QUIZ_START_MAX_WAIT_S)


class Slots:
    """At most ``concurrency`` holders at once; up to ``max_waiting`` more wait for a slot as suspended coroutines
    (no worker thread held); beyond that :meth:`slot` raises :class:`SlotsBusy` (saying what the server is
    ``busy_with``) at once. With ``max_wait_s`` a waiter that has not had its turn after that many seconds goes ahead
    without a slot (turns to spread a burst, never a queue that grows when the server is overloaded); without, it
    waits for its turn. Thread-safe, and not bound to one event loop (tests run several).

    Defaults are the password-hashing slots' (sign-ins and password settings): ``concurrency``
    :func:`default_hashing_concurrency`; ``max_waiting`` 128: a class of 100 signing in at the same second all get in
    (the last after about 100 Argon2 checks, ~10-25 s on 2 cores), a flood does not queue for minutes."""

    def __init__(self, concurrency: int | None = None, max_waiting: int = 128,
                 busy_with: str = "checking other passwords", max_wait_s: float | None = None) -> None:
        self.concurrency = concurrency if concurrency is not None else default_hashing_concurrency()
        if self.concurrency < 1 or max_waiting < 0 or (max_wait_s is not None and max_wait_s < 0):
            raise ValueError("Slots needs concurrency >= 1, max_waiting >= 0 and max_wait_s >= 0 (or None).")
        self.max_waiting = max_waiting
        self.busy_with = busy_with
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()
        self._mean_s = 0.3  # running mean of a slot's holding time (seconds), for Retry-After; Argon2's order

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> int:
        """Seconds until the last waiter would get its turn (at least 1; at most ``max_wait_s`` when bounded)."""
        turn = math.ceil((len(self._waiters) + 1) * self._mean_s / self.concurrency)
        return max(1, turn if self.max_wait_s is None else min(turn, math.ceil(self.max_wait_s)))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if not await self._acquire():
            yield  # waited max_wait_s: goes ahead without a slot
            return
        started = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - started
            with self._lock:
                self._mean_s += 0.2 * (held - self._mean_s)
            self._release()

    async def _acquire(self) -> bool:
        """Wait for a slot; True when one is held, False when ``max_wait_s`` passed first."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running < self.concurrency and not self._waiters:
                self._running += 1
                return True
            if len(self._waiters) >= self.max_waiting:
                raise SlotsBusy(self.retry_after_s(), self.busy_with)
            turn: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.max_wait_s)
            return True
        except TimeoutError:
            with self._lock:
                if (loop, turn) in self._waiters:
                    self._waiters.remove((loop, turn))
                    return False
            return True  # the slot was handed over just as the wait ran out: hold it
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


__all__ = ["Passwords", "Slots", "SlotsBusy", "quiz_start_slots", "default_hashing_concurrency", "new_csrf_token",
           "csrf_token_valid", "LoginLimit", "login_blocked", "record_login_failure",
           "clear_login_failures", "CSRF_FIELD", "CSRF_SESSION_KEY", "UNSAFE_METHODS"]
