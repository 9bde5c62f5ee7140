"""The replay's reader of a log: raw lines in, the events :meth:`ReplayState.feed_events`
applies out.

Here, not in :mod:`vmalab.trace.replay`, so that it runs compiled in the mypyc build (the
replay module itself stays interpreted: see ``MYPYC_EXCLUDE`` in setup.py). Every line of
a log goes through it: interpreted, it and its line reader took 14% of a profiled replay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from vmalab.trace import handlers_task
from vmalab.trace import parse as P
from vmalab.trace.parse import PageFault, Syscall, TaskExit, TraceSyntaxError
from vmalab.trace.replay_state import ReplayState


def trace_events(
    rp: ReplayState,
    f: BinaryIO,
    need_args: frozenset[str],
    lenient: bool,
    skipped: list[int],
    skip_to: int = 0,
) -> Iterator[Syscall | TaskExit | PageFault]:
    """The events of the log ``f`` (opened binary), in completion order.

    :func:`vmalab.trace.parse.parse_lines` for the replay: it keeps ``rp.offset`` (the
    bytes read so far, where an execve's lookahead seeks to), reports unfinished
    clone-family calls to the replayer (their child may run before the parent returns),
    drops a recording's faults inside an execve (the new image's, already in its
    snapshot), and asks the parser for the arguments of ``need_args`` calls only. A
    malformed line raises TraceSyntaxError unless ``lenient``; then its number is
    appended to ``skipped``.
    """
    pending: dict[int | None, tuple[int, str, str]] = {}
    lineno = 0
    for data in f:
        lineno += 1
        rp.offset += len(data)
        raw = data.decode("utf-8", "replace")
        try:
            ev = P.parse_one(lineno, raw, pending, need_args)
        except TraceSyntaxError:
            if not lenient:
                raise
            skipped.append(lineno)
            continue
        if ev is None:
            if lineno > skip_to and raw.rstrip().endswith("<unfinished ...>"):
                for pid, (start, name, head) in pending.items():
                    if start == lineno and name in handlers_task.CLONES:
                        handlers_task.note_unfinished_clone(rp, lineno, pid, name, head)
            continue
        if isinstance(ev, PageFault) and pending.get(ev.pid, (0, ""))[1] in handlers_task.EXECS:
            continue
        yield ev
    yield from P.unfinished_exits(pending)
