"""The state of a replay: its traced tasks, their fd tables, the model files, the result.

:class:`ReplayState` is what every syscall handler of :mod:`vmalab.trace.handlers_mm`,
:mod:`~vmalab.trace.handlers_fs` and :mod:`~vmalab.trace.handlers_task` works on: the
traced tasks and the model Process each one runs in (``kernel/fork.c:copy_process()`` as
far as the mm and the fd table go), the files made in the model's tmpfs, the stores that
``touch`` assumes, and the snapshots that ``verify`` compares.
:class:`vmalab.trace.replay.Replayer` adds the dispatch of events to those handlers.
"""

from __future__ import annotations

import errno as _errno
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from vmalab import uapi
from vmalab.errors import ResourceLimitError, SegmentationFault
from vmalab.kernel import Kernel
from vmalab.mm.mm_types import PAGE_SIZE
from vmalab.trace import layout
from vmalab.trace.args import CLONE_FILES, CLONE_THREAD, CLONE_VM, ArgError, to_int
from vmalab.trace.parse import PageFault, Syscall, TaskExit, TraceSyntaxError
from vmalab.trace.recording import Recording, Snapshot
from vmalab.trace.verify import compare_maps

MAX_MODEL_ERRORS = 200
"""How many model rejections are kept in detail (all are counted)."""


@dataclass
class FdTable:
    """A task's file descriptors as the replay knows them: fd → (path, access mode, cloexec)."""

    fds: dict[int, tuple[str, int, bool]] = field(default_factory=dict)

    def copy(self) -> FdTable:
        """The table a child without CLONE_FILES gets (dup_fd())."""
        return FdTable(dict(self.fds))


@dataclass
class Mm:
    """One replayed address space: the model Process and whether its brk base is known.

    The break itself lives in the model (mm->start_brk, mm->brk); ``brk_known`` says
    whether exec or a first ``brk()`` result has set it.
    """

    proc: Any
    tasks: set[int]
    brk_known: bool = False
    exe: str | None = None
    touch: list[tuple[int, int]] = field(default_factory=list)
    uffds: dict[int, int] = field(default_factory=dict)
    """Traced userfaultfd descriptor → the model Process's descriptor."""


@dataclass
class Task:
    """One traced task: its mm, its thread group and its fd table."""

    pid: int
    tgid: int
    mm: Mm
    files: FdTable
    cwd: str = "/"


@dataclass
class Checkpoint:
    """One snapshot of a recording compared with the model at the same point (``verify``).

    ``differences`` lists the first differing VMAs as text (empty: an exact match of every
    maps field and VmFlags, ``[vsyscall]`` left out).
    """

    pid: int
    kind: str
    seq: int
    line: int
    vmas: int
    differences: list[str]

    @property
    def matched(self) -> bool:
        """Whether the model equals the snapshot."""
        return not self.differences


@dataclass
class ReplayResult:
    """What :func:`vmalab.trace.replay.replay` returns: the kernel, the processes and the
    counts."""

    kernel: Any
    path: str
    design: str
    lines: int = 0
    syscalls: int = 0
    applied: int = 0
    failed_skipped: int = 0
    malformed: int = 0
    forks: int = 0
    threads: int = 0
    execs: int = 0
    exits: int = 0
    unsupported: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    model_errors: list[tuple[int, str, str]] = field(default_factory=list)
    model_error_count: int = 0
    exec_layouts: list[layout.ExecLayout] = field(default_factory=list)
    start_method: str = "execve"
    start_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    guardify: Any = None
    faults: int = 0
    fault_signals: int = 0
    recording: Recording | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    _pids: dict[int | None, Any] = field(default_factory=dict, repr=False)

    def process(self, pid: int) -> Any:
        """The Process that had traced ``pid`` at the stopping point (threads share it)."""
        try:
            return self._pids[pid]
        except KeyError:
            raise KeyError(f"pid {pid} does not appear in the replayed part of the trace") from None

    @property
    def pids(self) -> list[int | None]:
        """Every traced pid seen, in order of first appearance."""
        return list(self._pids)

    def bind(self, pid: int | None, proc: Any) -> None:
        """Traced ``pid`` now runs in ``proc`` (the model Process behind a guardify proxy)."""
        self._pids[pid] = raw_process(proc)

    def summary(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict."""
        return {
            "path": self.path,
            "design": self.design,
            "lines": self.lines,
            "syscalls": self.syscalls,
            "applied": self.applied,
            "failed_skipped": self.failed_skipped,
            "malformed": self.malformed,
            "forks": self.forks,
            "threads": self.threads,
            "execs": self.execs,
            "exits": self.exits,
            "unsupported": dict(self.unsupported),
            "model_error_count": self.model_error_count,
            "model_errors": [list(e) for e in self.model_errors[:20]],
            "start_method": self.start_method,
            "faults": self.faults,
            "fault_signals": self.fault_signals,
            "undecided": list(self.undecided),
            "checkpoints": [
                {
                    "pid": c.pid,
                    "kind": c.kind,
                    "seq": c.seq,
                    "line": c.line,
                    "vmas": c.vmas,
                    "matched": c.matched,
                    "differences": c.differences[:10],
                }
                for c in self.checkpoints
            ],
            "exec_layouts": [
                {
                    "pid": x.pid,
                    "line": x.lineno,
                    "path": x.path,
                    "method": x.method,
                    "placed_by": x.placed_by,
                    "notes": x.notes,
                }
                for x in self.exec_layouts
            ],
            "seconds": round(self.seconds, 4),
        }


Observer = Callable[[int, Any], None]


_PARTIAL_ON_ENOMEM = frozenset(
    {
        "madvise",
        "process_madvise",
        "mprotect",
        "pkey_mprotect",
        "mlock",
        "mlock2",
        "munlock",
    }
)
"""Calls that, failing with ENOMEM at a hole in their range, have already changed the VMAs
before it (madvise_walk_vmas(), the VMA loop of do_mprotect_pkey(), apply_vma_lock_flags()):
they are replayed, and the model is expected to fail the same way."""
_SETUP_CALLS = frozenset({"mprotect", "pkey_mprotect", "madvise"})
"""Calls that do not make the stores noted by ``touch`` happen first."""


@mypyc_attr(allow_interpreted_subclasses=True)  # Replayer (trace/replay.py) is interpreted
class ReplayState:
    """The tasks, files and results of one replay; the handlers' common ground."""

    def __init__(
        self,
        path: str,
        design: str = "tagged",
        *,
        lenient: bool = False,
        observer: Observer | None = None,
        sample_every: int = 0,
        max_map_count: int = 1 << 20,
        guardify: bool = False,
        touch: bool = True,
        on_last_exit: Observer | None = None,
        recording: Recording | None = None,
        host_files: bool = False,
        verify: bool = False,
    ) -> None:
        self.touch = touch
        self.assumed = 0  # private writable ranges whose first store the trace cannot show
        self.rec = recording
        self.host_files = host_files
        self.verify = verify
        self.exec_seq: Counter[int | None] = Counter()
        self._exit_snaps = recording.exit_snapshots() if recording is not None else {}
        self.read_snaps = recording.read_snapshots() if recording is not None else {}
        self.on_last_exit = on_last_exit
        self.offset = 0  # bytes of the log read so far (replay() keeps it)
        kernel = Kernel(design, max_map_count=max_map_count)
        self.path = path
        self.k: Any = kernel
        self.guardify = None
        if guardify:
            from vmalab.trace.guardify import GuardifyKernel

            self.guardify = GuardifyKernel(kernel)
            self.k = self.guardify
        self.r = ReplayResult(kernel, path, design, recording=recording)
        self.lenient = lenient
        self.tasks: dict[int | None, Task] = {}
        self.pending_clones: list[tuple[int, int | None, int, str]] = []  # (line,parent,flags,name)
        self.bound_children: set[int] = set()
        self.files_made: dict[str, int] = {}  # model path -> size made
        self.start_pid: int | None = None
        self.observer = observer
        self.sample_every = sample_every
        self.since_sample = 0  # calls applied since the observer last ran
        self.unsupported: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.shm_ids: dict[int, int] = {}  # traced SysV segment id -> model segment id

    # ------------------------------------------------------------------ events

    def feed_events(
        self,
        events: Iterable[Syscall | TaskExit | PageFault],
        stop_at_line: int | None,
        skip_to: int,
        handlers: dict[str, Handler],
        memory_syscalls: frozenset[str],
        clones: frozenset[str],
    ) -> None:
        """Apply events in order (those completing after ``stop_at_line`` are not), each
        call through ``handlers`` (syscall name to handler; a memory call without one is
        counted in ``unsupported``, any other in ``ignored``). The dispatch loop of
        ``trace/replay.py``'s Replayer, here so that it runs compiled."""
        for ev in events:
            if stop_at_line is not None and ev.lineno > stop_at_line:
                break
            if ev.lineno <= skip_to:
                continue
            self.r.lines = ev.lineno
            if isinstance(ev, TaskExit):
                if not ev.how.startswith("superseded"):
                    self.exit_task(ev.pid)
                continue
            if isinstance(ev, PageFault):
                self._fault(ev)
                continue
            self.r.syscalls += 1
            name = ev.name
            handler = handlers.get(name)
            if handler is None:
                if name in memory_syscalls:
                    self.unsupported[name] += 1
                else:
                    self.ignored[name] += 1
                continue
            if ev.errno is not None and not (ev.errno == "ENOMEM" and name in _PARTIAL_ON_ENOMEM):
                if name in clones:
                    self.forget_clone(ev.pid)
                self.r.failed_skipped += 1
                continue
            t = self.task_of(ev)
            try:
                if t.mm.touch and name not in _SETUP_CALLS:
                    self.flush_stores(t.mm)
                err = handler(self, t, ev)
                if err:  # the model failed it with -errno, returned rather than raised
                    if ev.errno is not None and err == -_errno.ENOMEM:
                        self.r.applied += 1  # the model failed the same way
                    else:
                        self.model_error(ev, OSError(-err, os.strerror(-err)))
                elif ev.errno is not None:  # the kernel failed it, the model did not
                    self.model_error(ev, OSError(0, "succeeded where the kernel failed"))
                else:
                    self.r.applied += 1
            except (ArgError, ValueError, IndexError, KeyError, OverflowError) as e:
                if isinstance(e, TraceSyntaxError):
                    raise
                if not self.lenient:
                    raise TraceSyntaxError(ev.lineno, f"{name}(): {e}") from None
                self.r.malformed += 1
            except OSError as e:
                if ev.errno is not None and e.errno == _errno.ENOMEM:
                    self.r.applied += 1  # the model failed the same way
                else:
                    self.model_error(ev, e)
            except ResourceLimitError:
                raise  # the budget protects the host: the replay stops, it is no model error
            except Exception as e:  # noqa: BLE001
                # The one place a replay catches everything: the model itself broke on a
                # call the kernel accepted (a SIGSEGV in an exec layout's write, a model bug).
                # It is recorded as a model error, and the replay goes on.
                self.model_error(ev, e)
            if self.verify and ev.lineno in self.read_snaps:
                for snap in self.read_snaps.pop(ev.lineno):
                    if snap.pid in self.r._pids:
                        self.check_snapshot(snap, self.r._pids[snap.pid])
            if self.observer is not None and self.sample_every:
                self.since_sample += 1
                if self.since_sample >= self.sample_every:
                    self.since_sample = 0
                    self.observer(ev.lineno, self.r.kernel)
        for t in list(self.tasks.values()):
            if t.mm.touch:
                self.flush_stores(t.mm)
        self.r.unsupported = dict(self.unsupported)
        self.r.ignored = dict(self.ignored)

    def _fault(self, ev: PageFault) -> None:
        """A recorded page fault: the model takes the same fault (Process.fault()).

        A fault that the model answers with a signal (a guard marker, PROT_NONE, a stack
        that may not grow) is counted in ``fault_signals``: the program got the same
        signal, or the model diverged.
        """
        self.r.faults += 1
        t = self.task_of(ev)
        try:
            t.mm.proc.fault(ev.address, ev.access)
        except SegmentationFault:
            self.r.fault_signals += 1
        except OSError as e:
            self.model_error(ev, e)

    # ------------------------------------------------------------------ tasks

    def new_root(self, pid: int | None) -> Task:
        """A task with no known parent: a fresh, empty Process."""
        proc = self.k.spawn()
        t = Task(
            pid if pid is not None else 0,
            pid if pid is not None else 0,
            Mm(proc, {pid if pid is not None else 0}),
            FdTable(),
        )
        if self.rec is not None and isinstance(self.rec.manifest.get("cwd"), str):
            t.cwd = self.rec.manifest["cwd"]
        self.tasks[pid] = t
        self.r.bind(pid, proc)
        return t

    def task_of(self, ev: Syscall | TaskExit | PageFault) -> Task:
        """The task of an event's pid, binding a child that appears before clone returns."""
        t = self.tasks.get(ev.pid)
        if t is not None:
            return t
        if self.pending_clones and ev.pid is not None:
            ln, parent, flags, name = self.pending_clones.pop(0)
            pt = self.tasks.get(parent)
            if pt is not None:
                self.bound_children.add(ev.pid)
                return self.clone_task(pt, ev.pid, flags)
        if self.start_pid is not None and ev.pid is not None:
            st = self.tasks.get(self.start_pid)
            if st is not None:  # a thread that existed before the dump
                return self.clone_task(st, ev.pid, CLONE_VM | CLONE_THREAD | CLONE_FILES)
        return self.new_root(ev.pid)

    def clone_task(self, parent: Task, child: int, flags: int) -> Task:
        """Models kernel/fork.c:copy_process() as far as the mm and fd table go."""
        files = parent.files if flags & CLONE_FILES else parent.files.copy()
        if flags & CLONE_VM:
            mm = parent.mm
            mm.tasks.add(child)
            tgid = parent.tgid if flags & CLONE_THREAD else child
            self.r.threads += 1
        else:
            proc = parent.mm.proc.fork()
            mm = Mm(proc, {child}, parent.mm.brk_known, parent.mm.exe)
            tgid = child
            self.r.forks += 1
        t = Task(child, tgid, mm, files, parent.cwd)
        self.tasks[child] = t
        self.r.bind(child, mm.proc)
        return t

    def drop_task(self, pid: int | None) -> None:
        """A task is gone; its Process exits with its last task."""
        t = self.tasks.pop(pid, None)
        if t is None:
            return
        t.mm.tasks.discard(t.pid)
        if not t.mm.tasks:
            self.exit_proc(t.mm.proc, t.tgid)

    def exit_proc(self, proc: Any, tgid: int | None = None) -> None:
        """Process.exit(), telling ``on_last_exit`` first if it is the last process, and
        comparing the recording's exit snapshot of ``tgid`` first under ``verify``."""
        if self.verify and tgid is not None and self._exit_snaps.get(tgid):
            self.check_snapshot(self._exit_snaps[tgid].pop(0), proc)
        if self.on_last_exit is not None and len(self.r.kernel.processes) == 1:
            self.on_last_exit(self.r.lines, self.r.kernel)
        proc.exit()
        self.r.exits += 1

    def exit_task(self, pid: int | None) -> None:
        """``+++ exited +++`` (or exit()): the task is gone."""
        self.forget_clone(pid)
        self.drop_task(pid)

    def forget_clone(self, pid: int | None) -> None:
        """Drop a clone in flight from ``pid`` (it failed or the parent died)."""
        self.pending_clones = [c for c in self.pending_clones if c[1] != pid]

    # ------------------------------------------------------------------ files

    def model_fd(self, t: Task, path: str, need: int, accmode: int) -> int:
        """Open ``path`` in the model (creating it large enough) in ``t``'s Process."""
        self.ensure_file(t, path, need)
        fd2: int = t.mm.proc.open(path, accmode)
        return fd2

    def ensure_file(self, t: Task, path: str, need: int) -> None:
        """Create ``path`` in the model's filesystem, or grow it to ``need`` bytes.

        Its first size is the larger of ``need`` and the file's size as the recording's
        manifest gives it, or, only with ``host_files``, as it is on this machine.
        """
        proc = t.mm.proc
        made = self.files_made.get(path)
        if made is None or made < need:
            size = max(need, made or 0)
            if made is None and self.rec is not None and path in self.rec.files:
                size = max(size, self.rec.files[path])
            elif made is None and self.host_files and not path.startswith("/memfd:"):
                try:
                    with layout.open_host_file(path) as hf:
                        size = max(size, os.fstat(hf.fileno()).st_size)
                except OSError:
                    pass
            size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            fd = proc.open(path, uapi.O_RDWR | uapi.O_CREAT, 0o644)
            try:
                proc.ftruncate(fd, size)
            finally:
                proc.close(fd)
            self.files_made[path] = size

    def opener(self, t: Task) -> layout.FileOpener:
        """A FileOpener for layout code, bound to task ``t``."""
        return lambda path, need, acc: self.model_fd(t, path, need, acc)

    # ------------------------------------------------------------------ assumed stores

    def note_store(
        self, t: Task, addr: int, prot: int, flags: int, length: int = PAGE_SIZE
    ) -> None:
        """Note the assumed first store to new private writable memory (see ``touch``).

        The store is made later, by :meth:`flush_stores`, so that the setup calls that
        usually follow (an mprotect(PROT_NONE) guard page, madvise) see the memory as the
        kernel did: not yet written.
        """
        if not prot & uapi.PROT_WRITE or flags & uapi.MAP_TYPE != uapi.MAP_PRIVATE:
            return
        self.assumed += 1
        if not self.touch:
            return
        t.mm.touch.append((addr, max(length, PAGE_SIZE)))

    def flush_stores(self, mm: Mm) -> None:
        """Make the noted stores: the first of the first 4 pages and the last page of each
        range that accepts one (a PROT_NONE guard page or an unmapped page does not)."""
        pending, mm.touch = mm.touch, []
        for addr, length in pending:
            npages = length // PAGE_SIZE
            for i in [*range(min(4, npages)), npages - 1]:
                try:
                    mm.proc.write(addr + i * PAGE_SIZE, b"\0")
                    break
                except (SegmentationFault, OSError):  # SIGSEGV/SIGBUS, or the mm is gone
                    continue

    # ------------------------------------------------------------------ snapshots, errors

    def check_snapshot(self, snap: Snapshot, proc: Any) -> None:
        """Compare the model process with a snapshot; keep the result in ``checkpoints``."""
        diffs, n = compare_maps(raw_process(proc).smaps(), snap.text())
        self.r.checkpoints.append(Checkpoint(snap.pid, snap.kind, snap.seq, snap.line, n, diffs))

    def model_error(self, ev: Syscall | PageFault, e: BaseException) -> None:
        """Record a call the trace shows succeeding that the model rejected."""
        self.r.model_error_count += 1
        if len(self.r.model_errors) < MAX_MODEL_ERRORS:
            if isinstance(e, OSError) and e.errno is not None:
                en = _errno.errorcode.get(e.errno, str(e.errno))
            else:
                en = f"{type(e).__name__}: {e}"
            what = (
                f"{ev.name}({', '.join(ev.args)})"
                if isinstance(ev, Syscall)
                else f"PAGE_FAULT {ev.access} {ev.address:#x}"
            )
            self.r.model_errors.append((ev.lineno, what, en))

    # ------------------------------------------------------------------ start

    def start_from_dump(self, pid: int, dump: str) -> None:
        """Begin with ``pid`` holding exactly the mappings of a maps/smaps dump text."""
        proc = self.k.spawn()
        t = Task(pid, pid, Mm(proc, {pid}), FdTable())
        self.tasks[pid] = t
        self.r.bind(pid, proc)
        self.start_pid = pid
        vmas = layout.parse_maps(dump, "start dump")
        self.r.start_notes = layout.apply_maps_dump(proc, vmas, self.opener(t), self.touch)
        t.mm.brk_known = any(v.path == "[heap]" for v in vmas)
        self.r.start_method = "maps-dump"


Handler = Callable[[ReplayState, Task, Syscall], "int | None"]
"""A syscall's replay: applies one successful (or partly successful) call to the model.
Returns None (or 0), or the -errno the model failed the call with where the model returns
it rather than raising it (mprotect's and madvise's holes)."""


def ret_value(ev: Syscall) -> int:
    """The numeric return value of a call."""
    if ev.ret is None or ev.ret == "?":
        raise ArgError("no return value")
    return to_int(ev.ret)


def to_int_or_none(text: str) -> int | None:
    """An argument as an int, or None when it is not a number (a PR_* name, say)."""
    try:
        return to_int(text)
    except ArgError:
        return None


def raw_process(p: Any) -> Any:
    """The model Process behind a guardify proxy."""
    return getattr(p, "raw", p)
