"""The narrow interface every design implements: the named hook points of the core.

A design decides how a kernel remembers that a VMA's page tables may hold guard markers
which fork must copy. The core (``vmalab.mm``) consults the active design only at these
points (``vmalab.mm.mm_types.DesignHooks``):

=========================  =================================================================
hook                       called from
=========================  =================================================================
``guard_install_prepare``  mm/madvise.c:madvise_guard_install, before the marker walk
``guard_install_done``     madvise_guard_install, after the walk (``nr_pages`` counted)
``guard_remove_done``      mm/madvise.c:madvise_guard_remove, after the walk
``anon_vma_prepare``       every caller of anon_vma_prepare()/vmf_anon_prepare()
``anon_vma_changed``       mm/rmap.c, after each write of ``vma->anon_vma`` on a VMA
``vma_needs_copy``         mm/memory.c:copy_page_range via vma_needs_copy()
``vm_sticky``              mm/vma.c merges: flags ORed into the survivor (VM_STICKY)
``vm_ignore_merge``        mm/vma.c:is_mergeable_vma: flags a merge may differ in
``vma_merge``              mm/vma.c merges: the survivor takes over (part of) a VMA's range
``vma_dup``                mm/vma.c:__split_vma and copy_vma (vm_area_dup of a split/move)
``vma_fork_dup``           mm/mmap.c:dup_mmap (vm_area_dup of each copied VMA)
``vma_free``               mm/vma_init.c:vm_area_free
``file_vma_retractable``   mm/khugepaged.c:retract_page_tables
``anon_vma_flags``         /proc and ``VmaView.anon_vma_flags`` (the RFC's word bits)
``check_vma``              ``Kernel.check()``: the design's own invariants of one VMA
=========================  =================================================================

A design that needs per-VMA state keeps it in ``vma.design_state`` (a subclass of
``vmalab.mm.mm_types.DesignState``; None by default) and maintains it in ``vma_dup``,
``vma_fork_dup``, ``vma_merge`` and ``vma_free``: the core copies nothing of it.

The defaults are the Linux 6.15-6.18 kernel's behaviour without any guard bookkeeping,
which is exactly the ``lossy`` negative control; each design overrides what it changes.
Adding a design means adding one module to ``vmalab.designs`` that defines a subclass
with a unique ``name``; nothing in the core changes.
"""

from __future__ import annotations

from typing import ClassVar

from mypy_extensions import mypyc_attr

from vmalab.mm import rmap
from vmalab.mm.flags import VM_MIXEDMAP, VM_PFNMAP, VM_SOFTDIRTY, VM_UFFD_WP
from vmalab.mm.mm_types import VmArea


@mypyc_attr(allow_interpreted_subclasses=True)  # plugin designs subclass it
class Design:
    """Base class of the designs; see the module docstring for the hook table."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: Flags ORed into the survivor of a merge (include/linux/mm.h VM_STICKY).
    vm_sticky: ClassVar[int] = 0
    #: Flags a merge ignores (VM_IGNORE_MERGE; <= 6.18 this is VM_SOFTDIRTY alone).
    vm_ignore_merge: ClassVar[int] = VM_SOFTDIRTY

    def guard_install_prepare(self, vma: VmArea) -> None:
        """Record state before markers are written; may raise AllocFailure (-ENOMEM)."""

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        """Record state after a walk that counted ``nr_pages`` guard pages in the range."""

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        """Forget state after markers were removed from [start, end) of ``vma``."""

    def anon_vma_prepare(self, vma: VmArea) -> None:
        """Give ``vma`` a real anon_vma. Models include/linux/rmap.h:anon_vma_prepare."""
        rmap.anon_vma_prepare(vma)

    def anon_vma_changed(self, vma: VmArea) -> None:
        """``vma->anon_vma`` was written (mm/rmap.c: a real anon_vma, or NULL)."""

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Whether fork copies ``src``'s page tables. Models mm/memory.c:vma_needs_copy (<= 6.18).

        ``userfaultfd_wp(dst_vma) || src_vma->vm_flags & (VM_PFNMAP | VM_MIXEDMAP) ||
        src_vma->anon_vma``.
        """
        return bool(dst.vm_flags & VM_UFFD_WP or src.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)) or (
            src.anon_vma is not None
        )

    def vma_merge(self, target: VmArea, src: VmArea) -> None:
        """A merge makes ``target`` cover (part of) ``src``'s range and page tables.

        Called when a merge removes ``src`` (before vm_area_free), when it grows
        ``target`` over part of ``src`` (vma_merge_existing_range's shrink cases), and
        when copy_vma() merges a moved VMA into a neighbour. Mainline carries nothing
        over beyond the anon_vma (dup_anon_vma) and the sticky flags, which the core
        handles.
        """

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        """``new`` is vm_area_dup(``old``) for a split (mm/vma.c:__split_vma) or a move
        (mm/vma.c:copy_vma); the core copied the kernel's fields, anon_vma included
        (mm/vma_init.c:vm_area_init_from), and leaves ``new.design_state`` None."""

    def vma_fork_dup(self, child: VmArea, parent: VmArea) -> None:
        """``child`` is mm/mmap.c:dup_mmap's vm_area_dup(``parent``). Called before the
        core clears a VM_WIPEONFORK child's anon_vma or runs anon_vma_fork()."""

    def vma_free(self, vma: VmArea) -> None:
        """``vma`` is about to be freed (mm/vma_init.c:vm_area_free): drop its state."""

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Whether retract_page_tables() may retract ``vma``'s PTE table (<= 6.18 rule).

        Models mm/khugepaged.c:retract_page_tables' ``!vma->anon_vma &&
        !userfaultfd_wp(vma)`` test.
        """
        return vma.anon_vma is None and not vma.vm_flags & VM_UFFD_WP

    def anon_vma_flags(self, vma: VmArea) -> int:
        """The flag bits the design keeps in ``vma``'s anon_vma word (0 in mainline)."""
        return 0

    def check_vma(self, vma: VmArea) -> str | None:
        """A violated invariant of the design's state of ``vma``, or None."""
        return None

    def __repr__(self) -> str:
        return f"<design {self.name}>"
