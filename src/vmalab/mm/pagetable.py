"""Page tables as x86-64 has them: four levels of 512-entry tables, allocated on demand.

Models the table side of mm/memory.c (``__pte_alloc``, ``__pmd_alloc``, ``__pud_alloc``),
mm/pgtable-generic.c and ``free_pgd_range()``/``free_pgtables()``. PTE tables are compact
``array('Q')`` objects of 512 entries; PMD, PUD and PGD tables are only counted (their
entries are implied by which PTE tables exist), which is all the VMA layer observes of
them. The P4D level is folded, as with 4-level paging.

PTE encoding (x86-64 style):

* ``0``: ``pte_none``;
* present: ``pfn << 12 | _PAGE_PRESENT | _PAGE_RW?`` (what the pfn is, anonymous folio,
  page-cache page or the zero page, is recorded in ``vmalab.mm.page_alloc.PhysMem``);
* ``PTE_MARKER_GUARD_ENTRY``: a non-present, swap-type PTE marker holding
  ``PTE_MARKER_GUARD`` (include/linux/swapops.h:make_pte_marker).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from vmalab.mm.slab import AllocFailure

if TYPE_CHECKING:
    from vmalab.mm.slab import Slabs

# arch/x86/include/asm/page_types.h: 4 KiB pages.
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
PAGE_MASK: Final = ~(PAGE_SIZE - 1)

_PAGE_PRESENT: Final = 0x1
_PAGE_RW: Final = 0x2
# A software bit: this PTE stands for part of a PMD mapping of the huge zero page
# (mm/huge_memory.c; pagemap reports it present and not anonymous, i.e. PM_FILE).
_PAGE_HUGE_ZERO: Final = 0x200
PTE_PFN_SHIFT: Final = 12
# A swap-type entry (present bit clear) of type SWP_PTE_MARKER carrying PTE_MARKER_GUARD.
PTE_MARKER_GUARD_ENTRY: Final = 0x2 << 1 | 0x400

PMD_SHIFT: Final = 21
PUD_SHIFT: Final = 30
PGDIR_SHIFT: Final = 39
PTRS_PER_PTE: Final = 512
PMD_SIZE: Final = 1 << PMD_SHIFT

_EMPTY: Final = array("Q", bytes(8 * PTRS_PER_PTE))


def pte_present(pte: int) -> bool:
    """Models arch/x86/include/asm/pgtable.h:pte_present."""
    return bool(pte & _PAGE_PRESENT)


def is_guard_pte(pte: int) -> bool:
    """Models include/linux/swapops.h:is_guard_swp_entry on a PTE."""
    return pte == PTE_MARKER_GUARD_ENTRY


def mk_pte(pfn: int, writable: bool) -> int:
    """Models include/linux/mm.h:mk_pte (present, optionally writable)."""
    return pfn << PTE_PFN_SHIFT | _PAGE_PRESENT | (_PAGE_RW if writable else 0)


def pte_pfn(pte: int) -> int:
    """Models pte_pfn."""
    return pte >> PTE_PFN_SHIFT


def pte_write(pte: int) -> bool:
    """Models pte_write."""
    return bool(pte & _PAGE_RW)


def pte_wrprotect(pte: int) -> int:
    """Models pte_wrprotect."""
    return pte & ~_PAGE_RW


class PageTables:
    """One mm's page tables.

    ``pte`` maps a PMD index (``addr >> 21``) to its PTE table; ``pmd`` maps a PUD index
    (``addr >> 30``) to the number of PTE tables under that PMD table; ``pud`` maps a PGD
    index (``addr >> 39``) to the number of PMD tables under that PUD table. The PGD page
    itself is allocated with the mm (``pgd_alloc()``).

    ``huge`` holds the PMD indices mapped by a PMD-mapped anonymous THP
    (``pmd_trans_huge()``); their PTE table is the table the kernel deposits with the
    huge PMD (pgtable_trans_huge_deposit, counted in nr_ptes), and its 512 entries are
    what __split_huge_pmd() would write into it (see ``vmalab.mm.huge_memory``).
    """

    __slots__ = ("pte", "pmd", "pud", "slabs", "huge")

    def __init__(self, slabs: Slabs) -> None:
        self.slabs = slabs
        self.pte: dict[int, array[int]] = {}
        self.pmd: dict[int, int] = {}
        self.pud: dict[int, int] = {}
        self.huge: set[int] = set()
        slabs.alloc(slabs.pgtable_cachep)  # pgd_alloc()

    def nr_tables(self) -> int:
        """Page-table pages in use, the PGD included."""
        return 1 + len(self.pte) + len(self.pmd) + len(self.pud)

    def get(self, addr: int) -> int:
        """The PTE for ``addr`` (0 if no table)."""
        t = self.pte.get(addr >> PMD_SHIFT)
        return t[(addr >> 12) & 511] if t is not None else 0

    def table(self, addr: int) -> array[int] | None:
        """The PTE table covering ``addr``, if allocated."""
        return self.pte.get(addr >> PMD_SHIFT)

    def pte_alloc(self, addr: int) -> array[int]:
        """The PTE table for ``addr``, allocating it and its parents on demand.

        Models mm/memory.c:__pud_alloc, __pmd_alloc and __pte_alloc; raises AllocFailure
        with nothing changed if a page cannot be had.
        """
        i = addr >> PMD_SHIFT
        t = self.pte.get(i)
        if t is not None:
            return t
        slabs = self.slabs
        pmd_i = addr >> PUD_SHIFT
        pud_i = addr >> PGDIR_SHIFT
        need_pmd = pmd_i not in self.pmd
        need_pud = need_pmd and pud_i not in self.pud
        n = 1 + need_pmd + need_pud
        done = 0
        try:
            for _ in range(n):
                slabs.alloc(slabs.pgtable_cachep)
                done += 1
        except AllocFailure:
            for _ in range(done):
                slabs.free(slabs.pgtable_cachep)
            raise
        if need_pud:
            self.pud[pud_i] = 0
        if need_pmd:
            self.pmd[pmd_i] = 0
            self.pud[pud_i] += 1
        self.pmd[pmd_i] += 1
        t = array("Q", _EMPTY)
        self.pte[i] = t
        return t

    def _free_pte_table(self, i: int) -> None:
        """Free the PTE table at PMD index ``i`` and any parent left empty."""
        slabs = self.slabs
        del self.pte[i]
        self.huge.discard(i)  # zap_deposited_table() goes with the huge PMD
        slabs.free(slabs.pgtable_cachep)
        pmd_i = i >> (PUD_SHIFT - PMD_SHIFT)
        self.pmd[pmd_i] -= 1
        if self.pmd[pmd_i] == 0:
            del self.pmd[pmd_i]
            slabs.free(slabs.pgtable_cachep)
            pud_i = pmd_i >> (PGDIR_SHIFT - PUD_SHIFT)
            self.pud[pud_i] -= 1
            if self.pud[pud_i] == 0:
                del self.pud[pud_i]
                slabs.free(slabs.pgtable_cachep)

    def zap_deposited_table(self, i: int) -> None:
        """Free the PTE table deposited under the huge PMD at PMD index ``i``.

        Models mm/huge_memory.c:zap_deposited_table (pgtable_trans_huge_withdraw +
        pte_free + mm_dec_nr_ptes), as zap_huge_pmd() and a file PMD's split do it.
        """
        if i in self.pte:
            self._free_pte_table(i)

    def tables_in(self, start: int, end: int) -> list[tuple[int, array[int], int, int]]:
        """Allocated PTE tables overlapping [start, end), in address order.

        Each item is (pmd index, table, first slot, end slot).
        """
        if end <= start:
            return []
        lo = start >> PMD_SHIFT
        hi = (end - 1) >> PMD_SHIFT
        pte = self.pte
        if lo == hi:  # the common case: the range lies in one PTE table
            t = pte.get(lo)
            if t is None:
                return []
            base = lo << PMD_SHIFT
            return [(lo, t, (start - base) >> 12, (end - base) >> 12)]
        if hi - lo + 1 <= len(pte):
            idxs: list[int] | range = range(lo, hi + 1)
        else:
            idxs = sorted(i for i in pte if lo <= i <= hi)
        out = []
        for i in idxs:
            t = pte.get(i)
            if t is None:
                continue
            base = i << PMD_SHIFT
            s = 0 if start <= base else (start - base) >> 12
            e = 512 if end >= base + PMD_SIZE else (end - base) >> 12
            out.append((i, t, s, e))
        return out

    def free_pgd_range(self, start: int, end: int, floor: int, ceiling: int) -> None:
        """Free the page tables that map only [floor, ceiling) around [start, end).

        Models mm/memory.c:free_pgd_range and its free_p?d_range() helpers: a table is
        freed when the whole range it maps lies inside [floor, ceiling) (``ceiling`` 0
        meaning the top of the address space), so tables shared with a neighbouring VMA
        survive. PMD and PUD tables go when their last PTE table goes.
        """
        if end <= start:
            return
        top = ceiling if ceiling else 1 << 64
        for i, t, _s, _e in self.tables_in(start, end):
            base = i << PMD_SHIFT
            if base >= floor and base + PMD_SIZE <= top:
                del t
                self._free_pte_table(i)

    def try_reclaim_pte_table(self, i: int) -> None:
        """Free the PTE table at index ``i`` if every entry is none.

        Models mm/pt_reclaim.c:try_to_free_pte (CONFIG_PT_RECLAIM, x86-64 since 6.14),
        run by MADV_DONTNEED's zap (``details.reclaim_pt``). A table holding a marker is
        kept, because non-present entries set ``any_skipped``.
        """
        t = self.pte.get(i)
        if t is not None and not any(t):
            self._free_pte_table(i)

    def free_all(self) -> None:
        """Free every table and the PGD. Models the tail of exit_mmap (free_pgtables, pgd_free)."""
        for i in list(self.pte):
            self._free_pte_table(i)
        self.slabs.free(self.slabs.pgtable_cachep)


def pte_walk(pt: PageTables, start: int, end: int) -> Iterator[tuple[int, array[int], int, int]]:
    """Every PTE of [start, end) that is not pte_none, in address order.

    Yields ``(i, t, j, pte)``: the PMD index, the PTE table, the slot (the entry's
    address is ``i << PMD_SHIFT | j << PAGE_SHIFT``) and the entry, which the caller may
    overwrite through ``t[j]``. Models the pte level of mm/pagewalk.c:walk_page_range
    (walk_pte_range with pte_none() entries skipped, as every caller in the model
    skips them); tables are only read from, never allocated, and the set of tables is
    taken before the first entry is yielded, so the caller may allocate tables.
    """
    for i, t, s, e in pt.tables_in(start, end):
        for j in range(s, e):
            pte = t[j]
            if pte:
                yield i, t, j, pte
