"""sticky: Linux 6.19 and the 6.18.y backport, "introduce VM_MAYBE_GUARD and make it
sticky" (designs.md 6).

* install sets VM_MAYBE_GUARD on the whole VMA before any page table is touched, and
  calls anon_vma_prepare() only for anonymous VMAs (49e14dabed7a);
* VM_STICKY = VM_SOFTDIRTY | VM_MAYBE_GUARD is ORed into merge survivors and
  VM_IGNORE_MERGE = VM_STICKY (64212ba02e66, 6707915e030a);
* vma_needs_copy() tests ``dst->vm_flags & VM_COPY_ON_FORK`` (ab04b530e7e8 with the
  fix 35e247032606);
* file_backed_vma_is_retractable() refuses VMAs with VM_MAYBE_GUARD;
* the flag is never cleared, and smaps shows it as "gu".
"""

from __future__ import annotations

from typing import Final

from vmalab.designs.base import Design
from vmalab.mm.flags import VM_MAYBE_GUARD, VM_MIXEDMAP, VM_PFNMAP, VM_SOFTDIRTY, VM_UFFD_WP
from vmalab.mm.mm_types import VmArea

# include/linux/mm.h (6.19, 6.18.y); mm/ takes these from the design (vm_sticky,
# vm_ignore_merge), so a <= 6.18 design merges as those kernels do.
VM_STICKY: Final = VM_SOFTDIRTY | VM_MAYBE_GUARD
VM_IGNORE_MERGE: Final = VM_STICKY
VM_COPY_ON_FORK: Final = VM_PFNMAP | VM_MIXEDMAP | VM_UFFD_WP | VM_MAYBE_GUARD


class Sticky(Design):
    """VM_MAYBE_GUARD, a sticky copy-on-fork VMA flag."""

    name = "sticky"
    summary = "Linux 6.19 / 6.18.y: sticky VM_MAYBE_GUARD, anon_vma only for anonymous VMAs"
    vm_sticky = VM_STICKY
    vm_ignore_merge = VM_IGNORE_MERGE

    def guard_install_prepare(self, vma: VmArea) -> None:
        """Models mm/madvise.c:madvise_guard_install (49e14dabed7a).

        vma_flag_set_atomic(vma, VM_MAYBE_GUARD_BIT), then anon_vma_prepare() if
        vma_is_anonymous(vma).
        """
        vma.vm_flags |= VM_MAYBE_GUARD
        if vma.is_anonymous():
            self.anon_vma_prepare(vma)

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Models mm/memory.c:vma_needs_copy after 35e247032606."""
        return bool(dst.vm_flags & VM_COPY_ON_FORK) or src.anon_vma is not None

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Models mm/khugepaged.c:file_backed_vma_is_retractable (49e14dabed7a)."""
        return (
            vma.anon_vma is None
            and not vma.vm_flags & VM_UFFD_WP
            and not vma.vm_flags & VM_MAYBE_GUARD
        )
