"""The VMA index (``vmalab.mm.maple_tree.VmaTree``) against a plain sorted reference."""

from __future__ import annotations

import random

import pytest

from vmalab import Kernel
from vmalab.mm.maple_tree import VmaTree
from vmalab.mm.mm_types import VmArea

# A real mm for the VMAs to point at: the compiled build checks vm_mm's type.
_MM = Kernel().spawn().mm


def _vma(start: int) -> VmArea:
    return VmArea(_MM, start, start + 1, 0, 0)


def _floor(ref: dict[int, VmArea], addr: int) -> VmArea | None:
    keys = [k for k in ref if k <= addr]
    return ref[max(keys)] if keys else None


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_sorted_reference(seed: int) -> None:
    rng = random.Random(seed)
    t: VmaTree[VmArea] = VmaTree(leaf_max=4)  # tiny leaves: every path splits and empties leaves
    ref: dict[int, VmArea] = {}
    for _ in range(600):
        op = rng.random()
        if op < 0.5 or not ref:
            k = rng.randrange(0, 400) * 4
            if k in ref:
                with pytest.raises(KeyError):
                    t.insert(k, _vma(k))
                continue
            v = _vma(k)
            prev, nxt = t.insert(v.vm_start, v)
            ref[k] = v
            ks = sorted(ref)
            i = ks.index(k)
            assert prev is (ref[ks[i - 1]] if i else None)
            assert nxt is (ref[ks[i + 1]] if i + 1 < len(ks) else None)
        elif op < 0.75:
            k = rng.choice(list(ref))
            t.erase(k)
            del ref[k]
        elif op < 0.85:
            # rekey within the gap to the previous key
            ks = sorted(ref)
            i = rng.randrange(len(ks))
            lo = ks[i - 1] + 1 if i else 0
            new = rng.randrange(lo, ks[i] + 1)
            if new != ks[i] and new not in ref:
                t.rekey(ks[i], new)
                ref[new] = ref.pop(ks[i])
        else:
            ks = sorted(ref)
            i = rng.randrange(len(ks))
            hi = ks[i + 1] if i + 1 < len(ks) else ks[i] + 50
            if hi - ks[i] > 1:
                addr = rng.randrange(ks[i] + 1, hi)
                below, above = _vma(ks[i]), ref[ks[i]]
                t.split_entry(ks[i], below, addr, above)
                ref[ks[i]] = below
                ref[addr] = above
        assert t.check() is None
        assert len(t) == len(ref)
        assert list(t.keys()) == sorted(ref)
        assert [v for v in t.values()] == [ref[k] for k in sorted(ref)]
        for addr in (rng.randrange(-2, 1700) for _ in range(5)):
            assert t.floor(addr) is _floor(ref, addr)
        ks = sorted(ref)
        assert t.first() is (ref[ks[0]] if ks else None)
        assert t.last() is (ref[ks[-1]] if ks else None)
    for k in list(ref):
        assert k in t and t[k] is ref[k]
        t.erase(k)
    assert len(t) == 0 and t.first() is None and t.check() is None
    with pytest.raises(KeyError):
        t.erase(0)


def test_check_verifies_the_index_and_the_neighbour_links() -> None:
    from vmalab import InvariantError, Kernel

    k = Kernel()
    p = k.spawn()
    a = p.mmap(0, 4096, 3, 0x22)
    b = p.mmap(0, 4096, 1, 0x22)
    k.check()
    va, vb = p.mm.vma_lookup(a), p.mm.vma_lookup(b)
    assert va is not None and vb is not None
    lo, hi = (va, vb) if va.vm_start < vb.vm_start else (vb, va)
    assert lo.vm_next is hi and hi.vm_prev is lo
    hi.vm_prev = None
    with pytest.raises(InvariantError, match="vm_prev"):
        k.check()
    hi.vm_prev = lo
    k.check()
    lo.vm_start += 4096  # moved without telling the index
    with pytest.raises(InvariantError, match="indexed at"):
        k.check()


def test_check_finds_a_pte_outside_every_vma() -> None:
    from vmalab import InvariantError, Kernel
    from vmalab.mm.pagetable import PTE_MARKER_GUARD_ENTRY

    k = Kernel()
    p = k.spawn()
    a = p.mmap(0, 8192, 3, 0x22)
    p.write(a, b"x")
    p.munmap(a + 4096, 4096)
    k.check()
    t = p.mm.pgtables.table(a)
    assert t is not None  # the table stays: it maps part of the first VMA
    t[((a + 4096) >> 12) & 511] = PTE_MARKER_GUARD_ENTRY
    with pytest.raises(InvariantError, match="outside every VMA"):
        k.check()


@pytest.mark.parametrize("enabled", [True, False])
def test_fork_leaves_the_cyclic_gc_as_it_found_it(enabled: bool) -> None:
    import gc

    from vmalab import Kernel
    from vmalab.mm.slab import FailPolicy

    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        k = Kernel()
        p = k.spawn()
        a = p.mmap(0, 4096, 3, 0x22)
        p.write(a, b"x")
        c = p.fork()
        assert gc.isenabled() is enabled
        c.exit()
        k.slabs.fail = FailPolicy(nth=1, caches=frozenset({"vm_area_struct"}))
        with pytest.raises(OSError):
            p.fork()
        assert gc.isenabled() is enabled
        k.slabs.fail = None
        k.check()
    finally:
        if was:
            gc.enable()
