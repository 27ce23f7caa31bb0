"""The teaching app's foundation (issue 13, items 1, 2 and 6): migrations, sign-in, roles, CSRF, the deck gate, deck
zips (round trip and hostile files) and ``phenosynth serve``. FastAPI's TestClient on SQLite in tmp_path."""

from __future__ import annotations

import html
import io
import json
import re
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from phenosynth.data.workspace import Workspace  # noqa: E402
from phenosynth.edu import db as edu_db  # noqa: E402
from phenosynth.edu.accounts import create_user  # noqa: E402
from phenosynth.edu.app import create_app  # noqa: E402
from phenosynth.edu.decks import ZipLimits  # noqa: E402
from phenosynth.edu.security import LoginLimit, login_blocked  # noqa: E402
from tests._workspaces import image_row, save_rows, write_audit  # noqa: E402

EDUCATOR = ("teacher@example.org", "educator-password-1")
TRAINEE = ("student@example.org", "trainee-password-1")


# --- a small audited workspace (hand-written audit.parquet, as load_audit reads it) -----------------------------------


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)


def deck_workspace(root: Path) -> tuple[Workspace, dict[str, str]]:
    """Real photos of conditions A and B; run 'r1' audited: 'ok_A', 'ok_B' shareable, 'flagged' an identity match;
    run 'r3' audited before 'late' was added to it (a stale audit); run 'r2' never audited ('unaudited').
    Name -> image_id."""
    ws = Workspace.open(root / "ws", create=True)
    rows = [image_row(ws, root / "src" / f"real_{lab}.png", _pixels(k), label=lab, subject_id=f"p{k}", source="real",
                      split="train", fold=0) for k, lab in enumerate("AB")]
    names = {"real": rows[0]["image_id"]}
    synthetic = [("ok_A", "A", "r1"), ("ok_B", "B", "r1"), ("flagged", "A", "r1"), ("early", "B", "r3"),
                 ("late", "B", "r3"), ("unaudited", "A", "r2")]
    for k, (name, lab, run) in enumerate(synthetic, start=10):
        rows.append(image_row(ws, ws.root / "synthetic" / run / f"{name}.png", _pixels(k), label=lab,
                              source="synthetic", generator="g", params=json.dumps({"run": run}),
                              parents=[names["real"]], split="train"))
        names[name] = rows[-1]["image_id"]
    before_late = [r for r in rows if r["image_id"] != names["late"]]
    save_rows(ws, before_late)
    audited = {"r1": [("ok_A", "A", []), ("ok_B", "B", []), ("flagged", "A", ["identity-match"])],
               "r3": [("early", "B", [])]}
    for run, images in audited.items():
        write_audit(ws, run, [{
            "image_id": names[n], "label": lab, "run": run, "generator": "g", "parents": [], "has_face": True,
            "nearest_real_distance": 0.9 if not flags else 0.1, "ssim": 0.2, "phash_bits": 30, "flags": flags,
            "shareable": not flags, "identity_match": bool(flags)} for n, lab, flags in images])
    save_rows(ws, rows)  # 'late' joins run r3 after its audit: r3's audit is stale
    return ws, names


def re_audit_flags(ws: Workspace, image_id: str, flag: str) -> None:
    """As if a re-audit of run r1 flagged ``image_id``."""
    path = ws.root / "audit" / "r1" / "audit.parquet"
    frame = pd.read_parquet(path)
    hit = frame["image_id"] == image_id
    frame["flags"] = [[flag] if h else list(f) for h, f in zip(hit, frame["flags"])]
    frame.loc[hit, "shareable"] = False
    frame.to_parquet(path, index=False)


def csrf(client: TestClient) -> str:
    """The session's CSRF token, read from a page as a browser would."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)


def sign_in(client: TestClient, who: tuple[str, str]):
    return client.post("/login", data={"email": who[0], "password": who[1], "csrf_token": csrf(client)},
                       follow_redirects=False)


def make_app(ws: Workspace, **kw):
    from phenosynth.edu.security import Passwords

    app = create_app(ws.root, secret="test-secret-" + "x" * 20, passwords=Passwords(time_cost=1, memory_cost=8192), **kw)
    with app.state.sessions() as db:
        create_user(db, app.state.passwords, *EDUCATOR, role="educator")
        create_user(db, app.state.passwords, *TRAINEE, role="trainee")
    return app


@pytest.fixture
def site(tmp_path):
    ws, names = deck_workspace(tmp_path)
    app = make_app(ws, login_limit=LoginLimit(max_failures=3, window_s=600),
                   zip_limits=ZipLimits(max_zip_bytes=2_000_000, max_entry_bytes=500_000, max_pixels=1_000_000))
    return app, ws, names


@pytest.fixture
def educator(site):
    client = TestClient(site[0])
    assert sign_in(client, EDUCATOR).status_code == 303
    return client


def new_deck(client: TestClient, run: str = "r1") -> int:
    r = client.post("/decks", data={"name": "Deck one", "run": run, "csrf_token": csrf(client)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(re.search(r"/decks/(\d+)", r.headers["location"]).group(1))


def db_rows(app, model) -> list:
    from sqlalchemy import select

    with app.state.sessions() as db:
        return list(db.scalars(select(model)).all())


def deck_images(app) -> list:
    """Every deck image, with its condition loaded (usable after the session closes)."""
    from sqlalchemy import select

    with app.state.sessions() as db:
        rows = list(db.scalars(select(edu_db.DeckImage)))
        for r in rows:
            r.condition  # noqa: B018 - load before the session closes
        return rows


# --- migrations ---------------------------------------------------------------------------------------------------------


def test_migrations_build_the_schema_of_the_models_from_an_empty_database(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    engine = edu_db.make_engine(f"sqlite:///{tmp_path / 'edu.sqlite'}")
    assert inspect(engine).get_table_names() == []
    edu_db.migrate(engine)
    edu_db.migrate(engine)  # a second start-up changes nothing
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == edu_db.head_revision() == "0002"
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), edu_db.Base.metadata)
    assert diff == []  # the migration and the models agree, table by table and column by column
    tables = set(inspect(engine).get_table_names())
    assert {"users", "decks", "deck_conditions", "deck_images", "cohorts", "memberships", "invitations", "exercises",
            "attempts", "answers", "review_cards", "login_failures", "alembic_version"} == tables
    answer_columns = {c["name"] for c in inspect(engine).get_columns("answers")}
    assert {"chosen_label", "correct_label", "confidence", "response_ms", "answered_at"} <= answer_columns
    image_columns = {c["name"]: c for c in inspect(engine).get_columns("deck_images")}
    assert not any("LargeBinary" in type(c["type"]).__name__ or "BLOB" in str(c["type"]) for c in
                   image_columns.values())  # a deck image is a reference, never pixels


def test_create_app_on_a_new_workspace_makes_edu_sqlite_and_a_private_secret(tmp_path):
    ws = Workspace.open(tmp_path / "ws", create=True)
    create_app(ws.root)
    assert (ws.root / "edu.sqlite").is_file()
    assert stat.S_IMODE((ws.root / "edu.secret").stat().st_mode) == 0o600


# --- sign-in, sign-out, rate limit --------------------------------------------------------------------------------------


def test_sign_in_wrong_password_and_sign_out(site):
    client = TestClient(site[0])
    r = client.get("/decks", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/decks"
    bad = client.post("/login", data={"email": EDUCATOR[0], "password": "wrong-password", "csrf_token": csrf(client)})
    assert bad.status_code == 401 and "Wrong email or password." in bad.text
    unknown = client.post("/login", data={"email": "nobody@example.org", "password": "x" * 12,
                                          "csrf_token": csrf(client)})
    assert unknown.status_code == 401 and "Wrong email or password." in unknown.text  # same answer: no enumeration
    ok = client.post("/login", data={"email": " Teacher@Example.org ", "password": EDUCATOR[1], "next": "/decks",
                                     "csrf_token": csrf(client)}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/decks"
    page = client.get("/decks")
    assert page.status_code == 200 and "teacher@example.org (educator)" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "https://" not in page.text and "http://" not in page.text  # nothing from outside (no CDN)
    assert client.post("/logout", data={"csrf_token": csrf(client)}, follow_redirects=False).status_code == 303
    assert client.get("/decks", follow_redirects=False).headers["location"] == "/login?next=/decks"


def test_sign_in_never_redirects_to_another_site(site):
    client = TestClient(site[0])
    r = client.post("/login", data={"email": EDUCATOR[0], "password": EDUCATOR[1], "next": "//evil.example/x",
                                    "csrf_token": csrf(client)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_failed_sign_ins_are_rate_limited_per_email_and_per_client(site):
    from datetime import timedelta

    app = site[0]
    client = TestClient(app)
    for _ in range(3):
        assert client.post("/login", data={"email": EDUCATOR[0], "password": "nope-nope-nope",
                                           "csrf_token": csrf(client)}).status_code == 401
    blocked = sign_in(client, EDUCATOR)  # the right password, but too late
    assert blocked.status_code == 429 and "Too many failed sign-ins. Try again in 10 minute(s)." in blocked.text
    assert sign_in(client, TRAINEE).status_code == 429  # the same client is blocked for every email
    with app.state.sessions() as db:
        later = edu_db.utcnow() + timedelta(seconds=601)
        assert login_blocked(db, EDUCATOR[0], "testclient", app.state.login_limit) > 0
        assert login_blocked(db, EDUCATOR[0], "testclient", app.state.login_limit, now=later) == 0
        assert login_blocked(db, EDUCATOR[0], "elsewhere", app.state.login_limit) > 0  # and the email everywhere


# --- roles and CSRF on every route --------------------------------------------------------------------------------------


#: Routes a trainee (and, but for "/", a signed-out visitor) may use; every other route is an educator's. A new
#: trainee route must be added here, with its own test that a trainee reaches only their own data.
OPEN_ROUTES = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/"),
               # a trainee's own progress and practice: tests/test_edu_progress.py
               ("GET", "/progress/me"), ("GET", "/progress/trainees/{user_id}"), ("GET", "/practice"),
               ("GET", "/practice/{exercise_id}"), ("POST", "/practice/{exercise_id}/answer"),
               ("GET", "/practice/{exercise_id}/images/{image_pk}"),
               # invitations (signed out) and a trainee's quiz (tests/test_edu_quiz.py: own data only)
               ("GET", "/invite/{token}"), ("POST", "/invite/{token}"), ("GET", "/quizzes/{exercise_id}"),
               ("POST", "/quizzes/{exercise_id}/start"), ("GET", "/attempts/{attempt_id}"),
               ("POST", "/attempts/{attempt_id}/answers"), ("GET", "/attempts/{attempt_id}/feedback/{item}"),
               ("GET", "/attempts/{attempt_id}/results"), ("GET", "/attempts/{attempt_id}/images/{item}")}


def _all_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of every router the app includes."""
    from fastapi.routing import APIRoute

    from phenosynth.edu.routes import routers

    return [(m, r.path_format) for router in routers() for r in router.routes if isinstance(r, APIRoute)
            for m in sorted(r.methods)]


def _educator_routes() -> list[tuple[str, str]]:
    return [route for route in _all_routes() if route not in OPEN_ROUTES]


def _fill(path: str, ids: dict[str, object]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), 1)), path)  # 1: an id a role check precedes


@pytest.fixture
def a_deck(site, educator):
    app, _, names = site
    deck_id = new_deck(educator)
    assert educator.post(f"/decks/{deck_id}/images", data={"image_id": [names["ok_A"]],
                                                           "csrf_token": csrf(educator)}).status_code == 200
    image = db_rows(app, edu_db.DeckImage)[0]
    return {"deck_id": deck_id, "image_pk": image.id, "condition_id": image.condition_id, "image_id": names["ok_A"]}


def test_trainees_get_403_and_signed_out_users_the_sign_in_page_on_every_educator_route(site, a_deck):
    app = site[0]
    routes = _educator_routes()
    assert len(routes) >= 12 and ("POST", "/decks/import") in routes
    trainee, anonymous = TestClient(app), TestClient(app)
    assert sign_in(trainee, TRAINEE).status_code == 303
    assert trainee.get("/").status_code == 200  # the trainee's own start page
    for method, path in routes:
        url = _fill(path, a_deck)
        for client, expected in ((trainee, 403), (anonymous, 303)):
            r = client.request(method, url, data={"csrf_token": csrf(client)} if method == "POST" else None,
                               follow_redirects=False)
            assert r.status_code == expected, (method, url, r.status_code)
            if expected == 303:
                assert r.headers["location"].startswith("/login?next=")
            else:
                assert "This page is for educators." in r.text
    assert len(db_rows(app, edu_db.Deck)) == 1 and not db_rows(app, edu_db.DeckImage)[0].retired  # nothing changed


def test_every_form_post_without_the_session_csrf_token_is_refused(site, educator, a_deck):
    app = site[0]
    posts = [(m, p) for m, p in _all_routes() if m == "POST"]
    assert {"/login", "/logout", "/decks", "/decks/{deck_id}/images"} <= {p for _, p in posts}
    for _, path in posts:
        url = _fill(path, a_deck)
        for data in ({}, {"csrf_token": "forged-token"}):
            r = educator.post(url, data=data | {"name": "Forged", "retired": "1"}, follow_redirects=False)
            assert r.status_code == 403 and "CSRF token missing or invalid" in r.text, (url, r.status_code)
    assert [d.name for d in db_rows(app, edu_db.Deck)] == ["Deck one"]
    assert not db_rows(app, edu_db.DeckImage)[0].retired
    assert educator.get("/decks").status_code == 200  # still signed in: the forged logout did nothing


# --- the deck gate ------------------------------------------------------------------------------------------------------


def test_a_deck_refuses_the_audited_images_of_a_run_made_from_patients_pixels(site, educator):
    app, ws, names = site
    rows = ws.load_manifest().to_dict("records")
    warp = image_row(ws, ws.root / "synthetic" / "w" / "warp.png", _pixels(99), label="A", source="synthetic",
                     generator="shape-warp", params=json.dumps({"run": "w"}), parents=[names["real"]], split="train")
    save_rows(ws, rows + [warp])
    write_audit(ws, "w", [{"image_id": warp["image_id"], "label": "A", "run": "w", "generator": "shape-warp",
                           "parents": [], "has_face": True, "flags": [], "shareable": True}])
    deck_id = new_deck(educator)
    r = educator.post(f"/decks/{deck_id}/images", data={"image_id": [warp["image_id"]], "csrf_token": csrf(educator)})
    text = html.unescape(" ".join(r.text.split()))
    assert r.status_code == 422 and "Refused 1 image(s)" in text
    assert "made from patients' own photos: run 'w' holds patient pixels" in text
    assert educator.get(f"/workspace/images/{warp['image_id']}").status_code == 403


def test_a_deck_refuses_real_unaudited_and_flagged_images_and_says_why(site, educator):
    app, ws, names = site
    deck_id = new_deck(educator)
    asked = [names[n] for n in ("ok_A", "real", "flagged", "late", "unaudited")] + ["0" * 64]
    r = educator.post(f"/decks/{deck_id}/images", data={"image_id": asked, "csrf_token": csrf(educator)})
    assert r.status_code == 422
    text = html.unescape(" ".join(r.text.split()))
    assert "Added 1 image(s)." in text and "Refused 5 image(s)" in text
    for name, reason in (("real", "a real photo (decks take synthetic images only)"),
                         ("flagged", "audit: identity-match"),
                         ("late", "stale audit: the run has 2 synthetic images now, 1 when audited "
                                  "(phenosynth audit -w WS --run r3)"),
                         ("unaudited", "not audited: run 'r2' has no audit (phenosynth audit -w WS --run r2)")):
        assert f"<code>{names[name][:16]}</code>: {reason}" in text, name
    assert f"<code>{'0' * 16}</code>: not an image of this workspace" in text
    assert [i.image_id for i in db_rows(app, edu_db.DeckImage)] == [names["ok_A"]]

    # the grid shows only what a deck may take; the file routes refuse the rest
    page = educator.get(f"/decks/{deck_id}?run=r1").text
    assert f'/workspace/images/{names["ok_B"]}' in page and names["flagged"] not in page.split("Refused")[0]
    assert "Refused: audit: identity-match" in page
    for name in ("real", "flagged", "late", "unaudited"):
        assert educator.get(f"/workspace/images/{names[name]}").status_code == 403
    served = educator.get(f"/workspace/images/{names['ok_B']}")
    assert served.status_code == 200 and served.content == (ws.root / "synthetic" / "r1" / "ok_B.png").read_bytes()


def test_a_re_audit_that_flags_a_deck_image_takes_it_out_of_the_deck_pages(site, educator, a_deck):
    app, ws, names = site
    url = f"/decks/{a_deck['deck_id']}/images/{a_deck['image_pk']}"
    assert educator.get(url).status_code == 200
    re_audit_flags(ws, names["ok_A"], "near-copy")
    r = educator.get(url)
    assert r.status_code == 403 and "audit: near-copy" in r.text
    assert "no longer pass the audit gate" in educator.get(f"/decks/{a_deck['deck_id']}").text


def test_reorder_retire_and_annotate(site, educator):
    app, _, names = site
    deck_id = new_deck(educator)
    educator.post(f"/decks/{deck_id}/images", data={"image_id": [names["ok_A"], names["ok_B"]],
                                                    "csrf_token": csrf(educator)})
    a, b = sorted(db_rows(app, edu_db.DeckImage), key=lambda i: i.position)
    r = educator.post(f"/decks/{deck_id}/order", data={f"pos-{a.id}": "5", f"pos-{b.id}": "1",
                                                       "csrf_token": csrf(educator)}, follow_redirects=False)
    assert r.status_code == 303
    assert {i.image_id: i.position for i in db_rows(app, edu_db.DeckImage)} == {names["ok_B"]: 0, names["ok_A"]: 1}
    educator.post(f"/decks/{deck_id}/images/{a.id}/retire", data={"retired": "1", "csrf_token": csrf(educator)})
    assert {i.id: i.retired for i in db_rows(app, edu_db.DeckImage)} == {a.id: True, b.id: False}
    cond = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "A")
    bad = educator.post(f"/decks/{deck_id}/conditions/{cond.id}", data={
        "name": "Kabuki syndrome", "hpo_terms": "HP:0000316, long eyelashes", "csrf_token": csrf(educator)})
    assert bad.status_code == 422 and "Not an HPO term id: long, eyelashes" in html.unescape(bad.text)
    ok = educator.post(f"/decks/{deck_id}/conditions/{cond.id}", data={
        "name": "Kabuki syndrome", "hpo_terms": "HP:0000316; HP:0000637 HP:0000316",
        "features_text": "long palpebral fissures <b>", "description": "A rare condition.",
        "csrf_token": csrf(educator)}, follow_redirects=True)
    cond = next(c for c in db_rows(app, edu_db.DeckCondition) if c.id == cond.id)
    assert (cond.name, cond.hpo_terms, cond.features_text) == (
        "Kabuki syndrome", ["HP:0000316", "HP:0000637"], "long palpebral fissures <b>")
    assert "long palpebral fissures &lt;b&gt;" in ok.text  # autoescaped


# --- zips ----------------------------------------------------------------------------------------------------------------


def test_a_deck_exports_and_imports_as_a_zip_of_images_and_json(site, educator):
    app, ws, names = site
    deck_id = new_deck(educator)
    educator.post(f"/decks/{deck_id}/images", data={"image_id": [names["ok_A"], names["ok_B"]],
                                                    "csrf_token": csrf(educator)})
    cond = next(c for c in db_rows(app, edu_db.DeckCondition) if c.name == "B")
    educator.post(f"/decks/{deck_id}/conditions/{cond.id}", data={
        "name": "B", "hpo_terms": "HP:0000286", "features_text": "epicanthus", "csrf_token": csrf(educator)})
    r = educator.get(f"/decks/{deck_id}/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["deck.json", "images/0000.png", "images/0001.png"]
        doc = json.loads(zf.read("deck.json"))
        first = np.asarray(Image.open(io.BytesIO(zf.read("images/0000.png"))))
    assert doc["conditions"][1] | {} == {"name": "B", "hpo_terms": ["HP:0000286"], "features_text": "epicanthus",
                                         "description": ""}
    assert [i["audit"]["shareable"] for i in doc["images"]] == [True, True]
    assert np.array_equal(first, np.asarray(Image.open(ws.root / "synthetic" / "r1" / "ok_A.png")))
    assert names["real"] not in r.content.decode("latin-1")  # no real photo's id travels

    back = educator.post("/decks/import", files={"file": ("deck.zip", r.content, "application/zip")},
                         data={"csrf_token": csrf(educator)})
    assert back.status_code == 200 and "Imported 2 image(s) into deck 'Deck one'." in html.unescape(back.text)
    imported = [i for i in db_rows(app, edu_db.DeckImage) if i.origin == "imported"]
    assert len(imported) == 2 and all((ws.root / "edu" / "images" / f"{i.image_id}.png").is_file() for i in imported)
    pic = educator.get(f"/decks/{imported[0].deck_id}/images/{imported[0].id}")
    assert pic.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(pic.content))), first)


def _zip(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _png(side: int = 24, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def _deck_json(files: dict[str, dict | None]) -> bytes:
    return json.dumps({"format": "phenosynth-deck", "version": 1, "name": "Z", "conditions": [{"name": "A"}],
                       "images": [{"file": f, "condition": "A", "audit": a} for f, a in files.items()]}).encode()


PASSING = {"shareable": True, "flags": []}
HOSTILE = {
    "path escaping the folder": ({"deck.json": _deck_json({}), "../evil.png": _png()}, "path outside the deck folder"),
    "absolute path": ({"deck.json": _deck_json({}), "/tmp/evil.png": _png()}, "path outside the deck folder"),
    "backslash path": ({"deck.json": _deck_json({}), "images\\..\\evil.png": _png()}, "path outside the deck folder"),
    "symbolic link": ({"deck.json": _deck_json({})}, "is a symbolic link"),
    "decompression bomb": ({"deck.json": _deck_json({}), "images/a.png": b"\0" * 400_000}, "decompression bomb"),
    "oversized entry": ({"deck.json": _deck_json({}), "images/a.png": np.random.default_rng(0).bytes(600_000)},
                        "an oversized file"),
    "pixel bomb": ({"deck.json": _deck_json({"images/a.png": PASSING}), "images/a.png": _png(1100, "1")},
                   "decompression bomb"),
    "not an image": ({"deck.json": _deck_json({"images/a.png": PASSING}), "images/a.png": b"#!/bin/sh\nrm -rf /\n"},
                     "'images/a.png' is not a PNG or JPEG image"),
    "unexpected file": ({"deck.json": _deck_json({}), "run.sh": b"echo"}, "unexpected entry 'run.sh'"),
    "no deck.json": ({"images/a.png": _png()}, "no deck.json"),
    "deck.json not a deck": ({"deck.json": b'{"format": "phenosynth-deck", "version": 1, "name": "Z", "x": 1}'},
                             "deck.json is not a deck"),
    "missing image": ({"deck.json": _deck_json({"images/gone.png": PASSING})}, "which the zip does not hold"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_deck_zips_are_refused_whole_with_the_reason(site, educator, tmp_path, case):
    app, ws, _ = site
    entries, message = HOSTILE[case]
    data = _zip(entries, symlink="images/link.png" if case == "symbolic link" else None)
    r = educator.post("/decks/import", files={"file": ("deck.zip", data, "application/zip")},
                      data={"csrf_token": csrf(educator)})
    assert r.status_code == 400 and "Refused zip" in r.text and message in html.unescape(r.text), r.text
    assert db_rows(app, edu_db.Deck) == [] and not (ws.root / "edu" / "images").exists()
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_uploads_that_are_no_zip_or_too_large_are_refused(site, educator):
    not_zip = educator.post("/decks/import", files={"file": ("deck.zip", b"PK\x03\x04 but no zip", "application/zip")},
                            data={"csrf_token": csrf(educator)})
    assert not_zip.status_code == 400 and "Refused upload: not a zip file." in not_zip.text
    huge = np.random.default_rng(1).bytes(2_100_000)
    big = educator.post("/decks/import", files={"file": ("deck.zip", huge, "application/zip")},
                        data={"csrf_token": csrf(educator)})
    assert big.status_code == 400 and "more than the limit of 2,000,000" in big.text


def test_an_imported_image_without_a_passing_audit_record_is_refused_with_the_reason(site, educator):
    app = site[0]
    data = _zip({"deck.json": _deck_json({"images/a.png": PASSING, "images/b.png": None,
                                          "images/c.png": {"shareable": False, "flags": ["identity-match"]}}),
                 "images/a.png": _png(), "images/b.png": _png(20), "images/c.png": _png(22)})
    r = educator.post("/decks/import", files={"file": ("deck.zip", data, "application/zip")},
                      data={"csrf_token": csrf(educator)})
    text = html.unescape(" ".join(r.text.split()))
    assert r.status_code == 422 and "Imported 1 image(s)" in text
    assert "<code>images/b.png</code>: no audit record in the deck zip" in text
    assert "<code>images/c.png</code>: audit: identity-match" in text
    assert len(db_rows(app, edu_db.DeckImage)) == 1


# --- one deck from a real audit -----------------------------------------------------------------------------------------


from tests.test_audit import PIXELS, _pixel_embedder, audited_ws  # noqa: E402, F401 - fixtures of the real audit


def test_a_deck_from_a_real_audit_takes_exactly_the_images_it_passed(audited_ws):
    from phenosynth.audit.privacy import audit, run_uses_patient_pixels

    ws, no_face, _ = audited_ws
    audit(ws, embedder=PIXELS, n_boot=20, kid_backbone=None, probe_backbone=None)
    frames = pd.concat([pd.read_parquet(p) for p in sorted((ws.root / "audit").glob("*/audit.parquet"))])
    warps = {r for r, g in frames.groupby("run")["generator"] if run_uses_patient_pixels(ws, r, g)}
    assert warps == {"shape-warp-seed0"}  # warps of the patients' own photos: a deck takes none of them
    passed = set(frames.loc[frames["shareable"] & ~frames["run"].isin(warps), "image_id"])
    assert 0 < len(passed) < len(frames)
    app = make_app(ws)
    client = TestClient(app)
    sign_in(client, EDUCATOR)
    deck_id = new_deck(client, run="others")
    everything = ws.load_manifest()["image_id"].astype(str).tolist()
    r = client.post(f"/decks/{deck_id}/images", data={"image_id": everything, "csrf_token": csrf(client)})
    assert r.status_code == 422
    assert {i.image_id for i in db_rows(app, edu_db.DeckImage)} == passed
    text = html.unescape(" ".join(r.text.split()))
    assert f"<code>{no_face[:16]}</code>: audit: no-face" in text
    assert text.count("a real photo (decks take synthetic images only)") == 24
    for warp in frames.loc[frames["run"].isin(warps), "image_id"]:  # whatever the audit said of each
        assert f"<code>{warp[:16]}</code>: made from patients' own photos" in text


# --- phenosynth serve ---------------------------------------------------------------------------------------------------


def test_serve_makes_the_first_educator_from_the_environment_never_the_command_line(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from phenosynth.cli import app as cli

    ws = Workspace.open(tmp_path / "ws", create=True)
    started = []
    options = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: (started.append((app, host, port)),
                                                                        options.append(kw)))
    monkeypatch.delenv("PHENOSYNTH_ADMIN_PASSWORD", raising=False)
    missing = CliRunner().invoke(cli, ["serve", "-w", str(ws.root), "--admin-email", EDUCATOR[0]])
    assert missing.exit_code == 2 and "Set PHENOSYNTH_ADMIN_PASSWORD" in missing.output and not started
    monkeypatch.setenv("PHENOSYNTH_ADMIN_PASSWORD", EDUCATOR[1])
    ok = CliRunner().invoke(cli, ["serve", "-w", str(ws.root), "--admin-email", EDUCATOR[0], "--port", "8123"])
    assert ok.exit_code == 0, ok.output
    assert f"Made the educator account {EDUCATOR[0]}." in ok.output and "http://127.0.0.1:8123/login" in ok.output
    app, host, port = started[0]
    assert (host, port) == ("127.0.0.1", 8123)
    assert options[0]["timeout_keep_alive"] == 75  # longer than a trainee looks at a quiz image (uvicorn's 5 s is not)
    client = TestClient(app)
    assert sign_in(client, EDUCATOR).headers["location"] == "/"
    again = CliRunner().invoke(cli, ["serve", "-w", str(ws.root), "--admin-email", "other@example.org"])
    assert again.exit_code == 0 and "--admin-email is not used" in again.output
    assert [u.email for u in db_rows(app, edu_db.User)] == [EDUCATOR[0]]
    short = tmp_path / "ws2"
    Workspace.open(short, create=True)
    monkeypatch.setenv("PHENOSYNTH_ADMIN_PASSWORD", "short")
    bad = CliRunner().invoke(cli, ["serve", "-w", str(short), "--admin-email", EDUCATOR[0]])
    assert bad.exit_code == 2 and "at least 10 characters" in bad.output


def test_serve_workers_run_the_app_factory_on_the_same_workspace_and_database(tmp_path, monkeypatch):
    """``--workers 2``: uvicorn gets the import string of :func:`app_from_environment` (worker processes cannot be
    handed an app object) and the environment that names the workspace; the factory's app signs the educator in
    and shares the machine's hashing slots between the workers."""
    import os

    import uvicorn
    from typer.testing import CliRunner

    from phenosynth.cli import app as cli
    from phenosynth.edu import app as edu_app
    from phenosynth.edu.security import default_hashing_concurrency
    from phenosynth.errors import PhenosynthError

    ws = Workspace.open(tmp_path / "ws", create=True)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    monkeypatch.setenv("PHENOSYNTH_ADMIN_PASSWORD", EDUCATOR[1])
    for name in (edu_app.WORKSPACE_ENV, edu_app.DB_URL_ENV, edu_app.WORKERS_ENV):
        monkeypatch.setenv(name, "")  # recorded, so that what serve sets is undone after the test
        monkeypatch.delenv(name)
    r = CliRunner().invoke(cli, ["serve", "-w", str(ws.root), "--admin-email", EDUCATOR[0], "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "2 worker processes" in r.output
    target, kw = calls[0]
    assert target == "phenosynth.edu.app:app_from_environment"
    assert (kw["factory"], kw["workers"], kw["timeout_keep_alive"]) == (True, 2, 75)
    assert os.environ[edu_app.WORKSPACE_ENV] == str(ws.root) and os.environ[edu_app.WORKERS_ENV] == "2"
    worker_app = edu_app.app_from_environment()
    assert worker_app.state.hashing.concurrency == max(1, default_hashing_concurrency() // 2)
    assert sign_in(TestClient(worker_app), EDUCATOR).headers["location"] == "/"
    monkeypatch.delenv(edu_app.WORKSPACE_ENV)
    with pytest.raises(PhenosynthError, match="PHENOSYNTH_EDU_WORKSPACE is not set"):
        edu_app.app_from_environment()


def test_a_request_body_over_the_upload_limit_is_refused_before_it_is_parsed(site, educator):
    big = educator.post("/decks/import", files={"file": ("deck.zip", b"\0" * 3_200_000, "application/zip")},
                        data={"csrf_token": csrf(educator)})
    assert big.status_code == 413 and "Upload too large." in big.text
    assert db_rows(site[0], edu_db.Deck) == []


# --- a second pre-/post-test pair -------------------------------------------------------------------------------------


def test_a_second_pre_post_pair_holds_back_only_images_the_cohort_has_not_seen(tmp_path):
    """Run r1: 4 faces of each of A, B, C. Pair 1 (1 pre + 1 post per condition) and one practice answer on a face
    of A leave A one unseen face, B and C two; pair 2's post-test takes exactly those, its pre-test the rest of the
    unseen ones; pair 3 finds none left and says so; another cohort's pair is free to use any face."""
    from sqlalchemy import select

    from tests.test_edu_quiz import link_for, location_id, make_deck, post, quiz_workspace

    app = make_app(quiz_workspace(tmp_path))
    teacher, trainee = TestClient(app), TestClient(app)
    assert sign_in(teacher, EDUCATOR).status_code == 303 and sign_in(trainee, TRAINEE).status_code == 303
    cohort_id = location_id(post(teacher, "/cohorts", {"name": "Residents"}), "/cohorts")
    assert post(trainee, link_for(teacher, cohort_id)).status_code == 303  # the trainee joins
    deck_id = make_deck(app, teacher)

    def pair(n_pre: int, n_post: int, cohort: int):
        return post(teacher, "/exercises", {"title": "Pair", "deck_id": deck_id, "cohort_id": cohort,
                                            "kind": "prepost", "n_pre": n_pre, "n_post": n_post})

    def asked(pre_id: int) -> tuple[set[int], set[int]]:
        with app.state.sessions() as db:
            pre = db.get(edu_db.Exercise, pre_id)
            post_ex = db.get(edu_db.Exercise, pre.paired_with_id)
            return ({q["deck_image_id"] for q in pre.settings["items"]},
                    {q["deck_image_id"] for q in post_ex.settings["items"]})

    with app.state.sessions() as db:
        faces = {i.id: i.condition.name for i in db.scalars(select(edu_db.DeckImage))}
    pre1, post1 = asked(location_id(pair(1, 1, cohort_id), "/exercises"))
    unseen = set(faces) - pre1 - post1
    practised = min(i for i in unseen if faces[i] == "A")
    with app.state.sessions() as db:  # the trainee practised one unseen face of A
        user = db.scalar(select(edu_db.User).where(edu_db.User.email == TRAINEE[0]))
        ex = edu_db.Exercise(deck_id=deck_id, kind="practice", title="Practice", settings={}, created_by=1)
        db.add(ex)
        db.flush()
        attempt = edu_db.Attempt(exercise_id=ex.id, user_id=user.id)
        db.add(attempt)
        db.flush()
        db.add(edu_db.Answer(attempt_id=attempt.id, deck_image_id=practised, chosen_label="B", correct_label="A",
                             confidence=2, response_ms=900))
        db.commit()
    unseen.discard(practised)
    assert sorted(faces[i] for i in unseen) == ["A", "B", "B", "C", "C"]

    pre2, post2 = asked(location_id(pair(1, 1, cohort_id), "/exercises"))
    assert post2 <= unseen and sorted(faces[i] for i in post2) == ["A", "B", "C"]  # never a face the cohort saw
    assert not post2 & (pre1 | post1 | {practised})
    assert pre2 & unseen == unseen - post2 and len(pre2 & unseen) == 2  # B and C's other unseen faces
    assert len(pre2) == 3 and [faces[i] for i in pre2 - unseen] == ["A"]  # A had none left: a face seen before

    refused = pair(0, 1, cohort_id)
    assert refused.status_code == 400
    assert ("A post-test of 1 image(s) per condition needs that many images of each condition that the trainees "
            "have not been shown yet (in an earlier quiz, test or practice of this deck); unseen images left: 'A' 0, "
            "'B' 0, 'C' 0.") in html.unescape(refused.text)

    other = location_id(post(teacher, "/cohorts", {"name": "Another year"}), "/cohorts")
    pre3, post3 = asked(location_id(pair(1, 2, other), "/exercises"))  # nothing shown to that cohort yet
    assert len(post3) == 6 and len(pre3) == 3
