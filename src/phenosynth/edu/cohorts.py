"""Cohorts and invitations: an educator groups trainees in cohorts and invites them.

Two kinds of invitation, both a secret token in a link (only its SHA-256 is stored, so a link is shown once, when it
is made):

- a **link** (``email`` empty): anyone holding it signs up as a trainee of the cohort (or, already signed in as a
  trainee, joins it); it may expire and allow one, several or unlimited sign-ups (``max_uses``);
- a **personal** invitation, made from a CSV of emails: the trainee account is created at once, without a usable
  password, and the link is its one-time set-password link. The app sends no email: the educator downloads the
  links as CSV and sends them their own way.

A use is counted with one conditional ``UPDATE`` (``uses < max_uses``), so two sign-ups racing for the last use of a
link cannot both succeed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from phenosynth.edu.accounts import AccountError, check_new_account, create_user, normalise_email
from phenosynth.edu.db import TRAINEE, Cohort, Invitation, Membership, User, utcnow
from phenosynth.edu.security import Passwords, _aware
from phenosynth.errors import PhenosynthError

log = logging.getLogger(__name__)

#: The password hash of an account made from an invitation before its trainee sets a password: no password verifies
#: against it (it is no hash format pwdlib knows).
UNSET_PASSWORD = "!unset"
#: Most emails one CSV may invite.
MAX_CSV_EMAILS = 2000
INVITATION_INVALID = "This invitation link is not valid: it is unknown, expired or used up. Ask your educator for a new one."


class CohortError(PhenosynthError):
    """A cohort or invitation request that cannot be carried out (no name, bad CSV, invalid invitation)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_cohort(db: Session, educator: User, name: str) -> Cohort:
    name = name.strip()
    if not name:
        raise CohortError("A cohort needs a name.")
    cohort = Cohort(name=name[:200], educator_id=educator.id)
    db.add(cohort)
    db.commit()
    return cohort


def add_member(db: Session, cohort_id: int, user: User) -> bool:
    """Put ``user`` in the cohort (not committed); False when already a member."""
    if db.scalar(select(Membership.id).where(Membership.cohort_id == cohort_id, Membership.user_id == user.id)):
        return False
    db.add(Membership(cohort_id=cohort_id, user_id=user.id))
    return True


def cohort_ids_of(db: Session, user: User) -> set[int]:
    """The cohorts ``user`` belongs to."""
    return set(db.scalars(select(Membership.cohort_id).where(Membership.user_id == user.id)))


def members(db: Session, cohort: Cohort) -> list[User]:
    return list(db.scalars(select(User).join(Membership, Membership.user_id == User.id)
                           .where(Membership.cohort_id == cohort.id).order_by(User.email)))


@dataclass(frozen=True)
class NewInvitation:
    """An invitation just made and its token (the only time the token exists outside the link)."""

    invitation: Invitation
    token: str


def _new_invitation(cohort: Cohort, creator: User, *, email: str | None, max_uses: int | None,
                    expires_in: timedelta | None, now: datetime) -> NewInvitation:
    token = secrets.token_urlsafe(32)
    inv = Invitation(cohort_id=cohort.id, email=email, token_hash=token_hash(token), created_by=creator.id,
                     created_at=now, expires_at=now + expires_in if expires_in is not None else None,
                     max_uses=max_uses, uses=0)
    return NewInvitation(inv, token)


def create_link_invitation(db: Session, cohort: Cohort, creator: User, *, max_uses: int | None,
                           expires_in: timedelta | None, now: datetime | None = None) -> NewInvitation:
    """A sign-up link for the cohort: ``max_uses`` sign-ups (None: no limit), valid for ``expires_in`` (None: no
    expiry)."""
    if max_uses is not None and max_uses < 1:
        raise CohortError("An invitation link must allow at least one sign-up.")
    if expires_in is not None and expires_in <= timedelta(0):
        raise CohortError("An invitation link must be valid for some time.")
    new = _new_invitation(cohort, creator, email=None, max_uses=max_uses, expires_in=expires_in,
                          now=now or utcnow())
    db.add(new.invitation)
    db.commit()
    return new


def parse_email_csv(data: bytes) -> list[str]:
    """The emails of a CSV: the column headed ``email`` (any case) or else the first column; blank rows skipped,
    duplicates once. :class:`CohortError` naming the rows that hold no email address."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CohortError("The CSV is not UTF-8 text.") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not rows:
        raise CohortError("The CSV holds no email.")
    header = [c.strip().lower() for c in rows[0]]
    column = header.index("email") if "email" in header else 0
    body = rows[1:] if "email" in header else rows
    emails, bad = [], []
    for k, row in enumerate(body, start=2 if "email" in header else 1):
        cell = row[column].strip() if column < len(row) else ""
        try:
            emails.append(check_new_account(cell, "x" * 64, TRAINEE))
        except AccountError:
            bad.append(f"row {k} ('{cell[:40]}')")
    if bad:
        raise CohortError(f"Not an email address: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}.")
    emails = list(dict.fromkeys(emails))
    if len(emails) > MAX_CSV_EMAILS:
        raise CohortError(f"The CSV holds {len(emails)} emails; at most {MAX_CSV_EMAILS} at once.")
    return emails


@dataclass(frozen=True)
class InvitedEmail:
    """One row of a CSV invitation: ``token`` is the set-password token of a new account, None otherwise."""

    email: str
    status: str
    token: str | None = None


NEW_ACCOUNT = "new account: send the set-password link"
ADDED_EXISTING = "already has an account: added to the cohort"
NOT_A_TRAINEE = "an educator account: not added"


def invite_emails(db: Session, cohort: Cohort, creator: User, emails: list[str], *,
                  expires_in: timedelta | None = timedelta(days=14), now: datetime | None = None
                  ) -> list[InvitedEmail]:
    """Trainee accounts for ``emails`` in the cohort: a new account (no usable password yet) with a one-time
    set-password invitation, or an existing trainee added to the cohort. One commit for the whole list."""
    now = now or utcnow()
    out = []
    for email in emails:
        email = normalise_email(email)
        user = db.scalar(select(User).where(User.email == email))
        if user is not None:
            if user.role != TRAINEE:
                out.append(InvitedEmail(email, NOT_A_TRAINEE))
                continue
            add_member(db, cohort.id, user)
            out.append(InvitedEmail(email, ADDED_EXISTING))
            continue
        user = User(email=email, password_hash=UNSET_PASSWORD, role=TRAINEE)
        db.add(user)
        db.flush()
        add_member(db, cohort.id, user)
        new = _new_invitation(cohort, creator, email=email, max_uses=1, expires_in=expires_in, now=now)
        db.add(new.invitation)
        out.append(InvitedEmail(email, NEW_ACCOUNT, new.token))
    db.commit()
    log.info("cohort %s: invited %d email(s)", cohort.id, len(out))
    return out


def links_csv(rows: list[InvitedEmail], base_url: str) -> str:
    """``email,status,link`` for the educator to send (the link empty where no new account was made)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["email", "status", "link"])
    for r in rows:
        w.writerow([r.email, r.status, invitation_url(base_url, r.token) if r.token else ""])
    return buf.getvalue()


def invitation_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/invite/{token}"


def valid_invitation(db: Session, token: str, now: datetime | None = None) -> Invitation:
    """The invitation of ``token`` if it can still be used; :class:`CohortError` otherwise (one message for
    unknown, expired and used up: a token guesser learns nothing)."""
    now = now or utcnow()
    inv = db.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token)))
    if inv is None or (inv.expires_at is not None and _aware(inv.expires_at) <= now) or (
            inv.max_uses is not None and inv.uses >= inv.max_uses):
        raise CohortError(INVITATION_INVALID)
    return inv


def _use(db: Session, inv: Invitation, user: User, now: datetime) -> None:
    """Count one use, atomically (fails when another request took the last use first)."""
    done = db.execute(update(Invitation).where(Invitation.id == inv.id, or_(
        Invitation.max_uses.is_(None), Invitation.uses < Invitation.max_uses)).values(
        uses=Invitation.uses + 1, accepted_at=now, accepted_user_id=user.id)).rowcount
    if done != 1:
        db.rollback()
        raise CohortError(INVITATION_INVALID)


def sign_up_by_link(db: Session, passwords: Passwords, token: str, email: str, password: str,
                    display_name: str = "", now: datetime | None = None) -> User:
    """A new trainee account in the link's cohort (:class:`AccountError` for a bad or taken email, short password)."""
    now = now or utcnow()
    inv = valid_invitation(db, token, now)
    if inv.email is not None:
        raise CohortError("This is a personal invitation: set your password on its page.")
    check_new_account(email, password, TRAINEE)
    user = create_user(db, passwords, email, password, TRAINEE, display_name=display_name.strip()[:200])
    try:
        _use(db, inv, user, now)
    except CohortError:
        db.delete(user)
        db.commit()
        raise
    add_member(db, inv.cohort_id, user)
    db.commit()
    return user


def join_by_link(db: Session, token: str, user: User, now: datetime | None = None) -> Cohort:
    """A signed-in trainee joins the link's cohort (a use counts only when they were not a member yet)."""
    now = now or utcnow()
    inv = valid_invitation(db, token, now)
    if inv.email is not None or user.role != TRAINEE:
        raise CohortError("Only a trainee can join a cohort, through a cohort link.")
    if add_member(db, inv.cohort_id, user):
        _use(db, inv, user, now)
    db.commit()
    return db.get(Cohort, inv.cohort_id)


def set_password_by_invitation(db: Session, passwords: Passwords, token: str, password: str,
                               now: datetime | None = None) -> User:
    """The one-time set-password link of a personal invitation: sets the account's password and uses the link up."""
    now = now or utcnow()
    inv = valid_invitation(db, token, now)
    if inv.email is None:
        raise CohortError("This is a sign-up link, not a personal invitation.")
    user = db.scalar(select(User).where(User.email == inv.email))
    if user is None:
        raise CohortError(INVITATION_INVALID)
    check_new_account(user.email, password, user.role)
    _use(db, inv, user, now)
    user.password_hash = passwords.hash(password)
    db.commit()
    return user


__all__ = ["CohortError", "create_cohort", "add_member", "cohort_ids_of", "members", "NewInvitation",
           "create_link_invitation", "parse_email_csv", "InvitedEmail", "invite_emails", "links_csv",
           "invitation_url", "valid_invitation", "sign_up_by_link", "join_by_link", "set_password_by_invitation",
           "UNSET_PASSWORD", "INVITATION_INVALID"]
