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

The house: :class:`Replayer` dispatches each event through one table, :data:`HANDLERS`
(syscall name → handler), to the handlers of one syscall family each:
:mod:`vmalab.trace.handlers_mm` (mmap, munmap, mprotect, mremap, madvise, mlock, brk,
pkeys, mseal, prctl), :mod:`vmalab.trace.handlers_fs` (open, close, dup, fcntl, unlink,
rename, chdir, memfd_create, ftruncate, fallocate) and :mod:`vmalab.trace.handlers_task`
(clone, execve, exit). They work on a :class:`vmalab.trace.replay_state.ReplayState`: the
tasks, fd tables, model files and the :class:`ReplayResult`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from vmalab.trace import handlers_fs, handlers_ipc, handlers_mm, handlers_task, layout
from vmalab.trace.events import trace_events
from vmalab.trace.handlers_fs import AT_FDCWD
from vmalab.trace.handlers_task import LOOKAHEAD_CALLS, prescan_exec
from vmalab.trace.parse import PageFault, Syscall, TaskExit
from vmalab.trace.recording import is_recording, open_recording
from vmalab.trace.replay_state import (
    MAX_MODEL_ERRORS,
    Checkpoint,
    FdTable,
    Handler,
    Mm,
    Observer,
    ReplayResult,
    ReplayState,
    Task,
    to_int_or_none,
)

__all__ = [
    "AT_FDCWD",
    "HANDLERS",
    "LOOKAHEAD_CALLS",
    "MAX_MODEL_ERRORS",
    "MEMORY_SYSCALLS",
    "MODELLED",
    "NEED_ARGS",
    "Checkpoint",
    "FdTable",
    "Mm",
    "Observer",
    "ReplayResult",
    "Replayer",
    "Task",
    "prescan_exec",
    "replay",
    "to_int_or_none",
]

HANDLERS: dict[str, Handler] = {
    **handlers_mm.HANDLERS,
    **handlers_fs.HANDLERS,
    **handlers_task.HANDLERS,
    **handlers_ipc.HANDLERS,
}
"""Every call the replay models, by syscall name: the one dispatch table of :class:`Replayer`."""

MODELLED = frozenset(HANDLERS)
"""The names of :data:`HANDLERS`."""

MEMORY_SYSCALLS = frozenset(handlers_mm.HANDLERS) | handlers_mm.UNMODELLED
"""Memory-management calls; those the replay does not model are counted as unsupported
(the other calls it does not model are counted in ``ignored``)."""


class Replayer(ReplayState):
    """The replay state machine; :func:`replay` drives it over a file."""

    def feed(
        self,
        events: Iterable[Syscall | TaskExit | PageFault],
        stop_at_line: int | None,
        skip_to: int = 0,
    ) -> None:
        """Apply events in order (those completing after ``stop_at_line`` are not):
        :meth:`ReplayState.feed_events` with this module's dispatch table."""
        self.feed_events(
            events,
            stop_at_line,
            skip_to,
            HANDLERS,
            MEMORY_SYSCALLS,
            frozenset(handlers_task.CLONES),
        )

    def note_unfinished_clone(self, lineno: int, pid: int | None, name: str, head: str) -> None:
        """A clone started (``<unfinished ...>``): its child may show up before it returns."""
        handlers_task.note_unfinished_clone(self, lineno, pid, name, head)

    def hints_for(self, ev: Syscall) -> layout.ExecHints:
        """Look ahead in the trace for where this execve's binary and interpreter went."""
        return prescan_exec(self.path, ev.lineno, ev.pid, self.offset)


NEED_ARGS = MODELLED | {"execve", "execveat", "clone", "clone3", "fork", "vfork"}
"""Calls whose arguments the replay reads; the parser skips the others' arguments."""


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

    with f:
        rp.feed(trace_events(rp, f, NEED_ARGS, lenient, skipped, skip_to), stop_at_line, skip_to)
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
