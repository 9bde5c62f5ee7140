"""Shared pieces of the ``vmalab`` subcommands: checked option types, ``--format``,
``--quiet`` and progress bars.

Every option value is checked by its click type before a command runs, so a bad value is
one line ``vmalab: COMMAND: Invalid value for '--OPTION': ...`` and exit status 2.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from vmalab.errors import UserInputError

MAX_TIMEOUT = 86400.0
"""Largest ``--timeout`` accepted (one day)."""
MAX_WORKERS = 256
"""Largest ``sweep --workers`` accepted."""

if TYPE_CHECKING:
    # the click this is checked with types ParamType by the value it converts to; the
    # subscript is for the type checker only, so a click whose ParamType is not generic at
    # run time (pyproject allows click>=8.1) still works
    _ParamType = click.ParamType[float, Any]
else:
    _ParamType = click.ParamType

PID_MAX = 1 << 22
"""Largest pid accepted (PID_MAX_LIMIT on 64-bit Linux)."""
MAX_LINE = (1 << 63) - 1
"""Largest line number accepted."""


class Seconds(_ParamType):
    """A finite number of seconds in ``(0, MAX_TIMEOUT]``: nan, inf, 0 and negatives are
    refused."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """The value as a float, or a click usage error."""
        if isinstance(value, float | int) and not isinstance(value, bool):
            x = float(value)
        else:
            try:
                x = float(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(x) or x <= 0 or x > MAX_TIMEOUT:
            self.fail(
                f"{value!r} is not a finite number of seconds in (0, {MAX_TIMEOUT:g}]", param, ctx
            )
        return x


def int_option(
    *decls: str, lo: int, hi: int, default: int | None, help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An integer option checked by ``click.IntRange(lo, hi)``; its default, if it has
    one, is shown in ``--help``."""
    return click.option(
        *decls,
        type=click.IntRange(lo, hi),
        default=default,
        show_default=default is not None,
        help=help,
    )


FORMATS = ("auto", "text", "rich", "json")


def format_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--format auto|text|rich|json`` and its alias ``--json`` to a command."""
    f = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(f)
    f = click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="auto",
        show_default=True,
        help="text: plain columns without box characters (for mail and commit "
        "messages); rich: boxed tables; json: machine-readable; auto: rich "
        "on a terminal, text otherwise.",
    )(f)
    return f


def resolve_format(fmt: str, as_json: bool) -> str:
    """``text``, ``rich`` or ``json`` from ``--format`` and ``--json``."""
    if as_json:
        if fmt not in ("auto", "json"):
            raise UserInputError("--json", f"conflicts with --format {fmt}")
        return "json"
    if fmt == "auto":
        return "rich" if sys.stdout.isatty() else "text"
    return fmt


def quiet_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-q/--quiet`` (no progress bar)."""
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress bar (there is none anyway when stderr is not a terminal).",
    )(f)


class _Bar:
    """A progress handle: ``update(completed)``; does nothing when disabled."""

    def __init__(self, prog: Any, task: Any) -> None:
        self.prog = prog
        self.task = task

    def update(self, completed: int) -> None:
        """Set how much is done."""
        if self.prog is not None:
            self.prog.update(self.task, completed=completed)


@contextmanager
def progress(
    description: str, total: int | None, *, quiet: bool = False, unit: str = ""
) -> Iterator[_Bar]:
    """A rich progress bar on stderr, off with ``quiet`` or when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty() or os.environ.get("VMALAB_NO_PROGRESS"):
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols: list[Any] = [TextColumn(description), BarColumn(), MofNCompleteColumn()]
    if unit:
        cols.append(TextColumn(unit))
    cols += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, transient=True, console=Console(stderr=True)) as prog:
        task = prog.add_task(description, total=total)
        yield _Bar(prog, task)


def trace_file(path: str) -> str:
    """The strace log behind a TRACE argument: ``path`` itself, or ``path/trace.strace``
    when ``path`` is a recording directory (``vmalab record -o DIR``)."""
    if os.path.isdir(path):
        return os.path.join(path, "trace.strace")
    return path


def check_trace_file(path: str) -> None:
    """A TRACE must be a readable, non-empty regular file, or a recording directory whose
    ``trace.strace`` is one; UserInputError (located at the path) if not."""
    import stat

    log = trace_file(path)
    try:
        st = os.stat(log)
    except OSError as e:
        if log != path:
            raise UserInputError(
                path, "a directory without trace.strace (not a recording)"
            ) from None
        raise UserInputError(path, f"cannot read trace: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserInputError(log, "not a regular file")
    if st.st_size == 0:
        raise UserInputError(log, "empty trace file")


def read_text_file(path: str, what: str, limit: int = 64 << 20) -> str:
    """A small text file's contents, or a located UserInputError."""
    try:
        st = os.stat(path)
        import stat

        if not stat.S_ISREG(st.st_mode):
            raise UserInputError(path, f"{what}: not a regular file")
        if st.st_size > limit:
            raise UserInputError(path, f"{what}: larger than {limit >> 20} MiB")
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError as e:
        raise UserInputError(path, f"cannot read {what}: {e.strerror}") from None
