"""User-visible memory contents, signals, pagemap and smaps (kernel semantics).

Pagemap and smaps expectations were measured on Linux 6.18.44 (see the report): a zero page
reads as PM_PRESENT only; a private anon page written once as PM_PRESENT|PM_MMAP_EXCLUSIVE;
after fork both sides lose PM_MMAP_EXCLUSIVE, which comes back when the child exits; a
shmem page mapped once is PM_PRESENT|PM_FILE|PM_MMAP_EXCLUSIVE; a guard marker is
PM_SWAP|PM_GUARD_REGION without PM_PRESENT/PM_FILE.
"""

from __future__ import annotations

import pytest
from mmtest_util import (
    BASE,
    FIXED,
    PRIV_ANON,
    RW,
    P,
    fault_signal,
    smaps_kb,
    vma_at,
)

from vmalab import SegmentationFault, uapi

PM = uapi
STATE_BITS = PM.PM_PRESENT | PM.PM_SWAP | PM.PM_FILE | PM.PM_GUARD_REGION | PM.PM_MMAP_EXCLUSIVE
SHARED_ANON = uapi.MAP_SHARED | uapi.MAP_ANONYMOUS


def bits(proc, addr, n=1):
    return [e & STATE_BITS for e in proc.pagemap(addr, n)]


def memfd(p, npages, name="m"):
    fd = p.memfd_create(name)
    p.ftruncate(fd, npages * P)
    return fd


# --- fork isolation ----------------------------------------------------------------------
def test_fork_private_anon_isolation(kp):
    k, p = kp
    a = p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(a, b"parent")
    p.write(a + 2 * P, b"two")
    c = p.fork()
    k.check()
    assert c.read(a, 6) == b"parent" and c.read(a + 2 * P, 3) == b"two"
    assert c.read(a + P, 4) == bytes(4)
    c.write(a, b"CHILD!")
    c.write(a + P, b"c1")
    k.check()
    assert p.read(a, 6) == b"parent" and p.read(a + P, 2) == bytes(2)
    p.write(a + 2 * P, b"TWO")
    assert c.read(a + 2 * P, 3) == b"two"
    g = c.fork()  # grandchild sees the child's view
    assert g.read(a, 6) == b"CHILD!" and g.read(a + 2 * P, 3) == b"two"
    c.exit()
    k.check()
    assert g.read(a, 6) == b"CHILD!"
    assert p.read(a, 6) == b"parent"


def test_fork_shared_anon_is_shared(kp):
    k, p = kp
    a = p.mmap(0, 2 * P, RW, SHARED_ANON)
    p.write(a, b"hello")
    c = p.fork()
    assert c.read(a, 5) == b"hello"
    c.write(a + P, b"from child")
    assert p.read(a + P, 10) == b"from child"
    p.write(a, b"HELLO")
    assert c.read(a, 5) == b"HELLO"
    k.check()


def test_fork_wipeonfork_and_dontfork(kp):
    k, p = kp
    a = p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    b = p.mmap(BASE + 8 * P, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(a, b"wipe me")
    p.write(b, b"not inherited")
    p.madvise(a, 4 * P, uapi.MADV_WIPEONFORK)
    p.madvise(b, 4 * P, uapi.MADV_DONTFORK)
    c = p.fork()
    k.check()
    assert c.read(a, 7) == bytes(7)
    assert "wf" in vma_at(c, a).flags
    assert vma_at(c, b) is None
    assert fault_signal(c, b) == "SIGSEGV"
    assert p.read(a, 7) == b"wipe me" and p.read(b, 13) == b"not inherited"


def test_fork_does_not_inherit_mlock(kp):
    k, p = kp
    a = p.mmap(0, 2 * P, RW, PRIV_ANON)
    p.mlock(a, 2 * P)
    c = p.fork()
    assert "lo" in vma_at(p, a).flags and "lo" not in vma_at(c, a).flags


# --- DONTNEED / REMOVE -------------------------------------------------------------------
def test_dontneed_private_anon_zeroes(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    p.write(a, b"x" * (4 * P))
    p.madvise(a + P, 2 * P, uapi.MADV_DONTNEED)
    k.check()
    assert p.read(a, P) == b"x" * P
    assert p.read(a + P, 2 * P) == bytes(2 * P)
    assert p.read(a + 3 * P, P) == b"x" * P


@pytest.mark.parametrize("kind", ["shared_anon", "memfd", "file"])
def test_dontneed_shared_keeps_data(kp, kind):
    k, p = kp
    if kind == "shared_anon":
        a = p.mmap(0, 4 * P, RW, SHARED_ANON)
    else:
        fd = memfd(p, 4) if kind == "memfd" else p.open("/f", uapi.O_RDWR | uapi.O_CREAT)
        p.ftruncate(fd, 4 * P)
        a = p.mmap(0, 4 * P, RW, uapi.MAP_SHARED, fd)
    p.write(a, b"y" * (4 * P))
    p.madvise(a, 4 * P, uapi.MADV_DONTNEED)
    k.check()
    assert bits(p, a, 4) == [0, 0, 0, 0]  # the PTEs are gone, the data is not
    assert p.read(a, 4 * P) == b"y" * (4 * P)


def test_dontneed_private_file_reverts_to_file(kp):
    k, p = kp
    fd = memfd(p, 2)
    p.pwrite(fd, b"file" * (P // 2), 0)
    a = p.mmap(0, 2 * P, RW, uapi.MAP_PRIVATE, fd)
    p.write(a, b"priv")
    assert p.read(a, 4) == b"priv"
    assert p.pread(fd, 4, 0) == b"file"
    p.madvise(a, 2 * P, uapi.MADV_DONTNEED)
    assert p.read(a, 4) == b"file"


def test_madv_remove_punches_shmem(kp):
    k, p = kp
    fd = memfd(p, 4)
    a = p.mmap(0, 4 * P, RW, uapi.MAP_SHARED, fd)
    p.write(a, b"z" * (4 * P))
    p.madvise(a + P, P, uapi.MADV_REMOVE)
    k.check()
    assert p.read(a + P, P) == bytes(P)
    assert p.pread(fd, P, P) == bytes(P)
    assert p.pread(fd, 1, 0) == b"z"


# --- shared file coherence --------------------------------------------------------------
def test_shared_file_coherent_across_processes(kp):
    k, p = kp
    q = k.spawn()
    fd = p.open("/shared", uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, 2 * P)
    fq = q.open("/shared", uapi.O_RDWR)
    a = p.mmap(0, 2 * P, RW, uapi.MAP_SHARED, fd)
    b = q.mmap(0, 2 * P, RW, uapi.MAP_SHARED, fq)
    p.write(a + 10, b"from p")
    assert q.read(b + 10, 6) == b"from p"
    q.write(b + P, b"from q")
    assert p.read(a + P, 6) == b"from q"
    assert p.pread(fd, 6, P) == b"from q"
    q.pwrite(fq, b"pwrite", 100)
    assert p.read(a + 100, 6) == b"pwrite"
    k.check()


def test_private_file_mapping_cow(kp):
    k, p = kp
    fd = memfd(p, 2)
    p.pwrite(fd, b"AAAA", 0)
    p.pwrite(fd, b"BBBB", P)
    a = p.mmap(0, 2 * P, RW, uapi.MAP_PRIVATE, fd)
    assert p.read(a, 4) == b"AAAA"
    p.write(a, b"mine")
    assert p.pread(fd, 4, 0) == b"AAAA"  # not written through
    p.pwrite(fd, b"CCCC", P)  # page 1 not CoW'd yet: file changes show through
    assert p.read(a + P, 4) == b"CCCC"
    p.pwrite(fd, b"DDDD", 0)  # page 0 is private now
    assert p.read(a, 4) == b"mine"
    assert vma_at(p, a).anon_vma is not None


# --- signals ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [uapi.MAP_SHARED, uapi.MAP_PRIVATE])
def test_sigbus_beyond_eof(kp, flags):
    k, p = kp
    fd = p.open("/eof", uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, P + 100)
    a = p.mmap(0, 4 * P, RW, flags, fd)  # mapping beyond EOF is allowed
    assert p.read(a + P, P) == bytes(P)  # the partial last page reads zeroes past EOF
    with pytest.raises(SegmentationFault) as ei:
        p.read(a + 2 * P, 1)
    assert ei.value.signal == "SIGBUS" and ei.value.addr == a + 2 * P
    assert fault_signal(p, a + 3 * P, write=True) == "SIGBUS"
    p.ftruncate(fd, 4 * P)
    assert p.read(a + 3 * P, 1) == b"\0"
    p.ftruncate(fd, P)
    assert fault_signal(p, a + P) == "SIGBUS"
    k.check()


def test_sigbus_after_truncate_but_guard_is_sigsegv(kp):
    """Measured: a guard page inside a truncated range gets SIGSEGV, other pages SIGBUS."""
    k, p = kp
    fd = memfd(p, 8)
    a = p.mmap(0, 8 * P, RW, uapi.MAP_SHARED, fd)
    p.write(a, b"q" * (8 * P))
    p.madvise(a + 5 * P, P, uapi.MADV_GUARD_INSTALL)
    p.ftruncate(fd, 2 * P)
    assert fault_signal(p, a + 4 * P) == "SIGBUS"
    assert fault_signal(p, a + 5 * P) == "SIGSEGV"
    assert p.read(a + P, 1) == b"q"
    k.check()


def test_sigsegv_cases(kp):
    k, p = kp
    a = p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.mprotect(a + P, P, uapi.PROT_NONE)
    p.mprotect(a + 2 * P, P, uapi.PROT_READ)
    assert fault_signal(p, a + P) == "SIGSEGV"
    assert fault_signal(p, a + P, write=True) == "SIGSEGV"
    assert fault_signal(p, a + 2 * P) is None
    assert fault_signal(p, a + 2 * P, write=True) == "SIGSEGV"
    assert fault_signal(p, a + 10 * P) == "SIGSEGV"  # no VMA
    with pytest.raises(SegmentationFault) as ei:
        p.read(a + P - 3, 8)  # crosses into the PROT_NONE page
    assert ei.value.addr == a + P and ei.value.signal == "SIGSEGV"
    with pytest.raises(SegmentationFault) as ei:
        p.write(a + 4 * P - 2, b"abcd")  # runs off the end of the mapping
    assert ei.value.addr == a + 4 * P
    k.check()


def test_write_to_write_sealed_memfd_mapping_faults(kp):
    k, p = kp
    fd = p.memfd_create("s", uapi.MFD_ALLOW_SEALING)
    p.ftruncate(fd, P)
    p.add_seals(fd, uapi.F_SEAL_WRITE)
    a = p.mmap(0, P, uapi.PROT_READ, uapi.MAP_SHARED, fd)
    assert fault_signal(p, a, write=True) == "SIGSEGV"


# --- zero page, anon_vma, pagemap -------------------------------------------------------
def test_zero_page_read_creates_no_anon_vma(kp):
    k, p = kp
    before = k.slab()["anon_vma"].active
    a = p.mmap(0, 4 * P, RW, PRIV_ANON)
    assert p.read(a, 4 * P) == bytes(4 * P)
    k.check()
    assert vma_at(p, a).anon_vma is None
    assert k.slab()["anon_vma"].active == before
    assert bits(p, a, 4) == [PM.PM_PRESENT] * 4  # the shared zero page
    assert smaps_kb(p, a, "Rss") == 0 and smaps_kb(p, a, "Anonymous") == 0
    p.write(a + P, b"w")
    assert vma_at(p, a).anon_vma is not None
    assert bits(p, a, 2) == [PM.PM_PRESENT, PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE]
    assert p.read(a + P, 2) == b"w\0"


def test_pagemap_anon_fork_exclusivity(kp):
    k, p = kp
    a = p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.read(a, 1)
    p.write(a + P, b"w")
    p.madvise(a + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    guard = PM.PM_SWAP | PM.PM_GUARD_REGION
    assert bits(p, a, 4) == [PM.PM_PRESENT, PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE, guard, 0]
    c = p.fork()
    # The write gave the VMA an anon_vma, so every design (lossy included) copies the
    # page tables: the zero-page PTE, the shared anon page and the marker (measured).
    assert vma_at(p, a).anon_vma is not None
    assert bits(c, a, 4) == [PM.PM_PRESENT, PM.PM_PRESENT, guard, 0]
    assert bits(p, a + P, 1) == [PM.PM_PRESENT]
    c.write(a + P, b"c")  # CoW: both private again
    assert bits(c, a + P, 1) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE]
    assert bits(p, a + P, 1) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE]
    k.check()


def test_pagemap_parent_regains_exclusive_after_child_exit(kp):
    k, p = kp
    a = p.mmap(0, P, RW, PRIV_ANON)
    p.write(a, b"w")
    c = p.fork()
    assert bits(p, a) == [PM.PM_PRESENT]
    c.exit()
    k.check()
    assert bits(p, a) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE]


def test_pagemap_file_and_private_file(kp):
    k, p = kp
    fd = memfd(p, 4)
    a = p.mmap(0, 4 * P, RW, uapi.MAP_SHARED, fd)
    p.read(a + 3 * P, 1)
    assert bits(p, a + 3 * P) == [PM.PM_PRESENT | PM.PM_FILE | PM.PM_MMAP_EXCLUSIVE]
    b = p.mmap(0, 4 * P, RW, uapi.MAP_PRIVATE, fd)
    assert bits(p, a + 3 * P) == [PM.PM_PRESENT | PM.PM_FILE | PM.PM_MMAP_EXCLUSIVE]
    p.read(b + 3 * P, 1)  # now mapped twice
    assert bits(p, a + 3 * P) == [PM.PM_PRESENT | PM.PM_FILE]
    p.write(b + P, b"cow")  # private anonymous copy
    assert bits(p, b + P) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE]
    k.check()


def test_pagemap_guard_encoding(kp):
    k, p = kp
    for flags, fd in ((PRIV_ANON, -1), (uapi.MAP_SHARED, memfd(p, 2))):
        a = p.mmap(0, 2 * P, RW, flags, fd)
        p.write(a, b"x" * (2 * P))
        p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
        assert bits(p, a)[0] == PM.PM_SWAP | PM.PM_GUARD_REGION
        p.madvise(a, P, uapi.MADV_GUARD_REMOVE)
        assert bits(p, a)[0] == 0
        want = b"\0" if fd == -1 else b"x"  # anon content was zapped; shmem kept
        assert p.read(a, 1) == want
    k.check()


# --- smaps ------------------------------------------------------------------------------
def test_smaps_rss_anonymous(kp):
    k, p = kp
    a = p.mmap(0, 8 * P, RW, PRIV_ANON)
    for i in range(3):
        p.write(a + i * P, b"w")
    assert smaps_kb(p, a, "Rss") == 12 and smaps_kb(p, a, "Anonymous") == 12
    p.madvise(a, P, uapi.MADV_DONTNEED)
    assert smaps_kb(p, a, "Rss") == 8 and smaps_kb(p, a, "Anonymous") == 8
    fd = memfd(p, 4)
    s = p.mmap(0, 4 * P, RW, uapi.MAP_SHARED, fd)
    p.read(s + 3 * P, 1)
    assert smaps_kb(p, s, "Rss") == 4 and smaps_kb(p, s, "Anonymous") == 0
    pr = p.mmap(0, 4 * P, RW, uapi.MAP_PRIVATE, fd)
    p.write(pr + P, b"c")
    assert smaps_kb(p, pr, "Anonymous") == 4
    k.check()


def test_smaps_vmflags_line(kp):
    k, p = kp
    a = p.mmap(0, 2 * P, RW, PRIV_ANON)
    text = p.smaps()
    assert "VmFlags:" in text
    flags = set(vma_at(p, a).flags)
    assert {"rd", "wr", "mr", "mw", "me", "ac"} <= flags
    p.madvise(a, P, uapi.MADV_GUARD_INSTALL)
    assert ("gu" in vma_at(p, a).flags) == (k.design == "sticky")
    assert vma_at(p, a).end - vma_at(p, a).start == 2 * P  # install never splits


# --- reclaim advice (measured on 6.18.44, no swap) ---------------------------------------
def test_pageout_and_free_without_swap(kp):
    """MADV_PAGEOUT: anonymous pages cannot go anywhere without swap and stay mapped; shmem
    pages are unmapped (try_to_unmap) and their data stays in the page cache. MADV_FREE
    without memory pressure keeps the pages and their contents."""
    k, p = kp
    a = p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(a, b"\1" * (4 * P))
    p.madvise(a, 4 * P, uapi.MADV_PAGEOUT)
    assert bits(p, a, 4) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE] * 4
    fd = memfd(p, 4)
    s = p.mmap(BASE + 10 * P, 4 * P, RW, uapi.MAP_SHARED | FIXED, fd)
    p.write(s, b"\2" * (4 * P))
    p.madvise(s, 4 * P, uapi.MADV_PAGEOUT)
    assert bits(p, s, 4) == [0] * 4
    assert p.read(s, 4 * P) == b"\2" * (4 * P)
    f = p.mmap(BASE + 20 * P, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(f, b"\3" * (4 * P))
    p.madvise(f, 4 * P, uapi.MADV_FREE)
    assert bits(p, f, 4) == [PM.PM_PRESENT | PM.PM_MMAP_EXCLUSIVE] * 4
    assert p.read(f, 1) == b"\3"
    k.check()
