"""tagged-fixed: the RFC with its merge gap closed (a vmalab variant, not a posted patch).

The RFC as posted (``tagged``) loses ANON_VMA_UNFAULTED when a merge makes another VMA
cover a flag-only VMA's range: the flag is not carried into the survivor, so markers now
inside it are not copied at the next fork (docs/findings.md, finding F1; designs.md 4.10).
This variant ORs the flag into the survivor whenever it takes over part or all of a
flagged VMA's range, exactly as the sticky design ORs VM_STICKY bits, and is otherwise
the RFC.
"""

from __future__ import annotations

from vmalab.designs.tagged import (
    ANON_VMA_UNFAULTED,
    Tagged,
    vma_anon_vma_flags,
    vma_set_anon_vma_unfaulted,
)
from vmalab.mm.mm_types import VmArea


class TaggedFixed(Tagged):
    """The RFC plus propagation of ANON_VMA_UNFAULTED on merge."""

    name = "tagged-fixed"
    summary = "vmalab variant: the RFC, with ANON_VMA_UNFAULTED carried into merge survivors"

    def vma_merge(self, target: VmArea, src: VmArea) -> None:
        """Carry a flag-only word into the survivor (vma_set_anon_vma_unfaulted semantics)."""
        if vma_anon_vma_flags(src) & ANON_VMA_UNFAULTED:
            vma_set_anon_vma_unfaulted(target)
