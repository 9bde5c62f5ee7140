"""lossy: the negative control. Guard markers are installed with neither an anon_vma nor
a flag, so fork drops them wherever the VMA has no anon_vma (designs.md section 8).

Every hook keeps the base class default, which is the kernel with no guard bookkeeping.
"""

from __future__ import annotations

from vmalab.designs.base import Design


class Lossy(Design):
    """Markers only; nothing tells fork to copy them."""

    name = "lossy"
    summary = "negative control: markers with neither anon_vma nor flag (fork loses them)"
