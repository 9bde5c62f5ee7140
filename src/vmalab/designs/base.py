"""The narrow interface every design implements: the named hook points of the core.

A design decides how a kernel remembers that a VMA's page tables may hold guard markers
which fork must copy. The core (``vmalab.mm``) consults the active design only at these
points:

=========================  =================================================================
hook                       called from
=========================  =================================================================
``guard_install_prepare``  mm/madvise.c:madvise_guard_install, before the marker walk
``guard_install_done``     madvise_guard_install, after the walk (``nr_pages`` counted)
``guard_remove_done``      mm/madvise.c:madvise_guard_remove, after the walk
``anon_vma_prepare``       every caller of anon_vma_prepare()/vmf_anon_prepare()
``vma_needs_copy``         mm/memory.c:copy_page_range via vma_needs_copy()
``vm_sticky``              mm/vma.c merges: flags ORed into the survivor (VM_STICKY)
``vm_ignore_merge``        mm/vma.c:is_mergeable_vma: flags a merge may differ in
``merge_anon_vma_word``    mm/vma.c merges: the survivor takes over (part of) a VMA's range
``split_anon_vma_word``    mm/vma.c:__split_vma (vm_area_dup of the new part)
``fork_anon_vma_word``     mm/mmap.c:dup_mmap, for each copied VMA
``file_vma_retractable``   mm/khugepaged.c:retract_page_tables
=========================  =================================================================

The defaults are the Linux 6.15-6.18 kernel's behaviour without any guard bookkeeping,
which is exactly the ``lossy`` negative control; each design overrides what it changes.
Adding a design means adding one module to ``vmalab.designs`` that defines a subclass
with a unique ``name``; nothing in the core changes.
"""

from __future__ import annotations

from typing import ClassVar

from vmalab.mm import rmap
from vmalab.mm.flags import VM_MIXEDMAP, VM_PFNMAP, VM_SOFTDIRTY, VM_UFFD_WP
from vmalab.mm.mm_types import VmArea


class Design:
    """Base class of the designs; see the module docstring for the hook table."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: Flags ORed into the survivor of a merge (include/linux/mm.h VM_STICKY).
    vm_sticky: ClassVar[int] = 0
    #: Flags a merge ignores (VM_IGNORE_MERGE; <= 6.18 this is VM_SOFTDIRTY alone).
    vm_ignore_merge: ClassVar[int] = VM_SOFTDIRTY
    #: Whether the design is expected to keep guard markers across fork.
    preserves_guards_on_fork: ClassVar[bool] = True

    def guard_install_prepare(self, vma: VmArea) -> None:
        """Record state before markers are written; may raise AllocFailure (-ENOMEM)."""

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        """Record state after a walk that counted ``nr_pages`` guard pages in the range."""

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        """Forget state after markers were removed from [start, end) of ``vma``."""

    def anon_vma_prepare(self, vma: VmArea) -> None:
        """Give ``vma`` a real anon_vma. Models include/linux/rmap.h:anon_vma_prepare."""
        rmap.anon_vma_prepare(vma)

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Whether fork copies ``src``'s page tables. Models mm/memory.c:vma_needs_copy (<= 6.18).

        ``userfaultfd_wp(dst_vma) || src_vma->vm_flags & (VM_PFNMAP | VM_MIXEDMAP) ||
        src_vma->anon_vma``.
        """
        return bool(dst.vm_flags & VM_UFFD_WP or src.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)) or (
            rmap.vma_anon_vma(src) is not None
        )

    def merge_anon_vma_word(self, target: VmArea, src: VmArea) -> None:
        """A merge makes ``target`` cover (part of) ``src``'s range and page tables.

        Called when a merge removes ``src``, when it grows ``target`` over part of
        ``src`` (vma_merge_existing_range's shrink cases), and when copy_vma() merges a
        moved VMA into a neighbour. Mainline carries nothing over beyond the anon_vma
        (dup_anon_vma) and the sticky flags, which the core handles.
        """

    def split_anon_vma_word(self, new: VmArea, old: VmArea) -> None:
        """vm_area_dup() of a split copies the raw word. Models mm/vma_init.c:vm_area_init_from."""
        rmap.vma_dup_anon_vma(new, old)

    def fork_anon_vma_word(self, child: VmArea, parent: VmArea, wipe: bool) -> None:
        """The child's word before anon_vma_fork(): a raw copy, cleared for VM_WIPEONFORK.

        Models mm/vma_init.c:vm_area_init_from and dup_mmap()'s ``tmp->anon_vma = NULL``.
        """
        if wipe:
            rmap.vma_clear_anon_vma(child)
        else:
            rmap.vma_dup_anon_vma(child, parent)

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Whether retract_page_tables() may retract ``vma``'s PTE table (<= 6.18 rule).

        Models mm/khugepaged.c:retract_page_tables' ``!vma->anon_vma &&
        !userfaultfd_wp(vma)`` test.
        """
        return rmap.vma_anon_vma(vma) is None and not vma.vm_flags & VM_UFFD_WP

    def __repr__(self) -> str:
        return f"<design {self.name}>"
