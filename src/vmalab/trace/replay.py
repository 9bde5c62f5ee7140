"""Replay of strace logs into a vmalab Kernel.

:func:`replay` reads a log of ``strace -f -ttt -X raw -y -o FILE`` (or a variant: see
:mod:`vmalab.trace.parse`) line by line and applies each successful memory-management
system call to a fresh :class:`vmalab.Kernel` through the contract API, at the address the
trace shows. What it models, and how:

* mmap is replayed with MAP_FIXED at the returned address (MAP_FIXED_NOREPLACE dropped);
  mremap with MREMAP_MAYMOVE|MREMAP_FIXED to the returned address when the mapping moved,
  in place otherwise; munmap, mprotect (and pkey_mprotect without the key), madvise,
  process_madvise (on the caller's own mm), mlock/mlock2/munlock as they are.
* madvise that failed with ENOMEM is replayed too: the kernel applied the advice to the
  mapped parts before failing (madvise_walk_vmas()); other failed calls (``= -1 E...``) are
  skipped.
* Memory accesses are not in the trace. With ``touch=True`` (the default) the replay
  assumes the program writes each private writable mapping it makes (mmap, brk growth, an
  mprotect that makes memory writable): one byte at the first page of the new range that
  takes it, as malloc, a thread's stack, or relocation processing would. The store is
  made just before the process's next call other than mprotect/madvise, so a guard page
  set up right after the mmap stays unwritten, as in the kernel. That gives the VMA its
  anon_vma as in the kernel, which matters for merges (a forked child's VMAs, with two
  anon_vmas on their chain, no longer merge with new neighbours) and for the designs'
  costs. ``touch=False`` replays no accesses at all.
* brk is modelled as an anonymous mapping that grows and shrinks by mmap/munmap of the
  heap range: the first ``brk(NULL)`` result is mm->start_brk; the VMA is not named
  ``[heap]`` and its flags are those of an anonymous private mapping.
* File mappings: the fd is resolved by the ``-y`` path (``3</usr/lib/libc.so.6>``) or by
  following open/openat/creat/dup*/fcntl(F_DUPFD)/close/close_range and memfd_create
  (memfds become shmem files named ``/memfd:NAME``). The file is created in the model's
  filesystem on first use, as large as the real file on this machine (if any) and at least
  as large as every mapping of it. ``/dev/zero`` private mappings are anonymous; other
  devices and anon inodes are counted in ``unsupported`` as ``mmap(device)``.
* Tasks: clone/clone3/fork/vfork. CLONE_VM children (threads, vfork, posix_spawn) share
  the parent's Process; others get ``Process.fork()``. A child whose first line precedes
  its parent's return is bound to the clone in flight. exit ends a task, exit_group its
  thread group; a Process exits when its last task is gone. execve gives the task a new
  Process (:func:`vmalab.trace.layout.load_elf_binary`, or empty if the binary is not
  at hand) and drops the old one if nothing else uses it.
* ``start=(pid, line, dump)`` skips lines 1..line and starts ``pid`` with exactly the
  mappings of a maps/smaps dump. Pids first seen later without a clone in flight are taken
  to be threads of that process (they existed before the dump).

A call that the trace shows succeeding but the model rejects is recorded in
``model_errors`` (line, call, errno) and replay goes on.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import itertools
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vmalab import uapi
from vmalab.errors import ResourceLimitError, SegmentationFault
from vmalab.kernel import Kernel
from vmalab.mm.mm_types import PAGE_SIZE
from vmalab.trace import layout
from vmalab.trace.parse import (
    CLONE_FILES,
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
    ArgError,
    PageFault,
    Syscall,
    TaskExit,
    TraceSyntaxError,
    keyword_arg,
    parse_lines,
    strip_fdpath,
    struct_fields,
    to_int,
    to_str,
)
from vmalab.trace.recording import Recording, Snapshot, is_recording, open_recording

AT_FDCWD = -100
MAX_MODEL_ERRORS = 200
"""How many model rejections are kept in detail (all are counted)."""

MEMORY_SYSCALLS = frozenset(
    {
        "mmap",
        "mmap2",
        "munmap",
        "mprotect",
        "pkey_mprotect",
        "mremap",
        "madvise",
        "process_madvise",
        "brk",
        "mlock",
        "mlock2",
        "munlock",
        "mlockall",
        "munlockall",
        "shmat",
        "shmdt",
        "remap_file_pages",
        "mseal",
        "map_shadow_stack",
        "userfaultfd",
        "mbind",
        "migrate_pages",
        "move_pages",
        "process_mrelease",
        "io_uring_setup",
    }
)
"""Memory-management calls; those the replay does not model are counted as unsupported."""

FD_SYSCALLS = frozenset(
    {
        "open",
        "openat",
        "openat2",
        "creat",
        "close",
        "close_range",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "memfd_create",
        "ftruncate",
        "fallocate",
        "memfd_secret",
        "chdir",
        "fchdir",
        "unlink",
        "unlinkat",
        "rename",
        "renameat",
        "renameat2",
    }
)
TASK_SYSCALLS = frozenset(
    {
        "clone",
        "clone3",
        "fork",
        "vfork",
        "execve",
        "execveat",
        "exit",
        "exit_group",
    }
)
MODELLED = (
    (
        MEMORY_SYSCALLS
        - {
            "shmat",
            "shmdt",
            "remap_file_pages",
            "map_shadow_stack",
            "userfaultfd",
            "mbind",
            "migrate_pages",
            "move_pages",
            "process_mrelease",
            "io_uring_setup",
            "mmap2",
        }
    )
    | FD_SYSCALLS - {"memfd_secret"}
    | TASK_SYSCALLS
    | {"pkey_alloc", "pkey_free", "prctl"}
)


@dataclass
class FdTable:
    """A task's file descriptors as the replay knows them: fd → (path, access mode)."""

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
    """What :func:`replay` returns: the kernel, the processes and the counts."""

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


class Replayer:
    """The replay state machine; :func:`replay` drives it over a file."""

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
        self._exec_seq: Counter[int | None] = Counter()
        self._exit_snaps = recording.exit_snapshots() if recording is not None else {}
        self._read_snaps = recording.read_snapshots() if recording is not None else {}
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
        self._since_sample = 0
        self._unsup: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self._opener_proc: Any = None

    # ------------------------------------------------------------------ tasks

    def _new_root(self, pid: int | None) -> Task:
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
        self.r._pids[pid] = _raw(proc)
        return t

    def _task(self, ev: Syscall | TaskExit | PageFault) -> Task:
        """The task of an event's pid, binding a child that appears before clone returns."""
        t = self.tasks.get(ev.pid)
        if t is not None:
            return t
        if self.pending_clones and ev.pid is not None:
            ln, parent, flags, name = self.pending_clones.pop(0)
            pt = self.tasks.get(parent)
            if pt is not None:
                self.bound_children.add(ev.pid)
                return self._clone(pt, ev.pid, flags)
        if self.start_pid is not None and ev.pid is not None:
            st = self.tasks.get(self.start_pid)
            if st is not None:  # a thread that existed before the dump
                return self._clone(st, ev.pid, CLONE_VM | CLONE_THREAD | CLONE_FILES)
        return self._new_root(ev.pid)

    def _clone(self, parent: Task, child: int, flags: int) -> Task:
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
        self.r._pids[child] = _raw(mm.proc)
        return t

    def _drop_task(self, pid: int | None) -> None:
        """A task is gone; its Process exits with its last task."""
        t = self.tasks.pop(pid, None)
        if t is None:
            return
        t.mm.tasks.discard(t.pid)
        if not t.mm.tasks:
            self._exit_proc(t.mm.proc, t.tgid)

    def _exit_proc(self, proc: Any, tgid: int | None = None) -> None:
        """Process.exit(), telling ``on_last_exit`` first if it is the last process, and
        comparing the recording's exit snapshot of ``tgid`` first under ``verify``."""
        if self.verify and tgid is not None and self._exit_snaps.get(tgid):
            self._check_snapshot(self._exit_snaps[tgid].pop(0), proc)
        if self.on_last_exit is not None and len(self.r.kernel.processes) == 1:
            self.on_last_exit(self.r.lines, self.r.kernel)
        proc.exit()
        self.r.exits += 1

    # ------------------------------------------------------------------ files

    def _model_fd(self, t: Task, path: str, need: int, accmode: int) -> int:
        """Open ``path`` in the model (creating it large enough) in ``t``'s Process."""
        self._ensure_file(t, path, need)
        fd2: int = t.mm.proc.open(path, accmode)
        return fd2

    def _ensure_file(self, t: Task, path: str, need: int) -> None:
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

    def _opener(self, t: Task) -> layout.FileOpener:
        """A FileOpener for layout code, bound to task ``t``."""
        return lambda path, need, acc: self._model_fd(t, path, need, acc)

    # ------------------------------------------------------------------ events

    def feed(
        self,
        events: Iterable[Syscall | TaskExit | PageFault],
        stop_at_line: int | None,
        skip_to: int = 0,
    ) -> None:
        """Apply events in order (those completing after ``stop_at_line`` are not)."""
        for ev in events:
            if stop_at_line is not None and ev.lineno > stop_at_line:
                break
            if ev.lineno <= skip_to:
                continue
            self.r.lines = ev.lineno
            if isinstance(ev, TaskExit):
                if not ev.how.startswith("superseded"):
                    self._exit_task(ev.pid)
                continue
            if isinstance(ev, PageFault):
                self._fault(ev)
                continue
            self.r.syscalls += 1
            name = ev.name
            if name not in MODELLED:
                if name in MEMORY_SYSCALLS:
                    self._unsup[name] += 1
                else:
                    self._ignored[name] += 1
                continue
            if ev.errno is not None and not (ev.errno == "ENOMEM" and name in _PARTIAL_ON_ENOMEM):
                if name in ("clone", "clone3", "fork", "vfork"):
                    self._forget_clone(ev.pid)
                self.r.failed_skipped += 1
                continue
            t = self._task(ev)
            try:
                if t.mm.touch and name not in _SETUP_CALLS:
                    self._flush_touches(t.mm)
                handler = getattr(self, "_sys_" + name)
                handler(t, ev)
                if ev.errno is not None:  # the kernel failed it, the model did not
                    self._model_error(ev, OSError(0, "succeeded where the kernel failed"))
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
                    self._model_error(ev, e)
            except ResourceLimitError:
                raise  # the budget protects the host: the replay stops, it is no model error
            except Exception as e:  # the model itself broke (SIGSEGV in a layout write, a bug)
                self._model_error(ev, e)
            if self.verify and ev.lineno in self._read_snaps:
                for snap in self._read_snaps.pop(ev.lineno):
                    if snap.pid in self.r._pids:
                        self._check_snapshot(snap, self.r._pids[snap.pid])
            if self.observer is not None and self.sample_every:
                self._since_sample += 1
                if self._since_sample >= self.sample_every:
                    self._since_sample = 0
                    self.observer(ev.lineno, self.r.kernel)
        for t in list(self.tasks.values()):
            if t.mm.touch:
                self._flush_touches(t.mm)
        self.r.unsupported = dict(self._unsup)
        self.r.ignored = dict(self._ignored)

    def _fault(self, ev: PageFault) -> None:
        """A recorded page fault: the model takes the same fault (Process.fault()).

        A fault that the model answers with a signal (a guard marker, PROT_NONE, a stack
        that may not grow) is counted in ``fault_signals``: the program got the same
        signal, or the model diverged.
        """
        self.r.faults += 1
        t = self._task(ev)
        try:
            t.mm.proc.fault(ev.address, ev.access)
        except SegmentationFault:
            self.r.fault_signals += 1
        except OSError as e:
            self._model_error(ev, e)

    def _model_error(self, ev: Syscall | PageFault, e: Exception) -> None:
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

    def _exit_task(self, pid: int | None) -> None:
        """``+++ exited +++``: the task is gone."""
        self._forget_clone(pid)
        self._drop_task(pid)

    def _forget_clone(self, pid: int | None) -> None:
        """Drop a clone in flight from ``pid`` (it failed or the parent died)."""
        self.pending_clones = [c for c in self.pending_clones if c[1] != pid]

    # ------------------------------------------------------------------ syscalls

    @staticmethod
    def _ret(ev: Syscall) -> int:
        """The numeric return value."""
        if ev.ret is None or ev.ret == "?":
            raise ArgError("no return value")
        return to_int(ev.ret)

    def _sys_mmap(self, t: Task, ev: Syscall) -> None:
        """mmap(addr, len, prot, flags, fd, off) = ret, replayed MAP_FIXED at ret."""
        a = ev.args
        if len(a) < 6:
            raise ArgError("mmap needs 6 arguments")
        length, prot, flags = to_int(a[1]), to_int(a[2]), to_int(a[3])
        off = to_int(a[5])
        ret = self._ret(ev)
        flags = (flags & ~uapi.MAP_FIXED_NOREPLACE) | uapi.MAP_FIXED
        proc = t.mm.proc
        if flags & uapi.MAP_ANONYMOUS:
            proc.mmap(ret, length, prot, flags, -1, 0)
            self._touch(t, ret, prot, flags, length)
            return
        fdtext, ypath = strip_fdpath(a[4])
        fd = to_int(fdtext)
        known = t.files.fds.get(fd)
        path = ypath if ypath is not None else (known[0] if known else None)
        if path is None:
            self._unsup["mmap(unknown fd)"] += 1
            return
        if path == "/dev/zero":
            proc.mmap(ret, length, prot, flags | uapi.MAP_ANONYMOUS, -1, 0)
            self._touch(t, ret, prot, flags, length)
            return
        if not path.startswith("/") or (
            path.startswith(("/dev/", "/proc/", "/sys/")) and not path.startswith("/dev/shm/")
        ):
            self._unsup["mmap(device)"] += 1
            return
        # an fd whose mode the replay does not know (opened before a seed dump, or not
        # traced) is taken as O_RDWR: the trace says the call succeeded, and a guessed
        # O_RDONLY would make a later mprotect(PROT_WRITE) fail where the kernel did not
        acc = known[1] if known and _same_file(known[0], path) else uapi.O_RDWR
        mfd = self._model_fd(t, path, off + length, acc)
        try:
            proc.mmap(ret, length, prot, flags, mfd, off)
        finally:
            proc.close(mfd)
        self._touch(t, ret, prot, flags, length)

    def _touch(self, t: Task, addr: int, prot: int, flags: int, length: int = PAGE_SIZE) -> None:
        """Note the assumed first store to new private writable memory (see ``touch``).

        The store is made later, by :meth:`_flush_touches`, so that the setup calls that
        usually follow (an mprotect(PROT_NONE) guard page, madvise) see the memory as the
        kernel did: not yet written.
        """
        if not prot & uapi.PROT_WRITE or flags & uapi.MAP_TYPE != uapi.MAP_PRIVATE:
            return
        self.assumed += 1
        if not self.touch:
            return
        t.mm.touch.append((addr, max(length, PAGE_SIZE)))

    def _flush_touches(self, mm: Mm) -> None:
        """Make the noted stores: the first of the first 4 pages and the last page of each
        range that accepts one (a PROT_NONE guard page or an unmapped page does not)."""
        pending, mm.touch = mm.touch, []
        for addr, length in pending:
            npages = length // PAGE_SIZE
            for i in [*range(min(4, npages)), npages - 1]:
                try:
                    mm.proc.write(addr + i * PAGE_SIZE, b"\0")
                    break
                except ResourceLimitError:
                    raise
                except Exception:  # SIGSEGV/SIGBUS, or the range is gone
                    continue

    def _sys_munmap(self, t: Task, ev: Syscall) -> None:
        """munmap(addr, len)."""
        t.mm.proc.munmap(to_int(ev.args[0]), to_int(ev.args[1]))

    def _sys_mprotect(self, t: Task, ev: Syscall) -> None:
        """mprotect(addr, len, prot); memory made writable is assumed written (``touch``)."""
        addr, length, prot = to_int(ev.args[0]), to_int(ev.args[1]), to_int(ev.args[2])
        t.mm.proc.mprotect(addr, length, prot)
        if prot & uapi.PROT_WRITE:
            self._touch(t, addr, prot, uapi.MAP_PRIVATE, length)

    def _sys_pkey_mprotect(self, t: Task, ev: Syscall) -> None:
        """pkey_mprotect(addr, len, prot, pkey): mprotect that also sets the key."""
        a = ev.args
        t.mm.proc.pkey_mprotect(to_int(a[0]), to_int(a[1]), to_int(a[2]), to_int(a[3]))
        if to_int(a[2]) & uapi.PROT_WRITE:
            self._touch(t, to_int(a[0]), to_int(a[2]), uapi.MAP_PRIVATE, to_int(a[1]))

    def _sys_pkey_alloc(self, t: Task, ev: Syscall) -> None:
        """pkey_alloc(flags, rights) = key; the model must hand out the same key."""
        a = ev.args
        got = t.mm.proc.pkey_alloc(to_int(a[0]) if a else 0, to_int(a[1]) if len(a) > 1 else 0)
        if got != self._ret(ev):
            raise OSError(_errno.EINVAL, f"model pkey_alloc gave {got}, the trace {ev.ret}")

    def _sys_pkey_free(self, t: Task, ev: Syscall) -> None:
        """pkey_free(key)."""
        t.mm.proc.pkey_free(to_int(ev.args[0]))

    def _sys_mseal(self, t: Task, ev: Syscall) -> None:
        """mseal(addr, len, flags)."""
        a = ev.args
        t.mm.proc.mseal(to_int(a[0]), to_int(a[1]), to_int(a[2]) if len(a) > 2 else 0)

    def _sys_mlockall(self, t: Task, ev: Syscall) -> None:
        """mlockall(flags)."""
        t.mm.proc.mlockall(to_int(ev.args[0]))

    def _sys_munlockall(self, t: Task, ev: Syscall) -> None:
        """munlockall()."""
        t.mm.proc.munlockall()

    def _sys_prctl(self, t: Task, ev: Syscall) -> None:
        """prctl: PR_SET_MDWE and PR_SET_VMA (anonymous VMA names, ``[anon:NAME]``) reach
        the model; other options do not touch VMAs."""
        a = ev.args
        op = to_int_or_none(a[0]) if a else None
        if op == uapi.PR_SET_MDWE:
            t.mm.proc.prctl(uapi.PR_SET_MDWE, *(to_int(x) for x in a[1:5]))
        elif op == uapi.PR_SET_VMA and len(a) >= 5:
            name = None if a[4] in ("NULL", "0") else to_str(a[4])
            t.mm.proc.prctl(uapi.PR_SET_VMA, to_int(a[1]), to_int(a[2]), to_int(a[3]), name)

    def _sys_mremap(self, t: Task, ev: Syscall) -> None:
        """mremap(old, old_size, new_size, flags[, new]) = ret, to where the trace says."""
        a = ev.args
        old, osz, nsz, flags = to_int(a[0]), to_int(a[1]), to_int(a[2]), to_int(a[3])
        ret = self._ret(ev)
        if ret != old or flags & (uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP):
            flags |= uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED
            t.mm.proc.mremap(old, osz, nsz, flags, ret)
        else:
            t.mm.proc.mremap(old, osz, nsz, 0)

    def _sys_madvise(self, t: Task, ev: Syscall) -> None:
        """madvise(addr, len, advice); advice as a number, a name or ``0x66 /* MADV_??? */``."""
        t.mm.proc.madvise(to_int(ev.args[0]), to_int(ev.args[1]), to_int(ev.args[2]))

    def _sys_process_madvise(self, t: Task, ev: Syscall) -> None:
        """process_madvise(pidfd, iov, vlen, advice, flags) on the caller's own mm."""
        a = ev.args
        ranges = []
        iov = a[1]
        for chunk in iov.split("{")[1:]:
            f = struct_fields("{" + chunk.split("}")[0] + "}")
            ranges.append((to_int(f["iov_base"]), to_int(f["iov_len"])))
        t.mm.proc.process_madvise(ranges, to_int(a[3]))

    def _sys_mlock(self, t: Task, ev: Syscall) -> None:
        """mlock(addr, len)."""
        t.mm.proc.mlock(to_int(ev.args[0]), to_int(ev.args[1]))

    def _sys_mlock2(self, t: Task, ev: Syscall) -> None:
        """mlock2(addr, len, flags) (MLOCK_ONFAULT kept)."""
        fl = to_int(ev.args[2]) if len(ev.args) > 2 else 0
        t.mm.proc.mlock2(to_int(ev.args[0]), to_int(ev.args[1]), fl)

    def _sys_munlock(self, t: Task, ev: Syscall) -> None:
        """munlock(addr, len)."""
        t.mm.proc.munlock(to_int(ev.args[0]), to_int(ev.args[1]))

    def _sys_brk(self, t: Task, ev: Syscall) -> None:
        """brk(addr) = new break, through the model's brk() (mm/mmap.c:SYSCALL_DEFINE1(brk)).

        The first result seen sets mm->start_brk when exec did not (a log without execve,
        or an exec whose brk base no hint gave). New heap memory is assumed written under
        ``touch``; a result that differs from the trace's is a model error.
        """
        ret = self._ret(ev)
        mm = t.mm
        if not mm.brk_known:
            mm.proc.set_brk_base(ret)
            mm.brk_known = True
        arg = to_int(ev.args[0]) if ev.args else 0
        old = mm.proc.brk(0)
        got = mm.proc.brk(arg)
        if got != ret:
            raise OSError(_errno.ENOMEM, f"model brk gave {got:#x}, the trace {ret:#x}")
        if got > old:
            lo = (old + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            hi = (got + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            if hi > lo:
                self._touch(t, lo, uapi.PROT_WRITE, uapi.MAP_PRIVATE, hi - lo)

    # fds ---------------------------------------------------------------------

    def _open_common(self, t: Task, ev: Syscall, path_arg: int, flags_arg: int | None) -> None:
        """Record the fd an open-like call returned (path from -y if shown)."""
        ret = ev.ret or ""
        fdtext, ypath = strip_fdpath(ret)
        fd = to_int(fdtext)
        flags = (
            to_int(ev.args[flags_arg])
            if flags_arg is not None and len(ev.args) > flags_arg
            else (uapi.O_WRONLY | uapi.O_CREAT | uapi.O_TRUNC)
        )
        path = ypath
        if path is None:
            try:
                path = to_str(ev.args[path_arg])
            except ArgError:
                path = None
        if path is None:
            return
        if ypath is None:
            path = self._resolve(t, ev.args[0] if path_arg == 1 and ev.args else None, path)
            if self.host_files:
                # no -y: the kernel prints the file's real path (d_path()), symlinks
                # resolved, e.g. /lib → /usr/lib on a merged-/usr system
                path = os.path.realpath(path)
        elif path_arg == 1 and ev.args:
            self._resolve(t, ev.args[0], "/")  # learn the cwd from AT_FDCWD's -y path
        t.files.fds[fd] = (path, flags & uapi.O_ACCMODE, bool(flags & uapi.O_CLOEXEC))

    def _resolve(self, t: Task, dirfd_arg: str | None, path: str) -> str:
        """An absolute path for ``path`` as the traced task's kernel resolved it.

        Relative paths go to the dirfd (its -y path or a tracked fd), else to the task's
        cwd. ``AT_FDCWD`` printed by -y as ``-100</cwd>`` tells the task's cwd itself.
        """
        base = t.cwd
        if dirfd_arg is not None:
            dtext, dpath = strip_fdpath(dirfd_arg)
            try:
                dfd = to_int(dtext)
            except ArgError:
                dfd = None
            if dfd == AT_FDCWD and dpath is not None and dpath.startswith("/"):
                t.cwd = base = dpath
            elif dpath is not None:
                base = dpath
            elif dfd is not None and dfd in t.files.fds:
                base = t.files.fds[dfd][0]
        if path.startswith("/"):
            return os.path.normpath(path)
        return os.path.normpath(os.path.join(base, path))

    def _path_arg(self, t: Task, ev: Syscall, dirfd: int | None, idx: int) -> str | None:
        """The absolute path of argument ``idx`` (relative to argument ``dirfd``)."""
        try:
            p = to_str(ev.args[idx])
        except (ArgError, IndexError):
            return None
        return self._resolve(t, ev.args[dirfd] if dirfd is not None else None, p)

    def _unlink_path(self, t: Task, path: str | None) -> None:
        """The model file of ``path`` loses its name (its mappings print `` (deleted)``)."""
        if path is not None and path in self.files_made:
            t.mm.proc.unlink(path)
            del self.files_made[path]

    def _sys_unlink(self, t: Task, ev: Syscall) -> None:
        """unlink(path)."""
        self._unlink_path(t, self._path_arg(t, ev, None, 0))

    def _sys_unlinkat(self, t: Task, ev: Syscall) -> None:
        """unlinkat(dirfd, path, flags)."""
        self._unlink_path(t, self._path_arg(t, ev, 0, 1))

    def _rename(self, t: Task, old: str | None, new: str | None) -> None:
        """A model file moves to a new name (its mappings print the new one)."""
        if old is None or new is None or old not in self.files_made:
            return
        t.mm.proc.rename(old, new)
        self.files_made[new] = self.files_made.pop(old)

    def _sys_rename(self, t: Task, ev: Syscall) -> None:
        """rename(old, new)."""
        self._rename(t, self._path_arg(t, ev, None, 0), self._path_arg(t, ev, None, 1))

    def _sys_renameat(self, t: Task, ev: Syscall) -> None:
        """renameat(olddirfd, old, newdirfd, new) (and renameat2's flags, ignored)."""
        self._rename(t, self._path_arg(t, ev, 0, 1), self._path_arg(t, ev, 2, 3))

    _sys_renameat2 = _sys_renameat

    def _sys_chdir(self, t: Task, ev: Syscall) -> None:
        """chdir(path): the cwd that relative paths of later opens resolve against."""
        try:
            p = to_str(ev.args[0])
        except (ArgError, IndexError):
            return
        t.cwd = os.path.normpath(os.path.join(t.cwd, p))

    def _sys_fchdir(self, t: Task, ev: Syscall) -> None:
        """fchdir(fd): as chdir, to the directory behind a tracked fd."""
        fdtext, ypath = strip_fdpath(ev.args[0])
        known = t.files.fds.get(to_int(fdtext))
        path = ypath if ypath is not None else (known[0] if known else None)
        if path:
            t.cwd = path

    def _sys_open(self, t: Task, ev: Syscall) -> None:
        """open(path, flags, mode) = fd."""
        self._open_common(t, ev, 0, 1)

    def _sys_openat(self, t: Task, ev: Syscall) -> None:
        """openat(dirfd, path, flags, mode) = fd."""
        self._open_common(t, ev, 1, 2)

    def _sys_openat2(self, t: Task, ev: Syscall) -> None:
        """openat2(dirfd, path, {flags=...}, size) = fd."""
        try:
            flags = to_int(struct_fields(ev.args[2]).get("flags", "0"))
        except (ArgError, IndexError):
            flags = 0
        self._open_common(t, ev, 1, None)
        fd = to_int(strip_fdpath(ev.ret or "")[0])
        if fd in t.files.fds:
            p = t.files.fds[fd][0]
            t.files.fds[fd] = (p, flags & uapi.O_ACCMODE, bool(flags & uapi.O_CLOEXEC))

    def _sys_creat(self, t: Task, ev: Syscall) -> None:
        """creat(path, mode) = fd (O_WRONLY|O_CREAT|O_TRUNC)."""
        self._open_common(t, ev, 0, None)

    def _sys_memfd_create(self, t: Task, ev: Syscall) -> None:
        """memfd_create(name, flags) = fd: a model file ``/memfd:NAME (deleted)``."""
        fdtext, ypath = strip_fdpath(ev.ret or "")
        try:
            name = to_str(ev.args[0])
        except (ArgError, IndexError):
            name = "memfd"
        # the kernel's name for it, so the model file prints as /proc/PID/maps does
        # (simplification: two live memfds of one name are one model file)
        path = ypath if ypath else f"/memfd:{name} (deleted)"
        self._ensure_file(t, path, 0)
        t.files.fds[to_int(fdtext)] = (path, uapi.O_RDWR, False)

    def _sys_close(self, t: Task, ev: Syscall) -> None:
        """close(fd)."""
        t.files.fds.pop(to_int(strip_fdpath(ev.args[0])[0]), None)

    def _sys_close_range(self, t: Task, ev: Syscall) -> None:
        """close_range(first, last, flags); CLOSE_RANGE_CLOEXEC only marks."""
        lo, hi = to_int(ev.args[0]), to_int(ev.args[1])
        flags = to_int(ev.args[2]) if len(ev.args) > 2 else 0
        for fd in [f for f in t.files.fds if lo <= f <= hi]:
            if flags & 4:
                p, acc, _ = t.files.fds[fd]
                t.files.fds[fd] = (p, acc, True)
            else:
                del t.files.fds[fd]

    def _dup(self, t: Task, old: int, new: int, cloexec: bool = False) -> None:
        """Make ``new`` refer to what ``old`` does."""
        if old in t.files.fds:
            p, acc, _ = t.files.fds[old]
            t.files.fds[new] = (p, acc, cloexec)
        else:
            t.files.fds.pop(new, None)

    def _sys_dup(self, t: Task, ev: Syscall) -> None:
        """dup(fd) = new."""
        self._dup(t, to_int(strip_fdpath(ev.args[0])[0]), to_int(strip_fdpath(ev.ret or "")[0]))

    def _sys_dup2(self, t: Task, ev: Syscall) -> None:
        """dup2(old, new) = new."""
        self._dup(t, to_int(strip_fdpath(ev.args[0])[0]), to_int(strip_fdpath(ev.ret or "")[0]))

    def _sys_dup3(self, t: Task, ev: Syscall) -> None:
        """dup3(old, new, flags) = new."""
        fl = to_int(ev.args[2]) if len(ev.args) > 2 else 0
        self._dup(
            t,
            to_int(strip_fdpath(ev.args[0])[0]),
            to_int(strip_fdpath(ev.ret or "")[0]),
            bool(fl & uapi.O_CLOEXEC),
        )

    def _sys_fcntl(self, t: Task, ev: Syscall) -> None:
        """fcntl(fd, F_DUPFD or F_DUPFD_CLOEXEC, min) = new; other commands ignored."""
        if len(ev.args) < 2:
            return
        try:
            cmd = to_int(ev.args[1])
        except ArgError:
            return
        if cmd in (0, 1030):
            self._dup(
                t,
                to_int(strip_fdpath(ev.args[0])[0]),
                to_int(strip_fdpath(ev.ret or "")[0]),
                cmd == 1030,
            )

    def _file_of(self, t: Task, arg: str) -> str | None:
        """The path behind an fd argument."""
        fdtext, ypath = strip_fdpath(arg)
        if ypath is not None:
            return ypath
        known = t.files.fds.get(to_int(fdtext))
        return known[0] if known else None

    @contextlib.contextmanager
    def _model_file(self, t: Task, fdtext: str) -> Iterator[tuple[Any, int, str] | None]:
        """(process, a model fd open O_RDWR, path) for the traced fd, or None if unknown."""
        path = self._file_of(t, fdtext)
        if path is None or path not in self.files_made:
            yield None
            return
        proc = t.mm.proc
        fd = proc.open(path, uapi.O_RDWR)
        try:
            yield proc, fd, path
        finally:
            proc.close(fd)

    def _sys_ftruncate(self, t: Task, ev: Syscall) -> None:
        """ftruncate(fd, len) on a file the model knows (shmem truncation semantics)."""
        with self._model_file(t, ev.args[0]) as f:
            if f is not None:
                proc, fd, path = f
                length = to_int(ev.args[1])
                proc.ftruncate(fd, length)
                self.files_made[path] = length

    def _sys_fallocate(self, t: Task, ev: Syscall) -> None:
        """fallocate(fd, mode, off, len) on a file the model knows."""
        with self._model_file(t, ev.args[0]) as f:
            if f is not None:
                proc, fd, _path = f
                proc.fallocate(fd, to_int(ev.args[1]), to_int(ev.args[2]), to_int(ev.args[3]))

    # tasks -------------------------------------------------------------------

    def _clone_flags(self, ev: Syscall) -> int:
        """The CLONE_* flags of a clone-family call."""
        if ev.name == "clone":
            f = keyword_arg(ev.args, "flags")
            if f is None:
                f = ev.args[1] if len(ev.args) > 1 else "0"  # raw, unnamed form
            return to_int(f) & ~0xFF
        if ev.name == "clone3":
            return to_int(struct_fields(ev.args[0]).get("flags", "0"))
        if ev.name == "vfork":
            return CLONE_VM | CLONE_VFORK
        return 0

    def _sys_clone(self, t: Task, ev: Syscall) -> None:
        """clone/clone3/fork/vfork = child pid."""
        child = to_int(strip_fdpath(ev.ret or "")[0])
        self.pending_clones = [c for c in self.pending_clones if c[0] != ev.start_lineno]
        if child in self.bound_children:
            self.bound_children.discard(child)
            return
        if child in self.tasks:
            return
        self._clone(t, child, self._clone_flags(ev))

    _sys_clone3 = _sys_clone
    _sys_fork = _sys_clone
    _sys_vfork = _sys_clone

    def note_unfinished_clone(self, lineno: int, pid: int | None, name: str, head: str) -> None:
        """A clone started (``<unfinished ...>``): its child may show up before it returns."""
        try:
            fake = Syscall(lineno, lineno, pid, name, _head_args(head), None, None)
            flags = self._clone_flags(fake)
        except (ArgError, ValueError):
            flags = 0
        self.pending_clones.append((lineno, pid, flags, name))

    def _sys_execve(self, t: Task, ev: Syscall) -> None:
        """execve(path, argv, envp) = 0: a new mm (exec_mmap()) built by load_elf_binary()."""
        try:
            path = to_str(ev.args[0 if ev.name == "execve" else 1])
        except (ArgError, IndexError):
            path = ""
        # de_thread(): the other threads of the group are gone
        for pid, other in list(self.tasks.items()):
            if other is not t and other.tgid == t.tgid and other.mm is t.mm:
                self._drop_task(pid)
        old = t.mm
        hints = self.hints_for(ev)
        if hints.cwd is not None and t.cwd == "/":
            t.cwd = hints.cwd  # the first -y AT_FDCWD path after exec: the cwd it ran in
        if path and not path.startswith("/"):
            path = os.path.normpath(os.path.join(t.cwd, path))  # the traced task's cwd
        if _PROC_EXE.match(path) and old.exe:
            path = old.exe  # /proc/self/exe is the traced program, not this one
        old.tasks.discard(t.pid)
        if not old.tasks:
            self._exit_proc(old.proc)
        proc = self.k.spawn()
        t.mm = Mm(proc, {t.pid}, exe=path)
        t.tgid = t.pid
        t.files = FdTable({fd: v for fd, v in t.files.fds.items() if not v[2]})
        self.r._pids[ev.pid] = _raw(proc)
        self.r.execs += 1
        self._exec_seq[ev.pid] += 1
        snap = None
        if self.rec is not None:
            snap = self.rec.exec_snapshot(ev.pid, ev.lineno, self._exec_seq[ev.pid])
        if snap is not None:
            lay = self._exec_from_snapshot(t, ev, path, snap)
        elif self.host_files:
            lay = layout.load_elf_binary(proc, ev.pid, ev.lineno, path, hints, self._opener(t))
        else:
            lay = layout.ExecLayout(
                ev.pid,
                ev.lineno,
                path,
                "none",
                notes=[
                    "no exec snapshot and host files not read (host_files=False): "
                    "empty address space"
                ],
            )
        if hints.brk is not None and not t.mm.brk_known:
            proc.set_brk_base(hints.brk)
            t.mm.brk_known = True
        self.r.exec_layouts.append(lay)
        if snap is not None and self.verify:
            self._check_snapshot(snap, proc)

    _sys_execveat = _sys_execve

    def _exec_from_snapshot(
        self, t: Task, ev: Syscall, path: str, snap: Snapshot
    ) -> layout.ExecLayout:
        """The new image exactly as the recording's exec snapshot shows it.

        binfmt_elf's layout (ASLR included) is in the snapshot; mm->start_stack and
        mm->start_brk come from its /proc/PID/stat fields when the recorder took them
        (else the ``[stack]`` VMA's top page, and the first brk() result).
        """
        proc = t.mm.proc
        vmas = layout.parse_maps(snap.text(), f"snapshot {snap.pid}.{snap.seq}.exec")
        notes = layout.apply_maps_dump(proc, vmas, self._opener(t), touch=False)
        if "start_stack" in snap.stat:
            proc.set_start_stack(snap.stat["start_stack"])
        if "start_brk" in snap.stat:
            proc.set_brk_base(snap.stat["start_brk"])
            t.mm.brk_known = True
        return layout.ExecLayout(
            ev.pid,
            ev.lineno,
            path,
            "snapshot",
            placed_by="the recording's exec snapshot",
            notes=notes,
        )

    def _check_snapshot(self, snap: Snapshot, proc: Any) -> None:
        """Compare the model process with a snapshot; keep the result in ``checkpoints``."""
        from vmalab.trace.verify import compare_maps

        real = snap.text()
        diffs, n = compare_maps(_raw(proc).smaps(), real)
        self.r.checkpoints.append(Checkpoint(snap.pid, snap.kind, snap.seq, snap.line, n, diffs))

    def hints_for(self, ev: Syscall) -> layout.ExecHints:
        """Look ahead in the trace for where this execve's binary and interpreter went."""
        return prescan_exec(self.path, ev.lineno, ev.pid, self.offset)

    def _sys_exit(self, t: Task, ev: Syscall) -> None:
        """exit(status): this task is gone."""
        self._exit_task(ev.pid)

    def _sys_exit_group(self, t: Task, ev: Syscall) -> None:
        """exit_group(status): every task of the thread group is gone."""
        for pid, other in list(self.tasks.items()):
            if other.tgid == t.tgid:
                self._forget_clone(pid)
                self._drop_task(pid)

    # ------------------------------------------------------------------ start

    def start_from_dump(self, pid: int, dump: str) -> None:
        """Begin with ``pid`` holding exactly the mappings of a maps/smaps dump text."""
        proc = self.k.spawn()
        t = Task(pid, pid, Mm(proc, {pid}), FdTable())
        self.tasks[pid] = t
        self.r._pids[pid] = _raw(proc)
        self.start_pid = pid
        vmas = layout.parse_maps(dump, "start dump")
        self.r.start_notes = layout.apply_maps_dump(proc, vmas, self._opener(t), self.touch)
        t.mm.brk_known = any(v.path == "[heap]" for v in vmas)
        self.r.start_method = "maps-dump"


def to_int_or_none(text: str) -> int | None:
    """An argument as an int, or None when it is not a number (a PR_* name, say)."""
    try:
        return to_int(text)
    except ArgError:
        return None


def _raw(p: Any) -> Any:
    """The model Process behind a guardify proxy."""
    return getattr(p, "raw", p)


def _head_args(head: str) -> list[str]:
    """Arguments of the first half of an unfinished call (best effort)."""
    from vmalab.trace.parse import split_args

    try:
        return split_args(head + ")", 0)[0]
    except ValueError:
        return []


def _same_file(a: str, b: str) -> bool:
    """Whether two traced paths name one file (one may carry `` (deleted)``)."""
    suffix = " (deleted)"
    return a.removesuffix(suffix) == b.removesuffix(suffix)


_EXECS = ("execve", "execveat")
_PROC_EXE = re.compile(r"^/proc/(self|\d+)/exe$")
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

LOOKAHEAD_CALLS = 20000
"""How many calls of the exec'ing pid :func:`prescan_exec` reads after an execve."""


def prescan_exec(
    path: str, lineno: int, pid: int | None, offset: int | None = None
) -> layout.ExecHints:
    """Collect :class:`ExecHints` for the execve that completed at ``lineno``.

    Reads the log again after that line (from byte ``offset`` when known, else by skipping
    ``lineno`` lines; constant memory), up to the pid's next execve or
    :data:`LOOKAHEAD_CALLS` of its calls: the first brk result, traced mmap ranges and
    ``mprotect(..., PROT_READ)`` candidates for the relro of the binary and the interpreter.
    """
    h = layout.ExecHints()
    n = 0
    try:
        with open(path, "rb") as f:
            if offset is not None:
                f.seek(offset)
                raw: Iterable[bytes] = f
            else:
                raw = itertools.islice(f, lineno, None)
            lines = (b.decode("utf-8", "replace") for b in raw)
            for ev in parse_lines(lines, lenient=True):
                if not isinstance(ev, Syscall) or ev.pid != pid:
                    continue
                n += 1
                if n > LOOKAHEAD_CALLS or ev.name in ("execve", "execveat") and not ev.failed:
                    break
                if h.cwd is None and ev.args and ev.args[0].startswith("-100</"):
                    h.cwd = strip_fdpath(ev.args[0])[1]  # failed calls show it too
                if ev.failed:
                    continue
                try:
                    if ev.name == "brk" and h.brk is None:
                        h.brk = to_int(ev.ret or "")
                    elif ev.name == "mmap":
                        a = to_int(ev.ret or "")
                        h.mapped.append((a, a + to_int(ev.args[1])))
                    elif ev.name == "mprotect" and to_int(ev.args[2]) == uapi.PROT_READ:
                        a = to_int(ev.args[0])
                        if not any(lo <= a < hi for lo, hi in h.mapped):
                            h.mprotects.append((a, to_int(ev.args[1])))
                except (ArgError, ValueError, IndexError):
                    continue
    except OSError:
        pass
    return h


NEED_ARGS = MODELLED | {"execve", "execveat", "clone", "clone3", "fork", "vfork"}
"""Calls whose arguments the replay reads; the parser skips the others' arguments."""


def _events(
    rp: Replayer, lines: Iterable[str], lenient: bool, skipped: list[int], skip_to: int = 0
) -> Iterator[Syscall | TaskExit | PageFault]:
    """parse_lines(), also reporting unfinished clone-family calls to the replayer."""
    from vmalab.trace import parse as P

    pending: dict[int | None, tuple[int, str, str]] = {}
    for lineno, raw in enumerate(lines, 1):
        try:
            ev = P._parse_one(lineno, raw, pending, NEED_ARGS)
        except TraceSyntaxError:
            if not lenient:
                raise
            skipped.append(lineno)
            continue
        if ev is None:
            # an unfinished clone: the child may run before the parent returns
            if lineno > skip_to and raw.rstrip().endswith("<unfinished ...>"):
                for pid, (start, name, head) in pending.items():
                    if start == lineno and name in ("clone", "clone3", "fork", "vfork"):
                        rp.note_unfinished_clone(lineno, pid, name, head)
            continue
        if isinstance(ev, PageFault) and pending.get(ev.pid, (0, ""))[1] in _EXECS:
            continue  # inside execve: the new image's faults, already in its snapshot
        yield ev
    for pid, (start, name, body) in pending.items():
        if name in ("exit", "exit_group"):
            yield Syscall(start, start, pid, name, [body.strip().rstrip(",")], "?", None)


def replay(
    path: str,
    design: str | None = None,
    *,
    stop_at_line: int | None = None,
    start: tuple[int, int, str] | None = None,
    lenient: bool = False,
    observer: Observer | None = None,
    sample_every: int = 0,
    max_map_count: int = 1 << 20,
    guardify: bool = False,
    touch: bool | None = None,
    on_last_exit: Observer | None = None,
    host_files: bool = False,
    verify: bool = False,
) -> ReplayResult:
    """Replay an strace log, or a recording of ``vmalab record``, into a fresh Kernel.

    ``path`` is an strace log, a recording directory or the ``trace.strace`` inside one. A
    recording starts every exec image from its snapshot and replays its page faults; its
    ``design`` defaults to the one the recorded kernel implements (``sticky`` on Linux
    6.18.y and 6.19), a plain log's to ``tagged``. ``stop_at_line`` (1-based, inclusive;
    the lines of trace.strace for a recording) stops early; ``start=(pid, line, dump)``
    skips lines 1..line and starts ``pid`` from a maps/smaps dump text; ``lenient`` skips
    and counts malformed lines instead of raising ValueError (which names the line).
    ``observer(lineno, kernel)`` is called every ``sample_every`` applied calls (the
    timeline hook of ``vmalab compare``). ``max_map_count`` defaults high so that a trace
    from a machine with a raised limit replays. ``guardify`` applies the what-if of
    :mod:`vmalab.trace.guardify`; ``touch`` assumes one store to each new private
    writable range (see the module docstring): the default for logs without recorded
    faults, off for recordings that have them. ``on_last_exit(lineno, kernel)`` is called
    just before the last live process exits. ``host_files`` lets a plain log's replay read
    this machine's files (ELF headers at execve, file sizes); a recording needs none.
    ``verify`` compares the model with every snapshot of a recording (``r.checkpoints``).
    Returns a :class:`ReplayResult`.
    """
    import time

    t0 = time.perf_counter()
    rec = open_recording(path) if is_recording(path) else None
    trace = rec.trace if rec is not None else path
    if design is None:
        design = rec.default_design() if rec is not None else "tagged"
    if touch is None:
        touch = rec is None or not rec.faults_captured
    if stop_at_line is not None and stop_at_line < 1:
        raise ValueError(f"stop_at_line must be at least 1, not {stop_at_line}")
    rp = Replayer(
        trace,
        design,
        lenient=lenient,
        observer=observer,
        sample_every=sample_every,
        max_map_count=max_map_count,
        guardify=guardify,
        touch=touch,
        on_last_exit=on_last_exit,
        recording=rec,
        host_files=host_files,
        verify=verify,
    )
    skip_to = 0
    if start is not None:
        spid, sline, dump = start
        rp.start_from_dump(spid, dump)
        skip_to = sline
    skipped: list[int] = []
    try:
        f = layout.open_host_file(trace)
    except OSError as e:
        raise FileNotFoundError(e.errno, f"cannot read trace {trace}: {e.strerror}") from None

    def lines() -> Iterator[str]:
        # track the byte offset so that an execve's lookahead can seek() to its line
        for raw in f:
            rp.offset += len(raw)
            yield raw.decode("utf-8", "replace")

    with f:
        rp.feed(_events(rp, lines(), lenient, skipped, skip_to), stop_at_line, skip_to)
    rp.r.malformed += len(skipped)
    rp.r.seconds = time.perf_counter() - t0
    if rp.guardify is not None:
        rp.r.guardify = rp.guardify.stats
    if rec is None or not rec.faults_captured:
        rp.r.undecided.append(
            f"{rp.assumed} private writable ranges with unseen faults; assumed "
            + ("one store each (touch)" if touch else "no store (touch=False)")
        )
    elif rec.lost_events:
        rp.r.undecided.append(
            f"the recording lost {rec.lost_events} perf events: some faults are missing"
        )
    return rp.r
