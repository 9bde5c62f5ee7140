"""A design that lives only in the tests: adding a design needs no change to the core.

``Guarded`` marks every VMA it installed guards in through ``vma.design_state`` (not a
set keyed on ``id(vma)``, which a freed VMA's successor could reuse): it counts guard
installs so the test can see that the core called its hook, follows splits, and copies
page tables at fork only for VMAs it marked (or that have an anon_vma).
"""

from __future__ import annotations

import pytest

from vmalab import Kernel, SegmentationFault, uapi
from vmalab.designs import DESIGNS, Design, get_design
from vmalab.mm.mm_types import DesignState, VmArea

P = 4096
BASE = 0x200000000
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED


class GuardedMark(DesignState):
    """This VMA had guards installed."""

    __slots__ = ()


class PerVmaMark(Design):
    """Remembers guarded VMAs in their design_state."""

    name = "test-per-vma-mark"

    def __init__(self) -> None:
        self.installs = 0

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        self.installs += 1
        vma.design_state = GuardedMark()

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        if isinstance(old.design_state, GuardedMark):
            new.design_state = GuardedMark()

    def vma_free(self, vma: VmArea) -> None:
        vma.design_state = None

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        return isinstance(src.design_state, GuardedMark) or src.anon_vma is not None


def test_plugin_design_runs_without_core_changes() -> None:
    design = PerVmaMark()
    assert design.name not in DESIGNS  # not registered: lives only here
    k = Kernel(design)
    assert k.design == "test-per-vma-mark"
    p = k.spawn()
    p.mmap(BASE, 8 * P, RW, ANON)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    assert design.installs == 1
    p.mprotect(BASE + 4 * P, P, uapi.PROT_READ)  # splits: the hook follows the split
    c = p.fork()
    k.check()
    with pytest.raises(SegmentationFault):
        c.read(BASE + 2 * P, 1)
    assert k.slab()["anon_vma"].active == 0  # no anon_vma was needed
    c.exit()
    p.exit()
    k.check()


def test_unknown_design_names_valid_ids() -> None:
    with pytest.raises(ValueError) as ei:
        Kernel("nope")
    for d in DESIGNS:
        assert d in str(ei.value)
    assert get_design("sticky").name == "sticky"
