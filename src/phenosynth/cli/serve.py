"""CLI: serve (the teaching web app)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import typer

from phenosynth.cli._app import WORKSPACE_OPTION, command, console, err_console
from phenosynth.errors import PhenosynthError

ADMIN_PASSWORD_ENV = "PHENOSYNTH_ADMIN_PASSWORD"
#: Seconds an idle keep-alive connection stays open (uvicorn's default is 5). A trainee looks at a quiz image for
#: several seconds before answering: with 5 s the server closes the connection right in the middle of that
#: distribution, so many answers need a new connection and some race the close (the request arrives as the server
#: shuts the socket: a reset, no response). 75 s is nginx's default keepalive_timeout.
KEEP_ALIVE_S = 75


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@command("serve")
def serve_command(
    workspace: Path = WORKSPACE_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Server processes (uvicorn workers; SQLite in "
                                "WAL mode takes several). 1 serves a class of 100 answering quizzes; more help "
                                "only when the server is busy (see benchmarks/results/serve_load.md)."),
    db_url: str = typer.Option(None, "--db-url", help="Database URL (default: sqlite:///WS/edu.sqlite), e.g. "
                                                      "postgresql+psycopg://user@host/phenosynth."),
    admin_email: str = typer.Option(None, "--admin-email", help="Make this the first educator account, with the "
                                    f"password from the environment variable {ADMIN_PASSWORD_ENV}."),
    seed_demo_dir: Path = typer.Option(None, "--seed-demo", metavar="DATASET_DIR", help="First fill the workspace "
                                       "with the demo: simulated photos written to DATASET_DIR, ingested, split, "
                                       "synthetic faces generated and audited (stages already done are skipped), "
                                       "and an educator account with a generated password, printed once."),
) -> None:
    """Serve the teaching app: educators build decks of audited synthetic faces; trainees learn from them.

    The database (default WS/edu.sqlite) is created or migrated first. With no educator account yet, the first one
    is made from --admin-email and PHENOSYNTH_ADMIN_PASSWORD, or asked for interactively; a password is never taken
    on the command line.

    With --seed-demo the workspace is made from the demo first (what `make serve` runs).

    Example: [bold]PHENOSYNTH_ADMIN_PASSWORD=... phenosynth serve -w ws --admin-email you@example.org[/]
    """
    from phenosynth._optional import require

    require("fastapi", extra="edu", purpose="phenosynth serve")
    uvicorn = require("uvicorn", extra="edu", purpose="phenosynth serve")
    from phenosynth.data.workspace import Workspace
    from phenosynth.edu.accounts import ensure_first_educator, has_educator
    from phenosynth.edu.app import create_app

    if seed_demo_dir is not None:
        _seed(workspace, seed_demo_dir, admin_email, db_url)
        admin_email = None
    ws = Workspace.open(workspace)
    app = create_app(ws.root, db_url=db_url)
    with app.state.sessions() as db:
        if not has_educator(db):
            if admin_email:
                password = os.environ.get(ADMIN_PASSWORD_ENV)
                if not password:
                    raise PhenosynthError(f"Set {ADMIN_PASSWORD_ENV} to the first educator's password (it is never "
                                          "read from the command line).")
            elif sys.stdin.isatty():
                console.print("No educator account yet: make the first one.")
                admin_email = typer.prompt("Educator email")
                password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
            else:
                raise PhenosynthError(f"No educator account yet: pass --admin-email EMAIL with the password in "
                                      f"{ADMIN_PASSWORD_ENV}.")
            made = ensure_first_educator(db, app.state.passwords, admin_email, password)
            console.print(f"Made the educator account {made.email}.")
        elif admin_email:
            console.print("Educator accounts exist already: --admin-email is not used.")
    if not _is_loopback(host):
        err_console.print(f"[yellow]Warning:[/] serving on {host} over plain HTTP: put it behind a TLS reverse "
                          "proxy before anyone signs in from another machine.")
    console.print(f"Teaching app for {ws.root} at http://{host}:{port}/login  (Ctrl+C stops it)"
                  + (f"; {workers} worker processes" if workers > 1 else ""))
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_S)
        return
    from phenosynth.edu.app import DB_URL_ENV, WORKERS_ENV, WORKSPACE_ENV

    app.state.engine.dispose()  # each worker makes its own (the database is migrated and seeded by now)
    os.environ.update({WORKSPACE_ENV: str(ws.root), WORKERS_ENV: str(workers)}
                      | ({DB_URL_ENV: db_url} if db_url else {}))
    uvicorn.run("phenosynth.edu.app:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level="info", timeout_keep_alive=KEEP_ALIVE_S)


def _seed(workspace: Path, dataset_dir: Path, admin_email: str | None, db_url: str | None) -> None:
    from phenosynth.edu.seed import DEFAULT_EDUCATOR_EMAIL, seed_demo

    console.print(f"Seeding {workspace} with the demo (simulated photos in {dataset_dir}); stages already done are "
                  "skipped.")
    res = seed_demo(workspace, dataset_dir, educator_email=admin_email or DEFAULT_EDUCATOR_EMAIL,
                    password=os.environ.get(ADMIN_PASSWORD_ENV) or None, db_url=db_url)
    per_condition = ", ".join(f"{k}: {v}" for k, v in res.shareable_by_condition.items())
    console.print(f"Run {res.run}: {res.n_shareable} of {res.n_synthetic} synthetic images passed the privacy audit "
                  "and can go into decks" + (f" ({per_condition})." if per_condition else "."))
    if not res.n_shareable:
        console.print("[yellow]No shareable image:[/] decks will be empty until a generator whose faces belong to no "
                      "patient is run and audited (phenosynth generate, phenosynth audit).")
    if res.password:
        console.print(f"Educator account: {res.educator_email}  password: [bold]{res.password}[/]  (shown once, "
                      "stored only as a hash: note it now)")
    elif res.educator_created:
        console.print(f"Educator account: {res.educator_email} (password from {ADMIN_PASSWORD_ENV}).")
    else:
        console.print(f"Educator account {res.educator_email} exists already: sign in with its password.")
