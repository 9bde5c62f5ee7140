"""mseal(2): sealing VMAs against modification.

Models mm/mseal.c (Linux 6.18): do_mseal (argument checks, range_contains_unmapped,
mseal_apply through vma_modify_flags) and mm/vma.h:vma_is_sealed. The checks that make
a sealed VMA immutable live where the kernel has them: do_vmi_munmap (munmap, MAP_FIXED,
the destination of MREMAP_FIXED), mprotect_fixup, mremap's check_prep_vma and
madvise's can_madvise_modify.
"""

from __future__ import annotations

import errno

from vmalab.errors import InvariantError, kernel_error
from vmalab.mm.flags import VM_SEALED
from vmalab.mm.mm_types import MmStruct, VmArea
from vmalab.mm.mmap import user_range_end
from vmalab.mm.vma import vma_modify_flags


def vma_is_sealed(vma: VmArea) -> bool:
    """Models mm/vma.h:vma_is_sealed."""
    return bool(vma.vm_flags & VM_SEALED)


def range_contains_unmapped(mm: MmStruct, start: int, end: int) -> bool:
    """Models mm/mseal.c:range_contains_unmapped."""
    prev_end = start
    for vma in mm.vmas_in(start, end):
        if vma.vm_start > prev_end:
            return True
        prev_end = vma.vm_end
    return prev_end < end


def do_mseal(mm: MmStruct, start: int, len_in: int, flags: int) -> None:
    """The mseal syscall. Raises OSError.

    Models mm/mseal.c:do_mseal: EINVAL for flags, an unaligned start or an overflowing
    length; nothing for an empty range; ENOMEM (nothing sealed) if any part of the range
    is unmapped; then each VMA gets VM_SEALED (mseal_apply: vma_modify_flags, so a
    sealed part may merge with a sealed neighbour).
    """
    if flags:
        raise kernel_error(errno.EINVAL, "mseal flags must be 0")
    end = user_range_end(start, len_in)
    if end == start:
        return
    if range_contains_unmapped(mm, start, end):
        raise kernel_error(errno.ENOMEM, "range contains unmapped memory")
    vma = mm.vma_lookup(start)
    if vma is None:
        raise InvariantError("do_mseal: vma is None")
    prev = vma if start > vma.vm_start else mm.vma_prev(vma)
    cur = start
    while vma is not None and vma.vm_start < end:
        cur_end = min(vma.vm_end, end)
        if not vma.vm_flags & VM_SEALED:
            vma, fl = vma_modify_flags(prev, vma, cur, cur_end, vma.vm_flags | VM_SEALED)
            vma.vm_flags = fl | VM_SEALED
        prev = vma
        cur = max(cur_end, vma.vm_end)
        vma = mm.vma_next(vma) if vma.vm_end < end else None
