"""Profile the trainee's quiz routes in process: CPU time and SQL statements per request kind, and a cProfile.

One trainee (of a workspace set up as ``serve_load.py`` does: ``--conditions`` x ``--per-condition`` audited faces,
one deck, quizzes of every image) starts quizzes and answers every question (question page, image, answer,
feedback; results at the end of each quiz), through ``httpx.ASGITransport`` in one event loop. Every call FastAPI
and Starlette would hand to the thread pool runs inline instead, so cProfile (one thread) sees all of the app's
work; the CPU times include the test client and the profiler's overhead: compare them between commits, do not quote
them as the server's cost (``serve_load.py`` measures that from ``/proc``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/serve_profile.py [--quizzes 8] [--top 40]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import serve_load as B  # noqa: E402  (the same set-up as the load test)

KINDS = ("start", "question", "image", "answer", "feedback", "results")


async def _inline(func, *args, abandon_on_cancel=False, cancellable=None, limiter=None):
    return func(*args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quizzes", type=int, default=8, help="quizzes answered while profiling (after 2 to warm up)")
    p.add_argument("--conditions", type=int, default=4)
    p.add_argument("--per-condition", type=int, default=5)
    p.add_argument("--top", type=int, default=40, help="cProfile lines to print (cumulative time)")
    args = p.parse_args(argv)

    import anyio.to_thread
    import httpx
    from sqlalchemy import event

    anyio.to_thread.run_sync = _inline  # this process only: one thread for cProfile
    from phenosynth.edu.app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="phenosynth-profile-"))
    try:
        ws = B.build_workspace(tmp, args.conditions, args.per_condition)
        _, _, emails, quiz_ids = B.build_accounts_and_deck(ws, 1, "trainee", args.quizzes + 2)
        app = create_app(ws.root)
        statements = [0]
        event.listen(app.state.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1))
        cpu, count, sql = defaultdict(float), defaultdict(int), defaultdict(int)

        async def run() -> cProfile.Profile:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://profile") as c:
                token = re.search(r'name="csrf_token" value="([^"]+)"', (await c.get("/login")).text).group(1)
                await c.post("/login", data={"email": emails[0], "password": B.PASSWORD, "csrf_token": token})
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', (await c.get("/")).text).group(1)

                async def timed(kind: str, request) -> httpx.Response:
                    n, t = statements[0], time.process_time()
                    r = await request
                    cpu[kind] += time.process_time() - t
                    count[kind] += 1
                    sql[kind] += statements[0] - n
                    return r

                async def answer_quizzes(ids: list[int]) -> None:
                    for q in ids:
                        attempt = (await timed("start", c.post(f"/quizzes/{q}/start", data={"csrf_token": csrf}))
                                   ).headers["location"]
                        while True:
                            page = await timed("question", c.get(attempt))
                            if page.status_code == 303:
                                await timed("results", c.get(page.headers["location"]))
                                break
                            item = re.search(r'name="item" value="(\d+)"', page.text).group(1)
                            chosen = re.findall(r'name="chosen" value="([^"]+)"', page.text)[0]
                            await timed("image", c.get(f"{attempt}/images/{item}"))
                            r = await timed("answer", c.post(f"{attempt}/answers", data={
                                "item": item, "chosen": chosen, "confidence": "3", "response_ms": "3000",
                                "csrf_token": csrf}))
                            if r.status_code != 303:
                                raise SystemExit(f"answer refused: {r.status_code} {r.text[:200]}")
                            await timed("feedback", c.get(r.headers["location"]))

                await answer_quizzes(quiz_ids[:2])  # warm-up: imports, template compilation, statement caches
                cpu.clear(), count.clear(), sql.clear()
                prof = cProfile.Profile()
                prof.enable()
                await answer_quizzes(quiz_ids[2:])
                prof.disable()
                return prof

        prof = asyncio.run(run())
        app.state.engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'request':10s} {'n':>5s} {'CPU ms each':>12s} {'SQL each':>9s}")
    for kind in KINDS:
        if count[kind]:
            print(f"{kind:10s} {count[kind]:5d} {1000 * cpu[kind] / count[kind]:12.2f} {sql[kind] / count[kind]:9.1f}")
    print(f"all        {sum(count.values()):5d} requests, {sum(cpu.values()):.2f} s CPU (profiled, client included)")
    stats = pstats.Stats(prof)
    commits = [(v[1], v[3]) for (f, _, name), v in stats.stats.items() if "commit' of 'sqlite3" in name]
    if commits:
        print(f"SQLite commits: {commits[0][0]}, {commits[0][1]:.3f} s wall in all")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
