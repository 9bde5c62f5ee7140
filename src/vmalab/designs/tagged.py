"""tagged: the RFC "mm: introduce anon_vma flags, reduce kernel allocs" as posted
(March 2025; designs.md 4).

ANON_VMA_UNFAULTED lives in bit 0 of the VMA's anon_vma word, accessed only through the
RFC's wrappers in ``vmalab.mm.rmap``:

* install no longer calls anon_vma_prepare() for any VMA; after the walk, if it counted
  guard pages, vma_set_anon_vma_unfaulted() sets the flag unless a real anon_vma exists;
* anon_vma_prepare() replaces the flag with a real pointer (the wrappers do that);
* MADV_GUARD_REMOVE covering the whole VMA clears the flag if no real anon_vma exists;
* split and fork copy the raw word; anon_vma_fork() returns early for a flag-only
  parent, so the child keeps the flag;
* vma_needs_copy() and retract_page_tables() use vma_maybe_has_pagetables(); merge
  checks use the masked pointer, and nothing carries a flag-only word into a merge
  survivor (the RFC is silent there, designs.md 4.10).
"""

from __future__ import annotations

from vmalab.designs.base import Design
from vmalab.mm import rmap
from vmalab.mm.flags import VM_MIXEDMAP, VM_PFNMAP, VM_UFFD_WP
from vmalab.mm.mm_types import VmArea


class Tagged(Design):
    """ANON_VMA_UNFAULTED in the low bit of vma->anon_vma."""

    name = "tagged"
    summary = "the RFC: ANON_VMA_UNFAULTED flag in bit 0 of vma->anon_vma"

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        """Models the RFC's madvise_guard_install.

        ``if (nr_pages > 0) vma_set_anon_vma_unfaulted(vma)`` after the walk.
        """
        if nr_pages > 0:
            rmap.vma_set_anon_vma_unfaulted(vma)

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        """Models the RFC's madvise_guard_remove: clear the flag on a whole-VMA remove."""
        if start == vma.vm_start and end == vma.vm_end:
            rmap.vma_clear_anon_vma_unfaulted(vma)

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Models the RFC's vma_needs_copy: ``src->anon_vma`` becomes vma_maybe_has_pagetables()."""
        return bool(
            dst.vm_flags & VM_UFFD_WP or src.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)
        ) or rmap.vma_maybe_has_pagetables(src)

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Models the RFC's retract_page_tables: skip if vma_maybe_has_pagetables()."""
        return not rmap.vma_maybe_has_pagetables(vma) and not vma.vm_flags & VM_UFFD_WP
