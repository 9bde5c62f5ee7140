"""What the trace commands (``compare``, ``replay``, ``sweep``) share on the command line.

Their common options (``--design``, ``--start``/``--stop-at-line``/``--lenient``,
``--compare-maps``/``--pid``, ``--host-files``), a replay whose errors are located input
errors, a traced process's maps at the stopping point, ``--compare-maps`` (the model's
maps against a real dump) and the ``--verify`` report. Bad input raises
:class:`vmalab.errors.UserInputError`, which the ``vmalab`` group prints as one line
``vmalab: LOCATION: MESSAGE`` with exit status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from vmalab.cliutil import MAX_LINE, PID_MAX, int_option, read_text_file, trace_file
from vmalab.errors import UserInputError
from vmalab.trace.mapsdiff import diff_maps
from vmalab.trace.parse import TraceSyntaxError
from vmalab.trace.replay import ReplayResult, replay
from vmalab.trace.replay_state import Checkpoint


def designs_of(spec: str) -> list[str]:
    """``all`` or a comma-separated list of design ids, checked against vmalab.DESIGNS."""
    from vmalab.designs import DESIGNS

    if spec == "all":
        return list(DESIGNS)
    out = [d.strip() for d in spec.split(",") if d.strip()]
    for d in out:
        if d not in DESIGNS:
            raise UserInputError(
                "--design", f"unknown design {d!r} (valid: all, " + ", ".join(DESIGNS) + ")"
            )
    if not out:
        raise UserInputError("--design", "no design given")
    return out


def parse_start(spec: str | None) -> tuple[int, int, str] | None:
    """``PID:LINE:FILE`` → ``(pid, line, dump text)`` for ``replay(start=...)``."""
    if spec is None:
        return None
    parts = spec.split(":", 2)
    if len(parts) != 3:
        raise UserInputError("--start", "expected PID:LINE:FILE")
    try:
        pid, line = int(parts[0]), int(parts[1])
    except ValueError:
        raise UserInputError("--start", "PID and LINE must be integers") from None
    if pid < 0 or line < 0:
        raise UserInputError("--start", "PID and LINE must not be negative")
    from vmalab.trace.layout import parse_maps

    dump = read_text_file(parts[2], "maps dump")  # regular files only (no FIFO hang)

    parse_maps(dump, parts[2])  # located errors before any replay starts
    return pid, line, dump


def count_lines(path: str) -> int:
    """Lines in a file (for the progress bar), at C speed."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def replay_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--start``, ``--stop-at-line`` and ``--lenient``: where a replay begins and ends,
    and whether it skips malformed lines (``compare`` and ``replay``)."""
    f = click.option("--lenient", is_flag=True, help="skip and count malformed trace lines")(f)
    f = int_option(
        "--stop-at-line",
        lo=1,
        hi=MAX_LINE,
        default=None,
        help="stop the replay after this line (1-based)",
    )(f)
    return click.option(
        "--start",
        "start",
        default=None,
        metavar="PID:LINE:FILE",
        help="start the replay at LINE with PID holding the mappings of a maps dump",
    )(f)


def compare_maps_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--compare-maps FILE`` and its ``--pid`` (``compare`` and ``replay``)."""
    f = int_option(
        "--pid",
        lo=1,
        hi=PID_MAX,
        default=None,
        help="traced pid for --compare-maps (default: the traced root process)",
    )(f)
    return click.option(
        "--compare-maps",
        "maps_file",
        default=None,
        metavar="FILE",
        help="compare the replay's final maps of --pid with this real maps/smaps dump",
    )(f)


host_files_option = click.option(
    "--host-files",
    is_flag=True,
    help="let a plain strace log's execve read the binary on this machine",
)


def progress_total(trace: str, stop_at_line: int | None) -> int | None:
    """The lines a progress bar counts for a trace over 1 MiB (None: no bar)."""
    if os.path.getsize(trace_file(trace)) <= (1 << 20):
        return None
    total = count_lines(trace_file(trace))
    return min(total, stop_at_line) if stop_at_line else total


def replay_located(trace: str, design: str | None, **kwargs: Any) -> ReplayResult:
    """:func:`vmalab.trace.replay.replay`, a malformed line or an unreadable trace raised as
    a UserInputError located at the trace (and line)."""
    try:
        return replay(trace, design, **kwargs)
    except TraceSyntaxError as e:
        raise UserInputError(f"{trace}:{e.lineno}", e.reason) from None
    except OSError as e:
        raise UserInputError(trace, f"cannot replay: {e.strerror or e}") from None


def traced_maps(r: ReplayResult, pid: int, option: str, when: str, *, smaps: bool = False) -> str:
    """/proc/PID/maps (or smaps) of traced ``pid`` at the replay's stopping point; a pid
    the replay never saw, or one that has exited by ``when``, is an input error of
    ``option``."""
    try:
        proc = r.process(pid)
        text: str = proc.smaps() if smaps else proc.maps()
    except KeyError:
        raise UserInputError(
            option, f"pid {pid} is not in the replayed part of the trace"
        ) from None
    except ProcessLookupError:
        raise UserInputError(
            option, f"pid {pid} has exited by {when} (use --stop-at-line)"
        ) from None
    return text


def _root_pid(trace: str) -> int:
    """The pid of the trace's first line (the traced root process)."""
    with open(trace_file(trace), "rb") as f:
        for raw in f:
            head = raw.split(None, 1)
            if head and head[0].isdigit():
                return int(head[0])
    raise UserInputError(trace, "no line starts with a pid (not an strace -f log)")


def _exit_line(trace: str, pid: int) -> int | None:
    """The first line where ``pid`` ends: its ``exit_group(`` call or its ``+++ exited``/
    ``+++ killed`` record, if any."""
    prefix = f"{pid} ".encode()
    with open(trace_file(trace), "rb") as f:
        for no, raw in enumerate(f, 1):
            if raw.startswith(prefix) and (
                b" exit_group(" in raw
                or (b"+++ " in raw and (b"exited" in raw or b"killed" in raw))
            ):
                return no
    return None


def compare_maps(
    trace: str,
    design: str,
    real_path: str,
    *,
    pid: int | None,
    start: tuple[int, int, str] | None,
    stop_at_line: int | None,
    lenient: bool,
    host_files: bool = False,
) -> dict[str, Any]:
    """Replay ``trace`` under ``design`` and diff ``pid``'s final maps with a real dump.

    The model's maps are taken at ``stop_at_line``, else just before ``pid`` exits, else
    at the end of the trace. ``pid`` defaults to the ``--start`` pid or the traced root
    process. Returns a JSON-ready dict (``differences`` as from
    :func:`vmalab.trace.mapsdiff.diff_maps`).
    """
    real = read_text_file(real_path, "maps dump")
    if pid is None:
        pid = start[0] if start else _root_pid(trace)
    stop = stop_at_line
    if stop is None:
        ex = _exit_line(trace, pid)
        stop = ex - 1 if ex else None
    r = replay_located(
        trace, design, stop_at_line=stop, start=start, lenient=lenient, host_files=host_files
    )
    model = traced_maps(r, pid, "--pid", f"line {stop or r.lines}", smaps="VmFlags:" in real)
    diffs = diff_maps(model, real, real_source=real_path)
    return {
        "file": real_path,
        "pid": pid,
        "design": design,
        "line": stop or r.lines,
        "match": not diffs,
        "differences": [asdict(d) for d in diffs],
        "describe": [d.describe() for d in diffs],
    }


def maps_report(cm: dict[str, Any], limit: int = 20) -> list[str]:
    """The --compare-maps result as lines: a verdict and the first differences."""
    head = (
        f"maps of pid {cm['pid']} at line {cm['line']:,} (model, design {cm['design']}) "
        f"vs {cm['file']}: "
    )
    if cm["match"]:
        return [head + "identical"]
    n = len(cm["describe"])
    out = [
        head + f"{n} difference{'s' if n != 1 else ''}" + (f" (first {limit})" if n > limit else "")
    ]
    out += ["  " + d for d in cm["describe"][:limit]]
    return out


def compare_maps_design(designs: list[str]) -> str:
    """The design whose maps --compare-maps checks: the running kernel's (sticky) if
    compared, else the first."""
    return "sticky" if "sticky" in designs else designs[0]


def verify_report(checkpoints: list[Checkpoint], limit: int = 5) -> list[str]:
    """``--verify``: a verdict, then a line per snapshot and its first differing VMAs."""
    bad = [c for c in checkpoints if not c.matched]
    out = [f"verify: {len(checkpoints) - len(bad)}/{len(checkpoints)} snapshots match"]
    for c in checkpoints:
        state = "match" if c.matched else f"{len(c.differences)} differences"
        out.append(f"  pid {c.pid} {c.kind} #{c.seq} at line {c.line}: {c.vmas} VMAs, {state}")
        out += [f"    {diff}" for diff in c.differences[:limit]]
    return out
