"""Lazy imports of optional heavy dependencies, with an install hint when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from phenosynth.errors import MissingDependencyError


def require(module: str, *, extra: str, package: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip command that installs it.

    >>> require("json", extra="core").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" (needed for {purpose})" if purpose else ""
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"The optional dependency '{pkg}' is not installed{what}. "
            f"Install it with: pip install 'phenosynth[{extra}]'   ({exc})"
        ) from exc
