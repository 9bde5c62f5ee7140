"""VMA merge and split rules (mm/vma.c), after tools/testing/vma and selftests/mm/merge.c.

Layouts are page indices relative to BASE. Every layout asserted here was either measured on
Linux 6.18.44 (same sequence through ctypes) or follows from kernel-semantics.md §6 and §3.3.
"""

from __future__ import annotations

import errno

import pytest
from mmtest_util import (
    BASE,
    DESIGN_IDS,
    FIXED,
    PRIV_ANON,
    RW,
    P,
    guard_pages,
    rel_layout,
    vma_at,
)

from vmalab import Kernel, uapi

R = uapi.PROT_READ
SHARED_ANON = uapi.MAP_SHARED | uapi.MAP_ANONYMOUS


def lay(p, n=200):
    return rel_layout(p, BASE, n)


def m(p, start, npages, prot=RW, flags=PRIV_ANON, fd=-1, off=0):
    return p.mmap(BASE + start * P, npages * P, prot, flags | FIXED, fd, off)


def at(p, page):
    return vma_at(p, BASE + page * P)


def write(p, page):
    p.write(BASE + page * P, b"w")


# --- new-range merges ------------------------------------------------------------------
def test_new_merge_with_prev(kp):
    k, p = kp
    m(p, 0, 4)
    m(p, 4, 4)
    k.check()
    assert lay(p) == [(0, 8)]
    assert at(p, 0).pgoff == BASE // P  # private anon pgoff = addr >> PAGE_SHIFT


def test_new_merge_with_next(kp):
    k, p = kp
    m(p, 4, 4)
    m(p, 0, 4)
    assert lay(p) == [(0, 8)]
    assert at(p, 0).pgoff == BASE // P


def test_new_merge_both_sides(kp):
    k, p = kp
    m(p, 0, 4)
    m(p, 5, 4)
    m(p, 4, 1)
    assert lay(p) == [(0, 9)]


@pytest.mark.parametrize(
    "prot,flags",
    [
        (R, PRIV_ANON),  # different protection
        (RW, PRIV_ANON | uapi.MAP_NORESERVE),  # nr vs ac (measured)
        (RW, SHARED_ANON),  # a new shmem object
        (RW, PRIV_ANON | uapi.MAP_LOCKED),
    ],
)
def test_new_merge_none(kp, prot, flags):
    k, p = kp
    m(p, 0, 4)
    m(p, 8, 4)
    m(p, 4, 4, prot, flags)
    assert lay(p) == [(0, 4), (4, 8), (8, 12)]


def test_shared_anon_never_merges(kp):
    k, p = kp
    m(p, 0, 4, RW, SHARED_ANON)
    m(p, 4, 4, RW, SHARED_ANON)
    assert lay(p) == [(0, 4), (4, 8)]
    assert at(p, 0).pgoff == 0 and at(p, 4).pgoff == 0  # shmem objects start at pgoff 0


@pytest.mark.parametrize("flags", [uapi.MAP_SHARED, uapi.MAP_PRIVATE])
def test_file_pgoff_contiguity(kp, flags):
    k, p = kp
    fd = p.memfd_create("f")
    p.ftruncate(fd, 64 * P)
    m(p, 0, 4, RW, flags, fd, 0)
    m(p, 4, 4, RW, flags, fd, 4 * P)  # contiguous: merges
    assert lay(p) == [(0, 8)]
    assert at(p, 0).pgoff == 0
    m(p, 8, 4, RW, flags, fd, 0)  # offset 0 again: not contiguous
    assert lay(p) == [(0, 8), (8, 12)]
    assert at(p, 8).pgoff == 0
    other = p.memfd_create("g")
    p.ftruncate(other, 64 * P)
    m(p, 12, 4, RW, flags, other, 12 * P)  # another file never merges
    assert lay(p) == [(0, 8), (8, 12), (12, 16)]
    m(p, 20, 4, RW, flags, fd, 20 * P)
    m(p, 16, 4, RW, flags, fd, 16 * P)  # merge with next
    assert lay(p) == [(0, 8), (8, 12), (12, 16), (16, 24)]
    assert at(p, 16).pgoff == 16


def test_file_and_anon_never_merge(kp):
    k, p = kp
    fd = p.memfd_create("f")
    p.ftruncate(fd, 8 * P)
    m(p, 0, 4, RW, uapi.MAP_PRIVATE, fd, 0)
    m(p, 4, 4)
    assert lay(p) == [(0, 4), (4, 8)]


# --- existing-range merges -------------------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(0, 3), (3, 6), (7, 10), (0, 10)])
def test_mprotect_split_and_remerge(kp, lo, hi):
    k, p = kp
    m(p, 0, 10)
    p.mprotect(BASE + lo * P, (hi - lo) * P, R)
    k.check()
    want = [(a, b) for a, b in [(0, lo), (lo, hi), (hi, 10)] if a < b]
    assert lay(p) == want
    assert "wr" not in at(p, lo).flags
    p.mprotect(BASE + lo * P, (hi - lo) * P, RW)
    k.check()
    assert lay(p) == [(0, 10)]


def test_mprotect_partial_merge_into_prev(kp):
    k, p = kp
    m(p, 0, 4, R)
    m(p, 4, 4, RW)
    p.mprotect(BASE + 4 * P, 2 * P, R)
    assert lay(p) == [(0, 6), (6, 8)]
    assert "wr" in at(p, 6).flags and at(p, 6).pgoff == BASE // P + 6


def test_mprotect_partial_merge_into_next(kp):
    k, p = kp
    m(p, 0, 4, RW)
    m(p, 4, 4, R)
    p.mprotect(BASE + 2 * P, 2 * P, R)
    assert lay(p) == [(0, 2), (2, 8)]
    assert at(p, 2).pgoff == BASE // P + 2


def test_mprotect_merge_both_sides(kp):
    k, p = kp
    m(p, 0, 9, R)
    p.mprotect(BASE + 3 * P, 3 * P, RW)
    assert lay(p) == [(0, 3), (3, 6), (6, 9)]
    p.mprotect(BASE + 3 * P, 3 * P, R)
    assert lay(p) == [(0, 9)]


@pytest.mark.parametrize(
    "on,off,mnemonic",
    [
        (uapi.MADV_DONTDUMP, uapi.MADV_DODUMP, "dd"),
        (uapi.MADV_DONTFORK, uapi.MADV_DOFORK, "dc"),
        (uapi.MADV_WIPEONFORK, uapi.MADV_KEEPONFORK, "wf"),
        (uapi.MADV_RANDOM, uapi.MADV_NORMAL, "rr"),
        (uapi.MADV_SEQUENTIAL, uapi.MADV_NORMAL, "sr"),
    ],
)
@pytest.mark.parametrize("lo,hi", [(0, 3), (3, 6), (7, 10)])
def test_madvise_flag_split_and_remerge(kp, on, off, mnemonic, lo, hi):
    k, p = kp
    m(p, 0, 10)
    p.madvise(BASE + lo * P, (hi - lo) * P, on)
    k.check()
    assert lay(p) == [(a, b) for a, b in [(0, lo), (lo, hi), (hi, 10)] if a < b]
    assert mnemonic in at(p, lo).flags
    assert all(mnemonic not in v.flags for v in p.vmas() if v.start != BASE + lo * P)
    p.madvise(BASE + lo * P, (hi - lo) * P, off)
    k.check()
    assert lay(p) == [(0, 10)]


@pytest.mark.parametrize("lo,hi", [(0, 3), (3, 6), (7, 10)])
def test_mlock_split_and_remerge(kp, lo, hi):
    k, p = kp
    m(p, 0, 10)
    p.mlock(BASE + lo * P, (hi - lo) * P)
    k.check()
    assert lay(p) == [(a, b) for a, b in [(0, lo), (lo, hi), (hi, 10)] if a < b]
    assert "lo" in at(p, lo).flags
    p.munlock(BASE + lo * P, (hi - lo) * P)
    k.check()
    assert lay(p) == [(0, 10)]
    assert "lo" not in at(p, 0).flags


# --- anon_vma compatibility ------------------------------------------------------------
def test_faulted_prev_and_unfaulted_new(kp):
    k, p = kp
    m(p, 0, 4)
    write(p, 0)
    av = at(p, 0).anon_vma
    assert av is not None
    m(p, 4, 4)
    assert lay(p) == [(0, 8)]
    assert at(p, 0).anon_vma == av


def test_hole_fill_between_two_anon_vmas(kp):
    """Measured (4.2): the hole joins A; B, with its own anon_vma, stays separate."""
    k, p = kp
    m(p, 0, 4)
    write(p, 0)
    m(p, 5, 4)
    write(p, 5)
    assert at(p, 0).anon_vma != at(p, 5).anon_vma
    m(p, 4, 1)
    k.check()
    assert lay(p) == [(0, 5), (5, 9)]


def test_hole_fill_faulted_and_unfaulted(kp):
    k, p = kp
    m(p, 0, 4)
    m(p, 5, 4)
    write(p, 5)
    av = at(p, 5).anon_vma
    m(p, 4, 1)
    assert lay(p) == [(0, 9)]
    assert at(p, 0).anon_vma == av


def test_mprotect_merge_adopts_anon_vma(kp):
    k, p = kp
    m(p, 0, 4, R)
    m(p, 4, 4, RW)
    write(p, 4)
    av = at(p, 4).anon_vma
    p.mprotect(BASE, 4 * P, RW)
    k.check()
    assert lay(p) == [(0, 8)]
    assert at(p, 0).anon_vma == av


def test_mprotect_middle_between_two_anon_vmas(kp):
    k, p = kp
    m(p, 0, 4)
    write(p, 0)
    m(p, 5, 4)
    write(p, 5)
    m(p, 4, 1, R)
    assert lay(p) == [(0, 4), (4, 5), (5, 9)]
    p.mprotect(BASE + 4 * P, P, RW)
    k.check()
    assert lay(p) == [(0, 5), (5, 9)]


def test_forked_anon_vma_chain_blocks_merge(kp):
    """vma_had_uncowed_parents(): measured on 6.18.44 (child keeps (0,4),(4,8) apart)."""
    k, p = kp
    m(p, 0, 4)
    write(p, 0)
    c = p.fork()
    k.check()
    c.mmap(BASE + 4 * P, 4 * P, RW, PRIV_ANON | FIXED)
    k.check()
    assert rel_layout(c, BASE, 20) == [(0, 4), (4, 8)]
    p.mmap(BASE + 4 * P, 4 * P, RW, PRIV_ANON | FIXED)
    assert lay(p) == [(0, 8)]  # the parent's chain is singular: it merges
    # in the child, a plain VMA with its own singular anon_vma merges with an unfaulted one
    c.mmap(BASE + 10 * P, 4 * P, RW, PRIV_ANON | FIXED)
    c.write(BASE + 10 * P, b"z")
    c.mmap(BASE + 8 * P, 2 * P, R, PRIV_ANON | FIXED)
    c.mprotect(BASE + 8 * P, 2 * P, RW)
    k.check()
    assert rel_layout(c, BASE, 20) == [(0, 4), (4, 14)]


def test_split_shares_anon_vma(kp):
    k, p = kp
    m(p, 0, 8)
    write(p, 0)
    av = at(p, 0).anon_vma
    p.mprotect(BASE + 4 * P, 4 * P, R)
    assert at(p, 0).anon_vma == av and at(p, 4).anon_vma == av
    assert at(p, 4).pgoff == BASE // P + 4


# --- flag differences that never merge --------------------------------------------------
@pytest.mark.parametrize("advice", [uapi.MADV_DONTFORK, uapi.MADV_WIPEONFORK, uapi.MADV_DONTDUMP])
def test_flag_difference_blocks_new_merge(kp, advice):
    k, p = kp
    m(p, 0, 4)
    p.madvise(BASE, 4 * P, advice)
    m(p, 4, 4)
    assert lay(p) == [(0, 4), (4, 8)]


def test_growsdown_never_merges_with_plain(kp):
    k, p = kp
    m(p, 0, 4)
    m(p, 4, 4, RW, PRIV_ANON | uapi.MAP_GROWSDOWN)
    assert lay(p) == [(0, 4), (4, 8)]
    assert "gd" in at(p, 4).flags


# --- guards and merges ------------------------------------------------------------------
def test_guard_install_never_splits_or_merges(kp):
    k, p = kp
    m(p, 0, 10)
    before = lay(p)
    p.madvise(BASE + 3 * P, 2 * P, uapi.MADV_GUARD_INSTALL)
    assert lay(p) == before
    p.madvise(BASE + 3 * P, P, uapi.MADV_GUARD_REMOVE)
    assert lay(p) == before
    assert guard_pages(p, BASE, 10) == [4]


def _gu(k, p, page):
    return "gu" in at(p, page).flags


@pytest.mark.parametrize("order", ["after", "before"])
def test_sticky_union_new_mapping(kp, order):
    k, p = kp
    if order == "after":
        m(p, 0, 8)
        p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
        m(p, 8, 8)
    else:
        m(p, 8, 8)
        p.madvise(BASE + 8 * P, P, uapi.MADV_GUARD_INSTALL)
        m(p, 0, 8)
    k.check()
    assert lay(p) == [(0, 16)]
    assert _gu(k, p, 0) == (k.design == "sticky")


def test_sticky_union_hole_fill(kp):
    k, p = kp
    m(p, 0, 8)
    p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
    m(p, 9, 8)
    m(p, 8, 1)
    assert lay(p) == [(0, 17)]
    assert _gu(k, p, 0) == (k.design == "sticky")
    assert guard_pages(p, BASE, 17) == [0]


@pytest.mark.parametrize("guarded", ["left", "right"])
def test_sticky_union_mprotect(kp, guarded):
    k, p = kp
    m(p, 0, 8, RW if guarded == "left" else R)
    m(p, 8, 8, R if guarded == "left" else RW)
    gpage = 0 if guarded == "left" else 8
    p.madvise(BASE + gpage * P, P, uapi.MADV_GUARD_INSTALL)
    p.mprotect(BASE + (8 if guarded == "left" else 0) * P, 8 * P, RW)
    k.check()
    assert lay(p) == [(0, 16)]
    assert _gu(k, p, 0) == (k.design == "sticky")
    assert guard_pages(p, BASE, 16) == [gpage]


def test_split_keeps_flags_on_both_halves(kp):
    k, p = kp
    m(p, 0, 10)
    p.madvise(BASE, 10 * P, uapi.MADV_WIPEONFORK)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mlock(BASE + 5 * P, 5 * P)
    p.munmap(BASE + 7 * P, P)
    k.check()
    assert lay(p) == [(0, 5), (5, 7), (8, 10)]
    for page in (0, 5, 8):
        assert "wf" in at(p, page).flags
        assert _gu(k, p, page) == (k.design == "sticky")
    assert "lo" in at(p, 5).flags and "lo" in at(p, 8).flags
    # mlock populated [5,10) with write faults, so both of its halves share a real anon_vma
    assert at(p, 5).anon_vma is not None and at(p, 8).anon_vma == at(p, 5).anon_vma
    # tagged: install on [0,10) set the flag; the split copied the word
    if k.design in ("tagged", "tagged-fixed"):
        assert at(p, 0).anon_vma is None and at(p, 0).anon_vma_flags == 1
    if k.design in ("eager", "sticky"):
        assert at(p, 0).anon_vma == at(p, 5).anon_vma  # split shares the install's anon_vma


def test_anon_vma_flags_zero_outside_tagged(kp):
    k, p = kp
    m(p, 0, 4)
    p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
    fd = p.memfd_create("f")
    p.ftruncate(fd, 4 * P)
    m(p, 8, 4, RW, uapi.MAP_SHARED, fd)
    p.madvise(BASE + 8 * P, P, uapi.MADV_GUARD_INSTALL)
    for page in (0, 8):
        v = at(p, page)
        if k.design in ("tagged", "tagged-fixed"):
            assert v.anon_vma is None and v.anon_vma_flags == 1
        else:
            assert v.anon_vma_flags == 0
    assert (at(p, 0).anon_vma is not None) == (k.design in ("eager", "sticky"))
    assert (at(p, 8).anon_vma is not None) == (k.design == "eager")


# --- mremap and pgoff -------------------------------------------------------------------
def test_mremap_unfaulted_resets_pgoff_and_merges(kp):
    k, p = kp
    m(p, 0, 8)
    m(p, 40, 8)
    got = p.mremap(
        BASE + 40 * P, 8 * P, 8 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 8 * P
    )
    k.check()
    assert got == BASE + 8 * P
    assert lay(p) == [(0, 16)]


def test_mremap_faulted_keeps_pgoff_and_does_not_merge(kp):
    k, p = kp
    m(p, 0, 8)
    m(p, 60, 8)
    write(p, 60)
    p.mremap(BASE + 60 * P, 8 * P, 8 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 16 * P)
    m(p, 8, 8)
    k.check()
    assert lay(p) == [(0, 16), (16, 24)]
    assert at(p, 16).pgoff == BASE // P + 60
    assert p.read(BASE + 16 * P, 1) == b"w"


def test_mremap_guarded_unfaulted_anon(kp):
    """Measured on 6.18.44 (sticky): no merge at the destination, because guard install gave
    the VMA an anon_vma. eager behaves the same; tagged and lossy have no anon_vma, so the
    pgoff is reset and the moved VMA merges (designs.md §10)."""
    k, p = kp
    m(p, 0, 8)
    m(p, 80, 8)
    p.madvise(BASE + 81 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mremap(BASE + 80 * P, 8 * P, 8 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 8 * P)
    k.check()
    if k.design in ("eager", "sticky"):
        assert lay(p) == [(0, 8), (8, 16)]
        assert at(p, 8).pgoff == BASE // P + 80
    else:
        assert lay(p) == [(0, 16)]
    assert guard_pages(p, BASE, 16) == [9]


def test_mremap_grow_in_place_keeps_gu(kp):
    k, p = kp
    m(p, 0, 8)
    p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
    assert p.mremap(BASE, 8 * P, 16 * P, 0) == BASE
    k.check()
    assert lay(p) == [(0, 16)]
    assert _gu(k, p, 0) == (k.design == "sticky")
    assert guard_pages(p, BASE, 16) == [0]


def test_map_fixed_over_middle_of_guarded_vma(kp):
    """Measured (4.2): the new range re-merges; marker 5 gone, 2 and 12 kept; `gu` stays."""
    k, p = kp
    m(p, 0, 16)
    for g in (2, 5, 12):
        p.madvise(BASE + g * P, P, uapi.MADV_GUARD_INSTALL)
    m(p, 4, 4)
    k.check()
    assert guard_pages(p, BASE, 16) == [2, 12]
    assert _gu(k, p, 0) == (k.design == "sticky")
    assert lay(p) == [(0, 16)]


# --- max_map_count ----------------------------------------------------------------------
@pytest.mark.parametrize("design", DESIGN_IDS)
def test_max_map_count_split_enomem(design):
    k = Kernel(design, max_map_count=4)
    p = k.spawn()
    for i in range(4):
        p.mmap(BASE + 2 * i * 4 * P, 4 * P, RW, PRIV_ANON | FIXED)  # 4 VMAs, gaps between
    assert len(p.vmas()) == 4
    before = p.maps()
    # All measured on 6.18.44 with map_count == max_map_count.
    for code, call in (
        (errno.ENOMEM, lambda: p.mprotect(BASE + P, P, R)),  # 3-way split
        (errno.ENOMEM, lambda: p.mprotect(BASE, P, R)),  # edge split, no merge possible
        (errno.ENOMEM, lambda: p.munmap(BASE + P, P)),  # a hole in the middle: +1 VMA
        (errno.ENOMEM, lambda: p.mlock(BASE + P, P)),
        # madvise_vma_behavior() turns -ENOMEM into -EAGAIN
        (errno.EAGAIN, lambda: p.madvise(BASE + P, P, uapi.MADV_DONTFORK)),
    ):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == code
        k.check()
        assert p.maps() == before
    p.madvise(BASE + P, P, uapi.MADV_GUARD_INSTALL)  # install never splits
    assert p.maps() == before
    p.munmap(BASE, P)  # trimming either edge needs no new VMA
    p.munmap(BASE + 3 * P, P)
    k.check()
    assert len(p.vmas()) == 4
    p.exit()
    k.check()


# --- mremap merges (measured on 6.18.44) --------------------------------------------------
def test_mremap_grow_in_place_merges_with_next(kp):
    """vma_merge_extend() is a new-range merge with both neighbours: growing A up to B
    makes one VMA when B is compatible, two when their anon_vmas differ."""
    k, p = kp
    m(p, 0, 4)
    m(p, 8, 4)
    assert p.mremap(BASE, 4 * P, 8 * P, 0) == BASE
    k.check()
    assert lay(p) == [(0, 12)]
    p.munmap(BASE, 20 * P)
    m(p, 0, 4)
    write(p, 0)
    m(p, 8, 4)
    write(p, 8)
    assert p.mremap(BASE, 4 * P, 8 * P, 0) == BASE
    k.check()
    assert lay(p) == [(0, 8), (8, 12)]


def test_mremap_grow_file_in_place_merges_with_next(kp):
    k, p = kp
    fd = p.memfd_create("f")
    p.ftruncate(fd, 16 * P)
    m(p, 0, 4, RW, uapi.MAP_SHARED, fd, 0)
    m(p, 8, 4, RW, uapi.MAP_SHARED, fd, 8 * P)
    assert p.mremap(BASE, 4 * P, 8 * P, 0) == BASE
    k.check()
    assert lay(p) == [(0, 12)]
    assert at(p, 0).pgoff == 0


def test_mremap_move_merges_both_sides(kp):
    k, p = kp
    m(p, 0, 4)
    m(p, 8, 4)
    m(p, 30, 4)
    assert (
        p.mremap(BASE + 30 * P, 4 * P, 4 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 4 * P)
        == BASE + 4 * P
    )
    k.check()
    assert lay(p) == [(0, 12)]


def test_mremap_faulted_piece_moved_back_merges(kp):
    """A faulted piece keeps its pgoff, so moving it back to where it came from merges."""
    k, p = kp
    m(p, 0, 8)
    p.write(BASE, b"x" * (8 * P))
    mv = uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED
    p.mremap(BASE + 4 * P, 4 * P, 4 * P, mv, BASE + 20 * P)
    assert lay(p) == [(0, 4), (20, 24)]
    p.mremap(BASE + 20 * P, 4 * P, 4 * P, mv, BASE + 4 * P)
    k.check()
    assert lay(p) == [(0, 8)]
    assert p.read(BASE + 7 * P, 1) == b"x"


# --- existing-range merges with a different neighbour, by mlock and madvise -------------
def _apply(p, how, lo, n, on):
    a, length = BASE + lo * P, n * P
    if how == "mlock":
        (p.mlock if on else p.munlock)(a, length)
    else:
        p.madvise(a, length, uapi.MADV_DONTDUMP if on else uapi.MADV_DODUMP)


@pytest.mark.parametrize("how", ["mlock", "madvise"])
def test_existing_range_merges_in_all_positions(kp, how):
    k, p = kp
    m(p, 0, 12)
    _apply(p, how, 0, 4, True)  # [0,4) flagged, [4,12) plain
    assert lay(p) == [(0, 4), (4, 12)]
    _apply(p, how, 4, 2, True)  # left part of the plain VMA merges into prev
    assert lay(p) == [(0, 6), (6, 12)]
    _apply(p, how, 10, 2, True)  # right edge: split off, no merge possible
    assert lay(p) == [(0, 6), (6, 10), (10, 12)]
    _apply(p, how, 8, 2, True)  # right part of the plain VMA merges into next
    assert lay(p) == [(0, 6), (6, 8), (8, 12)]
    _apply(p, how, 6, 2, True)  # the whole middle: prev, middle and next merge...
    k.check()
    # ...unless prev and next have different anon_vmas: mlock populated [0,6) and [10,12)
    # with write faults, each getting its own anon_vma (they were not adjacent), so the
    # middle can only join prev (can_vma_merge_right() needs compatible prev/next).
    want = [(0, 8), (8, 12)] if how == "mlock" else [(0, 12)]
    assert lay(p) == want
    _apply(p, how, 0, 12, False)
    k.check()
    assert lay(p) == want
