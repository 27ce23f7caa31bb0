"""Progress reporting without printing: library functions take an optional ``on_progress(done, total)`` callback
and the CLI turns it into a rich progress bar."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]


def report(on_progress: ProgressCallback | None, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(done, total)
