"""Where the teaching app's parts meet (issue 13): pre-/post-tests and practice (held-back images), the trainee's
home page (assigned quizzes and open practice with their due counts), quiz answers in the progress numbers (phase
from the exercise's kind, the options each answer was chosen from), and every route a trainee may reach refusing
another trainee's ids. Everything through the routes (TestClient on SQLite), as a browser would."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")
pytest.importorskip("fsrs", reason="practice needs the extra phenosynth[edu]")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from phenosynth.edu import db as edu_db  # noqa: E402
from phenosynth.edu.accounts import create_user  # noqa: E402
from tests.test_edu_app import OPEN_ROUTES, TRAINEE, csrf, db_rows, sign_in  # noqa: E402
from tests.test_edu_quiz import (NEWCOMER, answer, app, attempt_row, course, educator,  # noqa: E402, F401
                                 location_id, make_deck, make_quiz, post, start)


def pre_post(educator: TestClient, course: dict, **kw) -> tuple[edu_db.Exercise, edu_db.Exercise]:
    r = post(educator, "/exercises", {"title": "Pair", "deck_id": course["deck_id"], "cohort_id": course["cohort_id"],
                                      "kind": "prepost", "n_pre": 1, "n_post": 2} | kw)
    pre_id = location_id(r, "/exercises")
    exercises = {e.id: e for e in db_rows(educator.app, edu_db.Exercise)}
    return exercises[pre_id], exercises[exercises[pre_id].paired_with_id]


def open_practice(educator: TestClient, deck_id: int) -> int:
    assert post(educator, f"/decks/{deck_id}/practice", {"open": "1"}).status_code == 303
    return next(e.id for e in db_rows(educator.app, edu_db.Exercise) if e.kind == "practice" and e.deck_id == deck_id
                and e.cohort_id is None)


def conditions_of_images(app) -> dict[int, str]:
    with app.state.sessions() as db:
        return {i.id: i.condition.name for i in db.scalars(select(edu_db.DeckImage))}


def practise(client: TestClient, ex_id: int, app, n: int, *, right: bool) -> list[int]:
    """``n`` practice trials answered right or wrong; the deck images shown, in order."""
    names = conditions_of_images(app)
    shown = []
    for _ in range(n):
        page = client.get(f"/practice/{ex_id}")
        assert page.status_code == 200, page.text[:300]
        pk = int(re.search(r'name="image" value="(\d+)"', page.text).group(1))
        choices = re.findall(r'name="chosen" value="([^"]+)"', page.text)
        pick = names[pk] if right else next(c for c in choices if c != names[pk])
        assert post(client, f"/practice/{ex_id}/answer", {"image": pk, "chosen": pick, "confidence": 3}
                    ).status_code == 200
        shown.append(pk)
    return shown


# --- 1. pre-/post-tests and practice --------------------------------------------------------------------------------


def test_practice_and_later_quizzes_never_show_the_post_test_images_a_pre_post_pair_holds_back(app, educator, course):
    pre, post_test = pre_post(educator, course)
    held = set(post_test.settings["held_back_image_ids"])
    practice_pool = set(pre.settings["practice_image_ids"])
    assert len(held) == 6 and len(practice_pool) == 3
    ex_id = open_practice(educator, course["deck_id"])
    trainee = course["trainee"]
    shown = practise(trainee, ex_id, app, 12, right=False)  # wrong answers: no condition is ever mastered
    assert not set(shown) & held  # not one post-test face practised
    assert set(shown) <= practice_pool | {q["deck_image_id"] for q in pre.settings["items"]}
    for pk in held:
        r = trainee.get(f"/practice/{ex_id}/images/{pk}")
        assert r.status_code == 404 and "No such image in this practice." in r.text
    # a quiz made later on the deck (its feedback names each face's condition) asks none of them either
    later = make_quiz(educator, course["deck_id"], course["cohort_id"], n=6)
    with app.state.sessions() as db:
        asked = {q["deck_image_id"] for q in db.get(edu_db.Exercise, later).settings["items"]}
    assert len(asked) == 6 and not asked & held
    too_many = post(educator, "/exercises", {"title": "All", "deck_id": course["deck_id"], "n": 7, "kind": "quiz"})
    assert too_many.status_code == 400 and "The quiz asks for 7 images; the deck has 6." in too_many.text


# --- 2. the trainee's home page ---------------------------------------------------------------------------------------


def test_the_home_page_lists_assigned_quizzes_and_every_open_practice_with_its_due_count(app, educator, course):
    trainee = course["trainee"]
    ex_id = open_practice(educator, course["deck_id"])
    other_deck = make_deck(app, educator, "r2")
    with app.state.sessions() as db:  # practice for cohorts: one closed for the trainee's, one open for another
        teacher = db.scalar(select(edu_db.User).where(edu_db.User.role == "educator"))
        other = edu_db.Cohort(name="Other", educator_id=teacher.id)
        db.add(other)
        db.flush()
        closed = edu_db.Exercise(deck_id=other_deck, cohort_id=course["cohort_id"], kind="practice",
                                 title="Closed practice", settings={"open": False}, created_by=teacher.id)
        elsewhere = edu_db.Exercise(deck_id=other_deck, cohort_id=other.id, kind="practice",
                                    title="Another cohort's practice", settings={}, created_by=teacher.id)
        db.add_all([closed, elsewhere])
        db.commit()
        closed_id, elsewhere_id = closed.id, elsewhere.id

    home = trainee.get("/").text
    assert f'href="/quizzes/{course["quiz_id"]}"' in home  # the assigned quiz
    assert f'href="/practice/{ex_id}"' in home and f'data-practice-due="{ex_id}">0 due today' in home
    for hidden in (closed_id, elsewhere_id):
        assert f"/practice/{hidden}" not in home  # a link that would only say 403
        assert trainee.get(f"/practice/{hidden}").status_code == 403
    for link in set(re.findall(r'href="(/(?:practice|quizzes)/\d+)"', home)):
        assert trainee.get(link).status_code == 200, link  # every link on the page opens

    practise(trainee, ex_id, app, 2, right=False)  # two conditions answered wrong: both due again today
    home = trainee.get("/").text
    assert f'data-practice-due="{ex_id}">2 due today' in home and 'data-due-today="2"' in home
    assert f'data-practice-due="{ex_id}">(2 due today)' in trainee.get("/practice").text


# --- 3. quiz answers in the progress numbers -------------------------------------------------------------------------


def take(client: TestClient, app, quiz_id: int, *, wrong: set[int] = frozenset()) -> list[int]:
    """Take quiz ``quiz_id``, answering items in ``wrong`` wrong and the rest right, all with confidence 1; the number
    of options of each question."""
    attempt_id = start(client, quiz_id)
    items = attempt_row(app, attempt_id).items
    for k, q in enumerate(items):
        pick = next(c for c in q["choices"] if c != q["condition"]) if k in wrong else q["condition"]
        assert answer(client, attempt_id, k, pick, confidence=1).status_code == 303
    return [len(q["choices"]) for q in items]


def test_progress_scores_each_quiz_answer_against_the_options_it_was_chosen_from(app, educator, course):
    trainee = course["trainee"]
    pre, post_test = pre_post(educator, course, n_choices=2, n_post=1)
    small_deck = make_deck(app, educator, "r2")  # conditions A and B only
    small_quiz = make_quiz(educator, small_deck, course["cohort_id"], n=2)
    k_quiz = take(trainee, app, course["quiz_id"], wrong={0})  # deck r1: A, B, C all offered
    k_small = take(trainee, app, small_quiz)
    k_pre, k_post = take(trainee, app, pre.id), take(trainee, app, post_test.id)
    assert (k_quiz, k_small, k_pre, k_post) == ([3] * 6, [2] * 2, [2] * 3, [2] * 3)

    with app.state.sessions() as db:
        me = db.scalar(select(edu_db.User.id).where(edu_db.User.email == TRAINEE[0]))
    doc = educator.get(f"/progress/trainees/{me}/export.json").json()["progress"]
    # by hand, confidence 1 = a guess among k options (p = 1/k): 14 answers, one wrong (a quiz answer, k = 3)
    assert doc["odds"]["chance"] == pytest.approx((6 / 3 + 8 / 2) / 14)  # 3/7
    brier = (5 * (1 - 1 / 3) ** 2 + (1 / 3) ** 2 + 8 * (1 - 1 / 2) ** 2) / 14  # 13/42
    assert doc["summary"]["brier"] == pytest.approx(brier)
    assert doc["odds"]["odds_ratio"] == pytest.approx((13 / 1) / ((3 / 7) / (4 / 7)))
    assert (doc["pre_post"]["pre"], doc["pre_post"]["post"]) == (1.0, 1.0)
    table = pd.read_csv(io.StringIO(educator.get(f"/progress/trainees/{me}/export.csv?table=answers").text))
    assert table["phase"].tolist() == ["quiz"] * 8 + ["pre"] * 3 + ["post"] * 3  # the exercise's kind
    assert table["n_choices"].tolist() == [3] * 6 + [2] * 8


# --- 4. every route a trainee may reach, with another trainee's ids -----------------------------------------------------


#: Each OPEN route with an id in its path, what another trainee gets with the first trainee's ids.
OTHERS_IDS = {
    ("GET", "/quizzes/{exercise_id}"): 404, ("POST", "/quizzes/{exercise_id}/start"): 404,
    ("GET", "/attempts/{attempt_id}"): 404, ("POST", "/attempts/{attempt_id}/answers"): 404,
    ("GET", "/attempts/{attempt_id}/feedback/{item}"): 404, ("GET", "/attempts/{attempt_id}/results"): 404,
    ("GET", "/attempts/{attempt_id}/images/{item}"): 404, ("GET", "/progress/trainees/{user_id}"): 403,
    ("GET", "/practice/{practice_id}"): 403, ("POST", "/practice/{practice_id}/answer"): 403,
    ("GET", "/practice/{practice_id}/images/{image_pk}"): 403,
}


def test_every_trainee_route_refuses_another_trainees_ids(app, educator, course):
    with_ids = {(m, p.replace("{exercise_id}", "{practice_id}") if p.startswith("/practice/") else p)
                for m, p in OPEN_ROUTES if "{" in p and not p.startswith("/invite/")}
    assert with_ids == set(OTHERS_IDS)  # a new trainee route needs its line here
    trainee = course["trainee"]
    attempt_id = start(trainee, course["quiz_id"])
    assert answer(trainee, attempt_id, 0, attempt_row(app, attempt_id).items[0]["condition"]).status_code == 303
    with app.state.sessions() as db:  # practice for the first trainee's cohort only
        teacher = db.scalar(select(edu_db.User).where(edu_db.User.role == "educator"))
        cohort_practice = edu_db.Exercise(deck_id=course["deck_id"], cohort_id=course["cohort_id"], kind="practice",
                                          title="Cohort practice", settings={}, created_by=teacher.id)
        db.add(cohort_practice)
        db.commit()
        create_user(db, app.state.passwords, *NEWCOMER, role="trainee")  # in no cohort
        me = db.scalar(select(edu_db.User.id).where(edu_db.User.email == TRAINEE[0]))
    practise(trainee, cohort_practice.id, app, 1, right=False)
    page = trainee.get(f"/practice/{cohort_practice.id}")  # a trial on screen for the first trainee
    image_pk = int(re.search(r'name="image" value="(\d+)"', page.text).group(1))
    ids = {"exercise_id": course["quiz_id"], "attempt_id": attempt_id, "item": 0, "user_id": me,
           "practice_id": cohort_practice.id, "image_pk": image_pk}
    answers_before = len(db_rows(app, edu_db.Answer))

    other = TestClient(app)
    assert sign_in(other, NEWCOMER).status_code == 303
    for (method, path), expected in OTHERS_IDS.items():
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
        data = {"csrf_token": csrf(other), "item": 1, "chosen": "A", "confidence": 3, "image": image_pk}
        r = other.request(method, url, data=data if method == "POST" else None, follow_redirects=False)
        assert r.status_code == expected, (method, url, r.status_code)
        assert TRAINEE[0] not in r.text
    assert len(db_rows(app, edu_db.Answer)) == answers_before  # nothing stored for anyone
    home = other.get("/").text
    assert 'data-due-today="0"' in home and f"/quizzes/{course['quiz_id']}" not in home
    assert f"/practice/{cohort_practice.id}" not in home
