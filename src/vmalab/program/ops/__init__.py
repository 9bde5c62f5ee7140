"""The op classes, one module per family; importing this package registers them all
(in this order, which is the order of ``vmalab.program.base.OPS``)."""

from vmalab.program.ops.files import Close, Fallocate, Ftruncate, Memfd, Open, Pread, Pwrite, Seal
from vmalab.program.ops.lock import Memlock, Mlock, Mlockall, Munlock, Munlockall
from vmalab.program.ops.memory import Madvise, Mincore, Mmap, Mprotect, Mremap, Mseal, Munmap
from vmalab.program.ops.process import (
    Exit,
    Fork,
    Mdwe,
    PkeyAlloc,
    PkeyFree,
    PkeyMprotect,
    Read,
    Slab,
    Write,
)

__all__ = [
    "Close",
    "Exit",
    "Fallocate",
    "Fork",
    "Ftruncate",
    "Madvise",
    "Mdwe",
    "Memfd",
    "Memlock",
    "Mincore",
    "Mlock",
    "Mlockall",
    "Mmap",
    "Mprotect",
    "Mremap",
    "Munlock",
    "Munlockall",
    "Munmap",
    "Mseal",
    "Open",
    "Pread",
    "Pwrite",
    "PkeyAlloc",
    "PkeyFree",
    "PkeyMprotect",
    "Read",
    "Seal",
    "Slab",
    "Write",
]
