"""Zapping and fork-time page-table copies.

Models mm/memory.c (zap_pte_range, unmap_mapping_range, copy_page_range) on the compact
page tables of ``vmalab.mm.pagetable``; the fault path is ``vmalab.mm.fault``
(mm/mremap.c:move_page_tables is in ``vmalab.mm.mremap``).

Simplifications, each visible nowhere in the VMA layer: one page per folio (a PMD-mapped
THP is 512 of them under one huge PMD, ``vmalab.mm.huge_memory``; no mTHP); no swap
(the project's machines run without it, so reclaim cannot move an
anonymous page out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, SupportsIndex, cast

from vmalab.mm import huge_memory
from vmalab.mm.mm_types import (
    PAGE_SHIFT,
    MmStruct,
    VmArea,
)
from vmalab.mm.page_alloc import KIND_ANON, KIND_PAGECACHE, ZERO_PFN
from vmalab.mm.pagetable import (
    _PAGE_PRESENT,
    _PAGE_RW,
    PMD_SHIFT,
    PTE_MARKER_GUARD_ENTRY,
    PTRS_PER_PTE,
    is_guard_pte,
    pte_walk,
)

if TYPE_CHECKING:
    from array import array

    from vmalab.mm.filemap import Inode
    from vmalab.mm.page_alloc import PhysMem

# --- zap --------------------------------------------------------------------------------


def zap_page_range(
    vma: VmArea,
    start: int,
    end: int,
    *,
    drop_markers: bool = False,
    even_cows: bool = True,
    reclaim_pt: bool = False,
    guard_count: list[int] | None = None,
) -> None:
    """Clear the PTEs of [start, end) in ``vma``.

    Models mm/memory.c:zap_pte_range / zap_present_ptes / zap_nonpresent_ptes:
    present entries are unmapped (anonymous folios freed at mapcount 0); guard markers
    survive unless ``drop_markers`` (ZAP_FLAG_DROP_MARKER, munmap and exit);
    ``even_cows=False`` keeps anonymous (CoW) pages, as unmap_mapping_range() does for
    hole punch; ``reclaim_pt`` frees PTE tables left empty (MADV_DONTNEED with
    CONFIG_PT_RECLAIM).

    Long as mm/memory.c:zap_pte_range is (one case per PTE kind).
    """
    mm = vma.vm_mm
    pt = mm.pgtables
    # zap_pmd_range(): a huge PMD the range covers whole goes with its deposited table
    # (zap_huge_pmd), one it covers in part is split first.
    whole_huge = huge_memory.split_huge_pmds_partial(mm, start, end)
    tables = pt.tables_in(start, end)
    phys = mm.ctx.phys
    for _i, t, lo, hi in tables:
        _zap_pte_range(phys, t, lo, hi, drop_markers, even_cows, guard_count)
    for i in whole_huge:
        pt.zap_deposited_table(i)
    # Every table the range covers whole is tried after the walk (try_reclaim_pte_table
    # frees only an all-none table, so one that kept an entry stays);
    # reclaim_pt_is_enabled() asks for ``end - start >= PMD_SIZE`` within the table
    # (measured on 6.18.44: MADV_DONTNEED of a table's only page leaves VmPTE as it was).
    if reclaim_pt:
        for i, _t, s, e in tables:
            if s == 0 and e == PTRS_PER_PTE:
                pt.try_reclaim_pte_table(i)


def _zap_pte_range(
    phys: PhysMem,
    t: array[int],
    lo: int,
    hi: int,
    drop_markers: bool,
    even_cows: bool,
    guard_count: list[int] | None,
) -> None:
    """Clear slots [lo, hi) of the PTE table ``t``. Models mm/memory.c:zap_pte_range.

    pte_none entries are skipped; a long range of a table that holds none but pte_none
    (``count(0)``, a C scan) is skipped whole.
    Long as zap_pte_range is: one branch per kind of entry.
    """
    if hi - lo > 32 and t.count(0) == PTRS_PER_PTE:
        return
    kind = phys.kind
    mapcount = phys.mapcount
    for j in range(lo, hi):
        pte = t[j]
        if not pte:
            continue
        if pte & _PAGE_PRESENT:
            pfn = pte >> 12
            k = kind[pfn]
            if k == KIND_ANON:
                if not even_cows:
                    continue
                mapcount[pfn] -= 1
                if mapcount[pfn] == 0:
                    phys.free(pfn)
            elif k == KIND_PAGECACHE:
                mapcount[pfn] -= 1
            t[j] = 0
        elif pte == PTE_MARKER_GUARD_ENTRY:
            if drop_markers:
                t[j] = 0
                if guard_count is not None:
                    guard_count[0] += 1
        else:  # pragma: no cover - no other non-present entries are created
            raise AssertionError(f"unknown pte {pte:#x}")


def unmap_vmas_all(mm: MmStruct) -> None:
    """Zap every PTE of ``mm`` at exit. Models exit_mmap's mm/memory.c:unmap_vmas.

    unmap_vmas() zaps the VMAs one by one in address order with the same details for
    each (ZAP_FLAG_DROP_MARKER, CoW pages included). Every PTE lies in exactly one VMA
    (``Kernel.check()``) and the zap of an entry reads nothing of its VMA, so the model
    walks the mm's PTE tables once in address order instead: the same entries, cleared
    in the same order, without a walk per VMA.
    """
    pt = mm.pgtables
    phys = mm.ctx.phys
    ptes = pt.pte
    for i in sorted(ptes):
        _zap_pte_range(phys, ptes[i], 0, PTRS_PER_PTE, True, True, None)
    pt.huge.clear()  # zap_huge_pmd(); free_pgtables() frees the deposited tables


def unmap_mapping_range(inode: Inode, first: int, last: int | None, even_cows: bool) -> None:
    """Zap every mapping of page-cache indices [first, last] of ``inode``.

    Models mm/memory.c:unmap_mapping_range / unmap_mapping_range_tree (truncation uses
    ``even_cows=True``, hole punch ``False``). Guard markers are kept (no
    ZAP_FLAG_DROP_MARKER).
    """
    for vma in cast("list[VmArea]", list(inode.i_mmap)):
        vstart = vma.vm_pgoff
        vend = vstart + vma.pages() - 1
        lo = max(first, vstart)
        hi = vend if last is None else min(last, vend)
        if lo > hi:
            continue
        a = vma.vm_start + ((lo - vstart) << PAGE_SHIFT)
        b = vma.vm_start + ((hi - vstart + 1) << PAGE_SHIFT)
        zap_page_range(vma, a, b, even_cows=even_cows)


# --- fork and mremap --------------------------------------------------------------------


class ForkWalk:
    """The PTE table pair copy_page_range() copied last, for the next VMA of the same
    fork (dup_mmap makes one per fork).

    Host-side, not the kernel's: each copy_page_range() walks the tables from the PGD
    down, but the model's walk is two dictionary lookups (the parent's table, the
    child's ``pte_alloc()``) with the PMD index boxed for each, a sixth of the copy of
    a one-page VMA. Consecutive VMAs mostly lie in the same 2 MiB, whose tables neither
    lookup can change within a fork (the child's table exists once allocated; the
    parent's are only read and write-protected), so the pair is kept while the index
    stays the same, and forgotten whenever a copy takes the general path.
    """

    __slots__ = ("i", "t", "dt")

    def __init__(self) -> None:
        self.i = -1
        self.t: array[int] | None = None
        self.dt: array[int] | None = None


def copy_page_range(dst: VmArea, src: VmArea, walk: ForkWalk | None = None) -> int:
    """Copy ``src``'s page tables into ``dst``; returns the number of markers copied.

    Models mm/memory.c:copy_page_range → copy_pte_range: present PTEs of CoW mappings
    are write-protected in parent and child and their folios gain a mapping
    (folio_try_dup_anon_rmap_pte); non-present PTEs go through copy_nonpresent_pte →
    copy_pte_marker, which always keeps PTE_MARKER_GUARD. Whether to call it at all is
    vma_needs_copy(), a design hook. Raises AllocFailure if a child table cannot be had.
    ``walk`` (dup_mmap's) keeps the last table pair for the next VMA (``ForkWalk``).

    The one PTE walk not written with ``pte_walk()``: it goes table by table, because
    copy_pte_range() allocates the child's table for every source table in the range,
    entries or none, before it reads an entry (the order matters when that fails).
    """
    spt = src.vm_mm.pgtables
    phys = src.vm_mm.ctx.phys
    cow = src.is_cow_mapping()
    start, end = src.vm_start, src.vm_end
    lo = start >> PMD_SHIFT
    if not spt.huge and lo == (end - 1) >> PMD_SHIFT:
        # inside one table without huge PMDs: tables_in() without its list
        base = lo << PMD_SHIFT
        s, e = (start - base) >> 12, (end - base) >> 12
        if walk is not None and walk.i == lo:
            t = walk.t
            dt = walk.dt
            if t is not None and dt is not None:
                return _copy_pte_range(t, dt, s, e, phys, cow)
        t = spt.pte.get(lo)
        if t is None:
            return 0
        dt = dst.vm_mm.pgtables.pte_alloc(base)
        if walk is not None:
            walk.i, walk.t, walk.dt = lo, t, dt
        return _copy_pte_range(t, dt, s, e, phys, cow)
    if walk is not None:
        walk.i = -1
    dpt = dst.vm_mm.pgtables
    markers = 0
    for i, t, s, e in spt.tables_in(start, end):
        huge = i in spt.huge
        if huge and huge_memory.is_file_huge_pmd(src.vm_mm, i):
            continue  # copy_huge_pmd(): a file PMD is not copied, the child refaults
        # copy_pte_range() allocates the child's table before looking at the entries.
        dt = dpt.pte_alloc(i << PMD_SHIFT)
        if huge:
            huge_memory.copy_huge_pmd(dst, src, i)
        markers += _copy_pte_range(t, dt, s, e, phys, cow)
    return markers


def _copy_pte_range(t: array[int], dt: array[int], s: int, e: int, phys: PhysMem, cow: bool) -> int:
    """Slots [s, e) of table ``t`` into the child's ``dt``; returns the markers copied.

    Models mm/memory.c:copy_pte_range's loop (copy_present_ptes, copy_nonpresent_pte).
    """
    mapcount = phys.mapcount
    markers = 0
    for i in range(s, e):
        # The slot and the pfn are typed SupportsIndex so that, compiled, each is boxed
        # once for its uses (an ``int`` index of an array is boxed at every use).
        j: SupportsIndex = i
        pte = t[j]
        if not pte:
            continue
        if pte & _PAGE_PRESENT:
            p = pte >> 12
            # vm_normal_folio() is NULL for the zero page, the one KIND_ZERO frame (its
            # pfn, not its kind, is tested: one array access less per PTE)
            if p != ZERO_PFN:
                pfn: SupportsIndex = p
                mapcount[pfn] += 1
            if cow and pte & _PAGE_RW:
                pte &= ~_PAGE_RW
                t[j] = pte
        else:
            markers += 1
        dt[j] = pte
    return markers


def count_markers(vma: VmArea, start: int | None = None, end: int | None = None) -> int:
    """Guard markers in [start, end) of ``vma`` (the whole VMA by default)."""
    s = vma.vm_start if start is None else start
    e = vma.vm_end if end is None else end
    return sum(1 for _i, _t, _j, pte in pte_walk(vma.vm_mm.pgtables, s, e) if is_guard_pte(pte))


def has_populated_ptes(vma: VmArea, start: int, end: int) -> bool:
    """Whether any PTE in [start, end) is populated and not a guard marker.

    Models the guard_install_{pud,pmd,pte}_entry() walk's "zap needed" answer.
    """
    return any(
        not is_guard_pte(pte) for _i, _t, _j, pte in pte_walk(vma.vm_mm.pgtables, start, end)
    )
