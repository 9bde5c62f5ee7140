"""mremap.

Models mm/mremap.c (Linux 6.18): do_mremap's argument checks, shrink (unmap the tail,
dropping its markers; only a VMA at the old address is required), in-place growth
through vma_merge_extend() (which may also absorb the next VMA), and moves through
copy_vma() + move_page_tables(), with MREMAP_FIXED and MREMAP_DONTUNMAP.

6.17's multi-VMA move (MREMAP_FIXED over several VMAs without resizing) is modelled; any
other source range spanning more than one VMA gives EFAULT.
"""

from __future__ import annotations

import errno

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import huge_memory, rmap
from vmalab.mm.flags import (
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_MAYSHARE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SEALED,
    VM_SHARED,
    VM_UFFD_FLAGS,
)
from vmalab.mm.hugetlb import check_mremap_hugetlb
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, MmStruct, VmArea
from vmalab.mm.mmap import (
    do_vmi_munmap,
    get_unmapped_area,
    mm_populate,
    page_align,
)
from vmalab.mm.pagetable import PMD_SHIFT, pte_walk
from vmalab.mm.slab import AllocFailure
from vmalab.mm.userfaultfd import mremap_userfaultfd_prep
from vmalab.mm.util import security_vm_enough_memory_mm, vm_acct_memory, vm_unacct_memory
from vmalab.mm.vma import (
    VmaMergeStruct,
    vm_area_alloc,
    vm_area_dup,
    vm_area_free,
    vma_link,
    vma_merge_new_range,
)

U64 = (1 << 64) - 1


def move_page_tables(old: VmArea, old_addr: int, new: VmArea, new_addr: int, length: int) -> None:
    """Move the PTEs of [old_addr, old_addr+length) to new_addr, markers included.

    Models mm/mremap.c:move_page_tables at PTE granularity (move_ptes). The source tables
    are left for free_pgtables() at unmap, as in the kernel when PMDs cannot be moved
    whole. Raises AllocFailure if a destination table cannot be had (nothing moved from
    the failing table on).
    """
    spt = old.vm_mm.pgtables
    dpt = new.vm_mm.pgtables
    delta = new_addr - old_addr
    huge = huge_memory.move_huge_pmds(old, old_addr, new, new_addr, length)
    for i, t, j, pte in pte_walk(spt, old_addr, old_addr + length):
        na = (i << PMD_SHIFT) + (j << 12) + delta
        dt = dpt.pte_alloc(na)
        dt[(na >> 12) & 511] = pte
        t[j] = 0
    dpt.huge.update(huge)


def copy_vma(vma: VmArea, addr: int, length: int, pgoff: int) -> VmArea:
    """Create (or merge into) the destination VMA of a move. Raises AllocFailure.

    Models mm/vma.c:copy_vma: an anonymous VMA without a real anon_vma gets pgoff
    ``addr >> PAGE_SHIFT`` "to increase its chance of merging"; otherwise the old pgoff
    is kept. A merge uses VMG_VMA_STATE attributes (including the anon_vma) and goes
    through vma_merge_copied_range() (``copied_from`` = the source, no middle; the 6.19
    fix is in 6.18.y), so the merged VMA adopts the source's anon_vma; failing that,
    vm_area_dup + anon_vma_clone + vma_link.
    """
    mm = vma.vm_mm
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    prev = mm.find_vma_prev(addr)[1]
    nxt = mm.find_vma(addr)
    vmg = VmaMergeStruct.vma_state(prev, vma, addr, addr + length)
    vmg.copied_from = vma  # vma_merge_copied_range()
    vmg.middle = None
    vmg.pgoff = pgoff
    vmg.next = nxt if nxt is not None and nxt.vm_start >= addr + length else None
    if nxt is not None and nxt.vm_start < addr + length:
        raise AssertionError("copy_vma over a mapped range")  # pragma: no cover
    new = vma_merge_new_range(vmg)
    if new is not None:
        # The moved range (and its page tables) now belongs to a neighbour.
        mm.ctx.design.vma_merge(new, vma)
        return new
    if vmg.nomem:
        raise AllocFailure("anon_vma_chain")
    new = vm_area_dup(vma)
    if mm.ctx.hooked_vma_dup:
        mm.ctx.design.vma_dup(new, vma)
    new.vm_start, new.vm_end, new.vm_pgoff = addr, addr + length, pgoff
    try:
        rmap.anon_vma_clone(new, vma)
    except AllocFailure:
        vm_area_free(new)
        raise
    vma_link(mm, new)
    return new


def move_vma(
    mm: MmStruct,
    vma: VmArea,
    old_addr: int,
    old_len: int,
    new_len: int,
    new_addr: int,
    flags: int,
    delta: int = 0,
) -> int:
    """Move [old_addr, old_addr+old_len) to new_addr (growing to new_len). Raises OSError.

    Models mm/mremap.c:move_vma: prep_move_vma (map_count), vrm_calc_charge, copy_vma,
    move_page_tables (markers travel with the page tables), then unmap the source
    (unmap_source_vma: an accounted source's pages are not given back, they moved)
    unless MREMAP_DONTUNMAP, which leaves the source VMA in place with empty page
    tables (dontunmap_complete).

    The commit charge of an accounted VMA is ``delta`` bytes (vrm->delta, the size
    difference of the request), or ``new_len`` with MREMAP_DONTUNMAP. For a shrinking
    move the kernel has already unmapped (and uncharged) the tail, yet charges the
    delta again: 6.18.44 leaks it (measured: ``mremap(A, 4G, 1G, MAYMOVE|FIXED, B)``
    leaves Committed_AS 3 GiB higher after the process exits); ``Kernel.commit_leaked``
    records it.

    Not yet split: since 6.16 the kernel spreads this over vrm_* helpers.
    Long as the kernel's move_vma is.
    """
    k = mm.ctx
    if mm.map_count >= k.max_map_count - 3:
        raise kernel_error(errno.ENOMEM, "max_map_count")
    charged = 0
    if vma.vm_flags & VM_ACCOUNT:
        charged = (new_len if flags & uapi.MREMAP_DONTUNMAP else delta) >> PAGE_SHIFT
        security_vm_enough_memory_mm(mm, charged)
    # What the new layout holds beyond the old one; the rest of the charge is the leak.
    expected = 0
    if vma.vm_flags & VM_ACCOUNT:
        expected = (new_len if flags & uapi.MREMAP_DONTUNMAP else new_len - old_len) >> PAGE_SHIFT
    new_pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> PAGE_SHIFT)
    locked = vma.vm_flags & VM_LOCKED
    accountable_move = bool(vma.vm_flags & VM_ACCOUNT) and not flags & uapi.MREMAP_DONTUNMAP
    try:
        new = copy_vma(vma, new_addr, new_len, new_pgoff)
    except AllocFailure:
        vm_unacct_memory(k, charged)  # vrm_uncharge()
        raise kernel_error(errno.ENOMEM, "copy_vma failed") from None
    try:
        move_page_tables(vma, old_addr, new, new_addr, old_len)
    except AllocFailure:
        # move_vma(): move the entries back and unmap the destination, whose pages
        # unmap_source_vma() does not uncharge: the charge stays (failure path only).
        before = k.vm_committed_as
        move_page_tables(new, new_addr, vma, old_addr, old_len)
        do_vmi_munmap(mm, new_addr, new_len)
        if new.vm_flags & VM_ACCOUNT:
            k.commit_leaked += before - k.vm_committed_as
            k.vm_committed_as = before
        raise kernel_error(errno.ENOMEM, "move_page_tables failed") from None
    k.commit_leaked += charged - expected
    if new.uffd_ctx is not None:
        mremap_userfaultfd_prep(new)
    if flags & uapi.MREMAP_DONTUNMAP:
        # dontunmap_complete(): the source keeps its VMA without the lock flags;
        # VM_ACCOUNT is set on the new one too. If the whole source VMA was copied, its
        # anon_vma links are no longer needed: unlink_anon_vmas() leaves it unfaulted.
        whole = old_addr == vma.vm_start and old_addr + old_len == vma.vm_end
        vma.vm_flags &= ~(VM_LOCKED | VM_LOCKONFAULT)
        if vma.vm_flags & VM_ACCOUNT and not new.vm_flags & VM_ACCOUNT:
            new.vm_flags |= VM_ACCOUNT
        if new is not vma and whole:
            rmap.unlink_anon_vmas(vma)
    else:
        do_vmi_munmap(mm, old_addr, old_len)
        if accountable_move:
            vm_acct_memory(k, old_len >> PAGE_SHIFT)  # the moved pages stay charged
    if locked and new_len > old_len:
        mm_populate(mm, new_addr + old_len, new_len - old_len, ignore_errors=True)
    return new_addr


def vma_expandable(mm: MmStruct, vma: VmArea, delta: int) -> bool:
    """Models mm/mremap.c:vma_expandable: room after the VMA up to the next one.

    The next VMA's own start bounds it (``next->vm_start < end`` is an intersection), not
    its stack guard gap: get_unmapped_area() with MAP_FIXED checks no gap, so a mapping
    grows in place right up to a VM_GROWSDOWN VMA (measured on 6.18.44; fuzz seed
    5200246)."""
    end = vma.vm_end + delta
    if end < vma.vm_end or end > TASK_SIZE:
        return False
    nxt = mm.vma_next(vma)
    return nxt is None or nxt.vm_start >= end


def _resize_is_valid(vma: VmArea, addr: int, old_len: int, new_len: int, flags: int) -> None:
    """Models mm/mremap.c:resize_is_valid: the range must lie in one VMA that may grow."""
    if old_len > vma.vm_end - addr:
        raise kernel_error(errno.EFAULT, "old range spans more than one VMA")
    if new_len > old_len or old_len == 0:
        if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
            raise kernel_error(errno.EFAULT, "VM_DONTEXPAND/VM_PFNMAP cannot grow")
    if flags & uapi.MREMAP_DONTUNMAP and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP):
        raise kernel_error(errno.EINVAL, "MREMAP_DONTUNMAP on a special mapping")


def vma_multi_allowed(vma: VmArea) -> bool:
    """Whether ``vma`` may move with others in one mremap. Models
    mm/mremap.c:vma_multi_allowed: not when userfaultfd-armed, nor when its file has its
    own f_op->get_unmapped_area (which MREMAP_FIXED might not obey) and is neither shmem
    nor hugetlbfs: of the model's files, a SysV shm segment (shm_get_unmapped_area) and a
    private mapping of /dev/zero (get_unmapped_area_zero; a shared one is shmem).
    Measured on 6.18.44: a move of [A, A+n) from inside an attach past its end into a
    hole is EFAULT (fuzz seeds 6000792, 6000927)."""
    if vma.vm_flags & VM_UFFD_FLAGS:
        return False
    f = vma.vm_file
    return f is None or f.inode.kind not in ("sysv", "devzero")


def remap_move(mm: MmStruct, addr: int, length: int, new_addr: int, flags: int) -> int:
    """A pure MREMAP_FIXED move, one VMA at a time. Raises OSError.

    Models mm/mremap.c:remap_move (6.17, "mm/mremap: permit mremap() move of multiple
    VMAs"): each VMA's part of [addr, addr+length) goes through mremap_to() on its own,
    to the same offset at the destination, so only the destination of each part is
    unmapped and the gaps between source VMAs are kept. VMAs that may not move together
    (VM_DONTEXPAND/VM_PFNMAP) fail with EFAULT unless they are the only one.

    A VMA that may not move with others (``vma_multi_allowed``: registered with a
    userfaultfd, a SysV attach, a private /dev/zero mapping) is EFAULT in a multi-VMA move,
    checked as each VMA comes (so VMAs before it have moved already), where the move is
    multi-VMA as soon as the range goes past the first VMA's end, a gap after it included
    (measured on 6.18.44: [A, A+4) over an unregistered page and a registered VMA moves the
    first page, then EFAULT; a range over one registered VMA and the gap after it is EFAULT
    with nothing moved; "mm/mremap: catch invalid multi VMA moves earlier").
    """
    end = addr + length
    pieces = [(v, max(v.vm_start, addr), min(v.vm_end, end)) for v in mm.vmas_in(addr, end)]
    for i, (v, _a, _b) in enumerate(pieces):
        if v.vm_flags & (VM_DONTEXPAND | VM_PFNMAP) and (i or len(pieces) > 1):
            raise kernel_error(errno.EFAULT, "special mapping in a multi-VMA move")
    single = [not vma_multi_allowed(v) for v, _a, _b in pieces]
    for i, (start, stop) in enumerate([(a, b) for _v, a, b in pieces]):
        if single[i] and (i > 0 or end > pieces[0][0].vm_end):
            raise kernel_error(errno.EFAULT, "a VMA that moves alone in a multi-VMA move")
        n = stop - start
        dest = new_addr + (start - addr)
        cur = mm.vma_lookup(start)
        if cur is not None and cur.vm_flags & VM_SEALED:
            raise kernel_error(errno.EPERM, "mseal()'d VMA")
        do_vmi_munmap(mm, dest, n)
        piece = mm.vma_lookup(start)
        if piece is None:
            raise InvariantError("remap_move: piece is None")
        _resize_is_valid(piece, start, n, n, flags)
        if mm.map_count >= mm.ctx.max_map_count:
            raise kernel_error(errno.ENOMEM, "max_map_count")
        move_vma(mm, piece, start, n, n, dest, flags)
    return new_addr


def mremap_to(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    """MREMAP_FIXED or MREMAP_DONTUNMAP: move to a new address. Raises OSError.

    Models mm/mremap.c:mremap_to as 6.17 reworked it. A pure MREMAP_FIXED move
    (old_len == new_len, MREMAP_DONTUNMAP included) is remap_move() (vrm_move_only()).
    Otherwise the source is checked first (resize_is_valid, on the part that survives a
    shrink), before anything is unmapped; then with MREMAP_FIXED the destination is
    unmapped, a shrink unmaps the source's tail, and one VMA moves. Without
    MREMAP_FIXED (DONTUNMAP alone, vrm_implies_new_addr()) ``new_addr`` is only a hint
    to get_unmapped_area() (vrm_set_new_addr()), so the mapping always moves, to the
    hint if that gap is free.
    """
    vma = mm.vma_lookup(addr)
    if vma is None:
        raise kernel_error(errno.EFAULT, "no VMA at old address")
    fixed = bool(flags & uapi.MREMAP_FIXED)
    if fixed and old_len == new_len:
        return remap_move(mm, addr, old_len, new_addr, flags)
    delta = abs(new_len - old_len)  # vrm_set_delta(), before any shrink
    _resize_is_valid(vma, addr, min(old_len, new_len) if old_len else 0, new_len, flags)
    if fixed:
        do_vmi_munmap(mm, new_addr, new_len)
    if old_len > new_len:
        do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        old_len = new_len
    vma = mm.vma_lookup(addr)
    if vma is None:
        raise kernel_error(errno.EFAULT, "no VMA at old address")
    if not fixed:
        # MREMAP_DONTUNMAP alone: vrm_set_new_addr() treats new_addr as an mmap() hint.
        pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
        map_flags = uapi.MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0
        new_addr = get_unmapped_area(mm, new_addr, new_len, pgoff, map_flags, vma.vm_file)
    if mm.map_count >= mm.ctx.max_map_count:
        raise kernel_error(errno.ENOMEM, "max_map_count")
    return move_vma(mm, vma, addr, old_len if old_len else new_len, new_len, new_addr, flags, delta)


def _check_mremap_params(
    addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> tuple[int, int]:
    """The flag, alignment and range checks; returns the page-aligned (old_len, new_len).

    Models mm/mremap.c:check_mremap_params (with vrm_overlaps()).
    One test per check, in check_mremap_params's order.
    """
    valid = uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP
    if flags & ~valid:
        raise kernel_error(errno.EINVAL, "unknown flags")
    if flags & uapi.MREMAP_FIXED and not flags & uapi.MREMAP_MAYMOVE:
        raise kernel_error(errno.EINVAL, "MREMAP_FIXED without MREMAP_MAYMOVE")
    if flags & uapi.MREMAP_DONTUNMAP and (not flags & uapi.MREMAP_MAYMOVE or old_len != new_len):
        raise kernel_error(errno.EINVAL, "MREMAP_DONTUNMAP needs MAYMOVE and equal sizes")
    if addr & (PAGE_SIZE - 1) or addr < 0 or old_len < 0 or new_len < 0:
        raise kernel_error(errno.EINVAL, "unaligned address")
    old_len = page_align(old_len)
    new_len = page_align(new_len)
    if not new_len:
        raise kernel_error(errno.EINVAL, "zero new length")
    if addr + old_len > U64 or addr + new_len > U64:
        raise kernel_error(errno.EINVAL, "range overflows")
    if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
        raise kernel_error(errno.EINVAL, "new range beyond TASK_SIZE")
    if flags & (uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP):
        if new_addr & (PAGE_SIZE - 1) or new_addr < 0:
            raise kernel_error(errno.EINVAL, "unaligned new address")
        # The ranges may not overlap (vrm_overlaps(), also for a DONTUNMAP hint).
        if addr + old_len > new_addr and new_addr + new_len > addr:
            raise kernel_error(errno.EINVAL, "overlapping ranges")
    return old_len, new_len


def _check_prep_vma(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, move_only: bool = False
) -> VmArea:
    """The VMA at ``addr``, if mremap() may touch it. Models mm/mremap.c:check_prep_vma
    (EFAULT without a VMA, EPERM if sealed, EINVAL for old_len 0 unless shared+MAYMOVE;
    hugetlb's rules follow in do_mremap: check_mremap_hugetlb). For a pure move
    (``move_only``, vrm_move_only()) remap_move() runs check_prep_vma per VMA, after that
    VMA's gap and vma_multi_allowed() tests, so the seal is left to ``remap_move`` (a
    sealed attach moved past its end is EFAULT, not EPERM: measured on 6.18.44, fuzz seed
    7100942)."""
    vma = mm.vma_lookup(addr)
    if vma is None:
        raise kernel_error(errno.EFAULT, "no VMA at old address")
    if vma.vm_flags & VM_SEALED and not move_only:
        raise kernel_error(errno.EPERM, "mseal()'d VMA")
    if not old_len:
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            raise kernel_error(errno.EINVAL, "old_len 0 on a private mapping")
        if not flags & uapi.MREMAP_MAYMOVE:
            raise kernel_error(errno.EINVAL, "old_len 0 without MAYMOVE")
    return vma


def _expand_vma_in_place(mm: MmStruct, vma: VmArea, addr: int, old_len: int, delta: int) -> None:
    """Grow ``vma`` by ``delta`` bytes at its end. Raises OSError.

    Models mm/mremap.c:expand_vma_in_place → vma_merge_extend(): a new-range merge of
    [vm_end, vm_end + delta) with the VMA itself as prev and the next VMA, the growth
    charged first (vrm_calc_charge) and populated when VM_LOCKED.
    """
    charged = delta >> PAGE_SHIFT if vma.vm_flags & VM_ACCOUNT else 0
    if charged:
        security_vm_enough_memory_mm(mm, charged)
    vmg = VmaMergeStruct.vma_state(vma, vma, vma.vm_end, vma.vm_end + delta)
    vmg.middle = None
    vmg.next = vma.vm_next
    expanded = vma_merge_new_range(vmg)
    if expanded is None:
        vm_unacct_memory(mm.ctx, charged)
        raise kernel_error(errno.ENOMEM, "vma_merge_extend failed")
    if expanded.vm_flags & VM_LOCKED:
        mm.locked_vm += delta >> PAGE_SHIFT
        mm_populate(mm, addr + old_len, delta, ignore_errors=True)


def do_mremap(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    """The mremap syscall. Raises OSError.

    Models mm/mremap.c:do_mremap → check_mremap_params, check_prep_vma, then
    mremap_to, mremap_shrink (no resize check: the tail is unmapped whatever it spans),
    or resize_is_valid and expand_vma (in place, else move_vma).
    """
    old_len, new_len = _check_mremap_params(addr, old_len, new_len, flags, new_addr)
    move_only = bool(flags & uapi.MREMAP_FIXED) and old_len == new_len
    vma = _check_prep_vma(mm, addr, old_len, new_len, flags, move_only)
    if vma.vm_flags & VM_HUGETLB:
        fixed = flags & (uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP)
        old_len, new_len = check_mremap_hugetlb(
            vma, addr, old_len, new_len, flags, new_addr if fixed else 0
        )
    if flags & (uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP):
        return mremap_to(mm, addr, old_len, new_len, flags, new_addr)
    if new_len <= old_len:
        if old_len > new_len:
            do_vmi_munmap(mm, addr + new_len, old_len - new_len)
        return addr
    _resize_is_valid(vma, addr, old_len, new_len, flags)
    src_len = old_len if old_len else new_len
    delta = new_len - old_len
    if old_len == vma.vm_end - addr and vma_expandable(mm, vma, delta):
        _expand_vma_in_place(mm, vma, addr, old_len, delta)
        return addr
    if not flags & uapi.MREMAP_MAYMOVE:
        raise kernel_error(errno.ENOMEM, "cannot grow in place")
    pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    map_flags = uapi.MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0
    dest = get_unmapped_area(mm, 0, new_len, pgoff, map_flags, vma.vm_file)
    return move_vma(mm, vma, addr, src_len, new_len, dest, flags, delta)


__all__ = ["do_mremap", "vm_area_alloc"]
