"""Ray tasks for generators that hold a model on an accelerator (``generate --executor ray``).

One task per condition (training one condition's model, or sampling one condition's images), each asking Ray for one
GPU when the cluster has GPUs (a user with 8 GPUs trains 8 conditions at once) and for one CPU otherwise (with a
warning: a CPU cluster runs the same tasks, slowly). The workspace must be on a file system every Ray node sees
(tasks write their models and images there). Without ``--executor ray`` everything runs in the calling process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Executors of ``generate``: ``local`` (this process, the default) and ``ray``.
EXECUTORS = ("local", "ray")


def check_executor(executor: str) -> str:
    """``executor`` if it is one of :data:`EXECUTORS`, else a :class:`~phenosynth.errors.PhenosynthError`.

    >>> check_executor("ray")
    'ray'
    """
    from phenosynth.errors import PhenosynthError

    if executor not in EXECUTORS:
        raise PhenosynthError(f"Unknown executor '{executor}'; choose one of {', '.join(EXECUTORS)}.")
    return executor


def task_resources(cluster: dict[str, float]) -> dict[str, float]:
    """What one per-condition task asks of a Ray cluster whose resources are ``cluster``
    (``ray.cluster_resources()``): one GPU where there are GPUs, else one CPU.

    >>> task_resources({"CPU": 16.0, "GPU": 8.0}), task_resources({"CPU": 2.0})
    ({'num_gpus': 1, 'num_cpus': 1}, {'num_gpus': 0, 'num_cpus': 1})
    """
    return {"num_gpus": 1 if cluster.get("GPU", 0) >= 1 else 0, "num_cpus": 1}


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected: to ``address`` (``auto`` or ``ray://host:port``) or an already running Ray, else
    to a local Ray started here (with this machine's GPUs) and shut down on exit."""
    from phenosynth._optional import require

    ray = require("ray", extra="ray", purpose="generate --executor ray")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def remote_tasks(ray: Any, fn: Callable[..., R], items: Sequence[T], *shared: Any) -> Iterator[tuple[T, R]]:
    """``(item, fn(item, *shared))`` for every item, each call a Ray task with :func:`task_resources`, in order of
    completion. ``shared`` is put in the object store once. A task's exception is raised here (the other tasks'
    finished results have been yielded before it)."""
    resources = task_resources(ray.cluster_resources())
    if not resources["num_gpus"]:
        log.warning("The Ray cluster has no GPU: each of the %d task(s) runs on one CPU, which takes hours for a "
                    "diffusion model", len(items))
    remote = ray.remote(**resources)(_call)
    shared_refs = [ray.put(s) for s in shared]
    pending = {remote.remote(fn, item, *shared_refs): item for item in items}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)


def _call(fn: Callable[..., R], item: Any, *shared: Any) -> R:
    return fn(item, *shared)
