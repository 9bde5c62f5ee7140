"""Replay handlers of SysV shm (shmget, shmat, shmdt, shmctl IPC_RMID), msync, userfaultfd
and its UFFDIO_API / UFFDIO_REGISTER / UFFDIO_UNREGISTER ioctls (issue 14; the model's
side is vmalab.mm.shm, vmalab.mm.msync and vmalab.mm.userfaultfd).

Segment ids and descriptors differ between the trace and the model: each replay keeps
the model id of every traced segment id (per ReplayState) and the model descriptor of
every traced userfaultfd (per model Process). ``shmat`` is replayed at the address the
trace shows (SHM_REMAP added, SHM_RND dropped, as mmap is replayed MAP_FIXED). Only the
first brace group of strace's ioctl decoding counts (``{...} => {...}`` reads the
request). Simplifications: a userfaultfd inherited across fork, dup'ed or closed by
close_range is not followed (a later ioctl on it counts as ``unsupported``).
"""

from __future__ import annotations

from vmalab.mm import shm
from vmalab.trace.args import ArgError, strip_fdpath, struct_fields, to_int
from vmalab.trace.parse import Syscall
from vmalab.trace.replay_state import Handler, ReplayState, Task, ret_value
from vmalab.uapi import UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER

SYMBOLS = {
    "IPC_PRIVATE": shm.IPC_PRIVATE,
    "IPC_CREAT": shm.IPC_CREAT,
    "IPC_EXCL": shm.IPC_EXCL,
    "IPC_RMID": shm.IPC_RMID,
    "SHM_RDONLY": shm.SHM_RDONLY,
    "SHM_RND": shm.SHM_RND,
    "SHM_REMAP": shm.SHM_REMAP,
    "SHM_EXEC": shm.SHM_EXEC,
    "SHM_NORESERVE": shm.SHM_NORESERVE,
    "SHM_HUGETLB": shm.SHM_HUGETLB,
    "MS_ASYNC": 1,
    "MS_INVALIDATE": 2,
    "MS_SYNC": 4,
    "O_NONBLOCK": 0o4000,
    "O_CLOEXEC": 0o2000000,
    "UFFD_USER_MODE_ONLY": 1,
    "UFFDIO_REGISTER_MODE_MISSING": 1,
    "UFFDIO_REGISTER_MODE_WP": 2,
    "UFFDIO_REGISTER_MODE_MINOR": 4,
    "UFFD_FEATURE_PAGEFAULT_FLAG_WP": 1 << 0,
    "UFFD_FEATURE_EVENT_FORK": 1 << 1,
    "UFFD_FEATURE_EVENT_REMAP": 1 << 2,
    "UFFD_FEATURE_EVENT_REMOVE": 1 << 3,
    "UFFD_FEATURE_MISSING_HUGETLBFS": 1 << 4,
    "UFFD_FEATURE_MISSING_SHMEM": 1 << 5,
    "UFFD_FEATURE_EVENT_UNMAP": 1 << 6,
    "UFFD_FEATURE_SIGBUS": 1 << 7,
    "UFFD_FEATURE_THREAD_ID": 1 << 8,
    "UFFD_FEATURE_MINOR_HUGETLBFS": 1 << 9,
    "UFFD_FEATURE_MINOR_SHMEM": 1 << 10,
    "UFFD_FEATURE_EXACT_ADDRESS": 1 << 11,
    "UFFD_FEATURE_WP_HUGETLBFS_SHMEM": 1 << 12,
    "UFFD_FEATURE_WP_UNPOPULATED": 1 << 13,
    "UFFD_FEATURE_POISON": 1 << 14,
    "UFFD_FEATURE_WP_ASYNC": 1 << 15,
    "UFFD_FEATURE_MOVE": 1 << 16,
}
"""The names strace prints for these calls' arguments (the replay's parser knows the
common mm ones only)."""

_UFFDIO = {
    "UFFDIO_API": UFFDIO_API,
    "UFFDIO_REGISTER": UFFDIO_REGISTER,
    "UFFDIO_UNREGISTER": UFFDIO_UNREGISTER,
}


def num(text: str) -> int:
    """An argument that may use the names of ``SYMBOLS`` (``IPC_CREAT|0600``)."""
    t = text.split("=>")[0].strip()
    total = 0
    for part in t.split("|"):
        part = part.strip()
        total |= SYMBOLS[part] if part in SYMBOLS else to_int(part)
    return total


def _model_seg(rp: ReplayState, name: str, traced: int) -> int | None:
    """The model id of a traced segment id; None (counted as ``NAME(unknown segment)``
    in ``unsupported``) for a segment made before the trace started."""
    got = rp.shm_ids.get(traced)
    if got is None:
        rp.unsupported[f"{name}(unknown segment)"] += 1
    return got


def sys_shmget(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """shmget(key, size, flags) = id; the model's id is remembered for the traced one."""
    a = ev.args
    sid = t.mm.proc.shmget(num(a[0]), num(a[1]), num(a[2]))
    rp.shm_ids[ret_value(ev)] = sid


def sys_shmat(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """shmat(id, addr, flags) = addr, replayed at the traced address."""
    a = ev.args
    flags = (num(a[2]) & ~shm.SHM_RND) | shm.SHM_REMAP
    sid = _model_seg(rp, "shmat", num(a[0]))
    if sid is not None:
        t.mm.proc.shmat(sid, ret_value(ev), flags)


def sys_shmdt(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """shmdt(addr)."""
    t.mm.proc.shmdt(num(ev.args[0]))


def sys_shmctl(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """shmctl(id, cmd, buf): IPC_RMID is replayed; the other commands change no VMA."""
    a = ev.args
    if num(a[1]) & 0xFF != shm.IPC_RMID:  # IPC_64 may be or'ed in
        return
    sid = _model_seg(rp, "shmctl", num(a[0]))
    if sid is not None:
        t.mm.proc.shmctl(sid, shm.IPC_RMID)


def sys_msync(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """msync(addr, len, flags): no VMA change, replayed for its errors."""
    a = ev.args
    t.mm.proc.msync(num(a[0]), num(a[1]), num(a[2]))


def sys_userfaultfd(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """userfaultfd(flags) = fd."""
    fdtext, _ = strip_fdpath(ev.ret or "")
    proc = t.mm.proc
    mfd = proc.userfaultfd(num(ev.args[0]) if ev.args else 0)
    t.mm.uffds[to_int(fdtext)] = mfd


def _uffd(t: Task, arg: str) -> int | None:
    fdtext, _ = strip_fdpath(arg)
    return t.mm.uffds.get(to_int(fdtext))


def sys_ioctl(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """ioctl(fd, req, arg): UFFDIO_API, UFFDIO_REGISTER and UFFDIO_UNREGISTER on a
    traced userfaultfd; every other ioctl changes no VMA and is ignored."""
    a = ev.args
    if len(a) < 3:
        return
    req_text = a[1].strip()
    req = _UFFDIO.get(req_text)
    if req is None:
        try:
            req = to_int(req_text)
        except ArgError:
            return
    if req not in (UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER):
        return
    mfd = _uffd(t, a[0])
    if mfd is None:
        rp.unsupported["ioctl(unknown userfaultfd)"] += 1
        return
    proc = t.mm.proc
    f = struct_fields(a[2])
    if req == UFFDIO_API:
        proc.uffdio_api(mfd, num(f.get("features", "0")), num(f.get("api", "0xaa")))
    elif req == UFFDIO_REGISTER:
        r = struct_fields(f["range"])
        proc.uffdio_register(mfd, num(r["start"]), num(r["len"]), num(f["mode"]))
    else:
        proc.uffdio_unregister(mfd, num(f["start"]), num(f["len"]))


def uffd_closed(t: Task, fd: int) -> None:
    """close(fd) of a traced userfaultfd: close the model's (userfaultfd_release once
    it was the last reference)."""
    table = t.mm.uffds
    if fd in table:
        t.mm.proc.close(table.pop(fd))


HANDLERS: dict[str, Handler] = {
    "shmget": sys_shmget,
    "shmat": sys_shmat,
    "shmdt": sys_shmdt,
    "shmctl": sys_shmctl,
    "msync": sys_msync,
    "userfaultfd": sys_userfaultfd,
    "ioctl": sys_ioctl,
}
"""SysV shm, msync and userfaultfd calls, by syscall name."""
