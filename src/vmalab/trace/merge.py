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

The merge also gives each ``read`` snapshot (what the program read from its own
/proc/PID/maps or smaps, see :mod:`vmalab.trace.tracer`) its lines, which only exist here:
``line`` is the completion line of the openat that opened the file, ``last_line`` that of
the read that returned 0 (or of the close), and ``consistent`` says that no call that may
change that mm's maps (tag ``V``) completed after ``line`` or was still running at
``last_line`` (:func:`_ReadChecks.end`).
"""

from __future__ import annotations

import heapq
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from vmalab.trace.decode import PERF_NRS, SEP
from vmalab.trace.snapshots import ReadSnapshot, Snapshot
from vmalab.trace.syscalls import NR
from vmalab.trace.tracer import Incarnation

USER_LIMIT = 0x800000000000
# "  1234 12345.123456789: exceptions:page_fault_user: address=0x.. ip=0x.. error_code=0x6"
_PERF = re.compile(
    r"^\s*(\d+)\s+(\d+)\.(\d+):\s+(?:exceptions:page_fault_(user|kernel):\s+"
    r"address=(0x[0-9a-f]+|\S+)\s+ip=(\S+)\s+error_code=(0x[0-9a-f]+)"
    r"|raw_syscalls:sys_(enter|exit):\s+NR (\d+))"
)
_LOST = re.compile(r"PERF_RECORD_LOST lost (\d+)|LOST (\d+) events")
WINDOW_NS = 250_000_000  # how late (in ns) a tracer stop may be handled; see docs


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
    events: int = 0  # samples perf recorded (faults and raw_syscalls)


@dataclass
class MergeStats:
    """Counts of the merged trace."""

    lines: int = 0
    syscall_lines: int = 0
    faults: FaultStats = field(default_factory=FaultStats)
    perf_stamped: int = 0  # syscall records stamped with perf's sys_enter/sys_exit time
    tracer_stamped: int = 0  # stamped with the tracer's (later) handling time
    order_violations: int = 0  # records that came out later than WINDOW_NS allows


# (ts, order, tid, kind, k, payload); order breaks ties: perf (0) before tracer (1)
Rec = tuple[int, int, int, str, int, str]


def tracer_records(f: IO[str]) -> Iterator[Rec]:
    """The tracer's records file as (ts, 1, tid, kind, k, payload)."""
    for line in f:
        ts, tid, kind, k, payload = line.rstrip("\n").split("\t", 4)
        yield int(ts), 1, int(tid), kind, int(k), payload


def perf_events(lines: Iterable[str], stats: FaultStats) -> Iterator[Rec]:
    """``perf script -F tid,time,event,trace --ns`` lines → records.

    Faults become ``F`` records (text ready to print); raw_syscalls events become ``PE``
    / ``PX`` records with the syscall number in ``k``. Kernel-mode faults on kernel
    addresses are dropped; lost-event notes are counted.
    """
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) >= 5 and parts[2].startswith("raw_syscalls:") and parts[3] == "NR":
            # the common case, without the regex: "TID SEC.NS: raw_syscalls:sys_exit: NR 9 = .."
            sec, _, frac = parts[1].rstrip(":").partition(".")
            stats.events += 1
            yield (
                int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]),
                0,
                int(parts[0]),
                "PE" if parts[2] == "raw_syscalls:sys_enter:" else "PX",
                int(parts[4]),
                "",
            )
            continue
        m = _PERF.match(line)
        if m is None:
            lm = _LOST.search(line)
            if lm is not None:
                stats.lost += int(lm.group(1) or lm.group(2))
                stats.lost_records += 1
            continue
        stats.events += 1
        tid, sec, frac, mode, addr, ip, err, sysev, nr = m.groups()
        ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        if sysev is not None:
            yield ts, 0, int(tid), "PE" if sysev == "enter" else "PX", int(nr), ""
            continue
        try:
            a = int(addr, 16)
        except ValueError:
            continue
        if mode == "kernel" and a >= USER_LIMIT:
            stats.dropped_kernel_addr += 1
            continue
        code = int(err, 16)
        access = "exec" if code & 0x10 else "write" if code & 0x2 else "read"
        text = (
            f"--- PAGE_FAULT {{address={addr}, access={access}, mode={mode}, ip={ip}, "
            f"error_code={err}}} ---"
        )
        yield ts, 0, int(tid), "F", -1, text


def perf_filter() -> str:
    """The raw_syscalls filter: only the calls the tracer prints (reads excepted)."""
    return " || ".join(f"id == {n}" for n in sorted(PERF_NRS))


def run_perf_script(perf: str, data: str) -> subprocess.Popen[str]:
    """Start ``perf script`` on ``data``; its stdout streams the samples in time order."""
    return subprocess.Popen(
        [perf, "script", "-i", data, "--ns", "--show-lost-events", "-F", "tid,time,event,trace"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1 << 16,
    )


def _keep_fault(lives: dict[int, list[Incarnation]], tid: int, ts: int, stats: FaultStats) -> bool:
    """Whether a fault of ``tid`` at ``ts`` is printed (see docs/recording.md).

    Dropped: faults of tasks never traced, faults inside a successful execve (they hit the
    new image, whose snapshot holds them), and faults before the task's first exec when
    the old image dies with the exec (the wrapper, a fork child, a thread); a CLONE_VM
    child's (vfork, posix_spawn) faults before its execve hit its parent's mm and are kept.
    """
    lv = lives.get(tid)
    if not lv:
        stats.dropped_untraced += 1
        return False
    life = lv[0]
    for cand in lv:
        if cand.birth <= ts:
            life = cand
    for lo, hi in life.drops:
        if lo <= ts < hi:
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


Out = tuple[int, int, int, str, int, str]  # (stamp, seq, tid, kind, k, payload)


class _Stamper:
    """Give each tracer syscall record perf's kernel time for it; emit everything in order.

    The tracer stamps a record when it handles the stop, possibly well after the stop (it
    serves one stop at a time), which is exact for the task's own order but not across
    tasks. perf's raw_syscalls events carry the kernel's time: sys_enter fires just after
    the ptrace entry stop (so after the tracer stamped the entry) and right before the
    call's body; sys_exit right after the body, before the exit stop (so before the tracer
    stamps the exit). Hence an entry's sys_enter is the first sys_enter of that task after
    the entry record, and an exit's sys_exit the last sys_exit of the task before the exit
    record; the syscall number must agree, else (perf lost it) the tracer's time is kept.

    An entry record waits (``awaiting``) for its sys_enter, which comes later in the
    stream; later records of the same task wait with it. The reorder heap releases a
    record once the stream is ``window`` ns past it.
    """

    def __init__(self, st: MergeStats, window: int) -> None:
        self.st = st
        self.window = window
        self.awaiting: dict[int, list[tuple[int, int, str, int, str]]] = {}
        self.entry_stamp: dict[int, int] = {}
        self.last_px: dict[int, tuple[int, int]] = {}
        self.last_x: dict[int, int] = {}
        self.heap: list[Out] = []
        self.seq = 0
        self.last = 0
        self._next_sweep = 0

    def _push(self, t: int, tid: int, kind: str, k: int, payload: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, tid, kind, k, payload))

    def _release(self, tid: int, t: int | None) -> None:
        """Push the awaiting bundle of ``tid``: at ``t`` (perf's time) or each at its own."""
        bundle = self.awaiting.pop(tid)
        for ts, _, kind, k, payload in bundle:
            if kind == "E" or kind == "X":
                stamp = ts if t is None else t
                if t is None:
                    self.st.tracer_stamped += 1
                else:
                    self.st.perf_stamped += 1
                if kind == "E":
                    self.entry_stamp[tid] = stamp
                else:
                    self.last_x[tid] = stamp
            else:
                stamp = ts if t is None else max(t, ts)
            self._push(stamp, tid, kind, k, payload)

    def perf(self, ts: int, tid: int, kind: str, nr: int) -> None:
        """A raw_syscalls event."""
        if kind == "PX":
            self.last_px[tid] = (ts, nr)
            return
        aw = self.awaiting.get(tid)
        if aw is not None:
            name = aw[0][4].split("\t", 1)[0]
            self._release(tid, ts if NR.get(name) == nr else None)

    def tracer(self, ts: int, tid: int, kind: str, k: int, payload: str) -> None:
        """A tracer record."""
        aw = self.awaiting.get(tid)
        if aw is not None:
            name = payload.split("\t", 1)[0]
            if kind != "X" or name in ("exit", "exit_group"):
                aw.append((ts, tid, kind, k, payload))  # waits with the entry
                return
            # the exit of the waiting entry: its sys_enter never came, use the tracer's times
            self._release(tid, None)
        if kind == "M" and k == -2:  # the exec snapshot: right after its execve's exit
            self._push(self.last_x.get(tid, ts), tid, kind, k, payload)
            return
        if k < 0 or (kind != "E" and kind != "X"):
            self._push(ts, tid, kind, k, payload)
            return
        if kind == "E":
            self.awaiting[tid] = [(ts, tid, kind, k, payload)]
            return
        t = ts
        px = self.last_px.pop(tid, None)
        if (
            px is not None
            and px[1] == NR.get(payload.split("\t", 1)[0])
            and px[0] >= self.entry_stamp.get(tid, 0)
        ):
            t = min(px[0], ts)
            self.st.perf_stamped += 1
        else:
            self.st.tracer_stamped += 1
        self.last_x[tid] = t
        self._push(t, tid, kind, k, payload)

    def pop_ready(self, pos: int) -> Iterator[Out]:
        """Records the stream has passed by more than the window, in time order."""
        if pos >= self._next_sweep:
            # entries whose sys_enter never came (lost events): the tracer's own time
            limit = pos - self.window // 2
            for tid in [t for t, b in self.awaiting.items() if b[0][0] < limit]:
                self._release(tid, None)
            self._next_sweep = pos + self.window // 4
        heap = self.heap
        limit = pos - self.window
        while heap and heap[0][0] < limit:
            rec = heapq.heappop(heap)
            if rec[0] < self.last:
                self.st.order_violations += 1
            self.last = rec[0]
            yield rec

    def drain(self) -> Iterator[Out]:
        for tid in list(self.awaiting):
            self._release(tid, None)
        yield from self.pop_ready(1 << 62)


def ordered(
    tracer: Iterable[Rec], perf: Iterable[Rec], st: MergeStats, window: int = WINDOW_NS
) -> Iterator[Out]:
    """The tracer's records (stamped with perf's syscall times) and perf's faults, in time order."""
    sp = _Stamper(st, window)
    for ts, _, tid, kind, k, payload in heapq.merge(tracer, perf):
        if kind == "PE" or kind == "PX":
            sp.perf(ts, tid, kind, k)
        elif kind == "F":
            sp._push(ts, tid, kind, k, payload)
        else:
            sp.tracer(ts, tid, kind, k, payload)
        if sp.heap and sp.heap[0][0] < ts - window:
            yield from sp.pop_ready(ts)
    yield from sp.drain()


class _ReadChecks:
    """The tags of the tracer's records: mm changes, and the opens and ends of read captures.

    Per mm only the line of its last change is kept, and per task the mm of the changing
    call it is inside: memory does not grow with the run.
    """

    def __init__(self, snapshots: list[Snapshot]) -> None:
        self.snapshots = snapshots
        self.open_line: dict[int, int] = {}
        self.last_change: dict[int, int] = {}  # mm id (-1: any mm) -> line
        self.inflight: dict[int, int] = {}  # tid -> mm id of the changing call it is in

    def entry(self, tid: int, tags: str) -> None:
        self.inflight.pop(tid, None)
        for t in tags.split(","):
            if t[:1] == "V":
                self.inflight[tid] = -1 if t == "V*" else int(t[1:])

    def exit(self, tid: int, tags: str, line: int) -> None:
        self.inflight.pop(tid, None)
        for t in tags.split(",") if tags else ():
            c, v = t[:1], t[1:]
            if c == "V":
                self.last_change[-1 if v == "*" else int(v)] = line
            elif c == "O":
                self.open_line[int(v)] = line
            elif c == "L":
                self.end(int(v), line)

    def end(self, idx: int, line: int) -> None:
        """Read snapshot ``idx`` ends at ``line``: its lines and whether it is consistent."""
        snap = self.snapshots[idx]
        ri = snap.read if isinstance(snap, ReadSnapshot) else None
        if ri is None:
            return
        opened = self.open_line.get(ri.cid)
        snap.line = opened if opened is not None else 0
        ri.last_line = line
        why = ri.why
        if opened is None:
            why.append("the line of its open is not known")
        changed = max(self.last_change.get(ri.mm, 0), self.last_change.get(-1, 0))
        if opened is not None and changed > opened:
            why.append(f"the address space changed at line {changed}")
        busy = [t for t, mm in self.inflight.items() if mm in (ri.mm, -1)]
        if busy:
            why.append(f"task {busy[0]} was inside a call changing the address space")
        if ri.truncated:
            why.append(f"truncated at {ri.nbytes} bytes")
        if ri.gaps:
            why.append("bytes are missing")
        if ri.gone:
            why.append("the process exited while it was read")
        if not ri.complete:
            why.append("closed before the end of the file")
        ri.consistent = not why


def _split(payload: str) -> tuple[str, str, str]:
    """A tracer payload: name, text and the tags (empty if none)."""
    parts = payload.split("\t", 2)
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def merge(
    tracer: Iterable[Rec],
    perf: Iterable[Rec],
    out: IO[str],
    *,
    offset_ns: int,
    lives: dict[int, list[Incarnation]],
    snapshots: list[Snapshot],
    fstats: FaultStats | None = None,
) -> MergeStats:
    """Write the merged, joined trace to ``out``; fill in each snapshot's line."""
    st = MergeStats()
    if fstats is not None:
        st.faults = fstats
    w = _Writer(out, offset_ns)
    pending: tuple[int, int, str, str] | None = None  # ts, tid, name, entry text
    reads = _ReadChecks(snapshots)

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            pts, ptid, pname, ptext = pending
            sp = "" if ptext.endswith(" ") else " "
            w.line(pts, ptid, f"{ptext}{sp}<unfinished ...>")
            pending = None

    for ts, _, tid, kind, _k, payload in ordered(tracer, perf, st):
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
            name, text, tags = _split(payload)
            pending = (ts, tid, name, text)
            reads.entry(tid, tags)
        elif kind == "X":
            name, text, tags = _split(payload)
            st.syscall_lines += 1
            if pending is not None and pending[1] == tid and pending[2] == name:
                w.line(pending[0], tid, pending[3] + text)
                pending = None
            else:
                flush()
                w.line(ts, tid, f"<... {name} resumed>{text}")
            reads.exit(tid, tags, w.lines)
        elif kind == "T":
            if payload:
                flush()
                w.line(ts, tid, payload)
        elif kind == "M":
            # a pending entry is not applied before its exit: the snapshot precedes it
            snapshots[int(payload)].line = w.lines
        elif kind == "L":  # a read capture ended by its reader's exit
            flush()
            reads.end(int(payload), w.lines)
    flush()
    st.lines = w.lines
    return st
