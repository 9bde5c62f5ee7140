"""khugepaged and MADV_COLLAPSE: collapsing PTE-mapped ranges into PMD-mapped THPs.

Models mm/khugepaged.c: madvise_collapse, the khugepaged scan (khugepaged_do_scan →
khugepaged_scan_mm_slot → hpage_collapse_scan_pmd → collapse_huge_page) for anonymous
memory, and for shmem/memfd ranges (MADV_COLLAPSE only: shmem_enabled=never on the
project's machine) hpage_collapse_scan_file → collapse_file → retract_page_tables →
collapse_pte_mapped_thp(install_pmd).

Measured on 6.18.44 (tests/test_huge_memory.py): MADV_COLLAPSE ignores the sysfs mode
and max_ptes_* (a range with one written page, read-only PTEs, pages shared with a fork
child, or an mlocked range collapses); EINVAL for VM_NOHUGEPAGE, a VMA too small to
hold an aligned PMD, an anonymous VMA without an anon_vma, a PMD without a PTE table
(SCAN_PMD_NONE) and a range holding a guard marker, which also stops the walk (a later
range is not collapsed); 0 for a range holding no aligned PMD; an already PMD-mapped
range counts as collapsed.

Simplifications: khugepaged here is one full pass over every mm at once
(``Kernel.khugepaged()``), not 4096 pages every 10 s; every present PTE counts as
young (referenced); no swap, so the only swap-type PTEs are guard markers, which a
collapse would have to "swap in" (__collapse_huge_page_swapin → handle_pte_marker →
VM_FAULT_SIGSEGV → SCAN_FAIL); allocation of the huge page never fails; the khugepaged
SCAN_PAGE_RO rule (no writable PTE) is the kernel's source, not measured (khugepaged
cannot be run on demand).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from vmalab.errors import kernel_error
from vmalab.mm import huge_memory
from vmalab.mm.fault import huge_zero_intact
from vmalab.mm.flags import VM_WRITE
from vmalab.mm.huge_memory import (
    HPAGE_PMD_MASK,
    HPAGE_PMD_NR,
    TVA_FORCED_COLLAPSE,
    TVA_KHUGEPAGED,
    pmd_index,
    thp_vma_allowable_pmd,
)
from vmalab.mm.memory import unmap_mapping_range
from vmalab.mm.mm_types import VmArea, linear_page_index
from vmalab.mm.page_alloc import KIND_ANON, ZERO_PFN
from vmalab.mm.pagetable import (
    _PAGE_HUGE_ZERO,
    _PAGE_PRESENT,
    _PAGE_RW,
    PAGE_SHIFT,
    PMD_SHIFT,
    PMD_SIZE,
    mk_pte,
)
from vmalab.mm.slab import AllocFailure

if TYPE_CHECKING:
    from vmalab.mm.filemap import Inode
    from vmalab.mm.mm_types import MmStruct

# enum scan_result (the ones the model produces)
SCAN_FAIL = "SCAN_FAIL"
SCAN_SUCCEED = "SCAN_SUCCEED"
SCAN_PMD_NONE = "SCAN_PMD_NONE"
SCAN_PMD_MAPPED = "SCAN_PMD_MAPPED"
SCAN_EXCEED_NONE_PTE = "SCAN_EXCEED_NONE_PTE"
SCAN_EXCEED_SWAP_PTE = "SCAN_EXCEED_SWAP_PTE"
SCAN_EXCEED_SHARED_PTE = "SCAN_EXCEED_SHARED_PTE"
SCAN_PAGE_RO = "SCAN_PAGE_RO"
SCAN_PTE_NON_PRESENT = "SCAN_PTE_NON_PRESENT"
SCAN_PAGE_ANON = "SCAN_PAGE_ANON"
SCAN_VMA_CHECK = "SCAN_VMA_CHECK"
SCAN_TRUNCATED = "SCAN_TRUNCATED"
SCAN_ALLOC_HUGE_PAGE_FAIL = "SCAN_ALLOC_HUGE_PAGE_FAIL"

#: madvise_collapse()'s "whitelisted set of results where continuing OK" (the ones the
#: model produces).
_CONTINUE = frozenset({SCAN_PAGE_RO, SCAN_PTE_NON_PRESENT})


@dataclass(frozen=True)
class CollapseControl:
    """struct collapse_control plus the khugepaged sysfs knobs it reads.

    Defaults are khugepaged_init()'s (and this machine's): max_ptes_none 511,
    max_ptes_swap 64, max_ptes_shared 256. The limits bind khugepaged only.
    """

    is_khugepaged: bool
    max_ptes_none: int = HPAGE_PMD_NR - 1
    max_ptes_swap: int = HPAGE_PMD_NR // 8
    max_ptes_shared: int = HPAGE_PMD_NR // 2


MADVISE_CC = CollapseControl(is_khugepaged=False)


def retractable(vma: VmArea) -> bool:
    """Whether retract_page_tables() would retract ``vma``'s PTE tables.

    Models mm/khugepaged.c:retract_page_tables' skip test for one VMA of the file's
    i_mmap: file_backed_vma_is_retractable() (a design hook: a VMA with an anon_vma,
    uffd-wp, VM_MAYBE_GUARD under sticky, or a tagged ANON_VMA_UNFAULTED word is
    skipped). Anonymous VMAs are never candidates. Whether a PMD-aligned 2 MiB range
    exists is the caller's question.
    """
    return vma.vm_file is not None and vma.vm_mm.ctx.design.file_vma_retractable(vma)


# --- anonymous collapse ----------------------------------------------------------------------


def find_pmd_or_thp_or_none(mm: MmStruct, haddr: int, vma: VmArea | None = None) -> str:
    """Models mm/khugepaged.c:find_pmd_or_thp_or_none (no PUD/PMD tables and pmd_none
    are both SCAN_PMD_NONE here: the model counts upper tables only). The huge zero PMD
    is pmd_trans_huge too (measured on 6.18.44: MADV_COLLAPSE of a range a read mapped
    with it succeeds and leaves it as it was)."""
    i = pmd_index(haddr)
    t = mm.pgtables.pte.get(i)
    if t is None:
        return SCAN_PMD_NONE
    if i in mm.pgtables.huge:
        return SCAN_PMD_MAPPED
    if vma is not None and t[0] & _PAGE_HUGE_ZERO and huge_zero_intact(vma, haddr, t):
        return SCAN_PMD_MAPPED
    return SCAN_SUCCEED


def hpage_collapse_scan_pmd(mm: MmStruct, vma: VmArea, haddr: int, cc: CollapseControl) -> str:
    """Scan one PMD range of an anonymous VMA and collapse it if it qualifies.

    Models mm/khugepaged.c:hpage_collapse_scan_pmd: swap-type entries (here only guard
    markers) count against max_ptes_swap, none and zero-page entries against
    max_ptes_none (a uffd-armed VMA allows none), pages mapped elsewhere against
    max_ptes_shared (the limits bind khugepaged only); khugepaged also wants a writable
    PTE (SCAN_PAGE_RO); then collapse_huge_page().
    Long as the kernel's is: one test per PTE kind it counts.
    """
    result = find_pmd_or_thp_or_none(mm, haddr, vma)
    if result != SCAN_SUCCEED:
        return result
    t = mm.pgtables.pte[pmd_index(haddr)]
    phys = mm.ctx.phys
    none_or_zero = unmapped = shared = 0
    writable = False
    armed = vma.uffd_ctx is not None
    for j in range(HPAGE_PMD_NR):
        pte = t[j]
        if pte and not pte & _PAGE_PRESENT:  # is_swap_pte(): a guard marker
            unmapped += 1
            if cc.is_khugepaged and unmapped > cc.max_ptes_swap:
                return SCAN_EXCEED_SWAP_PTE
            continue
        if not pte or pte >> PAGE_SHIFT == ZERO_PFN:
            none_or_zero += 1
            if armed or (cc.is_khugepaged and none_or_zero > cc.max_ptes_none):
                return SCAN_EXCEED_NONE_PTE
            continue
        if pte & _PAGE_RW:
            writable = True
        pfn = pte >> PAGE_SHIFT
        if phys.kind[pfn] != KIND_ANON:
            return SCAN_PAGE_ANON
        if phys.mapcount[pfn] > 1:  # folio_maybe_mapped_shared()
            shared += 1
            if cc.is_khugepaged and shared > cc.max_ptes_shared:
                return SCAN_EXCEED_SHARED_PTE
    if cc.is_khugepaged and not writable:
        return SCAN_PAGE_RO
    return collapse_huge_page(mm, vma, haddr, unmapped)


def collapse_huge_page(mm: MmStruct, vma: VmArea, haddr: int, unmapped: int) -> str:
    """Replace the PTE-mapped range at ``haddr`` by a new PMD-mapped THP.

    Models mm/khugepaged.c:collapse_huge_page: hugepage_vma_revalidate() (an anonymous
    VMA needs its anon_vma: SCAN_PAGE_ANON), __collapse_huge_page_swapin() for the
    swap-type entries (a guard marker answers VM_FAULT_SIGSEGV: SCAN_FAIL), then
    __collapse_huge_page_copy(): each page's contents are copied into the new folio
    (none and zero-page entries are zeroes), the old pages lose this mapping and are
    freed if it was their last, and the folio is mapped by a huge PMD, writable if the
    VMA is (maybe_pmd_mkwrite), over the same deposited table.
    """
    av = vma.anon_vma
    if av is None or vma.vm_file is not None:
        return SCAN_PAGE_ANON
    if unmapped:
        return SCAN_FAIL
    pt = mm.pgtables
    phys = mm.ctx.phys
    t = pt.pte[pmd_index(haddr)]
    writable = bool(vma.vm_flags & VM_WRITE)
    try:
        new = [phys.alloc(KIND_ANON, av.id) for _ in range(HPAGE_PMD_NR)]
    except AllocFailure:  # pragma: no cover - only under the pages budget
        return SCAN_ALLOC_HUGE_PAGE_FAIL
    for j in range(HPAGE_PMD_NR):
        pte = t[j]
        pfn = new[j]
        phys.mapcount[pfn] = 1
        if pte and pte >> PAGE_SHIFT != ZERO_PFN:
            old = pte >> PAGE_SHIFT
            phys.copy(pfn, old)
            phys.mapcount[old] -= 1
            if phys.mapcount[old] == 0:
                phys.free(old)
        t[j] = mk_pte(pfn, writable)
    huge_memory.set_huge_pmd(pt, haddr)
    return SCAN_SUCCEED


# --- shmem collapse and page-table retraction -----------------------------------------------


def collapse_file(vma: VmArea, haddr: int, install_pmd: bool) -> str:
    """Collapse the page cache behind one PMD range of a shmem VMA and retract.

    Models mm/khugepaged.c:hpage_collapse_scan_file → collapse_file (the range must hold
    at least one page, else SCAN_TRUNCATED; holes are filled with zeroed pages, past EOF
    too: measured on 6.18.44, a 55-page memfd mapped 2 MiB collapses to a PMD mapping
    all 512 pages; every PTE mapping the old pages, in every VMA of the file, is unmapped
    as try_to_unmap() does; anonymous CoW pages and markers stay) → retract_page_tables
    (every VMA mapping the range PMD-aligned whose design hook allows it loses its PTE
    table, markers included) → for MADV_COLLAPSE (SCAN_PTE_MAPPED_HUGEPAGE)
    collapse_pte_mapped_thp() on the caller's VMA. Measured on 6.18.44 with two shared
    mappings of one memfd, both read: MADV_COLLAPSE of one leaves it ShmemPmdMapped
    2048 kB and the other with no present page and no PTE table (VmPTE -8 kB in all),
    unless that other one has an anon_vma (a guard marker once installed, or a CoW
    page): then its table, marker or CoW page stays (VmPTE -4 kB).

    Simplification: the huge folio is 512 order-0 page-cache pages; khugepaged never
    collapses shmem (shmem_enabled=never), so only MADV_COLLAPSE gets here.
    """
    if vma.vm_file is None:
        return SCAN_VMA_CHECK
    inode: Inode = vma.vm_file.inode
    start = linear_page_index(vma, haddr)
    if not any(start + k in inode.pages for k in range(HPAGE_PMD_NR)):
        return SCAN_TRUNCATED
    unmap_mapping_range(inode, start, start + HPAGE_PMD_NR - 1, False)
    phys = vma.vm_mm.ctx.phys
    for k in range(start, start + HPAGE_PMD_NR):
        old = inode.pages.pop(k, None)
        pfn = inode.page_cache_alloc(k)
        if old is not None:
            phys.copy(pfn, old)
            phys.free(old)
        inode.clean.discard(k)
        inode.not_uptodate.discard(k)
    inode.huge_folios.add(start)
    retract_page_tables(inode, start)
    if not install_pmd:
        return SCAN_SUCCEED
    return collapse_pte_mapped_thp(vma, haddr)


def collapse_pte_mapped_thp(vma: VmArea, haddr: int) -> str:
    """Map the collapsed page cache of the range at ``haddr`` by a huge PMD.

    Models mm/khugepaged.c:collapse_pte_mapped_thp(install_pmd=true), which
    MADV_COLLAPSE runs on SCAN_PTE_MAPPED_HUGEPAGE: a PMD with no table (retracted) is
    just set; else every PTE must be none or map the folio's own subpage (a marker:
    SCAN_PTE_NON_PRESENT; an anonymous CoW page: SCAN_FAIL, measured EINVAL on 6.18.44
    for a written MAP_PRIVATE memfd mapping), then the table goes and set_huge_pmd()
    maps the folio, writable in a shared writable VMA (vm_page_prot; do_set_pmd).

    Simplification: the kernel deposits no table under a file huge PMD; the model keeps
    one for the 512 shadow PTEs (one page-table page more than the kernel counts).
    """
    if vma.vm_file is None:  # pragma: no cover - callers pass shmem VMAs
        return SCAN_VMA_CHECK
    inode: Inode = vma.vm_file.inode
    start = linear_page_index(vma, haddr)
    mm = vma.vm_mm
    pt = mm.pgtables
    t = pt.table(haddr)
    if t is not None:
        for j in range(HPAGE_PMD_NR):
            pte = t[j]
            if not pte:
                continue
            if not pte & _PAGE_PRESENT:
                return SCAN_PTE_NON_PRESENT
            if pte >> PAGE_SHIFT != inode.pages.get(start + j):
                return SCAN_FAIL
    try:
        huge_memory.do_set_pmd(vma, haddr)
    except AllocFailure:  # pragma: no cover - only under failslab
        return SCAN_ALLOC_HUGE_PAGE_FAIL
    return SCAN_SUCCEED


def retract_page_tables(inode: Inode, pgoff: int) -> None:
    """Free the PTE tables that map page-cache index ``pgoff``'s PMD range.

    Models mm/khugepaged.c:retract_page_tables: each VMA of ``i_mmap`` whose range holds
    ``pgoff`` at a PMD-aligned address covering 2 MiB, whose PMD points to a PTE table
    (find_pmd_or_thp_or_none), and which the design lets through
    (file_backed_vma_is_retractable: no anon_vma, no uffd-wp, ...), loses that table
    with whatever it still holds (pmdp_collapse_flush + pte_free_defer).
    """
    for vma in sorted(cast("Iterable[VmArea]", inode.i_mmap), key=lambda v: v.vm_start):
        if not vma.vm_pgoff <= pgoff < vma.vm_pgoff + vma.pages():
            continue
        if not retractable(vma):
            continue
        addr = vma.vm_start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)
        if addr & ~HPAGE_PMD_MASK or vma.vm_end < addr + PMD_SIZE:
            continue
        mm = vma.vm_mm
        if find_pmd_or_thp_or_none(mm, addr) != SCAN_SUCCEED:
            continue
        t = mm.pgtables.pte[pmd_index(addr)]
        mapcount = mm.ctx.phys.mapcount
        for j in range(HPAGE_PMD_NR):
            pte = t[j]
            if pte & _PAGE_PRESENT:  # pragma: no cover - collapse_file unmapped them
                mapcount[pte >> PAGE_SHIFT] -= 1
            t[j] = 0
        mm.pgtables.zap_deposited_table(pmd_index(addr))


# --- MADV_COLLAPSE and the khugepaged scan ---------------------------------------------------


def madvise_collapse_errno(result: str) -> int:
    """Models mm/khugepaged.c:madvise_collapse_errno."""
    if result == SCAN_ALLOC_HUGE_PAGE_FAIL:
        return errno.ENOMEM
    if result == SCAN_EXCEED_NONE_PTE:
        return errno.EBUSY
    return errno.EINVAL


def madvise_collapse(vma: VmArea, start: int, end: int) -> None:
    """MADV_COLLAPSE over [start, end) of ``vma``. Raises OSError.

    Models mm/khugepaged.c:madvise_collapse: EINVAL unless thp_vma_allowable_order(
    TVA_FORCED_COLLAPSE); each PMD-aligned 2 MiB range inside [start, end) is scanned
    (hpage_collapse_scan_file for shmem, else hpage_collapse_scan_pmd) without the
    max_ptes_* limits; a range already PMD-mapped counts as collapsed; a whitelisted
    failure goes on to the next range, any other stops; success only if every range
    collapsed, else madvise_collapse_errno() of the last failure.
    """
    if not thp_vma_allowable_pmd(vma, TVA_FORCED_COLLAPSE):
        raise kernel_error(errno.EINVAL, "MADV_COLLAPSE: THP not allowed in this VMA")
    hstart = (start + PMD_SIZE - 1) & HPAGE_PMD_MASK
    hend = end & HPAGE_PMD_MASK
    mm = vma.vm_mm
    thps = 0
    last_fail = SCAN_FAIL
    for addr in range(hstart, hend, PMD_SIZE):
        if vma.vm_file is not None:
            result = find_pmd_or_thp_or_none(mm, addr)
            if result == SCAN_PMD_MAPPED:
                pass
            elif huge_memory.huge_folio_at(vma, addr):
                # hpage_collapse_scan_file(): the folio is PMD-sized already
                # (SCAN_PTE_MAPPED_HUGEPAGE): only collapse_pte_mapped_thp(); nothing
                # is unmapped (measured: found by fuzz seed 3000304)
                result = collapse_pte_mapped_thp(vma, addr)
            else:
                result = collapse_file(vma, addr, True)
        else:
            result = hpage_collapse_scan_pmd(mm, vma, addr, MADVISE_CC)
        if result in (SCAN_SUCCEED, SCAN_PMD_MAPPED):
            thps += 1
            continue
        last_fail = result
        if result not in _CONTINUE:
            break
    if thps != (hend - hstart) >> PMD_SHIFT:
        raise kernel_error(madvise_collapse_errno(last_fail), f"MADV_COLLAPSE: {last_fail}")


def khugepaged_scan_mm_slot(mm: MmStruct, cc: CollapseControl) -> int:
    """One full pass of khugepaged over ``mm``; returns the THPs it collapsed.

    Models mm/khugepaged.c:khugepaged_scan_mm_slot: every VMA that
    thp_vma_allowable_order(TVA_KHUGEPAGED) admits (the sysfs mode: VM_HUGEPAGE under
    "madvise"), each PMD-aligned range inside it through hpage_collapse_scan_pmd()
    with the max_ptes_* limits (pages_collapsed counts the successes).
    """
    n = 0
    for vma in list(mm.mm_mt.values()):
        if vma.vm_file is not None or not thp_vma_allowable_pmd(vma, TVA_KHUGEPAGED):
            continue
        hstart = (vma.vm_start + PMD_SIZE - 1) & HPAGE_PMD_MASK
        hend = vma.vm_end & HPAGE_PMD_MASK
        for addr in range(hstart, hend, PMD_SIZE):
            if hpage_collapse_scan_pmd(mm, vma, addr, cc) == SCAN_SUCCEED:
                n += 1
    return n


@functools.cache
def host_thp_mode(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str:
    """The bracketed mode of the host's THP ``enabled`` knob (read once; "never" if
    unreadable)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return "never"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return "never"
