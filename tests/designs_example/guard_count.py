"""guard-count: a design with per-VMA state, written as one file without touching mm/.

Each VMA that ever had guard markers installed carries a ``GuardCount`` in
``vma.design_state``: an upper bound on the guard markers its page tables hold, 0 only
when they hold none (after a MADV_GUARD_REMOVE of the whole VMA). The design keeps it
through every event the core reports:

* install adds the pages the walk wrote (``guard_install_done``);
* a split or a move gives the new VMA the old one's count (``vma_dup``), fork gives the
  child the parent's (``vma_fork_dup``): each part can hold at most all of them;
* a merge adds the count of the VMA whose range the survivor takes (``vma_merge``);
* the state goes with the VMA (``vma_free``).

Fork copies page tables whenever the count is non-zero, so guards survive fork as with
the sticky design, but without a VMA flag and without an anon_vma; khugepaged does not
retract a counted file VMA's table. ``check_vma`` holds the design to its bound:
``Kernel.check()`` fails if a VMA has more markers than its count.
"""

from __future__ import annotations

from vmalab.designs import Design
from vmalab.mm.memory import count_markers
from vmalab.mm.mm_types import DesignState, VmArea


class GuardCount(DesignState):
    """At least as many as the guard markers in the VMA's range."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class GuardCountDesign(Design):
    """Per-VMA guard-page counts in ``design_state``."""

    name = "test-guard-count"
    summary = "test design: a per-VMA guard count, kept across split, merge and fork"

    def __init__(self) -> None:
        #: GuardCount objects alive (created and not yet freed with their VMA).
        self.live = 0
        self.freed = 0

    def _count(self, vma: VmArea) -> int:
        st = vma.design_state
        return st.count if isinstance(st, GuardCount) else 0

    def _set(self, vma: VmArea, count: int) -> None:
        st = vma.design_state
        if isinstance(st, GuardCount):
            st.count = count
        elif count:
            vma.design_state = GuardCount(count)
            self.live += 1

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        self._set(vma, self._count(vma) + nr_pages)

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        if start <= vma.vm_start and end >= vma.vm_end:
            self._set(vma, 0)

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        self._set(new, self._count(old))

    def vma_fork_dup(self, child: VmArea, parent: VmArea) -> None:
        self._set(child, self._count(parent))

    def vma_merge(self, target: VmArea, src: VmArea) -> None:
        if self._count(src):
            self._set(target, self._count(target) + self._count(src))

    def vma_free(self, vma: VmArea) -> None:
        if vma.design_state is not None:
            vma.design_state = None
            self.live -= 1
            self.freed += 1

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        return self._count(src) > 0 or super().vma_needs_copy(dst, src)

    def file_vma_retractable(self, vma: VmArea) -> bool:
        return self._count(vma) == 0 and super().file_vma_retractable(vma)

    def check_vma(self, vma: VmArea) -> str | None:
        if vma.design_state is not None and not isinstance(vma.design_state, GuardCount):
            return f"foreign design state {vma.design_state!r}"
        n = count_markers(vma)
        if n > self._count(vma):
            return f"{n} guard markers but a count of {self._count(vma)}"
        return None
