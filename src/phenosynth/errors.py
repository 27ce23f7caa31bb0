"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class PhenosynthError(Exception):
    """A problem with the user's input, data or environment, with a message that says how to fix it."""


class WorkspaceError(PhenosynthError):
    """The workspace is missing, incomplete, or in a state the command cannot work from."""


class WorkspaceLockedError(WorkspaceError):
    """Another process holds the workspace's writer lock and did not let go within the time allowed."""


class LeakageError(PhenosynthError):
    """An operation would let the held-out real test set leak into training."""


class MissingWeightsError(PhenosynthError):
    """Model weights were asked for but are not on disk; the message names the file and the folder to put it in."""


class MissingDependencyError(PhenosynthError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""
