"""The program format's constants and name tables (flag, advice, seal... names to bits)."""

from __future__ import annotations

from collections.abc import Iterable

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


def uapi_names(prefix: str, names: str) -> dict[str, int]:
    """The name table of the space-separated ``names``, each standing for the ``uapi``
    constant ``prefix`` + its upper case (``uapi_names("MCL_", "current")``:
    ``{"current": uapi.MCL_CURRENT}``)."""
    return {n: getattr(uapi, prefix + n.upper()) for n in names.split()}


PROT_NAMES = {"r": uapi.PROT_READ, "w": uapi.PROT_WRITE, "x": uapi.PROT_EXEC}
MAP_FLAG_NAMES = uapi_names(
    "MAP_", "shared private droppable anonymous populate noreserve locked growsdown fixed_noreplace"
)
ADVICE_NAMES = uapi_names(
    "MADV_",
    "normal random sequential willneed dontneed free remove dontfork dofork mergeable"
    " unmergeable hugepage nohugepage dontdump dodump wipeonfork keeponfork cold pageout"
    " populate_read populate_write dontneed_locked collapse guard_install guard_remove",
)
OPEN_FLAG_NAMES = uapi_names("O_", "rdonly wronly rdwr creat trunc excl")
FALLOC_NAMES = uapi_names("FALLOC_FL_", "keep_size punch_hole")
MFD_NAMES = uapi_names("MFD_", "allow_sealing hugetlb")
PKEY_RIGHT_NAMES = {"disable_access": 1, "disable_write": 2}
MDWE_NAMES = uapi_names("PR_MDWE_", "refuse_exec_gain no_inherit")
MCL_NAMES = uapi_names("MCL_", "current future onfault")
SEAL_NAMES = uapi_names("F_SEAL_", "seal shrink grow write future_write")


def prot_bits(p: str) -> int:
    """A normalised ``prot`` string (letters from ``rwx``) as PROT_* bits."""
    return bits(p, PROT_NAMES)


def bits(names: Iterable[str], table: dict[str, int]) -> int:
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
