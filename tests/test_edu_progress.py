"""Progress pages and exports, practice trials (adaptive choice, FSRS cards) and the counselling-sheet button of the
teaching app (issue 13, items 3-5). Answers are seeded straight into the database; the numbers on the pages and in
the exports must equal phenosynth.edu.scoring's on the same answers."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")
pytest.importorskip("fsrs", reason="practice needs the extra phenosynth[edu]")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from phenosynth.edu import db as edu_db  # noqa: E402
from phenosynth.edu import practice as PR  # noqa: E402
from phenosynth.edu import scoring  # noqa: E402
from phenosynth.edu.accounts import create_user  # noqa: E402
from phenosynth.edu.sheet import DISCLAIMERS, GENERATED, find_chromium  # noqa: E402
from tests.test_edu_app import (EDUCATOR, TRAINEE, csrf, db_rows, deck_images, educator, new_deck,  # noqa: E402, F401
                                re_audit_flags, sign_in, site)

OTHER = ("other@example.org", "trainee-password-2")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

# (trainee, phase, true, chosen, confidence, response_ms) in answer order
SEEDED = [
    (TRAINEE[0], "pre", "A", "B", 2, 4200), (TRAINEE[0], "pre", "B", "B", 3, 3900),
    (TRAINEE[0], "pre", "A", "A", 1, 6100), (TRAINEE[0], "pre", "B", "A", 4, 5000),
    (TRAINEE[0], "quiz", "A", "A", 5, 2500), (TRAINEE[0], "quiz", "B", "A", 3, 3000),
    (TRAINEE[0], "post", "A", "A", 4, 2100), (TRAINEE[0], "post", "B", "B", 5, 1800),
    (TRAINEE[0], "post", "A", "A", 3, 2600), (TRAINEE[0], "post", "B", "A", 2, 4000),
    (TRAINEE[0], "practice", "A", "A", 5, 900),
    (OTHER[0], "pre", "A", "A", 3, 5200), (OTHER[0], "pre", "B", "A", 2, 6000),
    (OTHER[0], "pre", "A", "B", 1, 7000), (OTHER[0], "post", "A", "A", 5, 3000),
    (OTHER[0], "post", "B", "B", 4, 2500), (OTHER[0], "post", "B", "B", 4, 2700),
]
KIND = {"pre": "pretest", "post": "posttest", "quiz": "quiz", "practice": "practice"}


def deck_of_a_and_b(educator: TestClient, names: dict[str, str]) -> int:
    """A deck of the faces ok_A (condition A) and ok_B (condition B)."""
    deck_id = new_deck(educator)
    r = educator.post(f"/decks/{deck_id}/images", data={"image_id": [names["ok_A"], names["ok_B"]],
                                                        "csrf_token": csrf(educator)})
    assert r.status_code == 200
    return deck_id


def _expected_frame() -> pd.DataFrame:
    return pd.DataFrame([{"trainee": t, "phase": ph, "condition_true": a, "condition_chosen": b, "confidence": c,
                          "response_ms": ms, "correct": a == b} for t, ph, a, b, c, ms in SEEDED])


@pytest.fixture
def seeded(site, educator):
    """A deck (conditions A, B; faces ok_A and ok_B), a cohort of both trainees, and :data:`SEEDED` as Answer rows."""
    app, ws, names = site
    deck_id = deck_of_a_and_b(educator, names)
    with app.state.sessions() as db:
        create_user(db, app.state.passwords, *OTHER, role="trainee")
        users = {u.email: u for u in db.scalars(select(edu_db.User))}
        teacher = users[EDUCATOR[0]]
        images = {i.condition.name: i.id for i in db.scalars(select(edu_db.DeckImage))}
        cohort = edu_db.Cohort(name="Residents 2026", educator_id=teacher.id)
        db.add(cohort)
        db.flush()
        db.add_all([edu_db.Membership(cohort_id=cohort.id, user_id=users[e].id) for e in (TRAINEE[0], OTHER[0])])
        exercises = {}
        for phase, kind in KIND.items():
            exercises[phase] = edu_db.Exercise(deck_id=deck_id, kind=kind, title=phase, created_by=teacher.id,
                                               settings={"open": False} if kind == "practice" else {})
            db.add(exercises[phase])
        db.flush()
        attempts = {}
        for k, (who, phase, true, chosen, conf, ms) in enumerate(SEEDED):
            if (who, phase) not in attempts:
                attempts[who, phase] = edu_db.Attempt(exercise_id=exercises[phase].id, user_id=users[who].id)
                db.add(attempts[who, phase])
                db.flush()
            db.add(edu_db.Answer(attempt_id=attempts[who, phase].id, deck_image_id=images[true], chosen_label=chosen,
                                 correct_label=true, confidence=conf, response_ms=ms,
                                 answered_at=T0 + timedelta(minutes=k)))
        db.commit()
        ids = {"deck_id": deck_id, "cohort_id": cohort.id, "me": users[TRAINEE[0]].id, "other": users[OTHER[0]].id}
    return app, ids


def _stats(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-stat="(\w+)">([^<]*)<', page))


def _check_against_scoring(doc: dict, expected: scoring.Progress) -> None:
    s = doc["summary"]
    assert s["n_answers"] == expected.n_answers
    for key in ("accuracy", "brier", "median_response_ms"):
        assert s[key] == pytest.approx(getattr(expected, key)), key
    assert doc["odds"]["odds_ratio"] == pytest.approx(expected.odds.odds_ratio)
    assert (doc["odds"]["ci_low"], doc["odds"]["ci_high"]) == pytest.approx((expected.odds.ci_low,
                                                                              expected.odds.ci_high))
    assert doc["confusion"]["counts"] == expected.confusion.to_numpy().tolist()
    per = {r["condition"]: r for r in doc["per_condition"]}
    for _, r in expected.per_condition.iterrows():
        assert (per[r["condition"]]["sensitivity"], per[r["condition"]]["specificity"]) == pytest.approx(
            (r["sensitivity"], r["specificity"])), r["condition"]
    pp = expected.pre_post
    assert (doc["pre_post"]["change"], doc["pre_post"]["ci_low"], doc["pre_post"]["ci_high"]) == pytest.approx(
        (pp.change, pp.ci_low, pp.ci_high))


# --- progress -----------------------------------------------------------------------------------------------------------


def test_a_trainees_page_and_json_export_show_scorings_numbers_on_the_seeded_answers(seeded, educator):
    app, ids = seeded
    frame = _expected_frame()
    mine = frame[frame["trainee"] == TRAINEE[0]]
    expected = scoring.progress(mine, ["A", "B"], who=TRAINEE[0], phases=("pre", "quiz", "post"))
    assert expected.n_answers == 10 and expected.accuracy == 0.6  # hand count: 6 of the 10 test answers

    doc = json.loads(educator.get(f"/progress/trainees/{ids['me']}/export.json").text)
    assert doc["conditions"] == ["A", "B"] and doc["n_answers_all_phases"] == 11
    _check_against_scoring(doc["progress"], expected)

    page = educator.get(f"/progress/trainees/{ids['me']}")
    assert page.status_code == 200
    shown = _stats(page.text)
    assert shown["accuracy"] == "0.600" and shown["n_answers"] == "10"
    assert shown["brier"] == f"{expected.brier:.4f}" and shown["median_response_ms"] == f"{expected.median_response_ms:.0f}"
    assert shown["odds_ratio"] == f"{expected.odds.odds_ratio:.3f}"
    assert shown["change"] == f"{expected.pre_post.change:+.3f}" == "+0.250"  # pre 2/4 -> post 3/4
    sens = re.findall(r'<tr data-condition="(\w)">.*?data-stat="sensitivity">([^<]*)<.*?data-stat="specificity">'
                      r'([^<]*)<', page.text, re.S)
    assert sens == [(r["condition"], f"{r['sensitivity']:.3f}", f"{r['specificity']:.3f}")
                    for _, r in expected.per_condition.iterrows()]
    charts = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)"', page.text)
    assert len(charts) == 3 and all(b"<svg" in base64.b64decode(c) for c in charts)  # drawn on the server
    assert "https://" not in page.text.replace("http://www.w3.org", "")

    practice = json.loads(educator.get(f"/progress/trainees/{ids['me']}/export.json?view=practice").text)
    assert practice["progress"]["summary"]["n_answers"] == 1 and practice["progress"]["summary"]["accuracy"] == 1.0


def test_the_cohort_page_and_csv_exports_equal_scorings_cohort_numbers(seeded, educator):
    app, ids = seeded
    frame = _expected_frame()
    whole, members = scoring.cohort_progress(frame, ["A", "B"], phases=("pre", "quiz", "post"))
    doc = json.loads(educator.get(f"/progress/cohorts/{ids['cohort_id']}/export.json").text)
    _check_against_scoring(doc["progress"], whole)
    assert doc["progress"]["pre_post"]["method"] == "paired t over trainees"
    assert [m["who"] for m in doc["members"]] == [OTHER[0], TRAINEE[0]]

    r = educator.get(f"/progress/cohorts/{ids['cohort_id']}/export.csv?table=summary")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="Residents_2026-tests-summary.csv"' in r.headers["content-disposition"]
    got = pd.read_csv(io.StringIO(r.text))
    pd.testing.assert_frame_equal(got, scoring.summary_frame([*members, whole]), check_dtype=False)
    per = pd.read_csv(io.StringIO(educator.get(f"/progress/cohorts/{ids['cohort_id']}/export.csv"
                                               "?table=per_condition").text))
    pd.testing.assert_frame_equal(per, scoring.per_condition_frame([*members, whole]), check_dtype=False)
    answers = pd.read_csv(io.StringIO(educator.get(f"/progress/trainees/{ids['me']}/export.csv?table=answers").text))
    assert len(answers) == 11 and answers["phase"].tolist() == [p for t, p, *_ in SEEDED if t == TRAINEE[0]]
    assert answers["correct"].sum() == 7 and set(answers["trainee"]) == {TRAINEE[0]}

    page = educator.get(f"/progress/cohorts/{ids['cohort_id']}")
    assert _stats(page.text)["accuracy"] == f"{whole.accuracy:.3f}" and OTHER[0] in page.text
    overview = educator.get("/progress")
    assert overview.status_code == 200 and "Residents 2026" in overview.text and f"{members[1].accuracy:.3f}" in \
        overview.text
    bad = educator.get(f"/progress/cohorts/{ids['cohort_id']}/export.csv?table=secrets")
    assert bad.status_code == 400 and "Unknown export table 'secrets'" in html.unescape(bad.text)


def test_a_trainee_sees_only_their_own_progress(seeded):
    app, ids = seeded
    trainee, anonymous = TestClient(app), TestClient(app)
    sign_in(trainee, TRAINEE)
    me = trainee.get("/progress/me", follow_redirects=False)
    assert me.status_code == 303 and me.headers["location"] == f"/progress/trainees/{ids['me']}"
    own = trainee.get(f"/progress/trainees/{ids['me']}")
    assert own.status_code == 200 and _stats(own.text)["accuracy"] == "0.600"
    assert "export.json" not in own.text  # exports are the educator's
    other = trainee.get(f"/progress/trainees/{ids['other']}")
    assert other.status_code == 403 and "A trainee sees only their own progress." in other.text
    assert OTHER[0] not in other.text
    for url in (f"/progress/trainees/{ids['me']}/export.json", f"/progress/trainees/{ids['other']}/export.csv",
                "/progress", f"/progress/cohorts/{ids['cohort_id']}", f"/progress/cohorts/{ids['cohort_id']}/export.csv"):
        r = trainee.get(url)
        assert r.status_code == 403 and "This page is for educators." in r.text, url
        assert anonymous.get(url, follow_redirects=False).status_code == 303
    assert anonymous.get(f"/progress/trainees/{ids['me']}", follow_redirects=False).status_code == 303


# --- practice -------------------------------------------------------------------------------------------------------------


def _open_practice(client: TestClient, deck_id: int, app) -> int:
    r = client.post(f"/decks/{deck_id}/practice", data={"open": "1", "csrf_token": csrf(client)},
                    follow_redirects=False)
    assert r.status_code == 303
    return next(e.id for e in db_rows(app, edu_db.Exercise) if e.kind == "practice" and e.cohort_id is None
                and (e.settings or {}).get("open"))


def _trial(client: TestClient, ex_id: int, app) -> tuple[int, str]:
    page = client.get(f"/practice/{ex_id}")
    assert page.status_code == 200, page.text
    pk = int(re.search(r'name="image" value="(\d+)"', page.text).group(1))
    return pk, next(i.condition.name for i in deck_images(app) if i.id == pk)


def _card_due(app, trainee_email: str, condition: str) -> datetime:
    with app.state.sessions() as db:
        rc = db.scalar(select(edu_db.ReviewCard).join(edu_db.User, edu_db.ReviewCard.user_id == edu_db.User.id)
                       .join(edu_db.DeckCondition, edu_db.ReviewCard.condition_id == edu_db.DeckCondition.id)
                       .where(edu_db.User.email == trainee_email, edu_db.DeckCondition.name == condition))
        return _stored_due(rc)


def _stored_due(rc) -> datetime:
    import fsrs

    card = fsrs.Card.from_dict(rc.card)
    assert card.due.replace(tzinfo=timezone.utc) == rc.due.replace(tzinfo=timezone.utc)  # the column mirrors the card
    return card.due.replace(tzinfo=timezone.utc)


def test_practice_stores_answers_moves_fsrs_cards_and_shows_the_annotated_features(site, educator):
    app, _, names = site
    deck_id = deck_of_a_and_b(educator, names)
    cond_a = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "A")
    educator.post(f"/decks/{deck_id}/conditions/{cond_a.id}", data={
        "name": "A", "hpo_terms": "HP:0000316", "features_text": "long palpebral fissures",
        "description": "A rare condition.", "csrf_token": csrf(educator)})
    ex_id = _open_practice(educator, deck_id, app)
    assert "Close practice" in educator.get(f"/decks/{deck_id}").text

    trainee = TestClient(app)
    sign_in(trainee, TRAINEE)
    assert f'href="/practice/{ex_id}"' in trainee.get("/practice").text
    pk, first = _trial(trainee, ex_id, app)
    face = trainee.get(f"/practice/{ex_id}/images/{pk}")
    assert face.status_code == 200 and face.headers["content-type"] == "image/png"
    before = datetime.now(timezone.utc)
    right = trainee.post(f"/practice/{ex_id}/answer", data={"image": pk, "chosen": first, "confidence": 5,
                                                            "csrf_token": csrf(trainee)})
    assert right.status_code == 200 and f"Correct: {first}." in right.text
    fast_right_due = _card_due(app, TRAINEE[0], first)
    assert fast_right_due > before + timedelta(days=1)  # a fast correct answer (Easy): days away

    pk2, second = _trial(trainee, ex_id, app)
    assert second != first  # never the same condition twice in a row while another is active
    wrong = trainee.post(f"/practice/{ex_id}/answer", data={"image": pk2, "chosen": first, "confidence": 2,
                                                            "csrf_token": csrf(trainee)})
    text = html.unescape(wrong.text)
    assert f"Not quite: you chose {first}; this face shows {second}." in text
    assert _card_due(app, TRAINEE[0], second) < datetime.now(timezone.utc) + timedelta(hours=1)  # Again: minutes

    pk3, third = _trial(trainee, ex_id, app)
    assert third == first
    again = trainee.post(f"/practice/{ex_id}/answer", data={"image": pk3, "chosen": second, "confidence": 1,
                                                            "csrf_token": csrf(trainee)})
    if first == "A":
        assert "long palpebral fissures" in again.text and "HP:0000316" in again.text and "A rare condition." in \
            again.text
    assert _card_due(app, TRAINEE[0], first) < fast_right_due  # a wrong answer brings the card sooner
    assert re.search(r'data-due-today="2"', trainee.get("/").text)  # both cards due again today
    assert 'data-due-today="2"' in trainee.get("/practice").text

    answers = db_rows(app, edu_db.Answer)
    assert [(a.correct_label, a.chosen_label == a.correct_label) for a in answers] == [
        (first, True), (second, False), (first, False)]
    assert all(0 <= a.response_ms < 60_000 for a in answers)
    from phenosynth.edu.progress import answers_frame

    with app.state.sessions() as db:
        assert answers_frame(db)["phase"].tolist() == ["practice"] * 3

    replay = trainee.post(f"/practice/{ex_id}/answer", data={"image": pk3, "chosen": first, "confidence": 5,
                                                             "csrf_token": csrf(trainee)}, follow_redirects=False)
    assert replay.status_code == 303 and len(db_rows(app, edu_db.Answer)) == 3  # a replayed form stores nothing


def test_the_next_condition_prefers_the_weak_one(site, educator):
    """A mastered by three fast correct answers, then B answered wrong: B comes again although it was just shown."""
    app, _, names = site
    deck_id = deck_of_a_and_b(educator, names)
    ex_id = _open_practice(educator, deck_id, app)
    images = {i.condition.name: i.id for i in deck_images(app)}
    history = [("A", "A", 900), ("A", "A", 1200), ("A", "A", 800), ("B", "A", 6000)]
    with app.state.sessions() as db:
        trainee_id = db.scalar(select(edu_db.User.id).where(edu_db.User.email == TRAINEE[0]))
        attempt = edu_db.Attempt(exercise_id=ex_id, user_id=trainee_id)
        db.add(attempt)
        db.flush()
        db.add_all([edu_db.Answer(attempt_id=attempt.id, deck_image_id=images[t], chosen_label=c, correct_label=t,
                                  confidence=3, response_ms=ms, answered_at=T0 + timedelta(seconds=k))
                    for k, (t, c, ms) in enumerate(history)])
        db.commit()
    frame = pd.DataFrame(history, columns=["condition_true", "condition_chosen", "response_ms"]).assign(
        correct=lambda f: f["condition_true"] == f["condition_chosen"])
    assert PR.next_condition(frame, ["A", "B"], seed=trainee_id) == "B"
    trainee = TestClient(app)
    sign_in(trainee, TRAINEE)
    for _ in range(3):  # the page is a pure function of the history: the same trial every time it is loaded
        assert _trial(trainee, ex_id, app) == (images["B"], "B")


def test_practice_access_images_and_csrf(site, educator):
    app, ws, names = site
    deck_id = deck_of_a_and_b(educator, names)
    trainee = TestClient(app)
    sign_in(trainee, TRAINEE)
    forged = educator.post(f"/decks/{deck_id}/practice", data={"open": "1"})
    assert forged.status_code == 403 and "CSRF token missing or invalid" in forged.text
    assert not [e for e in db_rows(app, edu_db.Exercise) if e.kind == "practice"]
    assert trainee.post(f"/decks/{deck_id}/practice", data={"open": "1", "csrf_token": csrf(trainee)}
                        ).status_code == 403
    ex_id = _open_practice(educator, deck_id, app)
    pk, cond = _trial(trainee, ex_id, app)
    no_token = trainee.post(f"/practice/{ex_id}/answer", data={"image": pk, "chosen": cond, "confidence": 5})
    assert no_token.status_code == 403 and "CSRF token missing or invalid" in no_token.text
    assert db_rows(app, edu_db.Answer) == [] and db_rows(app, edu_db.ReviewCard) == []

    a, b = sorted(deck_images(app), key=lambda i: i.condition.name)
    educator.post(f"/decks/{deck_id}/images/{a.id}/retire", data={"retired": "1", "csrf_token": csrf(educator)})
    assert trainee.get(f"/practice/{ex_id}/images/{a.id}").status_code == 404  # retired: not practised
    assert all(_trial(trainee, ex_id, app)[0] == b.id for _ in range(2))
    re_audit_flags(ws, names["ok_B"], "near-copy")
    refused = trainee.get(f"/practice/{ex_id}/images/{b.id}")
    assert refused.status_code == 403 and "audit: near-copy" in refused.text  # the deck gate, checked again
    assert trainee.get(f"/practice/{ex_id}").status_code == 409  # nothing left to practise with

    educator.post(f"/decks/{deck_id}/practice", data={"open": "0", "csrf_token": csrf(educator)})
    closed = trainee.get(f"/practice/{ex_id}")
    assert closed.status_code == 403 and "This practice is not open to you." in closed.text
    assert "No deck is open for practice yet." in trainee.get("/practice").text


# --- the counselling-sheet button ---------------------------------------------------------------------------------------


def _sheet_images(page: str) -> list[np.ndarray]:
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB")) for u in uris]


def _audit_with_paths(ws) -> None:
    """The app tests' hand-written audit leaves ``path`` empty; a real audit records each image's path."""
    path = ws.root / "audit" / "r1" / "audit.parquet"
    paths = ws.load_manifest().set_index("image_id")["path"]
    frame = pd.read_parquet(path)
    frame["path"] = [paths[i] for i in frame["image_id"]]
    frame.to_parquet(path, index=False)


def test_the_sheet_button_shows_only_the_conditions_audited_unflagged_deck_faces(site, educator):
    app, ws, names = site
    _audit_with_paths(ws)
    deck_id = deck_of_a_and_b(educator, names)
    conds = {c.name: c.id for c in db_rows(app, edu_db.DeckCondition)}
    educator.post(f"/decks/{deck_id}/conditions/{conds['A']}", data={
        "name": "Kabuki syndrome", "hpo_terms": "HP:0000316", "features_text": "long palpebral fissures",
        "csrf_token": csrf(educator)})
    assert f"/decks/{deck_id}/conditions/{conds['A']}/sheet" in educator.get(f"/decks/{deck_id}").text
    r = educator.get(f"/decks/{deck_id}/conditions/{conds['A']}/sheet")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert DISCLAIMERS[frozenset({GENERATED})] in r.text  # generator 'g' with a real parent: no donor
    assert "Kabuki syndrome" in r.text and "long palpebral fissures" in r.text
    shown = _sheet_images(r.text)
    own = np.asarray(Image.open(ws.root / "synthetic" / "r1" / "ok_A.png").convert("RGB"))
    assert len(shown) == 1 and np.array_equal(shown[0], own)  # ok_A only: never 'flagged' (also of A)
    for name in ("real", "flagged", "late", "unaudited", "ok_A"):
        assert names[name] not in r.text  # the sheet names no image id
    assert "default-src 'none'" in r.headers["content-security-policy"]

    re_audit_flags(ws, names["ok_A"], "identity-match")
    gone = educator.get(f"/decks/{deck_id}/conditions/{conds['A']}/sheet")
    assert gone.status_code == 400 and "No face of 'Kabuki syndrome' in this deck passes the audit now" in \
        html.unescape(gone.text)
    assert "data:image/png" not in gone.text

    trainee = TestClient(app)
    sign_in(trainee, TRAINEE)
    assert trainee.get(f"/decks/{deck_id}/conditions/{conds['B']}/sheet").status_code == 403


@pytest.mark.skipif(find_chromium() is None, reason="no PDF engine: Chromium is not installed (the HTML is tested)")
def test_the_sheet_button_downloads_a_pdf(site, educator):
    app, ws, names = site
    _audit_with_paths(ws)
    deck_id = new_deck(educator)
    educator.post(f"/decks/{deck_id}/images", data={"image_id": [names["ok_B"]], "csrf_token": csrf(educator)})
    cond = next(c.id for c in db_rows(app, edu_db.DeckCondition) if c.name == "B")
    r = educator.get(f"/decks/{deck_id}/conditions/{cond}/sheet?format=pdf")
    assert r.status_code == 200 and r.content.startswith(b"%PDF") and r.headers["content-type"] == "application/pdf"
    assert 'attachment; filename="B.pdf"' == r.headers["content-disposition"]


# --- a cohort's practice, for the educator ---------------------------------------------------------------------------


def _practice_rows(page: str, key: str) -> dict[str, dict[str, str]]:
    """``data-<key>`` -> {stat: text} of a practice-activity table."""
    rows = re.findall(rf'<tr data-{key}="([^"]+)"[^>]*>(.*?)</tr>', page, re.S)
    return {k: dict(re.findall(r'data-stat="(\w+)">([^<]*)<', body)) for k, body in rows}


def test_the_educator_sees_each_cohort_trainees_practice_and_cards_due(site, educator):
    app, _, names = site
    deck_id = deck_of_a_and_b(educator, names)
    ex_id = _open_practice(educator, deck_id, app)
    images = {i.condition.name: i.id for i in deck_images(app)}
    now = datetime.now(timezone.utc)
    outsider = ("outsider@example.org", "trainee-password-3")
    with app.state.sessions() as db:
        create_user(db, app.state.passwords, *OTHER, role="trainee")
        create_user(db, app.state.passwords, *outsider, role="trainee")
        users = {u.email: u for u in db.scalars(select(edu_db.User))}
        conds = {c.name: c.id for c in db.scalars(select(edu_db.DeckCondition))}
        cohort = edu_db.Cohort(name="Residents 2026", educator_id=users[EDUCATOR[0]].id)
        db.add(cohort)
        db.flush()
        db.add_all([edu_db.Membership(cohort_id=cohort.id, user_id=users[e].id) for e in (TRAINEE[0], OTHER[0])])
        for who, trials in ((TRAINEE[0], [("A", "A", 800), ("A", "B", 1200), ("B", "B", 2000), ("B", "B", 3000)]),
                            (outsider[0], [("A", "B", 5000)])):  # the outsider belongs to no cohort
            attempt = edu_db.Attempt(exercise_id=ex_id, user_id=users[who].id)
            db.add(attempt)
            db.flush()
            db.add_all([edu_db.Answer(attempt_id=attempt.id, deck_image_id=images[t], chosen_label=c, correct_label=t,
                                      confidence=3, response_ms=ms, answered_at=T0 + timedelta(seconds=k))
                        for k, (t, c, ms) in enumerate(trials)])
        db.add_all([edu_db.ReviewCard(user_id=users[TRAINEE[0]].id, condition_id=conds["A"], card={},
                                      due=now - timedelta(hours=1)),  # overdue
                    edu_db.ReviewCard(user_id=users[TRAINEE[0]].id, condition_id=conds["B"], card={},
                                      due=now + timedelta(days=3)),
                    edu_db.ReviewCard(user_id=users[outsider[0]].id, condition_id=conds["A"], card={}, due=now)])
        db.commit()
        cohort_id = cohort.id

    other = TestClient(app)  # the other member practises once, through the pages, and answers wrong
    sign_in(other, OTHER)
    pk, shown = _trial(other, ex_id, app)
    other.post(f"/practice/{ex_id}/answer", data={"image": pk, "chosen": "B" if shown == "A" else "A", "confidence": 2,
                                                  "csrf_token": csrf(other)})
    with app.state.sessions() as db:
        other_ms = db.scalar(select(edu_db.Answer.response_ms).join(edu_db.Attempt).join(edu_db.User)
                             .where(edu_db.User.email == OTHER[0]))

    assert f'href="/cohorts/{cohort_id}/practice"' in educator.get(f"/cohorts/{cohort_id}").text
    page = educator.get(f"/cohorts/{cohort_id}/practice")
    assert page.status_code == 200
    trainees = _practice_rows(page.text, "trainee")
    assert set(trainees) == {TRAINEE[0], OTHER[0]} and outsider[0] not in page.text
    # by hand: 3 of 4 right; median of 800, 1200, 2000, 3000 ms; the card of A is due, B's in three days
    assert trainees[TRAINEE[0]] == {"trials": "4", "accuracy": "0.750", "median_response_ms": "1600", "cards": "2",
                                    "due": "1 (A in Deck one)"}
    # a wrong answer: FSRS brings the card back within minutes, so it is due today
    assert trainees[OTHER[0]] == {"trials": "1", "accuracy": "0.000", "median_response_ms": f"{other_ms:.0f}",
                                  "cards": "1", "due": f"1 ({shown} in Deck one)"}
    per_condition = _practice_rows(page.text, "condition")
    a_trials = [(True, 800), (False, 1200)] + ([(False, other_ms)] if shown == "A" else [])
    b_trials = [(True, 2000), (True, 3000)] + ([(False, other_ms)] if shown == "B" else [])
    for cond, trials in (("A", a_trials), ("B", b_trials)):
        assert per_condition[cond] == {
            "trials": str(len(trials)), "accuracy": f"{np.mean([r for r, _ in trials]):.3f}",
            "median_response_ms": f"{np.median([ms for _, ms in trials]):.0f}",
            "trainees": "2" if cond == shown else "1", "cards": "2" if cond == shown else "1",
            "due": str(int(cond == "A") + int(cond == shown))}, cond

    one_deck = educator.get(f"/cohorts/{cohort_id}/practice?deck={deck_id}")
    assert _practice_rows(one_deck.text, "trainee")[TRAINEE[0]]["due"] == "1 (A)"  # one deck: no deck names
    assert educator.get(f"/cohorts/{cohort_id}/practice?deck=999").status_code == 404
    assert educator.get("/cohorts/999/practice").status_code == 404

    trainee, anonymous = TestClient(app), TestClient(app)
    sign_in(trainee, TRAINEE)
    refused = trainee.get(f"/cohorts/{cohort_id}/practice")
    assert refused.status_code == 403 and "This page is for educators." in refused.text and OTHER[0] not in refused.text
    assert anonymous.get(f"/cohorts/{cohort_id}/practice", follow_redirects=False).status_code == 303
