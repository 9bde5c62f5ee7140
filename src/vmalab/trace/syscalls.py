"""The x86-64 system calls ``vmalab record`` decodes: their numbers, and the classes of
them the recorder and the merge act on (reads of /proc maps files, opens, the calls that
change what /proc/PID/maps shows, exits, execs).

Numbers from arch/x86/entry/syscalls/syscall_64.tbl.
"""

from __future__ import annotations

# x86-64 syscall numbers of the decoded calls
NR: dict[str, int] = {
    "read": 0,
    "open": 2,
    "close": 3,
    "mmap": 9,
    "mprotect": 10,
    "munmap": 11,
    "brk": 12,
    "pread64": 17,
    "readv": 19,
    "mremap": 25,
    "mincore": 27,
    "madvise": 28,
    "shmget": 29,
    "shmat": 30,
    "dup": 32,
    "dup2": 33,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "exit": 60,
    "shmdt": 67,
    "fcntl": 72,
    "ftruncate": 77,
    "chdir": 80,
    "fchdir": 81,
    "rename": 82,
    "creat": 85,
    "unlink": 87,
    "mlock": 149,
    "munlock": 150,
    "mlockall": 151,
    "munlockall": 152,
    "prctl": 157,
    "remap_file_pages": 216,
    "exit_group": 231,
    "mbind": 237,
    "set_mempolicy": 238,
    "openat": 257,
    "unlinkat": 263,
    "renameat": 264,
    "fallocate": 285,
    "dup3": 292,
    "renameat2": 316,
    "memfd_create": 319,
    "execveat": 322,
    "userfaultfd": 323,
    "mlock2": 325,
    "pkey_mprotect": 329,
    "pkey_alloc": 330,
    "pkey_free": 331,
    "clone3": 435,
    "close_range": 436,
    "preadv": 295,
    "preadv2": 327,
    "openat2": 437,
    "process_madvise": 440,
    "map_shadow_stack": 453,
    "mseal": 462,
}
NAMES = {v: k for k, v in NR.items()}
# reads are printed only on /proc/PID/{maps,smaps,smaps_rollup,pagemap}
READS = frozenset({NR["read"], NR["pread64"], NR["readv"], NR["preadv"], NR["preadv2"]})
VREADS = frozenset({NR["readv"], NR["preadv"], NR["preadv2"]})  # the iovec ones
PREADS = frozenset({NR["pread64"], NR["preadv"], NR["preadv2"]})  # at an offset argument
OPENS = frozenset({NR["open"], NR["openat"], NR["openat2"]})
# the calls that change what /proc/PID/maps shows (of the caller's mm; execve: of the mm it
# leaves); prctl only with PR_SET_VMA, brk not with 0 (see tracer.changes_mm)
MM_CHANGERS = frozenset(
    NR[n]
    for n in (
        "mmap",
        "munmap",
        "mprotect",
        "pkey_mprotect",
        "mremap",
        "madvise",
        "process_madvise",
        "brk",
        "mlock",
        "mlock2",
        "munlock",
        "mlockall",
        "munlockall",
        "mseal",
        "shmat",
        "shmdt",
        "execve",
        "execveat",
        "remap_file_pages",
        "map_shadow_stack",
        "mbind",
        "prctl",
    )
)
EXITS = frozenset({NR["exit"], NR["exit_group"]})
EXECS = frozenset({NR["execve"], NR["execveat"]})
