"""madvise and process_madvise, guard regions included.

Models mm/madvise.c (6.18 with the VM_MAYBE_GUARD backport): madvise_behavior_valid,
the argument checks of do_madvise, madvise_walk_vmas (advice applied to every mapped
part, then -ENOMEM for holes), the flag-changing advice through madvise_update_vma →
vma_modify_flags, the zap advice (DONTNEED, FREE, REMOVE, COLD/PAGEOUT), populate, and
madvise_guard_install/madvise_guard_remove with the design hooks.

Simplifications: MADV_COLD leaves PTEs in place, MADV_FREE marks folios lazyfree (see
madvise_free), and MADV_PAGEOUT unmaps
only exclusively mapped page-cache pages (no swap: the project's machines run without
it); MADV_WILLNEED and MADV_(UN)MERGEABLE's KSM scanning do nothing beyond their
flags; MADV_COLLAPSE checks only what makes it refuse (a marker in range, an anonymous
VMA without anon_vma) and maps nothing huge.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Final

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import huge_memory, hugetlb, khugepaged
from vmalab.mm.fault import FaultError, populate_range
from vmalab.mm.filemap import Inode
from vmalab.mm.flags import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_READ,
    VM_SEALED,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    VM_WRITE,
)
from vmalab.mm.memory import (
    has_populated_ptes,
    unmap_mapping_range,
    zap_page_range,
)
from vmalab.mm.mm_types import PAGE_SIZE, MmStruct, VmArea, linear_page_index
from vmalab.mm.mmap import user_range_end
from vmalab.mm.page_alloc import KIND_ANON, KIND_PAGECACHE
from vmalab.mm.pagetable import (
    _PAGE_PRESENT,
    PMD_SHIFT,
    PMD_SIZE,
    PTE_MARKER_GUARD_ENTRY,
    pte_walk,
)
from vmalab.mm.slab import AllocFailure
from vmalab.mm.vma import (
    VmaMergeStruct,
    is_shared_maywrite,
    raise_hole_error,
    vma_modify,
    vma_modify_flags,
)

VALID_ADVICE = frozenset(
    {
        uapi.MADV_NORMAL,
        uapi.MADV_RANDOM,
        uapi.MADV_SEQUENTIAL,
        uapi.MADV_WILLNEED,
        uapi.MADV_DONTNEED,
        uapi.MADV_DONTNEED_LOCKED,
        uapi.MADV_FREE,
        uapi.MADV_REMOVE,
        uapi.MADV_DONTFORK,
        uapi.MADV_DOFORK,
        uapi.MADV_MERGEABLE,
        uapi.MADV_UNMERGEABLE,
        uapi.MADV_HUGEPAGE,
        uapi.MADV_NOHUGEPAGE,
        uapi.MADV_DONTDUMP,
        uapi.MADV_DODUMP,
        uapi.MADV_WIPEONFORK,
        uapi.MADV_KEEPONFORK,
        uapi.MADV_COLD,
        uapi.MADV_PAGEOUT,
        uapi.MADV_POPULATE_READ,
        uapi.MADV_POPULATE_WRITE,
        uapi.MADV_COLLAPSE,
        uapi.MADV_GUARD_INSTALL,
        uapi.MADV_GUARD_REMOVE,
    }
)

MAX_MADVISE_GUARD_RETRIES = 3


def is_valid_guard_vma(vma: VmArea, allow_locked: bool) -> bool:
    """Models mm/madvise.c:is_valid_guard_vma (v6.15+): no VM_SPECIAL or VM_HUGETLB, and
    no VM_LOCKED unless ``allow_locked`` (remove)."""
    disallowed = VM_SPECIAL | VM_HUGETLB
    if not allow_locked:
        disallowed |= VM_LOCKED
    return not vma.vm_flags & disallowed


def madvise_guard_install(vma: VmArea, start: int, end: int) -> None:
    """Install guard markers on [start, end) of ``vma``. Raises OSError.

    Models mm/madvise.c:madvise_guard_install: reject invalid VMAs with EINVAL, let the
    design record its state (VM_MAYBE_GUARD and/or anon_vma_prepare()), then walk the
    range: existing markers are kept, empty PTEs get PTE_MARKER_GUARD (page tables are
    allocated as needed) and any populated entry makes the walk ask for
    zap_page_range_single() over the whole range, then retry. No VMA is split or merged.
    In the model nothing races the walk, so the second attempt always succeeds.
    """
    if not is_valid_guard_vma(vma, False):
        raise kernel_error(errno.EINVAL, "guard install on a VM_SPECIAL/VM_HUGETLB/VM_LOCKED VMA")
    design = vma.vm_mm.ctx.design
    try:
        design.guard_install_prepare(vma)
    except AllocFailure:
        raise kernel_error(errno.ENOMEM, "anon_vma_prepare failed") from None
    pt = vma.vm_mm.pgtables
    nr_pages = 0
    err: OSError | None = None
    for _ in range(MAX_MADVISE_GUARD_RETRIES):
        if has_populated_ptes(vma, start, end):
            zap_page_range(vma, start, end)
            continue
        nr_pages = 0
        try:
            for a in range(start, end, PAGE_SIZE):
                t = pt.pte_alloc(a)
                t[(a >> 12) & 511] = PTE_MARKER_GUARD_ENTRY
                nr_pages += 1
        except AllocFailure:
            err = kernel_error(errno.ENOMEM, "page table allocation failed")
        break
    design.guard_install_done(vma, nr_pages)
    if err is not None:
        raise err


def madvise_guard_remove(vma: VmArea, start: int, end: int) -> None:
    """Clear the guard markers of [start, end); nothing else changes.

    Models mm/madvise.c:madvise_guard_remove (allowed on mlocked VMAs; page tables are
    not freed; VM_MAYBE_GUARD is never cleared) and the design's remove hook.
    """
    if not is_valid_guard_vma(vma, True):
        raise kernel_error(errno.EINVAL, "guard remove on a VM_SPECIAL/VM_HUGETLB VMA")
    for _i, t, j, pte in pte_walk(vma.vm_mm.pgtables, start, end):
        if pte == PTE_MARKER_GUARD_ENTRY:
            t[j] = 0
    vma.vm_mm.ctx.design.guard_remove_done(vma, start, end)


# The advices that only clear and set vm_flags: (clear, set), as madvise_vma_behavior's
# switch computes new_flags for them.
_CLEAR_SET: Final[dict[int, tuple[int, int]]] = {
    uapi.MADV_NORMAL: (VM_RAND_READ | VM_SEQ_READ, 0),
    uapi.MADV_SEQUENTIAL: (VM_RAND_READ, VM_SEQ_READ),
    uapi.MADV_RANDOM: (VM_SEQ_READ, VM_RAND_READ),
    uapi.MADV_DONTFORK: (0, VM_DONTCOPY),
    uapi.MADV_DONTDUMP: (0, VM_DONTDUMP),
    uapi.MADV_HUGEPAGE: (VM_NOHUGEPAGE, VM_HUGEPAGE),
    uapi.MADV_NOHUGEPAGE: (VM_HUGEPAGE, VM_NOHUGEPAGE),
    uapi.MADV_UNMERGEABLE: (VM_MERGEABLE, 0),
}


def _new_flags(vma: VmArea, behavior: int) -> int:
    """The flags a flag-changing advice asks for. Models mm/madvise.c:madvise_vma_behavior.

    The plain clear/set cases come from ``_CLEAR_SET``; the rest refuse some VMAs.
    One branch per advice, as madvise_vma_behavior's switch.
    """
    f = vma.vm_flags
    cs = _CLEAR_SET.get(behavior)
    if cs is not None:
        return (f & ~cs[0]) | cs[1]
    if behavior == uapi.MADV_DOFORK:
        if f & VM_IO:
            raise kernel_error(errno.EINVAL, "MADV_DOFORK on VM_IO")
        return f & ~VM_DONTCOPY
    if behavior == uapi.MADV_WIPEONFORK:
        if vma.vm_file is not None or f & VM_SHARED:
            raise kernel_error(errno.EINVAL, "MADV_WIPEONFORK on a non-anonymous VMA")
        return f | VM_WIPEONFORK
    if behavior == uapi.MADV_KEEPONFORK:
        if f & VM_DROPPABLE:
            raise kernel_error(errno.EINVAL, "MADV_KEEPONFORK on a droppable VMA")
        return f & ~VM_WIPEONFORK
    if behavior == uapi.MADV_DODUMP:
        # hugetlb VMAs are VM_DONTEXPAND (VM_SPECIAL) but may be dumped (measured on
        # 6.18.44: MADV_DODUMP inside a MAP_HUGETLB mapping is 0); droppable never
        if (f & VM_SPECIAL and not f & VM_HUGETLB) or f & VM_DROPPABLE:
            raise kernel_error(errno.EINVAL, "MADV_DODUMP on VM_SPECIAL")
        return f & ~VM_DONTDUMP
    if behavior == uapi.MADV_MERGEABLE:
        # ksm_madvise(): special, hugetlb and similar VMAs are silently left alone.
        if f & (VM_SPECIAL | VM_HUGETLB | VM_MERGEABLE | VM_DROPPABLE) or f & VM_SHARED:
            return f
        return f | VM_MERGEABLE
    raise InvariantError(f"_new_flags: advice {behavior} changes no flag")


_FLAG_ADVICE = frozenset(
    {
        uapi.MADV_NORMAL,
        uapi.MADV_SEQUENTIAL,
        uapi.MADV_RANDOM,
        uapi.MADV_DONTFORK,
        uapi.MADV_DOFORK,
        uapi.MADV_WIPEONFORK,
        uapi.MADV_KEEPONFORK,
        uapi.MADV_DONTDUMP,
        uapi.MADV_DODUMP,
        uapi.MADV_HUGEPAGE,
        uapi.MADV_NOHUGEPAGE,
        uapi.MADV_MERGEABLE,
        uapi.MADV_UNMERGEABLE,
    }
)


_DISCARD = frozenset(
    {
        uapi.MADV_FREE,
        uapi.MADV_DONTNEED,
        uapi.MADV_DONTNEED_LOCKED,
        uapi.MADV_REMOVE,
        uapi.MADV_DONTFORK,
        uapi.MADV_WIPEONFORK,
        uapi.MADV_GUARD_INSTALL,
    }
)


def can_madvise_modify(vma: VmArea, behavior: int) -> bool:
    """Models mm/madvise.c:can_madvise_modify (is_discard): a sealed VMA refuses the
    discarding advices unless it is not anonymous (!vma_is_anonymous(): file-backed,
    MAP_PRIVATE included, or shmem) or writable (its owner could overwrite the data
    anyway). Measured on 6.18.44: DONTNEED on a sealed read-only MAP_PRIVATE memfd
    mapping succeeds; on sealed read-only anonymous memory GUARD_INSTALL, WIPEONFORK,
    FREE and DONTNEED are EPERM, COLD is not (tests/test_coverage_selftests.py); a
    private /dev/zero mapping, and a MAP_SHARED one of a read-only /dev/zero, are
    anonymous memory and refuse them too (fuzz seed 5200099)."""
    if not vma.vm_flags & VM_SEALED or behavior not in _DISCARD:
        return True
    if not vma.is_anonymous():
        return True
    return bool(vma.vm_flags & VM_WRITE)


def _madvise_vma(
    mm: MmStruct, vma: VmArea, prev: VmArea | None, start: int, end: int, behavior: int
) -> VmArea:
    """Apply ``behavior`` to [start, end) within one VMA. Returns the VMA covering it.

    Models mm/madvise.c:madvise_vma_behavior and its helpers (can_madvise_modify()
    first: EPERM for a discarding advice on a sealed VMA, see ``can_madvise_modify``).

    One branch per advice, as mm/madvise.c:madvise_vma_behavior's switch.
    """
    b = behavior
    if not can_madvise_modify(vma, b):
        raise kernel_error(errno.EPERM, "discarding advice on a sealed VMA")
    if b in _FLAG_ADVICE:
        new_flags = _new_flags(vma, b)
        if new_flags == vma.vm_flags:
            return vma
        # madvise_update_vma() → vma_modify_flags(); madvise_vma_behavior() reports
        # -ENOMEM as -EAGAIN ("kernel resources temporarily unavailable").
        try:
            vma, new_flags = vma_modify_flags(prev, vma, start, end, new_flags)
        except OSError as e:
            if e.errno == errno.ENOMEM:
                raise kernel_error(errno.EAGAIN, "vma_modify_flags: out of resources") from None
            raise
        vma.vm_flags = new_flags
        return vma
    if b == uapi.MADV_GUARD_INSTALL:
        madvise_guard_install(vma, start, end)
    elif b == uapi.MADV_GUARD_REMOVE:
        madvise_guard_remove(vma, start, end)
    elif b in (uapi.MADV_DONTNEED, uapi.MADV_DONTNEED_LOCKED, uapi.MADV_FREE):
        # madvise_dontneed_free_valid_vma()
        if vma.vm_flags & VM_HUGETLB:
            # hugetlb: DONTNEED(_LOCKED) only, from a huge-page-aligned start, the end
            # rounded down to a huge page (measured: DONTNEED of 4 KiB is ok, FREE EINVAL)
            if b == uapi.MADV_FREE:
                raise kernel_error(errno.EINVAL, "MADV_FREE on hugetlb")
            end = hugetlb.hugetlb_dontneed_range(vma, start, end)
            if end > start:
                zap_page_range(vma, start, end)
                hugetlb.hugetlb_zap_private(vma, start, end)
            return vma
        if vma.vm_flags & VM_PFNMAP:
            raise kernel_error(errno.EINVAL, "DONTNEED/FREE on VM_PFNMAP")
        if b != uapi.MADV_DONTNEED_LOCKED and vma.vm_flags & VM_LOCKED:
            raise kernel_error(errno.EINVAL, "DONTNEED/FREE on a locked VMA")
        if b == uapi.MADV_FREE:
            if not vma.is_anonymous():
                raise kernel_error(errno.EINVAL, "MADV_FREE on a non-anonymous VMA")
            madvise_free(vma, start, end)
            return vma
        zap_page_range(vma, start, end, reclaim_pt=True)
    elif b == uapi.MADV_REMOVE:
        # madvise_remove(): punch a hole in the backing tmpfs file.
        if vma.vm_flags & VM_LOCKED:
            raise kernel_error(errno.EINVAL, "MADV_REMOVE on a locked VMA")
        if vma.vm_file is None:
            raise kernel_error(errno.EINVAL, "MADV_REMOVE on anonymous memory")
        if not is_shared_maywrite(vma.vm_flags):
            raise kernel_error(errno.EACCES, "MADV_REMOVE on a private or read-only mapping")
        inode: Inode = vma.vm_file.inode
        offset = (vma.vm_pgoff << 12) + (start - vma.vm_start)
        if inode.seals & (uapi.F_SEAL_WRITE | uapi.F_SEAL_FUTURE_WRITE):
            raise kernel_error(errno.EPERM, "sealed")
        inode.punch_hole(offset, end - start)
    elif b in (uapi.MADV_COLD, uapi.MADV_PAGEOUT):
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            raise kernel_error(errno.EINVAL, "COLD/PAGEOUT on a locked or special VMA")
        cold_pageout_split_thps(vma, start, end)
        if b == uapi.MADV_PAGEOUT:
            madvise_pageout(vma, start, end)
    elif b == uapi.MADV_COLLAPSE:
        khugepaged.madvise_collapse(vma, start, end)
    # MADV_WILLNEED: readahead only
    return vma


def madvise_free(vma: VmArea, start: int, end: int) -> None:
    """Mark the exclusively mapped anonymous folios of [start, end) lazily freeable.

    Models mm/madvise.c:madvise_free_pte_range → folio_mark_lazyfree: the PTEs stay
    (pagemap still shows them present) but are cleaned, and the folio loses
    PG_swapbacked, so reclaim (MADV_PAGEOUT, ``Kernel.reclaim()``) discards it unless a
    store dirties it again first. Simplification: folios mapped more than once (after
    fork) are left alone here (the kernel marks them too, but reclaim then finds a
    dirty PTE in the other mapping and keeps them); GUP write pins
    (MADV_POPULATE_WRITE) do not cancel the mark.
    """
    phys = vma.vm_mm.ctx.phys
    # madvise_free_huge_pmd(): a THP covered whole stays PMD-mapped, one covered in
    # part is split (measured on 6.18.44: AnonHugePages 2048 kB, then 0 kB).
    huge_memory.split_huge_pmds_partial(vma.vm_mm, start, end)
    for _i, _t, _j, pte in pte_walk(vma.vm_mm.pgtables, start, end):
        if not pte & _PAGE_PRESENT:
            continue
        pfn = pte >> 12
        if phys.kind[pfn] == KIND_ANON and phys.mapcount[pfn] == 1:
            phys.lazyfree.add(pfn)


def cold_pageout_split_thps(vma: VmArea, start: int, end: int) -> None:
    """Split the THPs that [start, end) covers only in part.

    Models the huge-PMD case of mm/madvise.c:madvise_cold_or_pageout_pte_range: a
    PMD-mapped folio not covered whole is split (split_folio). An anonymous one becomes
    4 KiB PTEs (measured on 6.18.44: AnonHugePages 0 after MADV_COLD or PAGEOUT of part);
    a shmem one loses its mapping everywhere (file folios refault) and, as
    __split_unmapped_folio() does for shmem, its pages past EOF leave the page cache
    (measured: they load SIGBUS afterwards).
    """
    mm = vma.vm_mm
    pt = mm.pgtables
    if not pt.huge:
        return
    for i in huge_memory.huge_pmds_in(pt, start, end):
        base = i << PMD_SHIFT
        if start <= base and base + PMD_SIZE <= end:
            continue
        file = huge_memory.is_file_huge_pmd(mm, i)
        huge_memory.split_huge_pmd(mm, i)
        if file and vma.vm_file is not None:
            inode = vma.vm_file.inode
            first = linear_page_index(vma, base)
            inode.huge_folios.discard(first)
            eof = max(first, (inode.size + 4095) >> 12)
            if eof < first + 512:
                unmap_mapping_range(inode, eof, first + 511, False)
                inode.drop_pages(eof, first + 511)


def madvise_pageout(vma: VmArea, start: int, end: int) -> None:
    """Reclaim the range's exclusively mapped pages.

    Models mm/madvise.c:madvise_cold_or_pageout_pte_range (pageout) → reclaim_pages →
    mm/vmscan.c:shrink_folio_list on a machine without swap: folios mapped elsewhere
    are skipped (folio_maybe_mapped_shared); anonymous folios cannot get a swap slot
    and stay mapped, except in VM_DROPPABLE VMAs, whose folios are not swap-backed and
    are discarded; page-cache (shmem) folios are unmapped by try_to_unmap(), then a
    clean one is dropped from the page cache and a dirty one kept, with its data, when
    shmem_writeout() finds no swap. Markers are untouched.
    """
    phys = vma.vm_mm.ctx.phys
    droppable = bool(vma.vm_flags & VM_DROPPABLE)
    huge_memory.reclaim_split(vma.vm_mm, start, end)
    for i, t, j, pte in pte_walk(vma.vm_mm.pgtables, start, end):
        if not pte & _PAGE_PRESENT:
            continue
        pfn = pte >> 12
        lazy = pfn in phys.lazyfree
        if (droppable or lazy) and phys.kind[pfn] == KIND_ANON and phys.mapcount[pfn] == 1:
            # Droppable folios are not swap-backed, nor are clean MADV_FREE'd ones
            # (shrink_folio_list discards a lazyfree folio whose PTE is clean): reclaim
            # discards them, droppable ones dirty or not.
            phys.free(pfn)
            t[j] = 0
            continue
        if phys.kind[pfn] == KIND_PAGECACHE and phys.mapcount[pfn] == 1:
            phys.mapcount[pfn] = 0
            t[j] = 0
            if vma.vm_file is None:
                raise InvariantError("madvise_pageout: vma.vm_file is None")
            inode = vma.vm_file.inode
            index = linear_page_index(vma, (i << 21) + (j << 12))
            if index in inode.clean and pfn not in phys.data:
                # A clean folio (faulted into a hole, never written) needs no
                # writeout: __remove_mapping() drops it from the page cache. Dirty
                # ones stay, as shmem_writeout() fails without swap.
                inode.drop_pages(index, index)


def madvise_populate(mm: MmStruct, start: int, end: int, write: bool) -> None:
    """MADV_POPULATE_READ/WRITE over [start, end). Raises OSError.

    Models mm/madvise.c:madvise_populate → mm/gup.c:faultin_page_range with
    FOLL_MADV_POPULATE: pages are faulted in address order; a hole stops it with ENOMEM,
    a VMA that check_vma_flags() refuses (VM_IO/VM_PFNMAP, no VM_READ for a read, no
    VM_WRITE for a write) with EINVAL, a fault answered with SIGSEGV or SIGBUS (a guard
    marker, a page beyond EOF) with EFAULT. Pages before the failure stay populated.
    """
    pos = start
    while pos < end:
        vma = mm.vma_lookup(pos)
        if vma is None:
            raise kernel_error(errno.ENOMEM, "populate: unmapped address")
        f = vma.vm_flags
        if f & (VM_IO | VM_PFNMAP) or not f & (VM_WRITE if write else VM_READ):
            raise kernel_error(errno.EINVAL, "populate: incompatible mapping or permissions")
        nend = min(end, vma.vm_end)
        try:
            populate_range(mm, vma, pos, nend, write)
        except FaultError as fe:
            if fe.kind == "OOM":
                raise kernel_error(errno.ENOMEM, "populate: out of memory") from None
            raise kernel_error(errno.EFAULT, f"populate: {fe.reason or fe.kind}") from None
        pos = nend


def do_madvise(mm: MmStruct, start: int, len_in: int, behavior: int) -> int:
    """The madvise syscall: 0, or -ENOMEM when the range has holes. Raises OSError for
    the other errors.

    Models mm/madvise.c:do_madvise → madvise_walk_vmas: EINVAL for unknown advice, an
    unaligned start or an overflowing length; every VMA in the range gets the advice
    (clipped to it); holes are skipped and reported as ENOMEM at the end; an error from
    one VMA stops the walk. The holes' ENOMEM is returned, as the kernel returns its
    ``unmapped_error``, not raised: the call has done its work, a replayed log meets it
    often (a sixth of a random loop's calls), and raised through the compiled frames it
    made such a call cost about 10 µs instead of 2 µs.
    """
    if behavior not in VALID_ADVICE:
        raise kernel_error(errno.EINVAL, f"unknown advice {behavior}")
    if start & (PAGE_SIZE - 1) or start < 0:
        raise kernel_error(errno.EINVAL, "unaligned start")
    if len_in < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    end = user_range_end(start, len_in)
    if end == start:
        return 0
    if behavior in (uapi.MADV_POPULATE_READ, uapi.MADV_POPULATE_WRITE):
        # Not a per-VMA walk: madvise_do_behavior() hands the whole range over.
        madvise_populate(mm, start, end, behavior == uapi.MADV_POPULATE_WRITE)
        return 0
    return madvise_walk_vmas(
        mm, start, end, lambda vma, prev, a, b: _madvise_vma(mm, vma, prev, a, b, behavior)
    )


VmaVisitor = Callable[[VmArea, "VmArea | None", int, int], VmArea]


def madvise_walk_vmas(mm: MmStruct, start: int, end: int, visit: VmaVisitor) -> int:
    """Call ``visit(vma, prev, start, end)`` on each VMA's part of [start, end); return 0,
    or -ENOMEM when the range had holes.

    Models mm/madvise.c:madvise_walk_vmas: holes are skipped and reported as ENOMEM at the
    end (its ``unmapped_error``, returned); an error from one VMA stops the walk (raised);
    the walk goes on after the VMA ``visit`` returns (a merge may have grown it past the
    range it was given).
    """
    unmapped = False
    vma = mm.find_vma(start)
    prev = mm.vma_prev(vma) if vma is not None else None
    if vma is not None and start > vma.vm_start:
        prev = vma
    pos = start
    while True:
        if vma is None or vma.vm_start >= end:
            unmapped = True
            break
        if pos < vma.vm_start:
            unmapped = True
            pos = vma.vm_start
        tmp = min(vma.vm_end, end)
        vma = visit(vma, prev, pos, tmp)
        # start = tmp, or prev->vm_end if a merge grew the VMA past it.
        pos = max(tmp, vma.vm_end)
        if pos >= end:
            break
        prev = vma
        vma = mm.vma_next(vma)
    return -errno.ENOMEM if unmapped else 0


ANON_VMA_NAME_MAX_LEN = 80
_ANON_NAME_BAD = frozenset("\\`$[]")


def madvise_set_anon_name(mm: MmStruct, start: int, len_in: int, name: str | None) -> None:
    """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, start, len, name). Raises OSError.

    Models kernel/sys.c:prctl_set_vma (the name: at most 80 bytes, printable, none of
    ``\\`$[]``; NULL clears it) → mm/madvise.c:madvise_set_anon_name → madvise_walk_vmas
    with madvise_vma_anon_name (EBADF on a file VMA other than shared anonymous memory)
    → vma_modify_name(): the named part merges with equal neighbours or is split off.
    """
    if name is not None:
        if len(name.encode()) >= ANON_VMA_NAME_MAX_LEN:
            raise kernel_error(errno.EINVAL, "name too long")
        if any(not (" " <= c <= "~") or c in _ANON_NAME_BAD for c in name):
            raise kernel_error(errno.EINVAL, "name has an invalid character")
        name = name or None  # an empty name is no name
    end = user_range_end(start, len_in)
    if end == start:
        return

    def visit(vma: VmArea, prev: VmArea | None, a: int, b: int) -> VmArea:
        if vma.vm_file is not None and vma.vm_file.inode.kind != "shmem":
            raise kernel_error(errno.EBADF, "a file VMA cannot be named")
        if vma.anon_name == name:
            return vma
        vmg = VmaMergeStruct.vma_state(prev, vma, a, b)
        vmg.anon_name = name
        res, _merged = vma_modify(vmg)
        res.anon_name = name
        return res

    raise_hole_error(madvise_walk_vmas(mm, start, end, visit))


def do_process_madvise(mm: MmStruct, ranges: Sequence[tuple[int, int]], behavior: int) -> int:
    """process_madvise() on the caller's own mm: bytes advised. Raises OSError.

    Models mm/madvise.c:vector_madvise: each iovec is advised in turn; on an error the
    bytes advised so far are returned if any, else the error. An ENOMEM from holes in one
    range still counts that range's length (madvise applied it), as the kernel's
    ``total_len - iov_iter_count()`` does only for completed iovecs, so it stops there.
    """
    if behavior not in VALID_ADVICE:
        raise kernel_error(errno.EINVAL, f"unknown advice {behavior}")
    done = 0
    for start, length in ranges:
        try:
            raise_hole_error(do_madvise(mm, start, length, behavior))
        except OSError:
            if done:
                return done
            raise
        done += length
    return done
