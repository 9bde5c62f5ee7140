"""A minimal ptrace(2) binding for ``vmalab record`` (x86-64 Linux, ctypes on libc).

Only what the recorder needs: PTRACE_SEIZE with options, PTRACE_INTERRUPT, the restart
requests, PTRACE_GETEVENTMSG, PTRACE_GET_SYSCALL_INFO (Linux >= 5.3: the syscall number,
arguments, return value and whether the stop is an entry, an exit or a seccomp stop, in one
call), reading tracee memory with process_vm_readv, and kcmp(KCMP_VM).

Every failing call raises OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import os
import struct

from vmalab.mm.mm_types import PAGE_SIZE

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_ptrace.restype = ctypes.c_long
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

O_TRACESYSGOOD = 0x1
O_TRACEFORK = 0x2
O_TRACEVFORK = 0x4
O_TRACECLONE = 0x8
O_TRACEEXEC = 0x10
O_TRACEEXIT = 0x40
O_TRACESECCOMP = 0x80
O_EXITKILL = 1 << 20

EVENT_FORK = 1
EVENT_VFORK = 2
EVENT_CLONE = 3
EVENT_EXEC = 4
EVENT_EXIT = 6
EVENT_SECCOMP = 7
EVENT_STOP = 128

OP_NONE = 0
OP_ENTRY = 1
OP_EXIT = 2
OP_SECCOMP = 3

WALL = 0x40000000  # __WALL: wait for threads and children alike
SYSCALL_TRAP = 0x80 | 5  # SIGTRAP | 0x80 with PTRACE_O_TRACESYSGOOD

_NR_PROCESS_VM_READV = 310
_NR_KCMP = 312
_KCMP_VM = 1


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _check(rv: int) -> int:
    """Raise OSError(errno) for a -1 return of a libc call."""
    if rv == -1:
        e = ctypes.get_errno()
        if e:
            raise OSError(e, os.strerror(e))
    return rv


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """ptrace(2); raises OSError with the errno of a failure."""
    ctypes.set_errno(0)
    return _check(_ptrace(request, pid, addr, data))


def seize(pid: int, options: int) -> None:
    """PTRACE_SEIZE ``pid`` with ``options`` (the tracee keeps running)."""
    ptrace(PTRACE_SEIZE, pid, 0, options)


def interrupt(pid: int) -> None:
    """PTRACE_INTERRUPT: stop a seized tracee (a PTRACE_EVENT_STOP follows)."""
    ptrace(PTRACE_INTERRUPT, pid)


def restart(request: int, pid: int, sig: int = 0) -> bool:
    """Restart a stopped tracee with PTRACE_SYSCALL/CONT/LISTEN; False if it is gone (ESRCH)."""
    if _ptrace(request, pid, 0, sig) != -1:
        return True
    e = ctypes.get_errno()
    if e == 3:  # ESRCH: killed meanwhile
        return False
    raise OSError(e, os.strerror(e))


_msg = ctypes.c_ulong()


def event_msg(pid: int) -> int:
    """PTRACE_GETEVENTMSG: the new tid of a fork/clone, the former tid at exec, the exit status."""
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(_msg))
    return _msg.value


_INFO_SIZE = 88
_info_buf = ctypes.create_string_buffer(_INFO_SIZE)
_info_addr = ctypes.addressof(_info_buf)
_info_view = memoryview(_info_buf).cast("B")
_HEAD = struct.Struct("=B3xIQQ")
_ENTRY = struct.Struct("=7Q")
_EXIT = struct.Struct("=qB")


def syscall_info(pid: int) -> tuple[int, int, tuple[int, ...]]:
    """PTRACE_GET_SYSCALL_INFO → ``(op, nr_or_rval, args)``.

    For an entry or seccomp stop: ``(OP_ENTRY|OP_SECCOMP, nr, (a0..a5))``; for an exit
    stop: ``(OP_EXIT, rval, ())`` where a failure is ``-errno``; otherwise ``(OP_NONE, 0, ())``.
    """
    if _ptrace(PTRACE_GET_SYSCALL_INFO, pid, _INFO_SIZE, _info_addr) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    raw = _info_view  # unpacked in place, without a copy
    op = raw[0]
    if op == OP_ENTRY or op == OP_SECCOMP:
        vals = _ENTRY.unpack_from(raw, 24)
        return op, vals[0], vals[1:]
    if op == OP_EXIT:
        rval, _ = _EXIT.unpack_from(raw, 24)
        return op, rval, ()
    return op, 0, ()


def read_mem(pid: int, addr: int, size: int) -> bytes:
    """Read up to ``size`` bytes of tracee memory at ``addr`` (short at an unmapped page)."""
    if size <= 0 or addr == 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.addressof(buf), size)
    remote = _IoVec(addr, size)
    n = _syscall(
        _NR_PROCESS_VM_READV,
        ctypes.c_long(pid),
        ctypes.byref(local),
        ctypes.c_ulong(1),
        ctypes.byref(remote),
        ctypes.c_ulong(1),
        ctypes.c_ulong(0),
    )
    if n < 0:
        return b""
    return buf.raw[:n]


def read_cstr(pid: int, addr: int, limit: int = 4096) -> bytes | None:
    """The NUL-terminated string at ``addr`` (at most ``limit`` bytes); None if unreadable."""
    if addr == 0:
        return None
    out = b""
    while len(out) < limit:
        chunk = min(PAGE_SIZE - (addr % PAGE_SIZE), limit - len(out))  # a page at a time
        data = read_mem(pid, addr, chunk)
        if not data:
            return out if out else None
        nul = data.find(b"\0")
        if nul >= 0:
            return out + data[:nul]
        out += data
        addr += len(data)
    return out


def read_words(pid: int, addr: int, count: int) -> list[int]:
    """``count`` 64-bit words at ``addr`` (fewer if memory ends)."""
    data = read_mem(pid, addr, 8 * count)
    n = len(data) // 8
    return list(struct.unpack_from(f"={n}Q", data)) if n else []


def same_mm(pid1: int, pid2: int) -> bool | None:
    """kcmp(KCMP_VM): whether two tasks share one mm; None if kcmp is unavailable."""
    ctypes.set_errno(0)
    rv = _syscall(
        ctypes.c_long(_NR_KCMP),
        ctypes.c_long(pid1),
        ctypes.c_long(pid2),
        ctypes.c_long(_KCMP_VM),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if rv < 0:
        return None
    return bool(rv == 0)
