"""One small registry type shared by detectors, landmarkers, representations, backbones, trainers, generators,
selection strategies and executors: a dict from name to constructor, filled by a decorator."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from phenosynth.errors import PhenosynthError

T = TypeVar("T")


class UnknownNameError(PhenosynthError, ValueError):
    """A name that is not in a registry; the message lists close matches and every valid name."""


class Registry(Generic[T]):
    """Name -> constructor.

    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def make_red(shade: int = 1) -> str:
    ...     return f"red{shade}"
    >>> colours.create("red", shade=None)   # None kwargs are dropped, so defaults win
    'red1'
    >>> colours.names()
    ['red']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    @contextmanager
    def registered(self, name: str, factory: Callable[..., T]) -> Iterator[Callable[..., T]]:
        """Register ``factory`` as ``name`` for the ``with`` block only (a plug-in for one job, a test's tiny model).

        >>> colours = Registry("colour")
        >>> with colours.registered("blue", lambda: "blue"):
        ...     colours.create("blue")
        'blue'
        >>> "blue" in colours
        False
        """
        self.register(name)(factory)
        try:
            yield factory
        finally:
            del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.kind} '{name}'.{hint} Valid: {', '.join(self.names())}."
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build ``name``; keyword arguments that are ``None`` are dropped so the entry's own defaults apply."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})
