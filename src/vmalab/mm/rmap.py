"""anon_vma and anon_vma_chain management.

Models mm/rmap.c (anon_vma_prepare, anon_vma_clone, anon_vma_fork, unlink_anon_vmas,
put_anon_vma) and mm/vma.c's anon_vma helpers (anon_vma_compatible,
find_mergeable_anon_vma, dup_anon_vma). A write of ``vma->anon_vma`` on a live VMA goes
through :func:`vma_set_anon_vma`, which tells the design; the RFC's flag bits and their
accessors live in ``vmalab.designs.tagged``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmalab.mm.flags import VM_ACCESS_FLAGS
from vmalab.mm.mm_types import AVCS_LIST_MAX, AnonVma, AnonVmaChain, VmArea
from vmalab.mm.slab import AllocFailure

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmContext

# --- writing vma->anon_vma -----------------------------------------------------------


def vma_set_anon_vma(vma: VmArea, anon_vma: AnonVma | None) -> None:
    """``vma->anon_vma = anon_vma``, then the design's ``anon_vma_changed`` hook.

    Every write of the pointer on a live VMA goes through here (or
    :func:`vma_clear_anon_vma`), so a design that keeps state beside the pointer (the
    RFC's flag bits, which share its word) sees each one.
    """
    vma.anon_vma = anon_vma
    ctx = vma.vm_mm.ctx
    if ctx.hooked_anon_vma_changed:
        ctx.design.anon_vma_changed(vma)


def vma_clear_anon_vma(vma: VmArea) -> None:
    """``vma->anon_vma = NULL``, then the design's ``anon_vma_changed`` hook."""
    vma_set_anon_vma(vma, None)


# --- the two lists: anon_vma->rb_root and vma->anon_vma_chain ----------------------


def avcs_add(av: AnonVma, avc: AnonVmaChain) -> None:
    """Insert ``avc`` into ``av``'s tree. Models anon_vma_interval_tree_insert (the
    container forms are ``AnonVma``'s)."""
    avcs = av.avcs
    if isinstance(avcs, list):
        # A new list of exactly the new length (at most AVCS_LIST_MAX + 1 copies), not
        # append()'s over-allocated one: after a fork every parent anon_vma has a list
        # of two, which append() would give room for eight (host memory, not the
        # kernel's). A literal and ``+`` allocate exactly; a star display such as
        # ``[*avcs, avc]`` extends and appends once compiled, over-allocating.
        n = len(avcs)
        if n < AVCS_LIST_MAX:
            av.avcs = [avcs[0], avc] if n == 1 else avcs + [avc]
        else:
            av.avcs = {*avcs, avc}
    elif isinstance(avcs, set):
        avcs.add(avc)
    else:
        av.avcs = [avc]


def avcs_remove(av: AnonVma, avc: AnonVmaChain) -> None:
    """Remove ``avc`` from ``av``'s tree if there. Models anon_vma_interval_tree_remove."""
    avcs = av.avcs
    if isinstance(avcs, list):
        try:
            avcs.remove(avc)
        except ValueError:
            pass
        if not avcs:
            av.avcs = ()
    elif isinstance(avcs, set):
        avcs.discard(avc)


def chain_add(vma: VmArea, avc: AnonVmaChain) -> None:
    """``list_add(&avc->same_vma, &vma->anon_vma_chain)``: the new chain goes first.

    The list is rebuilt at its exact length rather than grown by ``insert(0, ...)``,
    which would leave room for eight (a chain of two: 72 B, not 120 B; both move
    every element); see avcs_add() for the forms that allocate exactly."""
    chain = vma.anon_vma_chain
    if isinstance(chain, list) and chain:
        vma.anon_vma_chain = [avc, chain[0]] if len(chain) == 1 else [avc] + chain
    else:
        vma.anon_vma_chain = [avc]


def _slots(first: AnonVmaChain, n: int) -> list[AnonVmaChain]:
    """A new list of ``n`` >= 1 slots, each ``first`` until the caller fills it,
    allocated at exactly that length (host memory: see avcs_add())."""
    if n == 1:
        return [first]
    if n == 2:
        return [first, first]
    return [first] * n


# --- allocation ---------------------------------------------------------------------


def anon_vma_alloc(k: MmContext) -> AnonVma:
    """Allocate an anon_vma: refcount 1, parent = root = itself. Models mm/rmap.c:anon_vma_alloc."""
    k.slabs.alloc(k.slabs.anon_vma_cachep)
    k.anon_vma_seq += 1
    av = AnonVma(k.anon_vma_seq)
    k.anon_vmas[av.id] = av
    return av


def anon_vma_free(k: MmContext, av: AnonVma) -> None:
    """Models mm/rmap.c:anon_vma_free."""
    del k.anon_vmas[av.id]
    k.slabs.free(k.slabs.anon_vma_cachep)


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


# --- anon_vma_prepare ------------------------------------------------------------------


def anon_vma_compatible(a: VmArea, b: VmArea) -> bool:
    """Whether b's anon_vma could serve a. Models mm/vma.c:anon_vma_compatible (6.19).

    VM_IGNORE_MERGE is the design's (VM_STICKY from 6.19 and 6.18.y, VM_SOFTDIRTY before).
    """
    ignore = a.vm_mm.ctx.design.vm_ignore_merge
    return (
        a.vm_end == b.vm_start
        and a.vm_policy == b.vm_policy
        and a.vm_file is b.vm_file
        and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | ignore))
        and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> 12)
    )


def reusable_anon_vma(old: VmArea, a: VmArea, b: VmArea) -> AnonVma | None:
    """Models mm/vma.c:reusable_anon_vma: old's anon_vma if compatible and not forked."""
    if anon_vma_compatible(a, b):
        av = old.anon_vma
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
    slow path writes the pointer through vma_set_anon_vma(), which tells the design
    (under the RFC that write replaces the flag bits sharing the word).
    """
    if vma.anon_vma is not None:
        return
    k = vma.vm_mm.ctx
    slabs = k.slabs
    slabs.alloc(slabs.anon_vma_chain_cachep)  # anon_vma_chain_alloc(GFP_KERNEL) comes first
    try:
        av = find_mergeable_anon_vma(vma)
        if av is None:
            av = anon_vma_alloc(k)
            av.num_children += 1  # self-parent link for new root
    except AllocFailure:
        slabs.free(slabs.anon_vma_chain_cachep)
        raise
    vma_set_anon_vma(vma, av)
    avc = AnonVmaChain(vma, av)
    chain_add(vma, avc)
    avcs_add(av, avc)
    av.num_active_vmas += 1


# --- clone, fork, unlink ------------------------------------------------------------


def _clone_links(k: MmContext, dst: VmArea, src: VmArea, room: int) -> list[AnonVmaChain]:
    """anon_vma_clone()'s loop: one new chain per chain of ``src``, each allocated
    (anon_vma_chain_alloc) and inserted into its anon_vma's tree (anon_vma_chain_link),
    with the reuse rule (only effective from anon_vma_fork(), where ``dst`` has no
    anon_vma yet). Returns them as ``dst``'s chain list, in the order list_add() leaves
    them (the same as ``src``'s), after ``room`` leading slots for the caller to fill;
    ``[]`` when ``src`` has no chain. The caller stores the list on ``dst`` (one list
    built, at its final length). Raises AllocFailure once ``dst`` has the chains linked
    so far and unlink_anon_vmas() has taken them back (anon_vma_clone's error path).
    """
    chain = src.anon_vma_chain
    if not isinstance(chain, list) or not chain:
        return []
    n = len(chain)
    out: list[AnonVmaChain] = []
    slabs = k.slabs
    for i in range(n - 1, -1, -1):  # list_for_each_entry_reverse(pavc, &src->anon_vma_chain)
        av = chain[i].anon_vma
        try:
            slabs.alloc(slabs.anon_vma_chain_cachep)
        except AllocFailure:
            if out:
                old = dst.anon_vma_chain
                dst.anon_vma_chain = out[room + i + 1 :] + (old if isinstance(old, list) else [])
            vma_clear_anon_vma(dst)
            unlink_anon_vmas(dst)
            raise
        avc = AnonVmaChain(dst, av)
        if not out:
            out = _slots(avc, n + room)
        out[room + i] = avc  # list_add(): at the head of what is linked so far
        avcs_add(av, avc)
        # Reuse an existing anon_vma if it has no VMA and only one child. The root is
        # never reused: it has a self-parent reference and at least one child.
        if (
            dst.anon_vma is None
            and src.anon_vma is not None
            and av.num_children < 2
            and av.num_active_vmas == 0
        ):
            vma_set_anon_vma(dst, av)
    return out


def anon_vma_clone(dst: VmArea, src: VmArea) -> None:
    """Attach ``dst`` to every anon_vma of ``src``; raises AllocFailure after cleanup.

    Models mm/rmap.c:anon_vma_clone, including its reuse rule (only effective from
    anon_vma_fork(), where dst has no anon_vma yet) and its error path.
    """
    links = _clone_links(dst.vm_mm.ctx, dst, src, 0)
    if links:
        old = dst.anon_vma_chain
        dst.anon_vma_chain = links + old if isinstance(old, list) and old else links
    if dst.anon_vma is not None:
        dst.anon_vma.num_active_vmas += 1


def anon_vma_fork(vma: VmArea, pvma: VmArea) -> None:
    """Give a fork child's VMA its anon_vma chain; raises AllocFailure after cleanup.

    Models mm/rmap.c:anon_vma_fork: anon_vma_clone() of the parent's chain (here its
    loop, ``_clone_links``, leaving the first slot of the child's chain list for the
    child's own chain), then, unless an anon_vma was reused, a new anon_vma whose
    parent is the parent VMA's and whose chain goes first (list_add). It returns early
    when the parent has no real anon_vma, so whatever design state the child inherited
    through the design's fork hook stays (under the RFC, a flag-only parent's flag:
    designs.md 4.7).
    """
    parent = pvma.anon_vma
    if parent is None:
        return
    k = vma.vm_mm.ctx
    vma_clear_anon_vma(vma)  # drop the inherited anon_vma; reuse one or allocate
    links = _clone_links(k, vma, pvma, 1)  # slot 0: this VMA's own chain, below
    reused = vma.anon_vma
    if reused is not None:  # anon_vma_clone() reused one: all done
        vma.anon_vma_chain = links[1:]
        reused.num_active_vmas += 1
        return
    try:
        av = anon_vma_alloc(k)
    except AllocFailure:
        _unlink_clones(vma, links)
        raise
    av.num_active_vmas += 1
    try:
        k.slabs.alloc(k.slabs.anon_vma_chain_cachep)
    except AllocFailure:
        av.num_active_vmas -= 1
        put_anon_vma(k, av)
        _unlink_clones(vma, links)
        raise
    av.root = parent.root
    av.parent = parent
    av.root.refcount += 1  # get_anon_vma(root): the root is pinned while av lives
    vma_set_anon_vma(vma, av)
    avc = AnonVmaChain(vma, av)
    if links:
        links[0] = avc  # anon_vma_chain_link(): list_add() puts it first
        vma.anon_vma_chain = links
    else:
        vma.anon_vma_chain = [avc]
    avcs_add(av, avc)
    parent.num_children += 1


def _unlink_clones(vma: VmArea, links: list[AnonVmaChain]) -> None:
    """anon_vma_fork()'s ``out_error``: ``vma``'s chain is the clones (``links`` past
    its first slot), which unlink_anon_vmas() takes back."""
    if len(links) > 1:
        vma.anon_vma_chain = links[1:]
    unlink_anon_vmas(vma)


def unlink_anon_vmas(vma: VmArea) -> None:
    """Unlink every chain of ``vma`` and free anon_vmas whose tree empties.

    Models mm/rmap.c:unlink_anon_vmas (two passes; the chain list is newest first, so the
    root is freed last). It clears the pointer only when a real anon_vma was set, so the
    design hears nothing for a VMA without one (the RFC's flag-only word survives it,
    designs.md 4.6).
    """
    k = vma.vm_mm.ctx
    slabs = k.slabs
    empty: list[AnonVmaChain] = []
    for avc in vma.anon_vma_chain:
        av = avc.anon_vma
        avcs_remove(av, avc)
        if not av.avcs:
            av.parent.num_children -= 1
            empty.append(avc)
            continue
        slabs.free(slabs.anon_vma_chain_cachep)
    if vma.anon_vma is not None:
        vma.anon_vma.num_active_vmas -= 1
        vma_clear_anon_vma(vma)
    vma.anon_vma_chain = ()
    for avc in empty:
        put_anon_vma(k, avc.anon_vma)
        slabs.free(slabs.anon_vma_chain_cachep)


def dup_anon_vma(dst: VmArea, src: VmArea) -> bool:
    """On merge, let an unfaulted target adopt the source's anon_vma.

    Models mm/vma.c:dup_anon_vma. Returns True if ``dst`` adopted it; raises
    AllocFailure after cleanup (``dst`` has no anon_vma again).
    """
    if src.anon_vma is not None and dst.anon_vma is None:
        vma_set_anon_vma(dst, src.anon_vma)
        anon_vma_clone(dst, src)
        return True
    return False
