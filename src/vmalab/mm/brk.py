"""brk(2) and the special mappings: the two ways of mapping memory without do_mmap.

Models mm/mmap.c:SYSCALL_DEFINE1(brk), mm/vma.c:do_brk_flags and
mm/vma.c:_install_special_mapping. Split out of :mod:`vmalab.mm.mmap` (whose munmap and
populate they call).
"""

from __future__ import annotations

import errno

from vmalab.errors import kernel_error
from vmalab.mm.flags import (
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_SOFTDIRTY,
)
from vmalab.mm.mm_types import (
    MMAP_MIN_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    STACK_GUARD_GAP,
    TASK_SIZE,
    MmStruct,
    VmArea,
)
from vmalab.mm.mmap import do_vmi_munmap, mm_populate
from vmalab.mm.slab import AllocFailure
from vmalab.mm.unmapped_area import page_align, vm_start_gap
from vmalab.mm.util import (
    security_vm_enough_memory_mm,
    vm_unacct_memory,
)
from vmalab.mm.vma import (
    VmaMergeStruct,
    vm_area_alloc,
    vma_link,
    vma_merge_new_range,
)

# VM_DATA_DEFAULT_FLAGS on x86-64 without READ_IMPLIES_EXEC (arch/x86/include/asm/page_types.h:
# VM_DATA_FLAGS_TSK_EXEC resolves to VM_DATA_FLAGS_NON_EXEC).
VM_DATA_DEFAULT_FLAGS = 0x1 | 0x2 | 0x10 | 0x20 | 0x40  # rd wr mr mw me


def do_brk_flags(mm: MmStruct, prev: VmArea | None, addr: int, length: int) -> None:
    """Map [addr, addr+length) as heap, extending ``prev`` when it ends at ``addr``.

    Models mm/vma.c:do_brk_flags: VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | mm->def_flags, the
    map_count limit, the commit charge (security_vm_enough_memory_mm), then
    vma_merge_new_range() with ``just_expand`` (only the previous
    VMA is a merge candidate), else a new anonymous VMA with pgoff = addr >> PAGE_SHIFT.
    """
    vm_flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | mm.def_flags
    if mm.map_count > mm.ctx.max_map_count:
        raise kernel_error(errno.ENOMEM, "map_count")
    pages = length >> PAGE_SHIFT
    security_vm_enough_memory_mm(mm, pages)  # raises ENOMEM with nothing charged
    end = addr + length
    if prev is not None and prev.vm_end == addr:
        vmg = VmaMergeStruct(mm, prev, None, addr, end, addr >> PAGE_SHIFT, vm_flags, None)
        vmg.next = None  # just_expand: the iterator sits at prev; next is not considered
        if vma_merge_new_range(vmg) is not None:
            if vm_flags & VM_LOCKED:
                mm.locked_vm += pages
            return
        if vmg.nomem:
            vm_unacct_memory(mm.ctx, pages)
            raise kernel_error(errno.ENOMEM, "merge allocation failed")
    try:
        vma = vm_area_alloc(mm, addr, end, addr >> PAGE_SHIFT, vm_flags, None)
    except AllocFailure:
        vm_unacct_memory(mm.ctx, pages)  # unacct_fail
        raise kernel_error(errno.ENOMEM, "vm_area_alloc failed") from None
    vma_link(mm, vma)
    if vm_flags & VM_LOCKED:
        mm.locked_vm += length >> PAGE_SHIFT


def sys_brk(mm: MmStruct, brk: int) -> int:
    """brk(2): move the program break; returns the new break, or the old one on refusal.

    Models mm/mmap.c:SYSCALL_DEFINE1(brk) (min_brk = mm->start_brk, as with a randomized
    brk): shrinking unmaps [PAGE_ALIGN(brk), PAGE_ALIGN(mm->brk)) if a brk VMA is there;
    growing checks the range (check_brk_limits) and the stack_guard_gap of the next VMA,
    then do_brk_flags() on the VMA before the old break (vma_prev_limit(start_brk)).
    RLIMIT_DATA is unlimited (the default), so check_data_rlimit() never refuses. Under
    mlockall(MCL_FUTURE) the new range is populated (mm_populate).

    Long as SYSCALL_DEFINE1(brk) in mm/mmap.c is.
    """
    origbrk = mm.brk
    if brk < mm.start_brk:
        return origbrk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return brk
    if brk <= mm.brk:
        brkvma = mm.find_vma(newbrk)
        if brkvma is None or brkvma.vm_start >= oldbrk:
            return origbrk  # the range intersects a non-brk mapping
        mm.brk = brk
        try:
            do_vmi_munmap(mm, newbrk, oldbrk - newbrk)
        except OSError:
            mm.brk = origbrk
            return origbrk
        return brk
    # check_brk_limits() → get_unmapped_area(MAP_FIXED): within TASK_SIZE
    if newbrk > TASK_SIZE or oldbrk < MMAP_MIN_ADDR:
        return origbrk
    nxt = mm.find_vma(oldbrk)
    if (
        nxt is not None
        and nxt.vm_start < newbrk + PAGE_SIZE + STACK_GUARD_GAP
        and newbrk + PAGE_SIZE > vm_start_gap(nxt)
    ):
        return origbrk
    prev = mm.find_vma_prev(oldbrk)[1]
    if prev is not None and prev.vm_end <= mm.start_brk:
        prev = None  # vma_prev_limit(): nothing below start_brk
    try:
        do_brk_flags(mm, prev, oldbrk, newbrk - oldbrk)
    except OSError:
        mm.brk = origbrk
        return origbrk
    mm.brk = brk
    if mm.def_flags & VM_LOCKED:  # mlockall(MCL_FUTURE): "populate = true"
        mm_populate(mm, oldbrk, newbrk - oldbrk, ignore_errors=True)
    return brk


def install_special_mapping(
    mm: MmStruct, addr: int, length: int, vm_flags: int, name: str
) -> VmArea:
    """Insert a special mapping such as ``[vdso]`` or ``[vvar]``.

    Models mm/vma.c:_install_special_mapping → __install_special_mapping:
    ``(vm_flags | mm->def_flags | VM_DONTEXPAND | VM_SOFTDIRTY) & ~VM_LOCKED_MASK``, the
    special_mapping_vmops (a name and a close hook, so it never merges: VM_DONTEXPAND is
    in VM_SPECIAL), then insert_vm_struct(). The pages behind it (the vDSO image, the vvar
    pfns) are not modelled: a fault there maps anonymous memory.
    """
    vm_flags = (vm_flags | mm.def_flags | VM_DONTEXPAND | VM_SOFTDIRTY) & ~VM_LOCKED_MASK
    if mm.map_count >= mm.ctx.max_map_count:
        raise kernel_error(errno.ENOMEM, "map_count")
    if mm.vmas_in(addr, addr + length):
        raise kernel_error(errno.ENOMEM, "range in use")  # insert_vm_struct's overlap check
    try:
        vma = vm_area_alloc(mm, addr, addr + length, 0, vm_flags, None)
    except AllocFailure:
        raise kernel_error(errno.ENOMEM, "vm_area_alloc failed") from None
    vma.special_name = name
    vma.vm_ops_close = True
    vma_link(mm, vma)
    return vma
