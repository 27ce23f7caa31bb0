"""The one process-pool policy (phenosynth.parallel): worker counts, start method, worker state, cancellation."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from phenosynth import parallel
from phenosynth.errors import PhenosynthError
from phenosynth.parallel import start_method, worker_count, worker_map


@pytest.mark.parametrize(
    ("requested", "n_items", "per_worker", "cpus", "expected"),
    [
        (None, 100, 1, 2, 2),  # every core of a 2-core machine
        (None, 100, 1, 1, 1),
        (None, 100, 1, 64, 8),  # at most MAX_DEFAULT_WORKERS by default...
        (12, 100, 1, 2, 12),  # ...but as many as asked for
        (None, 3, 1, 16, 3),  # never more than the items
        (None, 31, 16, 2, 1),  # ingest: fewer than 32 files decode in the calling process
        (None, 32, 16, 2, 2),
        (4, 32, 16, 8, 2),  # 16 files per worker at least, even when more are asked for
        (None, 3, 2, 2, 1),  # the dlib face pass: 2 images per worker
        (None, 5, 2, 2, 2),
        (None, 0, 1, 2, 1),  # no work: no pool
    ],
)
def test_worker_count(requested, n_items, per_worker, cpus, expected) -> None:
    assert worker_count(requested, n_items, min_items_per_worker=per_worker, cpus=cpus) == expected


def test_worker_count_refuses_fewer_than_one_worker() -> None:
    with pytest.raises(PhenosynthError, match=r"--workers must be at least 1 \(got 0\)"):
        worker_count(0, 10)


def test_default_worker_count_follows_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert parallel.available_cpus() == 3
    assert worker_count(None, 100) == 3


def test_start_method_is_forkserver_where_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        assert start_method() == "forkserver"
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert start_method() == "spawn"  # Windows: never fork


class _Tagger:
    """A worker with per-process state: its construction counts, and it reports its process and identity."""

    def __init__(self, delay: float) -> None:
        self.delay, self.built_at = delay, time.monotonic_ns()

    def __call__(self, i: int) -> tuple[int, int, int, str, str]:
        time.sleep(self.delay * (i % 3 == 0))  # every third item finishes late
        return i * i, os.getpid(), self.built_at, os.environ.get("PHENOSYNTH_TEST_MARK", ""), os.environ.get("OMP_NUM_THREADS", "")


def test_worker_map_keeps_the_order_of_the_items_and_builds_one_worker_per_process(
    monkeypatch: pytest.MonkeyPatch, pool_starts: list[int]
) -> None:
    with parallel.process_pool(1) as pool:  # the fork server runs from here on
        assert pool.submit(int, "7").result() == 7
    monkeypatch.setenv("PHENOSYNTH_TEST_MARK", "set after the fork server started")
    with worker_map(2, _Tagger, 0.05) as run:
        out = list(run(range(24), 1))
    assert [r[0] for r in out] == [i * i for i in range(24)]  # item order, not completion order
    assert pool_starts == [1, 2]
    pids = {r[1] for r in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {pid: {r[2] for r in out if r[1] == pid} for pid in pids} == {pid: {next(r[2] for r in out if r[1] == pid)}
                                                                        for pid in pids}  # one worker per process
    assert {r[3] for r in out} == {"set after the fork server started"}  # the caller's environment
    assert {r[4] for r in out} == {"1"}  # one thread per worker
    assert parallel._ThisProcessWorker.worker is None  # the calling process holds no worker afterwards


def test_one_worker_runs_in_this_process_without_a_pool(pool_starts: list[int]) -> None:
    with worker_map(1, _Tagger, 0.0) as run:
        out = list(run(range(3), 1))
    assert [r[0] for r in out] == [0, 1, 4] and {r[1] for r in out} == {os.getpid()}
    assert pool_starts == []


class _Broken:
    def __init__(self) -> None:
        raise PhenosynthError("the worker's models are missing: install them with X")


def test_a_worker_that_cannot_be_built_raises_its_error_in_the_caller() -> None:
    with pytest.raises(PhenosynthError, match="the worker's models are missing: install them with X"):
        with worker_map(2, _Broken) as run:
            list(run(range(4), 1))


def test_an_error_in_the_caller_cancels_the_work_not_yet_started() -> None:
    futures = []
    with pytest.raises(KeyboardInterrupt):
        with parallel.process_pool(2) as pool:
            futures.extend(pool.submit(time.sleep, 0.2) for _ in range(30))
            raise KeyboardInterrupt
    assert all(f.done() for f in futures)
    assert sum(f.cancelled() for f in futures) >= 20  # at most the workers' queue (a few items) still ran


def test_no_stage_starts_processes_but_through_the_one_helper() -> None:
    src = Path(parallel.__file__).parent
    pattern = re.compile(r"ProcessPoolExecutor\(|get_context\(|\.Pool\(|multiprocessing\.Process\(|os\.fork\(")
    offenders = [str(p.relative_to(src)) for p in sorted(src.rglob("*.py"))
                 if p.name != "parallel.py" and pattern.search(p.read_text())]
    assert offenders == []
