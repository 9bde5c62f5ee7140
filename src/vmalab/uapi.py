"""Linux x86-64 uapi constants under their Linux names.

Values are those of include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h,
include/uapi/asm-generic/fcntl.h, include/uapi/linux/memfd.h, include/uapi/linux/fcntl.h,
include/uapi/linux/falloc.h and fs/proc/task_mmu.c (pagemap bits) as built for x86-64.
"""

from __future__ import annotations

from typing import Final

PROT_NONE: Final = 0x0
PROT_READ: Final = 0x1
PROT_WRITE: Final = 0x2
PROT_EXEC: Final = 0x4
PROT_SEM: Final = 0x8
PROT_GROWSDOWN: Final = 0x01000000
PROT_GROWSUP: Final = 0x02000000

MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_SHARED_VALIDATE: Final = 0x03
MAP_DROPPABLE: Final = 0x08
MAP_TYPE: Final = 0x0F
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_ANON: Final = MAP_ANONYMOUS
MAP_32BIT: Final = 0x40
MAP_GROWSDOWN: Final = 0x0100
MAP_DENYWRITE: Final = 0x0800
MAP_EXECUTABLE: Final = 0x1000
MAP_LOCKED: Final = 0x2000
MAP_NORESERVE: Final = 0x4000
MAP_POPULATE: Final = 0x8000
MAP_NONBLOCK: Final = 0x10000
MAP_STACK: Final = 0x20000
MAP_HUGETLB: Final = 0x40000
MAP_SYNC: Final = 0x80000
MAP_FIXED_NOREPLACE: Final = 0x100000
MAP_UNINITIALIZED: Final = 0x4000000

MADV_NORMAL: Final = 0
MADV_RANDOM: Final = 1
MADV_SEQUENTIAL: Final = 2
MADV_WILLNEED: Final = 3
MADV_DONTNEED: Final = 4
MADV_FREE: Final = 8
MADV_REMOVE: Final = 9
MADV_DONTFORK: Final = 10
MADV_DOFORK: Final = 11
MADV_MERGEABLE: Final = 12
MADV_UNMERGEABLE: Final = 13
MADV_HUGEPAGE: Final = 14
MADV_NOHUGEPAGE: Final = 15
MADV_DONTDUMP: Final = 16
MADV_DODUMP: Final = 17
MADV_WIPEONFORK: Final = 18
MADV_KEEPONFORK: Final = 19
MADV_COLD: Final = 20
MADV_PAGEOUT: Final = 21
MADV_POPULATE_READ: Final = 22
MADV_POPULATE_WRITE: Final = 23
MADV_DONTNEED_LOCKED: Final = 24
MADV_COLLAPSE: Final = 25
MADV_HWPOISON: Final = 100
MADV_SOFT_OFFLINE: Final = 101
MADV_GUARD_INSTALL: Final = 102
MADV_GUARD_REMOVE: Final = 103

MREMAP_MAYMOVE: Final = 1
MREMAP_FIXED: Final = 2
MREMAP_DONTUNMAP: Final = 4

MCL_CURRENT: Final = 1
MCL_FUTURE: Final = 2
MCL_ONFAULT: Final = 4
MLOCK_ONFAULT: Final = 0x01

O_RDONLY: Final = 0o0
O_WRONLY: Final = 0o1
O_RDWR: Final = 0o2
O_ACCMODE: Final = 0o3
O_CREAT: Final = 0o100
O_EXCL: Final = 0o200
O_TRUNC: Final = 0o1000
O_APPEND: Final = 0o2000
O_NONBLOCK: Final = 0o4000
O_CLOEXEC: Final = 0o2000000

MFD_CLOEXEC: Final = 0x0001
MFD_ALLOW_SEALING: Final = 0x0002
MFD_HUGETLB: Final = 0x0004
MFD_NOEXEC_SEAL: Final = 0x0008
MFD_EXEC: Final = 0x0010

F_SEAL_SEAL: Final = 0x0001
F_SEAL_SHRINK: Final = 0x0002
F_SEAL_GROW: Final = 0x0004
F_SEAL_WRITE: Final = 0x0008
F_SEAL_FUTURE_WRITE: Final = 0x0010
F_SEAL_EXEC: Final = 0x0020

FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02

PM_PRESENT: Final = 1 << 63
PM_SWAP: Final = 1 << 62
PM_FILE: Final = 1 << 61
PM_UFFD_WP: Final = 1 << 57
PM_GUARD_REGION: Final = 1 << 58
PM_MMAP_EXCLUSIVE: Final = 1 << 56
PM_SOFT_DIRTY: Final = 1 << 55
PM_PFRAME_MASK: Final = (1 << 55) - 1

# include/uapi/linux/prctl.h: memory-deny-write-execute
PR_SET_MDWE: Final = 65
PR_SET_VMA: Final = 0x53564D41
PR_SET_VMA_ANON_NAME: Final = 0
PR_GET_MDWE: Final = 66
PR_MDWE_REFUSE_EXEC_GAIN: Final = 1 << 0
PR_MDWE_NO_INHERIT: Final = 1 << 1

# include/uapi/linux/ipc.h
IPC_RMID: Final = 0

# include/uapi/linux/userfaultfd.h: a feature bit and the ioctl numbers (_IOWR(UFFDIO, ...))
# of the three calls the model takes (mm/userfaultfd.py models them; the replay and the
# live runner read and issue them)
UFFD_FEATURE_SIGBUS: Final = 1 << 7
UFFDIO_API: Final = 0xC018AA3F
UFFDIO_REGISTER: Final = 0xC020AA00
UFFDIO_UNREGISTER: Final = 0x8010AA01
