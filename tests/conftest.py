"""Shared fixtures: tests make their own data."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def pool_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker counts of the process pools started through ``phenosynth.parallel.process_pool`` (the one helper
    every stage must use), in order."""
    from phenosynth import parallel

    starts: list[int] = []
    real = parallel.process_pool

    def spy(workers: int, *args, **kwargs):
        starts.append(workers)
        return real(workers, *args, **kwargs)

    monkeypatch.setattr(parallel, "process_pool", spy)
    return starts
