"""anon_vma and anon_vma_chain management, and the RFC's anon_vma-word accessors.

Models mm/rmap.c (anon_vma_prepare, anon_vma_clone, anon_vma_fork, unlink_anon_vmas,
put_anon_vma) and the accessors the RFC "mm: introduce anon_vma flags, reduce kernel
allocs" adds to include/linux/mm_types.h and mm/vma.c. Every design uses these accessors;
only the tagged design ever sets a flag bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from vmalab.mm.flags import VM_ACCESS_FLAGS, VM_IGNORE_MERGE
from vmalab.mm.mm_types import AnonVma, AnonVmaChain, VmArea
from vmalab.mm.slab import AllocFailure

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmContext

# include/linux/mm_types.h (RFC patch 1/2)
ANON_VMA_UNFAULTED: Final = 1
NUM_ANON_VMA_FLAGS: Final = 1
ANON_VMA_FLAG_MASK: Final = (1 << NUM_ANON_VMA_FLAGS) - 1


# --- the RFC's accessors ---------------------------------------------------------------


def vma_anon_vma(vma: VmArea) -> AnonVma | None:
    """The real anon_vma with flag bits masked off. Models the RFC's vma_anon_vma()."""
    return vma._anon_vma


def vma_anon_vma_flags(vma: VmArea) -> int:
    """Only the flag bits of the word. Models the RFC's vma_anon_vma_flags()."""
    return vma._anon_vma_flags


def vma_set_anon_vma(vma: VmArea, anon_vma: AnonVma | None) -> None:
    """Store a real pointer, clearing any flag. Models the RFC's vma_set_anon_vma()."""
    vma._anon_vma = anon_vma
    vma._anon_vma_flags = 0


def vma_clear_anon_vma(vma: VmArea) -> None:
    """Store 0: pointer and flags gone. Models the RFC's vma_clear_anon_vma()."""
    vma._anon_vma = None
    vma._anon_vma_flags = 0


def vma_dup_anon_vma(dst: VmArea, src: VmArea) -> None:
    """Copy the raw word, flags included. Models the RFC's vma_dup_anon_vma()."""
    dst._anon_vma = src._anon_vma
    dst._anon_vma_flags = src._anon_vma_flags


def vma_maybe_has_pagetables(vma: VmArea) -> bool:
    """Raw word non-zero: a real anon_vma or any flag.

    Models the RFC's vma_maybe_has_pagetables() ("page tables may need propagating").
    """
    return vma._anon_vma is not None or vma._anon_vma_flags != 0


def vma_set_anon_vma_unfaulted(vma: VmArea) -> None:
    """Set ANON_VMA_UNFAULTED if there is no real anon_vma.

    Models the RFC's mm/vma.c:vma_set_anon_vma_unfaulted() (through
    vma_set_anon_vma_if_unset(), serialised by mm->page_table_lock in the kernel).
    """
    if vma._anon_vma is None:
        vma._anon_vma_flags = ANON_VMA_UNFAULTED


def vma_clear_anon_vma_unfaulted(vma: VmArea) -> None:
    """Write 0 if there is still no real anon_vma.

    Models the RFC's mm/vma.c:vma_clear_anon_vma_unfaulted().
    """
    if vma._anon_vma is None:
        vma._anon_vma_flags = 0


# --- allocation ---------------------------------------------------------------------


def anon_vma_alloc(k: MmContext) -> AnonVma:
    """Allocate an anon_vma: refcount 1, parent = root = itself. Models mm/rmap.c:anon_vma_alloc."""
    k.slabs.alloc(k.slabs._av)
    k.anon_vma_seq += 1
    av = AnonVma(k.anon_vma_seq)
    k.anon_vmas[av.id] = av
    return av


def anon_vma_free(k: MmContext, av: AnonVma) -> None:
    """Models mm/rmap.c:anon_vma_free."""
    del k.anon_vmas[av.id]
    k.slabs.free(k.slabs._av)


def put_anon_vma(k: MmContext, av: AnonVma) -> None:
    """Drop a reference; free at zero, then drop the root's pin.

    Models include/linux/rmap.h:put_anon_vma and mm/rmap.c:__put_anon_vma.
    """
    av.refcount -= 1
    if av.refcount:
        return
    root = av.root
    anon_vma_free(k, av)
    if root is not av:
        root.refcount -= 1
        if root.refcount == 0:
            anon_vma_free(k, root)


def anon_vma_chain_link(k: MmContext, vma: VmArea, anon_vma: AnonVma) -> None:
    """Allocate an AVC and link ``vma`` to ``anon_vma``.

    Models mm/rmap.c:anon_vma_chain_alloc + anon_vma_chain_link (``list_add()`` puts the
    new chain at the head of ``vma->anon_vma_chain``).
    """
    k.slabs.alloc(k.slabs._avc)
    avc = AnonVmaChain(vma, anon_vma)
    vma.anon_vma_chain.insert(0, avc)
    anon_vma.avcs.add(avc)


# --- anon_vma_prepare ------------------------------------------------------------------


def anon_vma_compatible(a: VmArea, b: VmArea) -> bool:
    """Whether b's anon_vma could serve a. Models mm/vma.c:anon_vma_compatible (6.19)."""
    return (
        a.vm_end == b.vm_start
        and a.vm_policy == b.vm_policy
        and a.vm_file is b.vm_file
        and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VM_IGNORE_MERGE))
        and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> 12)
    )


def reusable_anon_vma(old: VmArea, a: VmArea, b: VmArea) -> AnonVma | None:
    """Models mm/vma.c:reusable_anon_vma: old's anon_vma if compatible and not forked."""
    if anon_vma_compatible(a, b):
        av = old._anon_vma
        if av is not None and len(old.anon_vma_chain) == 1:
            return av
    return None


def find_mergeable_anon_vma(vma: VmArea) -> AnonVma | None:
    """A neighbour's anon_vma that ``vma`` may share: next first, then prev.

    Models mm/vma.c:find_mergeable_anon_vma.
    """
    mm = vma.vm_mm
    nxt = mm.vma_next(vma)
    if nxt is not None:
        av = reusable_anon_vma(nxt, vma, nxt)
        if av is not None:
            return av
    prev = mm.vma_prev(vma)
    if prev is not None:
        return reusable_anon_vma(prev, prev, vma)
    return None


def anon_vma_prepare(vma: VmArea) -> None:
    """Give ``vma`` a real anon_vma if it has none; raises AllocFailure (-ENOMEM).

    Models include/linux/rmap.h:anon_vma_prepare and mm/rmap.c:__anon_vma_prepare. The
    fast path tests the masked pointer, so a tagged flag-only VMA takes the slow path and
    vma_set_anon_vma() overwrites the flag (RFC patch 1/2).
    """
    if vma._anon_vma is not None:
        return
    k = vma.vm_mm.ctx
    slabs = k.slabs
    slabs.alloc(slabs._avc)  # anon_vma_chain_alloc(GFP_KERNEL) comes first
    try:
        av = find_mergeable_anon_vma(vma)
        if av is None:
            av = anon_vma_alloc(k)
            av.num_children += 1  # self-parent link for new root
    except AllocFailure:
        slabs.free(slabs._avc)
        raise
    vma_set_anon_vma(vma, av)
    avc = AnonVmaChain(vma, av)
    vma.anon_vma_chain.insert(0, avc)
    av.avcs.add(avc)
    av.num_active_vmas += 1


# --- clone, fork, unlink ------------------------------------------------------------


def anon_vma_clone(dst: VmArea, src: VmArea) -> None:
    """Attach ``dst`` to every anon_vma of ``src``; raises AllocFailure after cleanup.

    Models mm/rmap.c:anon_vma_clone, including its reuse rule (only effective from
    anon_vma_fork(), where dst has no anon_vma yet) and its error path.
    """
    k = dst.vm_mm.ctx
    try:
        for pavc in reversed(src.anon_vma_chain):
            av = pavc.anon_vma
            anon_vma_chain_link(k, dst, av)
            # Reuse an existing anon_vma if it has no VMA and only one child. The root is
            # never reused: it has a self-parent reference and at least one child.
            if (
                dst._anon_vma is None
                and src._anon_vma is not None
                and av.num_children < 2
                and av.num_active_vmas == 0
            ):
                dst._anon_vma = av
    except AllocFailure:
        vma_clear_anon_vma(dst)
        unlink_anon_vmas(dst)
        raise
    if dst._anon_vma is not None:
        dst._anon_vma.num_active_vmas += 1


def anon_vma_fork(vma: VmArea, pvma: VmArea) -> None:
    """Give a fork child's VMA its anon_vma chain; raises AllocFailure after cleanup.

    Models mm/rmap.c:anon_vma_fork. It returns early when the parent has no real
    anon_vma, so under the RFC a child of a flag-only parent keeps the flag it inherited
    through vm_area_dup() (designs.md 4.7).
    """
    if pvma._anon_vma is None:
        return
    k = vma.vm_mm.ctx
    vma_clear_anon_vma(vma)  # drop the inherited anon_vma; reuse one or allocate
    anon_vma_clone(vma, pvma)
    if vma._anon_vma is not None:
        return
    try:
        av = anon_vma_alloc(k)
    except AllocFailure:
        unlink_anon_vmas(vma)
        raise
    av.num_active_vmas += 1
    try:
        k.slabs.alloc(k.slabs._avc)
    except AllocFailure:
        av.num_active_vmas -= 1
        put_anon_vma(k, av)
        unlink_anon_vmas(vma)
        raise
    parent = pvma._anon_vma
    av.root = parent.root
    av.parent = parent
    av.root.refcount += 1  # get_anon_vma(root): the root is pinned while av lives
    vma_set_anon_vma(vma, av)
    avc = AnonVmaChain(vma, av)
    vma.anon_vma_chain.insert(0, avc)
    av.avcs.add(avc)
    parent.num_children += 1


def unlink_anon_vmas(vma: VmArea) -> None:
    """Unlink every chain of ``vma`` and free anon_vmas whose tree empties.

    Models mm/rmap.c:unlink_anon_vmas (two passes; the chain list is newest first, so the
    root is freed last). It clears the word only when a real anon_vma was set, so a
    tagged flag-only value survives it (designs.md 4.6).
    """
    k = vma.vm_mm.ctx
    slabs = k.slabs
    empty: list[AnonVmaChain] = []
    for avc in vma.anon_vma_chain:
        av = avc.anon_vma
        av.avcs.discard(avc)
        if not av.avcs:
            av.parent.num_children -= 1
            empty.append(avc)
            continue
        slabs.free(slabs._avc)
    if vma._anon_vma is not None:
        vma._anon_vma.num_active_vmas -= 1
        vma_clear_anon_vma(vma)
    vma.anon_vma_chain = []
    for avc in empty:
        put_anon_vma(k, avc.anon_vma)
        slabs.free(slabs._avc)


def dup_anon_vma(dst: VmArea, src: VmArea) -> bool:
    """On merge, let an unfaulted target adopt the source's anon_vma.

    Models mm/vma.c:dup_anon_vma (RFC form: tests the masked pointers and copies the raw
    word). Returns True if ``dst`` adopted it; raises AllocFailure after cleanup.
    """
    if src._anon_vma is not None and dst._anon_vma is None:
        vma_dup_anon_vma(dst, src)
        anon_vma_clone(dst, src)
        return True
    return False
