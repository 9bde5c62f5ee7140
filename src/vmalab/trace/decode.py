"""strace-style decoding of the system calls ``vmalab record`` prints (x86-64).

Each decoded call is printed the way ``strace -f -X raw -y`` prints it (flags and prot as
hex, fds with their ``-y`` path, strings quoted with strace's escapes and its 32-byte
limit: the value printers of :mod:`vmalab.trace.strace_fmt`), so that the strace parser of
:mod:`vmalab.trace.parse` reads the lines and anyone who reads strace can read them. A call
is split in two texts: what strace prints at the syscall entry
(``mmap(NULL, 8192, 0x3, 0x22, -1, 0``) and at its exit (``) = 0x7f...``); the writer joins
them, or prints ``<unfinished ...>`` / ``<... mmap resumed>`` halves when another event
comes between.

Tracee memory (paths, argv, clone3's struct, the bytes a read() returned) is read with
process_vm_readv while the tracee is stopped; fd paths come from /proc/TID/fd/N like
strace's -y.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from vmalab.trace import ptrace as pt
from vmalab.trace.strace_fmt import (
    STRLEN,
    errtext,
    fd_arg,
    fd_path,
    fd_text,
    hx,
    octal,
    path_arg,
    ptr,
    quote,
    sint,
    str_arg,
)
from vmalab.trace.syscalls import EXITS, MM_CHANGERS, NAMES, NR, READS

SEP = "\x1f"  # where the writer puts strace's padding and "= "


class Ctx:
    """What the exit half of a call needs: the tracee, the raw args, the call's shape."""

    __slots__ = ("tid", "nr", "args", "name", "data", "k")

    def __init__(self, tid: int, nr: int, args: tuple[int, ...]) -> None:
        self.tid = tid
        self.nr = nr
        self.args = args
        self.name = NAMES[nr]
        self.data: Any = None
        self.k = -1


# ---------------------------------------------------------------------------------------
# entry decoders: (ctx) -> entry text after "name("; exit decoders: (ctx, rval) -> tail


def _args(ctx: Ctx, *kinds: str) -> str:
    """Format the first len(kinds) args: h=hex flags, p=pointer, d=signed, u=unsigned,
    i=int32, f=fd, s=path, o=octal mode."""
    out = []
    tid = ctx.tid
    for k, v in zip(kinds, ctx.args, strict=False):
        if k == "h":
            out.append(hx(v))
        elif k == "p":
            out.append(ptr(v))
        elif k == "d":
            out.append(str(sint(v)))
        elif k == "u":
            out.append(str(v))
        elif k == "i":
            out.append(str(sint(v, 32)))
        elif k == "f":
            out.append(fd_arg(tid, v))
        elif k == "s":
            out.append(path_arg(tid, v))
        elif k == "o":
            out.append(octal(v))
        else:  # pragma: no cover - table error
            raise AssertionError(k)
    return ", ".join(out)


def _simple(kinds: str) -> Callable[[Ctx], str]:
    def enter(ctx: Ctx) -> str:
        return _args(ctx, *kinds)

    return enter


def _mmap(ctx: Ctx) -> str:
    a = ctx.args
    off = a[5]
    return f"{ptr(a[0])}, {a[1]}, {hx(a[2])}, {hx(a[3])}, {fd_arg(ctx.tid, a[4])}, {hx(off)}"


def _mremap(ctx: Ctx) -> str:
    a = ctx.args
    s = f"{ptr(a[0])}, {a[1]}, {a[2]}, {hx(a[3])}"
    if a[3] & 0x6:  # MREMAP_FIXED | MREMAP_DONTUNMAP
        s += f", {ptr(a[4])}"
    return s


def _open_mode(flags: int) -> bool:
    return bool(flags & 0x40) or (flags & 0x410000) == 0x410000  # O_CREAT, O_TMPFILE


def _open(ctx: Ctx) -> str:
    a = ctx.args
    s = f"{path_arg(ctx.tid, a[0])}, {hx(a[1])}"
    return s + (f", {octal(a[2])}" if _open_mode(a[1]) else "")


def _openat(ctx: Ctx) -> str:
    a = ctx.args
    s = f"{fd_arg(ctx.tid, a[0])}, {path_arg(ctx.tid, a[1])}, {hx(a[2])}"
    return s + (f", {octal(a[3])}" if _open_mode(a[2]) else "")


def _openat2(ctx: Ctx) -> str:
    a = ctx.args
    raw = pt.read_mem(ctx.tid, a[2], 24)
    if len(raw) == 24 and a[3] >= 24:
        fl, mode, res = struct.unpack("=3Q", raw)
        how = f"{{flags={hx(fl)}, mode={octal(mode)}, resolve={hx(res)}}}"
    else:
        how = ptr(a[2])
    return f"{fd_arg(ctx.tid, a[0])}, {path_arg(ctx.tid, a[1])}, {how}, {a[3]}"


def _shmget(ctx: Ctx) -> str:
    a = ctx.args
    hi, mode = a[2] & ~0o777, a[2] & 0o777
    fl = (f"{hex(hi)}|{octal(mode)}" if mode else hex(hi)) if hi else octal(mode)
    return f"{hx(a[0])}, {a[1]}, {fl}"


def _fcntl(ctx: Ctx) -> str:
    a = ctx.args
    cmd = sint(a[1], 32)
    s = f"{fd_arg(ctx.tid, a[0])}, {hx(cmd & 0xFFFFFFFF)}"
    if cmd in (1, 3, 9, 1025, 1032, 1034):  # F_GETFD F_GETFL F_GETOWN F_GETLEASE ...
        return s
    if cmd in (0, 1030, 1031):  # F_DUPFD, F_DUPFD_CLOEXEC, F_SETPIPE_SZ
        return s + f", {sint(a[2], 32)}"
    return s + f", {hx(a[2])}"


# prctl options strace 6.1 prints with all four further arguments in decimal
_PRCTL_DEC5 = frozenset({0x26, 0x27, 0x29, 0x2A})  # NO_NEW_PRIVS, THP_DISABLE (set/get)


def _prctl(ctx: Ctx) -> str:
    """prctl as strace 6.1 prints the common options (others: four hex arguments)."""
    a = ctx.args
    op = sint(a[0], 32)
    if op == 15:  # PR_SET_NAME
        return f"{hx(op)}, {str_arg(ctx.tid, a[1], 15)}"
    if op == 16:  # PR_GET_NAME: the name is printed at the exit
        return f"{hx(op)}, "
    if op == 0x53564D41:  # PR_SET_VMA: PR_SET_VMA_ANON_NAME, addr, len, name
        name = str_arg(ctx.tid, a[4], 80) if a[4] else "NULL"
        return f"{hx(op)}, {a[1]}, {ptr(a[2])}, {a[3]}, {name}"
    if op in _PRCTL_DEC5:
        return ", ".join([hx(op)] + [str(v) for v in a[1:5]])
    if op == 1:  # PR_SET_PDEATHSIG
        return f"{hx(op)}, {sint(a[1], 32)}"
    if op == 0x59616D61:  # PR_SET_PTRACER
        return f"{hx(op)}, {sint(a[1])}"
    if op in (4, 8, 36):  # PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER
        return f"{hx(op)}, {hx(a[1])}"
    return ", ".join([hx(op)] + [hx(v) for v in a[1:5]])


def _prctl_exit(ctx: Ctx, rval: int) -> str:
    if sint(ctx.args[0], 32) == 16:
        name = pt.read_cstr(ctx.tid, ctx.args[1], 16) if rval >= 0 else None
        return (quote(name, None) if name is not None else hex(ctx.args[1])) + _ret(ctx, rval)
    return _ret(ctx, rval)


_OFLAGS = [
    (0x400, "O_APPEND"),
    (0x800, "O_NONBLOCK"),
    (0x101000, "O_SYNC"),
    (0x1000, "O_DSYNC"),
    (0x2000, "O_ASYNC"),
    (0x4000, "O_DIRECT"),
    (0x8000, "O_LARGEFILE"),
    (0x10000, "O_DIRECTORY"),
    (0x20000, "O_NOFOLLOW"),
    (0x40000, "O_NOATIME"),
    (0x80000, "O_CLOEXEC"),
    (0x200000, "O_PATH"),
]


def _getfl(v: int) -> str:
    """F_GETFL's result as strace 6.1 prints it even with -X raw: ``0x8002 (flags O_RDWR|...)``."""
    parts = [("O_RDONLY", "O_WRONLY", "O_RDWR", "0x3")[v & 3]]
    rest = v & ~3
    for bit, name in _OFLAGS:
        if rest & bit == bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return f"{hx(v)} (flags {'|'.join(parts)})"


def _argv(tid: int, addr: int) -> str:
    """execve's argv: up to 32 strings of at most 32 bytes each, like strace."""
    if addr == 0:
        return "NULL"
    out = []
    ptrs = pt.read_words(tid, addr, STRLEN + 1)
    for i, p in enumerate(ptrs):
        if p == 0:
            break
        if i == STRLEN:
            out.append("...")
            break
        out.append(str_arg(tid, p))
    return "[" + ", ".join(out) + "]"


def _envc(tid: int, addr: int) -> str:
    """execve's envp as ``0x7ffd... /* 40 vars */``."""
    if addr == 0:
        return "NULL"
    n = 0
    while n < 1 << 16:
        words = pt.read_words(tid, addr + 8 * n, 512)
        if not words:
            break
        if 0 in words:
            n += words.index(0)
            break
        n += len(words)
    return f"{hex(addr)} /* {n} vars */"


def _execve(ctx: Ctx) -> str:
    a = ctx.args
    return f"{path_arg(ctx.tid, a[0])}, {_argv(ctx.tid, a[1])}, {_envc(ctx.tid, a[2])}"


def _execveat(ctx: Ctx) -> str:
    a = ctx.args
    return (
        f"{fd_arg(ctx.tid, a[0])}, {path_arg(ctx.tid, a[1])}, {_argv(ctx.tid, a[2])}, "
        f"{_envc(ctx.tid, a[3])}, {hx(a[4])}"
    )


def _clone_flags(f: int) -> str:
    sig = f & 0xFF
    hi = f & ~0xFF
    if hi and sig:
        return f"{hex(hi)}|{sig}"
    return hex(hi) if hi else str(sig)


def _clone(ctx: Ctx) -> str:
    # x86-64: clone(flags, stack, parent_tid, child_tid, tls)
    fl, stack, ptid, ctid, tls = ctx.args[:5]
    return f"child_stack={ptr(stack)}, flags={_clone_flags(fl)}"


def _clone_exit(ctx: Ctx, rval: int) -> str:
    fl, _, ptid, ctid, tls = ctx.args[:5]
    s = ""
    if fl & 0x101000:  # CLONE_PARENT_SETTID | CLONE_PIDFD
        got = pt.read_mem(ctx.tid, ptid, 4)
        val = f"[{struct.unpack('=i', got)[0]}]" if len(got) == 4 and rval >= 0 else hex(ptid)
        s += f", parent_tid={val}"
    if fl & 0x80000:  # CLONE_SETTLS
        s += f", tls={hex(tls)}"
    if fl & 0x1200000:  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        s += f", child_tidptr={hex(ctid)}"
    return s + _ret(ctx, rval)


_CLONE3 = struct.Struct("=11Q")


def _clone3(ctx: Ctx) -> str:
    a = ctx.args
    raw = pt.read_mem(ctx.tid, a[0], _CLONE3.size)
    if len(raw) < 64:
        return f"{ptr(a[0])}, {a[1]}"
    raw = raw.ljust(_CLONE3.size, b"\0")
    (fl, pidfd, ctid, ptid, sig, stack, ssize, tls, settid, nset, cgroup) = _CLONE3.unpack(raw)
    ctx.data = (fl, ptid)
    parts = [f"flags={hx(fl)}"]
    if fl & 0x1000:
        parts.append(f"pidfd={hex(pidfd)}")
    if fl & 0x1200000:
        parts.append(f"child_tid={hex(ctid)}")
    if fl & 0x100000:
        parts.append(f"parent_tid={hex(ptid)}")
    parts.append(f"exit_signal={sig}")
    parts += [f"stack={ptr(stack)}", f"stack_size={hx(ssize)}"]
    if fl & 0x80000:
        parts.append(f"tls={hex(tls)}")
    if nset:
        parts += [f"set_tid={hex(settid)}", f"set_tid_size={nset}"]
    if fl & 0x200000000:
        parts.append(f"cgroup={cgroup}")
    return "{" + ", ".join(parts) + "}"


def _clone3_exit(ctx: Ctx, rval: int) -> str:
    s = ""
    if ctx.data is not None:
        fl, ptid = ctx.data
        if fl & 0x100000 and rval > 0:
            got = pt.read_mem(ctx.tid, ptid, 4)
            if len(got) == 4:
                s = f" => {{parent_tid=[{struct.unpack('=i', got)[0]}]}}"
    return s + f", {ctx.args[1]}" + _ret(ctx, rval)


def _process_madvise(ctx: Ctx) -> str:
    a = ctx.args
    n = min(a[2], STRLEN)
    words = pt.read_words(ctx.tid, a[1], 2 * n)
    vecs = [
        f"{{iov_base={ptr(words[2 * i])}, iov_len={words[2 * i + 1]}}}"
        for i in range(len(words) // 2)
    ]
    if a[2] > STRLEN:
        vecs.append("...")
    iov = "[" + ", ".join(vecs) + "]" if words or a[2] == 0 else ptr(a[1])
    return f"{fd_arg(ctx.tid, a[0])}, {iov}, {a[2]}, {hx(a[3])}, {hx(a[4])}"


def _read(ctx: Ctx) -> str:
    return f"{fd_arg(ctx.tid, ctx.args[0])}, "


def iovecs(tid: int, addr: int, count: int) -> list[tuple[int, int]]:
    """The (base, len) pairs of a tracee's iovec array (fewer if its memory ends)."""
    words = pt.read_words(tid, addr, 2 * min(count, 1024))
    return [(words[2 * i], words[2 * i + 1]) for i in range(len(words) // 2)]


def _readv_exit(ctx: Ctx, rval: int) -> str:
    """``[{iov_base="...", iov_len=N}, ...], CNT[, OFFSET[, FLAGS]])`` like strace."""
    a = ctx.args
    vecs = iovecs(ctx.tid, a[1], min(a[2], STRLEN))
    left = max(rval, 0)
    parts = []
    for base, ln in vecs:
        if rval < 0:
            parts.append(f"{{iov_base={ptr(base)}, iov_len={ln}}}")
            continue
        n = min(ln, left)
        left -= n
        data = pt.read_mem(ctx.tid, base, min(n, STRLEN))
        parts.append(f"{{iov_base={quote(data, STRLEN, more=n > STRLEN)}, iov_len={ln}}}")
    if a[2] > STRLEN:
        parts.append("...")
    tail = ("[" + ", ".join(parts) + "]" if vecs or a[2] == 0 else ptr(a[1])) + f", {a[2]}"
    if ctx.nr != NR["readv"]:
        tail += f", {sint(a[3])}"
    if ctx.nr == NR["preadv2"]:
        tail += f", {hx(a[5])}"
    return tail + _ret(ctx, rval)


def _read_exit(ctx: Ctx, rval: int) -> str:
    a = ctx.args
    if rval < 0:
        buf = hex(a[1])
    else:
        data = pt.read_mem(ctx.tid, a[1], min(rval, STRLEN))
        buf = quote(data, STRLEN, more=rval > STRLEN)
    tail = f"{buf}, {a[2]}"
    if ctx.nr == NR["pread64"]:
        tail += f", {sint(a[3])}"
    return tail + _ret(ctx, rval)


# ---------------------------------------------------------------------------------------
# results

_HEXRET = frozenset({NR["mmap"], NR["mremap"], NR["brk"], NR["shmat"]})
_FDRET = frozenset(
    {
        NR[n]
        for n in (
            "open",
            "openat",
            "openat2",
            "creat",
            "dup",
            "dup2",
            "dup3",
            "memfd_create",
            "userfaultfd",
        )
    }
)


def _ret(ctx: Ctx, rval: int) -> str:
    """``)`` SEP ``RESULT``: the writer pads to strace's column 40 where SEP is."""
    return ")" + SEP + result(ctx, rval)


def result(ctx: Ctx, rval: int) -> str:
    """The text after ``= ``: a number, an fd with path, or ``-1 EFOO (text)``."""
    nr = ctx.nr
    if nr in EXITS:
        return "?"
    if nr == NR["brk"]:
        return hex(rval & (1 << 64) - 1)
    err = errtext(rval)
    if err is not None:
        return err
    if nr in _HEXRET:
        return hex(rval & (1 << 64) - 1)
    if nr in _FDRET or (nr == NR["fcntl"] and sint(ctx.args[1], 32) in (0, 1030)):
        return fd_text(rval, fd_path(ctx.tid, rval))
    if nr == NR["fcntl"]:
        cmd = sint(ctx.args[1], 32)
        if cmd == 3:
            return _getfl(rval)
        if cmd == 1 and rval:
            return f"{hx(rval)} (flags {hx(rval)})"
        if cmd == 1034 and rval:  # F_GET_SEALS
            return f"{hx(rval)} (seals {hx(rval)})"
    return str(rval)


Enter = Callable[[Ctx], str]
Exit = Callable[[Ctx, int], str]


def _default_exit(ctx: Ctx, rval: int) -> str:
    return _ret(ctx, rval)


ENTER: dict[int, Enter] = {
    NR["mmap"]: _mmap,
    NR["mremap"]: _mremap,
    NR["open"]: _open,
    NR["openat"]: _openat,
    NR["openat2"]: _openat2,
    NR["shmget"]: _shmget,
    NR["fcntl"]: _fcntl,
    NR["prctl"]: _prctl,
    NR["execve"]: _execve,
    NR["execveat"]: _execveat,
    NR["clone"]: _clone,
    NR["clone3"]: _clone3,
    NR["process_madvise"]: _process_madvise,
    NR["read"]: _read,
    NR["pread64"]: _read,
    NR["readv"]: _read,
    NR["preadv"]: _read,
    NR["preadv2"]: _read,
}
for _name, _kinds in {
    "munmap": "pu",
    "mprotect": "puh",
    "pkey_mprotect": "puhi",
    "pkey_alloc": "hh",
    "pkey_free": "i",
    "madvise": "puh",
    "brk": "p",
    "mlock": "pu",
    "mlock2": "puh",
    "munlock": "pu",
    "mlockall": "h",
    "munlockall": "",
    "mseal": "puh",
    "shmat": "ipu",
    "shmdt": "p",
    "remap_file_pages": "puhuh",
    "map_shadow_stack": "puh",
    "userfaultfd": "h",
    "mbind": "puupuh",
    "set_mempolicy": "ipu",
    "mincore": "pup",
    "creat": "so",
    "close": "f",
    "close_range": "uuh",
    "dup": "f",
    "dup2": "fi",
    "dup3": "fih",
    "memfd_create": "sh",
    "ftruncate": "fd",
    "fallocate": "fhdd",
    "chdir": "s",
    "fchdir": "f",
    "unlink": "s",
    "unlinkat": "fsh",
    "rename": "ss",
    "renameat": "fsfs",
    "renameat2": "fsfsh",
    "fork": "",
    "vfork": "",
    "exit": "i",
    "exit_group": "i",
}.items():
    ENTER[NR[_name]] = _simple(_kinds)
EXIT: dict[int, Exit] = {
    NR["clone"]: _clone_exit,
    NR["clone3"]: _clone3_exit,
    NR["prctl"]: _prctl_exit,
    NR["read"]: _read_exit,
    NR["pread64"]: _read_exit,
    NR["readv"]: _readv_exit,
    NR["preadv"]: _readv_exit,
    NR["preadv2"]: _readv_exit,
}
# the calls whose entry and exit perf also records (raw_syscalls, filtered on these ids)
PERF_NRS = frozenset(ENTER) - READS
_MAPS_SUFFIXES = ("/maps", "/smaps", "/smaps_rollup", "/pagemap")


def wanted_read(tid: int, fd: int) -> bool:
    """Whether a read()/pread64()/readv() of ``fd`` is printed: only on /proc/PID/{maps,...}."""
    p = fd_path(tid, sint(fd, 32))
    return p is not None and p.startswith("/proc/") and p.endswith(_MAPS_SUFFIXES)


# madvise advice that never changes a VMA (mm/madvise.c: these go to madvise_willneed,
# madvise_dontneed_free, madvise_remove, madvise_cold/pageout and madvise_populate, not to
# madvise_update_vma): WILLNEED, DONTNEED, FREE, REMOVE, COLD, PAGEOUT, POPULATE_READ/WRITE,
# DONTNEED_LOCKED. A thread's exit madvises its stack DONTNEED while others run.
MADV_KEEPS_VMAS = frozenset({3, 4, 8, 9, 20, 21, 22, 23, 24})


def changes_mm(nr: int, args: tuple[int, ...]) -> bool:
    """Whether the call ``nr(args)`` may change what /proc/PID/maps prints (conservatively:
    failed calls count too, as a failing mprotect or munmap may have done part of its work)."""
    if nr not in MM_CHANGERS:
        return False
    if nr == NR["brk"]:
        return args[0] != 0  # brk(NULL) only asks
    if nr == NR["prctl"]:
        return sint(args[0], 32) == 0x53564D41  # PR_SET_VMA (anon names show in maps)
    if nr == NR["madvise"]:
        return sint(args[2], 32) not in MADV_KEEPS_VMAS
    if nr == NR["process_madvise"]:
        return sint(args[3], 32) not in MADV_KEEPS_VMAS
    return True


def enter_text(ctx: Ctx) -> str:
    """``name(args`` as strace prints it at the syscall entry."""
    return f"{ctx.name}({ENTER[ctx.nr](ctx)}"


def exit_text(ctx: Ctx, rval: int) -> str:
    """The rest of the call after the entry text: ``ARGS)`` SEP ``RESULT``."""
    return EXIT.get(ctx.nr, _default_exit)(ctx, rval)
