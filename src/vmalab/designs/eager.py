"""eager: Linux 6.15 to 6.18. Guard install calls anon_vma_prepare() on every VMA kind,
so that vma_needs_copy() sees an anon_vma and fork copies the markers (designs.md 3).
"""

from __future__ import annotations

from vmalab.designs.base import Design
from vmalab.mm.mm_types import VmArea


class Eager(Design):
    """anon_vma_prepare() on every guard install."""

    name = "eager"
    summary = "Linux 6.15-6.18: guard install calls anon_vma_prepare() on every VMA"

    def guard_install_prepare(self, vma: VmArea) -> None:
        """Models mm/madvise.c:madvise_guard_install (v6.17): unconditional anon_vma_prepare."""
        self.anon_vma_prepare(vma)
