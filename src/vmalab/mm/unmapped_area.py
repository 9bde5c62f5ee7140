"""Choosing where a mapping goes: get_unmapped_area and the top-down gap search.

Models mm/mmap.c:__get_unmapped_area → generic_get_unmapped_area_topdown (the hint test,
the THP alignment of thp_get_unmapped_area_vmflags), the hugetlbfs variant
(fs/hugetlbfs/inode.c:hugetlb_get_unmapped_area), mm/vma.c:unmapped_area_topdown and the
helpers of include/linux/mm.h (PAGE_ALIGN, vm_start_gap). Split out of
:mod:`vmalab.mm.mmap`, which re-exports these names.
"""

from __future__ import annotations

import errno

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm.filemap import File
from vmalab.mm.flags import (
    VM_GROWSDOWN,
)
from vmalab.mm.mm_types import (
    MMAP_MIN_ADDR,
    PAGE_SIZE,
    STACK_GUARD_GAP,
    TASK_SIZE,
    MmStruct,
    VmArea,
)
from vmalab.mm.pagetable import PMD_SIZE


def page_align(n: int) -> int:
    """Models include/linux/mm.h:PAGE_ALIGN (wrapping at 2**64 like unsigned long)."""
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ((1 << 64) - 1)


def user_range_end(start: int, len_in: int) -> int:
    """The end of [start, start + PAGE_ALIGN(len_in)); EINVAL when it is not a range.

    Models the checks that mm/madvise.c:do_madvise (madvise_validate_...) and
    mm/mseal.c:do_mseal share: a page-aligned start, a length that PAGE_ALIGN() does not
    wrap to 0, an end that does not overflow (``len_in`` is an unsigned long, so a
    negative one wraps: measured, mseal(addr, -8192) is EINVAL on 6.18).
    """
    if start & (PAGE_SIZE - 1) or start < 0:
        raise kernel_error(errno.EINVAL, "unaligned start")
    length = page_align(len_in)
    if len_in and not length:
        raise kernel_error(errno.EINVAL, "length overflows")
    end = start + length
    if end >= 1 << 64:
        raise kernel_error(errno.EINVAL, "range overflows")
    return end


def vm_start_gap(vma: VmArea) -> int:
    """Models include/linux/mm.h:vm_start_gap (stack_guard_gap below a growsdown VMA)."""
    start = vma.vm_start
    if vma.vm_flags & VM_GROWSDOWN:
        start = max(start - STACK_GUARD_GAP, 0) if start > STACK_GUARD_GAP else 0
    return start


def get_unmapped_area(
    mm: MmStruct, addr: int, length: int, pgoff: int, flags: int, file: File | None
) -> int:
    """Choose an address for a mapping. Raises OSError.

    Models mm/mmap.c:__get_unmapped_area → generic_get_unmapped_area_topdown: MAP_FIXED
    addresses are checked only for range and alignment; a hint is used if the gap fits;
    otherwise the highest gap below mmap_base wins. Private anonymous mappings without a
    hint whose length is a multiple of PMD_SIZE are PMD-aligned
    (thp_get_unmapped_area_vmflags, 6.7+).
    """
    if length > TASK_SIZE:
        raise kernel_error(errno.ENOMEM, "length > TASK_SIZE")
    if flags & uapi.MAP_FIXED:
        if addr > TASK_SIZE - length:
            raise kernel_error(errno.ENOMEM, "MAP_FIXED beyond TASK_SIZE")
        if addr & (PAGE_SIZE - 1):
            raise kernel_error(errno.EINVAL, "unaligned MAP_FIXED address")
        return addr
    hint = addr
    if addr:
        addr = page_align(addr)
        if _hint_is_free(mm, addr, length):
            return addr
    # Only private anonymous mappings without a hint: MAP_SHARED anonymous memory takes
    # shmem_get_unmapped_area(), which aligns nothing with shmem_enabled=never.
    thp = not hint and file is None and not flags & uapi.MAP_SHARED and length % PMD_SIZE == 0
    align = PMD_SIZE if thp else PAGE_SIZE
    return vm_unmapped_area_topdown(mm, length, MMAP_MIN_ADDR, mm.mmap_base, align)


def _hint_is_free(mm: MmStruct, addr: int, length: int) -> bool:
    """Whether [addr, addr + length) can be used as given. Models the hint test shared by
    mm/mmap.c:generic_get_unmapped_area_topdown and generic_hugetlb_get_unmapped_area:
    below TASK_SIZE, above mmap_min_addr, clear of the next VMA's start gap and of the
    previous VMA."""
    vma, prev = mm.find_vma_prev(addr)
    return (
        TASK_SIZE - length >= addr
        and addr >= MMAP_MIN_ADDR
        and (vma is None or addr + length <= vm_start_gap(vma))
        and (prev is None or addr >= prev.vm_end)
    )


def hugetlb_get_unmapped_area(mm: MmStruct, addr: int, length: int, align: int) -> int:
    """Models fs/hugetlbfs/inode.c:hugetlb_get_unmapped_area → generic_hugetlb_get_unmapped_area
    (a hint aligned up to the huge page size and used if free; else a top-down search
    with the huge page alignment)."""
    if length > TASK_SIZE:
        raise kernel_error(errno.ENOMEM, "length > TASK_SIZE")
    if addr:
        addr = (addr + align - 1) & ~(align - 1)
        if _hint_is_free(mm, addr, length):
            return addr
    return vm_unmapped_area_topdown(mm, length, MMAP_MIN_ADDR, mm.mmap_base, align)


def vm_unmapped_area_topdown(mm: MmStruct, length: int, low: int, high: int, align: int) -> int:
    """The highest ``align``-aligned gap of ``length`` in [low, high).

    Models mm/vma.c:unmapped_area_topdown.
    """
    v = mm.floor_vma(high - 1)  # the highest VMA starting below high
    nxt = v.vm_next if v is not None else mm.first_vma()
    gap_end = high if nxt is None else min(high, vm_start_gap(nxt))
    while True:
        if v is not None and v.vm_end > gap_end:
            gap_end = min(gap_end, vm_start_gap(v))
            v = v.vm_prev
            continue
        gap_start = max(v.vm_end if v is not None else 0, low)
        if gap_end >= gap_start + length:
            cand = (gap_end - length) & ~(align - 1)
            if cand >= gap_start:
                return cand
        if v is None:
            raise kernel_error(errno.ENOMEM, "no gap")
        gap_end = vm_start_gap(v)
        v = v.vm_prev
