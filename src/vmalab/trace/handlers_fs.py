"""Replay handlers of the file calls: open, close, dup, fcntl, unlink, rename, chdir,
memfd_create, ftruncate and fallocate.

They keep each task's fd table (fd → path, access mode, close-on-exec), so that a later
mmap of an fd maps the right model file, and the model's tmpfs in step with the program's
files: a file unlinked or renamed in the trace prints `` (deleted)`` or its new name in the
model's maps. Paths come from strace's ``-y`` annotation (``3</usr/lib/libc.so.6>``) when
the log has it, else from the call's arguments resolved against the dirfd or the cwd.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from vmalab import uapi
from vmalab.trace import handlers_ipc
from vmalab.trace.args import ArgError, strip_fdpath, struct_fields, to_int, to_str
from vmalab.trace.parse import Syscall
from vmalab.trace.replay_state import Handler, ReplayState, Task

AT_FDCWD = -100
F_DUPFD = 0
F_DUPFD_CLOEXEC = 1030
CLOSE_RANGE_CLOEXEC = 4


def _open_common(
    rp: ReplayState, t: Task, ev: Syscall, path_arg: int, flags_arg: int | None
) -> None:
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
        path = resolve(t, ev.args[0] if path_arg == 1 and ev.args else None, path)
        if rp.host_files:
            # no -y: the kernel prints the file's real path (d_path()), symlinks
            # resolved, e.g. /lib → /usr/lib on a merged-/usr system
            path = os.path.realpath(path)
    elif path_arg == 1 and ev.args:
        resolve(t, ev.args[0], "/")  # learn the cwd from AT_FDCWD's -y path
    t.files.fds[fd] = (path, flags & uapi.O_ACCMODE, bool(flags & uapi.O_CLOEXEC))


def resolve(t: Task, dirfd_arg: str | None, path: str) -> str:
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


def _path_arg(t: Task, ev: Syscall, dirfd: int | None, idx: int) -> str | None:
    """The absolute path of argument ``idx`` (relative to argument ``dirfd``)."""
    try:
        p = to_str(ev.args[idx])
    except (ArgError, IndexError):
        return None
    return resolve(t, ev.args[dirfd] if dirfd is not None else None, p)


def _fd_arg(text: str) -> int:
    """An fd argument or return value, its ``-y`` path left out."""
    return to_int(strip_fdpath(text)[0])


def _unlink_path(rp: ReplayState, t: Task, path: str | None) -> None:
    """The model file of ``path`` loses its name (its mappings print `` (deleted)``)."""
    if path is not None and path in rp.files_made:
        t.mm.proc.unlink(path)
        del rp.files_made[path]


def sys_unlink(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """unlink(path)."""
    _unlink_path(rp, t, _path_arg(t, ev, None, 0))


def sys_unlinkat(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """unlinkat(dirfd, path, flags)."""
    _unlink_path(rp, t, _path_arg(t, ev, 0, 1))


def _rename(rp: ReplayState, t: Task, old: str | None, new: str | None) -> None:
    """A model file moves to a new name (its mappings print the new one)."""
    if old is None or new is None or old not in rp.files_made:
        return
    t.mm.proc.rename(old, new)
    rp.files_made[new] = rp.files_made.pop(old)


def sys_rename(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """rename(old, new)."""
    _rename(rp, t, _path_arg(t, ev, None, 0), _path_arg(t, ev, None, 1))


def sys_renameat(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """renameat(olddirfd, old, newdirfd, new) (and renameat2's flags, ignored)."""
    _rename(rp, t, _path_arg(t, ev, 0, 1), _path_arg(t, ev, 2, 3))


def sys_chdir(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """chdir(path): the cwd that relative paths of later opens resolve against."""
    try:
        p = to_str(ev.args[0])
    except (ArgError, IndexError):
        return
    t.cwd = os.path.normpath(os.path.join(t.cwd, p))


def sys_fchdir(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """fchdir(fd): as chdir, to the directory behind a tracked fd."""
    fdtext, ypath = strip_fdpath(ev.args[0])
    known = t.files.fds.get(to_int(fdtext))
    path = ypath if ypath is not None else (known[0] if known else None)
    if path:
        t.cwd = path


def sys_open(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """open(path, flags, mode) = fd."""
    _open_common(rp, t, ev, 0, 1)


def sys_openat(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """openat(dirfd, path, flags, mode) = fd."""
    _open_common(rp, t, ev, 1, 2)


def sys_openat2(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """openat2(dirfd, path, {flags=...}, size) = fd."""
    try:
        flags = to_int(struct_fields(ev.args[2]).get("flags", "0"))
    except (ArgError, IndexError):
        flags = 0
    _open_common(rp, t, ev, 1, None)
    fd = _fd_arg(ev.ret or "")
    if fd in t.files.fds:
        p = t.files.fds[fd][0]
        t.files.fds[fd] = (p, flags & uapi.O_ACCMODE, bool(flags & uapi.O_CLOEXEC))


def sys_creat(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """creat(path, mode) = fd (O_WRONLY|O_CREAT|O_TRUNC)."""
    _open_common(rp, t, ev, 0, None)


def sys_memfd_create(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """memfd_create(name, flags) = fd: a model file ``/memfd:NAME (deleted)``."""
    fdtext, ypath = strip_fdpath(ev.ret or "")
    try:
        name = to_str(ev.args[0])
    except (ArgError, IndexError):
        name = "memfd"
    # the kernel's name for it, so the model file prints as /proc/PID/maps does
    # (simplification: two live memfds of one name are one model file)
    path = ypath if ypath else f"/memfd:{name} (deleted)"
    rp.ensure_file(t, path, 0)
    t.files.fds[to_int(fdtext)] = (path, uapi.O_RDWR, False)


def sys_close(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """close(fd) (of a userfaultfd: the model's too, see handlers_ipc)."""
    fd = _fd_arg(ev.args[0])
    t.files.fds.pop(fd, None)
    handlers_ipc.uffd_closed(t, fd)


def sys_close_range(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """close_range(first, last, flags); CLOSE_RANGE_CLOEXEC only marks."""
    lo, hi = to_int(ev.args[0]), to_int(ev.args[1])
    flags = to_int(ev.args[2]) if len(ev.args) > 2 else 0
    for fd in [f for f in t.files.fds if lo <= f <= hi]:
        if flags & CLOSE_RANGE_CLOEXEC:
            p, acc, _ = t.files.fds[fd]
            t.files.fds[fd] = (p, acc, True)
        else:
            del t.files.fds[fd]


def _dup(t: Task, old: int, new: int, cloexec: bool = False) -> None:
    """Make ``new`` refer to what ``old`` does."""
    if old in t.files.fds:
        p, acc, _ = t.files.fds[old]
        t.files.fds[new] = (p, acc, cloexec)
    else:
        t.files.fds.pop(new, None)


def sys_dup(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """dup(fd) = new, and dup2(old, new) = new."""
    _dup(t, _fd_arg(ev.args[0]), _fd_arg(ev.ret or ""))


def sys_dup3(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """dup3(old, new, flags) = new."""
    fl = to_int(ev.args[2]) if len(ev.args) > 2 else 0
    _dup(t, _fd_arg(ev.args[0]), _fd_arg(ev.ret or ""), bool(fl & uapi.O_CLOEXEC))


def sys_fcntl(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """fcntl(fd, F_DUPFD or F_DUPFD_CLOEXEC, min) = new; other commands ignored."""
    if len(ev.args) < 2:
        return
    try:
        cmd = to_int(ev.args[1])
    except ArgError:
        return
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        _dup(t, _fd_arg(ev.args[0]), _fd_arg(ev.ret or ""), cmd == F_DUPFD_CLOEXEC)


def _file_of(t: Task, arg: str) -> str | None:
    """The path behind an fd argument."""
    fdtext, ypath = strip_fdpath(arg)
    if ypath is not None:
        return ypath
    known = t.files.fds.get(to_int(fdtext))
    return known[0] if known else None


@contextlib.contextmanager
def _model_file(rp: ReplayState, t: Task, fdtext: str) -> Iterator[tuple[Any, int, str] | None]:
    """(process, a model fd open O_RDWR, path) for the traced fd, or None if unknown."""
    path = _file_of(t, fdtext)
    if path is None or path not in rp.files_made:
        yield None
        return
    proc = t.mm.proc
    fd = proc.open(path, uapi.O_RDWR)
    try:
        yield proc, fd, path
    finally:
        proc.close(fd)


def sys_ftruncate(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """ftruncate(fd, len) on a file the model knows (shmem truncation semantics)."""
    with _model_file(rp, t, ev.args[0]) as f:
        if f is not None:
            proc, fd, path = f
            length = to_int(ev.args[1])
            proc.ftruncate(fd, length)
            rp.files_made[path] = length


def sys_fallocate(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """fallocate(fd, mode, off, len) on a file the model knows."""
    with _model_file(rp, t, ev.args[0]) as f:
        if f is not None:
            proc, fd, _path = f
            proc.fallocate(fd, to_int(ev.args[1]), to_int(ev.args[2]), to_int(ev.args[3]))


HANDLERS: dict[str, Handler] = {
    "open": sys_open,
    "openat": sys_openat,
    "openat2": sys_openat2,
    "creat": sys_creat,
    "close": sys_close,
    "close_range": sys_close_range,
    "dup": sys_dup,
    "dup2": sys_dup,
    "dup3": sys_dup3,
    "fcntl": sys_fcntl,
    "memfd_create": sys_memfd_create,
    "ftruncate": sys_ftruncate,
    "fallocate": sys_fallocate,
    "chdir": sys_chdir,
    "fchdir": sys_fchdir,
    "unlink": sys_unlink,
    "unlinkat": sys_unlinkat,
    "rename": sys_rename,
    "renameat": sys_renameat,
    "renameat2": sys_renameat,
}
"""The file calls the replay follows, by syscall name."""
