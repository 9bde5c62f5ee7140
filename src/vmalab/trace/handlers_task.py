"""Replay handlers of the task calls: clone, clone3, fork, vfork, execve, execveat, exit and
exit_group.

CLONE_VM children (threads, vfork, posix_spawn) share the parent's Process; others get
``Process.fork()`` (kernel/fork.c:copy_process()). A child whose first line precedes its
parent's return is bound to the clone in flight (:func:`note_unfinished_clone`). execve
gives the task a new Process (fs/exec.c:exec_mmap()), built from the recording's exec
snapshot, or by :func:`vmalab.trace.layout.load_elf_binary` with ``host_files``, or left
empty; exit ends a task, exit_group its thread group.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

from vmalab import uapi
from vmalab.trace import layout
from vmalab.trace.args import (
    CLONE_VFORK,
    CLONE_VM,
    ArgError,
    keyword_arg,
    strip_fdpath,
    struct_fields,
    to_int,
    to_str,
)
from vmalab.trace.parse import Syscall, parse_lines, split_args
from vmalab.trace.recording import Snapshot
from vmalab.trace.replay_state import FdTable, Handler, Mm, ReplayState, Task

CLONES = ("clone", "clone3", "fork", "vfork")
EXECS = ("execve", "execveat")
_PROC_EXE = re.compile(r"^/proc/(self|\d+)/exe$")


def clone_flags(ev: Syscall) -> int:
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


def sys_clone(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """clone/clone3/fork/vfork = child pid."""
    child = to_int(strip_fdpath(ev.ret or "")[0])
    rp.pending_clones = [c for c in rp.pending_clones if c[0] != ev.start_lineno]
    if child in rp.bound_children:
        rp.bound_children.discard(child)
        return
    if child in rp.tasks:
        return
    rp.clone_task(t, child, clone_flags(ev))


def note_unfinished_clone(
    rp: ReplayState, lineno: int, pid: int | None, name: str, head: str
) -> None:
    """A clone started (``<unfinished ...>``): its child may show up before it returns."""
    try:
        fake = Syscall(lineno, lineno, pid, name, _head_args(head), None, None)
        flags = clone_flags(fake)
    except (ArgError, ValueError):
        flags = 0
    rp.pending_clones.append((lineno, pid, flags, name))


def _head_args(head: str) -> list[str]:
    """Arguments of the first half of an unfinished call (best effort)."""
    try:
        return split_args(head + ")", 0)[0]
    except ValueError:
        return []


def sys_execve(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """execve(path, argv, envp) = 0: a new mm (exec_mmap()) built by load_elf_binary()."""
    try:
        path = to_str(ev.args[0 if ev.name == "execve" else 1])
    except (ArgError, IndexError):
        path = ""
    # de_thread(): the other threads of the group are gone
    for pid, other in list(rp.tasks.items()):
        if other is not t and other.tgid == t.tgid and other.mm is t.mm:
            rp.drop_task(pid)
    old = t.mm
    hints = prescan_exec(rp.path, ev.lineno, ev.pid, rp.offset)
    if hints.cwd is not None and t.cwd == "/":
        t.cwd = hints.cwd  # the first -y AT_FDCWD path after exec: the cwd it ran in
    if path and not path.startswith("/"):
        path = os.path.normpath(os.path.join(t.cwd, path))  # the traced task's cwd
    if _PROC_EXE.match(path) and old.exe:
        path = old.exe  # /proc/self/exe is the traced program, not this one
    old.tasks.discard(t.pid)
    if not old.tasks:
        rp.exit_proc(old.proc)
    proc = rp.k.spawn()
    t.mm = Mm(proc, {t.pid}, exe=path)
    t.tgid = t.pid
    t.files = FdTable({fd: v for fd, v in t.files.fds.items() if not v[2]})
    rp.r.bind(ev.pid, proc)
    rp.r.execs += 1
    rp.exec_seq[ev.pid] += 1
    snap = None
    if rp.rec is not None:
        snap = rp.rec.exec_snapshot(ev.pid, ev.lineno, rp.exec_seq[ev.pid])
    if snap is not None:
        lay = _exec_from_snapshot(rp, t, ev, path, snap)
    elif rp.host_files:
        lay = layout.load_elf_binary(proc, ev.pid, ev.lineno, path, hints, rp.opener(t))
    else:
        lay = layout.ExecLayout(
            ev.pid,
            ev.lineno,
            path,
            "none",
            notes=[
                "no exec snapshot and host files not read (host_files=False): empty address space"
            ],
        )
    if hints.brk is not None and not t.mm.brk_known:
        proc.set_brk_base(hints.brk)
        t.mm.brk_known = True
    rp.r.exec_layouts.append(lay)
    if snap is not None and rp.verify:
        rp.check_snapshot(snap, proc)


def _exec_from_snapshot(
    rp: ReplayState, t: Task, ev: Syscall, path: str, snap: Snapshot
) -> layout.ExecLayout:
    """The new image exactly as the recording's exec snapshot shows it.

    binfmt_elf's layout (ASLR included) is in the snapshot; mm->start_stack and
    mm->start_brk come from its /proc/PID/stat fields when the recorder took them
    (else the ``[stack]`` VMA's top page, and the first brk() result).
    """
    proc = t.mm.proc
    vmas = layout.parse_maps(snap.text(), f"snapshot {snap.pid}.{snap.seq}.exec")
    notes = layout.apply_maps_dump(proc, vmas, rp.opener(t), touch=False)
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


def sys_exit(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """exit(status): this task is gone."""
    rp.exit_task(ev.pid)


def sys_exit_group(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """exit_group(status): every task of the thread group is gone."""
    for pid, other in list(rp.tasks.items()):
        if other.tgid == t.tgid:
            rp.forget_clone(pid)
            rp.drop_task(pid)


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
                if n > LOOKAHEAD_CALLS or ev.name in EXECS and not ev.failed:
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


HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(CLONES, sys_clone),
    "execve": sys_execve,
    "execveat": sys_execve,
    "exit": sys_exit,
    "exit_group": sys_exit_group,
}
"""The task calls the replay models, by syscall name."""
