"""Passwords, CSRF tokens and the sign-in rate limit of the teaching app.

- Passwords: ``pwdlib``'s recommended hasher (Argon2id through ``argon2-cffi``); :class:`Passwords` also keeps a hash of
  a random password so that a sign-in with an unknown email costs the same time as one with a wrong password.
- CSRF: the synchronizer-token pattern (OWASP's first recommendation). Each session (the signed session cookie of
  Starlette's ``SessionMiddleware``, itsdangerous) holds a random token; every form carries it in the hidden field
  ``csrf_token`` and every state-changing request is refused (403) unless the field equals the session's token
  (:func:`csrf_token_valid`, constant-time). We write these few lines rather than take ``starlette-csrf``: that
  package implements the double-submit *cookie* pattern (a second, unsigned cookie compared with a header), was last
  released in 2023, and would add a cookie the signed session already makes unnecessary.
- Rate limit: :func:`login_blocked` counts the failed sign-ins stored in ``login_failures`` for the email and for the
  client address over a sliding window; the store is the database, so it holds across restarts and worker processes.
"""

from __future__ import annotations

import hmac
import secrets
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


__all__ = ["Passwords", "new_csrf_token", "csrf_token_valid", "LoginLimit", "login_blocked", "record_login_failure",
           "clear_login_failures", "CSRF_FIELD", "CSRF_SESSION_KEY", "UNSAFE_METHODS"]
