"""Merge the tracer's records with perf's page faults into ``trace.strace``.

Both inputs are sorted by CLOCK_MONOTONIC time: the tracer writes its records in the
order it handles the stops (each stamped while its tracee was stopped), ``perf script``
prints samples in time order. :func:`merge` streams ``heapq.merge`` of the two, so memory
does not grow with the run: it holds one pending syscall entry and the per-task table of
births and execs (one entry per task).

The joiner prints a syscall as one line when nothing else comes between its entry and its
exit record, and otherwise as strace does, as an ``<unfinished ...>`` half at the entry and
a ``<... NAME resumed>`` half at the exit. A kernel-mode fault of the same task inside the
call therefore lands between the halves.
"""

from __future__ import annotations

import heapq
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from vmalab.trace.decode import SEP
from vmalab.trace.tracer import Incarnation, Snapshot

USER_LIMIT = 0x800000000000
# "  1234 12345.123456789: exceptions:page_fault_user: address=0x.. ip=0x.. error_code=0x6"
_PERF = re.compile(
    r"^\s*(\d+)\s+(\d+)\.(\d+):\s+exceptions:page_fault_(user|kernel):\s+"
    r"address=(0x[0-9a-f]+|\S+)\s+ip=(\S+)\s+error_code=(0x[0-9a-f]+)"
)
_LOST = re.compile(r"LOST (\d+) events")


@dataclass
class FaultStats:
    """What the merge saw of perf's samples."""

    user: int = 0
    kernel: int = 0
    dropped_pre_exec: int = 0
    dropped_kernel_addr: int = 0
    dropped_untraced: int = 0
    lost: int = 0
    lost_records: int = 0


@dataclass
class MergeStats:
    """Counts of the merged trace."""

    lines: int = 0
    syscall_lines: int = 0
    faults: FaultStats = field(default_factory=FaultStats)


Rec = tuple[int, int, int, str, str]  # (ts, order, tid, kind, payload)


def tracer_records(f: IO[str]) -> Iterator[Rec]:
    """The tracer's records file as (ts, 0, tid, kind, payload)."""
    for line in f:
        ts, tid, kind, payload = line.rstrip("\n").split("\t", 3)
        yield int(ts), 0, int(tid), kind, payload


def perf_faults(lines: Iterable[str], stats: FaultStats) -> Iterator[Rec]:
    """``perf script -F tid,time,event,trace --ns`` lines → fault records (ts, 1, tid, F, text).

    Kernel-mode faults on kernel addresses are dropped; lost-event notes are counted.
    """
    for line in lines:
        m = _PERF.match(line)
        if m is None:
            lm = _LOST.search(line)
            if lm is not None:
                stats.lost += int(lm.group(1))
                stats.lost_records += 1
            continue
        tid, sec, frac, mode, addr, ip, err = m.groups()
        ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        try:
            a = int(addr, 16)
        except ValueError:
            continue
        if mode == "kernel" and a >= USER_LIMIT:
            stats.dropped_kernel_addr += 1
            continue
        code = int(err, 16)
        access = "exec" if code & 0x10 else "write" if code & 0x2 else "read"
        text = (f"--- PAGE_FAULT {{address={addr}, access={access}, mode={mode}, ip={ip}, "
                f"error_code={err}}} ---")
        yield ts, 1, int(tid), "F", text


def run_perf_script(perf: str, data: str) -> subprocess.Popen[str]:
    """Start ``perf script`` on ``data``; its stdout streams the samples in time order."""
    return subprocess.Popen(
        [perf, "script", "-i", data, "--ns", "--show-lost-events",
         "-F", "tid,time,event,trace"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 16,
    )


def _keep_fault(lives: dict[int, list[Incarnation]], tid: int, ts: int,
                stats: FaultStats) -> bool:
    """Whether a fault of ``tid`` at ``ts`` is printed (see docs/recording.md).

    Dropped: faults of tasks never traced, and faults before the task's exec when the old
    image dies with the exec (the wrapper, a fork child, a thread); a CLONE_VM child's
    (vfork, posix_spawn) faults before its exec hit its parent's mm and are kept.
    """
    lv = lives.get(tid)
    if not lv:
        stats.dropped_untraced += 1
        return False
    life = lv[0]
    for cand in lv:
        if cand.birth <= ts:
            life = cand
    if life.exec_ts is not None and ts < life.exec_ts and life.kind != "vm":
        stats.dropped_pre_exec += 1
        return False
    return True


class _Writer:
    """Formats and numbers the output lines."""

    def __init__(self, out: IO[str], offset_ns: int) -> None:
        self.out = out
        self.offset = offset_ns
        self.lines = 0

    def line(self, ts: int, tid: int, body: str) -> None:
        t = ts + self.offset
        prefix = f"{tid:<5} {t // 1_000_000_000}.{t % 1_000_000_000:09d} "
        if SEP in body:
            head, res = body.split(SEP, 1)
            s = prefix + head
            text = (s.ljust(40) + "= " if len(s) < 40 else s + " = ") + res
        else:
            text = prefix + body
        self.out.write(text + "\n")
        self.lines += 1


def merge(tracer: Iterable[Rec], faults: Iterable[Rec], out: IO[str], *, offset_ns: int,
          lives: dict[int, list[Incarnation]], snapshots: list[Snapshot]) -> MergeStats:
    """Write the merged, joined trace to ``out``; fill in each snapshot's line."""
    st = MergeStats()
    w = _Writer(out, offset_ns)
    pending: tuple[int, int, str, str] | None = None  # ts, tid, name, entry text
    unfinished: dict[int, str] = {}  # tid → name of its printed <unfinished ...> call

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            pts, ptid, pname, ptext = pending
            sp = "" if ptext.endswith(" ") else " "
            w.line(pts, ptid, f"{ptext}{sp}<unfinished ...>")
            unfinished[ptid] = pname
            pending = None

    for ts, _, tid, kind, payload in heapq.merge(tracer, faults):
        if kind == "F":
            if not _keep_fault(lives, tid, ts, st.faults):
                continue
            flush()
            w.line(ts, tid, payload)
            if "mode=user" in payload:
                st.faults.user += 1
            else:
                st.faults.kernel += 1
        elif kind == "E":
            flush()
            name, text = payload.split("\t", 1)
            pending = (ts, tid, name, text)
        elif kind == "X":
            name, text = payload.split("\t", 1)
            st.syscall_lines += 1
            if pending is not None and pending[1] == tid and pending[2] == name:
                w.line(pending[0], tid, pending[3] + text)
                pending = None
            else:
                flush()
                unfinished.pop(tid, None)
                w.line(ts, tid, f"<... {name} resumed>{text}")
        elif kind == "T":
            if payload:
                flush()
                w.line(ts, tid, payload)
        elif kind == "M":
            # a pending entry is not applied before its exit: the snapshot precedes it
            snapshots[int(payload)].line = w.lines
    flush()
    st.lines = w.lines
    return st
