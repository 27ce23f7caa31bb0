"""The teaching app's database: SQLAlchemy 2 typed models, engines, sessions and migrations.

SQLite by default (``WS/edu.sqlite``), PostgreSQL (or anything SQLAlchemy speaks) through a URL. The schema is owned
by the Alembic migrations in ``phenosynth/edu/alembic/versions``; :func:`migrate` runs ``upgrade head`` and the app
calls it at start-up, so a new database and an old one both end at the current schema. The models below must match
the migrations (a test compares them with Alembic's autogenerate).

The database never holds pixels: a deck image is a reference (the workspace's ``image_id``, its generator run) or,
for an imported deck, the name of a re-encoded synthetic image file under ``WS/edu/images``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

EDUCATOR = "educator"
TRAINEE = "trainee"
ROLES = (EDUCATOR, TRAINEE)

#: Where a deck image's pixels live: the workspace (a synthetic image of a generator run) or the app's own folder of
#: images re-encoded from an imported deck zip.
FROM_WORKSPACE = "workspace"
FROM_IMPORT = "imported"

#: Kinds of exercise (issue 13, item 3).
EXERCISE_KINDS = ("quiz", "pretest", "posttest", "practice")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_url(workspace: Path) -> str:
    """The default database: ``sqlite:///WS/edu.sqlite``."""
    return f"sqlite:///{Path(workspace).resolve() / 'edu.sqlite'}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('educator', 'trainee')", name="ck_users_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)  # stored lower-case
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginFailure(Base):
    """One failed sign-in (the rate limit counts them per email and per client address in a time window)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Deck(Base):
    __tablename__ = "decks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    conditions: Mapped[list[DeckCondition]] = relationship(
        back_populates="deck", cascade="all, delete-orphan", order_by="DeckCondition.position")
    images: Mapped[list[DeckImage]] = relationship(
        back_populates="deck", cascade="all, delete-orphan", order_by="DeckImage.position")


class DeckCondition(Base):
    """A condition of a deck and its annotation: name, key facial features (HPO terms + free text), description."""

    __tablename__ = "deck_conditions"
    __table_args__ = (UniqueConstraint("deck_id", "name", name="uq_deck_conditions_deck_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deck_id: Mapped[int] = mapped_column(ForeignKey("decks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    hpo_terms: Mapped[list[str]] = mapped_column(default=list)  # ["HP:0000316", ...]
    features_text: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)

    deck: Mapped[Deck] = relationship(back_populates="conditions")
    images: Mapped[list[DeckImage]] = relationship(back_populates="condition", order_by="DeckImage.position")


class DeckImage(Base):
    """A synthetic face of a deck: a reference, never pixels. ``origin`` is :data:`FROM_WORKSPACE` (``image_id`` is
    the workspace manifest's, ``run`` its generator run) or :data:`FROM_IMPORT` (``image_id`` is the SHA-256 of the
    re-encoded file ``WS/edu/images/<image_id>.png``). ``audit`` keeps the audit scores shown in the grid."""

    __tablename__ = "deck_images"
    __table_args__ = (UniqueConstraint("deck_id", "image_id", name="uq_deck_images_deck_image"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deck_id: Mapped[int] = mapped_column(ForeignKey("decks.id", ondelete="CASCADE"), index=True)
    condition_id: Mapped[int] = mapped_column(ForeignKey("deck_conditions.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16), default=FROM_WORKSPACE)
    run: Mapped[str] = mapped_column(String(200), default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    audit: Mapped[dict[str, Any]] = mapped_column(default=dict)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    deck: Mapped[Deck] = relationship(back_populates="images")
    condition: Mapped[DeckCondition] = relationship(back_populates="images")


class Cohort(Base):
    __tablename__ = "cohorts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    educator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("cohort_id", "user_id", name="uq_memberships_cohort_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Invitation(Base):
    """A link (``email`` empty) or a personal invitation to a cohort; only the SHA-256 of the token is stored."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    accepted_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # 0002: how many sign-ups the link allows (None: no limit; a personal invitation: 1) and how many it had
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Exercise(Base):
    """A quiz, a pre-/post-test or a practice set over a deck; ``settings`` holds its options (N images, order,
    choices, time limit, feedback, held-back images, ...)."""

    __tablename__ = "exercises"
    __table_args__ = (CheckConstraint("kind IN ('quiz', 'pretest', 'posttest', 'practice')", name="ck_exercises_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deck_id: Mapped[int] = mapped_column(ForeignKey("decks.id"), index=True)
    cohort_id: Mapped[int | None] = mapped_column(ForeignKey("cohorts.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    paired_with_id: Mapped[int | None] = mapped_column(ForeignKey("exercises.id"), nullable=True)  # pre <-> post
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Attempt(Base):
    """One sitting of one trainee at one exercise."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    exercise_id: Mapped[int] = mapped_column(ForeignKey("exercises.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # 0002: a quiz attempt's questions in the order asked ([{"deck_image_id", "condition", "choices"}, ...]), its
    # deadline (the exercise's time limit, enforced by the server) and the question on screen since ``shown_at``
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    shown_item: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Answer(Base):
    """One classified image: the label chosen, the correct one, the confidence (1-5) and the response time."""

    __tablename__ = "answers"
    __table_args__ = (CheckConstraint("confidence BETWEEN 1 AND 5", name="ck_answers_confidence"),
                      CheckConstraint("response_ms >= 0", name="ck_answers_response_ms"),
                      UniqueConstraint("attempt_id", "item", name="uq_answers_attempt_item"))

    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    deck_image_id: Mapped[int] = mapped_column(ForeignKey("deck_images.id"), index=True)
    chosen_label: Mapped[str] = mapped_column(String(200))
    correct_label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[int] = mapped_column(Integer)
    response_ms: Mapped[int] = mapped_column(Integer)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # 0002: the question's index in its attempt (unique per attempt: a double submit stores one answer); None for
    # answers that are not numbered questions
    item: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReviewCard(Base):
    """Spaced-repetition state (the ``fsrs`` package's card, as its ``to_dict``) of one trainee and one condition."""

    __tablename__ = "review_cards"
    __table_args__ = (UniqueConstraint("user_id", "condition_id", name="uq_review_cards_user_condition"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    condition_id: Mapped[int] = mapped_column(ForeignKey("deck_conditions.id", ondelete="CASCADE"), index=True)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    due: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on (SQLite's default is off), WAL so readers do not wait for the writer, a busy timeout, and
    ``synchronous=NORMAL``: in WAL mode SQLite then syncs the log at checkpoints instead of on every commit (the
    setting SQLite's documentation recommends for WAL; the database stays consistent, and a committed answer
    survives a crash of the server, though the last commits may be lost if the machine itself loses power)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40, pool_timeout: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout on every connection, PostgreSQL
    (:func:`engine_url`) the pool sizes and UTC as the session time zone."""
    if url.startswith("sqlite"):
        # a connection per request thread: FastAPI runs sync routes on up to 40 threads (anyio's default), more than
        # QueuePool's default 5 + 10, and SQLite connections are cheap. A request holds a connection only while a
        # thread works on it (phenosynth.edu.deps), so 10 + 40 >= 40 threads never makes one wait
        memory = url in ("sqlite://", "sqlite:///:memory:")  # SingletonThreadPool: no pool size
        pool = {} if memory else {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    url = engine_url(url)
    connect_args = {}
    if url.startswith("postgresql+psycopg"):  # psycopg 3 and psycopg2: both libpq
        # timestamps come back in UTC whatever the server's TimeZone setting (libpq's per-connection option)
        connect_args["options"] = "-c timezone=UTC"
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
                         pool_timeout=pool_timeout, connect_args=connect_args)


def engine_url(url: str) -> str:
    """``url`` with PostgreSQL's driver made explicit: ``postgresql://`` and ``postgres://`` (as libpq and hosting
    services write them) mean psycopg 3, the driver ``phenosynth[edu]`` installs (SQLAlchemy's default would be
    psycopg2). Other URLs are returned as they are.

    >>> engine_url("postgres://u:p@db.example.org/edu")
    'postgresql+psycopg://u:p@db.example.org/edu'
    >>> engine_url("postgresql+psycopg2://u@h/edu")
    'postgresql+psycopg2://u@h/edu'
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Alembic ``upgrade head`` on ``engine`` (the app's start-up step; a no-op on an up-to-date database)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session per request (a FastAPI dependency's body): closed at the end, rolled back on an error."""
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


__all__ = ["Base", "User", "LoginFailure", "Deck", "DeckCondition", "DeckImage", "Cohort", "Membership", "Invitation",
           "Exercise", "Attempt", "Answer", "ReviewCard", "EDUCATOR", "TRAINEE", "ROLES", "FROM_WORKSPACE",
           "FROM_IMPORT", "default_url", "engine_url", "make_engine", "session_factory", "migrate", "head_revision",
           "utcnow"]
