"""anon_vma_fork()'s chains (mm/rmap.c:anon_vma_fork, anon_vma_clone): what a fork
child's VMA is linked to, in what order, and the reuse rule that keeps a task that keeps
forking from growing an endless anon_vma hierarchy (7a3ef208e662)."""

from __future__ import annotations

import pytest

import vmalab
from vmalab.mm.mm_types import VmArea

PAGE = 4096
BASE = 0x100000000


def _vma(p: vmalab.Process) -> VmArea:
    v = p.mm.vma_lookup(BASE)
    assert v is not None
    return v


def _anon_vmas(k: vmalab.Kernel) -> int:
    return k.slab()["anon_vma"].active


def _three(design: str) -> tuple[vmalab.Kernel, vmalab.Process, vmalab.Process, vmalab.Process]:
    """A written one-page VMA in A; A forks B, B forks C."""
    k = vmalab.Kernel(design)
    a = k.spawn()
    a.mmap(BASE, PAGE, 3, 0x32)
    a.write(BASE, b"a")
    b = a.fork()
    return k, a, b, b.fork()


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_child_chain_is_own_anon_vma_then_parents(design: str) -> None:
    k, a, b, c = _three(design)
    va, vb, vc = _vma(a), _vma(b), _vma(c)
    assert va.anon_vma is not None and vb.anon_vma is not None and vc.anon_vma is not None
    # newest first: the VMA's own anon_vma, then its parent's chain in the parent's order
    assert [x.anon_vma for x in vc.anon_vma_chain] == [
        vc.anon_vma,
        vb.anon_vma,
        va.anon_vma,
    ]
    assert all(x.vma is vc for x in vc.anon_vma_chain)
    assert vc.anon_vma.parent is vb.anon_vma and vc.anon_vma.root is va.anon_vma
    assert vb.anon_vma.parent is va.anon_vma
    k.check()


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_fork_reuses_an_anon_vma_without_vmas_and_with_one_child(design: str) -> None:
    """A forks B, B forks C, B exits: B's anon_vma has no VMA left and one child (C's).
    When C forks D, D's VMA reuses it instead of allocating a fourth anon_vma."""
    k, a, b, c = _three(design)
    b_av = _vma(b).anon_vma
    b.exit()
    k.check()
    before = _anon_vmas(k)
    d = c.fork()
    vd = _vma(d)
    assert vd.anon_vma is b_av
    assert _anon_vmas(k) == before
    # D's chain is a copy of C's (no own anon_vma in front)
    assert [x.anon_vma for x in vd.anon_vma_chain] == [x.anon_vma for x in _vma(c).anon_vma_chain]
    k.check()
    for p in (a, c, d):
        p.exit()
    k.check()
    assert _anon_vmas(k) == 0


@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_fork_of_a_long_chain_fails_cleanly_at_every_allocation(design: str) -> None:
    """A grandchild's VMA has a chain of three; a fork of it that fails at any of its
    allocations leaves nothing behind (anon_vma_clone's and anon_vma_fork's error paths)."""
    nth = 0
    while True:
        nth += 1
        k = vmalab.Kernel(design)
        a = k.spawn()
        a.mmap(BASE, 4 * PAGE, 3, 0x32)
        a.write(BASE, b"a")
        a.mmap(BASE + 8 * PAGE, PAGE, 3, 0x32)
        a.write(BASE + 8 * PAGE, b"a")
        c = a.fork().fork()
        assert len(_vma(c).anon_vma_chain) == 3
        slabs = {n: s.active for n, s in k.slab().items()}
        policy = vmalab.FailPolicy(nth=nth)
        k.fail = policy
        try:
            c.fork()
        except OSError as e:
            assert e.errno == 12
        k.fail = None
        k.check()
        if not policy.failed:
            break  # the fork made fewer than nth allocations: every point was tried
        assert {n: s.active for n, s in k.slab().items()} == slabs
    assert nth > 10
