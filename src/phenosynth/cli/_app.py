"""The typer app, the shared console, and helpers every command uses (error handling, logging, progress bars, the
workspace lock).

The CLI contract (README, "Errors, warnings and logs"):

- a user error (:class:`PhenosynthError`) prints one line and exits 2;
- a full disk prints one line naming the file or folder that could not be written and exits 2;
- any other exception prints one line with the path of a log file holding the traceback and exits 1 (``--debug``
  prints the traceback instead);
- warnings (``logging`` and Python ``warnings``) are printed through the same console as the progress bars, each
  distinct message once; repeated ones are counted and summed up when the command ends.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from phenosynth import __version__
from phenosynth.data.workspace import Workspace
from phenosynth.errors import PhenosynthError

app = typer.Typer(
    name="phenosynth",
    help="Learn to recognise rare genetic conditions from few facial photos, with phenotype-aware synthetic faces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

WORKSPACE_OPTION = typer.Option(..., "-w", "--workspace", help="Workspace folder (created by `ingest`).")
LOCK_TIMEOUT_OPTION = typer.Option(
    None, "--lock-timeout", metavar="SECONDS",
    help="When another command is writing this workspace: give up after SECONDS (default: wait until it ends).",
)

#: Out-of-space errors: the disk is full, or the user's quota is.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def log_dir() -> Path:
    """Where tracebacks of unexpected errors go: ``$XDG_STATE_HOME/phenosynth/logs`` (``~/.local/state/...``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "phenosynth" / "logs"


def write_traceback_log(exc: BaseException) -> Path:
    """Write ``exc``'s traceback (and the command line) to a new file in :func:`log_dir`; return its path."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    text = (f"phenosynth {__version__}\ncommand: {' '.join(sys.argv)}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    path.write_text(text, encoding="utf-8")
    return path


def _is_no_space(exc: OSError) -> bool:
    return exc.errno in _NO_SPACE or "No space left on device" in str(exc)


def _no_space_message(exc: OSError, kw: dict[str, Any]) -> str:
    where = exc.filename or exc.filename2
    if where:
        folder = Path(where).parent
        return (f"No space left on the device while writing {where}. Free some space in {folder} (or its disk) and "
                "run the command again.")
    folder = kw.get("workspace") or kw.get("out") or Path.cwd()
    return f"No space left on the device ({exc}). Free some space on the disk of {folder} and run the command again."


def _debug_requested(ctx: typer.Context) -> bool:
    root = ctx.find_root()
    return bool(isinstance(root.obj, dict) and root.obj.get("debug"))


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command with the CLI's error contract (module docstring): one line per error, never a traceback
    unless ``--debug``. A command that needs the typer context declares ``ctx: typer.Context`` as usual."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        own_ctx = "ctx" in sig.parameters

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            ctx = kw["ctx"] if own_ctx else kw.pop("ctx")
            try:
                return fn(*a, **kw)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except PhenosynthError as exc:
                err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except OSError as exc:
                if not _is_no_space(exc):
                    _unexpected(exc, debug=_debug_requested(ctx))
                err_console.print(f"[bold red]Error:[/] {_no_space_message(exc, kw)}", highlight=False,
                                  soft_wrap=True)
                raise typer.Exit(2) from None
            except Exception as exc:  # noqa: BLE001 - the CLI contract: one line + a log file, or --debug
                _unexpected(exc, debug=_debug_requested(ctx))

        if not own_ctx:  # typer passes the context to a parameter annotated typer.Context
            ctx_param = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            params = [*sig.parameters.values(), ctx_param]
            wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return app.command(*args, **kwargs)(wrapper)

    return decorator


def _unexpected(exc: Exception, *, debug: bool) -> None:
    """Print one line naming the log file that holds the traceback (or the traceback itself with --debug); exit 1."""
    if debug:
        err_console.print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), markup=False,
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    summary = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    try:
        where = f"the traceback is in {write_traceback_log(exc)}"
    except OSError as log_exc:
        where = f"no log file could be written ({log_exc.strerror}); run again with --debug to see the traceback"
    err_console.print(f"[bold red]Unexpected error:[/] {summary} — {where} (please include it in a bug report).",
                      highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(1) from None


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar driven by the library's ``on_progress(done, total)`` callbacks.

    Nothing is drawn until the first update: a command that fails before any work shows no empty "0/?" bar.
    """
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    task: list[Any] = []  # the task id, once the first update has come

    def update(done: int, total: int) -> None:
        if not task:
            bar.start()
            task.append(bar.add_task(description, total=total))
        bar.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            bar.stop()


def lock_workspace(ctx: typer.Context, ws: Workspace, lock_timeout: float | None) -> None:
    """Take ``ws``'s writer lock for the rest of the running command (``--lock-timeout``; released when the command
    ends, however it ends). The library functions the command calls take the same lock again (reentrant)."""
    ctx.with_resource(ws.lock(f"phenosynth {ctx.info_name}", timeout=lock_timeout))


def next_step(text: str) -> None:
    """The last line of every stage's summary: what to run next."""
    console.print(f"Next: {text}", highlight=False, soft_wrap=True)


class RepeatedWarnings(logging.Filter):
    """Let each distinct warning through once; count the repeats (:meth:`summary`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelname, record.getMessage())
        self.counts[key] += 1
        return self.counts[key] == 1

    def summary(self) -> list[str]:
        return [f"{level.lower()} repeated {n} times in all: {msg}" for (level, msg), n in self.counts.items() if n > 1]


@contextmanager
def cli_logging(*, verbose: bool) -> Iterator[RepeatedWarnings]:
    """Route ``logging`` and Python ``warnings`` through ``err_console`` (the progress bars' console) for one command;
    repeated warnings are printed once, then counted in a summary at the end."""
    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    repeats = RepeatedWarnings()
    handler.addFilter(repeats)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    warning_log = logging.getLogger("py.warnings")

    def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
        warning_log.warning("%s: %s (%s:%d)", category.__name__, message, Path(filename).name, lineno)

    try:
        with warnings.catch_warnings():  # restores the filters and showwarning when the command ends
            warnings.showwarning = show_warning
            if not sys.warnoptions:  # -W / PYTHONWARNINGS win; else every occurrence reaches the counter above
                warnings.simplefilter("always")
                for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.simplefilter("ignore", quiet)  # Python's defaults for these stay
            yield repeats
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for line in repeats.summary():
            err_console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"phenosynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Log progress details."),
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected error (default: write "
                                                      "it to a log file and print its path)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    ctx.obj = {"debug": debug}
    ctx.with_resource(cli_logging(verbose=verbose))


def main() -> None:
    app()
