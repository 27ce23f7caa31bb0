"""The teaching app in a real browser: Debian's Chromium driven by pytest-playwright (no browser download), against
the app served by uvicorn on 127.0.0.1 over a small audited workspace. Every page is screenshotted (into
``$PHENOSYNTH_SCREENSHOTS`` when set, else tmp_path) and no request may leave the server.

The flow is one list of steps (``FLOW``: whose tab, step), the educator's and the trainee's tabs open side by side:
the educator signs in, builds a deck from the audited run (grid with audit scores, adds images, edits an
annotation), makes a cohort, an invitation link and a quiz; the trainee is refused every educator page (403), joins
by the link, takes the quiz and sees feedback; the educator reads the per-condition sensitivity and specificity.
Each step drives one page, checks what the user sees and saves a screenshot; a new page is one more step.
Chromium is found at ``$PHENOSYNTH_CHROMIUM`` or as ``chromium`` on the PATH; without it the tests
are skipped and say so.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")
pytest.importorskip("pytest_playwright", reason="the browser tests need pytest-playwright (extra phenosynth[dev])")

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402

from phenosynth.edu import db as edu_db  # noqa: E402
from tests.test_edu_app import EDUCATOR, TRAINEE, db_rows, deck_workspace, make_app  # noqa: E402

CHROMIUM_ENV = "PHENOSYNTH_CHROMIUM"
SCREENSHOTS_ENV = "PHENOSYNTH_SCREENSHOTS"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    """``$PHENOSYNTH_CHROMIUM``, else ``chromium`` (Debian's package) or ``chromium-browser`` on the PATH."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_chromium_is_found_from_the_environment_or_the_path_and_a_missing_one_is_none(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(CHROMIUM_ENV, str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "gone"))
    assert find_chromium() is None  # a wrong setting is not silently replaced by another browser
    monkeypatch.delenv(CHROMIUM_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_chromium() is None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments with the system's Chromium (never one downloaded by playwright)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(f"no Chromium found: install Debian's `chromium` or set {CHROMIUM_ENV} to its executable")
    return {**browser_type_launch_args, "executable_path": chromium, "headless": True}


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live_site(tmp_path):
    """(base URL, app, image names): the app of tests/test_edu_app.py's audited workspace (run 'r1': 'ok_A' and
    'ok_B' shareable, 'flagged' an identity match), an educator and a trainee, served on loopback."""
    ws, names = deck_workspace(tmp_path)
    app = make_app(ws)
    with serving(app) as base:
        yield base, app, names


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Visit:
    """One user's browser tab and what the steps share: the base URL, the app (to count rows), the workspace's image
    names, the screenshots saved so far and the requests that tried to leave the server."""

    page: object
    base: str
    app: object
    names: dict[str, str]
    folder: Path
    who: str
    shots: list[Path] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    csp_errors: list[str] = field(default_factory=list)
    state: dict[str, object] = field(default_factory=dict)

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        path = self.folder / f"{self.who}-{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    def text(self) -> str:
        return " ".join(self.page.inner_text("main").split())


@contextmanager
def visit(browser, live_site, folder: Path, who: str) -> Iterator[Visit]:
    """A fresh browser context (no cookies) whose every request is checked: one for another host is aborted and
    recorded; Content-Security-Policy violations reported on the console are recorded too."""
    base, app, names = live_site
    host = urlsplit(base).netloc
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    v = Visit(page, base, app, names, folder, who)

    def check(route) -> None:
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            v.outside.append(route.request.url)
            route.abort()

    context.route("**/*", check)
    page.on("console", lambda m: v.csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield v
    finally:
        context.close()


def sign_in(v: Visit, who: tuple[str, str]) -> None:
    v.goto("/login")
    v.page.fill("input[name=email]", who[0])
    v.page.fill("input[name=password]", who[1])
    v.shot("login")
    v.page.click("button:has-text('Sign in')")
    v.page.wait_for_load_state()


# --- the educator's steps ---------------------------------------------------------------------------------------------


def educator_signs_in(v: Visit) -> None:
    sign_in(v, EDUCATOR)
    assert urlsplit(v.page.url).path == "/decks"
    assert f"{EDUCATOR[0]} (educator)" in v.page.inner_text("header") and "No deck yet." in v.text()
    v.shot("decks")


def educator_creates_a_deck_from_the_audited_run(v: Visit) -> None:
    v.page.fill("input[name=name]", "Kabuki and Noonan")
    v.page.select_option("select[name=run]", "r1")
    v.page.click("button:has-text('Create the deck')")
    v.page.wait_for_load_state()
    match = re.search(r"/decks/(\d+)\?run=r1$", v.page.url)
    assert match, v.page.url
    v.state["deck_id"] = int(match.group(1))
    # the grid: the two shareable images with their audit scores, the flagged one refused with the reason
    cards = v.page.locator("form[action$='/images'] figure.card")
    assert cards.count() == 3  # ok_A, ok_B, flagged: the run's images (r2 and r3 are other runs)
    boxes = v.page.locator("input[name=image_id]")
    assert sorted(boxes.evaluate_all("els => els.map(e => e.value)")) == sorted([v.names["ok_A"], v.names["ok_B"]])
    text = v.text()
    assert text.count("Refused: audit: identity-match") == 1 and "not shown" in text  # no pixels of a flagged image
    assert text.count("identity dist. 0.900") == 2 and text.count("SSIM 0.200") == 2 and "pHash bits 30" in text
    assert_images_shown(v, "form[action$='/images'] img", 2)
    v.shot("deck-grid")


def educator_adds_images(v: Visit) -> None:
    v.page.check(f"input[name=image_id][value='{v.names['ok_A']}']")
    v.page.check(f"input[name=image_id][value='{v.names['ok_B']}']")
    v.page.click("button:has-text('Add the chosen images')")
    v.page.wait_for_load_state()
    assert "Added 2 image(s)." in v.text()
    assert {i.image_id for i in db_rows(v.app, edu_db.DeckImage)} == {v.names["ok_A"], v.names["ok_B"]}
    assert_images_shown(v, "section.condition img", 2)
    v.shot("deck-images")


def educator_edits_an_annotation(v: Visit) -> None:
    form = v.page.locator("section.condition form.annotation").first
    form.locator("input[name=name]").fill("Kabuki syndrome")
    form.locator("input[name=hpo_terms]").fill("HP:0000316, HP:0000637")
    form.locator("textarea[name=features_text]").fill("long palpebral fissures, arched eyebrows")
    form.locator("button:has-text('Save annotation')").click()
    v.page.wait_for_load_state()
    saved = v.page.locator("section.condition form.annotation").first
    assert saved.locator("input[name=name]").input_value() == "Kabuki syndrome"
    assert saved.locator("input[name=hpo_terms]").input_value() == "HP:0000316, HP:0000637"
    cond = next(c for c in db_rows(v.app, edu_db.DeckCondition) if c.name == "Kabuki syndrome")
    assert (cond.hpo_terms, cond.features_text) == (["HP:0000316", "HP:0000637"],
                                                    "long palpebral fissures, arched eyebrows")
    v.shot("annotation")


def assert_images_shown(v: Visit, selector: str, n: int) -> None:
    """``n`` images under ``selector``, each loaded and decoded by the browser (naturalWidth > 0)."""
    images = v.page.locator(selector)
    assert images.count() == n
    images.first.scroll_into_view_if_needed()
    v.page.wait_for_function(f"() => [...document.querySelectorAll({selector!r})].every(i => i.complete)")
    widths = images.evaluate_all("els => els.map(e => e.naturalWidth)")
    assert widths == [24] * n, widths  # the workspace's 24 x 24 PNGs


def educator_creates_a_cohort_and_an_invitation_link(v: Visit) -> None:
    v.goto("/cohorts")
    v.page.fill("input[name=name]", "Residents 2026")
    v.page.click("button:has-text('Create the cohort')")
    v.page.wait_for_load_state()
    v.state["cohort_id"] = int(re.search(r"/cohorts/(\d+)$", v.page.url).group(1))
    v.page.click("button:has-text('Make a link')")
    v.page.wait_for_load_state()
    link = v.page.locator("input.link").input_value()
    assert link.startswith(v.base + "/invite/"), link
    v.state["invite"] = link[len(v.base):]
    v.shot("cohort-link")


def educator_creates_a_quiz(v: Visit) -> None:
    v.goto("/exercises")
    v.page.fill("input[name=title]", "Faces quiz")
    v.page.select_option("select[name=deck_id]", label="Kabuki and Noonan")
    v.page.select_option("select[name=cohort_id]", label="Residents 2026")
    v.page.select_option("select[name=kind]", "quiz")
    v.page.fill("input[name=n]", "2")
    v.page.select_option("select[name=feedback]", "each")
    v.page.click("button:has-text('Create')")
    v.page.wait_for_load_state()
    v.state["quiz_id"] = int(re.search(r"/exercises/(\d+)$", v.page.url).group(1))
    assert "Faces quiz" in v.text()
    v.shot("quiz")


def educator_sees_per_condition_sensitivity_and_specificity(v: Visit) -> None:
    v.goto(f"/progress/cohorts/{v.state['cohort_id']}")
    stat = "tr[data-condition='{}'] td[data-stat='{}']"
    seen = {(c, s): v.page.inner_text(stat.format(c, s)) for c in ("Kabuki syndrome", "B")
            for s in ("sensitivity", "specificity")}
    # the trainee chose "Kabuki syndrome" for both images: right for its image, wrong for B's
    assert seen == {("Kabuki syndrome", "sensitivity"): "1.000", ("Kabuki syndrome", "specificity"): "0.000",
                    ("B", "sensitivity"): "0.000", ("B", "specificity"): "1.000"}, seen
    assert v.page.inner_text("td[data-stat='n_answers']") == "2" and v.page.inner_text(
        "td[data-stat='accuracy']") == "0.500"
    charts = v.page.locator("figure.chart img")
    assert charts.count() >= 2 and all(w > 100 for w in charts.evaluate_all("els => els.map(e => e.naturalWidth)"))
    v.shot("progress")


def educator_opens_the_cohorts_practice_page_and_a_counselling_sheet(v: Visit) -> None:
    v.goto(f"/cohorts/{v.state['cohort_id']}/practice")
    trainees = v.page.inner_text("#practice-trainees")
    assert TRAINEE[0] in trainees and "never" in trainees, trainees  # a member who has not practised yet
    assert "No practice yet" in v.text()
    v.shot("cohort-practice")
    cond = next(c for c in db_rows(v.app, edu_db.DeckCondition) if c.name == "Kabuki syndrome")
    v.goto(f"/decks/{v.state['deck_id']}/conditions/{cond.id}/sheet")
    sheet = v.page.inner_text("body")  # a printable page of its own, outside the app's layout
    assert "Kabuki syndrome" in sheet and "long palpebral fissures" in sheet
    assert "not photographs" in v.page.inner_text("#disclaimer")
    assert v.page.locator("img").count() >= 1
    v.shot("sheet")


# --- the trainee's steps ----------------------------------------------------------------------------------------------


def trainee_signs_in(v: Visit) -> None:
    sign_in(v, TRAINEE)
    assert urlsplit(v.page.url).path == "/"
    assert f"{TRAINEE[0]} (trainee)" in v.page.inner_text("header") and "No exercise is assigned" in v.text()
    assert v.page.locator("header a[href='/decks']").count() == 0  # no link to educator pages
    v.shot("home")


def trainee_is_refused_the_educator_pages(v: Visit) -> None:
    deck_id = v.state["deck_id"]
    for path in ("/decks", f"/decks/{deck_id}", f"/decks/{deck_id}/export", "/decks/import", "/cohorts",
                 f"/cohorts/{v.state['cohort_id']}", "/exercises", f"/exercises/{v.state['quiz_id']}", "/progress",
                 f"/progress/cohorts/{v.state['cohort_id']}"):
        response = v.goto(path)
        assert response.status == 403, (path, response.status)
        assert "Not allowed" in v.page.inner_text("h1") and "This page is for educators." in v.text()
    v.shot("refused-403")


def trainee_joins_the_cohort_by_the_link(v: Visit) -> None:
    v.goto(v.state["invite"])
    v.shot("invitation")
    v.page.click("button:has-text('Join the cohort')")
    v.page.wait_for_load_state()
    assert urlsplit(v.page.url).path == "/" and "Faces quiz" in v.text() and "not started" in v.text()
    v.shot("home-with-quiz")


def trainee_takes_the_quiz_and_sees_feedback(v: Visit) -> None:
    v.page.click("a:has-text('Faces quiz')")
    v.page.wait_for_load_state()
    v.shot("quiz-start")
    v.page.click("button:has-text('Start')")
    v.page.wait_for_load_state()
    for k in range(2):
        assert f"Image {k + 1} of 2" in v.text()
        assert_images_shown(v, "img.quiz-image", 1)
        v.shot(f"question-{k + 1}")
        v.page.check("input[name=chosen][value='Kabuki syndrome']")
        v.page.check("input[name=confidence][value='4']")
        v.page.click("button:has-text('Answer')")
        v.page.wait_for_load_state()
        feedback = v.text()
        if "right:" in feedback:
            assert "this face shows Kabuki syndrome" in feedback and "long palpebral fissures" in feedback
        else:
            assert "wrong, you chose Kabuki syndrome: this face shows B" in feedback
        v.shot(f"feedback-{k + 1}")
        v.page.click("a:has-text('See your results')" if k == 1 else "a:has-text('Next image')")
        v.page.wait_for_load_state()
    assert "1 of 2 right." in v.text()
    with v.app.state.sessions() as db:
        from sqlalchemy import select

        answers = db.scalars(select(edu_db.Answer).order_by(edu_db.Answer.item)).all()
        assert [(a.chosen_label, a.confidence) for a in answers] == [("Kabuki syndrome", 4)] * 2
        assert sorted(a.correct_label for a in answers) == ["B", "Kabuki syndrome"]
        assert all(a.response_ms is not None and 0 < a.response_ms < 60_000 for a in answers)  # quiz.js timed them
    v.shot("results")


#: The whole flow, in order: (whose tab, step). Both tabs stay open; a new page of the app is one more step here.
FLOW: list[tuple[str, Callable[[Visit], None]]] = [
    ("educator", educator_signs_in), ("educator", educator_creates_a_deck_from_the_audited_run),
    ("educator", educator_adds_images), ("educator", educator_edits_an_annotation),
    ("educator", educator_creates_a_cohort_and_an_invitation_link), ("educator", educator_creates_a_quiz),
    ("trainee", trainee_signs_in), ("trainee", trainee_is_refused_the_educator_pages),
    ("trainee", trainee_joins_the_cohort_by_the_link), ("trainee", trainee_takes_the_quiz_and_sees_feedback),
    ("educator", educator_sees_per_condition_sensitivity_and_specificity),
    ("educator", educator_opens_the_cohorts_practice_page_and_a_counselling_sheet),
]


# --- the test ---------------------------------------------------------------------------------------------------------


def check_screenshots(paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width == 1100 and im.height >= 300, (path, im.size)
            assert len(set(im.convert("L").resize((64, 64)).getdata())) > 2, path  # not a blank page


def test_an_educator_builds_a_deck_and_a_quiz_a_trainee_takes_it_and_the_educator_sees_the_scores(
        browser, live_site, screenshots):
    with visit(browser, live_site, screenshots, "educator") as educator, \
            visit(browser, live_site, screenshots, "trainee") as trainee:
        tabs = {"educator": educator, "trainee": trainee}
        for who, step in FLOW:
            tab = tabs[who]
            tab.state = educator.state  # one shared record of ids (deck, cohort, quiz, invitation)
            step(tab)
    for v in (educator, trainee):
        assert v.outside == [], f"requests left the server: {v.outside}"
        assert v.csp_errors == [], v.csp_errors
    assert [p.name for p in educator.shots] == [
        "educator-01-login.png", "educator-02-decks.png", "educator-03-deck-grid.png", "educator-04-deck-images.png",
        "educator-05-annotation.png", "educator-06-cohort-link.png", "educator-07-quiz.png",
        "educator-08-progress.png", "educator-09-cohort-practice.png", "educator-10-sheet.png"]
    assert [p.name for p in trainee.shots] == [
        "trainee-01-login.png", "trainee-02-home.png", "trainee-03-refused-403.png", "trainee-04-invitation.png",
        "trainee-05-home-with-quiz.png", "trainee-06-quiz-start.png", "trainee-07-question-1.png",
        "trainee-08-feedback-1.png", "trainee-09-question-2.png", "trainee-10-feedback-2.png",
        "trainee-11-results.png"]
    check_screenshots(educator.shots + trainee.shots)
