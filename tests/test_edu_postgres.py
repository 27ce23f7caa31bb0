"""The teaching app on PostgreSQL (``phenosynth serve --db-url``, issue 13 item 1): the Alembic migrations from an
empty database to head (and back), and a whole course through the routes (an educator builds a deck, a cohort, a
quiz and a pre-/post-test pair; a trainee signs up, takes them and practises; the educator reads the progress
numbers) whose numbers equal the same course's on SQLite. The server is a throw-away cluster (tests/_postgres.py) or
``PHENOSYNTH_TEST_PG_URL``; the tests skip, saying why, where there is neither."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")
pytest.importorskip("fsrs", reason="practice needs the extra phenosynth[edu]")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import inspect, select, text  # noqa: E402

from phenosynth.edu import db as edu_db  # noqa: E402
from tests.test_edu_app import EDUCATOR, csrf, db_rows, deck_images, make_app, sign_in  # noqa: E402
from tests.test_edu_quiz import (NEWCOMER, attempt_row, link_for, location_id, make_deck, make_quiz,  # noqa: E402
                                 post, quiz_workspace, start)

# the trainee's quiz: question k answered wrong when k is odd, confidence 1 + k % 5, 1000 + 100 k ms
QUIZ_N = 6


# --- migrations -------------------------------------------------------------------------------------------------------


def test_migrations_take_an_empty_postgres_database_to_the_models_schema_and_back(postgres_url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    engine = edu_db.make_engine(postgres_url)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        assert inspect(engine).get_table_names() == []
        edu_db.migrate(engine)
        edu_db.migrate(engine)  # a second start-up changes nothing
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == edu_db.head_revision()
            assert compare_metadata(MigrationContext.configure(conn), edu_db.Base.metadata) == []
            # server defaults of 0002 hold for rows written without the ORM
            conn.execute(text("INSERT INTO users (email, password_hash, role, display_name, active, created_at) "
                              "VALUES ('a@b.org', 'x', 'educator', '', true, now())"))
            conn.execute(text("INSERT INTO cohorts (name, educator_id, created_at) VALUES ('c', 1, now())"))
            conn.execute(text("INSERT INTO invitations (cohort_id, token_hash, created_by, created_at) "
                              "VALUES (1, 'h', 1, now())"))
            assert conn.execute(text("SELECT uses FROM invitations")).scalar_one() == 0
            conn.rollback()

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(edu_db.__file__).parent / "alembic"))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert inspect(engine).get_table_names() == ["alembic_version"]
        edu_db.migrate(engine)
        assert set(inspect(engine).get_table_names()) == set(edu_db.Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_a_libpq_style_url_gets_psycopg_and_timestamps_come_back_in_utc(postgres_url):
    """``postgresql://`` (as libpq writes it) means psycopg 3; the test server's time zone is far from UTC, and the
    timestamps the app reads back are still UTC."""
    from sqlalchemy.engine import make_url

    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    engine = edu_db.make_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"
        edu_db.migrate(engine)
        sessions = edu_db.session_factory(engine)
        with sessions() as db:
            db.add(edu_db.User(email="t@example.org", password_hash="x", role="trainee"))
            db.commit()
        with sessions() as db:
            created = db.scalar(select(edu_db.User.created_at))
            assert created.utcoffset() == timedelta(0)
            assert abs(created - edu_db.utcnow()) < timedelta(minutes=5)
    finally:
        engine.dispose()


# --- a whole course, the same on both databases -----------------------------------------------------------------------


def run_course(app) -> dict:
    """An educator builds a deck of run r1 (A annotated), a cohort, a 6-image quiz with feedback after each answer and
    a pre-/post-test pair, and opens practice; a newcomer signs up through a link (after one wrong password), takes
    the quiz (odd questions wrong), the pre-test (all wrong) and the post-test (all right) and practises four
    trials (wrong); the educator reads the progress and the cohort's practice page, and asks for a second pair (refused:
    no unseen face left). What the pages and exports showed."""
    educator = TestClient(app)
    assert sign_in(educator, EDUCATOR).status_code == 303
    cohort_id = location_id(post(educator, "/cohorts", {"name": "Residents 2026"}), "/cohorts")
    deck_id = make_deck(app, educator)
    cond_a = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "A")
    assert post(educator, f"/decks/{deck_id}/conditions/{cond_a.id}", {
        "name": "A", "hpo_terms": "HP:0000316", "features_text": "widely spaced eyes",
        "description": "A made-up condition."}).status_code == 303
    quiz_id = make_quiz(educator, deck_id, cohort_id, n=QUIZ_N)
    pre_id = location_id(post(educator, "/exercises", {"title": "Pair", "deck_id": deck_id, "cohort_id": cohort_id,
                                                      "kind": "prepost", "n_pre": 1, "n_post": 1}), "/exercises")
    post_id = next(e.paired_with_id for e in db_rows(app, edu_db.Exercise) if e.id == pre_id)
    assert post(educator, f"/decks/{deck_id}/practice", {"open": "1"}).status_code == 303
    practice_id = next(e.id for e in db_rows(app, edu_db.Exercise) if e.kind == "practice")
    link = link_for(educator, cohort_id)

    trainee = TestClient(app)
    assert post(trainee, link, {"email": NEWCOMER[0], "password": NEWCOMER[1], "display_name": "N"}
                ).status_code == 303
    wrong = TestClient(app)
    assert sign_in(wrong, (NEWCOMER[0], "not-the-password")).status_code == 401
    seen: dict = {"home": trainee.get("/").status_code}

    def take(exercise_id: int, pick_right) -> list[tuple[str, str]]:
        attempt_id = start(trainee, exercise_id)
        pairs = []
        for k, q in enumerate(attempt_row(app, attempt_id).items):
            chosen = q["condition"] if pick_right(k) else next(c for c in q["choices"] if c != q["condition"])
            r = post(trainee, f"/attempts/{attempt_id}/answers",
                     {"item": k, "chosen": chosen, "confidence": 1 + k % 5, "response_ms": 1000 + 100 * k})
            assert r.status_code == 303, r.text[:300]
            pairs.append((q["condition"], chosen))
        page = trainee.get(f"/attempts/{attempt_id}/results")
        seen[f"results {exercise_id}"] = re.search(r"\d+ of \d+ right\.", page.text).group(0)
        return pairs

    seen["quiz"] = take(quiz_id, lambda k: k % 2 == 0)
    seen["pre"] = take(pre_id, lambda k: False)
    seen["post"] = take(post_id, lambda k: True)
    seen["practised"] = []
    for _ in range(4):
        page = trainee.get(f"/practice/{practice_id}")
        assert page.status_code == 200, page.text[:300]
        pk = int(re.search(r'name="image" value="(\d+)"', page.text).group(1))
        shown = next(i.condition.name for i in deck_images(app) if i.id == pk)
        seen["practised"].append(shown)
        choices = re.findall(r'name="chosen" value="([^"]+)"', page.text)
        r = post(trainee, f"/practice/{practice_id}/answer", {"image": pk, "chosen": next(
            c for c in choices if c != shown), "confidence": 2})
        assert r.status_code == 200 and "Not quite" in r.text
    seen["due today"] = re.search(r'data-due-today="(\d+)"', trainee.get("/").text).group(1)
    page = educator.get(f"/cohorts/{cohort_id}/practice").text
    # the server's clock is this run's: median response times, and the last trial's minute (a course on SQLite and
    # the next on PostgreSQL fall into different minutes now and then)
    seen["cohort practice"] = [re.sub(r'data-stat="median_response_ms">\d+<|\d{4}-\d\d-\d\d \d\d:\d\d', "", row)
                               for row in re.findall(r"<tr data-(?:trainee|condition)=.*?</tr>", page, re.S)]
    # a second pre-/post-test pair finds no face the cohort has not been shown (the quiz asked 2 of each condition's
    # 4, the first pair 1 + 1) and says so
    refused = post(educator, "/exercises", {"title": "Pair 2", "deck_id": deck_id, "cohort_id": cohort_id,
                                            "kind": "prepost", "n_pre": 1, "n_post": 1})
    assert refused.status_code == 400
    seen["pair 2"] = re.search(r"unseen images left: [^.]*\.", html.unescape(refused.text)).group(0)

    me = next(u.id for u in db_rows(app, edu_db.User) if u.email == NEWCOMER[0])
    seen["trainee"] = json.loads(educator.get(f"/progress/trainees/{me}/export.json").text)
    seen["trainee practice"] = json.loads(educator.get(f"/progress/trainees/{me}/export.json?view=practice").text)
    seen["cohort"] = json.loads(educator.get(f"/progress/cohorts/{cohort_id}/export.json").text)
    seen["cohort page"] = dict(re.findall(r'data-stat="(\w+)">([^<]*)<', educator.get(
        f"/progress/cohorts/{cohort_id}").text))
    seen["answers"] = sorted((a.correct_label, a.chosen_label, a.confidence) for a in db_rows(app, edu_db.Answer))
    seen["cards"] = len(db_rows(app, edu_db.ReviewCard))
    return seen


def differences(got: object, expected: object, path: str = "") -> list[str]:
    """The leaves (``path: got != expected``) where two JSON-like documents differ."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return [d for k in sorted(set(got) | set(expected), key=str)
                for d in differences(got.get(k), expected.get(k), f"{path}/{k}")]
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        return [d for k, (g, e) in enumerate(zip(got, expected)) for d in differences(g, e, f"{path}[{k}]")]
    return [] if got == expected else [f"{path}: {got!r} != {expected!r}"]


def test_a_whole_course_on_postgres_gives_the_numbers_it_gives_on_sqlite(tmp_path, postgres_url):
    on_sqlite = make_app(quiz_workspace(tmp_path / "sqlite"))
    pg = make_app(quiz_workspace(tmp_path / "pg"), db_url=postgres_url)
    assert on_sqlite.state.engine.dialect.name == "sqlite" and pg.state.engine.dialect.name == "postgresql"
    try:
        expected, got = run_course(on_sqlite), run_course(pg)
    finally:
        pg.state.engine.dispose()

    # by hand: the quiz 3 of 6 right, the pre-test 0 of 3 (one image per condition), the post-test 3 of 3
    results = sorted(v for k, v in got.items() if k.startswith("results"))
    assert results == ["0 of 3 right.", "3 of 3 right.", "3 of 6 right."]
    summary = got["trainee"]["progress"]["summary"]
    assert summary["n_answers"] == QUIZ_N + 3 + 3 and summary["accuracy"] == pytest.approx(6 / 12)
    assert got["trainee"]["progress"]["pre_post"]["change"] == pytest.approx(1.0)  # 0/3 -> 3/3
    assert got["trainee practice"]["progress"]["summary"]["n_answers"] == 4
    assert got["trainee practice"]["progress"]["summary"]["accuracy"] == 0.0
    # one card per practised condition, each answered wrong: all due again today
    assert got["cards"] == len(set(got["practised"])) >= 2 and got["due today"] == str(got["cards"])
    assert got["cohort page"]["accuracy"] == "0.500"
    assert got["pair 2"] == "unseen images left: 'A' 0, 'B' 0, 'C' 0."
    assert len(got["cohort practice"]) == 1 + len(set(got["practised"]))  # the trainee, each practised condition

    # every page, export and stored answer as on SQLite, but for practice response times: the server measures them
    # on its clock (from showing the face to the answer), so they are this run's milliseconds
    clock = "/trainee practice/progress/summary/median_response_ms"
    assert [d for d in differences(got, expected) if not d.startswith(clock + ":")] == []
    assert 0 < got["trainee practice"]["progress"]["summary"]["median_response_ms"] < 60_000


def test_serve_takes_a_postgres_url(tmp_path, postgres_url, monkeypatch):
    """``phenosynth serve --db-url postgresql://...``: the first educator goes into that database."""
    import uvicorn
    from typer.testing import CliRunner

    from phenosynth.cli import app as cli
    from sqlalchemy.engine import make_url

    ws = quiz_workspace(tmp_path)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: started.append(app))
    monkeypatch.setenv("PHENOSYNTH_ADMIN_PASSWORD", "educator-password-9")
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    r = CliRunner().invoke(cli, ["serve", "-w", str(ws.root), "--db-url", plain, "--admin-email", "boss@example.org"])
    assert r.exit_code == 0, r.output
    app = started[0]
    try:
        assert app.state.engine.dialect.name == "postgresql"
        assert [(u.email, u.role) for u in db_rows(app, edu_db.User)] == [("boss@example.org", "educator")]
        assert sign_in(TestClient(app), ("boss@example.org", "educator-password-9")).status_code == 303
        assert not (ws.root / "edu.sqlite").exists()
    finally:
        app.state.engine.dispose()
