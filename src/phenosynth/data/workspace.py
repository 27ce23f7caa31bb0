"""The workspace folder that every command reads and writes (docs/DESIGN.md, "Workspace and data model").

Writers take the workspace's exclusive lock (:meth:`Workspace.lock`, or the :func:`locks_workspace` decorator on a
library function); readers do not.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import secrets
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from filelock import FileLock, Timeout

from phenosynth.data.manifest import conform, empty_manifest, to_csv_frame
from phenosynth.errors import WorkspaceError, WorkspaceLockedError

log = logging.getLogger(__name__)

#: File names of the lock (held with ``flock`` through ``filelock``) and of its holder record, in the workspace root.
LOCK_FILE = ".phenosynth.lock"
LOCK_HOLDER_FILE = ".phenosynth.lock.json"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a workspace lock: written by the holder right after it takes the lock, removed before it lets go."""

    pid: int
    command: str
    argv: list[str]
    started: str  # ISO 8601, local time

    @classmethod
    def of_this_process(cls, command: str) -> "LockHolder":
        return cls(pid=os.getpid(), command=command, argv=list(sys.argv),
                   started=datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def command_line(self) -> str:
        """``phenosynth ingest src -w ws`` (program name without its folder), or the command when argv says nothing."""
        argv = [Path(self.argv[0]).name, *self.argv[1:]] if self.argv else []
        return shlex.join(argv) if argv and argv[0] not in ("", "-c", "-m") else self.command

    def describe(self) -> str:
        """``pid 1234 (phenosynth ingest src -w ws) since 12:01:02``."""
        try:
            since = datetime.fromisoformat(self.started).strftime("%H:%M:%S")
        except ValueError:
            since = self.started
        return f"pid {self.pid} ({self.command_line}) since {since}"


@dataclass(frozen=True)
class Workspace:
    """Paths inside a workspace plus manifest I/O. Create with :meth:`open`."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, create: bool = False, need_manifest: bool = False) -> "Workspace":
        path = Path(root).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"Workspace {path} exists and is not a folder.")
        if not path.exists():
            if not create:
                raise WorkspaceError(
                    f"Workspace {path} does not exist. Create one with: phenosynth ingest SRC -w {path}"
                )
            path.mkdir(parents=True, exist_ok=True)  # exist_ok: a concurrent first ingest may have made it
        ws = cls(path)
        if need_manifest and not ws.manifest_path.exists():
            raise WorkspaceError(
                f"Workspace {path} has no manifest.parquet yet. Run first: phenosynth ingest SRC -w {path}"
            )
        return ws

    # --- fixed layout -------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def ingest_report_path(self) -> Path:
        return self.root / "ingest_report.csv"

    @property
    def split_report_path(self) -> Path:
        return self.root / "split_report.csv"

    @property
    def faces_path(self) -> Path:
        return self.root / "faces.parquet"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def lock_holder_path(self) -> Path:
        return self.root / LOCK_HOLDER_FILE

    # --- the exclusive writer lock --------------------------------------------------------------------------------
    def lock_holder(self) -> LockHolder | None:
        """The holder record of the current lock, or None (no lock, or its holder has not written it yet)."""
        try:
            return LockHolder(**json.loads(self.lock_holder_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @contextmanager
    def lock(self, command: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the workspace's exclusive writer lock for the ``with`` block.

        Reentrant within one process (a study that calls ``generate`` takes it once). Another process waits, logging
        (warning) who holds it, for at most ``timeout`` seconds (None: no limit), then raises
        :class:`WorkspaceLockedError` naming the holder. The lock is an OS file lock (``flock``): it ends with its
        process, so a killed command never leaves a stale lock behind. Worker processes of a holder must not take it.
        """
        lock = FileLock(self.lock_path, is_singleton=True, thread_local=False)
        if lock.is_locked:  # this process holds it already (nested use)
            with lock:
                yield
            return
        try:
            lock.acquire(blocking=False)
        except Timeout:
            holder = self.lock_holder()
            who = holder.describe() if holder else "another process"
            if timeout is not None and timeout <= 0:
                raise WorkspaceLockedError(self._locked_message(who, timeout)) from None
            log.warning("Waiting for the workspace lock of %s held by %s%s.", self.root, who,
                        f" (at most {timeout:g} s)" if timeout is not None else "")
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except Timeout:
                holder = self.lock_holder() or holder
                raise WorkspaceLockedError(
                    self._locked_message(holder.describe() if holder else "another process", timeout)
                ) from None
        try:
            record = asdict(LockHolder.of_this_process(command))
            atomic_write(self.lock_holder_path, lambda p: Path(p).write_text(json.dumps(record, indent=2)))
            yield
        finally:
            self.lock_holder_path.unlink(missing_ok=True)
            lock.release()

    def _locked_message(self, who: str, timeout: float) -> str:
        return (f"Workspace {self.root} is locked by {who}; gave up after {timeout:g} s (--lock-timeout). Run the "
                "command again when that one has finished, or give a longer --lock-timeout (default: wait).")

    # --- paths stored in the manifest ---------------------------------------------------------------------------
    def relpath(self, path: str | os.PathLike[str]) -> str:
        """How ``path`` is stored in the manifest: relative to the workspace when inside it, else absolute."""
        p = Path(path).absolute()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """The file a manifest ``path`` refers to."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    # --- manifest I/O ---------------------------------------------------------------------------------------------
    def load_manifest(self) -> pd.DataFrame:
        if not self.manifest_path.exists():
            return empty_manifest()
        return conform(pd.read_parquet(self.manifest_path))

    def save_manifest(self, df: pd.DataFrame) -> None:
        """Write atomically: a crash never leaves a half-written manifest."""
        df = conform(df)
        if df["image_id"].duplicated().any():
            dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
            raise WorkspaceError(f"Refusing to save a manifest with a duplicated image_id ({dup}).")
        atomic_write(self.manifest_path, lambda p: df.to_parquet(p, index=False))

    def export_manifest_csv(self, out: str | os.PathLike[str]) -> Path:
        out = Path(out)
        to_csv_frame(self.load_manifest()).to_csv(out, index=False)
        return out


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then move the result over ``path`` in one step.

    The temporary file is created like any other file (mode ``0o666`` less the umask, default ACLs apply), so the
    result is as readable by others as the user's umask allows (``tempfile.mkstemp`` would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def locks_workspace(fn: _Fn) -> _Fn:
    """Decorate a library function that writes a workspace: it runs holding :meth:`Workspace.lock` (no time limit).

    The workspace is the argument named ``ws`` or ``workspace`` (a :class:`Workspace` or a path to an existing one).
    Reentrant: a locked function may call another, and the CLI takes the lock first (with ``--lock-timeout``).
    """
    sig = inspect.signature(fn)
    param = next(p for p in ("ws", "workspace") if p in sig.parameters)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            target = sig.bind_partial(*args, **kwargs).arguments.get(param)
        except TypeError:
            target = None
        if target is None:
            return fn(*args, **kwargs)  # let the function report its own argument error
        ws = target if isinstance(target, Workspace) else Workspace.open(target)
        with ws.lock(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
