"""vmalab: an executable model of the Linux kernel's VMA layer.

Guard regions (MADV_GUARD_INSTALL/REMOVE), anon_vma and anon_vma_chain, page tables,
faults, fork and exit, with the ways of remembering guard state compared as pluggable
designs (``DESIGNS``). See docs/api-contract.md for the public surface.
"""

from __future__ import annotations

from vmalab import uapi
from vmalab.budget import Budget
from vmalab.designs import DESIGNS
from vmalab.errors import InvariantError, ResourceLimitError, SegmentationFault
from vmalab.kernel import Kernel
from vmalab.mm.mm_types import PAGE_SIZE
from vmalab.mm.slab import FailPolicy, SlabStats
from vmalab.proc import VmaView
from vmalab.process import Process
from vmalab.trace.replay import replay

__all__ = [
    "DESIGNS",
    "PAGE_SIZE",
    "Budget",
    "FailPolicy",
    "InvariantError",
    "Kernel",
    "Process",
    "ResourceLimitError",
    "SegmentationFault",
    "SlabStats",
    "VmaView",
    "replay",
    "uapi",
]
