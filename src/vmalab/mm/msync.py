"""msync(2).

Models mm/msync.c:sys_msync. The model has no backing store to write back, so msync
changes nothing; what it models is the kernel's answers: EINVAL for unknown flags, an
unaligned start or MS_ASYNC with MS_SYNC; ENOMEM for a length that wraps, for a range
starting past the last VMA or covering unmapped holes (MS_ASYNC alone stops at the first
hole; the others go on and report ENOMEM at the end); EBUSY for MS_INVALIDATE on a
VM_LOCKED VMA. All measured on 6.18.44 (docs/coverage.md).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmalab.errors import kernel_error
from vmalab.mm.flags import VM_LOCKED

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmStruct

MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4


def do_msync(mm: MmStruct, start: int, length: int, flags: int) -> None:
    """Models mm/msync.c:SYSCALL_DEFINE3(msync). Raises OSError; changes nothing.

    Long as the syscall is.
    """
    if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        raise kernel_error(errno.EINVAL, "unknown msync flags")
    if start & 4095 or start < 0:
        raise kernel_error(errno.EINVAL, "unaligned start")
    if flags & MS_ASYNC and flags & MS_SYNC:
        raise kernel_error(errno.EINVAL, "MS_ASYNC with MS_SYNC")
    if length < 0:
        length &= (1 << 64) - 1  # size_t
    length = (length + 4095) & ~4095
    end = start + length
    if end >= 1 << 64:
        raise kernel_error(errno.ENOMEM, "range wraps")
    if end == start:
        return
    unmapped_error = False
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            raise kernel_error(errno.ENOMEM, "unmapped range")
        if start < vma.vm_start:
            if flags == MS_ASYNC:
                raise kernel_error(errno.ENOMEM, "hole (MS_ASYNC stops here)")
            start = vma.vm_start
            if start >= end:
                raise kernel_error(errno.ENOMEM, "unmapped range")
            unmapped_error = True
        if flags & MS_INVALIDATE and vma.vm_flags & VM_LOCKED:
            raise kernel_error(errno.EBUSY, "MS_INVALIDATE on mlocked memory")
        # MS_SYNC on a shared file mapping: vfs_fsync_range(), which cannot fail here.
        start = vma.vm_end
        if start >= end:
            break
        vma = mm.find_vma(start)
    if unmapped_error:
        raise kernel_error(errno.ENOMEM, "range covers unmapped holes")
