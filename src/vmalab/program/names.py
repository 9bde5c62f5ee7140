"""The program format's constants and name tables (flag, advice, seal... names to bits)."""

from __future__ import annotations

from vmalab import uapi

FORMAT = "vmalab-program"
VERSION = 1
PAGE = 4096
ARENA_BASE = 0x200000000000
"""Fixed, 1 GiB-aligned arena address (live-kernel-facts section 2, "Deterministic addresses")."""
DEFAULT_ARENA_PAGES = 256
MAX_ARENA_PAGES = 1 << 16
MAX_FILE_PAGES = 1 << 16
MAX_FILES = 16
MAX_DEPTH = 4
"""Maximum nesting of fork (and repeat) bodies."""
MAX_OPS = 200_000
"""Maximum number of operations after ``repeat`` expansion, fork bodies included."""

PROT_NAMES = {"r": uapi.PROT_READ, "w": uapi.PROT_WRITE, "x": uapi.PROT_EXEC}
MAP_FLAG_NAMES = {
    "shared": uapi.MAP_SHARED,
    "private": uapi.MAP_PRIVATE,
    "droppable": uapi.MAP_DROPPABLE,
    "anonymous": uapi.MAP_ANONYMOUS,
    "populate": uapi.MAP_POPULATE,
    "noreserve": uapi.MAP_NORESERVE,
    "locked": uapi.MAP_LOCKED,
    "growsdown": uapi.MAP_GROWSDOWN,
    "fixed_noreplace": uapi.MAP_FIXED_NOREPLACE,
}
ADVICE_NAMES = {
    "normal": uapi.MADV_NORMAL,
    "random": uapi.MADV_RANDOM,
    "sequential": uapi.MADV_SEQUENTIAL,
    "willneed": uapi.MADV_WILLNEED,
    "dontneed": uapi.MADV_DONTNEED,
    "free": uapi.MADV_FREE,
    "remove": uapi.MADV_REMOVE,
    "dontfork": uapi.MADV_DONTFORK,
    "dofork": uapi.MADV_DOFORK,
    "mergeable": uapi.MADV_MERGEABLE,
    "unmergeable": uapi.MADV_UNMERGEABLE,
    "hugepage": uapi.MADV_HUGEPAGE,
    "nohugepage": uapi.MADV_NOHUGEPAGE,
    "dontdump": uapi.MADV_DONTDUMP,
    "dodump": uapi.MADV_DODUMP,
    "wipeonfork": uapi.MADV_WIPEONFORK,
    "keeponfork": uapi.MADV_KEEPONFORK,
    "cold": uapi.MADV_COLD,
    "pageout": uapi.MADV_PAGEOUT,
    "populate_read": uapi.MADV_POPULATE_READ,
    "populate_write": uapi.MADV_POPULATE_WRITE,
    "dontneed_locked": uapi.MADV_DONTNEED_LOCKED,
    "collapse": uapi.MADV_COLLAPSE,
    "guard_install": uapi.MADV_GUARD_INSTALL,
    "guard_remove": uapi.MADV_GUARD_REMOVE,
}
OPEN_FLAG_NAMES = {
    "rdonly": uapi.O_RDONLY,
    "wronly": uapi.O_WRONLY,
    "rdwr": uapi.O_RDWR,
    "creat": uapi.O_CREAT,
    "trunc": uapi.O_TRUNC,
    "excl": uapi.O_EXCL,
}
FALLOC_NAMES = {"keep_size": uapi.FALLOC_FL_KEEP_SIZE, "punch_hole": uapi.FALLOC_FL_PUNCH_HOLE}
MFD_NAMES = {"allow_sealing": uapi.MFD_ALLOW_SEALING, "hugetlb": uapi.MFD_HUGETLB}
PKEY_RIGHT_NAMES = {"disable_access": 1, "disable_write": 2}
MDWE_NAMES = {
    "refuse_exec_gain": uapi.PR_MDWE_REFUSE_EXEC_GAIN,
    "no_inherit": uapi.PR_MDWE_NO_INHERIT,
}
MCL_NAMES = {"current": uapi.MCL_CURRENT, "future": uapi.MCL_FUTURE, "onfault": uapi.MCL_ONFAULT}
SEAL_NAMES = {
    "seal": uapi.F_SEAL_SEAL,
    "shrink": uapi.F_SEAL_SHRINK,
    "grow": uapi.F_SEAL_GROW,
    "write": uapi.F_SEAL_WRITE,
    "future_write": uapi.F_SEAL_FUTURE_WRITE,
}


def prot_bits(p: str) -> int:
    """A normalised ``prot`` string (letters from ``rwx``) as PROT_* bits."""
    v = 0
    for c in p:
        v |= PROT_NAMES[c]
    return v


def bits(names: tuple[str, ...], table: dict[str, int]) -> int:
    """The OR of the bits that ``names`` have in ``table``."""
    v = 0
    for n in names:
        v |= table[n]
    return v


SHMGET_NAMES = {"creat": 0o1000, "excl": 0o2000, "noreserve": 0o10000}
"""shmget flags (IPC_CREAT, IPC_EXCL, SHM_NORESERVE; vmalab.mm.shm)."""
SHMAT_NAMES = {"rdonly": 0o10000, "rnd": 0o20000, "remap": 0o40000, "exec": 0o100000}
"""shmat flags (SHM_RDONLY, SHM_RND, SHM_REMAP, SHM_EXEC)."""
MS_NAMES = {"async": 1, "invalidate": 2, "sync": 4}
"""msync flags (MS_ASYNC, MS_INVALIDATE, MS_SYNC)."""
UFFD_FEATURE_NAMES = {
    "event_remap": 1 << 2,
    "event_remove": 1 << 3,
    "event_unmap": 1 << 6,
    "sigbus": 1 << 7,
    "thread_id": 1 << 8,
}
"""UFFDIO_API features a program may ask for (EVENT_FORK is not modelled)."""
UFFD_MODE_NAMES = {"missing": 1, "wp": 2, "minor": 4}
"""UFFDIO_REGISTER modes."""
