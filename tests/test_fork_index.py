"""dup_mmap's child index (mm/fork.py): built leaf by leaf from the parent's, as
__mt_dup() copies the tree; VM_DONTCOPY VMAs left out, VM_WIPEONFORK ones kept without
their pages, and a fork that fails part-way leaves an index of exactly the VMAs it
duplicated (exit_mmap then frees them: nothing leaks)."""

from __future__ import annotations

import pytest

import vmalab
from vmalab import uapi

PAGE = 4096
BASE = 0x100000000
RW = uapi.PROT_READ | uapi.PROT_WRITE
FIXED = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
N = 1300  # several leaves of the index (512 entries at most each)


def _parent(design: str) -> tuple[vmalab.Kernel, vmalab.Process]:
    k = vmalab.Kernel(design)
    p = k.spawn()
    for i in range(N):
        a = BASE + 2 * i * PAGE
        p.mmap(a, PAGE, RW, FIXED)
        p.write(a, b"p")
        if i % 7 == 3 or 600 <= i < 1120:  # scattered, and a whole leaf's worth
            p.madvise(a, PAGE, uapi.MADV_DONTFORK)
        elif i % 11 == 5:
            p.madvise(a, PAGE, uapi.MADV_WIPEONFORK)
    return k, p


def _dontfork(i: int) -> bool:
    return i % 7 == 3 or 600 <= i < 1120


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_child_index_leaves_out_dontfork(design: str) -> None:
    k, p = _parent(design)
    c = p.fork()
    k.check()
    starts = [v.vm_start for v in c.mm.mm_mt.values()]
    assert starts == [BASE + 2 * i * PAGE for i in range(N) if not _dontfork(i)]
    assert c.mm.map_count == len(starts)
    assert c.mm.mm_mt.check() is None
    for i in range(N):
        a = BASE + 2 * i * PAGE
        if _dontfork(i):
            assert c.mm.vma_lookup(a) is None
        else:
            want = b"\0" if i % 11 == 5 else b"p"
            assert c.read(a, 1) == want
    # the child's index takes inserts and erases like any other
    c.munmap(BASE + 2 * PAGE, PAGE)
    c.mmap(BASE + 2 * 650 * PAGE, PAGE, RW, FIXED)
    k.check()
    c.exit()
    p.exit()
    k.check()


@pytest.mark.parametrize("design", ["sticky", "tagged"])
@pytest.mark.parametrize("where", [0.0, 0.3, 0.5, 0.7, 0.999])
def test_failed_fork_leaves_nothing(design: str, where: float) -> None:
    k, p = _parent(design)
    slabs = {n: s.active for n, s in k.slab().items()}
    counting = vmalab.FailPolicy(nth=10**9)
    k.fail = counting
    p.fork().exit()
    k.fail = None
    total = counting.seen
    k.check()
    assert {n: s.active for n, s in k.slab().items()} == slabs
    policy = vmalab.FailPolicy(nth=max(1, int(total * where)))
    k.fail = policy
    with pytest.raises(OSError):
        p.fork()
    k.fail = None
    assert policy.failed == 1
    k.check()
    assert {n: s.active for n, s in k.slab().items()} == slabs
    assert len(k.processes) == 1


def test_append_leaf_takes_only_a_leaf_above_the_last() -> None:
    from vmalab.mm.maple_tree import VmaTree

    t: VmaTree[str] = VmaTree(leaf_max=4)
    t.append_leaf([10, 20], ["a", "b"])
    t.append_leaf([30], ["c"])
    assert list(t.items()) == [(10, "a"), (20, "b"), (30, "c")] and t.check() is None
    assert t.floor(25) == "b" and len(t) == 3
    for keys, vals in (([30], ["x"]), ([], []), ([40, 50], ["x"]), ([40] * 5, ["x"] * 5)):
        with pytest.raises(ValueError):
            t.append_leaf(keys, vals)
    assert t.check() is None and len(t) == 3


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_fork_copies_tables_shared_by_vmas_and_spanned_by_one(design: str) -> None:
    """copy_page_range() over VMAs sharing a PTE table, one spanning two tables, then
    the next table (the fork's ForkWalk keeps and forgets the last table pair)."""
    k = vmalab.Kernel(design)
    p = k.spawn()
    layout = [(0, 1), (2, 1), (4, 3), (508, 8), (518, 1), (520, 2), (1030, 1)]  # (page, pages)
    for page, n in layout:
        a = BASE + page * PAGE
        p.mmap(a, n * PAGE, RW, FIXED)
        p.write(a, bytes([page % 251 + 1]) * (n * PAGE))
    p.madvise(BASE + 5 * PAGE, PAGE, uapi.MADV_GUARD_INSTALL)
    p.madvise(BASE + 512 * PAGE, PAGE, uapi.MADV_GUARD_INSTALL)
    c = p.fork()
    k.check()
    for page, n in layout:
        for j in range(n):
            a = BASE + (page + j) * PAGE
            if page + j in (5, 512):
                with pytest.raises(vmalab.SegmentationFault):
                    c.read(a, 1)
                continue
            assert c.read(a, 1) == p.read(a, 1) == bytes([page % 251 + 1])
            c.write(a, b"c")  # CoW: the parent keeps its page
            assert p.read(a, 1) == bytes([page % 251 + 1])
    k.check()
    c.exit()
    p.exit()
    k.check()


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_fork_does_not_count_zero_page_mappings(design: str) -> None:
    """Read faults map the zero page, which has no folio (vm_normal_folio() is NULL):
    copy_present_ptes() gives it no mapcount in the child; a written page gets one."""
    k = vmalab.Kernel(design, thp="never")
    p = k.spawn()
    p.mmap(BASE, 8 * PAGE, RW, FIXED)
    for i in range(8):
        p.read(BASE + i * PAGE, 1)  # the zero page
    p.write(BASE + 3 * PAGE, b"w")  # CoW of the zero page: a folio of its own
    pt = p.mm.pgtables
    zero = pt.get(BASE) >> 12
    own = pt.get(BASE + 3 * PAGE) >> 12
    assert zero != own and k.ctx.phys.mapcount[own] == 1
    before = k.ctx.phys.mapcount[zero]
    c = p.fork()
    assert c.mm.pgtables.get(BASE) >> 12 == zero
    assert k.ctx.phys.mapcount[zero] == before
    assert k.ctx.phys.mapcount[own] == 2
    assert c.read(BASE, 1) == b"\0" and c.read(BASE + 3 * PAGE, 1) == b"w"
    k.check()
