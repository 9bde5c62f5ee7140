"""The live runner's view of libc and the x86-64 kernel ABI: ctypes bindings of the calls
it makes (errno preserved), the syscall numbers and constants glibc has no wrapper or header
value for in ctypes, and the one-byte probe the access child runs."""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
SYS_MSEAL = 462
SYS_PKEY_MPROTECT = 329
SYS_PKEY_ALLOC = 330
SYS_PKEY_FREE = 331
SYS_SHMGET = 29
SYS_SHMAT = 30
SYS_SHMCTL = 31
SYS_SHMDT = 67
SYS_MSYNC = 26
SYS_USERFAULTFD = 323
CLONE_NEWIPC = 0x08000000
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
MAP_FAILED = (1 << 64) - 1

# probe(arg): arg = {u64 addr, u64 is_write, u64 byte, u64 out}; one byte load or store.
PROBE_CODE = bytes.fromhex(
    "48 8b 37"  # mov rsi, [rdi]
    " 48 8b 57 08"  # mov rdx, [rdi+8]
    " 48 8b 4f 10"  # mov rcx, [rdi+16]
    " 48 85 d2"  # test rdx, rdx
    " 75 0a"  # jnz store
    " 0f b6 06"  # movzx eax, byte [rsi]
    " 48 89 47 18"  # mov [rdi+24], rax
    " 31 c0"  # xor eax, eax
    " c3"  # ret  (glibc's clone then calls SYS_exit)
    " 88 0e"  # store: mov [rsi], cl
    " 31 c0"  # xor eax, eax
    " c3"  # ret
)
STACK = 1 << 16


class Libc:
    """ctypes bindings of the libc calls the runner needs (errno preserved)."""

    def __init__(self) -> None:
        c = ctypes.CDLL(None, use_errno=True)
        vp, sz, i, lg = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_long
        self.c = c
        c.mmap.restype = vp
        c.mmap.argtypes = [vp, sz, i, i, i, lg]
        c.munmap.argtypes = [vp, sz]
        c.mprotect.argtypes = [vp, sz, i]
        c.mremap.restype = vp
        c.mremap.argtypes = [vp, sz, sz, i, vp]
        c.madvise.argtypes = [vp, sz, i]
        c.mlock.argtypes = [vp, sz]
        c.mlock2.argtypes = [vp, sz, i]
        c.munlock.argtypes = [vp, sz]
        c.mlockall.argtypes = [i]
        c.mincore.argtypes = [vp, sz, ctypes.c_void_p]
        c.fallocate.argtypes = [i, i, lg, lg]
        c.clone.argtypes = [vp, vp, i, vp]
        c.prctl.argtypes = [i, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        c.syscall.restype = lg
        c.syscall.argtypes = [
            lg,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]

    @staticmethod
    def fail() -> OSError:
        e = ctypes.get_errno()
        return OSError(e, os.strerror(e))
