"""The ptrace side of ``vmalab record``: follow a program and all its tasks, write events.

:class:`Tracer` seizes the recorder's wrapper process (see :mod:`vmalab.trace.record`),
follows every task it creates (PTRACE_O_TRACEFORK/VFORK/CLONE), and writes one record per
event to ``DIR/raw/events.tsv`` in time order: the entry and the exit half of every decoded
syscall, task exits, exec and exit snapshot markers. Each record's timestamp is
CLOCK_MONOTONIC read while the tracee is stopped at that event, so a page fault the task
takes before the stop has a smaller timestamp and one it takes after the restart a larger
one; records are written in the order the stops are handled, so the file is sorted.

Record lines: ``TS<TAB>TID<TAB>KIND<TAB>PAYLOAD``. KIND is ``E`` (syscall entry: name and
entry text), ``X`` (exit: name and exit text), ``T`` (a task line such as
``+++ exited with 0 +++``), ``M`` (snapshot marker: the snapshot's index), ``L`` (the end
of a read capture that has no syscall line of its own: the reader exited).

An ``E``/``X`` payload may carry a third, tab-separated field of comma-separated tags for
the merge, which knows the final line numbers: ``V<mm>`` (this call may change the maps of
mm ``<mm>``, ``V*`` of any), ``O<cid>`` (this openat opened read capture ``<cid>``),
``L<index>`` (this read hit EOF, or this close ended, the read snapshot ``<index>``).

**Read captures** (what the program reads of a /proc/PID/maps or smaps file) are kept by
:class:`vmalab.trace.snapshots.ReadCaptures`; see :mod:`vmalab.trace.snapshots`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import IO

from vmalab.trace import decode as dc
from vmalab.trace import ptrace as pt
from vmalab.trace import syscalls as sc
from vmalab.trace.snapshots import CAPTURE_LIMIT, ReadCaptures, ReadInfo, ReadSnapshot, Snapshot
from vmalab.trace.strace_fmt import fd_path, sint

__all__ = [
    "CAPTURE_LIMIT",
    "OPTIONS",
    "Incarnation",
    "ReadInfo",
    "ReadSnapshot",
    "Snapshot",
    "Task",
    "TraceStats",
    "Tracer",
    "read_stat",
]

OPTIONS = (
    pt.O_TRACESYSGOOD
    | pt.O_TRACEEXEC
    | pt.O_TRACEEXIT
    | pt.O_TRACEFORK
    | pt.O_TRACEVFORK
    | pt.O_TRACECLONE
    | pt.O_EXITKILL
    | pt.O_TRACESECCOMP
)
_GROUP_STOP = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_MONO = time.CLOCK_MONOTONIC
_CLONES = frozenset(sc.NR[n] for n in ("clone", "clone3", "fork", "vfork"))
_CLOSE_RANGE_CLOEXEC = 4
_EBADF = 9


def _now() -> int:
    return time.clock_gettime_ns(_MONO)


@dataclass(slots=True)
class Task:
    """One traced thread: its thread group, the decoded call it is inside, its visibility."""

    tid: int
    tgid: int
    visible: bool = True  # the wrapper is invisible until its execve
    ctx: dc.Ctx | None = None
    snap_after_exit: int | None = None  # snapshot index to mark after the execve exit
    exiting: int = 0  # the exit or exit_group call it made
    k: int = 0  # entries of perf-filtered calls so far (matches perf's sys_enter events)
    entry_ts: int = 0  # when it entered its current decoded call
    last_child: int = 0  # the task its last fork/clone event created
    mm: int = 0  # the tracer's id of the address space it runs on
    borrowed: bool = False  # a CLONE_VM child (vfork, posix_spawn) before its execve
    ctag: str = ""  # the V tag of the mm-changing call it is inside
    tags: list[str] = field(default_factory=list)  # tags for its next exit record


@dataclass(slots=True)
class Incarnation:
    """A task's life as the fault merge needs it: birth, kind, first exec (monotonic ns)."""

    birth: int
    kind: str  # root | fork | vm | thread
    exec_ts: int | None = None  # its first exec event
    drops: list[tuple[int, int]] = field(default_factory=list)  # fault windows to drop

    def exec_done(self, entry_ts: int, ts: int) -> None:
        """Its execve (entered at ``entry_ts``) completed at ``ts``: which faults to drop.

        Faults inside the execve hit the new image (binfmt_elf clearing .bss) and the exec
        snapshot holds their effect. Before a first exec, the old image dies with the exec,
        except a CLONE_VM child's (vfork, posix_spawn), which is its parent's.
        """
        if self.exec_ts is None:
            self.exec_ts = ts
            if self.kind != "vm":
                self.drops.append((0, ts))
        self.drops.append((min(entry_ts, ts), ts))


# /proc/PID/stat fields (1-based, proc(5)) that name the [stack] and [heap] VMAs
_STAT_FIELDS = {"start_stack": 28, "start_data": 45, "end_data": 46, "start_brk": 47}


def read_stat(pid: int) -> dict[str, int]:
    """mm->start_stack, start_data, end_data and start_brk from /proc/PID/stat ({} if gone).

    The comm field may hold spaces and parentheses, so fields are counted after its last
    ``)`` (field 3 onwards).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
        rest = text[text.rindex(")") + 1 :].split()
        return {k: int(rest[n - 3]) for k, n in _STAT_FIELDS.items()}
    except (OSError, ValueError, IndexError):
        return {}


@dataclass
class TraceStats:
    """Counts the tracer keeps (for the manifest and the overhead report)."""

    stops: int = 0
    syscalls: int = 0
    processes: int = 0
    threads: int = 0
    execs: int = 0
    files: dict[str, int] = field(default_factory=dict)


class Tracer:
    """Follow the seized ``root`` and its descendants; write event records to ``out``."""

    def __init__(
        self, out: IO[str], snapdir: str, *, progress: bool = True, seccomp: bool = False
    ) -> None:
        self.out = out
        self.seccomp = seccomp
        self.snapdir = snapdir
        self.tasks: dict[int, Task] = {}
        self.groups: dict[int, set[int]] = {}
        self.lives: dict[int, list[Incarnation]] = {}
        self.snapshots: list[Snapshot] = []
        self.exec_seq: dict[int, int] = {}
        self.exit_seq: dict[int, int] = {}
        self.exit_snapped: set[int] = set()
        self.reads = ReadCaptures(snapdir, self.snapshots, self._group_mm)
        self._mms = 0
        self.stats = TraceStats()
        self.root: int | None = None
        self.root_status: int | None = None
        self.progress = progress
        self.last_ts = 0
        self._next_progress = 0
        self.interrupted = False
        self.extra_children: dict[int, int | None] = {}  # non-traced children (perf) → status
        self.t_start = self.t_end = self.cpu = 0.0

    # -- records ------------------------------------------------------------------------

    def _new_mm(self) -> int:
        self._mms += 1
        return self._mms

    def _rec(self, ts: int, tid: int, kind: str, payload: str, k: int = -1) -> None:
        if ts < self.last_ts:
            ts = self.last_ts
        self.last_ts = ts
        self.out.write(f"{ts}\t{tid}\t{kind}\t{k}\t{payload}\n")

    # -- attach ---------------------------------------------------------------------------

    def attach(self, pid: int) -> None:
        """Seize the wrapper ``pid``, stop it once, and resume it under PTRACE_SYSCALL."""
        pt.seize(pid, OPTIONS)
        pt.interrupt(pid)
        while True:
            wpid, status = os.waitpid(pid, pt.WALL)
            if os.WIFSTOPPED(status) and status >> 16 == pt.EVENT_STOP:
                break
            if not os.WIFSTOPPED(status):
                raise OSError(f"the wrapper died before it was traced (status {status})")
            pt.restart(pt.PTRACE_CONT, pid, os.WSTOPSIG(status))
        self.root = pid
        ts = _now()
        self.tasks[pid] = Task(pid, pid, visible=False, mm=self._new_mm())
        self.groups[pid] = {pid}
        self.lives[pid] = [Incarnation(ts, "root")]
        self.stats.processes += 1
        self._rec(ts, pid, "T", "")  # a no-op record: the start of the trace
        self._resume(pid)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Handle stops until no traced task is left."""
        self.t_start = time.perf_counter()
        cpu = time.process_time()
        try:
            self._loop()
        finally:
            for tgid, idx in self.reads.end_all():
                self._rec(self.last_ts, tgid, "L", str(idx))
            self.t_end = time.perf_counter()
            self.cpu = time.process_time() - cpu

    def _loop(self) -> None:
        waitpid = os.waitpid
        while self.tasks:
            try:
                tid, status = waitpid(-1, pt.WALL)
            except ChildProcessError:
                break
            ts = _now()
            self.stats.stops += 1
            if tid not in self.tasks:
                if tid in self.extra_children:
                    if not os.WIFSTOPPED(status):
                        self.extra_children[tid] = status
                    continue
                if not os.WIFSTOPPED(status):
                    continue
                if status >> 16 != pt.EVENT_EXEC:  # (a non-leader exec: the leader's pid)
                    self._new_task(tid, ts)
            if os.WIFSTOPPED(status):
                self._stopped(tid, status, ts)
            else:
                self._died(tid, status, ts)
            if self.progress and ts >= self._next_progress:
                self._show_progress(ts)

    def _show_progress(self, ts: int) -> None:
        if self._next_progress:
            s = self.stats
            secs = time.perf_counter() - self.t_start
            print(
                f"vmalab record: {secs:.0f} s: {s.stops} stops, {s.syscalls} calls, "
                f"{len(self.tasks)} tasks live, {len(self.snapshots)} snapshots",
                file=sys.stderr,
                flush=True,
            )
        self._next_progress = ts + 1_000_000_000

    def _stopped(self, tid: int, status: int, ts: int) -> None:
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if sig == pt.SYSCALL_TRAP or event == pt.EVENT_SECCOMP:
            self._syscall_stop(tid, ts)
            self._resume(tid)
        elif event:
            self._event(tid, event, sig, ts)
        else:
            # signal-delivery stop: re-inject the signal
            self._resume(tid, sig)

    def _resume(self, tid: int, sig: int = 0) -> None:
        """Restart ``tid``: to its syscall exit if a decoded call awaits it, else freely.

        With the seccomp filter only the decoded calls stop (at their seccomp stop), so a
        task outside such a call runs with PTRACE_CONT; without it every syscall stops.
        """
        task = self.tasks.get(tid)
        if self.seccomp and (task is None or task.ctx is None):
            pt.restart(pt.PTRACE_CONT, tid, sig)
        else:
            pt.restart(pt.PTRACE_SYSCALL, tid, sig)

    # -- syscalls -------------------------------------------------------------------------

    def _syscall_stop(self, tid: int, ts: int) -> None:
        task = self.tasks[tid]
        try:
            op, val, args = pt.syscall_info(tid)
        except OSError:
            return
        if op == pt.OP_SECCOMP and not self.seccomp:
            # the wrapper's filter is in place: this call's entry stop was just handled;
            # from now on only the filtered calls stop (the tracer resumes with PTRACE_CONT)
            self.seccomp = True
            return
        if op == pt.OP_ENTRY or op == pt.OP_SECCOMP:
            task.ctx = None
            if val in dc.PERF_NRS:
                task.k += 1  # the index of this call among the tid's perf sys_enter events
            if val not in dc.ENTER:
                return
            if not task.visible and val not in sc.EXECS:
                return
            if (
                val in sc.READS
                and not self.reads.is_open(task.tgid, sint(args[0], 32))
                and not dc.wanted_read(tid, args[0])
            ):
                return
            ctx = dc.Ctx(tid, val, args)
            task.entry_ts = ts
            ctx.k = task.k if val in dc.PERF_NRS else -1
            tag = ""
            if dc.changes_mm(val, args) and not (val in sc.EXECS and task.borrowed):
                # (a vfork child's execve leaves its parent's mm as it was)
                tag = "V*" if val == sc.NR["process_madvise"] else f"V{task.mm}"
            task.ctag = tag
            tags = "\t" + tag if tag else ""
            self._rec(ts, tid, "E", f"{ctx.name}\t{dc.enter_text(ctx)}{tags}", ctx.k)
            if val in sc.EXITS:
                # it never returns: "exit_group(0) = ?" is printed at its entry, as strace does
                self._rec(ts, tid, "X", f"{ctx.name}\t{dc.exit_text(ctx, 0)}", ctx.k)
                self.stats.syscalls += 1
                task.exiting = val
                return
            task.ctx = ctx
        elif op == pt.OP_EXIT:
            done = task.ctx
            if done is None:
                return
            task.ctx = None
            ctx = done
            self.stats.syscalls += 1
            if ctx.nr == sc.NR["mmap"] and val >= 0 and not ctx.args[3] & 0x20:
                self._file_size(tid, ctx.args[4])
            text = dc.exit_text(ctx, val)
            self.reads.fd_effects(task.tgid, task.tags, ctx, val)
            self._rec(ts, tid, "X", f"{ctx.name}\t{text}{self._take_tags(task)}", ctx.k)
            if task.snap_after_exit is not None:
                self._rec(ts, tid, "M", str(task.snap_after_exit), -2)
                task.snap_after_exit = None

    def _take_tags(self, task: Task) -> str:
        """The tag field of ``task``'s exit record (and forget the tags)."""
        tags = task.tags
        if task.ctag:
            tags.append(task.ctag)
            task.ctag = ""
        if not tags:
            return ""
        task.tags = []
        return "\t" + ",".join(tags)

    def _group_mm(self, pid: int) -> tuple[int, int] | None:
        """(tgid, mm id) of the traced task or thread group ``pid``; None if not traced."""
        t = self.tasks.get(pid)
        if t is None:
            for tid in self.groups.get(pid, ()):
                t = self.tasks.get(tid)
                if t is not None:
                    break
        return None if t is None else (t.tgid, t.mm)

    def _end_group_captures(self, pid: int, ts: int, tid: int, how: str) -> None:
        """Thread group ``pid`` exits or execs: end the read captures it holds (an ``L``
        record at an exit, a tag of the exec's exit record at an exec)."""
        for idx in self.reads.end_group(pid, how):
            if how == "exit":
                self._rec(ts, tid, "L", str(idx))
            else:
                task = self.tasks.get(tid)
                if task is not None:
                    task.tags.append(f"L{idx}")

    def _file_size(self, tid: int, fd: int) -> None:
        """st_size of a file at its first mmap, for the manifest's "files"."""
        fdn = sint(fd, 32)
        path = fd_path(tid, fdn)
        if path is None or path in self.stats.files:
            return
        try:
            self.stats.files[path] = os.stat(f"/proc/{tid}/fd/{fdn}").st_size
        except OSError:
            pass

    # -- ptrace events --------------------------------------------------------------------

    def _event(self, tid: int, event: int, sig: int, ts: int) -> None:
        if event in (pt.EVENT_FORK, pt.EVENT_VFORK, pt.EVENT_CLONE):
            try:
                child = pt.event_msg(tid)
            except OSError:
                child = 0
            if child and child not in self.tasks:
                self._new_task(child, ts)
            task = self.tasks.get(tid)
            if task is not None:
                task.last_child = child
            self._resume(tid)
        elif event == pt.EVENT_EXEC:
            self._exec(tid, ts)
            self._resume(tid)
        elif event == pt.EVENT_EXIT:
            self._exit_event(tid, ts)
            self._resume(tid)
        elif event == pt.EVENT_STOP:
            if sig in _GROUP_STOP:
                pt.restart(pt.PTRACE_LISTEN, tid)
            else:
                self._resume(tid)
        else:
            self._resume(tid)

    def _new_task(self, tid: int, ts: int) -> None:
        """A task seen for the first time (its first stop or its parent's fork event)."""
        tgid, ppid = _status_ids(tid)
        borrowed = False
        if tgid != tid:
            kind = "thread"
            self.stats.threads += 1
            owner = self._group_mm(tgid)
            mm = owner[1] if owner is not None else self._new_mm()
        else:
            kind = "vm" if ppid and pt.same_mm(tid, ppid) else "fork"
            self.stats.processes += 1
            parent = self._group_mm(ppid) if kind == "vm" else None
            borrowed = parent is not None
            mm = parent[1] if parent is not None else self._new_mm()
        self.tasks[tid] = Task(tid, tgid, mm=mm, borrowed=borrowed)
        self.groups.setdefault(tgid, set()).add(tid)
        self.lives.setdefault(tid, []).append(Incarnation(ts, kind))

    def _exec(self, tid: int, ts: int) -> None:
        """PTRACE_EVENT_EXEC: the new image is in place; snapshot it."""
        try:
            former = pt.event_msg(tid)
        except OSError:
            former = tid
        task = self.tasks.get(tid)
        if former != tid and former in self.tasks:
            # a non-leader thread exec'd: it now runs as the leader (tid == tgid)
            old = self.tasks.pop(former)
            self.groups.get(old.tgid, set()).discard(former)
            self._rec(ts, tid, "T", f"+++ superseded by execve in pid {former} +++")
            old.tid = tid
            if task is not None:
                self.groups.get(task.tgid, set()).discard(tid)
                old.k = task.k  # perf counts on under the leader's tid
            self.tasks[tid] = task = old
            self.groups.setdefault(tid, set()).add(tid)
            for life in self.lives.get(former, [])[-1:]:
                life.exec_done(old.entry_ts, ts)
            if tid not in self.lives:
                self.lives[tid] = [Incarnation(ts, "thread")]
        if task is None:
            return
        for life in self.lives.get(tid, [])[-1:]:
            life.exec_done(task.entry_ts, ts)
        if task.visible:
            # the old image's maps fds read the mm that is now gone
            self._end_group_captures(task.tgid, ts, tid, "exec")
        task.mm = self._new_mm()
        task.borrowed = False
        task.visible = True
        if task.ctx is not None:
            moved = dc.Ctx(tid, task.ctx.nr, task.ctx.args)  # resumes under the new tid
            moved.k = task.ctx.k
            task.ctx = moved
        self.stats.execs += 1
        self.exit_snapped.discard(tid)
        seq = self.exec_seq.get(tid, 0) + 1
        self.exec_seq[tid] = seq
        task.snap_after_exit = self._snapshot(tid, "exec", seq)

    def _exit_event(self, tid: int, ts: int) -> None:
        """PTRACE_EVENT_EXIT: the task is exiting, its mm still exists."""
        task = self.tasks.get(tid)
        if task is None:
            return
        if task.ctx is not None:  # killed inside a call
            ctx = task.ctx
            if ctx.nr in _CLONES and task.last_child:
                # killed after the child was made (a sibling's execve): the call did succeed
                text = dc.exit_text(ctx, task.last_child)
            else:
                text = f"){dc.SEP}?"
            self._rec(ts, tid, "X", f"{ctx.name}\t{text}{self._take_tags(task)}", ctx.k)
            self.stats.syscalls += 1
        group_exit = task.exiting == sc.NR["exit_group"]
        task.ctx = None
        live = self.groups.get(task.tgid, set())
        try:
            code = pt.event_msg(tid)
        except OSError:
            code = 0
        killed = bool(code & 0x7F)
        execing = any(
            t.ctx is not None and t.ctx.nr in sc.EXECS
            for t in (self.tasks.get(x) for x in live)
            if t is not None
        )
        # a task past its exit event no longer counts (a leader that called pthread_exit
        # stays a zombie, and in the group, until the last thread is gone)
        live.discard(tid)
        if task.tgid in self.exit_snapped or execing:
            return
        if not live or group_exit or killed:
            pid = task.tgid
            self._end_group_captures(pid, ts, tid, "exit")
            self.exit_snapped.add(pid)
            seq = self.exit_seq.get(pid, 0) + 1
            self.exit_seq[pid] = seq
            idx = self._snapshot(pid, "exit", seq, reader=tid)
            self._rec(ts, tid, "M", str(idx))

    def _died(self, tid: int, status: int, ts: int) -> None:
        task = self.tasks.pop(tid)
        self.groups.get(task.tgid, set()).discard(tid)
        if os.WIFEXITED(status):
            how = f"+++ exited with {os.WEXITSTATUS(status)} +++"
        else:
            sig = os.WTERMSIG(status)
            core = " (core dumped)" if os.WCOREDUMP(status) else ""
            how = f"+++ killed by {_signame(sig)}{core} +++"
        if task.visible:
            if task.ctx is not None:
                # a call cut off by the death (strace prints its "= ?" the same way)
                self._rec(ts, tid, "X", f"{task.ctx.name}\t){dc.SEP}?{self._take_tags(task)}")
            self._rec(ts, tid, "T", how)
        if tid == self.root:
            self.root_status = status

    def _snapshot(self, pid: int, kind: str, seq: int, reader: int | None = None) -> int:
        """Copy /proc/PID/maps and smaps into the snapshot dir; return the snapshot index."""
        src = reader if reader is not None else pid
        base = f"{pid}.{seq}.{kind}"
        for what in ("maps", "smaps"):
            try:
                with open(f"/proc/{src}/{what}", "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            with open(os.path.join(self.snapdir, f"{base}.{what}"), "wb") as g:
                g.write(data)
        self.snapshots.append(
            Snapshot(
                pid,
                kind,
                seq,
                f"snapshots/{base}.maps",
                f"snapshots/{base}.smaps",
                stat=read_stat(src),
            )
        )
        return len(self.snapshots) - 1

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every traced thread group."""
        for tgid in list(self.groups):
            if self.groups[tgid]:
                try:
                    os.kill(tgid, sig)
                except OSError:
                    pass


def _status_ids(tid: int) -> tuple[int, int]:
    """(Tgid, PPid) of ``tid`` from /proc/TID/status; (tid, 0) if it is gone."""
    tgid, ppid = tid, 0
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return tgid, ppid


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}" if sig < 34 else f"SIGRT_{sig - 34}"
