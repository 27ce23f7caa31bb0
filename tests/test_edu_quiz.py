"""Quizzes, cohorts and invitations in the teaching app (issue 13, item 3): an educator makes a cohort, invites by a
link or a CSV of emails, builds a quiz (or a pre-/post-test pair) from a deck; a trainee signs up, takes the quiz one
image at a time, sees feedback and results; answers are stored once, in the database, with the right correctness;
time limits hold on the server; trainees reach only their own quizzes, attempts and images. TestClient on SQLite."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from phenosynth.data.workspace import Workspace  # noqa: E402
from phenosynth.edu import db as edu_db  # noqa: E402
from phenosynth.edu import quizzes as Q  # noqa: E402
from phenosynth.edu.routes import cohorts as cohort_routes  # noqa: E402
from phenosynth.edu.routes import quiz as quiz_routes  # noqa: E402
from tests._workspaces import image_row, save_rows, write_audit  # noqa: E402
from tests.test_edu_app import EDUCATOR, TRAINEE, csrf, db_rows, make_app, sign_in  # noqa: E402

CONDITIONS = ("A", "B", "C")
PER_CONDITION = 4
NEWCOMER = ("new.trainee@example.org", "newcomer-password-1")


def quiz_workspace(root: Path) -> Workspace:
    """Run 'r1': PER_CONDITION audited, shareable synthetic faces of each of A, B, C; run 'r2': two of A and B (a
    second deck's)."""
    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(0)
    real = image_row(ws, root / "src" / "real.png", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), label="A",
                     subject_id="p0", source="real", split="train", fold=0)
    rows, audits = [real], {"r1": [], "r2": []}
    plan = [("r1", c, k) for c in CONDITIONS for k in range(PER_CONDITION)] + [("r2", c, k) for c in "AB" for k in
                                                                                 range(2)]
    for run, label, k in plan:
        rows.append(image_row(ws, ws.root / "synthetic" / run / f"{label}{k}.png",
                              rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), label=label, source="synthetic",
                              generator="g", params=json.dumps({"run": run}), parents=[real["image_id"]], split="train"))
        audits[run].append({
            "image_id": rows[-1]["image_id"], "label": label, "run": run, "generator": "g", "parents": [],
            "has_face": True, "nearest_real_distance": 0.9, "ssim": 0.2, "phash_bits": 30, "flags": [],
            "shareable": True, "identity_match": False})
    save_rows(ws, rows)
    for run, records in audits.items():
        write_audit(ws, run, records)
    return ws


@pytest.fixture
def app(tmp_path):
    return make_app(quiz_workspace(tmp_path))


@pytest.fixture
def educator(app):
    client = TestClient(app)
    assert sign_in(client, EDUCATOR).status_code == 303
    return client


def post(client: TestClient, url: str, data: dict | None = None, **kw):
    return client.post(url, data=(data or {}) | {"csrf_token": csrf(client)}, follow_redirects=False, **kw)


def location_id(r, prefix: str) -> int:
    assert r.status_code == 303, r.text[:500]
    return int(re.search(rf"{prefix}/(\d+)", r.headers["location"]).group(1))


def make_deck(app, educator: TestClient, run: str = "r1") -> int:
    deck_id = location_id(post(educator, "/decks", {"name": f"Deck {run}", "run": run}), "/decks")
    ids = [i for i, row in app.state.images.table().iterrows() if row["run"] == run and row["refused"] is None]
    assert post(educator, f"/decks/{deck_id}/images", {"image_id": ids}).status_code == 200
    return deck_id


def make_quiz(educator: TestClient, deck_id: int, cohort_id: int | None, **settings) -> int:
    data = {"title": "Quiz one", "deck_id": deck_id, "cohort_id": cohort_id or "", "kind": "quiz", "n": 6,
            "order": "fixed", "feedback": "each"} | settings
    return location_id(post(educator, "/exercises", data), "/exercises")


def link_for(educator: TestClient, cohort_id: int, **kw) -> str:
    page = post(educator, f"/cohorts/{cohort_id}/invitations", {"max_uses": "1", "expires_days": "14"} | kw)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'value="http://testserver(/invite/[^"]+)"', page.text).group(1)


@pytest.fixture
def course(app, educator):
    """A cohort, a deck of run r1 (A annotated) and a 6-image quiz with feedback after each answer; the trainee of
    test_edu_app has joined the cohort through a link and is signed in."""
    cohort_id = location_id(post(educator, "/cohorts", {"name": "Residents 2026"}), "/cohorts")
    deck_id = make_deck(app, educator)
    cond_a = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "A")
    assert post(educator, f"/decks/{deck_id}/conditions/{cond_a.id}", {
        "name": "A", "hpo_terms": "HP:0000316", "features_text": "widely spaced eyes, long palpebral fissures",
        "description": "A made-up condition."}).status_code == 303
    quiz_id = make_quiz(educator, deck_id, cohort_id)
    trainee = TestClient(app)
    assert sign_in(trainee, TRAINEE).status_code == 303
    link = link_for(educator, cohort_id)
    assert "Join the cohort" in trainee.get(link).text
    assert post(trainee, link).status_code == 303
    return {"cohort_id": cohort_id, "deck_id": deck_id, "quiz_id": quiz_id, "trainee": trainee}


def start(client: TestClient, quiz_id: int) -> int:
    return location_id(post(client, f"/quizzes/{quiz_id}/start"), "/attempts")


def attempt_row(app, attempt_id: int) -> edu_db.Attempt:
    with app.state.sessions() as db:
        return db.get(edu_db.Attempt, attempt_id)


def answer(client: TestClient, attempt_id: int, item: int, chosen: str, confidence: int = 3, response_ms=800):
    return post(client, f"/attempts/{attempt_id}/answers", {"item": item, "chosen": chosen, "confidence": confidence,
                                                            "response_ms": response_ms})


def answers_in_db(app, attempt_id: int) -> list[edu_db.Answer]:
    with app.state.sessions() as db:
        return list(db.scalars(select(edu_db.Answer).where(edu_db.Answer.attempt_id == attempt_id)
                               .order_by(edu_db.Answer.item)))


# --- the whole flow ------------------------------------------------------------------------------------------------------


def test_a_trainee_signs_up_by_link_takes_the_quiz_sees_feedback_and_the_answers_are_stored(app, educator):
    cohort_id = location_id(post(educator, "/cohorts", {"name": "Residents 2026"}), "/cohorts")
    deck_id = make_deck(app, educator)
    cond_a = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "A")
    post(educator, f"/decks/{deck_id}/conditions/{cond_a.id}", {"name": "A", "hpo_terms": "HP:0000316",
                                                                "features_text": "widely spaced eyes"})
    quiz_id = make_quiz(educator, deck_id, cohort_id)
    link = link_for(educator, cohort_id)  # single use

    newcomer = TestClient(app)
    assert "Make your trainee account" in newcomer.get(link).text
    r = post(newcomer, link, {"email": NEWCOMER[0], "password": NEWCOMER[1], "display_name": "Newcomer"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    home = newcomer.get("/")
    assert f'href="/quizzes/{quiz_id}">Quiz one</a>' in home.text and "not started" in home.text
    again = TestClient(app).get(link)  # the single-use link is used up
    assert again.status_code == 404 and "not valid" in again.text

    attempt_id = start(newcomer, quiz_id)
    items = attempt_row(app, attempt_id).items
    assert len(items) == 6 and sorted(q["condition"] for q in items) == ["A", "A", "B", "B", "C", "C"]  # balanced
    chosen = []
    for k, q in enumerate(items):
        page = newcomer.get(f"/attempts/{attempt_id}")
        assert f"Image {k + 1} of 6" in page.text and f'/attempts/{attempt_id}/images/{k}' in page.text
        assert set(re.findall(r'name="chosen" value="([^"]+)"', page.text)) == set(CONDITIONS)  # every condition
        pick = q["condition"] if k % 2 == 0 else next(c for c in CONDITIONS if c != q["condition"])
        chosen.append(pick)
        r = answer(newcomer, attempt_id, k, pick, confidence=1 + k % 5, response_ms=900 + k)
        assert r.headers["location"] == f"/attempts/{attempt_id}/feedback/{k}"
        fb = newcomer.get(r.headers["location"]).text
        assert f"this face shows\n  <strong>{q['condition']}</strong>" in fb
        assert ("right" if k % 2 == 0 else f"wrong, you chose {pick}") in fb
        if q["condition"] == "A":
            assert "widely spaced eyes" in fb and "HP:0000316" in fb  # the annotated features
    assert newcomer.get(f"/attempts/{attempt_id}", follow_redirects=False).headers["location"].endswith("/results")
    results = newcomer.get(f"/attempts/{attempt_id}/results").text
    assert "3 of 6 right." in results

    stored = answers_in_db(app, attempt_id)
    assert [a.item for a in stored] == list(range(6))
    assert [a.chosen_label for a in stored] == chosen and [a.correct_label for a in stored] == [
        q["condition"] for q in items]
    assert [a.chosen_label == a.correct_label for a in stored] == [True, False] * 3
    assert [a.confidence for a in stored] == [1, 2, 3, 4, 5, 1] and [a.response_ms for a in stored] == [
        900, 901, 902, 903, 904, 905]  # the browser's measure
    assert all(a.shown_at is not None for a in stored)
    assert attempt_row(app, attempt_id).finished_at is not None
    page = educator.get(f"/exercises/{quiz_id}").text
    assert NEWCOMER[0] in page and "6 / 6" in page  # the educator sees the attempt
    cohorts = educator.get("/cohorts").text
    assert re.search(rf'<a href="/cohorts/{cohort_id}">Residents 2026</a></td><td>1</td>', cohorts)  # one trainee
    quizzes = educator.get("/exercises").text
    assert re.search(rf'<a href="/exercises/{quiz_id}">Quiz one</a></td><td>quiz</td>\s*<td>Deck r1</td>\s*'
                     r'<td>Residents 2026</td>\s*<td>6</td>', quizzes)


def test_feedback_only_at_the_end_and_resume_after_an_interruption(app, educator, course, monkeypatch):
    quiz_id = make_quiz(educator, course["deck_id"], course["cohort_id"], feedback="end", order="random", n=4)
    trainee = course["trainee"]
    attempt_id = start(trainee, quiz_id)
    items = attempt_row(app, attempt_id).items
    r = answer(trainee, attempt_id, 0, items[0]["condition"])
    assert r.headers["location"] == f"/attempts/{attempt_id}"  # straight to the next image
    assert trainee.get(f"/attempts/{attempt_id}/feedback/0").status_code == 403  # not before the end
    answer(trainee, attempt_id, 1, items[1]["condition"])

    from phenosynth.edu import quizzes

    looked = []  # a second start that checked for an attempt before the first one was committed

    def too_early(db, user, ex):
        looked.append(ex.id)
        return None if len(looked) == 1 else real_attempt_of(db, user, ex)

    real_attempt_of = quizzes.attempt_of
    monkeypatch.setattr(quizzes, "attempt_of", too_early)
    with app.state.sessions() as db:
        me = db.get(edu_db.User, attempt_row(app, attempt_id).user_id)
        assert quizzes.open_attempt(db, me, db.get(edu_db.Exercise, quiz_id)).id == attempt_id
    monkeypatch.undo()
    assert [a.id for a in db_rows(app, edu_db.Attempt) if a.exercise_id == quiz_id] == [attempt_id]  # one attempt
    resumed = TestClient(app)  # another browser, later
    sign_in(resumed, TRAINEE)
    assert "Resume" in resumed.get(f"/quizzes/{quiz_id}").text
    assert start(resumed, quiz_id) == attempt_id
    assert "Image 3 of 4" in resumed.get(f"/attempts/{attempt_id}").text
    for k in (2, 3):
        answer(resumed, attempt_id, k, items[k]["condition"])
    results = resumed.get(f"/attempts/{attempt_id}/results").text
    assert "4 of 4 right." in results and results.count('class="quiz-feedback right"') == 4
    assert resumed.get(f"/attempts/{attempt_id}/feedback/0").status_code == 200
    assert "finished" in resumed.get("/").text


# --- answers: once, in order, on time ---------------------------------------------------------------------------------


def test_a_double_submit_stores_one_answer_and_answers_go_in_order(app, course):
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    items = attempt_row(app, attempt_id).items
    wrong = next(c for c in CONDITIONS if c != items[0]["condition"])
    early = answer(trainee, attempt_id, 2, items[2]["condition"])
    assert early.status_code == 422 and "Answer question 1 first." in early.text
    assert answer(trainee, attempt_id, 0, items[0]["condition"], confidence=4).status_code == 303
    again = answer(trainee, attempt_id, 0, wrong, confidence=1)  # the same form sent twice, even changed
    assert again.status_code == 303 and again.headers["location"] == f"/attempts/{attempt_id}/feedback/0"
    stored = answers_in_db(app, attempt_id)
    assert len(stored) == 1 and stored[0].chosen_label == items[0]["condition"] and stored[0].confidence == 4
    for bad, message in (({"confidence": ""}, "Rate your confidence"), ({"confidence": 6}, "Rate your confidence"),
                         ({"chosen": "Not offered"}, "Choose one of the conditions offered.")):
        data = {"item": 1, "chosen": items[1]["condition"], "confidence": 3} | bad
        r = post(trainee, f"/attempts/{attempt_id}/answers", data)
        assert r.status_code == 422 and message in r.text
    assert len(answers_in_db(app, attempt_id)) == 1


def test_the_database_refuses_a_second_answer_to_the_same_question():
    from sqlalchemy.exc import IntegrityError

    engine = edu_db.make_engine("sqlite://")
    edu_db.migrate(engine)
    with edu_db.session_factory(engine)() as db:
        user = edu_db.User(email="t@example.org", password_hash="!", role="trainee")
        db.add(user)
        db.flush()
        deck = edu_db.Deck(name="d", owner_id=user.id)
        cond = edu_db.DeckCondition(name="A")
        deck.conditions.append(cond)
        db.add(deck)
        db.flush()
        img = edu_db.DeckImage(deck_id=deck.id, condition_id=cond.id, image_id="x")
        ex = edu_db.Exercise(deck_id=deck.id, kind="quiz", title="q", created_by=user.id)
        db.add_all([img, ex])
        db.flush()
        attempt = edu_db.Attempt(exercise_id=ex.id, user_id=user.id)
        db.add(attempt)
        db.flush()
        one = dict(attempt_id=attempt.id, item=0, deck_image_id=img.id, chosen_label="A", correct_label="A",
                   confidence=3, response_ms=10)
        db.add(edu_db.Answer(**one))
        db.flush()
        db.add(edu_db.Answer(**one))
        with pytest.raises(IntegrityError, match="UNIQUE"):
            db.flush()


def test_the_time_limit_is_enforced_by_the_server(app, educator, course):
    quiz_id = make_quiz(educator, course["deck_id"], course["cohort_id"], time_limit_s=60, n=3)
    trainee = course["trainee"]
    attempt_id = start(trainee, quiz_id)
    items = attempt_row(app, attempt_id).items
    assert 'data-seconds="' in trainee.get(f"/attempts/{attempt_id}").text
    assert answer(trainee, attempt_id, 0, items[0]["condition"]).status_code == 303
    with app.state.sessions() as db:  # a minute later
        a = db.get(edu_db.Attempt, attempt_id)
        a.deadline_at = edu_db.utcnow() - timedelta(seconds=30)
        db.commit()
    late = answer(trainee, attempt_id, 1, items[1]["condition"])
    assert late.status_code == 409 and "The time limit of this quiz is over: the answer was not stored." in late.text
    assert len(answers_in_db(app, attempt_id)) == 1 and attempt_row(app, attempt_id).finished_at is not None
    r = trainee.get(f"/attempts/{attempt_id}", follow_redirects=False)
    assert r.headers["location"] == f"/attempts/{attempt_id}/results"
    assert "1 of 3 right (2 not answered in time)." in trainee.get(r.headers["location"]).text


def test_the_response_time_falls_back_to_the_servers_clock(app, course):
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    items = attempt_row(app, attempt_id).items
    for k, client_ms in enumerate(("", "10000000", "-5")):  # missing, impossible (longer than it was shown), negative
        trainee.get(f"/attempts/{attempt_id}")
        with app.state.sessions() as db:  # the question appeared 3 s ago
            a = db.get(edu_db.Attempt, attempt_id)
            a.shown_at = edu_db.utcnow() - timedelta(seconds=3)
            db.commit()
        answer(trainee, attempt_id, k, items[k]["condition"], response_ms=client_ms)
    assert all(3000 <= a.response_ms < 3000 + 5000 for a in answers_in_db(app, attempt_id))


# --- who sees what ------------------------------------------------------------------------------------------------------


def test_a_trainee_reaches_only_their_own_attempts_and_the_images_of_quizzes_assigned_to_them(app, educator, course):
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    image = trainee.get(f"/attempts/{attempt_id}/images/0")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    # a second deck and quiz for another cohort the trainee is not in
    other_cohort = location_id(post(educator, "/cohorts", {"name": "Other"}), "/cohorts")
    other_quiz = make_quiz(educator, make_deck(app, educator, "r2"), other_cohort, n=2)
    for url in (f"/quizzes/{other_quiz}", f"/quizzes/{other_quiz}/start"):
        r = trainee.get(url) if not url.endswith("start") else post(trainee, url)
        assert r.status_code == 404 and "No such quiz is assigned to you." in r.text
    other_image = next(i for i in db_rows(app, edu_db.DeckImage) if i.run == "r2")
    assert trainee.get(f"/decks/{other_image.deck_id}/images/{other_image.id}").status_code == 403
    assert f"/quizzes/{other_quiz}" not in trainee.get("/").text

    # another trainee, in the same cohort: not the first one's attempt, answers or images
    other = TestClient(app)
    post(other, link_for(educator, course["cohort_id"]), {"email": NEWCOMER[0], "password": NEWCOMER[1]})
    assert other.get("/").status_code == 200
    for url in (f"/attempts/{attempt_id}", f"/attempts/{attempt_id}/images/0", f"/attempts/{attempt_id}/results",
                f"/attempts/{attempt_id}/feedback/0"):
        r = other.get(url, follow_redirects=False)
        assert r.status_code == 404 and "No such attempt of yours." in r.text, url
    items = attempt_row(app, attempt_id).items
    assert answer(other, attempt_id, 0, items[0]["condition"]).status_code == 404
    assert answers_in_db(app, attempt_id) == []
    own = start(other, course["quiz_id"])
    assert own != attempt_id and other.get(f"/attempts/{own}/images/0").status_code == 200

    # a re-audit that flags an image stops it in the quiz too
    flagged = attempt_row(app, attempt_id).items[0]["deck_image_id"]
    with app.state.sessions() as db:
        image_id = db.get(edu_db.DeckImage, flagged).image_id
    path = app.state.workspace.root / "audit" / "r1" / "audit.parquet"
    frame = pd.read_parquet(path)
    frame.loc[frame["image_id"] == image_id, ["shareable"]] = False
    frame.loc[frame["image_id"] == image_id, "flags"] = pd.Series([["identity-match"]] * len(frame))
    frame.to_parquet(path, index=False)
    assert trainee.get(f"/attempts/{attempt_id}/images/0").status_code == 403


def test_every_cohort_and_quiz_route_refuses_trainees_and_every_post_needs_the_csrf_token(app, educator, course):
    from fastapi.routing import APIRoute

    ids = {"cohort_id": course["cohort_id"], "exercise_id": course["quiz_id"]}
    educator_routes = [(m, r.path_format) for r in cohort_routes.router.routes if isinstance(r, APIRoute)
                       for m in sorted(r.methods)]
    assert len(educator_routes) == 8
    trainee, anonymous = course["trainee"], TestClient(app)
    before = (len(db_rows(app, edu_db.Cohort)), len(db_rows(app, edu_db.Exercise)),
              len(db_rows(app, edu_db.Invitation)))
    for method, path in educator_routes:
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
        data = {"csrf_token": csrf(trainee), "name": "x", "title": "x", "deck_id": course["deck_id"]}
        r = trainee.request(method, url, data=data if method == "POST" else None, follow_redirects=False)
        assert r.status_code == 403 and "This page is for educators." in r.text, (method, url)
        r = anonymous.request(method, url, data={"csrf_token": csrf(anonymous)} if method == "POST" else None,
                              follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, url)
    attempt_id = start(trainee, course["quiz_id"])
    items = attempt_row(app, attempt_id).items
    ids |= {"attempt_id": attempt_id, "token": "some-token", "item": 0}
    posts = [(client, r.path_format) for router, client in ((cohort_routes.router, educator),
                                                            (quiz_routes.router, trainee))
             for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods]
    assert len(posts) == 7
    for client, path in posts:
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
        for token in ({}, {"csrf_token": "forged"}):
            r = client.post(url, data=token | {"name": "Forged", "title": "Forged", "deck_id": course["deck_id"],
                                               "item": 0, "chosen": items[0]["condition"], "confidence": 3},
                            follow_redirects=False)
            assert r.status_code == 403 and "CSRF token missing or invalid" in r.text, url
    assert (len(db_rows(app, edu_db.Cohort)), len(db_rows(app, edu_db.Exercise)),
            len(db_rows(app, edu_db.Invitation))) == before
    assert answers_in_db(app, attempt_id) == []


# --- invitations by CSV ---------------------------------------------------------------------------------------------------


def test_a_csv_of_emails_makes_trainee_accounts_with_one_time_set_password_links(app, educator, course):
    cohort_id = course["cohort_id"]
    upload = "Email,Name\nAda@Example.org,Ada\nbob@example.org,Bob\n\nstudent@example.org,Already\nada@example.org,\n"
    r = post(educator, f"/cohorts/{cohort_id}/invitations/csv", {"download": "1"},
             files={"file": ("emails.csv", upload.encode(), "text/csv")})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["email"], x["status"]) for x in rows] == [
        ("ada@example.org", "new account: send the set-password link"),
        ("bob@example.org", "new account: send the set-password link"),
        ("student@example.org", "already has an account: added to the cohort")]
    assert rows[0]["link"].startswith("http://testserver/invite/") and rows[2]["link"] == ""
    cohort_page = educator.get(f"/cohorts/{cohort_id}").text
    assert "ada@example.org" in cohort_page and "no (invited)" in cohort_page

    ada = TestClient(app)
    assert sign_in(ada, ("ada@example.org", "")).status_code == 401  # no password before the link
    link = rows[0]["link"].removeprefix("http://testserver")
    assert "Set the password of your trainee account" in ada.get(link).text
    short = post(ada, link, {"password": "short"})
    assert short.status_code == 422 and "at least 10 characters" in short.text
    assert post(ada, link, {"password": "ada-password-12"}).status_code == 303
    assert f'href="/quizzes/{course["quiz_id"]}"' in ada.get("/").text  # signed in, and in the cohort
    assert TestClient(app).get(link).status_code == 404  # one time only
    assert sign_in(TestClient(app), ("ada@example.org", "ada-password-12")).status_code == 303

    bad = post(educator, f"/cohorts/{cohort_id}/invitations/csv",
               files={"file": ("e.csv", b"email\nnot-an-email\nok@example.org\n", "text/csv")})
    assert bad.status_code == 422 and "Not an email address: row 2 (&#39;not-an-email&#39;)." in bad.text
    assert not any(u.email == "ok@example.org" for u in db_rows(app, edu_db.User))  # all or nothing


def test_invitation_links_expire_and_count_their_uses(app, educator, course):
    link = link_for(educator, course["cohort_id"], max_uses="2")
    for k in range(2):
        assert post(TestClient(app), link, {"email": f"t{k}@example.org", "password": "a-long-password"}
                    ).status_code == 303
    third = post(TestClient(app), link, {"email": "t3@example.org", "password": "a-long-password"})
    assert third.status_code == 404 and "not valid" in third.text
    assert not any(u.email == "t3@example.org" for u in db_rows(app, edu_db.User))
    expiring = link_for(educator, course["cohort_id"], max_uses="", expires_days="1")
    with app.state.sessions() as db:
        for inv in db.scalars(select(edu_db.Invitation).where(edu_db.Invitation.max_uses.is_(None))):
            inv.expires_at = edu_db.utcnow() - timedelta(minutes=1)
        db.commit()
    assert TestClient(app).get(expiring).status_code == 404


# --- quiz options -----------------------------------------------------------------------------------------------------------


def test_k_options_are_the_most_confused_conditions_once_answers_exist(app, educator, course):
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    for k, q in enumerate(attempt_row(app, attempt_id).items):  # A and B mistaken for each other, C always right
        mix = {"A": "B", "B": "A", "C": "C"}[q["condition"]]
        answer(trainee, attempt_id, k, mix)
    quiz_id = make_quiz(educator, course["deck_id"], course["cohort_id"], n=9, n_choices=2)
    with app.state.sessions() as db:
        items = db.get(edu_db.Exercise, quiz_id).settings["items"]
    assert len(items) == 9 and all(len(q["choices"]) == 2 and q["condition"] in q["choices"] for q in items)
    assert {frozenset(q["choices"]) for q in items if q["condition"] in "AB"} == {frozenset("AB")}
    too_many = post(educator, "/exercises", {"title": "x", "deck_id": course["deck_id"], "n": 3, "n_choices": 5})
    assert too_many.status_code == 400 and "A question needs 2 to 3 options" in too_many.text


def test_a_pre_post_pair_asks_disjoint_images_and_holds_the_post_test_back_from_practice(app, educator, course):
    r = post(educator, "/exercises", {"title": "Kabuki vs Noonan", "deck_id": course["deck_id"],
                                      "cohort_id": course["cohort_id"], "kind": "prepost", "n_pre": 1, "n_post": 2})
    pre_id = location_id(r, "/exercises")
    with app.state.sessions() as db:
        pre = db.get(edu_db.Exercise, pre_id)
        post_ex = db.get(edu_db.Exercise, pre.paired_with_id)
    assert (pre.kind, post_ex.kind, post_ex.paired_with_id) == ("pretest", "posttest", pre.id)
    assert pre.title == "Kabuki vs Noonan (pre-test)" and post_ex.title == "Kabuki vs Noonan (post-test)"
    pre_ids = {q["deck_image_id"] for q in pre.settings["items"]}
    post_ids = {q["deck_image_id"] for q in post_ex.settings["items"]}
    assert len(pre_ids) == 3 and len(post_ids) == 6 and not pre_ids & post_ids
    assert set(pre.settings["held_back_image_ids"]) == post_ids == set(post_ex.settings["held_back_image_ids"])
    practice = set(pre.settings["practice_image_ids"])
    assert len(practice) == 3 * PER_CONDITION - 9 and not practice & (pre_ids | post_ids)
    home = course["trainee"].get("/").text
    assert "Kabuki vs Noonan (pre-test)" in home and "Kabuki vs Noonan (post-test)" in home
    too_few = post(educator, "/exercises", {"title": "x", "deck_id": course["deck_id"], "kind": "prepost",
                                            "n_pre": 2, "n_post": 2})
    assert too_few.status_code == 400 and "Condition 'A' has 4 image(s)" in html.unescape(too_few.text)


# --- under load ---------------------------------------------------------------------------------------------------------


def test_a_burst_of_quiz_requests_never_waits_for_a_database_connection(app, course):
    """Regression (serve_load, 100 trainees: 20 % of requests failed with QueuePool's 30 s timeout): a request held
    its connection from the sign-in check until its response was sent, across turns of the thread pool, so requests
    waiting for a thread held every connection while every thread waited for one. Here the pool has as many
    connections as the thread pool has threads (2) and waits 2 s at most; 30 requests at once must all succeed."""
    import asyncio

    import anyio.to_thread
    import httpx
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    engine = edu_db.make_engine(str(app.state.engine.url), pool_size=2, max_overflow=0, pool_timeout=2.0)
    app.state.sessions = edu_db.session_factory(engine)
    urls = [f"/attempts/{attempt_id}/images/0", f"/attempts/{attempt_id}", f"/quizzes/{course['quiz_id']}"] * 10

    async def burst() -> list[int]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                     cookies=dict(trainee.cookies)) as client:
            return [r.status_code for r in await asyncio.gather(*(client.get(u) for u in urls))]

    from concurrent.futures import ThreadPoolExecutor

    try:  # a loop of its own in a thread of its own: the browser tests' Playwright keeps one running in this thread
        with ThreadPoolExecutor(1) as pool:
            codes = pool.submit(asyncio.run, burst()).result()
    except PoolTimeout as exc:
        pytest.fail(f"a request waited for a database connection: {exc}")
    assert codes == [200] * len(urls)
    assert engine.pool.checkedout() == 0


def test_a_class_signing_in_at_once_neither_starves_the_quiz_pages_nor_queues_without_end(app, course):
    """Regression (serve_load, 100 sign-ins at once): every Argon2 check ran on a worker thread, so a class signing
    in took all the threads the quiz pages needed (the pages waited seconds behind the hashes). Now a request waits
    for its turn at hashing without holding a thread (one at a time here), and past ``max_waiting`` it is answered
    503 with a Retry-After at once. Slow hashes (0.3 s), 2 worker threads, 8 sign-ins and 5 quiz pages at once."""
    import asyncio
    import time

    import anyio.to_thread
    import httpx

    from phenosynth.edu.security import Slots

    app.state.hashing = Slots(concurrency=1, max_waiting=4)
    fast_verify = app.state.passwords.verify

    def slow_verify(password, stored_hash):
        time.sleep(0.3)  # a real Argon2id check (64 MiB, 3 passes) takes about this on a busy 2-core machine
        return fast_verify(password, stored_hash)

    app.state.passwords.verify = slow_verify
    attempt_id = start(course["trainee"], course["quiz_id"])

    async def rush() -> tuple[list[tuple[int, str, float]], list[tuple[int, float]]]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        transport = httpx.ASGITransport(app=app)
        visitors = [httpx.AsyncClient(transport=transport, base_url="http://testserver") for _ in range(8)]
        tokens = [re.search(r'name="csrf_token" value="([^"]+)"', (await v.get("/login")).text).group(1)
                  for v in visitors]
        trainee = httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                    cookies=dict(course["trainee"].cookies))
        t0 = time.monotonic()

        async def sign_in_one(client, token):
            r = await client.post("/login", data={"email": TRAINEE[0], "password": TRAINEE[1], "csrf_token": token})
            return r.status_code, r.headers.get("retry-after", ""), time.monotonic() - t0

        async def page(url):
            await asyncio.sleep(0.05)  # the sign-ins are queued by now
            r = await trainee.get(url)
            return r.status_code, time.monotonic() - t0

        urls = [f"/attempts/{attempt_id}", f"/attempts/{attempt_id}/images/0"] * 2 + [f"/quizzes/{course['quiz_id']}"]
        results = await asyncio.gather(*(sign_in_one(v, t) for v, t in zip(visitors, tokens)),
                                       *(page(u) for u in urls))
        for client in visitors + [trainee]:
            await client.aclose()
        return results[:8], results[8:]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a loop of its own (see the test above)
        sign_ins, pages = pool.submit(asyncio.run, rush()).result()
    codes = sorted(code for code, _, _ in sign_ins)
    assert codes == [303] * 5 + [503] * 3  # one hashing, four waiting; the other three told to come back
    assert all(int(after) >= 1 for code, after, _ in sign_ins if code == 503)
    assert [code for code, _ in pages] == [200] * len(pages)
    last_sign_in = max(t for code, _, t in sign_ins if code == 303)
    assert last_sign_in >= 5 * 0.3 - 0.05  # the five sign-ins took their turns one after another
    assert max(t for _, t in pages) < last_sign_in - 0.3  # the quiz pages did not wait behind them


def test_a_class_starting_a_quiz_at_once_waits_at_the_start_not_on_every_page(app, course, monkeypatch):
    """Regression (serve_load, 100 trainees pressing "start" together): the starts took every worker thread and the
    pages of trainees already answering queued behind them (question and image p95 ~0.4-0.5 s against ~10 ms after
    the opening). Now starts take turns one at a time without holding a thread, and past ``max_waiting`` a start is
    answered 503 with a Retry-After. Slow starts (0.2 s), 2 worker threads, 6 starts and 5 quiz pages at once."""
    import asyncio
    import time

    import anyio.to_thread
    import httpx

    from phenosynth.edu.security import QUIZ_START_CONCURRENCY, QUIZ_START_MAX_WAIT_S, Slots

    served = app.state.quiz_starts  # what the app serves with: one at a time, a bounded wait
    assert (served.concurrency, served.max_wait_s) == (QUIZ_START_CONCURRENCY, QUIZ_START_MAX_WAIT_S) == (1, 1.0)
    # the same turns, with room for three waiters and no bound on the wait (a loaded machine must not time them out)
    app.state.quiz_starts = Slots(concurrency=1, max_waiting=3, busy_with=served.busy_with)
    attempt_id = start(course["trainee"], course["quiz_id"])
    real_open = Q.open_attempt

    def slow_open(*args, **kw):
        time.sleep(0.2)  # a start under a class's load
        return real_open(*args, **kw)

    monkeypatch.setattr(Q, "open_attempt", slow_open)
    token = csrf(course["trainee"])

    async def rush():
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                   cookies=dict(course["trainee"].cookies))
        t0 = time.monotonic()

        async def start_one():
            r = await client.post(f"/quizzes/{course['quiz_id']}/start", data={"csrf_token": token})
            return r.status_code, r.headers.get("retry-after", ""), r.text, time.monotonic() - t0

        async def page(url):
            await asyncio.sleep(0.05)  # the starts are queued by now
            r = await client.get(url)
            return r.status_code, time.monotonic() - t0

        urls = [f"/attempts/{attempt_id}", f"/attempts/{attempt_id}/images/0"] * 2 + [f"/attempts/{attempt_id}"]
        results = await asyncio.gather(*(start_one() for _ in range(6)), *(page(u) for u in urls))
        await client.aclose()
        return results[:6], results[6:]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a loop of its own (see the tests above)
        starts, pages = pool.submit(asyncio.run, rush()).result()
    assert sorted(code for code, *_ in starts) == [303] * 4 + [503] * 2  # one starting, three waiting, two sent back
    busy = [(after, text) for code, after, text, _ in starts if code == 503]
    assert all(int(after) >= 1 and "busy starting other trainees' quizzes: try again in" in html.unescape(text)
               for after, text in busy)
    assert [code for code, _ in pages] == [200] * len(pages)
    last_start = max(t for code, _, _, t in starts if code == 303)
    assert last_start >= 4 * 0.2 - 0.05  # the four starts took their turns one after another
    assert max(t for _, t in pages) < last_start - 0.3  # the quiz pages did not wait behind them


def test_a_bounded_turn_goes_ahead_after_its_wait_and_the_slots_stay_counted():
    """Slots(max_wait_s): a waiter goes ahead without a slot once its wait is over (starts never queue without end
    on an overloaded server); the slot it did not take is not given back, so the count stays right."""
    import asyncio
    import time

    from phenosynth.edu.security import Slots

    slots = Slots(concurrency=1, max_waiting=10, max_wait_s=0.2)

    async def scene():
        order = []

        async def holder():
            async with slots.slot():
                order.append("holder in")
                await asyncio.sleep(0.6)
            order.append("holder out")

        async def waiter():
            await asyncio.sleep(0.05)
            t = time.monotonic()
            async with slots.slot():
                waited = time.monotonic() - t
                order.append(("waiter in", 0.15 < waited < 0.5, slots.waiting))  # not the holder's 0.6 s

        await asyncio.gather(holder(), waiter())
        async with slots.slot():  # free again: taken at once
            order.append(("after", slots.waiting))
        return order, slots._running

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a loop of its own (see the tests above)
        order, running = pool.submit(asyncio.run, scene()).result()
    assert order == ["holder in", ("waiter in", True, 0), "holder out", ("after", 0)]
    assert running == 0


def test_a_503_from_the_hashing_queue_says_when_to_come_back(app):
    """The page and the header a client sees when too many password checks wait."""
    from phenosynth.edu.security import SlotsBusy, Slots

    app.state.hashing = Slots(concurrency=1, max_waiting=0)
    client = TestClient(app)
    token = csrf(client)

    class Full(Slots):
        async def _acquire(self) -> bool:
            raise SlotsBusy(7)

    app.state.hashing = Full(concurrency=1, max_waiting=0)
    r = client.post("/login", data={"email": TRAINEE[0], "password": TRAINEE[1], "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert "busy checking other passwords: try again in 7 s" in html.unescape(r.text)


def test_a_quiz_image_is_sent_whole_with_its_type_validators_and_caching(app, course):
    """gated_file reads a small image on the route's thread (no extra trips through the thread pool): the bytes of
    the file, its type, an ETag and Last-Modified, private caching."""
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    r = trainee.get(f"/attempts/{attempt_id}/images/0")
    with app.state.sessions() as db:
        img = db.get(edu_db.DeckImage, attempt_row(app, attempt_id).items[0]["deck_image_id"])
        path = app.state.images.file(img.image_id)
    assert r.status_code == 200 and r.content == path.read_bytes()
    assert r.headers["content-type"] == "image/png" and int(r.headers["content-length"]) == path.stat().st_size
    assert r.headers["cache-control"] == "private, max-age=300"
    assert r.headers["etag"] and r.headers["last-modified"]
    assert r.headers["x-content-type-options"] == "nosniff"  # the security headers reach image responses too
