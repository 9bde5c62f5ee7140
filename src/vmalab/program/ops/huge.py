"""THP ops: ``khugepaged`` (one full khugepaged pass, model only)."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab.program.base import OpBase
from vmalab.program.fields import Int

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner

# khugepaged_init()'s sysfs defaults for 512-entry PTE tables (mm/khugepaged.py:CollapseControl)
MAX_PTES_NONE = 511
MAX_PTES_SWAP = 64
MAX_PTES_SHARED = 256
MAX_PTES = Int(0, MAX_PTES_NONE)
"""Each limit counts entries of one PTE table, at most 511."""


class Khugepaged(OpBase, op="khugepaged"):
    """One full khugepaged pass over the process (``Kernel.khugepaged()``): every
    PMD-aligned range of a VMA allowed THP (``hugepage`` under enabled=madvise) that
    hpage_collapse_scan_pmd() admits under the ``max_ptes_*`` limits is collapsed; the
    result is the number of THPs made. The live runner refuses it: the real khugepaged
    runs in the background every 10 s and cannot be run on demand without changing the
    host's sysfs knobs, so the fuzzer never draws it."""

    max_ptes_none: int = field(default=MAX_PTES_NONE, metadata=MAX_PTES)
    max_ptes_swap: int = field(default=MAX_PTES_SWAP, metadata=MAX_PTES)
    max_ptes_shared: int = field(default=MAX_PTES_SHARED, metadata=MAX_PTES)

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        n = r.m.khugepaged(self.max_ptes_none, self.max_ptes_swap, self.max_ptes_shared)
        return {"ret": n}
