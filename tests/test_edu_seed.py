"""Seeding the teaching app's demo workspace (``phenosynth.edu.seed``, ``phenosynth serve --seed-demo``, ``make
serve``) on a tiny demo dataset: the real stages up to the audit, one educator with a generated password that only
its hash keeps, the count of images a deck may take, and no failure when the audit passed none."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the teaching app needs the extra phenosynth[edu]")

from phenosynth.edu import db as edu_db  # noqa: E402
from phenosynth.edu.accounts import authenticate  # noqa: E402
from phenosynth.edu.security import Passwords  # noqa: E402
from tests.test_audit import PIXELS  # noqa: E402 - a weightless identity embedder (registered by `seeded`)

TINY = {"dataset_options": {"conditions": {"sim01": ("hypertelorism", "wide-nose"), "sim04": ("upslanted",)},
                            "n_subjects": 3},
        "audit_options": {"embedder": PIXELS, "n_boot": 20, "kid_backbone": None, "probe_backbone": None},
        "per_class": 3, "workers": 1}
LIGHT = Passwords(time_cost=1, memory_cost=8192)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from phenosynth.edu.seed import seed_demo
    from phenosynth.models import backbones as B
    from tests.test_audit import _pixels

    root = tmp_path_factory.mktemp("seed")
    with B.registered_backbone(B.BackboneSpec(name=PIXELS, embed_dim=192, native_input_size=64), _pixels):
        first = seed_demo(root / "ws", root / "dataset", passwords=LIGHT, **TINY)
    return root, first


def copy_seeded(root, to, *, accounts: bool = True):
    """A copy of the seeded folder (workspace and dataset) at ``to``; without its accounts database unless asked."""
    import shutil

    shutil.copytree(root, to)
    if not accounts:
        for db_file in (to / "ws").glob("edu.sqlite*"):
            db_file.unlink()
    return to


def flag_every_image(ws_root, run: str) -> None:
    """Rewrite the run's audit as if the audit had flagged every image as an identity match: none shareable."""
    path = ws_root / "audit" / run / "audit.parquet"
    frame = pd.read_parquet(path)
    frame["shareable"] = False
    frame["flags"] = [["identity-match"]] * len(frame)
    frame.to_parquet(path, index=False)


def _users(ws_root):
    from sqlalchemy import select

    engine = edu_db.make_engine(edu_db.default_url(ws_root))
    with edu_db.session_factory(engine)() as db:
        return db, list(db.scalars(select(edu_db.User)).all())


def test_seed_builds_an_audited_workspace_and_an_educator_whose_password_is_only_hashed(seeded):
    root, res = seeded
    ws = root / "ws"
    audit = pd.read_parquet(ws / "audit" / res.run / "audit.parquet")
    assert res.run == "phenotype-transfer-seed0" and res.n_synthetic == len(audit) == 6  # 2 conditions x 3
    assert res.n_shareable == int(audit["shareable"].sum())
    assert sum(res.shareable_by_condition.values()) == res.n_shareable
    assert res.educator_created and res.educator_email == "educator@example.org"
    assert res.password is not None and len(res.password) >= 20
    db, users = _users(ws)
    with db:
        assert [(u.email, u.role) for u in users] == [("educator@example.org", "educator")]
        assert users[0].password_hash.startswith("$argon2id$")
        assert authenticate(db, LIGHT, "educator@example.org", res.password) is not None
    secret = res.password.encode()
    leaked = [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []  # nowhere in clear text: not in the database, the workspace or the dataset


def test_seeding_again_skips_every_stage_keeps_the_account_and_reports_no_shareable_image(seeded, tmp_path,
                                                                                           caplog):
    from phenosynth.edu.seed import seed_demo

    root, first = seeded
    root = copy_seeded(root, tmp_path / "copy")
    flag_every_image(root / "ws", first.run)
    caplog.set_level("INFO", logger="phenosynth.edu.seed")
    again = seed_demo(root / "ws", root / "dataset", passwords=LIGHT, **TINY)
    skipped = [r.getMessage() for r in caplog.records if "already done, skipped" in r.getMessage()]
    assert len(skipped) == 7  # all but the face pass of new synthetic images, which found none to do
    assert (again.n_synthetic, again.n_shareable, again.shareable_by_condition) == (6, 0, {})
    assert not again.educator_created and again.password is None
    db, users = _users(root / "ws")
    with db:
        assert len(users) == 1 and authenticate(db, LIGHT, "educator@example.org", first.password) is not None


def test_serve_seed_demo_prints_the_url_and_the_generated_password_once(seeded, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from phenosynth.cli import app as cli

    root, first = seeded
    root = copy_seeded(root, tmp_path / "copy", accounts=False)
    ws = root / "ws"
    flag_every_image(ws, first.run)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: started.append(app))
    monkeypatch.delenv("PHENOSYNTH_ADMIN_PASSWORD", raising=False)
    r = CliRunner().invoke(cli, ["serve", "-w", str(ws), "--seed-demo", str(root / "dataset"), "--port", "8765"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "Run phenotype-transfer-seed0: 0 of 6 synthetic images passed the privacy audit and can go into decks." in out
    assert "No shareable image: decks will be empty" in out
    password = out.split("password: ")[1].split()[0]
    assert "http://127.0.0.1:8765/login" in out and started
    app = started[0]
    with app.state.sessions() as db:
        assert authenticate(db, app.state.passwords, "educator@example.org", password) is not None
    again = CliRunner().invoke(cli, ["serve", "-w", str(ws), "--seed-demo", str(root / "dataset")])
    assert again.exit_code == 0 and password not in again.output
    assert "Educator account educator@example.org exists already" in " ".join(again.output.split())
