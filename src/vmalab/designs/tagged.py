"""tagged: the RFC "mm: introduce anon_vma flags, reduce kernel allocs" as posted
(March 2025; designs.md 4).

ANON_VMA_UNFAULTED lives in bit 0 of the VMA's anon_vma word. The model keeps the pointer
in ``vma.anon_vma`` (mm/) and the flag bits in ``vma.design_state`` (an ``AnonVmaWord``
this design owns), read and written only through the RFC's wrappers below:

* install no longer calls anon_vma_prepare() for any VMA; after the walk, if it counted
  guard pages, vma_set_anon_vma_unfaulted() sets the flag unless a real anon_vma exists;
* every write of the pointer (anon_vma_prepare(), dup_anon_vma(), unlink_anon_vmas(),
  a VM_WIPEONFORK child) overwrites the whole word, so the flag goes (``anon_vma_changed``);
* MADV_GUARD_REMOVE covering the whole VMA clears the flag if no real anon_vma exists;
* split, mremap's copy_vma and fork copy the raw word (``vma_dup``, ``vma_fork_dup``);
  anon_vma_fork() returns early for a flag-only parent, so the child keeps the flag;
* vma_needs_copy() and retract_page_tables() use vma_maybe_has_pagetables(); merge
  checks use the masked pointer, and nothing carries a flag-only word into a merge
  survivor (the RFC is silent there, designs.md 4.10; ``tagged-fixed`` carries it).
"""

from __future__ import annotations

from typing import Final

from vmalab.designs.base import Design
from vmalab.mm.flags import VM_MIXEDMAP, VM_PFNMAP, VM_UFFD_WP
from vmalab.mm.mm_types import DesignState, VmArea

# include/linux/mm_types.h (RFC patch 1/2)
ANON_VMA_UNFAULTED: Final = 1
NUM_ANON_VMA_FLAGS: Final = 1
ANON_VMA_FLAG_MASK: Final = (1 << NUM_ANON_VMA_FLAGS) - 1


class AnonVmaWord(DesignState):
    """The flag bits of the RFC's anon_vma word (never 0: no flags is no state)."""

    __slots__ = ("flags",)

    def __init__(self, flags: int) -> None:
        self.flags = flags


# --- the RFC's accessors ---------------------------------------------------------------


def vma_anon_vma_flags(vma: VmArea) -> int:
    """Only the flag bits of the word. Models the RFC's vma_anon_vma_flags()."""
    st = vma.design_state
    return st.flags if isinstance(st, AnonVmaWord) else 0


def vma_dup_anon_vma_flags(dst: VmArea, src: VmArea) -> None:
    """The flag half of the RFC's vma_dup_anon_vma() (the core copies the pointer)."""
    flags = vma_anon_vma_flags(src)
    dst.design_state = AnonVmaWord(flags) if flags else None


def vma_maybe_has_pagetables(vma: VmArea) -> bool:
    """Raw word non-zero: a real anon_vma or any flag.

    Models the RFC's vma_maybe_has_pagetables() ("page tables may need propagating").
    """
    return vma.anon_vma is not None or vma_anon_vma_flags(vma) != 0


def vma_set_anon_vma_unfaulted(vma: VmArea) -> None:
    """Set ANON_VMA_UNFAULTED if there is no real anon_vma.

    Models the RFC's mm/vma.c:vma_set_anon_vma_unfaulted() (through
    vma_set_anon_vma_if_unset(), serialised by mm->page_table_lock in the kernel).
    """
    if vma.anon_vma is None:
        vma.design_state = AnonVmaWord(ANON_VMA_UNFAULTED)


def vma_clear_anon_vma_unfaulted(vma: VmArea) -> None:
    """Write 0 if there is still no real anon_vma.

    Models the RFC's mm/vma.c:vma_clear_anon_vma_unfaulted().
    """
    if vma.anon_vma is None:
        vma.design_state = None


class Tagged(Design):
    """ANON_VMA_UNFAULTED in the low bit of vma->anon_vma."""

    name = "tagged"
    summary = "the RFC: ANON_VMA_UNFAULTED flag in bit 0 of vma->anon_vma"

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        """Models the RFC's madvise_guard_install.

        ``if (nr_pages > 0) vma_set_anon_vma_unfaulted(vma)`` after the walk.
        """
        if nr_pages > 0:
            vma_set_anon_vma_unfaulted(vma)

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        """Models the RFC's madvise_guard_remove: clear the flag on a whole-VMA remove."""
        if start == vma.vm_start and end == vma.vm_end:
            vma_clear_anon_vma_unfaulted(vma)

    def anon_vma_changed(self, vma: VmArea) -> None:
        """The RFC's vma_set_anon_vma()/vma_clear_anon_vma() write the whole word."""
        vma.design_state = None

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        """vm_area_init_from() copies the raw word (the RFC's vma_dup_anon_vma())."""
        vma_dup_anon_vma_flags(new, old)

    def vma_fork_dup(self, child: VmArea, parent: VmArea) -> None:
        """dup_mmap()'s vm_area_dup() copies the raw word, flags included."""
        vma_dup_anon_vma_flags(child, parent)

    def vma_free(self, vma: VmArea) -> None:
        """The word goes with the VMA."""
        vma.design_state = None

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Models the RFC's vma_needs_copy: ``src->anon_vma`` becomes vma_maybe_has_pagetables()."""
        return bool(
            dst.vm_flags & VM_UFFD_WP or src.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)
        ) or vma_maybe_has_pagetables(src)

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Models the RFC's retract_page_tables: skip if vma_maybe_has_pagetables()."""
        return not vma_maybe_has_pagetables(vma) and not vma.vm_flags & VM_UFFD_WP

    def anon_vma_flags(self, vma: VmArea) -> int:
        """The word's flag bits (vma_anon_vma_flags())."""
        return vma_anon_vma_flags(vma)

    def check_vma(self, vma: VmArea) -> str | None:
        """The word holds flags only while no real anon_vma exists."""
        if vma.design_state is not None:
            if not isinstance(vma.design_state, AnonVmaWord) or not vma.design_state.flags:
                return "design state that is not a flag word"
            if vma.anon_vma is not None:
                return "flag bits with a real anon_vma"
        return None
