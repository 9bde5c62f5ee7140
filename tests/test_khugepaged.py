"""The RFC's THP claim: can khugepaged retract a guarded file VMA's page tables?

designs.md section 10: eager and sticky refuse retraction forever once a guard was
installed (a real anon_vma, or a VM_MAYBE_GUARD that is never cleared; the latter
measured on 6.18.44, live-kernel-facts 4.7); the RFC (tagged) refuses while
ANON_VMA_UNFAULTED is set and allows it again after MADV_GUARD_REMOVE over the whole
VMA; lossy never refuses (and loses the guards at fork instead).
"""

from __future__ import annotations

import pytest

from vmalab import DESIGNS, Kernel, uapi

P = 4096
HUGE = 512 * P
BASE = 0x400000000  # 2 MiB aligned
RW = uapi.PROT_READ | uapi.PROT_WRITE

# design: (after install, after a partial remove, after a whole-VMA remove)
EXPECT = {
    "tagged": (False, False, True),
    "tagged-fixed": (False, False, True),
    "eager": (False, False, False),
    "sticky": (False, False, False),
    "lossy": (True, True, True),
}


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "private"])
@pytest.mark.parametrize("design", DESIGNS)
def test_retractable_after_guard_install_and_remove(design: str, shared: bool) -> None:
    k = Kernel(design)
    p = k.spawn()
    fd = p.memfd_create("thp")
    p.ftruncate(fd, 2 * HUGE)
    flags = (uapi.MAP_SHARED if shared else uapi.MAP_PRIVATE) | uapi.MAP_FIXED
    prot = RW if shared else uapi.PROT_READ
    p.mmap(BASE, 2 * HUGE, prot, flags, fd, 0)
    assert p.khugepaged_retractable(BASE)  # a plain file VMA is retractable
    p.madvise(BASE + 100 * P, P, uapi.MADV_GUARD_INSTALL)
    p.madvise(BASE + 700 * P, P, uapi.MADV_GUARD_INSTALL)
    after_install = p.khugepaged_retractable(BASE)
    p.madvise(BASE + 100 * P, P, uapi.MADV_GUARD_REMOVE)
    after_partial = p.khugepaged_retractable(BASE)
    p.madvise(BASE, 2 * HUGE, uapi.MADV_GUARD_REMOVE)
    after_whole = p.khugepaged_retractable(BASE)
    k.check()
    assert (after_install, after_partial, after_whole) == EXPECT[design]


@pytest.mark.parametrize("design", DESIGNS)
def test_collapse_refused_over_a_marker(design: str) -> None:
    """MADV_COLLAPSE over a shmem range holding a marker fails with EINVAL in every design
    once the folio is PMD-sized (collapse_pte_mapped_thp: SCAN_PTE_NON_PRESENT). A fresh
    collapse_file() under lossy retracts the marker's table instead
    (tests/test_huge_memory.py::test_retraction_differs_between_designs)."""
    k = Kernel(design)
    p = k.spawn()
    fd = p.memfd_create("thp")
    p.ftruncate(fd, HUGE)
    p.mmap(BASE, HUGE, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0)
    with pytest.raises(OSError) as ei:  # nothing cached: SCAN_TRUNCATED (measured)
        p.madvise(BASE, HUGE, uapi.MADV_COLLAPSE)
    assert ei.value.errno == 22
    p.write(BASE, b"x")
    p.madvise(BASE, HUGE, uapi.MADV_COLLAPSE)
    p.madvise(BASE + 100 * P, P, uapi.MADV_GUARD_INSTALL)
    with pytest.raises(OSError) as ei:
        p.madvise(BASE, HUGE, uapi.MADV_COLLAPSE)
    assert ei.value.errno == 22
    assert p.pagemap(BASE + 100 * P)[0] & uapi.PM_GUARD_REGION  # the marker is kept
    p.madvise(BASE + 100 * P, P, uapi.MADV_GUARD_REMOVE)
    p.write(BASE, b"x")
    # an anon_vma or gu alone does not block the caller's own collapse
    # (collapse_pte_mapped_thp does not look at them)
    p.madvise(BASE, HUGE, uapi.MADV_COLLAPSE)
    k.check()
