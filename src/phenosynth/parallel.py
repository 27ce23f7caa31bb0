"""How phenosynth runs work on several cores: the one place that decides how many worker processes a stage gets and
how they start. Ingest, the face pass, generation and the study's local executor all go through it.

Worker count (:func:`worker_count`): the number asked for, else every CPU this process may use (at most
:data:`MAX_DEFAULT_WORKERS`); never more than the work can keep busy (``n_items // min_items_per_worker``); at least 1.
One worker means no pool: the work runs in the calling process.

Start method (:func:`start_method`): always ``forkserver`` (``spawn`` where the platform has no fork server, i.e.
Windows). ``fork`` copies a process with every thread but the calling one gone; once torch, OpenBLAS or OpenCV have
started their thread pools (numpy's OpenBLAS does at import) a forked child can deadlock on a lock a vanished thread
held. Whether that has happened depends on what the caller did before (a notebook, the demo, a study), so a rule that
depends on it is a rule nobody can check; Python 3.14 made ``forkserver`` the default on Linux for this reason. The
fork server is a clean single-threaded process started once per parent process, so workers start in a fraction of
``spawn``'s time. Like ``spawn``, it imports the caller's ``__main__``: a script that runs a stage in parallel needs
the usual ``if __name__ == "__main__":`` guard.

torch ``DataLoader`` workers of feature extraction are the one exception (:func:`loader_start_method`: forked, for
the reasons and measurements given there).

Every worker process (:func:`process_pool`) sees the caller's current environment variables, dies with its parent
(Linux: a ``kill -9`` of the command leaves no orphan workers) and runs one thread of BLAS/OpenMP/torch: the processes
are the parallelism.

State a worker needs for every item (a fitted generator, loaded face models) is built once per worker process by
:func:`worker_map`'s ``make_worker`` and held by that process only; the calling process never keeps it after the map.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from phenosynth.errors import PhenosynthError

T = TypeVar("T")
R = TypeVar("R")

#: Default upper bound on the worker processes of one stage (more rarely pays for the memory each one holds).
MAX_DEFAULT_WORKERS = 8


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def worker_count(
    requested: int | None, n_items: int, *, min_items_per_worker: int = 1, cpus: int | None = None
) -> int:
    """How many worker processes a stage with ``n_items`` units of work uses.

    ``requested`` (``--workers``): ``None`` means every available CPU (``cpus``, default :func:`available_cpus`), at
    most :data:`MAX_DEFAULT_WORKERS`. Either way each worker gets at least ``min_items_per_worker`` items (below
    that, starting a process costs more than it saves), so small jobs run in the calling process (1).

    >>> worker_count(None, 100, cpus=2), worker_count(None, 100, cpus=64), worker_count(4, 100, cpus=2)
    (2, 8, 4)
    >>> worker_count(None, 31, min_items_per_worker=16, cpus=2), worker_count(None, 32, min_items_per_worker=16, cpus=2)
    (1, 2)
    """
    if requested is not None and requested < 1:
        raise PhenosynthError(f"--workers must be at least 1 (got {requested}); leave it out to use every core.")
    wanted = requested if requested is not None else min(cpus or available_cpus(), MAX_DEFAULT_WORKERS)
    return max(1, min(wanted, n_items // max(1, min_items_per_worker)))


def start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn`` (see the module docstring for why never ``fork``)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def loader_start_method() -> str:
    """Start method of torch ``DataLoader`` workers (feature extraction): ``fork`` where the platform has it.

    The one exception to :func:`start_method`, and why it is safe there: a DataLoader worker runs only its dataset's
    code (decode a crop, or run dlib on it), torch and OpenBLAS re-create their thread pools in a forked child through
    their at-fork handlers, and torch's DataLoader is built and tested for forked workers. A fork-server worker would
    have to import torch and load the model again for every extraction: measured on 64 crops on 2 cores
    (``benchmarks/features.py``), dlib_resnet128 ran at 7.5 images/s with fork-server workers and 15.1 with forked
    ones (one process: 8.4), mobilenet_v2 at 12.0 and 29.2.
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else start_method()


def limit_threads(n: int = 1) -> None:
    """Run BLAS/OpenMP/torch/OpenCV on ``n`` threads in this process (a worker: the processes fill the cores)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        pass
    if "torch" in sys.modules:  # else OMP_NUM_THREADS holds when it is imported
        sys.modules["torch"].set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - a dependency
        pass


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def _start_worker(environ: dict[str, str], initializer: Callable[..., object] | None, initargs: tuple) -> None:
    """First thing every worker process runs (see :func:`process_pool`)."""
    # A fork server's children inherit the environment of the moment it started; take the caller's current one.
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)
    _die_with_parent()
    limit_threads(1)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def process_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` processes started by :func:`start_method`, each running ``initializer(*initargs)`` once.

    Leaving the block normally waits for the work submitted; leaving it by an exception (or Ctrl-C) cancels the work
    not yet started, so an interrupted stage stops after the items in hand instead of finishing the queue.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method()),
        initializer=_start_worker,
        initargs=(dict(os.environ), initializer, initargs),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _ThisProcessWorker:
    """The worker object of a pool process. Lives in pool processes only (set by their initializer, which never runs
    in the calling process); a failed construction is kept and raised by the first item, so the caller sees it."""

    worker: Callable[[Any], Any] | None = None
    error: BaseException | None = None


def _build_worker(make_worker: Callable[..., Callable[[Any], Any]], args: tuple) -> None:
    try:
        _ThisProcessWorker.worker = make_worker(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised in the caller by the first item
        _ThisProcessWorker.error = exc


def _call_worker(item: Any) -> Any:
    if _ThisProcessWorker.error is not None:
        raise _ThisProcessWorker.error
    assert _ThisProcessWorker.worker is not None
    return _ThisProcessWorker.worker(item)


@contextmanager
def worker_map(
    workers: int, make_worker: Callable[..., Callable[[T], R]], *args: Any
) -> Iterator[Callable[[Iterable[T], int], Iterator[R]]]:
    """``with worker_map(n, make_worker, *args) as run: for r in run(items, chunksize): ...`` gives
    ``worker(item)`` for every item in the order of ``items`` (never in order of completion), where ``worker =
    make_worker(*args)`` is built once per process: in this process when ``workers == 1``, else once in every pool
    process (``make_worker`` and ``args`` must pickle; the worker itself need not)."""
    if workers <= 1:
        worker = make_worker(*args)
        yield lambda items, chunksize=1: map(worker, items)
        return
    with process_pool(workers, _build_worker, (make_worker, args)) as pool:
        yield lambda items, chunksize=1: pool.map(_call_worker, items, chunksize=chunksize)
