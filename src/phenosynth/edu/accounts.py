"""Accounts of the teaching app: educators and trainees, and the first educator that ``phenosynth serve`` makes."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from phenosynth.edu.db import EDUCATOR, ROLES, User
from phenosynth.edu.security import Passwords
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: Shortest password an account may have (NIST SP 800-63B: at least 8; we ask for more on a shared teaching server).
MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(PhenosynthError):
    """An account that cannot be made as asked (bad email, short password, unknown role, taken email)."""


def normalise_email(email: str) -> str:
    """Emails are compared and stored lower-case, without surrounding spaces.

    >>> normalise_email("  Ada@Example.ORG ")
    'ada@example.org'
    """
    return email.strip().lower()


def check_new_account(email: str, password: str, role: str) -> str:
    """The normalised email; raises :class:`AccountError` saying what is wrong."""
    email = normalise_email(email)
    if not _EMAIL.match(email):
        raise AccountError(f"'{email}' is not an email address.")
    if role not in ROLES:
        raise AccountError(f"Unknown role '{role}': choose one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    return email


def create_user(db: Session, passwords: Passwords, email: str, password: str, role: str,
                display_name: str = "") -> User:
    """A new account (committed); :class:`AccountError` for a bad email/password/role or an email already taken."""
    email = check_new_account(email, password, role)
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"An account for {email} already exists.")
    user = User(email=email, password_hash=passwords.hash(password), role=role, display_name=display_name)
    db.add(user)
    db.commit()
    log.info("created %s account %s", role, email)
    return user


def has_educator(db: Session) -> bool:
    return db.scalar(select(User.id).where(User.role == EDUCATOR).limit(1)) is not None


@dataclass(frozen=True)
class FirstEducator:
    """What :func:`ensure_first_educator` did: ``created`` False when an educator already existed."""

    email: str
    created: bool


def ensure_first_educator(db: Session, passwords: Passwords, email: str, password: str) -> FirstEducator:
    """Create the educator account ``email`` unless the database already has an educator; never changes an existing
    account's password."""
    existing = db.scalar(select(User).where(User.role == EDUCATOR).order_by(User.id).limit(1))
    if existing is not None:
        return FirstEducator(existing.email, created=False)
    user = create_user(db, passwords, email, password, EDUCATOR)
    return FirstEducator(user.email, created=True)


def authenticate(db: Session, passwords: Passwords, email: str, password: str) -> User | None:
    """The active user with this email and password, else None (same work whether or not the email exists)."""
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    stored = user.password_hash if user is not None else None
    # end the read before the deliberately slow hash: its connection goes back to the pool meanwhile (100 sign-ins at
    # once would otherwise hold every pooled connection for the length of an Argon2 check and time the rest out)
    db.commit()
    ok = passwords.verify(password, stored)
    return user if ok and user is not None and user.active else None


__all__ = ["create_user", "ensure_first_educator", "authenticate", "has_educator", "normalise_email", "AccountError",
           "FirstEducator", "MIN_PASSWORD_LENGTH"]
