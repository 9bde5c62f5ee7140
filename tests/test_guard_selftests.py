"""Port of tools/testing/selftests/mm/guard-regions.c (v6.19 era, 30 tests x 3 variants).

Each test follows guard-regions-selftests.md step by step, on every design. Where the
selftest's outcome depends on how the guard state is recorded (docs/designs.md §10), the
design-specific expectation is asserted explicitly:

* ``fork``: under ``lossy`` the child must *not* see the guards (the VMA was never written,
  so it has no anon_vma and nothing tells fork to copy its page tables);
* ``smaps``: only ``sticky`` shows ``gu``; the other designs never show it (like kernels
  before VM_MAYBE_GUARD), while the VMA layout assertions still hold.
"""

from __future__ import annotations

import errno

import pytest
from mmtest_util import (
    FIXED,
    PRIV_ANON,
    RW,
    P,
    check_pattern,
    check_pattern_offset,
    guard_pages,
    has_gu,
    layout,
    pattern_byte,
    set_pattern,
    try_read,
    try_read_write,
    try_write,
)

import vmalab
from vmalab import Kernel, uapi

ANON, SHMEM, FILE = "anon", "shmem", "file"
ALL = (ANON, SHMEM, FILE)


class GuardRegions:
    """FIXTURE(guard_regions) + FIXTURE_VARIANT: the variant's mmap_() and its fd."""

    def __init__(self, design: str, variant: str) -> None:
        self.design = design
        self.variant = variant
        self.k = Kernel(design)
        self.p = self.k.spawn()
        self.fd = -1
        self.path = None
        if variant == SHMEM:
            self.fd = self.p.memfd_create("guard_regions_test_file", 0)
        elif variant == FILE:
            self.path = "/guard_regions_test_file_XXXXXX"
            self.fd = self.p.open(self.path, uapi.O_RDWR | uapi.O_CREAT | uapi.O_TRUNC)
        if variant != ANON:
            self.p.ftruncate(self.fd, 100 * P)

    def mmap_(self, addr: int, length: int, prot: int, extra: int, offset: int = 0) -> int:
        if self.variant == ANON:
            return self.p.mmap(addr, length, prot, extra | PRIV_ANON, -1, 0)
        return self.p.mmap(addr, length, prot, extra | uapi.MAP_SHARED, self.fd, offset)

    def is_anon_backed(self) -> bool:
        return self.variant in (ANON, SHMEM)

    def local_fs_has_sane_mmap(self) -> bool:
        """Map 10P, unmap page 5, MAP_FIXED it back at offset 5P: one VMA must result."""
        if self.variant != FILE:
            return True
        ptr = self.mmap_(0, 10 * P, RW, 0, 0)
        self.p.munmap(ptr + 5 * P, P)
        self.mmap_(ptr + 5 * P, P, RW, FIXED, 5 * P)
        sane = layout(self.p, ptr, ptr + 10 * P) == [(ptr, ptr + 10 * P)]
        self.p.munmap(ptr, 10 * P)
        return sane


@pytest.fixture(params=vmalab.DESIGNS)
def design(request) -> str:
    return request.param


@pytest.fixture
def gr(design, variant):
    g = GuardRegions(design, variant)
    yield g
    g.k.check()
    for proc in list(g.k.processes):
        proc.exit()
    g.k.check()


def variants(*names: str):
    return pytest.mark.parametrize("variant", names)


def madv(g: GuardRegions, addr: int, length: int, advice: int) -> None:
    g.p.madvise(addr, length, advice)
    g.k.check()


def install(g, addr, npages=1):
    madv(g, addr, npages * P, uapi.MADV_GUARD_INSTALL)


def remove(g, addr, npages=1):
    madv(g, addr, npages * P, uapi.MADV_GUARD_REMOVE)


def expect_errno(code: int, fn, *args) -> None:
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == code, f"expected {errno.errorcode[code]}, got {ei.value!r}"


# 1. basic ------------------------------------------------------------------------------
@variants(*ALL)
def test_basic(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    assert try_read_write(p, ptr)
    install(gr, ptr)
    assert not try_read_write(p, ptr)
    assert all(try_read_write(p, ptr + i * P) for i in range(1, 10))
    install(gr, ptr + 9 * P)
    assert not try_read_write(p, ptr) and not try_read_write(p, ptr + 9 * P)
    remove(gr, ptr)
    assert try_read_write(p, ptr)
    remove(gr, ptr + 9 * P)
    assert try_read_write(p, ptr + 9 * P)
    install(gr, ptr, 3)  # over populated pages
    for i in range(10):
        assert try_read_write(p, ptr + i * P) == (i >= 3), i
    remove(gr, ptr, 10)
    for i in range(10):
        assert try_read_write(p, ptr + i * P), i
    remove(gr, ptr, 10)  # removing where there are no guards must not zap data
    for i in range(10):
        assert p.read(ptr + i * P, 1) == b"x", i
    p.munmap(ptr, 10 * P)


# 2. multi_vma --------------------------------------------------------------------------
@variants(*ALL)
def test_multi_vma(gr):
    p = gr.p
    base = p.mmap(0, 100 * P, uapi.PROT_NONE, PRIV_ANON)
    gr.mmap_(base, 10 * P, RW, FIXED)
    gr.mmap_(base + 50 * P, 5 * P, RW, FIXED)
    gr.mmap_(base + 80 * P, 20 * P, RW, FIXED)
    p.munmap(base + 10 * P, 40 * P)
    p.munmap(base + 55 * P, 25 * P)
    mapped = [*range(0, 10), *range(50, 55), *range(80, 100)]
    expect_errno(errno.ENOMEM, p.madvise, base, 100 * P, uapi.MADV_GUARD_INSTALL)
    gr.k.check()
    for i in mapped:
        assert not try_read_write(p, base + i * P), i
    expect_errno(errno.ENOMEM, p.madvise, base, 100 * P, uapi.MADV_GUARD_REMOVE)
    gr.k.check()
    for i in mapped:
        assert try_read_write(p, base + i * P), i
    rwx = RW | uapi.PROT_EXEC
    gr.mmap_(base + 10 * P, 40 * P, rwx, FIXED)
    gr.mmap_(base + 55 * P, 25 * P, rwx, FIXED)
    assert len(layout(p, base, base + 100 * P)) == 5
    install(gr, base, 100)
    for i in range(100):
        assert not try_read_write(p, base + i * P), i
    remove(gr, base, 100)
    for i in range(100):
        assert try_read_write(p, base + i * P), i
    p.munmap(base, 100 * P)


# 3. process_madvise --------------------------------------------------------------------
@variants(*ALL)
def test_process_madvise(gr):
    p = gr.p
    base = p.mmap(0, 100 * P, uapi.PROT_NONE, PRIV_ANON)
    ptr1 = gr.mmap_(base + P, 10 * P, RW, FIXED | uapi.MAP_POPULATE)
    ptr2 = gr.mmap_(base + 50 * P, 5 * P, RW, FIXED)
    ptr3 = gr.mmap_(base + 79 * P, 20 * P, RW, FIXED)
    p.munmap(base, P)
    p.munmap(base + 11 * P, 39 * P)
    p.munmap(base + 55 * P, 24 * P)
    p.munmap(base + 99 * P, P)
    vec = [
        (ptr1, P),
        (ptr1 + 9 * P, P),
        (ptr2, P),
        (ptr2 + 4 * P, P),
        (ptr3, P),
        (ptr3 + 19 * P, P),
    ]
    assert p.process_madvise(vec, uapi.MADV_GUARD_INSTALL) == 6 * P
    gr.k.check()
    for a, _ in vec:
        assert not try_read_write(p, a), hex(a)
    p.process_madvise(vec, uapi.MADV_GUARD_REMOVE)
    gr.k.check()
    for a, _ in vec:
        assert try_read_write(p, a), hex(a)
    p.munmap(ptr1, 10 * P)
    p.munmap(ptr2, 5 * P)
    p.munmap(ptr3, 20 * P)


# 4. munmap -----------------------------------------------------------------------------
@variants(*ALL)
def test_munmap(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr)
    install(gr, ptr + 9 * P)
    assert not try_read_write(p, ptr) and not try_read_write(p, ptr + 9 * P)
    p.munmap(ptr, P)
    p.munmap(ptr + 9 * P, P)
    gr.mmap_(ptr, P, RW, FIXED)
    gr.mmap_(ptr + 9 * P, P, RW, FIXED)
    assert try_read_write(p, ptr) and try_read_write(p, ptr + 9 * P)
    p.munmap(ptr, 10 * P)


# 5. mprotect ---------------------------------------------------------------------------
@variants(*ALL)
def test_mprotect(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr + 5 * P, 2)
    for i in (5, 6):
        assert not try_read(p, ptr + i * P) and not try_write(p, ptr + i * P)
    p.mprotect(ptr + 5 * P, 2 * P, uapi.PROT_READ)
    gr.k.check()
    assert not try_read(p, ptr + 5 * P) and not try_read(p, ptr + 6 * P)
    install(gr, ptr + 5 * P, 2)
    assert not try_read(p, ptr + 5 * P) and not try_read(p, ptr + 6 * P)
    remove(gr, ptr, 10)
    for i in range(10):
        assert try_read(p, ptr + i * P), i
    p.munmap(ptr, 10 * P)


# 6. split_merge ------------------------------------------------------------------------
@variants(*ALL)
def test_split_merge(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr, 10)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    for i in (2, 5, 8):
        p.munmap(ptr + i * P, P)
    gr.k.check()
    for i in (0, 1, 3, 4, 6, 7, 9):
        assert not try_read_write(p, ptr + i * P), i
    for i in (2, 5, 8):
        gr.mmap_(ptr + i * P, P, RW, FIXED)
    gr.k.check()
    for i in range(10):
        assert try_read_write(p, ptr + i * P) == (i in (2, 5, 8)), i
    install(gr, ptr, 10)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    p.mprotect(ptr, 3 * P, uapi.PROT_READ)
    p.mprotect(ptr + 7 * P, 3 * P, uapi.PROT_READ)
    gr.k.check()
    assert not any(try_read(p, ptr + i * P) for i in range(10))
    p.mprotect(ptr, 3 * P, RW)
    p.mprotect(ptr + 7 * P, 3 * P, RW)
    gr.k.check()
    assert not any(try_read(p, ptr + i * P) or try_write(p, ptr + i * P) for i in range(10))
    p.mprotect(ptr, 3 * P, uapi.PROT_READ)
    p.mprotect(ptr + 7 * P, 3 * P, uapi.PROT_READ)
    remove(gr, ptr, 10)
    assert all(try_read(p, ptr + i * P) for i in range(10))
    p.mprotect(ptr, 3 * P, RW)
    p.mprotect(ptr + 7 * P, 3 * P, RW)
    gr.k.check()
    assert all(try_read_write(p, ptr + i * P) for i in range(10))
    p.munmap(ptr, 10 * P)


# 7. dontneed ---------------------------------------------------------------------------
@variants(*ALL)
def test_dontneed(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    for i in range(10):
        p.write(ptr + i * P, b"y")
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    madv(gr, ptr, 10 * P, uapi.MADV_DONTNEED)
    for i in range(10):
        ok = try_read(p, ptr + i * P)
        if i % 2 == 0:
            assert not ok, i
        else:
            assert ok, i
            want = b"\0" if gr.variant == ANON else b"y"
            assert p.read(ptr + i * P, 1) == want, i
        assert try_write(p, ptr + i * P) == ok, i
    p.munmap(ptr, 10 * P)


# 8. mlock ------------------------------------------------------------------------------
@variants(*ALL)
def test_mlock(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    for i in range(10):
        p.write(ptr + i * P, b"y")
    p.mlock(ptr, 10 * P)
    expect_errno(errno.EINVAL, p.madvise, ptr, 10 * P, uapi.MADV_GUARD_INSTALL)
    gr.k.check()
    p.munlock(ptr, 10 * P)
    install(gr, ptr, 5)
    for i in range(10):
        assert try_read_write(p, ptr + i * P) == (i >= 5), i
    p.mlock(ptr + 5 * P, 5 * P)
    remove(gr, ptr, 10)  # allowed on a locked range
    for i in range(10):
        assert try_read_write(p, ptr + i * P), i
    p.munmap(ptr, 10 * P)


# 9. mremap_move ------------------------------------------------------------------------
@variants(*ALL)
def test_mremap_move(gr):
    p = gr.p
    ptr = gr.mmap_(0, 5 * P, RW, 0)
    install(gr, ptr)
    install(gr, ptr + 4 * P)
    assert not try_read_write(p, ptr) and not try_read_write(p, ptr + 4 * P)
    ptr_new = gr.mmap_(0, 5 * P, uapi.PROT_NONE, 0)
    got = p.mremap(ptr, 5 * P, 5 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, ptr_new)
    gr.k.check()
    assert got == ptr_new
    assert not try_read_write(p, ptr_new) and not try_read_write(p, ptr_new + 4 * P)
    p.munmap(ptr_new, 5 * P)


# 10. mremap_expand ---------------------------------------------------------------------
@variants(*ALL)
def test_mremap_expand(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    p.munmap(ptr + 5 * P, 5 * P)
    install(gr, ptr)
    install(gr, ptr + 4 * P)
    assert p.mremap(ptr, 5 * P, 10 * P, 0) == ptr
    gr.k.check()
    assert not try_read_write(p, ptr) and not try_read_write(p, ptr + 4 * P)
    new = gr.mmap_(0, 20 * P, uapi.PROT_NONE, 0)
    got = p.mremap(ptr, 10 * P, 20 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, new)
    gr.k.check()
    assert got == new
    assert not try_read_write(p, new) and not try_read_write(p, new + 4 * P)
    p.munmap(new, 20 * P)


# 11. mremap_shrink ---------------------------------------------------------------------
@variants(*ALL)
def test_mremap_shrink(gr):
    p = gr.p
    ptr = gr.mmap_(0, 5 * P, RW, 0)
    install(gr, ptr)
    install(gr, ptr + 4 * P)
    ptr = p.mremap(ptr, 5 * P, 3 * P, uapi.MREMAP_MAYMOVE)
    gr.k.check()
    assert not try_read_write(p, ptr)
    assert try_read_write(p, ptr + P) and try_read_write(p, ptr + 2 * P)
    assert p.mremap(ptr, 3 * P, 5 * P, 0) == ptr  # grow in place
    gr.k.check()
    assert not try_read_write(p, ptr)
    for i in range(1, 5):
        assert try_read_write(p, ptr + i * P), i  # the marker of page 4 is gone for good
    p.munmap(ptr, 5 * P)


# 12. fork ------------------------------------------------------------------------------
@variants(*ALL)
def test_fork(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr, 5)
    child = p.fork()
    gr.k.check()
    if gr.design == "lossy":
        # The bug the negative control models: the VMA was never written, so it has no
        # anon_vma, nothing makes fork copy its page tables and the markers vanish.
        assert guard_pages(child, ptr, 10) == []
        for i in range(10):
            assert try_read_write(child, ptr + i * P), i
    else:
        assert guard_pages(child, ptr, 10) == [0, 1, 2, 3, 4]
        for i in range(10):
            assert try_read_write(child, ptr + i * P) == (i >= 5), i
    remove_in(child, ptr, 10)
    gr.k.check()
    child.exit()
    gr.k.check()
    for i in range(10):
        assert try_read_write(p, ptr + i * P) == (i >= 5), i
    p.munmap(ptr, 10 * P)


def remove_in(proc, addr, npages):
    proc.madvise(addr, npages * P, uapi.MADV_GUARD_REMOVE)


# 13. fork_cow --------------------------------------------------------------------------
@variants(ANON)
def test_fork_cow(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    data = bytes(ord("a") + (i % 26) for i in range(10 * P))
    p.write(ptr, data)
    child = p.fork()
    assert child.read(ptr, 10 * P) == data
    child.madvise(ptr, 10 * P, uapi.MADV_GUARD_INSTALL)
    child.madvise(ptr, 10 * P, uapi.MADV_GUARD_REMOVE)
    gr.k.check()
    assert child.read(ptr, 10 * P) == bytes(10 * P)
    child.exit()
    gr.k.check()
    assert p.read(ptr, 10 * P) == data
    p.munmap(ptr, 10 * P)


# 14. fork_wipeonfork -------------------------------------------------------------------
@variants(ANON)
def test_fork_wipeonfork(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    madv(gr, ptr, 10 * P, uapi.MADV_WIPEONFORK)
    install(gr, ptr, 5)
    child = p.fork()
    gr.k.check()
    for i in range(10):
        assert try_read_write(child, ptr + i * P), i
    child.exit()
    for i in range(10):
        assert try_read_write(p, ptr + i * P) == (i >= 5), i
    p.munmap(ptr, 10 * P)


# 15. lazyfree --------------------------------------------------------------------------
@variants(ANON)
def test_lazyfree(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr, 10)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    madv(gr, ptr, 10 * P, uapi.MADV_FREE)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    p.munmap(ptr, 10 * P)


# 16. populate --------------------------------------------------------------------------
@variants(*ALL)
def test_populate(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr, 10)
    expect_errno(errno.EFAULT, p.madvise, ptr, 10 * P, uapi.MADV_POPULATE_READ)
    gr.k.check()
    expect_errno(errno.EFAULT, p.madvise, ptr, 10 * P, uapi.MADV_POPULATE_WRITE)
    gr.k.check()
    p.munmap(ptr, 10 * P)


# 17. cold_pageout ----------------------------------------------------------------------
@variants(*ALL)
def test_cold_pageout(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    install(gr, ptr, 10)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    madv(gr, ptr, 10 * P, uapi.MADV_COLD)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    madv(gr, ptr, 10 * P, uapi.MADV_PAGEOUT)
    assert not any(try_read_write(p, ptr + i * P) for i in range(10))
    p.munmap(ptr, 10 * P)


# 18. uffd ------------------------------------------------------------------------------
@variants(ANON, SHMEM)
def test_uffd(gr):
    pytest.skip("userfaultfd is not modelled by vmalab (no uffd API in the contract)")


# 19. madvise_sequential ----------------------------------------------------------------
@variants(SHMEM, FILE)
def test_madvise_sequential(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    assert check_pattern(p, ptr, 10)
    madv(gr, ptr, 10 * P, uapi.MADV_SEQUENTIAL)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    madv(gr, ptr, 10 * P, uapi.MADV_PAGEOUT)
    for i in range(10):
        if i % 2 == 0:
            assert not try_read(p, ptr + i * P) and not try_write(p, ptr + i * P), i
        else:
            assert p.read(ptr + i * P, 1) == pattern_byte(i), i
    remove(gr, ptr, 10)
    assert check_pattern(p, ptr, 10)
    p.munmap(ptr, 10 * P)


# 20. map_private -----------------------------------------------------------------------
@variants(SHMEM, FILE)
def test_map_private(gr):
    p = gr.p
    shared = gr.mmap_(0, 10 * P, RW, 0)
    private = p.mmap(0, 10 * P, RW, uapi.MAP_PRIVATE, gr.fd, 0)
    set_pattern(p, shared, 10)
    for i in range(0, 10, 2):
        install(gr, shared + i * P)
    for i in range(10):
        assert try_read(p, shared + i * P) == (i % 2 == 1), i
        assert try_read(p, private + i * P), i
    for i in range(0, 10, 2):
        install(gr, private + i * P)
    for i in range(10):
        assert try_read(p, shared + i * P) == (i % 2 == 1), i
        assert try_read(p, private + i * P) == (i % 2 == 1), i
    remove(gr, shared, 10)
    for i in range(10):
        assert try_read(p, shared + i * P), i
        assert try_read(p, private + i * P) == (i % 2 == 1), i
    remove(gr, private, 10)
    for i in range(10):
        assert try_read(p, shared + i * P) and try_read(p, private + i * P), i
    assert check_pattern(p, shared, 10) and check_pattern(p, private, 10)
    for i in range(0, 10, 2):  # CoW the even private pages into anonymous pages
        p.write(private + i * P, pattern_byte(i) * P)
    install(gr, private, 5)
    for i in range(10):
        assert try_read(p, private + i * P) == (i >= 5), i
        assert try_read(p, shared + i * P), i
    remove(gr, private, 10)
    for i in range(10):
        if i < 5 or i % 2 == 0:
            assert p.read(private + i * P, P) == p.read(shared + i * P, P), i
        else:
            assert p.read(private + i * P, P) == pattern_byte(i) * P, i
    p.munmap(shared, 10 * P)
    p.munmap(private, 10 * P)


# 21. readonly_file ---------------------------------------------------------------------
@variants(FILE)
def test_readonly_file(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    p.munmap(ptr, 10 * P)
    p.close(gr.fd)
    gr.fd = p.open(gr.path, uapi.O_RDONLY)
    ptr = p.mmap(0, 10 * P, uapi.PROT_READ, uapi.MAP_SHARED, gr.fd, 0)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i % 2 == 1), i
    remove(gr, ptr, 10)
    assert check_pattern(p, ptr, 10)
    p.munmap(ptr, 10 * P)


# 22. fault_around ----------------------------------------------------------------------
@variants(SHMEM, FILE)
def test_fault_around(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    madv(gr, ptr, 10 * P, uapi.MADV_PAGEOUT)
    p.munmap(ptr, 10 * P)
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    for i in range(1, 10, 2):
        assert try_read(p, ptr + i * P), i
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i % 2 == 1), i
    assert guard_pages(p, ptr, 10) == [0, 2, 4, 6, 8]
    p.munmap(ptr, 10 * P)


# 23. truncation ------------------------------------------------------------------------
@variants(SHMEM, FILE)
def test_truncation(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)

    def check():
        for i in range(10):
            assert try_read_write(p, ptr + i * P) == (i % 2 == 1), i

    check()
    p.ftruncate(gr.fd, 10 * P)
    gr.k.check()
    check()
    p.ftruncate(gr.fd, 5 * P)
    p.ftruncate(gr.fd, 10 * P)
    gr.k.check()
    check()
    p.munmap(ptr, 10 * P)


# 24. hole_punch ------------------------------------------------------------------------
@variants(SHMEM, FILE)
def test_hole_punch(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    install(gr, ptr + 3 * P, 4)
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i < 3 or i >= 7), i
    madv(gr, ptr + 3 * P, 4 * P, uapi.MADV_REMOVE)
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i < 3 or i >= 7), i
    remove(gr, ptr, 10)
    assert check_pattern(p, ptr, 3)
    assert p.read(ptr + 3 * P, 4 * P) == bytes(4 * P)
    assert check_pattern_offset(p, ptr, 3, 7)
    p.munmap(ptr, 10 * P)


# 25. memfd_write_seal ------------------------------------------------------------------
@variants(SHMEM)
def test_memfd_write_seal(gr):
    p = gr.p
    p.close(gr.fd)
    gr.fd = p.memfd_create("guard_regions_memfd_seals_test", uapi.MFD_ALLOW_SEALING)
    p.ftruncate(gr.fd, 10 * P)
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    set_pattern(p, ptr, 10)
    p.munmap(ptr, 10 * P)
    p.add_seals(gr.fd, uapi.F_SEAL_WRITE)
    ptr = gr.mmap_(0, 10 * P, uapi.PROT_READ, 0)
    assert check_pattern(p, ptr, 10)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i % 2 == 1), i
    remove(gr, ptr, 10)
    assert check_pattern(p, ptr, 10)
    for i in range(10):
        assert not try_write(p, ptr + i * P), i
    p.munmap(ptr, 10 * P)


# 26. anon_zeropage ---------------------------------------------------------------------
@variants(ANON, SHMEM)
def test_anon_zeropage(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, uapi.PROT_READ, 0)
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    for i in range(10):
        assert try_read(p, ptr + i * P) == (i % 2 == 1), i
    remove(gr, ptr, 10)
    for i in range(10):
        assert try_read(p, ptr + i * P), i
    assert p.read(ptr, 10 * P) == bytes(10 * P)
    p.munmap(ptr, 10 * P)


# 27. pagemap ---------------------------------------------------------------------------
@variants(*ALL)
def test_pagemap(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    for e in p.pagemap(ptr, 10):
        assert e & uapi.PM_GUARD_REGION == 0
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    for i, e in enumerate(p.pagemap(ptr, 10)):
        assert bool(e & uapi.PM_GUARD_REGION) == (i % 2 == 0), i
    p.munmap(ptr, 10 * P)


# 28. pagemap_scan ----------------------------------------------------------------------
def guard_regions_from_pagemap(p, start: int, npages: int) -> list[tuple[int, int]]:
    """PAGEMAP_SCAN(PAGE_IS_GUARD) rebuilt from pagemap bit 58: maximal guard runs.

    The PAGEMAP_SCAN ioctl itself is not in the contract; its PAGE_IS_GUARD category is
    defined from the same is_guard_swp_entry() test as PM_GUARD_REGION (fs/proc/task_mmu.c).
    """
    runs: list[tuple[int, int]] = []
    for i, e in enumerate(p.pagemap(start, npages)):
        if e & uapi.PM_GUARD_REGION:
            a = start + i * P
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], a + P)
            else:
                runs.append((a, a + P))
    return runs


@variants(*ALL)
def test_pagemap_scan(gr):
    p = gr.p
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    assert guard_regions_from_pagemap(p, ptr, 10) == []
    for i in range(0, 10, 2):
        install(gr, ptr + i * P)
    regions = guard_regions_from_pagemap(p, ptr, 10)
    assert regions == [(ptr + 2 * k * P, ptr + 2 * k * P + P) for k in range(5)]
    p.munmap(ptr, 10 * P)


# 29. collapse --------------------------------------------------------------------------
@variants(*ALL)
def test_collapse(gr):
    p = gr.p
    hpage = 512 * P
    size = 2 * hpage
    if gr.variant != ANON:
        p.ftruncate(gr.fd, size)
    # 2 MiB-align the mapping so that the range covers two whole PMDs.
    resv = p.mmap(0, size + hpage, uapi.PROT_NONE, PRIV_ANON)
    aligned = (resv + hpage - 1) // hpage * hpage
    p.munmap(resv, size + hpage)
    ptr = gr.mmap_(aligned, size, uapi.PROT_READ, FIXED)
    madv(gr, ptr, size, uapi.MADV_NOHUGEPAGE)
    madv(gr, ptr, size, uapi.MADV_POPULATE_READ)
    for i in range(0, size // P, 2):
        p.madvise(ptr + i * P, P, uapi.MADV_GUARD_INSTALL)
    gr.k.check()
    for i in range(0, size // P, 2):
        assert not try_read(p, ptr + i * P), i
    madv(gr, ptr, size, uapi.MADV_HUGEPAGE)
    if gr.design == "lossy" and gr.variant != ANON:
        # lossy keeps no per-VMA record, so retract_page_tables() frees the marker
        # tables of a file VMA and the collapse succeeds: the guards are lost
        # (vmalab.mm.khugepaged.collapse_file; the kernel's VMAs keep an anon_vma).
        p.madvise(ptr, size, uapi.MADV_COLLAPSE)
        assert guard_pages(p, ptr, size // P) == []
        gr.k.check()
        return
    expect_errno(errno.EINVAL, p.madvise, ptr, size, uapi.MADV_COLLAPSE)
    gr.k.check()
    for i in range(0, size // P, 2):
        assert not try_read(p, ptr + i * P), i
    assert len(guard_pages(p, ptr, size // P)) == size // P // 2
    p.munmap(ptr, size)


# 30. smaps -----------------------------------------------------------------------------
@variants(*ALL)
def test_smaps(gr):
    p = gr.p
    shows_gu = gr.design == "sticky"  # VM_MAYBE_GUARD exists only in the sticky design
    ptr = gr.mmap_(0, 10 * P, RW, 0)
    assert not has_gu(p, ptr)
    install(gr, ptr)
    assert has_gu(p, ptr) == shows_gu
    remove(gr, ptr)
    assert has_gu(p, ptr) == shows_gu  # sticky: never cleared
    for i in range(10):
        install(gr, ptr + i * P)
        assert has_gu(p, ptr + i * P) == shows_gu, i
    p.munmap(ptr + 4 * P, P)
    assert layout(p, ptr, ptr + 10 * P) == [(ptr, ptr + 4 * P), (ptr + 5 * P, ptr + 10 * P)]
    assert has_gu(p, ptr) == shows_gu and has_gu(p, ptr + 5 * P) == shows_gu
    if gr.local_fs_has_sane_mmap():
        gr.mmap_(ptr + 4 * P, P, RW, FIXED, 4 * P)
        gr.k.check()
        assert layout(p, ptr, ptr + 10 * P) == [(ptr, ptr + 10 * P)]
        assert has_gu(p, ptr) == shows_gu
    p.munmap(ptr, 10 * P)
