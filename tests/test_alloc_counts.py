"""Kernel object allocations per event (kernel-semantics §5.6, live-kernel-facts §4.5,
designs.md §10), measured as Kernel.slab() active-count deltas."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from mmtest_util import BASE, FIXED, PRIV_ANON, RW, P, guard_pages, vma_at

from vmalab import Kernel, uapi

CACHES = ("anon_vma", "anon_vma_chain", "vm_area_struct", "mm_struct")
ALL_CACHES = CACHES + ("pgtable",)
ROOT = Path(__file__).resolve().parent.parent


def active(k):
    s = k.slab()
    return {c: s[c].active for c in ALL_CACHES}


def delta(k, before):
    now = active(k)
    return {c: now[c] - before[c] for c in ALL_CACHES}


def av(d):
    """(anon_vma, anon_vma_chain) of a delta."""
    return d["anon_vma"], d["anon_vma_chain"]


def assert_all_freed(k):
    leftovers = {name: st.active for name, st in k.slab().items() if st.active}
    assert leftovers == {}, f"objects still allocated after every process exited: {leftovers}"
    for name, st in k.slab().items():
        assert st.allocs - st.frees == st.active == 0, name
        assert st.bytes == st.active * st.objsize


def vmas_with_gaps(p, n, flags=PRIV_ANON, fd=-1, prot=RW):
    addrs = [BASE + 3 * i * P for i in range(n)]
    for a in addrs:
        p.mmap(a, 2 * P, prot, flags | FIXED, fd, 0)
    return addrs


def test_slab_object_sizes():
    s = Kernel().slab()
    assert s["vm_area_struct"].objsize == 192
    assert s["anon_vma"].objsize == 104
    assert s["anon_vma_chain"].objsize == 64
    assert s["mm_struct"].objsize == 1600
    assert s["pgtable"].objsize == 4096


def test_spawn_and_mmap(kp):
    k, p = kp
    b = active(k)
    q = k.spawn()
    assert delta(k, b)["mm_struct"] == 1
    b = active(k)
    vmas_with_gaps(q, 10)
    d = delta(k, b)
    assert d["vm_area_struct"] == 10 and av(d) == (0, 0)


def test_first_write_fault_then_nothing(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    b = active(k)
    p.write(a, b"w")
    assert av(delta(k, b)) == (1, 1)
    b = active(k)
    p.write(a + 2 * P, b"w")
    p.read(a + 3 * P, 1)
    d = delta(k, b)
    assert av(d) == (0, 0) and d["vm_area_struct"] == 0


def test_read_fault_allocates_nothing(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    b = active(k)
    p.read(a, 4 * P)
    d = delta(k, b)
    assert av(d) == (0, 0) and d["vm_area_struct"] == 0
    assert vma_at(p, a).anon_vma is None


def test_first_write_reuses_compatible_neighbour(kp):
    """find_mergeable_anon_vma(): VMAs differing only in access flags share an anon_vma."""
    k, p = kp
    p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.mmap(BASE + 4 * P, 4 * P, RW | uapi.PROT_EXEC, PRIV_ANON | FIXED)
    assert len(p.vmas()) == 2
    p.write(BASE, b"a")
    b = active(k)
    p.write(BASE + 4 * P, b"b")
    assert av(delta(k, b)) == (0, 1)
    assert vma_at(p, BASE).anon_vma == vma_at(p, BASE + 4 * P).anon_vma


@pytest.mark.parametrize("n", [1, 7, 50])
def test_fork_of_n_written_vmas(kp, n):
    k, p = kp
    for a in vmas_with_gaps(p, n):
        p.write(a, b"w")
    b = active(k)
    c = p.fork()
    d = delta(k, b)
    assert d["anon_vma"] == n
    assert d["anon_vma_chain"] == 2 * n
    assert d["vm_area_struct"] == n
    assert d["mm_struct"] == 1
    b = active(k)
    c.exit()
    d = delta(k, b)
    assert d["anon_vma"] == -n and d["anon_vma_chain"] == -2 * n
    assert d["vm_area_struct"] == -n and d["mm_struct"] == -1


def test_fork_of_unfaulted_vmas_costs_only_vmas(kp):
    k, p = kp
    vmas_with_gaps(p, 20)
    b = active(k)
    p.fork()
    d = delta(k, b)
    assert av(d) == (0, 0) and d["vm_area_struct"] == 20


def test_fork_wipeonfork_and_dontfork(kp):
    k, p = kp
    addrs = vmas_with_gaps(p, 10)
    for a in addrs:
        p.write(a, b"w")
    for a in addrs[:5]:
        p.madvise(a, 2 * P, uapi.MADV_WIPEONFORK)
    for a in addrs[5:]:
        p.madvise(a, 2 * P, uapi.MADV_DONTFORK)
    b = active(k)
    p.fork()
    d = delta(k, b)
    assert av(d) == (0, 0)
    assert d["vm_area_struct"] == 5


def test_split_of_faulted_vma(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    p.write(a, b"w")
    b = active(k)
    p.mprotect(a, P, uapi.PROT_READ)
    d = delta(k, b)
    assert d["vm_area_struct"] == 1 and av(d) == (0, 1)  # chain_len AVCs for the new part
    b = active(k)
    p.mprotect(a, P, RW)  # merge back: the removed VMA's AVC is freed
    d = delta(k, b)
    assert d["vm_area_struct"] == -1 and av(d) == (0, -1)


# --- guard installs per design (designs.md §10) ------------------------------------------
INSTALL_ANON = {
    "tagged": (0, 0),
    "tagged-fixed": (0, 0),
    "eager": (1, 1),
    "sticky": (1, 1),
    "lossy": (0, 0),
}
INSTALL_FILE = {
    "tagged": (0, 0),
    "tagged-fixed": (0, 0),
    "eager": (1, 1),
    "sticky": (0, 0),
    "lossy": (0, 0),
}
WRITE_AFTER_INSTALL = {
    "tagged": (1, 1),
    "tagged-fixed": (1, 1),
    "eager": (0, 0),
    "sticky": (0, 0),
    "lossy": (1, 1),
}
FORK_GUARDED_ANON = {
    "tagged": (0, 0),
    "tagged-fixed": (0, 0),
    "eager": (1, 2),
    "sticky": (1, 2),
    "lossy": (0, 0),
}
FORK_GUARDED_FILE = {
    "tagged": (0, 0),
    "tagged-fixed": (0, 0),
    "eager": (1, 2),
    "sticky": (0, 0),
    "lossy": (0, 0),
}


def mapping(p, kind):
    if kind == "anon":
        return PRIV_ANON, -1
    if kind == "shared_anon":
        return uapi.MAP_SHARED | uapi.MAP_ANONYMOUS, -1
    if kind == "memfd_private":
        fd = p.memfd_create("m")
        p.ftruncate(fd, 2 * P)
        return uapi.MAP_PRIVATE, fd
    fd = p.memfd_create("m") if kind == "memfd" else p.open("/f", uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, 2 * P)
    return uapi.MAP_SHARED, fd


FILE_KINDS = ["shared_anon", "memfd", "memfd_private", "file"]


@pytest.mark.parametrize("kind", ["anon", *FILE_KINDS])
def test_install_cost(kp, kind):
    k, p = kp
    n = 12
    flags, fd = mapping(p, kind)
    addrs = vmas_with_gaps(p, n, flags, fd)
    b = active(k)
    for a in addrs:
        p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
    d = delta(k, b)
    per = (INSTALL_ANON if kind == "anon" else INSTALL_FILE)[k.design]
    assert av(d) == (per[0] * n, per[1] * n)
    assert d["vm_area_struct"] == 0  # install never splits
    b = active(k)
    for a in addrs:  # a second install on the same VMAs allocates nothing
        p.madvise(a + P, P, uapi.MADV_GUARD_INSTALL)
    assert av(delta(k, b)) == (0, 0)


def test_install_on_vma_with_anon_vma_is_free(kp):
    k, p = kp
    addrs = vmas_with_gaps(p, 5)
    for a in addrs:
        p.write(a + P, b"w")
    b = active(k)
    for a in addrs:
        p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
    assert av(delta(k, b)) == (0, 0)


def test_write_after_install(kp):
    k, p = kp
    addrs = vmas_with_gaps(p, 8)
    for a in addrs:
        p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
    b = active(k)
    for a in addrs:
        p.write(a + P, b"w")
    per = WRITE_AFTER_INSTALL[k.design]
    assert av(delta(k, b)) == (per[0] * 8, per[1] * 8)


@pytest.mark.parametrize("kind", ["anon", *FILE_KINDS])
def test_fork_of_guarded_vmas(kp, kind):
    k, p = kp
    n = 10
    flags, fd = mapping(p, kind)
    addrs = vmas_with_gaps(p, n, flags, fd)
    for a in addrs:
        p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
    b = active(k)
    c = p.fork()
    d = delta(k, b)
    per = (FORK_GUARDED_ANON if kind == "anon" else FORK_GUARDED_FILE)[k.design]
    assert av(d) == (per[0] * n, per[1] * n)
    assert d["vm_area_struct"] == n
    kept = [a for a in addrs if guard_pages(c, a, 2) == [0]]
    assert len(kept) == (0 if k.design == "lossy" else n)


# --- the per-design table and docs/allocations.md ----------------------------------------
def _load_table_script():
    path = ROOT / "benchmarks" / "allocation_table.py"
    spec = importlib.util.spec_from_file_location("allocation_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_allocation_table():
    """1000 unfaulted VMAs, one guard page each, then fork: eager allocates per VMA in parent
    and child; tagged and sticky allocate nothing for file VMAs; sticky's figures are the
    kernel's measured ones (live-kernel-facts §4.5) for anonymous and file VMAs.
    docs/allocations.md is this table as the script renders it (regenerate it with
    ``python benchmarks/allocation_table.py`` when it changes)."""
    mod = _load_table_script()
    n = 1000
    table = mod.allocation_table(n)
    text = mod.render(table, n)
    doc = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "allocations.md")
    with open(doc) as f:
        assert text.strip() in f.read(), "docs/allocations.md is out of date"
    expect = {
        # (design, kind): (install (anon_vma, avc), fork child (anon_vma, avc), kept)
        ("eager", "anon"): ((n, n), (n, 2 * n), n),
        ("eager", "file"): ((n, n), (n, 2 * n), n),
        ("sticky", "anon"): ((n, n), (n, 2 * n), n),  # = measured on 6.18.44
        ("sticky", "file"): ((0, 0), (0, 0), n),  # = measured on 6.18.44
        ("tagged", "anon"): ((0, 0), (0, 0), n),
        ("tagged", "file"): ((0, 0), (0, 0), n),
        ("lossy", "anon"): ((0, 0), (0, 0), 0),
        ("lossy", "file"): ((0, 0), (0, 0), 0),
    }
    for key, (inst, fork, kept) in expect.items():
        r = table[key]
        assert r["mmap"] == (0, 0, n), key
        assert r["install"] == (*inst, 0), key
        assert r["fork"] == (*fork, n), key
        assert r["kept"] == kept, key
        assert r["leftover"] == {}, key
    doc = ROOT / "docs" / "allocations.md"
    assert doc.exists(), "run: PYTHONPATH=src python benchmarks/allocation_table.py"
    assert doc.read_text() == text, "docs/allocations.md is stale: rerun the script"


# --- everything is freed ---------------------------------------------------------------
def test_everything_freed_after_exit(kp):
    k, p = kp
    fd = p.memfd_create("m")
    p.ftruncate(fd, 8 * P)
    a = p.mmap(0, 8 * P, RW, PRIV_ANON)
    s = p.mmap(0, 8 * P, RW, uapi.MAP_SHARED, fd)
    f = p.mmap(0, 8 * P, RW, uapi.MAP_PRIVATE, fd)
    p.write(a, b"a")
    p.write(f + P, b"f")
    p.madvise(a + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.madvise(s + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    c = p.fork()
    c.write(a + 3 * P, b"c")
    g = c.fork()
    p.mprotect(a + P, P, uapi.PROT_READ)
    g.mremap(a, 8 * P, 16 * P, uapi.MREMAP_MAYMOVE)
    c.munmap(s, 4 * P)
    p.exit()  # parent first: the children keep their shared anon_vma hierarchy alive
    k.check()
    c.exit()
    k.check()
    g.exit()
    k.check()
    assert k.processes == []
    # the fixture asserts every cache (pgtable and mm_struct included) is at 0


def test_chain_lengths_through_fork_split_and_mremap(kp):
    """kernel-semantics §5.4/§5.6: fork costs chain_len + 1 AVCs and one anon_vma, a split
    chain_len AVCs, an mremap move chain_len AVCs for the copy minus the old VMA's."""
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    p.write(a, b"x")
    b = active(k)
    c = p.fork()  # parent chain 1
    assert av(delta(k, b)) == (1, 2)
    b = active(k)
    g = c.fork()  # C's chain is 2
    assert av(delta(k, b)) == (1, 3)
    b = active(k)
    g.mprotect(a, P, uapi.PROT_READ)  # G's chain is 3
    d = delta(k, b)
    assert av(d) == (0, 3) and d["vm_area_struct"] == 1
    b = active(k)
    c.mremap(a, 4 * P, 4 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, a + 64 * P)
    d = delta(k, b)
    assert av(d) == (0, 0) and d["vm_area_struct"] == 0
    assert c.read(a + 64 * P, 1) == b"x"
    b = active(k)
    g.exit()  # frees G's 2 VMAs x 3 AVCs and its own anon_vma
    d = delta(k, b)
    assert av(d) == (-1, -6) and d["vm_area_struct"] == -2
