"""Benchmark: the teaching app under load, on loopback only (127.0.0.1), bounded in time and in requests.

Set-up (in a fresh temporary folder, removed afterwards unless ``--keep``): a workspace whose generator run ``bench``
holds ``--conditions`` x ``--per-condition`` synthetic faces (random 96 x 96 PNGs) that an audit file passes, one
deck of all of them, and ``--users`` accounts with real Argon2id hashes (pwdlib's recommended settings, as
``phenosynth serve`` uses). The server is ``phenosynth serve -w WS --port P`` in its own process (SQLite in the
workspace, uvicorn, one worker, access log on as in production); the simulated users are ``httpx.AsyncClient``\\ s
in this process, each with its own session cookie.

Every simulated user first signs in (GET /login for the CSRF token, POST /login; all at once, measured apart), then
repeats its scenario's round until the time or the request budget is up. Scenarios (``--scenario``), one async
function each, in ``SCENARIOS``:

- ``decks`` (educators): the deck list, the deck page, and every image of the deck.
- ``quiz`` (trainees in one cohort, ``--quizzes`` quizzes of every deck image assigned to it): the next question
  page, its image, an answer (random condition and confidence) and the feedback page; a finished quiz's results,
  then the next quiz. Afterwards the answer rows in the database are counted against the answers the server
  accepted: a lost (or doubled) answer is an error.

How fast the simulated users act (``--think``, :data:`THINK_MODELS`):

- ``trainee`` (the default): a person taking a quiz. The question page and its image are fetched together (as a
  browser does), then the trainee looks at the face and answers; the time from the image on screen to the answer
  is drawn per answer from a log-normal distribution with a median of 6 s (spread ``sigma`` 0.5: 90 % of answers
  between 2.6 and 13.7 s). Six seconds is one look at a face, a choice among four conditions and a confidence
  click: Waikel et al. (JAMA Netw Open 2024) had residents classify 20 images, each with a confidence rating, in
  one sitting, and Kellman's perceptual-learning trials are of the same few-second kind; neither reports a
  per-image time we could copy, so the median is our stated assumption, not a measured one. The feedback page is
  read for a log-normal 3 s (sigma 0.5), a quiz's results page for 5 s. Every trainee draws from its own
  ``numpy`` generator seeded with ``(--seed, user number)``: a rerun makes the same pauses. At 4 requests per
  about 9-10 s, 100 trainees send roughly 40-45 requests/s. All start at the same moment (a class told "go"),
  the harsher case; the pauses spread them out within a few questions. The answer's ``response_ms`` is the drawn
  pause.
- ``none``: no pause at all (each user sends its next request as soon as the last is answered): a saturation test
  of the server's throughput, not a model of people.

The model was fixed (and committed) before the first measurement with it; the numbers are not tuned to a target.

Printed: per request kind, count, errors, p50 / p95 / p99 latency (ms), and overall requests/s; for the quiz, what
a trainee waits from pressing "start" to the first face on screen (the start, the question page and its image, one
after another). An error is a response with an unexpected status or a failed request (timeouts included).

Usage::

    .venv/bin/python benchmarks/serve_load.py [--users 100] [--seconds 60] [--scenario quiz] [--think trainee|none]
        [--max-requests N] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

HOST = "127.0.0.1"
PASSWORD = "load-test-password"


@dataclass(frozen=True)
class ThinkModel:
    """How long a simulated user pauses (seconds) before answering a question, after reading its feedback and after a
    quiz's results: log-normal with the given median and ``sigma`` (of the log), or a fixed time where ``sigma`` is
    0; all zero: no pause (a saturation test)."""

    answer_median_s: float = 0.0
    feedback_median_s: float = 0.0
    results_s: float = 0.0
    sigma: float = 0.0

    def draw(self, rng: np.random.Generator, median_s: float) -> float:
        if median_s <= 0:
            return 0.0
        return float(median_s * np.exp(self.sigma * rng.standard_normal())) if self.sigma > 0 else median_s


#: ``--think``: see the module docstring for where the trainee's numbers come from.
THINK_MODELS: dict[str, ThinkModel] = {
    "trainee": ThinkModel(answer_median_s=6.0, feedback_median_s=3.0, results_s=5.0, sigma=0.5),
    "none": ThinkModel(),
}


@dataclass
class Site:
    """The server under test and what the scenarios need from the set-up."""

    base: str
    deck_id: int
    image_urls: list[str]
    emails: list[str]
    quiz_ids: list[int] = field(default_factory=list)
    think: ThinkModel = ThinkModel()
    seed: int = 0


@dataclass
class Recorder:
    """Latencies (seconds) and errors per request kind; ``budget`` requests at most, then every user stops."""

    deadline: float
    budget: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sent_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # monotonic, per latency
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: what a user waits for across several requests (seconds), e.g. from pressing "start" to the first face shown
    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sent: int = 0
    accepted: int = 0  # answers the server accepted (quiz scenario)

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.sent < self.budget

    async def pause(self, seconds: float) -> None:
        """Think for ``seconds`` (never past the end of the run)."""
        left = self.deadline - time.monotonic()
        if seconds > 0 and left > 0:
            await asyncio.sleep(min(seconds, left))

    async def request(self, client: httpx.AsyncClient, kind: str, method: str, url: str,
                      expect: int | tuple[int, ...] = 200, **kw) -> httpx.Response | None:
        self.sent += 1
        t, at = time.perf_counter(), time.monotonic()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.errors[kind].append(f"{type(exc).__name__}: {exc}")
            return None
        self.latencies[kind].append(time.perf_counter() - t)
        self.sent_at[kind].append(at)
        if r.status_code not in (expect if isinstance(expect, tuple) else (expect,)):
            self.errors[kind].append(f"{method} {url}: {r.status_code}")
        return r


async def sign_in(client: httpx.AsyncClient, rec: Recorder, email: str, state: dict) -> bool:
    """GET /login for the CSRF token, POST /login; whether it signed in. The session's new CSRF token goes into
    ``state["csrf"]`` (read from the page signing in redirects to)."""
    page = await rec.request(client, "GET /login", "GET", "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text) if page is not None else None
    if token is None:
        return False
    r = await rec.request(client, "POST /login", "POST", "/login", expect=303,
                          data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)})
    if r is None or r.status_code != 303:
        return False
    home = await rec.request(client, "GET /", "GET", "/", follow_redirects=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', home.text) if home is not None else None
    state["csrf"] = token.group(1) if token else ""
    return True


async def view_decks(client: httpx.AsyncClient, rec: Recorder, site: Site, state: dict) -> None:
    """One round: the deck list, the deck page and every image of the deck."""
    await rec.request(client, "GET /decks", "GET", "/decks")
    await rec.request(client, "GET /decks/{id}", "GET", f"/decks/{site.deck_id}")
    for url in site.image_urls:
        if not rec.more():
            break
        await rec.request(client, "GET deck image", "GET", url)


async def answer_quizzes(client: httpx.AsyncClient, rec: Recorder, site: Site, state: dict) -> None:
    """One round: a trainee's next question (page and image), a pause to look at the face (``site.think``), an
    answer (a random condition among those offered, a random confidence) and its feedback page, read for a pause;
    when a quiz is done, its results (a pause) and the next quiz assigned to the cohort."""
    rng = state.setdefault("rng", np.random.default_rng([site.seed, state["user"]]))  # the same run every time
    if "attempt" not in state:
        quizzes = state.setdefault("quizzes", list(site.quiz_ids))
        if not quizzes:
            await asyncio.sleep(0.1)  # this trainee has answered every quiz
            return
        state["pressed_start"] = time.perf_counter()
        r = await rec.request(client, "POST /quizzes/{id}/start", "POST", f"/quizzes/{quizzes.pop(0)}/start",
                              expect=303, data={"csrf_token": state["csrf"]})
        if r is None or r.status_code != 303:
            return
        state["attempt"] = r.headers["location"]  # /attempts/N
    page = await rec.request(client, "GET question", "GET", state["attempt"], expect=(200, 303))
    if page is None:
        state.pop("pressed_start", None)  # no first face to time for this start
        return
    if page.status_code == 303:  # every image answered: the results
        state.pop("pressed_start", None)
        await rec.request(client, "GET results", "GET", page.headers["location"])
        del state["attempt"]
        await rec.pause(site.think.results_s)
        return
    item = re.search(r'name="item" value="(\d+)"', page.text)
    choices = re.findall(r'name="chosen" value="([^"]+)"', page.text)
    if item is None or not choices:
        rec.errors["GET question"].append("no question on the page")
        state.pop("pressed_start", None)
        return
    image = await rec.request(client, "GET quiz image", "GET", f"{state['attempt']}/images/{item.group(1)}")
    pressed = state.pop("pressed_start", None)
    if pressed is not None and image is not None and image.status_code == 200:
        rec.waits[FIRST_FACE].append(time.perf_counter() - pressed)
    looked = site.think.draw(rng, site.think.answer_median_s)
    await rec.pause(looked)
    if not rec.more():  # the run ended while this trainee was looking: the answer is not sent
        return
    r = await rec.request(client, "POST answer", "POST", f"{state['attempt']}/answers", expect=303, data={
        "item": item.group(1), "chosen": str(rng.choice(choices)), "confidence": str(rng.integers(1, 6)),
        "response_ms": str(int(1000 * looked) if looked else rng.integers(800, 4000)), "csrf_token": state["csrf"]})
    if r is not None and r.status_code == 303:
        rec.accepted += 1
        await rec.request(client, "GET feedback", "GET", r.headers["location"])
        await rec.pause(site.think.draw(rng, site.think.feedback_median_s))


#: a trainee's wait from pressing "start" to the quiz's first face on screen (start, question page, image)
FIRST_FACE = "start to first face"


def count_answers(ws_root: Path, rec: Recorder) -> str:
    """The answer rows in the database against the answers the server accepted: none may be lost (or doubled)."""
    from sqlalchemy import func, select

    from phenosynth.edu import db as edu_db

    engine = edu_db.make_engine(edu_db.default_url(ws_root))
    with edu_db.session_factory(engine)() as db:
        rows = db.scalar(select(func.count()).select_from(edu_db.Answer))
    engine.dispose()
    if rows != rec.accepted:
        rec.errors["answer rows"].append(f"{rows} answer rows for {rec.accepted} accepted answers")
    return f"{rows} answer rows stored for {rec.accepted} answers accepted"


@dataclass(frozen=True)
class Scenario:
    """``role``: of the simulated users; ``start``: once per user before the clock starts (signing in, measured
    apart); ``round``: repeated by every user until the time or the request budget is up; ``check``: after the run,
    a line on what the server kept (e.g. answer rows counted against answers sent)."""

    role: str
    round: Callable[[httpx.AsyncClient, Recorder, Site, dict], Awaitable[None]]
    start: Callable[[httpx.AsyncClient, Recorder, str, dict], Awaitable[bool]] = sign_in
    check: Callable[[Path, Recorder], str] | None = None


SCENARIOS: dict[str, Scenario] = {"decks": Scenario("educator", view_decks),
                                  "quiz": Scenario("trainee", answer_quizzes, check=count_answers)}


# --- set-up -----------------------------------------------------------------------------------------------------------


def build_workspace(root: Path, conditions: int, per_condition: int, seed: int = 0):
    """A workspace with one real photo per condition and an audited run 'bench' whose images all pass."""
    from PIL import Image

    from phenosynth.audit.inputs import manifest_inputs
    from phenosynth.audit.privacy import AUDIT_COLUMNS
    from phenosynth.data.workspace import Workspace

    ws = Workspace.open(root / "ws", create=True)
    rng = np.random.default_rng(seed)
    rows, audit_rows = [], []
    for c in range(conditions):
        label = f"cond{c:02d}"
        kinds = [("real", root / "photos" / f"{label}.png")] + [
            ("synthetic", ws.synthetic_dir / "bench" / f"{label}_{i:03d}.png") for i in range(per_condition)]
        for source, path in kinds:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
            image_id = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append({"image_id": image_id, "path": ws.relpath(path), "label": label, "source": source,
                         "subject_id": f"p{c}" if source == "real" else None, "split": "train",
                         "generator": "bench" if source == "synthetic" else None,
                         "params": json.dumps({"run": "bench"}) if source == "synthetic" else None})
            if source == "synthetic":
                audit_rows.append({col: None for col in AUDIT_COLUMNS} | {
                    "image_id": image_id, "label": label, "run": "bench", "generator": "bench", "parents": [],
                    "has_face": True, "nearest_real_distance": 0.9, "ssim": 0.2, "phash_bits": 30, "flags": [],
                    "shareable": True, "identity_match": False})
    ws.save_manifest(pd.DataFrame(rows))
    (ws.root / "audit" / "bench").mkdir(parents=True)
    pd.DataFrame(audit_rows).to_parquet(ws.root / "audit" / "bench" / "audit.parquet", index=False)
    inputs = manifest_inputs(ws.load_manifest(), "bench")  # what the audit saw: the gate checks it is not stale
    (ws.root / "audit" / "bench" / "summary.json").write_text(json.dumps({"run": {}, "settings": {},
                                                                          "inputs": inputs}))
    return ws


def build_accounts_and_deck(ws, n_users: int, role: str, n_quizzes: int = 0
                            ) -> tuple[int, list[int], list[str], list[int]]:
    """``n_users`` accounts of ``role`` (and one educator owning the deck); the deck of every image of run 'bench';
    for trainees, a cohort of them all and ``n_quizzes`` quizzes of every deck image (feedback after each answer)
    assigned to it. (deck id, deck image ids, emails, quiz ids)."""
    from sqlalchemy import select

    from phenosynth.edu import db as edu_db
    from phenosynth.edu import decks as D
    from phenosynth.edu import quizzes as Q
    from phenosynth.edu.accounts import create_user
    from phenosynth.edu.cohorts import add_member, create_cohort
    from phenosynth.edu.security import Passwords

    engine = edu_db.make_engine(edu_db.default_url(ws.root))
    edu_db.migrate(engine)
    passwords = Passwords()
    one_hash = passwords.hash(PASSWORD)  # one Argon2id hash for all: the same verify cost, a fraction of the set-up
    emails = [f"user{i:04d}@example.org" for i in range(n_users)]
    with edu_db.session_factory(engine)() as db:
        owner = create_user(db, passwords, "owner@example.org", PASSWORD, "educator")
        db.add_all([edu_db.User(email=e, password_hash=one_hash, role=role, display_name="") for e in emails])
        db.commit()
        images = D.WorkspaceImages(ws)
        table = images.table()
        deck = D.create_deck(db, owner, "Load test", "", sorted(set(table["condition"].dropna())))
        D.add_images(db, deck, images, table.index[table["run"] == "bench"].tolist())
        pks = db.scalars(select(edu_db.DeckImage.id).where(edu_db.DeckImage.deck_id == deck.id)).all()
        deck_id, quiz_ids = deck.id, []
        if role == "trainee" and n_quizzes:
            cohort = create_cohort(db, owner, "Load test")
            for user in db.scalars(select(edu_db.User).where(edu_db.User.email.in_(emails))):
                add_member(db, cohort.id, user)
            db.commit()
            quiz_ids = [Q.create_quiz(db, owner, deck, cohort, f"Quiz {k + 1}", Q.QuizSettings(n=len(pks), seed=k)).id
                        for k in range(n_quizzes)]
    engine.dispose()
    return deck_id, list(pks), emails, quiz_ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(ws_root: Path, port: int, workers: int = 1) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("phenosynth")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from phenosynth.cli import main; main()"]
    # the server's log goes to a file: a pipe nobody reads fills up under load and stalls the server on its next line
    log = (ws_root.parent / "server.log").open("wb")
    many = ["--workers", str(workers)] if workers != 1 else []  # (an older phenosynth has no --workers)
    proc = subprocess.Popen(cmd + ["serve", "-w", str(ws_root), "--host", HOST, "--port", str(port)] + many,
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {(ws_root.parent / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/login", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer within 60 s")


# --- run and report ---------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process ``pid`` and its live descendants (uvicorn's worker processes; Linux
    ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = {int(c) for task in Path(f"/proc/{pid}/task").glob("*")
                for c in (task / "children").read_text().split()} if Path(f"/proc/{pid}/task").exists() else set()
    return own + sum(cpu_seconds(c) for c in children)


async def run_users(site: Site, scenario: Scenario, seconds: float, budget: int, server_pid: int
                    ) -> tuple[Recorder, float, Recorder, float, float]:
    """Every user signs in at once (``start``, timed apart), then runs ``round`` until ``seconds`` or ``budget`` are
    spent: (sign-in recorder, its seconds, run recorder, its seconds, the server's CPU seconds in the run)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)  # one connection per user, like a browser tab
    clients = [httpx.AsyncClient(base_url=site.base, timeout=60, limits=limits) for _ in site.emails]
    try:
        started = Recorder(deadline=time.monotonic() + 600, budget=budget)
        t0 = time.perf_counter()
        states = [{"user": i} for i in range(len(clients))]
        ok = await asyncio.gather(*(scenario.start(c, started, e, st) for c, e, st in zip(clients, site.emails,
                                                                                          states)))
        start_s = time.perf_counter() - t0
        rec = Recorder(deadline=time.monotonic() + seconds, budget=budget)

        async def user(client: httpx.AsyncClient, state: dict) -> None:
            while rec.more():
                await scenario.round(client, rec, site, state)

        t1, cpu = time.perf_counter(), cpu_seconds(server_pid)
        await asyncio.gather(*(user(c, st) for c, st, signed_in in zip(clients, states, ok) if signed_in))
        return started, start_s, rec, time.perf_counter() - t1, cpu_seconds(server_pid) - cpu
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def summary(rec: Recorder, elapsed: float, settle_s: float = 10.0) -> pd.DataFrame:
    """Per request kind and for all: count, errors, p50 / p95 / p99 latency (ms), requests/s, and the p95 of the
    requests sent after the first ``settle_s`` seconds (``p95_settled_ms``: without the opening burst of a class that
    starts at the same moment)."""
    t0 = min((min(v) for v in rec.sent_at.values() if v), default=0.0)

    def row(name: str, lat: list[float], at: list[float], errors: int) -> dict:
        ms = np.asarray(lat, dtype=float) * 1000
        later = ms[np.asarray(at, dtype=float) >= t0 + settle_s] if len(ms) else ms
        q = np.percentile(ms, [50, 95, 99]) if len(ms) else [np.nan] * 3
        return {"request": name, "n": len(ms), "errors": errors, "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
                "p95_settled_ms": np.percentile(later, 95) if len(later) else np.nan}

    rows = [row(kind, rec.latencies.get(kind, []), rec.sent_at.get(kind, []), len(rec.errors.get(kind, [])))
            for kind in sorted(set(rec.latencies) | set(rec.errors))]
    rows.append(row("all", [x for v in rec.latencies.values() for x in v], [x for v in rec.sent_at.values() for x in v],
                    sum(len(v) for v in rec.errors.values())))
    table = pd.DataFrame(rows)
    table["per_s"] = table["n"] / elapsed
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=500_000, help="stop every user after this many requests")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="decks")
    p.add_argument("--think", choices=sorted(THINK_MODELS), default="trainee",
                   help="pauses of the simulated users (quiz scenario): 'trainee' (a person taking a quiz, the "
                        "default) or 'none' (a saturation test)")
    p.add_argument("--seed", type=int, default=0, help="seeds every user's answers and pauses")
    p.add_argument("--workers", type=int, default=1, help="server processes (phenosynth serve --workers)")
    p.add_argument("--conditions", type=int, default=4)
    p.add_argument("--per-condition", type=int, default=5)
    p.add_argument("--quizzes", type=int, default=20, help="quizzes assigned to the trainees (scenario quiz)")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    p.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = p.parse_args(argv)
    if not (1 <= args.users <= 1000 and 0 < args.seconds <= 600):
        p.error("--users 1..1000 and --seconds up to 600 (a bounded load test)")
    scenario = SCENARIOS[args.scenario]

    tmp = Path(tempfile.mkdtemp(prefix="phenosynth-load-"))
    proc = None
    try:
        t = time.perf_counter()
        ws = build_workspace(tmp, args.conditions, args.per_condition)
        deck_id, pks, emails, quiz_ids = build_accounts_and_deck(ws, args.users, scenario.role, args.quizzes)
        port = free_port()
        proc = start_server(ws.root, port, args.workers)
        site = Site(f"http://{HOST}:{port}", deck_id, [f"/decks/{deck_id}/images/{pk}" for pk in pks], emails,
                    quiz_ids, think=THINK_MODELS[args.think], seed=args.seed)
        print(f"set-up {time.perf_counter() - t:.1f} s: {len(pks)} deck images, {args.users} {scenario.role} accounts, "
              f"server pid {proc.pid} ({args.workers} worker(s)) at {site.base}; scenario '{args.scenario}', "
              f"think '{args.think}', for {args.seconds:g} s")
        started, start_s, rec, elapsed, cpu = asyncio.run(run_users(site, scenario, args.seconds, args.max_requests,
                                                                    proc.pid))
        kept = scenario.check(ws.root, rec) if scenario.check else None
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # uvicorn still draining connections: the numbers are taken already
                print(f"server pid {proc.pid} did not stop within 15 s of SIGTERM; killed")
                proc.kill()
                proc.wait(timeout=15)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    tables = {"sign-in": summary(started, start_s), args.scenario: summary(rec, elapsed)}
    for (phase, table), secs in zip(tables.items(), (start_s, elapsed)):
        print(f"\n{phase} ({secs:.1f} s)")
        with pd.option_context("display.width", 120, "display.float_format", "{:.1f}".format):
            print(table.to_string(index=False))
    total = tables[args.scenario].iloc[-1]
    errors = int(total["errors"]) + int(tables["sign-in"].iloc[-1]["errors"])
    print(f"\n{args.users} users, {args.scenario} (think {args.think}) for {elapsed:.1f} s: {int(total['n'])} "
          f"requests, {total['per_s']:.1f} requests/s, p50 {total['p50_ms']:.0f} ms, p95 {total['p95_ms']:.0f} ms, "
          f"p99 {total['p99_ms']:.0f} ms (p95 after the first 10 s {total['p95_settled_ms']:.0f} ms); {errors} errors"
          + (f"; {kept}" if kept else ""))
    for what, waits in rec.waits.items():
        ms = np.asarray(waits) * 1000
        print(f"{what}: p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms "
              f"over {len(ms)} quiz starts")
    print(f"server CPU {cpu:.1f} s in {elapsed:.1f} s ({cpu / elapsed:.0%} of one core): "
          f"{1000 * cpu / max(1, total['n']):.1f} ms of CPU per request; machine load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for r in (started, rec):
        for kind, errs in r.errors.items():
            print(f"  {kind}: {len(errs)} error(s), e.g. {errs[0]}")
    if args.json:
        args.json.write_text(json.dumps({k: v.to_dict(orient="records") for k, v in tables.items()}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
