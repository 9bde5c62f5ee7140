"""fork and exit of an address space.

Models mm/mmap.c:dup_mmap (kernel/fork.c before 6.16) with copy_page_range, and
mm/mmap.c:exit_mmap (unmap_vmas with ZAP_FLAG_DROP_MARKER, free_pgtables, remove_vma).
"""

from __future__ import annotations

import gc

from vmalab.mm import rmap
from vmalab.mm.flags import VM_ACCOUNT, VM_DONTCOPY, VM_LOCKED_MASK, VM_WIPEONFORK
from vmalab.mm.hugetlb import hugetlb_dup_vma_private
from vmalab.mm.memory import ForkWalk, copy_page_range, count_markers, unmap_vmas_all
from vmalab.mm.mm_types import DesignHooks, MmContext, MmStruct, VmArea
from vmalab.mm.slab import AllocFailure
from vmalab.mm.userfaultfd import userfaultfd_reset_ctx
from vmalab.mm.util import security_vm_enough_memory_mm, vm_unacct_memory
from vmalab.mm.vma import vm_area_dup, vm_area_free, vma_link_file, vma_unlink_file


def dup_mmap(mm: MmStruct, oldmm: MmStruct) -> None:
    """Copy ``oldmm``'s VMAs and page tables into the empty ``mm``. Raises AllocFailure.

    Models mm/mmap.c:dup_mmap: VM_DONTCOPY VMAs are skipped; each other VMA is
    vm_area_dup()ed (VM_MAYBE_GUARD, VM_WIPEONFORK inherited), gets its design state
    from the design's ``vma_fork_dup`` hook, then loses its anon_vma (VM_WIPEONFORK) or
    goes through anon_vma_fork(),
    loses VM_LOCKED_MASK, is linked, and unless VM_WIPEONFORK has its page tables copied
    (a VM_ACCOUNT VMA is charged to the commit first: ENOMEM when refused)
    when the design's vma_needs_copy() says so. On failure the partial child is left
    for the caller to tear down with exit_mmap(), as dup_mmap's error path does.

    Long as mm/mmap.c:dup_mmap is (one loop, its error unwinding inline).
    """
    # Host-side, not the kernel's: the loop allocates several objects per VMA and
    # frees none, so the cyclic GC's passes over the growing heap find nothing to
    # collect and cost about a third of a fork of 10^5 VMAs; it is kept out of the loop
    # and back on after it, whatever happens.
    enabled = gc.isenabled()
    gc.disable()
    try:
        _dup_mmap_vmas(mm, oldmm)
    finally:
        _promote_young_objects()
        if enabled:
            gc.enable()


def _promote_young_objects() -> None:
    """Move every GC-tracked object to the oldest generation, without a pass over them.

    Host-side, not the kernel's. The objects the VMA loop made (about six per VMA) are
    all reachable from the new mm; left in the youngest generation, the first
    collection after the GC is back on walks all of them (one pass over 6x10^6 objects
    after a fork of 10^6 VMAs, about a tenth of the fork) only to promote them.
    ``gc.freeze()`` + ``gc.unfreeze()`` puts them in the oldest generation directly
    (two list splices); whatever is garbage among them goes at the next full
    collection. Skipped when the program froze objects itself (``unfreeze()`` would
    release those too).
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def _dup_mmap_vmas(mm: MmStruct, oldmm: MmStruct) -> None:
    """The VMA loop of mm/mmap.c:dup_mmap (``for_each_vma(vmi, mpnt)``), leaf by leaf of
    the index.

    __mt_dup() first builds the child's tree as a copy of the parent's, whose slots
    the loop then overwrites with the child's VMAs (vma_iter_bulk_store(), which
    cannot fail) or clears (VM_DONTCOPY: vma_iter_clear_gfp()). Here each leaf is
    copied (its keys are the parent's own int objects) and goes into the child's index
    once its VMAs are done; when the loop fails, the part of the leaf not yet
    duplicated is cut off first (where dup_mmap stores XA_ZERO_ENTRY for exit_mmap()
    to stop at) and the leaves after it are never added. Not modelled: the tree's node
    allocations (__mt_dup()'s -ENOMEM).
    """
    k = mm.ctx
    design = k.design
    tree = mm.mm_mt
    prev: VmArea | None = None
    walk = ForkWalk()
    # looked up once, not per VMA (a method call through the DesignHooks protocol)
    needs_copy = design.vma_needs_copy
    # /proc/vmstat's fork counters, kept in locals and added once (whatever happens)
    copied = markers_copied = markers_dropped = 0
    try:
        for pkeys, pvals in oldmm.mm_mt.leaves():
            keys = pkeys[:]  # __mt_dup()
            vals = pvals[:]
            n = 0  # slots of this leaf that hold the child's VMAs
            try:
                for mpnt in pvals:
                    tmp = _dup_one(mm, mpnt, k, design)
                    if tmp is None:  # VM_DONTCOPY: vma_iter_clear_gfp()
                        del keys[n]
                        del vals[n]
                        continue
                    vals[n] = tmp  # vma_iter_bulk_store(&vmi, tmp)
                    n += 1
                    tmp.vm_prev = prev
                    if prev is not None:
                        prev.vm_next = tmp
                    prev = tmp
                    mm.map_count += 1
                    vma_link_file(tmp)
                    if tmp.vm_flags & VM_WIPEONFORK:
                        continue
                    if needs_copy(tmp, mpnt):
                        copied += 1  # counted before the copy begins (it may fail)
                        markers_copied += copy_page_range(tmp, mpnt, walk)
                    else:
                        markers_dropped += count_markers(mpnt)
            finally:
                if n < len(vals):  # the loop failed: the rest was not duplicated
                    del keys[n:]
                    del vals[n:]
                if n:
                    tree.append_leaf(keys, vals)
    finally:
        vs = k.vmstat
        vs["fork_copy_vmas"] += copied
        vs["fork_guard_markers_copied"] += markers_copied
        vs["fork_guard_markers_dropped"] += markers_dropped


def _dup_one(mm: MmStruct, mpnt: VmArea, k: MmContext, design: DesignHooks) -> VmArea | None:
    """The body of mm/mmap.c:dup_mmap's for_each_vma loop up to the store: the child's
    copy of ``mpnt`` (not yet in the index) with its anon_vma chain; None for
    VM_DONTCOPY (no copy at all).

    Long as that part of dup_mmap's loop is.
    """
    if mpnt.vm_flags & VM_DONTCOPY:
        return None
    if mpnt.vm_flags & VM_ACCOUNT:
        # security_vm_enough_memory_mm(oldmm, len): the child's copy is charged
        try:
            security_vm_enough_memory_mm(mpnt.vm_mm, mpnt.pages())
        except OSError:
            raise AllocFailure("vm_enough_memory") from None
    try:
        tmp = vm_area_dup(mpnt, mm)
    except AllocFailure:
        if mpnt.vm_flags & VM_ACCOUNT:
            vm_unacct_memory(k, mpnt.pages())
        raise
    if tmp.uffd_ctx is not None:
        userfaultfd_reset_ctx(tmp)  # dup_userfaultfd() without UFFD_FEATURE_EVENT_FORK
    if tmp.vm_private_data is not None:
        hugetlb_dup_vma_private(tmp, mpnt)  # the child owns no hugetlb reservation
    if k.hooked_vma_fork_dup:
        design.vma_fork_dup(tmp, mpnt)
    if mpnt.vm_flags & VM_WIPEONFORK:
        rmap.vma_clear_anon_vma(tmp)  # tmp->anon_vma = NULL
    else:
        try:
            rmap.anon_vma_fork(tmp, mpnt)
        except AllocFailure:
            vm_area_free(tmp)
            if mpnt.vm_flags & VM_ACCOUNT:
                vm_unacct_memory(k, mpnt.pages())
            raise
    tmp.vm_flags &= ~VM_LOCKED_MASK
    return tmp


def exit_mmap(mm: MmStruct) -> None:
    """Tear down every VMA, page table and the mm's own accounting.

    Models mm/mmap.c:exit_mmap: unmap_vmas (markers dropped, CoW pages included),
    free_pgtables (unlink_anon_vmas, unlink_file_vma), remove_vma for each VMA, and
    the PGD freed with the mm.
    """
    vmas: list[VmArea] = list(mm.mm_mt.values())
    unmap_vmas_all(mm)  # unmap_vmas(), one walk of the tables (see there)
    # vm_unacct_memory(nr_accounted)
    vm_unacct_memory(mm.ctx, sum(v.pages() for v in vmas if v.vm_flags & VM_ACCOUNT))
    for v in vmas:
        rmap.unlink_anon_vmas(v)
        vma_unlink_file(v)
    for v in vmas:
        vm_area_free(v)
        # The index's links go with it (the maple tree is destroyed): the freed VMAs
        # hold no references to each other and go by reference counting.
        v.vm_prev = v.vm_next = None
    mm.mm_mt.clear()
    mm.map_count = 0
    mm.locked_vm = 0
    mm.pgtables.free_all()
    mm.dead = True
