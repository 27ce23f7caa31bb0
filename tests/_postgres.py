"""A throw-away PostgreSQL server for the teaching app's tests (``phenosynth serve --db-url``).

:func:`postgres_server` yields the base URL of a server: ``PHENOSYNTH_TEST_PG_URL`` when set (a database the tests
may create and drop databases in, e.g. ``postgresql+psycopg://user:pw@127.0.0.1:5432/postgres``), otherwise a new
cluster made with the ``initdb`` and ``pg_ctl`` found on ``PATH`` or under ``/usr/lib/postgresql/*/bin``, listening
only on a unix socket in its own temporary folder (no TCP port, so parallel runs never collide), stopped and deleted
at the end (its time zone is :data:`SERVER_TIMEZONE`, far from UTC, to catch timestamps read back in the
server's zone). PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
(``runuser``). When neither the variable nor the binaries nor the driver (``psycopg``) are there, it raises
:class:`PostgresUnavailable` with the reason, which the fixture turns into a skip.

:func:`fresh_database` makes an empty database on such a server and returns its URL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_URL = "PHENOSYNTH_TEST_PG_URL"
SERVER_TIMEZONE = "Pacific/Chatham"
SYSTEM_USER = "postgres"  # the Debian package's account, used when the tests run as root


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL to test against (the message says what is missing)."""


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else the newest ``/usr/lib/postgresql/<major>/bin``."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else -1)
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise PostgresUnavailable("the PostgreSQL driver is missing: pip install 'psycopg[binary]' "
                                  "(part of phenosynth[edu])") from e


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL (``postgresql+psycopg://...``) of a server's maintenance database ``postgres``; see the module."""
    _require_driver()
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                                  f"/usr/lib/postgresql/*/bin, and {ENV_URL} is not set")
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError as e:
            raise PostgresUnavailable(f"running as root and there is no '{SYSTEM_USER}' user to own the cluster") from e
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root and 'runuser' is missing (PostgreSQL refuses to run as root)")
        owner = SYSTEM_USER
    # a folder of its own under the system temp dir (pytest's tmp_path is private to the test user; the cluster's
    # owner must reach it), short enough for a unix socket path
    root = Path(tempfile.mkdtemp(prefix="phenosynth-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if owner:
        entry = pwd.getpwnam(owner)
        for p in (root, sock):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    try:
        init = subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                         "--encoding=UTF8", "--locale=C", "--no-sync"], owner),
                              capture_output=True, text=True)
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed in {data}: {init.stderr.strip()[-500:]}")
        # a server time zone far from UTC (+12:45/+13:45), so a timestamp read back in the server's zone shows up
        options = (f"-c listen_addresses='' -c unix_socket_directories='{sock}' -c fsync=off -c max_connections=200 "
                   f"-c timezone={SERVER_TIMEZONE}")
        start = subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                          "-w", "-t", "60", "start"], owner), capture_output=True, text=True)
        if start.returncode != 0:
            tail = log.read_text()[-800:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {start.stderr.strip()[-500:]} {tail}")
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={sock}"
        finally:
            subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                                     owner), capture_output=True, text=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _as_admin(server_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on the server at ``server_url``."""
    from sqlalchemy import create_engine, text

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server at ``server_url`` and return its URL (same credentials and host)."""
    from sqlalchemy.engine import make_url

    name = f"phenosynth_test_{uuid.uuid4().hex[:12]}"
    _as_admin(server_url, f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    """Drop the database of ``database_url`` (closing its remaining connections first)."""
    from sqlalchemy.engine import make_url

    _as_admin(server_url, f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)')
