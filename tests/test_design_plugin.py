"""A design that lives only in the tests: adding a design needs no change to the core.

``Noisy`` is the eager design with a different anon_vma policy: it records every guard
install so the test can see that the core called its hook, and it refuses to copy page
tables at fork for VMAs it never guarded.
"""

from __future__ import annotations

import pytest

from vmalab import Kernel, SegmentationFault, uapi
from vmalab.designs import DESIGNS, Design, get_design
from vmalab.mm.mm_types import VmArea

P = 4096
BASE = 0x200000000
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED


class PerVmaSet(Design):
    """Remembers guarded VMAs in a set kept by the design, not in the VMA."""

    name = "test-per-vma-set"

    def __init__(self) -> None:
        self.guarded: set[int] = set()
        self.installs = 0

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        self.installs += 1
        self.guarded.add(id(vma))

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        if id(old) in self.guarded:
            self.guarded.add(id(new))

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        return id(src) in self.guarded or src.anon_vma is not None


def test_plugin_design_runs_without_core_changes() -> None:
    design = PerVmaSet()
    assert design.name not in DESIGNS  # not registered: lives only here
    k = Kernel(design)
    assert k.design == "test-per-vma-set"
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
