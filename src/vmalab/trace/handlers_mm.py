"""Replay handlers of the memory-management calls: mmap, munmap, mprotect, mremap, madvise,
mlock, brk, the pkeys, mseal and prctl.

Each handler applies one call that the trace shows succeeding to the caller's model
Process, at the address the trace shows: mmap with MAP_FIXED at the returned address
(MAP_FIXED_NOREPLACE dropped), mremap with MREMAP_MAYMOVE|MREMAP_FIXED to the returned
address when the mapping moved. New private writable memory is noted for the assumed first
store (``touch``, :meth:`vmalab.trace.replay_state.ReplayState.note_store`).
"""

from __future__ import annotations

import errno as _errno

from vmalab import uapi
from vmalab.mm.mm_types import PAGE_SIZE
from vmalab.trace.args import ArgError, strip_fdpath, struct_fields, to_int, to_str
from vmalab.trace.parse import Syscall
from vmalab.trace.replay_state import Handler, ReplayState, Task, ret_value, to_int_or_none


def sys_mmap(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mmap(addr, len, prot, flags, fd, off) = ret, replayed MAP_FIXED at ret."""
    a = ev.args
    if len(a) < 6:
        raise ArgError("mmap needs 6 arguments")
    length, prot, flags = to_int(a[1]), to_int(a[2]), to_int(a[3])
    off = to_int(a[5])
    ret = ret_value(ev)
    flags = (flags & ~uapi.MAP_FIXED_NOREPLACE) | uapi.MAP_FIXED
    proc = t.mm.proc
    if flags & uapi.MAP_ANONYMOUS:
        proc.mmap(ret, length, prot, flags, -1, 0)
        rp.note_store(t, ret, prot, flags, length)
        return
    fdtext, ypath = strip_fdpath(a[4])
    fd = to_int(fdtext)
    known = t.files.fds.get(fd)
    path = ypath if ypath is not None else (known[0] if known else None)
    if path is None:
        rp.unsupported["mmap(unknown fd)"] += 1
        return
    if path == "/dev/zero":
        proc.mmap(ret, length, prot, flags | uapi.MAP_ANONYMOUS, -1, 0)
        rp.note_store(t, ret, prot, flags, length)
        return
    if not path.startswith("/") or (
        path.startswith(("/dev/", "/proc/", "/sys/")) and not path.startswith("/dev/shm/")
    ):
        rp.unsupported["mmap(device)"] += 1
        return
    # an fd whose mode the replay does not know (opened before a seed dump, or not
    # traced) is taken as O_RDWR: the trace says the call succeeded, and a guessed
    # O_RDONLY would make a later mprotect(PROT_WRITE) fail where the kernel did not
    acc = known[1] if known and _same_file(known[0], path) else uapi.O_RDWR
    mfd = rp.model_fd(t, path, off + length, acc)
    try:
        proc.mmap(ret, length, prot, flags, mfd, off)
    finally:
        proc.close(mfd)
    rp.note_store(t, ret, prot, flags, length)


def _same_file(a: str, b: str) -> bool:
    """Whether two traced paths name one file (one may carry `` (deleted)``)."""
    suffix = " (deleted)"
    return a.removesuffix(suffix) == b.removesuffix(suffix)


def sys_munmap(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """munmap(addr, len)."""
    t.mm.proc.munmap(to_int(ev.args[0]), to_int(ev.args[1]))


def sys_mprotect(rp: ReplayState, t: Task, ev: Syscall) -> int | None:
    """mprotect(addr, len, prot); memory made writable is assumed written (``touch``).
    A hole's ENOMEM comes back as -ENOMEM (``Process.mprotect_ret``), not raised."""
    addr, length, prot = to_int(ev.args[0]), to_int(ev.args[1]), to_int(ev.args[2])
    err: int = t.mm.proc.mprotect_ret(addr, length, prot)
    if err:
        return err
    if prot & uapi.PROT_WRITE:
        rp.note_store(t, addr, prot, uapi.MAP_PRIVATE, length)
    return None


def sys_pkey_mprotect(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """pkey_mprotect(addr, len, prot, pkey): mprotect that also sets the key."""
    a = ev.args
    t.mm.proc.pkey_mprotect(to_int(a[0]), to_int(a[1]), to_int(a[2]), to_int(a[3]))
    if to_int(a[2]) & uapi.PROT_WRITE:
        rp.note_store(t, to_int(a[0]), to_int(a[2]), uapi.MAP_PRIVATE, to_int(a[1]))


def sys_pkey_alloc(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """pkey_alloc(flags, rights) = key; the model must hand out the same key."""
    a = ev.args
    got = t.mm.proc.pkey_alloc(to_int(a[0]) if a else 0, to_int(a[1]) if len(a) > 1 else 0)
    if got != ret_value(ev):
        raise OSError(_errno.EINVAL, f"model pkey_alloc gave {got}, the trace {ev.ret}")


def sys_pkey_free(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """pkey_free(key)."""
    t.mm.proc.pkey_free(to_int(ev.args[0]))


def sys_mseal(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mseal(addr, len, flags)."""
    a = ev.args
    t.mm.proc.mseal(to_int(a[0]), to_int(a[1]), to_int(a[2]) if len(a) > 2 else 0)


def sys_mlockall(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mlockall(flags)."""
    t.mm.proc.mlockall(to_int(ev.args[0]))


def sys_munlockall(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """munlockall()."""
    t.mm.proc.munlockall()


def sys_prctl(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """prctl: PR_SET_MDWE and PR_SET_VMA (anonymous VMA names, ``[anon:NAME]``) reach
    the model; other options do not touch VMAs."""
    a = ev.args
    op = to_int_or_none(a[0]) if a else None
    if op == uapi.PR_SET_MDWE:
        t.mm.proc.prctl(uapi.PR_SET_MDWE, *(to_int(x) for x in a[1:5]))
    elif op == uapi.PR_SET_VMA and len(a) >= 5:
        name = None if a[4] in ("NULL", "0") else to_str(a[4])
        t.mm.proc.prctl(uapi.PR_SET_VMA, to_int(a[1]), to_int(a[2]), to_int(a[3]), name)


def sys_mremap(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mremap(old, old_size, new_size, flags[, new]) = ret, to where the trace says."""
    a = ev.args
    old, osz, nsz, flags = to_int(a[0]), to_int(a[1]), to_int(a[2]), to_int(a[3])
    ret = ret_value(ev)
    if ret != old or flags & (uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP):
        flags |= uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED
        t.mm.proc.mremap(old, osz, nsz, flags, ret)
    else:
        t.mm.proc.mremap(old, osz, nsz, 0)


def sys_madvise(rp: ReplayState, t: Task, ev: Syscall) -> int | None:
    """madvise(addr, len, advice); advice as a number, a name or ``0x66 /* MADV_??? */``.
    The holes' ENOMEM comes back as -ENOMEM (``Process.madvise_ret``), not raised."""
    err: int = t.mm.proc.madvise_ret(to_int(ev.args[0]), to_int(ev.args[1]), to_int(ev.args[2]))
    return err or None


def sys_process_madvise(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """process_madvise(pidfd, iov, vlen, advice, flags) on the caller's own mm."""
    a = ev.args
    ranges = []
    iov = a[1]
    for chunk in iov.split("{")[1:]:
        f = struct_fields("{" + chunk.split("}")[0] + "}")
        ranges.append((to_int(f["iov_base"]), to_int(f["iov_len"])))
    t.mm.proc.process_madvise(ranges, to_int(a[3]))


def sys_mlock(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mlock(addr, len)."""
    t.mm.proc.mlock(to_int(ev.args[0]), to_int(ev.args[1]))


def sys_mlock2(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """mlock2(addr, len, flags) (MLOCK_ONFAULT kept)."""
    fl = to_int(ev.args[2]) if len(ev.args) > 2 else 0
    t.mm.proc.mlock2(to_int(ev.args[0]), to_int(ev.args[1]), fl)


def sys_munlock(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """munlock(addr, len)."""
    t.mm.proc.munlock(to_int(ev.args[0]), to_int(ev.args[1]))


def sys_brk(rp: ReplayState, t: Task, ev: Syscall) -> None:
    """brk(addr) = new break, through the model's brk() (mm/mmap.c:SYSCALL_DEFINE1(brk)).

    The first result seen sets mm->start_brk when exec did not (a log without execve,
    or an exec whose brk base no hint gave). New heap memory is assumed written under
    ``touch``; a result that differs from the trace's is a model error.
    """
    ret = ret_value(ev)
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
            rp.note_store(t, lo, uapi.PROT_WRITE, uapi.MAP_PRIVATE, hi - lo)


HANDLERS: dict[str, Handler] = {
    "mmap": sys_mmap,
    "munmap": sys_munmap,
    "mprotect": sys_mprotect,
    "pkey_mprotect": sys_pkey_mprotect,
    "pkey_alloc": sys_pkey_alloc,
    "pkey_free": sys_pkey_free,
    "mremap": sys_mremap,
    "madvise": sys_madvise,
    "process_madvise": sys_process_madvise,
    "mlock": sys_mlock,
    "mlock2": sys_mlock2,
    "munlock": sys_munlock,
    "mlockall": sys_mlockall,
    "munlockall": sys_munlockall,
    "mseal": sys_mseal,
    "brk": sys_brk,
    "prctl": sys_prctl,
}
"""The memory-management calls the replay models, by syscall name."""

UNMODELLED = frozenset(
    {
        "mmap2",
        "remap_file_pages",
        "map_shadow_stack",
        "mbind",
        "migrate_pages",
        "move_pages",
        "process_mrelease",
        "io_uring_setup",
    }
)
"""Memory-management calls the replay does not model: counted in ``unsupported``."""
