"""PMD-mapped transparent huge pages: faults, splits, fork, CoW and mremap of huge PMDs.

Models the parts of mm/huge_memory.c the VMA layer observes. A PMD-mapped THP of
``mm`` is a PMD index in ``mm.pgtables.huge`` (``pmd_trans_huge()``). Its PTE table is
the table the kernel deposits with the huge PMD (pgtable_trans_huge_deposit(), so the
page-table count is the kernel's) and holds the 512 PTEs __split_huge_pmd() would write
into it: the rest of the model (loads, stores, pagemap, mincore, mprotect) reads them
unchanged, and a split is only dropping the index from ``huge``.

Measured on 6.18.44 (enabled=madvise, use_zero_page=1; tests/test_huge_memory.py):
a written THP shows ``AnonHugePages: 2048 kB``; MADV_DONTNEED of 4 KiB, munmap or
mprotect of part, a guard region over part, a VMA split inside it (MADV_NOHUGEPAGE or
munlock of part) or mremap to an unaligned address leave 0 kB; mprotect of the whole
range, MADV_NOHUGEPAGE of the whole VMA, MADV_FREE of the whole range, mlock and an
aligned mremap keep it; fork gives the child a huge PMD too (copy_huge_pmd); a write
to a CoW-shared huge PMD splits it in the writer only (do_huge_pmd_wp_page falls back)
and copies one 4 KiB page; once the other mapping is gone, a write reuses the whole PMD.

Simplifications: a split splits the folio at once (the kernel keeps a PTE-mapped large
folio on the deferred-split queue; pagemap, Rss and the probe cannot tell, except that
MADV_FREE/PAGEOUT of part of a THP, which split the folio in the kernel, there map its
zero-filled subpages to the shared zero page: Rss drops, the pages stay present); only
anonymous and shmem (MADV_COLLAPSE) huge PMDs exist; no PUD-sized THP, no mTHP orders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmalab.mm.flags import (
    VM_DROPPABLE,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_NOHUGEPAGE,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
)
from vmalab.mm.mm_types import linear_page_index
from vmalab.mm.page_alloc import KIND_ANON, KIND_PAGECACHE
from vmalab.mm.pagetable import (
    _PAGE_PRESENT,
    _PAGE_RW,
    PAGE_SHIFT,
    PMD_SHIFT,
    PMD_SIZE,
    PTRS_PER_PTE,
)

if TYPE_CHECKING:
    from array import array

    from vmalab.mm.mm_types import MmStruct, VmArea
    from vmalab.mm.pagetable import PageTables

HPAGE_PMD_NR = PTRS_PER_PTE
HPAGE_PMD_MASK = ~(PMD_SIZE - 1)
VM_NO_THP = VM_SPECIAL | VM_DROPPABLE | VM_HUGETLB

#: thp_vma_allowable_order()'s callers (include/linux/huge_mm.h: enum tva_type).
TVA_PAGEFAULT = "pagefault"
TVA_KHUGEPAGED = "khugepaged"
TVA_FORCED_COLLAPSE = "forced_collapse"


def pmd_index(addr: int) -> int:
    """The PMD slot of ``addr`` (the key of ``PageTables.pte`` and ``huge``): unlike
    include/linux/pgtable.h:pmd_index, not masked to PTRS_PER_PMD, since the model's
    page tables are one flat map from ``addr >> PMD_SHIFT`` to the PTE table."""
    return addr >> PMD_SHIFT


def thp_vma_suitable_order(vma: VmArea, addr: int) -> bool:
    """Whether ``vma`` covers the PMD-aligned 2 MiB range holding ``addr``.

    Models include/linux/huge_mm.h:thp_vma_suitable_order for PMD_ORDER: for a file
    VMA, the file offset must be PMD-aligned where the virtual address is.
    """
    if vma.vm_file is not None and ((vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff) % HPAGE_PMD_NR:
        return False
    haddr = addr & HPAGE_PMD_MASK
    return vma.vm_start <= haddr and haddr + PMD_SIZE <= vma.vm_end


def thp_vma_allowable_pmd(vma: VmArea, tva: str) -> bool:
    """Whether PMD-sized THPs are allowed in ``vma`` for ``tva``.

    Models include/linux/huge_mm.h:thp_vma_allowable_order → mm/huge_memory.c:
    __thp_vma_allowable_orders for PMD_ORDER: never with VM_NOHUGEPAGE (vma_thp_disabled;
    PR_SET_THP_DISABLE is not modelled), VM_HUGETLB, VM_SPECIAL or VM_DROPPABLE; outside a
    fault the VMA must be able to hold one aligned PMD (thp_vma_suitable_order at
    vm_end - HPAGE_PMD_SIZE); faults and khugepaged obey the sysfs ``enabled`` mode
    (``Kernel.thp``: "always", or "madvise" with VM_HUGEPAGE), MADV_COLLAPSE does not
    (TVA_FORCED_COLLAPSE). File VMAs: only MADV_COLLAPSE of shmem (measured on 6.18.44
    with shmem_enabled=never: MADV_COLLAPSE of a memfd or MAP_SHARED|MAP_ANONYMOUS range
    succeeds; faults and khugepaged never make shmem THPs under that setting).
    """
    f = vma.vm_flags
    if f & (VM_NOHUGEPAGE | VM_NO_THP):
        return False
    if vma.vm_file is not None or f & VM_SHARED:
        if tva != TVA_FORCED_COLLAPSE or vma.vm_file is None:
            return False
        if vma.vm_file.inode.kind in ("sysv", "devzero", "hugetlb"):  # not modelled
            return False
    if tva != TVA_PAGEFAULT and not thp_vma_suitable_order(vma, vma.vm_end - PMD_SIZE):
        return False
    if tva == TVA_FORCED_COLLAPSE:
        return True
    mode = vma.vm_mm.ctx.thp
    return mode == "always" or (mode == "madvise" and bool(f & VM_HUGEPAGE))


def thp_fault_ok(vma: VmArea, addr: int) -> bool:
    """Whether a fault at ``addr`` takes the PMD-sized anonymous path.

    Models mm/memory.c:__handle_mm_fault → create_huge_pmd → do_huge_pmd_anonymous_page
    for the conditions the model has: a private anonymous VMA allowed THP
    (thp_vma_allowable_order with TVA_PAGEFAULT) covering the whole aligned 2 MiB range
    (thp_vma_suitable_order), whose PMD has no PTE table yet (pmd_none).
    """
    if vma.vm_mm.ctx.thp == "never" or vma.vm_file is not None:
        return False
    if not thp_vma_allowable_pmd(vma, TVA_PAGEFAULT) or not thp_vma_suitable_order(vma, addr):
        return False
    return vma.vm_mm.pgtables.table(addr) is None


def set_huge_pmd(pt: PageTables, addr: int) -> None:
    """The PTE table at ``addr`` (512 PTEs of one new folio) is now mapped by a huge PMD.

    Models the set_pmd_at() + pgtable_trans_huge_deposit() of
    __do_huge_pmd_anonymous_page, do_huge_zero_wp_pmd and collapse_huge_page.
    """
    pt.huge.add(pmd_index(addr))


def file_pmd_fault_ok(vma: VmArea, addr: int, write: bool) -> bool:
    """Whether a fault at ``addr`` of a file VMA maps a huge page-cache folio by a PMD.

    Models mm/memory.c:finish_fault and mm/filemap.c:filemap_map_pmd (fault-around) →
    do_set_pmd: the PMD has no PTE table (pmd_none), the folio at the aligned index is
    of PMD order (``Inode.huge_folios``, made by MADV_COLLAPSE) and fully cached, the
    VMA covers the aligned range at a PMD-aligned file offset and THP is not disabled
    in it (vma_thp_disabled); a private write takes do_cow_fault (a 4 KiB copy) instead.
    """
    f = vma.vm_file
    if f is None or (write and not vma.vm_flags & VM_SHARED):
        return False
    inode = f.inode
    if not inode.huge_folios or vma.vm_flags & (VM_NOHUGEPAGE | VM_NO_THP):
        return False
    if vma.vm_mm.pgtables.table(addr) is not None:
        return False
    # past EOF shmem_fault() is SIGBUS, whatever is cached: huge_folio_at() answers False
    return huge_folio_at(vma, addr)


def huge_folio_at(vma: VmArea, addr: int) -> bool:
    """Whether the page cache behind ``addr`` of a file VMA holds a PMD-order folio
    there (``Inode.huge_folios``: MADV_COLLAPSE made it, nothing split it since) that
    the VMA maps whole (measured on 6.18.44: fault-around maps such a folio whole, past
    EOF too, only while one VMA covers all of it and the fault is inside EOF; after a
    VMA split it maps to EOF, a first fault past EOF is SIGBUS).

    Models the large-folio test of mm/filemap.c:filemap_map_pages (filemap_map_pmd's
    folio_test_pmd_mappable) with thp_vma_suitable_order and the EOF bound of
    mm/filemap.c:filemap_map_pages / mm/shmem.c:shmem_fault."""
    f = vma.vm_file
    if f is None or not thp_vma_suitable_order(vma, addr):
        return False
    index = linear_page_index(vma, addr)
    if index >= (f.inode.size + 4095) >> 12:
        return False  # the fault-around window starts past EOF: nothing is mapped
    start = index & ~(HPAGE_PMD_NR - 1)
    pages = f.inode.pages
    return start in f.inode.huge_folios and all(start + k in pages for k in range(HPAGE_PMD_NR))


def finish_fault_whole_folio(vma: VmArea, addr: int, t: array[int]) -> bool:
    """Map every page of the huge shmem folio behind ``addr`` by PTEs; False if the
    fault maps one page as usual.

    Models the large-folio branch of mm/memory.c:finish_fault (6.18): in a shmem VMA
    not armed by userfaultfd, a folio that fits in the VMA and the PTE table is mapped
    whole when its PTEs are all none (measured on 6.18.44: a write fault in a mapping
    that retract_page_tables() skipped maps all 512 pages of the collapsed folio; found
    by the THP fuzz, seed 7186).
    """
    if vma.uffd_ctx is not None or not huge_folio_at(vma, addr) or any(t):
        return False
    if vma.vm_file is None:  # pragma: no cover - huge_folio_at() checked it
        return False
    _map_folio_ptes(vma, t, linear_page_index(vma, addr & HPAGE_PMD_MASK))
    return True


def do_set_pmd(vma: VmArea, addr: int) -> None:
    """Map the huge page-cache folio behind the PMD range at ``addr`` by a huge PMD,
    writable in a shared writable VMA (vm_page_prot). Models mm/memory.c:do_set_pmd
    (also set_huge_pmd() of collapse_pte_mapped_thp). Raises AllocFailure.

    Simplification: the kernel deposits no table under a file huge PMD; the model keeps
    one for the 512 shadow PTEs (one page-table page more than the kernel counts).
    """
    if vma.vm_file is None:  # pragma: no cover - callers pass file VMAs
        return
    haddr = addr & HPAGE_PMD_MASK
    pt = vma.vm_mm.pgtables
    _map_folio_ptes(vma, pt.pte_alloc(haddr), linear_page_index(vma, haddr))
    pt.huge.add(pmd_index(haddr))


def _map_folio_ptes(vma: VmArea, t: array[int], start: int) -> None:
    """Point all 512 PTEs of ``t`` at the page-cache pages from file index ``start`` (one
    PMD-order folio), each page gaining a mapping and an entry it replaces losing one;
    writable in a shared writable VMA (vm_page_prot). The PTE side of
    mm/memory.c:set_pte_range over a whole folio, as finish_fault and do_set_pmd use it.
    """
    if vma.vm_file is None:  # pragma: no cover - callers pass file VMAs
        return
    pages = vma.vm_file.inode.pages
    mapcount = vma.vm_mm.ctx.phys.mapcount
    rw = _PAGE_RW if vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE else 0
    for j in range(HPAGE_PMD_NR):
        if t[j]:
            mapcount[t[j] >> PAGE_SHIFT] -= 1
        pfn = pages[start + j]
        mapcount[pfn] += 1
        t[j] = pfn << PAGE_SHIFT | _PAGE_PRESENT | rw


# --- splitting ---------------------------------------------------------------------------


def split_huge_pmd(mm: MmStruct, i: int) -> None:
    """Split the huge PMD at PMD index ``i`` into PTEs.

    Models mm/huge_memory.c:__split_huge_pmd → __split_huge_pmd_locked: an anonymous
    THP's deposited table gets one PTE per subpage (already held); a shmem huge PMD is
    only zapped (the file pages refault as PTEs), its table freed.
    """
    pt = mm.pgtables
    if i not in pt.huge:
        return
    pt.huge.discard(i)
    t = pt.pte.get(i)
    if t is None or not _is_file_pmd(mm, t):
        return
    mapcount = mm.ctx.phys.mapcount
    for j in range(HPAGE_PMD_NR):
        mapcount[t[j] >> PAGE_SHIFT] -= 1
        t[j] = 0
    pt.zap_deposited_table(i)


def _is_file_pmd(mm: MmStruct, t: array[int]) -> bool:
    """Whether the table under a huge PMD maps page-cache pages (a shmem THP)."""
    return t[0] & _PAGE_PRESENT != 0 and mm.ctx.phys.kind[t[0] >> PAGE_SHIFT] == KIND_PAGECACHE


def split_huge_pmd_address(mm: MmStruct, addr: int) -> None:
    """Split the huge PMD that ``addr`` falls inside, if ``addr`` is not PMD-aligned.

    Models mm/huge_memory.c:split_huge_pmd_address as called by vma_adjust_trans_huge()
    when a VMA boundary moves to ``addr`` (__split_vma, commit_merge, vma_shrink).
    """
    if addr & (PMD_SIZE - 1) and mm.pgtables.huge:
        split_huge_pmd(mm, pmd_index(addr))


def huge_pmds_in(pt: PageTables, start: int, end: int) -> list[int]:
    """The PMD indices of the huge PMDs overlapping [start, end), ascending."""
    lo, hi = pmd_index(start), pmd_index(end - 1)
    return sorted(i for i in pt.huge if lo <= i <= hi)


def split_huge_pmds_partial(mm: MmStruct, start: int, end: int) -> list[int]:
    """Split the huge PMDs [start, end) covers only in part; return those it covers whole.

    Models the ``next - addr != HPAGE_PMD_SIZE`` test of zap_pmd_range,
    madvise_free_huge_pmd and change_pmd_range: a huge PMD wholly inside the range is
    handled as one (zap_huge_pmd, ...), one straddling an end is split first.
    """
    pt = mm.pgtables
    if not pt.huge or end <= start:
        return []
    whole = []
    for i in huge_pmds_in(pt, start, end):
        base = i << PMD_SHIFT
        if start <= base and base + PMD_SIZE <= end:
            whole.append(i)
        else:
            split_huge_pmd(mm, i)
    return whole


# --- fork, CoW, mremap ---------------------------------------------------------------------


def is_file_huge_pmd(mm: MmStruct, i: int) -> bool:
    """Whether PMD index ``i`` of ``mm`` is a huge PMD mapping a shmem THP."""
    t = mm.pgtables.pte.get(i)
    return i in mm.pgtables.huge and t is not None and _is_file_pmd(mm, t)


def copy_huge_pmd(dst: VmArea, src: VmArea, i: int) -> None:
    """Fork copies an anonymous huge PMD as one: the child maps the THP by a PMD too.

    Models mm/huge_memory.c:copy_huge_pmd (both PMDs write-protected, as the PTE copy
    of the caller does; a file huge PMD is not copied: the child refaults it).
    """
    spt = src.vm_mm.pgtables
    if i in spt.huge and src.vm_file is None and dst.vm_file is None:
        t = spt.pte.get(i)
        if t is not None and not _is_file_pmd(src.vm_mm, t):
            dst.vm_mm.pgtables.huge.add(i)


def do_huge_pmd_wp_page(vma: VmArea, addr: int) -> bool:
    """A write fault on a read-only huge PMD; True if handled by reusing the THP.

    Models mm/huge_memory.c:do_huge_pmd_wp_page: an exclusive folio (every subpage
    mapped once here: folio_ref_count() == 1) is reused, the whole PMD made writable;
    otherwise (and always for a file PMD) the PMD is split (__split_huge_pmd) and
    VM_FAULT_FALLBACK sends the fault
    to the PTE level, which copies only the page written (measured on 6.18.44: after
    fork, the writer's AnonHugePages drops to 0, the other process keeps 2048 kB).
    """
    mm = vma.vm_mm
    i = pmd_index(addr)
    t = mm.pgtables.pte.get(i)
    if t is None or i not in mm.pgtables.huge:
        return False
    mapcount = mm.ctx.phys.mapcount
    if not _is_file_pmd(mm, t) and all(
        mapcount[t[j] >> PAGE_SHIFT] == 1 for j in range(HPAGE_PMD_NR)
    ):
        if vma.vm_flags & VM_WRITE:
            for j in range(HPAGE_PMD_NR):
                t[j] |= _PAGE_RW
        return True
    split_huge_pmd(mm, i)
    return False


def move_huge_pmds(
    old: VmArea, old_addr: int, new: VmArea, new_addr: int, length: int
) -> list[int]:
    """Before mremap moves [old_addr, +length) to new_addr: the destination PMD indices
    that stay huge; every other huge PMD of the range is split.

    Models mm/mremap.c:move_page_tables' huge-PMD case: move_huge_pmd() when the whole
    aligned PMD moves to an aligned address (extent == HPAGE_PMD_SIZE), else
    split_huge_pmd() and a move of the PTEs.
    """
    spt = old.vm_mm.pgtables
    if not spt.huge:
        return []
    delta = new_addr - old_addr
    keep = []
    for i in split_huge_pmds_partial(old.vm_mm, old_addr, old_addr + length):
        if delta % PMD_SIZE == 0:
            spt.huge.discard(i)
            keep.append(i + delta // PMD_SIZE)
        else:
            split_huge_pmd(old.vm_mm, i)
    return keep


# --- reclaim -------------------------------------------------------------------------------


def reclaim_split(mm: MmStruct, start: int, end: int) -> None:
    """Before reclaim or MADV_PAGEOUT looks at [start, end): split its huge PMDs.

    Models shrink_folio_list's handling of a PMD-mapped anonymous THP without swap: the
    THP is split (measured on 6.18.44: MADV_PAGEOUT of a written THP leaves
    AnonHugePages 0); a lazyfree THP is one folio with one dirty bit, so a store to
    any subpage since MADV_FREE keeps all 512 (measured), else all are discarded.
    """
    pt = mm.pgtables
    if not pt.huge:
        return
    lazy = mm.ctx.phys.lazyfree
    for i in huge_pmds_in(pt, start, end):
        t = pt.pte[i]
        pfns = [t[j] >> PAGE_SHIFT for j in range(HPAGE_PMD_NR)]
        if not all(p in lazy for p in pfns):
            lazy.difference_update(pfns)
        split_huge_pmd(mm, i)


# --- /proc and Kernel.check() ----------------------------------------------------------------


def pmd_mapped_kb(vma: VmArea) -> tuple[int, int]:
    """(AnonHugePages, ShmemPmdMapped) of ``vma`` in kB.

    Models fs/proc/task_mmu.c:smaps_pmd_entry: 2048 kB per huge PMD inside the VMA.
    """
    mm = vma.vm_mm
    pt = mm.pgtables
    if not pt.huge:
        return 0, 0
    anon = shmem = 0
    lo, hi = pmd_index(vma.vm_start), pmd_index(vma.vm_end - 1)
    for i in pt.huge:
        if lo <= i <= hi:
            if _is_file_pmd(mm, pt.pte[i]):
                shmem += PMD_SIZE >> 10
            else:
                anon += PMD_SIZE >> 10
    return anon, shmem


def check_huge_pmds(mm: MmStruct) -> str | None:
    """What is wrong with ``mm``'s huge PMDs, or None.

    A huge PMD has its (deposited) table, lies wholly inside one VMA allowed to hold it
    (anonymous private, or shmem), and maps 512 present pages of one kind: anonymous
    pages with one anon_vma and one writability (one PMD entry; the subpages' mapcounts
    may differ once another process's split copy of the THP CoW-copied some), or
    page-cache pages of the VMA's file.
    One test per invariant, in the order validate_mm would meet them.
    """
    pt = mm.pgtables
    phys = mm.ctx.phys
    for i in pt.huge:
        base = i << PMD_SHIFT
        t = pt.pte.get(i)
        if t is None:
            return f"huge PMD {base:#x} without its deposited table"
        vma = mm.vma_lookup(base)
        if vma is None or vma.vm_end < base + PMD_SIZE:
            return f"huge PMD {base:#x} not inside one VMA"
        if vma.vm_flags & VM_NO_THP:
            return f"huge PMD {base:#x} in a VM_SPECIAL/hugetlb/droppable VMA"
        ptes = list(t)
        if any(not p & _PAGE_PRESENT for p in ptes):
            return f"huge PMD {base:#x} maps a non-present page"
        pfns = [p >> PAGE_SHIFT for p in ptes]
        kinds = {phys.kind[p] for p in pfns}
        if kinds == {KIND_ANON}:
            if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
                return f"anonymous huge PMD {base:#x} in a file or shared VMA"
            if len({phys.owner[p] for p in pfns}) != 1:
                return f"huge PMD {base:#x} maps folios of several anon_vmas"
            if len({p & _PAGE_RW for p in ptes}) != 1:
                return f"huge PMD {base:#x}: subpages with different write bits"
        elif kinds == {KIND_PAGECACHE}:
            if vma.vm_file is None:
                return f"shmem huge PMD {base:#x} in an anonymous VMA"
        else:
            return f"huge PMD {base:#x} maps pages of kinds {sorted(kinds)}"
    return None
