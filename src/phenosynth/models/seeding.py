"""Seeded torch randomness that leaves the caller's random state alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block; the caller's RNG state is restored when it ends."""
    import torch  # lazy: torch costs seconds of every CLI start-up

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
