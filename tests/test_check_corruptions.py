"""Kernel.check() finds each kind of corruption it promises to find.

Its walk (mm/validate.py:validate_mm) checks some invariants by counting (the anon_vma trees
against the VMAs' chains, mapcounts against the PTEs found); each test corrupts one
thing in a forked machine, expects check() to name it, undoes it and expects a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from vmalab import InvariantError, Kernel
from vmalab.mm.mm_types import AnonVmaChain, VmArea
from vmalab.mm.pagetable import PTE_MARKER_GUARD_ENTRY

P = 4096
BASE = 0x10000000
RW = 3
ANON_FIXED = 0x32


@pytest.fixture
def forked() -> Iterator[tuple[Kernel, VmArea, VmArea]]:
    """Three written one-page VMAs, forked: (kernel, a parent VMA, its child copy)."""
    k = Kernel("sticky")
    p = k.spawn()
    for i in range(3):
        p.mmap(BASE + 2 * i * P, P, RW, ANON_FIXED)
        p.write(BASE + 2 * i * P, b"x")
    c = p.fork()
    k.check()
    pv, cv = p.mm.vma_lookup(BASE + 2 * P), c.mm.vma_lookup(BASE + 2 * P)
    assert pv is not None and cv is not None and len(cv.anon_vma_chain) == 2
    yield k, pv, cv


def _pfn(v: VmArea) -> int:
    return v.vm_mm.pgtables.get(v.vm_start) >> 12


def _corrupt(k: Kernel, match: str, do: Callable[[], None], undo: Callable[[], None]) -> None:
    do()
    with pytest.raises(InvariantError, match=match):
        k.check()
    undo()
    k.check()


def test_mapcount_too_high_and_too_low(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    mc = k.phys.mapcount
    pfn = _pfn(pv)
    for delta in (1, -1, -2):

        def do(d: int = delta) -> None:
            mc[pfn] += d

        def undo(d: int = delta) -> None:
            mc[pfn] -= d

        _corrupt(k, f"anon folio {pfn}: mapcount", do, undo)


def test_unmapped_anon_folio(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, _pv, _cv = forked
    pfn = k.phys.alloc(1, 1)  # an anonymous folio no PTE maps, mapcount 0
    _corrupt(k, f"anon folio {pfn}: mapcount 0, mapped 0", lambda: None, lambda: k.phys.free(pfn))


def test_dead_chain_in_an_anon_vma_tree(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    av = pv.anon_vma
    assert av is not None and isinstance(av.avcs, list)
    dead = VmArea(pv.vm_mm, 0, P, 0, 0)
    stray = AnonVmaChain(dead, av)
    avcs = av.avcs
    _corrupt(k, "chain of a dead VMA", lambda: avcs.append(stray), lambda: avcs.remove(stray))


def test_live_chain_listed_twice(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    av = pv.anon_vma
    assert av is not None and isinstance(av.avcs, list)
    avcs = av.avcs
    avc = avcs[0]
    _corrupt(k, "trees hold 10 chains, the VMAs 9", lambda: avcs.append(avc), avcs.pop)


def test_chain_in_another_tree(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, cv = forked
    own = cv.anon_vma_chain[0]
    other = cv.anon_vma_chain[1].anon_vma
    assert isinstance(other.avcs, list)
    avcs = other.avcs
    _corrupt(k, "holds a chain of anon_vma", lambda: avcs.append(own), avcs.pop)
    assert own.anon_vma is not other and pv.anon_vma is other


def test_duplicate_and_foreign_chain_entries(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, cv = forked
    chain = cv.anon_vma_chain
    assert isinstance(chain, list)
    _corrupt(k, "two chains to one anon_vma", lambda: chain.append(chain[0]), chain.pop)
    theirs = pv.anon_vma_chain[0]
    _corrupt(k, "chain entry of another VMA", lambda: chain.append(theirs), chain.pop)


def test_anon_vma_counters(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    av = pv.anon_vma
    assert av is not None
    for field, match in (
        ("num_active_vmas", "num_active_vmas"),
        ("num_children", "num_children"),
        ("refcount", "refcount"),
    ):

        def do(f: str = field) -> None:
            setattr(av, f, getattr(av, f) + 1)

        def undo(f: str = field) -> None:
            setattr(av, f, getattr(av, f) - 1)

        _corrupt(k, f"anon_vma {av.id}: {match}", do, undo)


def test_folio_of_an_anon_vma_off_the_chain(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    pfn = _pfn(pv)
    owner = k.phys.owner
    was = owner[pfn]

    def do() -> None:
        owner[pfn] = was + 1000

    def undo() -> None:
        owner[pfn] = was

    _corrupt(k, "is not on the VMA's chain", do, undo)


def test_bad_ptes(forked: tuple[Kernel, VmArea, VmArea]) -> None:
    k, pv, _cv = forked
    t = pv.vm_mm.pgtables.table(pv.vm_start)
    assert t is not None
    j = (pv.vm_start >> 12) & 511
    was = t[j]

    def put(x: int) -> Callable[[], None]:
        def f() -> None:
            t[j] = x

        return f

    _corrupt(k, "unknown PTE", put(0x400), put(was))
    free = k.phys.alloc(1, 1)
    k.phys.free(free)
    _corrupt(k, f"PTE maps a freed page {free}", put(free << 12 | 1), put(was))
    # A marker in the hole between two VMAs, in the same table.
    t[j + 1] = PTE_MARKER_GUARD_ENTRY
    with pytest.raises(InvariantError, match="outside every VMA"):
        k.check()
    t[j + 1] = 0
    k.check()


def test_every_design_check_vma_runs() -> None:
    """A design that keeps Design.check_vma is not called; one that overrides it is."""
    from vmalab.designs.base import Design
    from vmalab.kernel import _design_check_vma

    k = Kernel("sticky")
    assert _design_check_vma(k._design) is None
    k = Kernel("tagged")
    assert type(k._design).check_vma is not Design.check_vma
    assert _design_check_vma(k._design) is not None
