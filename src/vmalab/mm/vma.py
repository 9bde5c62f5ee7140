"""VMA allocation, merge and split.

Models mm/vma.c (Linux 6.19 as of 64212ba02e66, which the 6.18.y backport matches):
``struct vma_merge_struct``, is_mergeable_vma, is_mergeable_anon_vma,
can_vma_merge_{before,after,left,right}, vma_merge_existing_range, vma_merge_new_range,
vma_expand, commit_merge, __split_vma/split_vma, vma_modify/vma_modify_flags, and
mm/vma_init.c (vm_area_alloc/vm_area_dup/vm_area_free); also the per-VMA fixup loop
that mlock and mprotect share (``fixup_vma_range``). Sticky-flag masks come from
the active design (``Design.vm_sticky``/``vm_ignore_merge``), so the eager and tagged
designs merge as <= 6.18 kernels do. The design hears of every VMA duplicated by a split
(``vma_dup``), merged into another (``vma_merge``) and freed (``vma_free``), so it can
keep its per-VMA ``design_state``.

Not modelled: mempolicy is carried and compared but nothing sets it (userfaultfd
contexts are set by vmalab.mm.userfaultfd); uprobes, mmap_lock and the per-VMA lock.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import huge_memory, hugetlb, rmap
from vmalab.mm.flags import VM_HUGETLB, VM_MAYWRITE, VM_SHARED, VM_SPECIAL
from vmalab.mm.mm_types import PAGE_SHIFT, AnonVma, MmStruct, VmArea
from vmalab.mm.slab import AllocFailure


class VmaMergeStruct:
    """``struct vma_merge_struct``: the state of one merge attempt. Models mm/vma.h."""

    __slots__ = (
        "mm",
        "prev",
        "middle",
        "next",
        "target",
        "start",
        "end",
        "pgoff",
        "vm_flags",
        "file",
        "anon_vma",
        "policy",
        "uffd_ctx",
        "anon_name",
        "copied_from",
        "nomem",
    )

    def __init__(
        self,
        mm: MmStruct,
        prev: VmArea | None,
        middle: VmArea | None,
        start: int,
        end: int,
        pgoff: int,
        vm_flags: int,
        file: object | None,
        anon_vma: AnonVma | None = None,
    ) -> None:
        self.mm = mm
        self.prev = prev
        self.middle = middle
        self.next: VmArea | None = None
        self.target: VmArea | None = None
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.vm_flags = vm_flags
        self.file = file
        self.anon_vma = anon_vma
        self.policy: object | None = None
        self.uffd_ctx: object | None = None
        self.anon_name: str | None = None
        # mm/vma.h: the VMA mremap() is copying (vma_merge_copied_range), else None.
        self.copied_from: VmArea | None = None
        self.nomem = False

    @classmethod
    def vma_state(cls, prev: VmArea | None, middle: VmArea, start: int, end: int) -> VmaMergeStruct:
        """Models mm/vma.h:VMG_VMA_STATE: attributes taken from ``middle``."""
        vmg = cls(
            middle.vm_mm,
            prev,
            middle,
            start,
            end,
            middle.vm_pgoff + ((start - middle.vm_start) >> PAGE_SHIFT),
            middle.vm_flags,
            middle.vm_file,
            middle.anon_vma,
        )
        vmg.policy = middle.vm_policy
        vmg.uffd_ctx = middle.uffd_ctx
        vmg.anon_name = middle.anon_name
        return vmg


# --- allocation ------------------------------------------------------------------------


def vm_area_alloc(
    mm: MmStruct, start: int, end: int, pgoff: int, flags: int, file: object | None
) -> VmArea:
    """Models mm/vma_init.c:vm_area_alloc (+ vma_set_range); raises AllocFailure."""
    slabs = mm.ctx.slabs
    slabs.alloc(slabs.vm_area_cachep)
    return VmArea(mm, start, end, pgoff, flags, file)  # type: ignore[arg-type]


def vm_area_dup(vma: VmArea, mm: MmStruct | None = None) -> VmArea:
    """Copy a VMA: range, flags, pgoff, file, names; the chain starts empty.

    Models mm/vma_init.c:vm_area_dup → vm_area_init_from, which copies the anon_vma
    pointer too. The caller then calls the design's ``vma_dup`` (a split, a move) or
    ``vma_fork_dup`` (fork) hook, which decides what ``design_state`` the copy gets.
    """
    m = mm or vma.vm_mm
    slabs = m.ctx.slabs
    slabs.alloc(slabs.vm_area_cachep)
    new = VmArea(m, vma.vm_start, vma.vm_end, vma.vm_pgoff, vma.vm_flags, vma.vm_file)
    new.anon_vma = vma.anon_vma
    new.anon_name = vma.anon_name
    new.uffd_ctx = vma.uffd_ctx
    new.vm_policy = vma.vm_policy
    new.vm_ops_close = vma.vm_ops_close
    new.special_name = vma.special_name
    if vma.vm_private_data is not None:
        new.vm_private_data = vma.vm_private_data
        hugetlb.hugetlb_vm_op_open(new)  # vm_ops->open
    return new


def vm_area_free(vma: VmArea) -> None:
    """Models mm/vma_init.c:vm_area_free, after vm_ops->close (remove_vma): a private
    hugetlb mapping's hugetlb_vm_op_close, SysV shm's shm_close; the design hears of it
    first (``vma_free``)."""
    if vma.vm_private_data is not None:
        hugetlb.hugetlb_vm_op_close(vma)
    f = vma.vm_file
    if f is not None and f.inode.on_close is not None:
        f.inode.on_close(f.inode)
    ctx = vma.vm_mm.ctx
    if ctx.hooked_vma_free:
        ctx.design.vma_free(vma)
    slabs = ctx.slabs
    slabs.free(slabs.vm_area_cachep)


def is_shared_maywrite(flags: int) -> bool:
    """Models include/linux/mm.h:is_shared_maywrite."""
    return flags & (VM_SHARED | VM_MAYWRITE) == VM_SHARED | VM_MAYWRITE


def vma_link_file(vma: VmArea) -> None:
    """Add ``vma`` to its file's i_mmap and take a file reference.

    Models mm/vma.c:__vma_link_file (mapping_allow_writable for shared writable VMAs)
    with get_file().
    """
    f = vma.vm_file
    if f is not None:
        f.get()
        inode = f.inode
        inode.i_mmap.add(vma)
        if is_shared_maywrite(vma.vm_flags):
            inode.i_mmap_writable += 1


def vma_unlink_file(vma: VmArea) -> None:
    """Remove ``vma`` from i_mmap and drop its file reference.

    Models mm/vma.c:__remove_shared_vm_struct and fput() in remove_vma().
    """
    f = vma.vm_file
    if f is not None:
        inode = f.inode
        inode.i_mmap.discard(vma)
        if is_shared_maywrite(vma.vm_flags):
            inode.i_mmap_writable -= 1
        f.put()
        inode.release_if_unused()


def vma_link(mm: MmStruct, vma: VmArea) -> None:
    """Insert a new VMA. Models mm/vma.c:vma_link (store, i_mmap, map_count++)."""
    mm.vma_store(vma)
    vma_link_file(vma)
    mm.map_count += 1


def remove_vma_from_mm(vma: VmArea) -> None:
    """Drop a VMA that was merged away: unlink chains and file, free it.

    Models mm/vma.c:vma_complete for a removed VMA (anon_vma_merge → unlink_anon_vmas,
    __remove_shared_vm_struct, map_count--, remove_vma).
    """
    mm = vma.vm_mm
    mm.vma_erase(vma)
    mm.map_count -= 1
    rmap.unlink_anon_vmas(vma)
    vma_unlink_file(vma)
    vm_area_free(vma)


# --- mergeability ----------------------------------------------------------------------


def is_mergeable_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """Models mm/vma.c:is_mergeable_vma (flags modulo VM_IGNORE_MERGE, file, uffd, name)."""
    tgt = vmg.next if merge_next else vmg.prev
    if tgt is None:
        raise InvariantError("is_mergeable_vma: tgt is None")
    ignore = vmg.mm.ctx.design.vm_ignore_merge
    return (
        vmg.policy == tgt.vm_policy
        and not ((tgt.vm_flags ^ vmg.vm_flags) & ~ignore)
        and vmg.file is tgt.vm_file
        and vmg.uffd_ctx == tgt.uffd_ctx
        and vmg.anon_name == tgt.anon_name
    )


def vma_had_uncowed_parents(vma: VmArea | None) -> bool:
    """Models mm/vma.c:vma_had_uncowed_parents: an anon_vma with a non-singular chain."""
    return vma is not None and vma.anon_vma is not None and len(vma.anon_vma_chain) != 1


def is_mergeable_anon_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """Models mm/vma.c:is_mergeable_anon_vma (v6.15+ form), on masked pointers.

    With "mm/vma: enforce VMA fork limit on unfaulted,faulted mremap merge too" (6.19,
    in 6.18.y): an unfaulted target may adopt the anon_vma of neither a fork child
    middle nor a fork child that mremap() is copying (``vmg.copied_from``).
    """
    tgt = vmg.next if merge_next else vmg.prev
    if tgt is None:
        raise InvariantError("is_mergeable_anon_vma: tgt is None")
    src = vmg.middle
    tgt_anon = tgt.anon_vma
    src_anon = vmg.anon_vma
    if tgt_anon is None and src_anon is not None:
        return not vma_had_uncowed_parents(src) and not vma_had_uncowed_parents(vmg.copied_from)
    if tgt_anon is not None and src_anon is None:
        return not vma_had_uncowed_parents(tgt)
    return src_anon is tgt_anon


def can_vma_merge_before(vmg: VmaMergeStruct) -> bool:
    """Merge with next: mergeable and pgoff-contiguous. Models mm/vma.c:can_vma_merge_before."""
    nxt = vmg.next
    if nxt is None:
        raise InvariantError("can_vma_merge_before: nxt is None")
    pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
    return (
        is_mergeable_vma(vmg, True)
        and is_mergeable_anon_vma(vmg, True)
        and nxt.vm_pgoff == vmg.pgoff + pglen
    )


def can_vma_merge_after(vmg: VmaMergeStruct) -> bool:
    """Merge with prev: mergeable and pgoff-contiguous. Models mm/vma.c:can_vma_merge_after."""
    prev = vmg.prev
    if prev is None:
        raise InvariantError("can_vma_merge_after: prev is None")
    return (
        is_mergeable_vma(vmg, False)
        and is_mergeable_anon_vma(vmg, False)
        and prev.vm_pgoff + prev.pages() == vmg.pgoff
    )


def can_vma_merge_left(vmg: VmaMergeStruct) -> bool:
    """Models mm/vma.c:can_vma_merge_left."""
    return vmg.prev is not None and vmg.prev.vm_end == vmg.start and can_vma_merge_after(vmg)


def are_anon_vmas_compatible(a: VmArea, b: VmArea) -> bool:
    """prev and next may both be merged only if their anon_vmas agree. Models mm/vma.c."""
    x, y = a.anon_vma, b.anon_vma
    return x is None or y is None or x is y


def can_vma_merge_right(vmg: VmaMergeStruct, can_merge_left: bool) -> bool:
    """Models mm/vma.c:can_vma_merge_right."""
    nxt = vmg.next
    if nxt is None or vmg.end != nxt.vm_start or not can_vma_merge_before(vmg):
        return False
    if not can_merge_left:
        return True
    if vmg.prev is None:
        raise InvariantError("can_vma_merge_right: vmg.prev is None")
    return are_anon_vmas_compatible(vmg.prev, nxt)


def can_merge_remove_vma(vma: VmArea) -> bool:
    """A VMA with vm_ops->close cannot be removed by a merge.

    Models mm/vma.c:can_merge_remove_vma.
    """
    return not vma.vm_ops_close


# --- merge ------------------------------------------------------------------------------


def _remove_into(target: VmArea, removed: VmArea) -> None:
    """Retire a VMA absorbed by a merge, letting the design see it first."""
    removed.vm_mm.ctx.design.vma_merge(target, removed)
    remove_vma_from_mm(removed)


def _absorb_part(target: VmArea, src: VmArea) -> None:
    """``target`` grows over part of ``src``'s range (src shrinks): tell the design."""
    src.vm_mm.ctx.design.vma_merge(target, src)


def vma_merge_existing_range(vmg: VmaMergeStruct) -> VmArea | None:
    """Merge [vmg.start, vmg.end) of ``vmg.middle`` into prev and/or next.

    Models mm/vma.c:vma_merge_existing_range (with the sticky-flag propagation of
    64212ba02e66): only a range touching the middle VMA's left or right edge can merge;
    VM_SPECIAL never merges; sticky bits of the proposed flags, prev (merging left) and
    next (merging right) are ORed into the target after commit_merge().
    Returns the merged VMA, or None (``vmg.nomem`` set on allocation failure).

    Long as mm/vma.c:vma_merge_existing_range is.
    """
    middle = vmg.middle
    if middle is None:
        raise InvariantError("vma_merge_existing_range: middle is None")
    mm = vmg.mm
    design = mm.ctx.design
    prev = vmg.prev
    start, end = vmg.start, vmg.end
    left_side = start == middle.vm_start
    right_side = end == middle.vm_end
    sticky = vmg.vm_flags & design.vm_sticky

    if vmg.vm_flags & VM_SPECIAL or (not left_side and not right_side):
        return None
    merge_left = can_vma_merge_left(vmg) if left_side else False
    nxt: VmArea | None = None
    if right_side:
        nxt = vmg.next = mm.vma_next(middle)
        merge_right = can_vma_merge_right(vmg, merge_left)
    else:
        merge_right = False
    if not merge_left and not merge_right:
        return None
    merge_both = merge_left and merge_right
    remove_middle = left_side and right_side
    if remove_middle and not can_merge_remove_vma(middle):
        return None
    remove_next = merge_both
    if remove_next and nxt is not None and not can_merge_remove_vma(nxt):
        remove_next = merge_right = merge_both = False

    if merge_right:
        if nxt is None:
            raise InvariantError("vma_merge_existing_range: nxt is None")
        target = nxt
        sticky |= nxt.vm_flags & design.vm_sticky
    if merge_left:
        if prev is None:
            raise InvariantError("vma_merge_existing_range: prev is None")
        target = prev
        sticky |= prev.vm_flags & design.vm_sticky

    try:
        if merge_both:
            if prev is None or nxt is None:
                raise InvariantError("vma_merge_existing_range: prev or nxt is None")
            # prev extends over middle and next, both deleted.
            rmap.dup_anon_vma(prev, nxt if nxt.anon_vma is not None else middle)
            new_end = nxt.vm_end
            _remove_into(prev, middle)
            _remove_into(prev, nxt)
            prev.vm_end = new_end
        elif merge_left:
            if prev is None:
                raise InvariantError("vma_merge_existing_range: prev is None")
            # prev extends; middle shrinks or is deleted.
            rmap.dup_anon_vma(prev, middle)
            if remove_middle:
                _remove_into(prev, middle)
            else:
                _absorb_part(prev, middle)
                huge_memory.split_huge_pmd_address(mm, end)  # commit_merge()
                middle.vm_pgoff += (end - middle.vm_start) >> PAGE_SHIFT
                mm.vma_set_start(middle, end)
            prev.vm_end = end
        else:
            if nxt is None:
                raise InvariantError("vma_merge_existing_range: nxt is None")
            # next extends backwards; middle shrinks or is deleted.
            rmap.dup_anon_vma(nxt, middle)
            pglen = (end - start) >> PAGE_SHIFT
            if remove_middle:
                _remove_into(nxt, middle)
            else:
                _absorb_part(nxt, middle)
                huge_memory.split_huge_pmd_address(mm, start)  # commit_merge()
                middle.vm_end = start
            nxt.vm_pgoff -= pglen
            mm.vma_set_start(nxt, start)
    except AllocFailure:
        vmg.nomem = True
        return None
    target.vm_flags |= sticky
    return target


def vma_expand(vmg: VmaMergeStruct) -> None:
    """Expand ``vmg.target`` to [vmg.start, vmg.end), absorbing next if it is reached.

    Models mm/vma.c:vma_expand (sticky bits of vmg, target and a removed next are ORed
    into the target), with "mm/vma: fix anon_vma UAF on mremap() faulted, unfaulted
    merge" (6.19, in 6.18.y): when mremap() copies a VMA (``vmg.copied_from``), the
    target always adopts its anon_vma (dup_anon_vma), after that of a removed next.
    Raises AllocFailure (-ENOMEM) with nothing changed.
    """
    target = vmg.target
    if target is None:
        raise InvariantError("vma_expand: target is None")
    mm = vmg.mm
    design = mm.ctx.design
    nxt = vmg.next
    sticky = (vmg.vm_flags | target.vm_flags) & design.vm_sticky
    remove_next = nxt is not None and target is not nxt and vmg.end == nxt.vm_end
    if remove_next:
        if nxt is None:
            raise InvariantError("vma_expand: nxt is None")
        sticky |= nxt.vm_flags & design.vm_sticky
        rmap.dup_anon_vma(target, nxt)
    if vmg.copied_from is not None:
        rmap.dup_anon_vma(target, vmg.copied_from)
    if remove_next:
        if nxt is None:
            raise InvariantError("vma_expand: nxt is None")
        _remove_into(target, nxt)
    target.vm_end = vmg.end
    target.vm_pgoff = vmg.pgoff
    mm.vma_set_start(target, vmg.start)
    target.vm_flags |= sticky


def vma_merge_new_range(vmg: VmaMergeStruct) -> VmArea | None:
    """Merge a new range [vmg.start, vmg.end) with prev and/or next.

    Models mm/vma.c:vma_merge_new_range → vma_expand. Returns the expanded VMA or None.
    """
    prev, nxt = vmg.prev, vmg.next
    end = vmg.end
    if vmg.vm_flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    can_left = can_vma_merge_left(vmg)
    can_right = can_vma_merge_right(vmg, can_left)
    if can_right:
        if nxt is None:
            raise InvariantError("vma_merge_new_range: nxt is None")
        vmg.end = nxt.vm_end
        vmg.target = nxt
    if can_left:
        if prev is None:
            raise InvariantError("vma_merge_new_range: prev is None")
        vmg.start = prev.vm_start
        vmg.target = prev
        vmg.pgoff = prev.vm_pgoff
        if can_right and nxt is not None and not can_merge_remove_vma(nxt):
            vmg.end = end
    if vmg.target is None:
        return None
    try:
        vma_expand(vmg)
    except AllocFailure:
        vmg.nomem = True
        return None
    return vmg.target


# --- split -------------------------------------------------------------------------------


def __split_vma(vma: VmArea, addr: int, new_below: bool) -> VmArea:
    """Split ``vma`` at ``addr``; returns the new VMA (below or above ``addr``).

    Models mm/vma.c:__split_vma: vm_area_dup, pgoff of the upper part adjusted,
    anon_vma_clone (chain_len AVCs, same anon_vma), file reference, insert. Both parts
    keep every flag. Raises AllocFailure with nothing changed.
    """
    mm = vma.vm_mm
    if vma.vm_flags & VM_HUGETLB:
        hugetlb.hugetlb_vm_op_split(vma, addr)  # vm_ops->may_split
    new = vm_area_dup(vma)
    if mm.ctx.hooked_vma_dup:
        mm.ctx.design.vma_dup(new, vma)
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
    try:
        rmap.anon_vma_clone(new, vma)
    except AllocFailure:
        vm_area_free(new)
        raise
    huge_memory.split_huge_pmd_address(mm, addr)  # vma_adjust_trans_huge()
    if new_below:
        vma.vm_pgoff += (addr - new.vm_start) >> PAGE_SHIFT
        mm.vma_split_below(vma, new, addr)
    else:
        vma.vm_end = addr
        mm.vma_store(new)
    vma_link_file(new)
    mm.map_count += 1
    return new


split_vma_raw = __split_vma


def split_vma(vma: VmArea, addr: int, new_below: bool) -> VmArea:
    """Models mm/vma.c:split_vma: -ENOMEM at sysctl_max_map_count, then __split_vma."""
    mm = vma.vm_mm
    if mm.map_count >= mm.ctx.max_map_count:
        raise kernel_error(errno.ENOMEM, "max_map_count")
    try:
        return __split_vma(vma, addr, new_below)
    except AllocFailure:
        raise kernel_error(errno.ENOMEM, "split_vma: allocation failed") from None


def vma_modify(vmg: VmaMergeStruct) -> tuple[VmArea, bool]:
    """Merge if possible, else split off the parts outside [start, end).

    Models mm/vma.c:vma_modify. Returns (VMA now covering the range, merged?).
    Raises OSError(ENOMEM).
    """
    vma = vmg.middle
    if vma is None:
        raise InvariantError("vma_modify: vma is None")
    merged = vma_merge_existing_range(vmg)
    if merged is not None:
        return merged, True
    if vmg.nomem:
        raise kernel_error(errno.ENOMEM, "merge: allocation failed")
    if vma.vm_start < vmg.start:
        split_vma(vma, vmg.start, True)
    if vma.vm_end > vmg.end:
        split_vma(vma, vmg.end, False)
    return vma, False


def vma_modify_flags(
    prev: VmArea | None, vma: VmArea, start: int, end: int, new_flags: int
) -> tuple[VmArea, int]:
    """Prepare [start, end) of ``vma`` for new flags; returns (VMA, flags to set).

    Models mm/vma.c:vma_modify_flags after 9119d6c2095b: on a successful merge the
    caller gets the merged VMA's flags back, so sticky bits are kept.
    """
    vmg = VmaMergeStruct.vma_state(prev, vma, start, end)
    vmg.vm_flags = new_flags
    res, merged = vma_modify(vmg)
    return res, (res.vm_flags if merged else new_flags)


def raise_hole_error(err: int) -> None:
    """Raise the -ENOMEM a VMA walk returned for a hole in its range (``fixup_vma_range``,
    madvise_walk_vmas) as the OSError the syscalls raise."""
    if err:
        raise kernel_error(-err, "range contains unmapped memory")


def fixup_vma_range(
    mm: MmStruct,
    vma: VmArea,
    start: int,
    end: int,
    fixup: Callable[[VmArea, VmArea | None, int, int], VmArea],
) -> int:
    """Call ``fixup(vma, prev, nstart, tmp)`` on each VMA of [start, end) in turn, from
    ``vma`` (the one holding ``start``); ``fixup`` returns the VMA that now covers
    [nstart, tmp) (merged or split). Returns 0, or -ENOMEM at a hole (returned, as the
    kernel's loops return ``error``; do_mprotect passes it on, see its docstring).

    Models the for_each_vma_range() loop that mm/mlock.c:apply_vma_lock_flags and
    mm/mprotect.c:do_mprotect_pkey each write, with their own per-VMA checks and fixup
    (mlock_fixup, mprotect_fixup) inside: prev is the VMA before ``vma`` unless
    ``start`` falls inside it; after each fixup the walk continues from vma_iter_end()
    because a merge may have grown the VMA past the range; a hole (the next VMA does
    not start where the last one ended, or there is none) is ENOMEM, leaving the VMAs
    before it changed.
    """
    prev = mm.vma_prev(vma) if start <= vma.vm_start else vma
    nstart = start
    while True:
        vma = fixup(vma, prev, nstart, min(vma.vm_end, end))
        # tmp = vma_iter_end(&vmi): a merge may have grown the VMA past the range.
        nstart = vma.vm_end
        if nstart >= end:
            return 0
        nxt = mm.vma_next(vma)
        if nxt is None or nxt.vm_start != nstart:
            return -errno.ENOMEM  # a hole in the range
        prev, vma = vma, nxt
