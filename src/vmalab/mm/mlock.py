"""mlock, munlock, mlockall and munlockall.

Models mm/mlock.c:do_mlock, apply_vma_lock_flags, mlock_fixup, sys_munlock,
sys_mlockall/apply_mlockall_flags and sys_munlockall (RLIMIT_MEMLOCK and CAP_IPC_LOCK
are the task's: ``Process.rlimit_memlock`` and ``Process.cap_ipc_lock``), and the
populate that follows an mlock (mm/gup.c:__mm_populate with errors mapped by
__mlock_posix_error_return).
"""

from __future__ import annotations

import errno

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm.flags import (
    VM_DROPPABLE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_SPECIAL,
)
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, MmStruct, VmArea
from vmalab.mm.mmap import can_do_mlock, mlock_limits, mm_populate, page_align
from vmalab.mm.mmap import mlock_future_ok as mlock_future_ok  # re-exported
from vmalab.mm.vma import fixup_vma_range, raise_hole_error, vma_modify_flags


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

    Models mm/mlock.c:apply_vma_lock_flags: EINVAL for a range that wraps, ENOMEM when
    ``start`` is unmapped; its VMA loop (the same as the one of
    mm/mprotect.c:do_mprotect_pkey) is ``vma.fixup_vma_range`` with mlock_fixup inside.
    """
    end = start + length
    if end > (1 << 64) - 1:  # unsigned wrap-around: end < start
        raise kernel_error(errno.EINVAL, "range overflows")
    if end == start:
        return
    vma = mm.find_vma(start)
    if vma is None or vma.vm_start > start:
        raise kernel_error(errno.ENOMEM, "range not mapped")

    def fixup(vma: VmArea, prev: VmArea | None, nstart: int, tmp: int) -> VmArea:
        newflags = (vma.vm_flags & ~VM_LOCKED_MASK) | flags
        return mlock_fixup(mm, vma, prev, nstart, tmp, newflags)

    raise_hole_error(fixup_vma_range(mm, vma, start, end, fixup))


def count_mm_mlocked_page_nr(mm: MmStruct, start: int, length: int) -> int:
    """Pages of [start, start+length) already in VM_LOCKED VMAs.

    Models mm/mlock.c:count_mm_mlocked_page_nr.
    """
    end = start + length
    return sum(
        (min(v.vm_end, end) - max(v.vm_start, start)) >> PAGE_SHIFT
        for v in mm.vmas_in(start, end)
        if v.vm_flags & VM_LOCKED
    )


def do_mlock(mm: MmStruct, start: int, length: int, flags: int) -> None:
    """The mlock/mlock2 syscall. Raises OSError.

    Models mm/mlock.c:do_mlock: EPERM unless can_do_mlock(); the start is rounded down
    (no alignment error); without CAP_IPC_LOCK, locked_vm plus the new pages (not
    counting those already locked) above RLIMIT_MEMLOCK is ENOMEM; after the flags are
    set, populating the range maps -EFAULT (a guard marker, for example) to ENOMEM, yet
    the VMAs stay VM_LOCKED (measured on 6.18.44).
    """
    if length < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    if not can_do_mlock(mm):
        raise kernel_error(errno.EPERM, "RLIMIT_MEMLOCK is 0 and no CAP_IPC_LOCK")
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    cap, limit = mlock_limits(mm)
    locked = (length >> PAGE_SHIFT) + mm.locked_vm
    if locked > limit and not cap:
        locked -= count_mm_mlocked_page_nr(mm, start, length)
    if locked > limit and not cap:
        raise kernel_error(errno.ENOMEM, "RLIMIT_MEMLOCK")
    apply_vma_lock_flags(mm, start, length, flags)
    if not length:
        return
    # Always __mm_populate(): it skips the VMAs that got VM_LOCKONFAULT, but a VMA that
    # mlock_fixup() left alone (VM_DROPPABLE, VM_SPECIAL) is still faulted in.
    err = mm_populate(mm, start, length, ignore_errors=False)
    if err == -errno.EFAULT or err == -errno.ENOMEM:
        raise kernel_error(
            errno.ENOMEM if err == -errno.EFAULT else errno.EAGAIN, "mlock populate failed"
        )


def do_munlock(mm: MmStruct, start: int, length: int) -> None:
    """The munlock syscall. Models mm/mlock.c:sys_munlock."""
    if length < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    apply_vma_lock_flags(mm, start, length, 0)


def apply_mlockall_flags(mm: MmStruct, flags: int) -> None:
    """Models mm/mlock.c:apply_mlockall_flags: MCL_FUTURE sets mm->def_flags (VM_LOCKED,
    with MCL_ONFAULT also VM_LOCKONFAULT) for future mappings; MCL_CURRENT relocks every
    VMA (mlock_fixup, errors ignored); flags 0 (munlockall) unlocks everything."""
    mm.def_flags &= ~VM_LOCKED_MASK
    if flags & uapi.MCL_FUTURE:
        mm.def_flags |= VM_LOCKED
        if flags & uapi.MCL_ONFAULT:
            mm.def_flags |= VM_LOCKONFAULT
        if not flags & uapi.MCL_CURRENT:
            return
    to_add = 0
    if flags & uapi.MCL_CURRENT:
        to_add |= VM_LOCKED
        if flags & uapi.MCL_ONFAULT:
            to_add |= VM_LOCKONFAULT
    prev: VmArea | None = None
    vma = mm.first_vma()
    while vma is not None:
        newflags = (vma.vm_flags & ~VM_LOCKED_MASK) | to_add
        try:
            vma = mlock_fixup(mm, vma, prev, vma.vm_start, vma.vm_end, newflags)
        except OSError:
            pass  # "Ignore errors, but prev needs fixing up."
        prev = vma
        vma = mm.vma_next(vma)


def do_mlockall(mm: MmStruct, flags: int) -> None:
    """The mlockall syscall. Raises OSError.

    Models mm/mlock.c:sys_mlockall: EINVAL for no flags, unknown flags or MCL_ONFAULT
    alone; EPERM unless can_do_mlock(); with MCL_CURRENT and without CAP_IPC_LOCK,
    ENOMEM when total_vm exceeds RLIMIT_MEMLOCK; then MCL_CURRENT populates everything
    (mm_populate(0, TASK_SIZE), errors ignored; VM_LOCKONFAULT VMAs are skipped).
    """
    valid = uapi.MCL_CURRENT | uapi.MCL_FUTURE | uapi.MCL_ONFAULT
    if not flags or flags & ~valid or flags == uapi.MCL_ONFAULT:
        raise kernel_error(errno.EINVAL, "bad mlockall flags")
    if not can_do_mlock(mm):
        raise kernel_error(errno.EPERM, "RLIMIT_MEMLOCK is 0 and no CAP_IPC_LOCK")
    cap, limit = mlock_limits(mm)
    total_vm = sum(v.pages() for v in mm.mm_mt.values())
    if flags & uapi.MCL_CURRENT and total_vm > limit and not cap:
        raise kernel_error(errno.ENOMEM, "total_vm above RLIMIT_MEMLOCK")
    apply_mlockall_flags(mm, flags)
    if flags & uapi.MCL_CURRENT:
        mm_populate(mm, 0, TASK_SIZE, ignore_errors=True)


def do_munlockall(mm: MmStruct) -> None:
    """The munlockall syscall. Models mm/mlock.c:sys_munlockall."""
    apply_mlockall_flags(mm, 0)
