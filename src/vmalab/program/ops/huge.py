"""THP ops: ``khugepaged`` (one full khugepaged pass, model only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmalab.program.base import OpBase, register
from vmalab.program.fields import Ctx, int_field

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner

PTRS_PER_PMD_TABLE = 512


@register
@dataclass(frozen=True)
class Khugepaged(OpBase):
    """One full khugepaged pass over the process (``Kernel.khugepaged()``): every
    PMD-aligned range of a VMA allowed THP (``hugepage`` under enabled=madvise) that
    hpage_collapse_scan_pmd() admits under the ``max_ptes_*`` limits is collapsed; the
    result is the number of THPs made. The live runner refuses it: the real khugepaged
    runs in the background every 10 s and cannot be run on demand without changing the
    host's sysfs knobs, so the fuzzer never draws it."""

    max_ptes_none: int = PTRS_PER_PMD_TABLE - 1
    max_ptes_swap: int = PTRS_PER_PMD_TABLE // 8
    max_ptes_shared: int = PTRS_PER_PMD_TABLE // 2
    op: str = "khugepaged"

    @classmethod
    def parse(
        cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int
    ) -> Khugepaged:
        hi = PTRS_PER_PMD_TABLE - 1
        return cls(
            int_field(ctx, d, "max_ptes_none", loc, 0, hi, PTRS_PER_PMD_TABLE - 1),
            int_field(ctx, d, "max_ptes_swap", loc, 0, hi, PTRS_PER_PMD_TABLE // 8),
            int_field(ctx, d, "max_ptes_shared", loc, 0, hi, PTRS_PER_PMD_TABLE // 2),
        )

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        n = r.m.khugepaged(self.max_ptes_none, self.max_ptes_swap, self.max_ptes_shared)
        return {"ret": n}
