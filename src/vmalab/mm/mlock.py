"""mlock and munlock.

Models mm/mlock.c:do_mlock, apply_vma_lock_flags, mlock_fixup and sys_munlock, and the
populate that follows an mlock (mm/gup.c:__mm_populate with errors mapped by
__mlock_posix_error_return).
"""

from __future__ import annotations

import errno

from vmalab.errors import kernel_error
from vmalab.mm.flags import (
    VM_DROPPABLE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_SPECIAL,
)
from vmalab.mm.mm_types import PAGE_SIZE, MmStruct, VmArea
from vmalab.mm.mmap import mm_populate, page_align
from vmalab.mm.vma import vma_modify_flags


def mlock_fixup(
    mm: MmStruct, vma: VmArea, prev: VmArea | None, start: int, end: int, newflags: int
) -> VmArea:
    """Models mm/mlock.c:mlock_fixup (VM_SPECIAL, hugetlb and droppable VMAs are skipped)."""
    oldflags = vma.vm_flags
    if newflags == oldflags or oldflags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
        return vma
    vma, newflags = vma_modify_flags(prev, vma, start, end, newflags)
    npages = (end - start) >> 12
    if newflags & VM_LOCKED and not oldflags & VM_LOCKED:
        mm.locked_vm += npages
    elif not newflags & VM_LOCKED and oldflags & VM_LOCKED:
        mm.locked_vm -= npages
    vma.vm_flags = newflags
    return vma


def apply_vma_lock_flags(mm: MmStruct, start: int, length: int, flags: int) -> None:
    """Set or clear the lock flags on [start, start+length).

    Models mm/mlock.c:apply_vma_lock_flags.
    """
    end = start + length
    if end > (1 << 64) - 1:  # unsigned wrap-around: end < start
        raise kernel_error(errno.EINVAL, "range overflows")
    if end == start:
        return
    vma = mm.find_vma(start)
    if vma is None or vma.vm_start > start:
        raise kernel_error(errno.ENOMEM, "range not mapped")
    prev = mm.vma_prev(vma) if start <= vma.vm_start else vma
    nstart = start
    while True:
        newflags = (vma.vm_flags & ~VM_LOCKED_MASK) | flags
        tmp = min(vma.vm_end, end)
        vma = mlock_fixup(mm, vma, prev, nstart, tmp, newflags)
        # tmp = vma_iter_end(&vmi): a merge may have grown the VMA past the range.
        tmp = nstart = vma.vm_end
        prev = vma
        if tmp >= end:
            return
        nxt = mm.vma_next(vma)
        if nxt is None or nxt.vm_start != tmp:
            raise kernel_error(errno.ENOMEM, "hole in range")
        vma = nxt


def do_mlock(mm: MmStruct, start: int, length: int, flags: int) -> None:
    """The mlock/mlock2 syscall. Raises OSError.

    Models mm/mlock.c:do_mlock: the start is rounded down (no alignment error); after
    the flags are set, populating the range maps -EFAULT (a guard marker, for example)
    to ENOMEM, yet the VMAs stay VM_LOCKED (measured on 6.18.44).
    """
    if length < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    apply_vma_lock_flags(mm, start, length, flags)
    if not length:
        return
    # Always __mm_populate(): it skips the VMAs that got VM_LOCKONFAULT, but a VMA that
    # mlock_fixup() left alone (VM_DROPPABLE, VM_SPECIAL) is still faulted in.
    err = mm_populate(mm, start, length, ignore_errors=False)
    if err == -errno.EFAULT or err == -errno.ENOMEM:
        raise OSError(
            errno.ENOMEM if err == -errno.EFAULT else errno.EAGAIN, "mlock populate failed"
        )


def do_munlock(mm: MmStruct, start: int, length: int) -> None:
    """The munlock syscall. Models mm/mlock.c:sys_munlock."""
    if length < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    apply_vma_lock_flags(mm, start, length, 0)
