"""Argument checks and error returns of the contract's syscalls.

Every errno below is what Linux 6.18.44 returned for the same call (probed with ctypes on
the project machine, see the report) or is stated in kernel-semantics.md. After each
failure Kernel.check() must pass and — unless the kernel applies part of the call before
failing, which is asserted explicitly — nothing observable may have changed.
"""

from __future__ import annotations

import errno

import pytest
from mmtest_util import (
    BASE,
    FIXED,
    PRIV_ANON,
    RW,
    P,
    guard_pages,
    rel_layout,
    try_read,
    vma_at,
)

import vmalab
from vmalab import Kernel, uapi

SHARED = uapi.MAP_SHARED
MFD_SEALS = uapi.MFD_ALLOW_SEALING
F_ADD_SEALS_NOT_ALLOWED = errno.EPERM


def snapshot(k, p):
    vmas = p.vmas()
    return (
        p.maps(),
        [(v.start, v.end, v.pgoff, v.flags, v.path, v.anon_vma, v.anon_vma_flags) for v in vmas],
        [tuple(p.pagemap(v.start, (v.end - v.start) // P)) for v in vmas],
        {name: s.active for name, s in k.slab().items()},
    )


def fails(k, p, code, fn, *args, changes=False, **kw):
    """Call fn, expect OSError(code), then check invariants and (by default) no change."""
    before = snapshot(k, p)
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == code, f"expected {errno.errorcode[code]}, got {ei.value!r}"
    k.check()
    if not changes:
        assert snapshot(k, p) == before


def noop(k, p, fn, *args):
    """A call that the kernel accepts but that must change nothing."""
    before = snapshot(k, p)
    fn(*args)
    k.check()
    assert snapshot(k, p) == before


def setup10(p, prot=RW):
    return p.mmap(BASE, 10 * P, prot, PRIV_ANON | FIXED)


# --- mmap ------------------------------------------------------------------------------
def test_mmap_zero_length(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.mmap, 0, 0, RW, PRIV_ANON)


@pytest.mark.parametrize("length", [2**63, 2**64 - P + 1])
def test_mmap_huge_or_overflowing_length(kp, length):
    k, p = kp  # PAGE_ALIGN(len) == 0 or > TASK_SIZE: ENOMEM (measured)
    setup10(p)
    fails(k, p, errno.ENOMEM, p.mmap, 0, length, RW, PRIV_ANON)


def test_mmap_fixed_unaligned(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.mmap, BASE + 20 * P + 1, P, RW, PRIV_ANON | FIXED)


def test_mmap_unaligned_hint_is_rounded(kp):
    k, p = kp
    a = p.mmap(BASE + 20 * P + 1, P, RW, PRIV_ANON)
    assert a % P == 0
    k.check()


def test_mmap_unaligned_offset(kp):
    k, p = kp
    fd = p.memfd_create("m")
    p.ftruncate(fd, 4 * P)
    fails(k, p, errno.EINVAL, p.mmap, 0, P, RW, SHARED, fd, 1)
    fails(k, p, errno.EINVAL, p.mmap, 0, P, RW, PRIV_ANON, -1, 1)


def test_mmap_no_map_type(kp):
    k, p = kp
    fails(k, p, errno.EINVAL, p.mmap, 0, P, RW, uapi.MAP_ANONYMOUS)


def test_mmap_fixed_noreplace(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EEXIST, p.mmap, BASE, P, RW, PRIV_ANON | uapi.MAP_FIXED_NOREPLACE)
    fails(k, p, errno.EEXIST, p.mmap, BASE + 9 * P, 2 * P, RW, PRIV_ANON | uapi.MAP_FIXED_NOREPLACE)
    # Into free space it behaves like MAP_FIXED.
    assert p.mmap(BASE + 20 * P, P, RW, PRIV_ANON | uapi.MAP_FIXED_NOREPLACE) == BASE + 20 * P
    k.check()


@pytest.mark.parametrize("flags", [SHARED, uapi.MAP_PRIVATE])
def test_mmap_bad_fd(kp, flags):
    k, p = kp
    fails(k, p, errno.EBADF, p.mmap, 0, P, RW, flags, 999)
    fails(k, p, errno.EBADF, p.mmap, 0, P, RW, flags, -1)
    fd = p.memfd_create("m")
    p.close(fd)
    fails(k, p, errno.EBADF, p.mmap, 0, P, RW, flags, fd)


def test_mmap_shared_write_on_rdonly_file(kp):
    k, p = kp
    fd = p.open("/f", uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, 4 * P)
    p.close(fd)
    ro = p.open("/f", uapi.O_RDONLY)
    fails(k, p, errno.EACCES, p.mmap, 0, P, RW, SHARED, ro)
    a = p.mmap(0, P, uapi.PROT_READ, SHARED, ro)  # read-only shared: fine
    fails(k, p, errno.EACCES, p.mprotect, a, P, RW)  # no VM_MAYWRITE
    assert "mw" not in vma_at(p, a).flags
    b = p.mmap(0, P, RW, uapi.MAP_PRIVATE, ro)  # private writable copy: fine
    p.write(b, b"z")
    k.check()


def test_mmap_wronly_file(kp):
    k, p = kp
    fd = p.open("/w", uapi.O_WRONLY | uapi.O_CREAT)
    p.ftruncate(fd, P)
    fails(k, p, errno.EACCES, p.mmap, 0, P, uapi.PROT_READ, SHARED, fd)
    fails(k, p, errno.EACCES, p.mmap, 0, P, uapi.PROT_READ, uapi.MAP_PRIVATE, fd)


def test_mmap_write_sealed_memfd(kp):
    k, p = kp
    fd = p.memfd_create("s", MFD_SEALS)
    p.ftruncate(fd, 4 * P)
    p.add_seals(fd, uapi.F_SEAL_WRITE)
    fails(k, p, errno.EPERM, p.mmap, 0, P, RW, SHARED, fd)
    a = p.mmap(0, P, uapi.PROT_READ, SHARED, fd)
    fails(k, p, errno.EACCES, p.mprotect, a, P, RW)
    p.mmap(0, P, RW, uapi.MAP_PRIVATE, fd)  # private mappings are allowed
    k.check()


# --- munmap ----------------------------------------------------------------------------
def test_munmap_checks(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.munmap, BASE, 0)
    fails(k, p, errno.EINVAL, p.munmap, BASE + 1, P)
    fails(k, p, errno.EINVAL, p.munmap, BASE, 2**64 - P)
    noop(k, p, p.munmap, BASE + 50 * P, P)  # nothing mapped: success


# --- mprotect --------------------------------------------------------------------------
def test_mprotect_checks(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.mprotect, BASE + 1, P, uapi.PROT_READ)
    fails(k, p, errno.EINVAL, p.mprotect, BASE, P, 0x10)
    fails(k, p, errno.ENOMEM, p.mprotect, BASE + 50 * P, P, uapi.PROT_READ)
    fails(k, p, errno.ENOMEM, p.mprotect, BASE, 2**64 - P, uapi.PROT_READ)
    noop(k, p, p.mprotect, BASE, 0, uapi.PROT_READ)


def test_mprotect_over_hole_applies_up_to_the_hole(kp):
    k, p = kp
    setup10(p)
    p.munmap(BASE + 5 * P, P)
    fails(k, p, errno.ENOMEM, p.mprotect, BASE, 10 * P, uapi.PROT_READ, changes=True)
    # measured: [0,5) became r--, [6,10) is unchanged
    assert rel_layout(p, BASE, 10) == [(0, 5), (6, 10)]
    assert "wr" not in vma_at(p, BASE).flags
    assert "wr" in vma_at(p, BASE + 6 * P).flags


# --- mremap ----------------------------------------------------------------------------
def test_mremap_checks(kp):
    k, p = kp
    setup10(p)
    mm = uapi.MREMAP_MAYMOVE
    fails(k, p, errno.EINVAL, p.mremap, BASE + 1, P, P, 0)
    fails(k, p, errno.EINVAL, p.mremap, BASE, P, 0, mm)
    fails(k, p, errno.EINVAL, p.mremap, BASE, P, P, 8)
    fails(k, p, errno.EINVAL, p.mremap, BASE, P, P, uapi.MREMAP_FIXED, BASE + 60 * P)
    fails(k, p, errno.EINVAL, p.mremap, BASE, P, P, mm | uapi.MREMAP_FIXED, BASE + 60 * P + 1)
    # new range overlapping the old one
    fails(k, p, errno.EINVAL, p.mremap, BASE, 2 * P, 2 * P, mm | uapi.MREMAP_FIXED, BASE + P)
    # MREMAP_DONTUNMAP needs MAYMOVE and old_len == new_len
    fails(
        k,
        p,
        errno.EINVAL,
        p.mremap,
        BASE,
        2 * P,
        3 * P,
        mm | uapi.MREMAP_DONTUNMAP | uapi.MREMAP_FIXED,
        BASE + 60 * P,
    )
    fails(k, p, errno.EFAULT, p.mremap, BASE + 50 * P, P, 2 * P, mm)


def test_mremap_spanning_two_vmas(kp):
    k, p = kp
    setup10(p)
    p.mprotect(BASE + 5 * P, 5 * P, uapi.PROT_READ)
    fails(k, p, errno.EFAULT, p.mremap, BASE, 10 * P, 20 * P, uapi.MREMAP_MAYMOVE)
    fails(k, p, errno.EFAULT, p.mremap, BASE + 4 * P, 2 * P, 3 * P, uapi.MREMAP_MAYMOVE)


def test_mremap_shrink_needs_only_the_first_vma(kp):
    """Measured on 6.18.44: a shrink (or same-size call) without MREMAP_FIXED only needs a
    VMA at old_addr; the old range may span VMAs or holes, and the tail is unmapped."""
    k, p = kp
    setup10(p)
    p.mprotect(BASE + 5 * P, 5 * P, uapi.PROT_READ)
    assert p.mremap(BASE, 10 * P, 10 * P, 0) == BASE  # same size: nothing to do
    assert rel_layout(p, BASE, 20) == [(0, 5), (5, 10)]
    assert p.mremap(BASE + 3 * P, 4 * P, P, uapi.MREMAP_MAYMOVE) == BASE + 3 * P
    k.check()
    assert rel_layout(p, BASE, 20) == [(0, 4), (7, 10)]
    assert p.mremap(BASE + 8 * P, 4 * P, P, 0) == BASE + 8 * P  # runs past the end
    assert rel_layout(p, BASE, 20) == [(0, 4), (7, 9)]
    fails(k, p, errno.EFAULT, p.mremap, BASE + 50 * P, 2 * P, P, 0)  # no VMA at old_addr
    fails(k, p, errno.EFAULT, p.mremap, BASE + 50 * P, 2 * P, 2 * P, uapi.MREMAP_MAYMOVE)


def test_mremap_grow_in_place_blocked(kp):
    k, p = kp
    setup10(p)
    p.munmap(BASE + 5 * P, P)
    fails(k, p, errno.ENOMEM, p.mremap, BASE, 5 * P, 7 * P, 0)


# --- madvise ---------------------------------------------------------------------------
def test_madvise_checks(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.madvise, BASE + 1, P, uapi.MADV_DONTNEED)
    for bad in (77, 104, 108, -1):
        fails(k, p, errno.EINVAL, p.madvise, BASE, P, bad)
    fails(k, p, errno.EINVAL, p.madvise, BASE, 2**64 - P, uapi.MADV_DONTNEED)
    fails(k, p, errno.ENOMEM, p.madvise, BASE + 50 * P, P, uapi.MADV_DONTNEED)
    fails(k, p, errno.ENOMEM, p.madvise, BASE + 50 * P, P, uapi.MADV_GUARD_INSTALL)
    fails(k, p, errno.ENOMEM, p.madvise, BASE + 50 * P, P, uapi.MADV_GUARD_REMOVE)
    noop(k, p, p.madvise, BASE, 0, uapi.MADV_GUARD_INSTALL)  # len 0: success, nothing done
    noop(k, p, p.madvise, BASE, 0, uapi.MADV_DONTNEED)


def test_madvise_over_hole_applied_but_enomem(kp):
    k, p = kp
    setup10(p)
    p.munmap(BASE + 5 * P, P)
    fails(k, p, errno.ENOMEM, p.madvise, BASE, 10 * P, uapi.MADV_DONTDUMP, changes=True)
    assert "dd" in vma_at(p, BASE).flags and "dd" in vma_at(p, BASE + 6 * P).flags
    fails(k, p, errno.ENOMEM, p.madvise, BASE, 10 * P, uapi.MADV_GUARD_INSTALL, changes=True)
    assert guard_pages(p, BASE, 5) == list(range(5))
    assert guard_pages(p, BASE + 6 * P, 4) == list(range(4))
    fails(k, p, errno.ENOMEM, p.madvise, BASE, 10 * P, uapi.MADV_GUARD_REMOVE, changes=True)
    assert guard_pages(p, BASE, 10) == []


def test_guard_install_on_mlocked_vma(kp):
    k, p = kp
    setup10(p)
    p.mlock(BASE, 10 * P)
    fails(k, p, errno.EINVAL, p.madvise, BASE, P, uapi.MADV_GUARD_INSTALL)
    fails(k, p, errno.EINVAL, p.madvise, BASE, P, uapi.MADV_DONTNEED)
    fails(k, p, errno.EINVAL, p.madvise, BASE, P, uapi.MADV_FREE)
    p.madvise(BASE, P, uapi.MADV_GUARD_REMOVE)  # removal is allowed on locked VMAs
    k.check()


def test_guard_install_on_map_locked(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, PRIV_ANON | uapi.MAP_LOCKED)
    assert "lo" in vma_at(p, a).flags
    fails(k, p, errno.EINVAL, p.madvise, a, P, uapi.MADV_GUARD_INSTALL)


def test_guard_install_then_mlock(kp):
    """Measured: mlock over a guard returns ENOMEM yet leaves the VMA locked."""
    k, p = kp
    setup10(p)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    fails(k, p, errno.ENOMEM, p.mlock, BASE, 10 * P, changes=True)
    assert "lo" in vma_at(p, BASE).flags
    assert guard_pages(p, BASE, 10) == [2]
    fails(k, p, errno.EINVAL, p.madvise, BASE, P, uapi.MADV_GUARD_INSTALL)
    p.madvise(BASE, 10 * P, uapi.MADV_GUARD_REMOVE)
    assert guard_pages(p, BASE, 10) == []
    k.check()


def test_madvise_shared_only_and_private_only_advice(kp):
    k, p = kp
    a = p.mmap(0, 4 * P, RW, SHARED | uapi.MAP_ANONYMOUS)
    fails(k, p, errno.EINVAL, p.madvise, a, P, uapi.MADV_WIPEONFORK)
    fails(k, p, errno.EINVAL, p.madvise, a, P, uapi.MADV_FREE)
    b = setup10(p)
    p.madvise(b, P, uapi.MADV_WIPEONFORK)
    assert "wf" in vma_at(p, b).flags
    k.check()


def test_populate_over_guard_efault(kp):
    k, p = kp
    setup10(p)
    p.madvise(BASE + 4 * P, P, uapi.MADV_GUARD_INSTALL)
    for adv in (uapi.MADV_POPULATE_READ, uapi.MADV_POPULATE_WRITE):
        fails(k, p, errno.EFAULT, p.madvise, BASE + 4 * P, P, adv, changes=True)
    assert guard_pages(p, BASE, 10) == [4]


def test_process_madvise_bad_advice(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.process_madvise, [(BASE, P)], 77)
    fails(k, p, errno.EINVAL, p.process_madvise, [(BASE + 1, P)], uapi.MADV_GUARD_INSTALL)
    assert p.process_madvise([(BASE, 0)], uapi.MADV_GUARD_INSTALL) == 0


def test_process_madvise_stops_at_the_first_failing_range(kp):
    """Measured on 6.18.44 (vector_madvise): the bytes advised before the first error are
    returned; with none, the error; a range with a hole is applied, then ENOMEM stops."""
    k, p = kp
    p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    vec = [(BASE, P), (BASE + 50 * P, P), (BASE + 2 * P, P)]
    assert p.process_madvise(vec, uapi.MADV_GUARD_INSTALL) == P
    assert guard_pages(p, BASE, 4) == [0]
    fails(
        k,
        p,
        errno.ENOMEM,
        p.process_madvise,
        [(BASE + 50 * P, P), (BASE, P)],
        uapi.MADV_GUARD_REMOVE,
    )
    assert guard_pages(p, BASE, 4) == [0]
    fails(
        k,
        p,
        errno.ENOMEM,
        p.process_madvise,
        [(BASE + 3 * P, 3 * P), (BASE + P, P)],
        uapi.MADV_GUARD_INSTALL,
        changes=True,
    )
    assert guard_pages(p, BASE, 4) == [0, 3]


# --- mlock -----------------------------------------------------------------------------
def test_mlock_checks(kp):
    k, p = kp
    setup10(p)
    fails(k, p, errno.EINVAL, p.mlock, BASE, 2**64 - P)
    fails(k, p, errno.ENOMEM, p.mlock, BASE + 50 * P, P)
    noop(k, p, p.mlock, BASE, 0)
    p.mlock(BASE + 1, 1)  # start is rounded down, length rounded up: locks page 0
    assert "lo" in vma_at(p, BASE).flags
    assert rel_layout(p, BASE, 10) == [(0, 1), (1, 10)]
    k.check()


def test_mlock_over_hole_locks_up_to_the_hole(kp):
    k, p = kp
    setup10(p)
    p.munmap(BASE + 5 * P, P)
    fails(k, p, errno.ENOMEM, p.mlock, BASE, 10 * P, changes=True)
    assert "lo" in vma_at(p, BASE).flags
    assert "lo" not in vma_at(p, BASE + 6 * P).flags
    fails(k, p, errno.ENOMEM, p.munlock, BASE, 10 * P, changes=True)
    assert "lo" not in vma_at(p, BASE).flags


# --- files -----------------------------------------------------------------------------
def test_fd_calls_on_bad_fd(kp):
    k, p = kp
    fails(k, p, errno.EBADF, p.close, 999)
    fails(k, p, errno.EBADF, p.ftruncate, 999, P)
    fails(k, p, errno.EBADF, p.pwrite, 999, b"a", 0)
    fails(k, p, errno.EBADF, p.pread, 999, 1, 0)
    fails(k, p, errno.EBADF, p.add_seals, 999, uapi.F_SEAL_SEAL)
    fails(k, p, errno.EBADF, p.fallocate, 999, 0, 0, P)
    fd = p.memfd_create("m")
    p.close(fd)
    fails(k, p, errno.EBADF, p.close, fd)


def test_open_missing_file(kp):
    k, p = kp
    fails(k, p, errno.ENOENT, p.open, "/nope", uapi.O_RDWR)


def test_file_access_modes(kp):
    k, p = kp
    fd = p.open("/f", uapi.O_RDWR | uapi.O_CREAT)
    p.pwrite(fd, b"abc", 0)
    ro = p.open("/f", uapi.O_RDONLY)
    wo = p.open("/f", uapi.O_WRONLY)
    fails(k, p, errno.EINVAL, p.ftruncate, ro, P)
    fails(k, p, errno.EBADF, p.pwrite, ro, b"a", 0)
    fails(k, p, errno.EBADF, p.pread, wo, 1, 0)
    fails(k, p, errno.EINVAL, p.ftruncate, fd, -1)
    assert p.pread(ro, 3, 0) == b"abc"


def test_seals(kp):
    k, p = kp
    plain = p.memfd_create("plain")
    fails(k, p, errno.EPERM, p.add_seals, plain, uapi.F_SEAL_WRITE)
    reg = p.open("/r", uapi.O_RDWR | uapi.O_CREAT)
    fails(k, p, errno.EPERM, p.add_seals, reg, uapi.F_SEAL_WRITE)
    fd = p.memfd_create("s", MFD_SEALS)
    p.ftruncate(fd, 4 * P)
    p.add_seals(fd, uapi.F_SEAL_SHRINK | uapi.F_SEAL_GROW)
    fails(k, p, errno.EPERM, p.ftruncate, fd, P)
    fails(k, p, errno.EPERM, p.ftruncate, fd, 8 * P)
    p.ftruncate(fd, 4 * P)  # same size is fine
    w = p.mmap(0, P, RW, SHARED, fd)
    fails(k, p, errno.EBUSY, p.add_seals, fd, uapi.F_SEAL_WRITE)  # writable shared mapping
    p.munmap(w, P)
    p.add_seals(fd, uapi.F_SEAL_WRITE | uapi.F_SEAL_SEAL)
    fails(k, p, errno.EPERM, p.pwrite, fd, b"a", 0)
    fails(k, p, errno.EPERM, p.add_seals, fd, uapi.F_SEAL_GROW)
    k.check()


def test_fallocate_punch_needs_keep_size(kp):
    k, p = kp
    fd = p.memfd_create("m")
    p.ftruncate(fd, 4 * P)
    fails(k, p, errno.EOPNOTSUPP, p.fallocate, fd, uapi.FALLOC_FL_PUNCH_HOLE, 0, P)
    p.fallocate(fd, uapi.FALLOC_FL_PUNCH_HOLE | uapi.FALLOC_FL_KEEP_SIZE, 0, P)
    k.check()


# --- processes and kernels -------------------------------------------------------------
def test_exited_process_raises_process_lookup_error(kp):
    k, p = kp
    a = setup10(p)
    p.write(a, b"x")
    q = p.fork()
    q.exit()
    k.check()
    assert q not in k.processes
    calls = [
        lambda: q.mmap(0, P, RW, PRIV_ANON),
        lambda: q.munmap(a, P),
        lambda: q.mprotect(a, P, uapi.PROT_READ),
        lambda: q.mremap(a, P, 2 * P, uapi.MREMAP_MAYMOVE),
        lambda: q.madvise(a, P, uapi.MADV_DONTNEED),
        lambda: q.process_madvise([(a, P)], uapi.MADV_COLD),
        lambda: q.mlock(a, P),
        lambda: q.munlock(a, P),
        lambda: q.open("/x", uapi.O_RDWR | uapi.O_CREAT),
        lambda: q.memfd_create("m"),
        lambda: q.read(a, 1),
        lambda: q.write(a, b"y"),
        lambda: q.fork(),
        lambda: q.exit(),
        lambda: q.maps(),
        lambda: q.smaps(),
        lambda: q.pagemap(a),
        lambda: q.vmas(),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(ProcessLookupError):
            call()
        k.check()
        assert i >= 0
    assert p.read(a, 1) == b"x"  # the parent is untouched
    assert try_read(p, a)


def test_unknown_design():
    with pytest.raises(ValueError) as ei:
        Kernel("nope")
    for d in vmalab.DESIGNS:
        assert d in str(ei.value)


# --- populate and mlock on inaccessible memory (measured on 6.18.44) ---------------------
@pytest.mark.parametrize(
    "prot,advice",
    [
        (uapi.PROT_NONE, uapi.MADV_POPULATE_READ),
        (uapi.PROT_NONE, uapi.MADV_POPULATE_WRITE),
        (uapi.PROT_READ, uapi.MADV_POPULATE_WRITE),
        (uapi.PROT_WRITE, uapi.MADV_POPULATE_READ),
        (uapi.PROT_EXEC, uapi.MADV_POPULATE_READ),
    ],
)
def test_populate_without_permission_einval(kp, prot, advice):
    """faultin_page_range() with FOLL_MADV_POPULATE: check_vma_flags() failing gives
    -EINVAL ("incompatible mappings / permissions"), not -EFAULT."""
    k, p = kp
    p.mmap(BASE, 4 * P, prot, PRIV_ANON | FIXED)
    fails(k, p, errno.EINVAL, p.madvise, BASE, 4 * P, advice)


def test_populate_stops_at_a_hole(kp):
    """Unlike other advice, MADV_POPULATE_* is not applied past a hole: ENOMEM at once."""
    k, p = kp
    p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.mmap(BASE + 6 * P, 4 * P, RW, PRIV_ANON | FIXED)
    fails(k, p, errno.ENOMEM, p.madvise, BASE, 10 * P, uapi.MADV_POPULATE_READ, changes=True)
    present = [bool(e & uapi.PM_PRESENT) for e in p.pagemap(BASE, 10)]
    assert present == [True] * 4 + [False] * 6
    fails(k, p, errno.ENOMEM, p.madvise, BASE + 50 * P, P, uapi.MADV_POPULATE_WRITE)


@pytest.mark.parametrize("layout_", ["none", "read_then_none"])
def test_mlock_prot_none_enomem_but_locked(kp, layout_):
    """__mm_populate() fails on a PROT_NONE VMA (no FOLL_FORCE for inaccessible VMAs):
    mlock returns ENOMEM, yet the VMAs are VM_LOCKED and accessible pages before it are
    populated."""
    k, p = kp
    if layout_ == "none":
        p.mmap(BASE, 4 * P, uapi.PROT_NONE, PRIV_ANON | FIXED)
        want = [False] * 4
    else:
        p.mmap(BASE, 2 * P, uapi.PROT_READ, PRIV_ANON | FIXED)
        p.mmap(BASE + 2 * P, 2 * P, uapi.PROT_NONE, PRIV_ANON | FIXED)
        want = [True, True, False, False]
    fails(k, p, errno.ENOMEM, p.mlock, BASE, 4 * P, changes=True)
    assert all("lo" in v.flags for v in p.vmas())
    assert [bool(e & uapi.PM_PRESENT) for e in p.pagemap(BASE, 4)] == want


def test_madvise_stops_at_the_first_rejected_vma(kp):
    """Measured on 6.18.44: madvise_walk_vmas() applies the advice VMA by VMA and stops at
    the first VMA that rejects it (EINVAL); earlier VMAs keep the effect, later ones don't."""
    k, p = kp
    L = uapi.MAP_LOCKED
    p.mmap(BASE, 4 * P, RW, PRIV_ANON | FIXED)
    p.mmap(BASE + 4 * P, 4 * P, RW, PRIV_ANON | FIXED | L)
    p.mmap(BASE + 8 * P, 4 * P, uapi.PROT_READ, PRIV_ANON | FIXED)
    fails(k, p, errno.EINVAL, p.madvise, BASE, 12 * P, uapi.MADV_GUARD_INSTALL, changes=True)
    assert guard_pages(p, BASE, 12) == [0, 1, 2, 3]
    p.madvise(BASE + 8 * P, 4 * P, uapi.MADV_GUARD_INSTALL)
    p.madvise(BASE, 12 * P, uapi.MADV_GUARD_REMOVE)  # removal accepts the locked VMA
    assert guard_pages(p, BASE, 12) == []
    b = BASE + 20 * P
    p.mmap(b, 4 * P, RW, PRIV_ANON | FIXED)
    p.mmap(b + 4 * P, 4 * P, RW, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS | FIXED)
    p.mmap(b + 8 * P, 4 * P, uapi.PROT_READ, PRIV_ANON | FIXED)
    fails(k, p, errno.EINVAL, p.madvise, b, 12 * P, uapi.MADV_WIPEONFORK, changes=True)
    assert ["wf" in vma_at(p, b + i * P).flags for i in (0, 4, 8)] == [True, False, False]
    c = BASE + 40 * P
    p.mmap(c, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(c, b"1" * (4 * P))
    p.mmap(c + 4 * P, 4 * P, RW, PRIV_ANON | FIXED | L)
    p.mmap(c + 8 * P, 4 * P, RW, PRIV_ANON | FIXED)
    p.write(c + 8 * P, b"1" * (4 * P))
    fails(k, p, errno.EINVAL, p.madvise, c, 12 * P, uapi.MADV_DONTNEED, changes=True)
    present = [bool(e & uapi.PM_PRESENT) for e in p.pagemap(c, 12)]
    assert present == [False] * 4 + [True] * 8
