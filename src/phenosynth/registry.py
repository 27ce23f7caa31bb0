"""One small registry type shared by detectors, landmarkers, representations, backbones, trainers, generators,
selection strategies and executors: a dict from name to constructor, filled by a decorator."""

from __future__ import annotations

import difflib
import functools
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

    A family registered under a prefix builds every name that starts with it (``timm:<name>``); its factory gets
    the rest of the name:

    >>> @colours.register_family("rgb:")
    ... def make_rgb(rest: str) -> str:
    ...     return f"#{rest}"
    >>> colours.create("rgb:ff0000"), colours.names(with_families=True)
    ('#ff0000', ['red', 'rgb:<name>'])
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._families: dict[str, Callable[..., T]] = {}

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

    def register_family(self, prefix: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory(rest_of_name, **kwargs)`` for every name ``<prefix><rest>``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if prefix in self._families:
                raise ValueError(f"{self.kind} family '{prefix}' is already registered")
            self._families[prefix] = factory
            return factory

        return decorator

    def names(self, *, with_families: bool = False) -> list[str]:
        """Registered names; ``with_families`` adds one ``<prefix><name>`` line per family."""
        return sorted(self._entries) + ([f"{p}<name>" for p in sorted(self._families)] if with_families else [])

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and self._family(name) is not None)

    def _family(self, name: str) -> str | None:
        return next((p for p in self._families if name.startswith(p)), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        if name in self._entries:
            return self._entries[name]
        prefix = self._family(name)
        if prefix is not None:
            return functools.partial(self._families[prefix], name.removeprefix(prefix))
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"Unknown {self.kind} '{name}'.{hint} Valid: {', '.join(self.names(with_families=True))}."
        )

    def create(self, name: str, **kwargs: Any) -> T:
        """Build ``name``; keyword arguments that are ``None`` are dropped so the entry's own defaults apply."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})
