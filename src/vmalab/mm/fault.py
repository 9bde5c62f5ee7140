"""Page faults: the user-fault path, its handlers, stack growth and GUP's populate.

Models mm/memory.c (handle_mm_fault and its do_* handlers, do_fault_around),
arch/x86/mm/fault.c (do_user_addr_fault's access checks), mm/gup.c (populate) and
mm/mmap.c:expand_downwards, on the compact page tables of ``vmalab.mm.pagetable``. Split
out of ``vmalab.mm.memory`` (zap and the fork-time copy), as one room for one concept.

Simplifications: one page per folio (a PMD-mapped THP is 512 of them under one huge
PMD, ``vmalab.mm.huge_memory``; no mTHP); no swap (the project's machines run without it);
no per-VMA lock or fault retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmalab.errors import InvariantError, SegmentationFault
from vmalab.mm import huge_memory, hugetlb, pkeys, userfaultfd
from vmalab.mm.flags import (
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_IO,
    VM_PFNMAP,
    VM_SHARED,
    VM_UFFD_MINOR,
    VM_UFFD_WP,
    VM_WRITE,
)
from vmalab.mm.mm_types import (
    MMAP_MIN_ADDR,
    PAGE_SHIFT,
    STACK_GUARD_GAP,
    AnonVma,
    MmStruct,
    VmArea,
    linear_page_index,
)
from vmalab.mm.page_alloc import KIND_ANON, KIND_ZERO, ZERO_PFN
from vmalab.mm.pagetable import (
    _PAGE_HUGE_ZERO,
    _PAGE_PRESENT,
    _PAGE_RW,
    PMD_SIZE,
    PTE_MARKER_GUARD_ENTRY,
    mk_pte,
)
from vmalab.mm.slab import AllocFailure
from vmalab.mm.util import security_vm_enough_memory_mm

if TYPE_CHECKING:
    from array import array


RLIMIT_STACK_DEFAULT = 8 << 20
FAULT_AROUND_PAGES = 16  # fault_around_bytes = 64 KiB


class FaultError(Exception):
    """A VM_FAULT_* error result: ``kind`` is "SIGSEGV", "SIGBUS" or "OOM"."""

    def __init__(self, kind: str, reason: str = "") -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(kind, reason)


# --- faults ------------------------------------------------------------------------------


def expand_downwards(vma: VmArea, address: int) -> None:
    """Grow a VM_GROWSDOWN VMA down to ``address``; raises FaultError on refusal.

    Models mm/mmap.c:expand_downwards and acct_stack_growth (stack_guard_gap against a
    non-stack accessible previous VMA, the 8 MiB RLIMIT_STACK, anon_vma_prepare first).
    """
    mm = vma.vm_mm
    address &= ~0xFFF
    if address < MMAP_MIN_ADDR:
        raise FaultError("SIGSEGV", "below mmap_min_addr")
    prev = mm.vma_prev(vma)
    if (
        prev is not None
        and not prev.vm_flags & VM_GROWSDOWN
        and prev.is_accessible()
        and address - prev.vm_end < STACK_GUARD_GAP
    ):
        raise FaultError("SIGSEGV", "stack_guard_gap")
    if prev is not None and prev.vm_end > address:
        raise FaultError("SIGSEGV", "overlaps previous VMA")
    try:
        vma.vm_mm.ctx.design.anon_vma_prepare(vma)
    except AllocFailure as e:
        raise FaultError("OOM") from e
    if address < vma.vm_start:
        size = vma.vm_end - address
        grow = (vma.vm_start - address) >> PAGE_SHIFT
        if grow > vma.vm_pgoff:
            raise FaultError("SIGSEGV", "pgoff underflow")
        if size > RLIMIT_STACK_DEFAULT:
            raise FaultError("SIGSEGV", "RLIMIT_STACK")
        # acct_stack_growth()'s last test charges the growth, VM_ACCOUNT or not (the
        # charge of a VMA without VM_ACCOUNT is never given back: Kernel.commit_leaked).
        try:
            security_vm_enough_memory_mm(mm, grow)
        except OSError:
            raise FaultError("SIGSEGV", "overcommit") from None
        if not vma.vm_flags & VM_ACCOUNT:
            mm.ctx.commit_leaked += grow
        mm.vma_set_start(vma, address)
        vma.vm_pgoff -= grow


def find_fault_vma(mm: MmStruct, addr: int) -> VmArea:
    """The VMA a user fault at ``addr`` is handled in, expanding a stack if needed.

    Models arch/x86/mm/fault.c:do_user_addr_fault → mm/memory.c:lock_mm_and_find_vma
    (→ expand_stack_locked).
    """
    vma = mm.find_vma(addr)
    if vma is None:
        raise FaultError("SIGSEGV", "no VMA")
    if vma.vm_start <= addr:
        return vma
    if not vma.vm_flags & VM_GROWSDOWN:
        raise FaultError("SIGSEGV", "no VMA")
    expand_downwards(vma, addr)
    return vma


def find_fault_vma_for_access(mm: MmStruct, addr: int, exec_: bool) -> VmArea:
    """:func:`find_fault_vma` plus the instruction-fetch check of access_error().

    Models arch/x86/mm/fault.c:access_error for X86_PF_INSTR (the VMA must have VM_EXEC);
    raises SegmentationFault. Data accesses are checked by :func:`fault_in`.
    """
    try:
        vma = find_fault_vma(mm, addr)
    except FaultError as e:
        raise SegmentationFault(addr, "SIGSEGV", e.reason or e.kind) from None
    if exec_ and not vma.vm_flags & VM_EXEC:
        raise SegmentationFault(addr, "SIGSEGV", "instruction fetch from non-exec VMA")
    return vma


def _file_page(vma: VmArea, addr: int) -> int:
    """The page-cache page backing ``addr``; SIGBUS beyond EOF.

    Models mm/shmem.c:shmem_fault → shmem_get_folio_gfp (SGP_CACHE allocates a page for a
    hole; tmpfs semantics for every file).
    """
    if vma.vm_file is None:
        raise InvariantError("_file_page: vma.vm_file is None")
    inode = vma.vm_file.inode
    index = linear_page_index(vma, addr)
    if index >= (inode.size + 4095) >> 12:
        raise FaultError("SIGBUS", "beyond EOF")
    pfn = inode.pages.get(index)
    if pfn is None:
        pfn = inode.page_cache_alloc(index)
        inode.clean.add(index)
    else:
        inode.not_uptodate.discard(index)  # the fault zeroes and marks it uptodate
    return pfn


def _vmf_anon_prepare(vma: VmArea) -> AnonVma:
    """The VMA's anon_vma, prepared through the design's hook; VM_FAULT_OOM on failure.

    Models mm/memory.c:vmf_anon_prepare.
    """
    try:
        vma.vm_mm.ctx.design.anon_vma_prepare(vma)
    except AllocFailure as e:
        raise FaultError("OOM") from e
    av = vma.anon_vma
    if av is None:
        raise InvariantError("_vmf_anon_prepare: av is None")
    return av


def _map_new_anon(vma: VmArea, t: array[int], j: int, src_pfn: int | None) -> None:
    """Allocate an anonymous folio (optionally a copy of ``src_pfn``) and map it writable.

    Models the common tail of do_anonymous_page, do_cow_fault and wp_page_copy:
    vmf_anon_prepare(), folio allocation, folio_add_new_anon_rmap(), set_pte_at().
    """
    av = _vmf_anon_prepare(vma)
    phys = vma.vm_mm.ctx.phys
    pfn = phys.alloc(KIND_ANON, av.id)
    if src_pfn is not None and src_pfn != ZERO_PFN:
        phys.copy(pfn, src_pfn)
    phys.mapcount[pfn] = 1
    t[j] = mk_pte(pfn, bool(vma.vm_flags & VM_WRITE))


def _do_huge_pmd_anonymous_page(vma: VmArea, addr: int, write: bool) -> None:
    """A write fault maps a whole zeroed 2 MiB THP; a read fault the huge zero page
    (use_zero_page=1), which pagemap reports present with PM_FILE (measured: `F` on all
    512 pages) and a later write replaces by a THP (do_huge_zero_wp_pmd). Models
    mm/huge_memory.c:do_huge_pmd_anonymous_page → __do_huge_pmd_anonymous_page.

    Simplification (one page per folio): the THP is 512 order-0 anonymous folios mapped
    by one PTE table, and the huge zero page 512 read-only PTEs of the zero page with
    the software bit _PAGE_HUGE_ZERO, which pagemap, loads, stores, fork, CoW, zap and
    split-on-partial operations cannot tell from a PMD mapping (the kernel splits the
    PMD first). A written THP is PMD-mapped (``vmalab.mm.huge_memory``).
    """
    try:
        # vmf_anon_prepare() comes first: even the huge zero page gives the VMA an
        # anon_vma (so fork copies the mapping), and so does a fault that the
        # userfaultfd then takes (its deposited table is freed again: no pte_alloc yet)
        vma.vm_mm.ctx.design.anon_vma_prepare(vma)
        _uffd_sigbus(vma, addr)
        t = vma.vm_mm.pgtables.pte_alloc(addr)
    except AllocFailure as e:
        raise FaultError("OOM") from e
    if not write:
        for j in range(512):
            t[j] = mk_pte(ZERO_PFN, False) | _PAGE_HUGE_ZERO
        return
    _thp_into(vma, t, addr)


def huge_zero_intact(vma: VmArea, addr: int, t: array[int]) -> bool:
    """Whether the PTEs of ``t`` still stand for an unsplit huge zero PMD: all 512 carry
    _PAGE_HUGE_ZERO and ``vma`` covers the aligned 2 MiB range. Any partial zap,
    protection change, marker, move or VMA split makes the kernel split the PMD
    (__split_huge_zero_page_pmd), leaving 4K zero-page PTEs, which is what the other
    PTEs then stand for."""
    haddr = addr & ~(PMD_SIZE - 1)
    return (
        vma.vm_start <= haddr
        and haddr + PMD_SIZE <= vma.vm_end
        and all(x & _PAGE_HUGE_ZERO for x in t)
    )


def _thp_into(vma: VmArea, t: array[int], addr: int) -> None:
    """Map a fresh zeroed THP by a huge PMD (512 writable anonymous pages in its
    deposited table). Models __do_huge_pmd_anonymous_page's map_anon_folio_pmd."""
    av = _vmf_anon_prepare(vma)
    phys = vma.vm_mm.ctx.phys
    writable = bool(vma.vm_flags & VM_WRITE)
    for j in range(512):
        pfn = phys.alloc(KIND_ANON, av.id)
        phys.mapcount[pfn] = 1
        t[j] = mk_pte(pfn, writable)
    huge_memory.set_huge_pmd(vma.vm_mm.pgtables, addr)


def handle_mm_fault(vma: VmArea, addr: int, write: bool) -> None:
    """Resolve a fault at ``addr`` in ``vma``; raises FaultError for a signal or OOM.

    Models mm/memory.c:handle_mm_fault → __handle_mm_fault (the THP path) →
    handle_pte_fault: a none PTE goes to do_anonymous_page or do_fault, a PTE marker to
    handle_pte_marker (PTE_MARKER_GUARD → VM_FAULT_SIGSEGV), a write to a read-only
    present PTE to do_wp_page.
    Long as __handle_mm_fault and handle_pte_fault are together: one branch per kind of PTE.
    """
    mm = vma.vm_mm
    k = mm.ctx
    k.vmstat["pgfault"] += 1
    if vma.vm_flags & (VM_PFNMAP | VM_IO):
        raise FaultError("SIGBUS", "special mapping not modelled")
    if (
        vma.uffd_ctx is not None
        and vma.vm_flags & (VM_HUGETLB | VM_UFFD_MINOR)
        and not mm.pgtables.get(addr)
    ):
        # hugetlb_no_page meets handle_userfault first, and so does, in effect, a shmem
        # VMA with VM_UFFD_MINOR (no fault-around, and shmem_fault's test comes before
        # any PMD mapping); an anonymous fault only after do_anonymous_page's pte_alloc
        # (a write's after vmf_anon_prepare), a shmem VM_UFFD_MISSING one in shmem_fault
        # after do_read_fault's fault-around (_do_anonymous_page, _do_fault)
        _uffd_sigbus(vma, addr)
    if vma.vm_flags & VM_HUGETLB and not hugetlb.hugetlb_fault(vma, addr):
        # hugetlb_fault(): no reserved or free huge page → VM_FAULT_SIGBUS. Once the
        # page is taken, the data takes the ordinary path (see vmalab.mm.hugetlb).
        raise FaultError("SIGBUS", "no free huge page")
    if huge_memory.thp_fault_ok(vma, addr):
        _do_huge_pmd_anonymous_page(vma, addr, write)
        return
    if vma.vm_file is not None and huge_memory.file_pmd_fault_ok(vma, addr, write):
        try:
            huge_memory.do_set_pmd(vma, addr)
        except AllocFailure as e:
            raise FaultError("OOM") from e
        return
    try:
        t = mm.pgtables.pte_alloc(addr)
    except AllocFailure as e:
        raise FaultError("OOM") from e
    j = (addr >> 12) & 511
    pte = t[j]
    if write and pte & _PAGE_PRESENT and not pte & _PAGE_RW and mm.pgtables.huge:
        # pmd_trans_huge(): wp_huge_pmd → do_huge_pmd_wp_page (reuse, or split and
        # fall back to the PTE level below)
        if huge_memory.do_huge_pmd_wp_page(vma, addr):
            return
        try:
            t = mm.pgtables.pte_alloc(addr)  # a file PMD's split zapped its table
        except AllocFailure as e:
            raise FaultError("OOM") from e
        pte = t[j]
    if pte == PTE_MARKER_GUARD_ENTRY:
        raise FaultError("SIGSEGV", "guard region")
    if not pte:
        # a private /dev/zero mapping is anonymous memory (mmap_zero: vma_set_anonymous);
        # a special mapping (no file, not anonymous) has no pages modelled and takes the
        # anonymous path too, where the kernel calls special_mapping_fault
        if vma.vm_file is None or vma.is_anonymous():
            _do_anonymous_page(vma, addr, t, j, write)
        else:
            _do_fault(vma, addr, t, j, write)
        return
    if write and not pte & _PAGE_RW:
        _do_wp_page(vma, addr, t, j, pte)
    # else spurious (another fault already resolved it)


def _do_anonymous_page(vma: VmArea, addr: int, t: array[int], j: int, write: bool) -> None:
    """Models mm/memory.c:do_anonymous_page: a read maps the zero page (no anon_vma),
    a write a new anonymous folio. A VM_UFFD_MISSING VMA hands the fault to
    handle_userfault where the kernel does: a read's before the zero page is mapped, a
    write's after vmf_anon_prepare() and the folio's allocation, so the VMA has its
    anon_vma even though the fault fails (measured on 6.18.44: mprotect read-only then
    keeps VM_ACCOUNT; fuzz seed 9100173)."""
    if not write:
        _uffd_sigbus(vma, addr)
        t[j] = mk_pte(ZERO_PFN, False)
        return
    if vma.uffd_ctx is not None:
        _vmf_anon_prepare(vma)  # before the userfaultfd test, as the kernel's order is
        _uffd_sigbus(vma, addr)
    _map_new_anon(vma, t, j, None)


def _do_fault(vma: VmArea, addr: int, t: array[int], j: int, write: bool) -> None:
    """Models mm/memory.c:do_fault: do_cow_fault for a private write (a copy of the
    page-cache page), else do_read_fault (with do_fault_around) or do_shared_fault."""
    shared = bool(vma.vm_flags & VM_SHARED)
    if write and not shared:
        _uffd_sigbus(vma, addr)  # __do_fault → shmem_fault → handle_userfault
        src = _file_page(vma, addr)
        _map_new_anon(vma, t, j, src)
        return
    if not write and _should_fault_around(vma):
        _do_fault_around(vma, addr, t)
        if t[j]:
            return
    # __do_fault → shmem_fault → shmem_get_folio_gfp → handle_userfault: after the
    # fault-around, which maps the cached pages around a VM_UFFD_MISSING hole (measured
    # on 6.18.44: MADV_POPULATE_READ of such a hole is EFAULT and maps the cached page
    # before it; fuzz seed 6000365)
    _uffd_sigbus(vma, addr)
    pfn = _file_page(vma, addr)
    if vma.vm_file is not None and vma.vm_file.inode.huge_folios:
        if huge_memory.finish_fault_whole_folio(vma, addr, t):
            return
    vma.vm_mm.ctx.phys.mapcount[pfn] += 1
    t[j] = mk_pte(pfn, shared and bool(vma.vm_flags & VM_WRITE))


def _uffd_sigbus(vma: VmArea, addr: int) -> None:
    """Raise VM_FAULT_SIGBUS where handle_userfault() would (UFFD_FEATURE_SIGBUS; see
    ``userfaultfd.handle_userfault_sigbus``)."""
    if vma.uffd_ctx is not None and userfaultfd.handle_userfault_sigbus(vma, addr):
        raise FaultError("SIGBUS", "userfaultfd (UFFD_FEATURE_SIGBUS)")


def _do_wp_page(vma: VmArea, addr: int, t: array[int], j: int, pte: int) -> None:
    """A write to a present read-only PTE. Models mm/memory.c:do_wp_page:
    wp_page_shared (no write-notify on tmpfs), reuse of an exclusive anonymous folio
    (wp_can_reuse_anon_folio), do_huge_zero_wp_pmd for a still-intact huge zero PMD,
    else wp_page_copy (CoW from the zero page, a shared folio or a page-cache page)."""
    phys = vma.vm_mm.ctx.phys
    pfn = pte >> 12
    kind = phys.kind[pfn]
    if vma.vm_flags & VM_SHARED or (kind == KIND_ANON and phys.mapcount[pfn] == 1):
        t[j] = pte | _PAGE_RW
        return
    if pte & _PAGE_HUGE_ZERO and huge_zero_intact(vma, addr, t):
        _thp_into(vma, t, addr)
        return
    _map_new_anon(vma, t, j, pfn)
    if kind != KIND_ZERO:
        phys.mapcount[pfn] -= 1
        if kind == KIND_ANON and phys.mapcount[pfn] == 0:
            phys.free(pfn)


def _should_fault_around(vma: VmArea) -> bool:
    """Models mm/memory.c:should_fault_around: not without ``vm_ops->map_pages`` (SysV
    shm's shm_vm_ops has none; measured on 6.18.44: a read of an attach maps only the
    page read; a private /dev/zero mapping is anonymous in the kernel), nor when
    uffd_disable_fault_around() (VM_UFFD_WP or VM_UFFD_MINOR)."""
    f = vma.vm_file
    if f is not None and f.inode.kind in ("sysv", "devzero"):
        return False
    return not vma.vm_flags & (VM_UFFD_WP | VM_UFFD_MINOR)


def _do_fault_around(vma: VmArea, addr: int, t: array[int]) -> None:
    """Map the already-cached pages around a read fault.

    Models mm/memory.c:do_fault_around → mm/filemap.c:filemap_map_pages: a window of
    fault_around_pages (16) aligned PTEs clamped to the VMA, the PTE table and EOF; only
    pages already in the page cache; PTEs that are not none (markers included) are left
    alone.
    """
    if vma.vm_file is None:
        raise InvariantError("_do_fault_around: vma.vm_file is None")
    inode = vma.vm_file.inode
    pte_off = (addr >> 12) & 511
    vma_off = (addr - vma.vm_start) >> 12
    from_pte = max(pte_off - pte_off % FAULT_AROUND_PAGES, pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + FAULT_AROUND_PAGES, 512, pte_off + vma.pages() - vma_off)
    base = addr - (pte_off << 12)
    npages = (inode.size + 4095) >> 12
    if inode.huge_folios and huge_memory.huge_folio_at(vma, addr):
        # filemap_map_pages() maps a large shmem folio whole (can_map_large: shmem is
        # mapped across i_size; measured on 6.18.44, every page of a collapsed folio
        # past EOF loads), within the PTE table and the VMA
        from_pte = pte_off - min(pte_off, vma_off)
        to_pte = min(512, pte_off + vma.pages() - vma_off)
        npages = 1 << 62
    mapcount = vma.vm_mm.ctx.phys.mapcount
    writable = bool(vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE)
    pages = inode.pages
    stale = inode.not_uptodate
    for p in range(from_pte, to_pte):
        if t[p]:
            continue
        index = linear_page_index(vma, base + (p << 12))
        if index >= npages:
            break
        pfn = pages.get(index)
        if pfn is None or index in stale:  # next_uptodate_folio() skips !uptodate folios
            continue
        mapcount[pfn] += 1
        t[p] = mk_pte(pfn, writable)


def fault_in(mm: MmStruct, addr: int, write: bool, instr: bool = False) -> tuple[VmArea, int]:
    """Make ``addr`` accessible for a user load/store and return (vma, pfn).

    Models the user-fault path: do_user_addr_fault's access_error() (no VMA, PROT_NONE,
    or a write to a non-writable VMA → SIGSEGV; with OSPKE, first, a data access (not
    ``instr``, an instruction fetch) that PKRU forbids for the VMA's key → SIGSEGV with
    SEGV_PKUERR, whether or not the PTE is present, as X86_PF_PK or
    arch_vma_access_permitted() would say), then handle_mm_fault until the PTE allows
    the access. Raises SegmentationFault.
    """
    try:
        vma = find_fault_vma(mm, addr)
        if mm.ctx.pku and not instr and not pkeys.access_permitted(vma, write):
            # access_error() asks the key first; bad_area_access_error() then sees
            # bad_area_access_from_pkeys() and sends SEGV_PKUERR.
            raise SegmentationFault(
                addr, "SIGSEGV", f"pkey {pkeys.vma_pkey(vma)} denied by PKRU", "SEGV_PKUERR"
            )
        if write:
            if not vma.vm_flags & VM_WRITE:
                raise FaultError("SIGSEGV", "write to non-writable VMA")
        elif not vma.readable():
            raise FaultError("SIGSEGV", "PROT_NONE")
        pt = mm.pgtables
        for _ in range(3):
            pte = pt.get(addr)
            if pte & _PAGE_PRESENT and (not write or pte & _PAGE_RW):
                return vma, pte >> 12
            handle_mm_fault(vma, addr, write)
        raise AssertionError("fault did not resolve")  # pragma: no cover
    except FaultError as e:
        # VM_FAULT_OOM sends the task to the OOM killer (pagefault_out_of_memory()).
        sig = {"SIGBUS": "SIGBUS", "OOM": "SIGKILL"}.get(e.kind, "SIGSEGV")
        raise SegmentationFault(addr, sig, e.reason or e.kind) from None


def populate_range(mm: MmStruct, vma: VmArea, start: int, end: int, write: bool) -> None:
    """Fault in [start, end) of ``vma`` as GUP does; raises FaultError on the first failure.

    Models mm/gup.c:__get_user_pages for populate_vma_page_range()/faultin_page_range():
    pages already present with sufficient access are skipped, others are faulted
    (FOLL_WRITE breaks CoW). Check_vma_flags() failures are the caller's job.
    """
    pt = mm.pgtables
    for a in range(start, end, 4096):
        pte = pt.get(a)
        if pte & _PAGE_PRESENT and (not write or pte & _PAGE_RW):
            continue
        handle_mm_fault(vma, a, write)
        pte = pt.get(a)
        if write and not pte & _PAGE_RW:
            # FOLL_WRITE on a read-only mapping (FOLL_FORCE is not used by populate).
            raise FaultError("SIGSEGV", "not writable")
