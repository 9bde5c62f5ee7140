"""Guard-region semantics beyond the selftest, as measured on Linux 6.18.44.

Each expectation is a row of live-kernel-facts.md §3–4 (the kernel = the sticky design) or
kernel-semantics.md §1; where a design differs by construction, designs.md §10 gives its
expected behaviour and the test says so.
"""

from __future__ import annotations

import errno

import pytest
from mmtest_util import BASE, FIXED, PRIV_ANON, RW, P, guard_pages, rel_layout, vma_at

from vmalab import SegmentationFault, uapi

INSTALL, REMOVE = uapi.MADV_GUARD_INSTALL, uapi.MADV_GUARD_REMOVE
FIXED_MOVE = uapi.MREMAP_FIXED


def pagestr(p, a, n):
    """live-kernel-facts legend: G guard, A/F present anon/file, Z zero page, . nothing."""
    out = ""
    for e in p.pagemap(a, n):
        if e & uapi.PM_GUARD_REGION:
            out += "G"
        elif e & uapi.PM_PRESENT:
            out += "F" if e & uapi.PM_FILE else ("A" if e & uapi.PM_MMAP_EXCLUSIVE else "Z")
        else:
            out += "."
    return out


def probe(p, a, n):
    """o ok, S SIGSEGV, B SIGBUS."""
    out = ""
    for i in range(n):
        try:
            p.read(a + i * P, 1)
            out += "o"
        except SegmentationFault as e:
            out += "S" if e.signal == "SIGSEGV" else "B"
    return out


def gu(k, p, a):
    return ("gu" in vma_at(p, a).flags) == (k.design == "sticky")


def anon16(p, write=True):
    a = p.mmap(BASE, 16 * P, RW, PRIV_ANON | FIXED)
    if write:
        p.write(a, b"x" * (16 * P))
    p.madvise(a + 4 * P, 2 * P, INSTALL)
    return a


# --- live-kernel-facts §4.3 -----------------------------------------------------------
def test_populate_stops_at_the_guard(kp):
    k, p = kp
    a = p.mmap(BASE, 16 * P, RW, PRIV_ANON | FIXED)
    p.madvise(a + 4 * P, P, INSTALL)
    with pytest.raises(OSError) as ei:
        p.madvise(a, 16 * P, uapi.MADV_POPULATE_READ)
    assert ei.value.errno == errno.EFAULT
    assert pagestr(p, a, 16) == "ZZZZG..........."
    with pytest.raises(OSError) as ei:
        p.madvise(a + 4 * P, P, uapi.MADV_POPULATE_WRITE)
    assert ei.value.errno == errno.EFAULT
    p.madvise(a + 6 * P, 10 * P, uapi.MADV_POPULATE_WRITE)  # no guard in range: fine
    assert pagestr(p, a, 16) == "ZZZZG.AAAAAAAAAA"


def test_mlock_over_guard(kp):
    k, p = kp
    a = p.mmap(BASE, 8 * P, RW, PRIV_ANON | FIXED)
    p.madvise(a + 2 * P, P, INSTALL)
    with pytest.raises(OSError) as ei:
        p.mlock(a, 8 * P)
    assert ei.value.errno == errno.ENOMEM
    assert "lo" in vma_at(p, a).flags  # left locked
    assert pagestr(p, a, 8) == "AAG....."  # populated up to the guard
    p.madvise(a, 8 * P, REMOVE)  # allowed while locked
    assert guard_pages(p, a, 8) == []


@pytest.mark.parametrize(
    "advice", [uapi.MADV_DONTNEED, uapi.MADV_FREE, uapi.MADV_COLD, uapi.MADV_PAGEOUT]
)
def test_markers_survive(kp, advice):
    k, p = kp
    a = anon16(p)
    p.madvise(a, 16 * P, advice)
    assert guard_pages(p, a, 16) == [4, 5]
    assert probe(p, a, 16) == "ooooSSoooooooooo"
    assert gu(k, p, a)


def test_markers_survive_mprotect_cycle(kp):
    k, p = kp
    a = anon16(p)
    for prot in (uapi.PROT_READ, uapi.PROT_NONE, RW):
        p.mprotect(a, 16 * P, prot)
        assert guard_pages(p, a, 16) == [4, 5]
    assert probe(p, a, 16) == "ooooSSoooooooooo"


def test_mremap_move_whole_and_partial(kp):
    k, p = kp
    a = anon16(p)
    p.mremap(a + 2 * P, 6 * P, 6 * P, uapi.MREMAP_MAYMOVE | FIXED_MOVE, BASE + 40 * P)
    k.check()
    assert pagestr(p, BASE + 40 * P, 6) == "AAGGAA"
    assert rel_layout(p, BASE, 64) == [(0, 2), (8, 16), (40, 46)]
    assert all(gu(k, p, BASE + i * P) for i in (0, 8, 40))
    p.mremap(BASE + 40 * P, 6 * P, 6 * P, uapi.MREMAP_MAYMOVE | FIXED_MOVE, BASE + 50 * P)
    assert guard_pages(p, BASE + 50 * P, 6) == [2, 3]


def test_mremap_shrink_then_regrow(kp):
    k, p = kp
    a = anon16(p)
    assert p.mremap(a, 16 * P, 5 * P, 0) == a
    assert p.mremap(a, 5 * P, 16 * P, 0) == a
    k.check()
    assert pagestr(p, a, 16) == "AAAAG..........."
    assert probe(p, a, 16) == "ooooSooooooooooo"


def test_mremap_dontunmap(kp):
    k, p = kp
    a = anon16(p)
    dst = BASE + 32 * P
    flags = uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP
    assert p.mremap(a, 16 * P, 16 * P, flags, dst) == dst
    k.check()
    assert guard_pages(p, dst, 16) == [4, 5]
    assert p.read(dst, 1) == b"x"
    assert guard_pages(p, a, 16) == []
    assert probe(p, a, 16) == "o" * 16 and p.read(a, 1) == b"\0"  # source emptied
    assert gu(k, p, a) and gu(k, p, dst)


@pytest.mark.parametrize("how", ["munmap_mmap", "map_fixed_over"])
def test_replacing_the_vma_drops_markers_and_gu(kp, how):
    k, p = kp
    a = anon16(p)
    if how == "munmap_mmap":
        p.munmap(a, 16 * P)
    p.mmap(a, 16 * P, RW, PRIV_ANON | FIXED)
    k.check()
    assert guard_pages(p, a, 16) == []
    assert "gu" not in vma_at(p, a).flags
    assert probe(p, a, 16) == "o" * 16


@pytest.mark.parametrize("shared", [False, True])
def test_install_over_written_pages_discards_anon_keeps_shmem(kp, shared):
    k, p = kp
    if shared:
        fd = p.memfd_create("m")
        p.ftruncate(fd, 8 * P)
        a = p.mmap(0, 8 * P, RW, uapi.MAP_SHARED, fd)
    else:
        a = p.mmap(0, 8 * P, RW, PRIV_ANON)
    p.write(a, b"\x5a" * (8 * P))
    p.madvise(a + 2 * P, 2 * P, INSTALL)
    p.madvise(a + 2 * P, 2 * P, REMOVE)
    want = b"\x5a" if shared else b"\0"
    assert p.read(a + 2 * P, 1) == want and p.read(a + 3 * P, 1) == want
    assert p.read(a + 4 * P, 1) == b"\x5a"


def test_shared_truncate_and_reextend(kp):
    k, p = kp
    fd = p.open("/t", uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, 16 * P)
    a = p.mmap(0, 16 * P, RW, uapi.MAP_SHARED, fd)
    p.write(a, b"q" * (16 * P))
    p.madvise(a + 4 * P, 2 * P, INSTALL)
    p.madvise(a + 12 * P, P, INSTALL)
    p.ftruncate(fd, 2 * P)
    k.check()
    assert pagestr(p, a, 16) == "FF..GG......G..."
    assert probe(p, a, 16) == "ooBBSSBBBBBBSBBB"
    p.ftruncate(fd, 16 * P)
    assert probe(p, a, 16)[4:6] == "SS" and probe(p, a, 16)[12] == "S"
    assert p.read(a + 2 * P, 1) == b"\0"  # truncated data is gone


def test_remove_never_clears_gu(kp):
    k, p = kp
    a = anon16(p)
    p.madvise(a + 4 * P, P, REMOVE)
    assert gu(k, p, a)
    p.madvise(a, 16 * P, REMOVE)
    assert gu(k, p, a)
    p.madvise(a, 16 * P, uapi.MADV_DONTNEED)
    assert gu(k, p, a)
    p.mprotect(a, 8 * P, uapi.PROT_READ)
    assert gu(k, p, a) and gu(k, p, a + 8 * P)


# --- where install works / fails (live-kernel-facts §4.6) -----------------------------
def test_install_allowed_on_prot_none_growsdown_droppable(kp):
    k, p = kp
    a = p.mmap(BASE, 4 * P, uapi.PROT_NONE, PRIV_ANON | FIXED)
    p.madvise(a + P, P, INSTALL)
    p.mprotect(a, 4 * P, RW)
    assert probe(p, a, 4) == "oSoo"
    g = p.mmap(BASE + 10 * P, 4 * P, RW, PRIV_ANON | FIXED | uapi.MAP_GROWSDOWN)
    p.madvise(g, P, INSTALL)
    assert "gd" in vma_at(p, g).flags and probe(p, g, 1) == "S"
    d = p.mmap(BASE + 20 * P, 4 * P, RW, uapi.MAP_DROPPABLE | uapi.MAP_ANONYMOUS | FIXED)
    p.madvise(d, P, INSTALL)
    assert {"nr", "wf", "dd", "dp"} <= vma_at(p, d).flags
    assert probe(p, d, 1) == "S"
    c = p.fork()  # droppable implies wipe-on-fork: no markers in the child
    assert guard_pages(c, d, 4) == [] and probe(c, d, 4) == "oooo"
    assert probe(c, g, 1) == ("o" if k.design == "lossy" else "S")


# --- fork (live-kernel-facts §4.1, §4.4; designs.md §10) ------------------------------
FORK_KINDS = [
    "private_anon",
    "shared_anon",
    "memfd_private",
    "memfd_shared",
    "file_shared",
    "file_ro_shared",
    "file_ro_private",
    "memfd_ro_shared",
]


def _map_kind(p, kind, n=8):
    if kind == "private_anon":
        return p.mmap(0, n * P, RW, PRIV_ANON)
    if kind == "shared_anon":
        return p.mmap(0, n * P, RW, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS)
    if kind.startswith("memfd"):
        fd = p.memfd_create("m")
        p.ftruncate(fd, n * P)
    else:
        w = p.open("/" + kind, uapi.O_RDWR | uapi.O_CREAT)
        p.ftruncate(w, n * P)
        fd = p.open("/" + kind, uapi.O_RDONLY) if "_ro_" in kind else w
    share = uapi.MAP_PRIVATE if kind.endswith("private") else uapi.MAP_SHARED
    if "_ro_" in kind:  # memfd_ro_shared: a PROT_READ shared view of a read-write memfd fd
        return p.mmap(0, n * P, uapi.PROT_READ, share, fd)
    return p.mmap(0, n * P, RW, share, fd)


@pytest.mark.parametrize("kind", FORK_KINDS)
def test_install_and_fork_every_kind(kp, kind):
    """§4.1: install on pages 2-3 of 8; gu on the whole VMA, no split; the child has the
    markers and SIGSEGV on them (except under lossy, where no anon_vma exists)."""
    k, p = kp
    a = _map_kind(p, kind)
    p.madvise(a + 2 * P, 2 * P, INSTALL)
    k.check()
    assert vma_at(p, a).start == a and vma_at(p, a).end == a + 8 * P
    assert gu(k, p, a)
    assert pagestr(p, a, 8) == "..GG...."
    c = p.fork()
    k.check()
    assert gu(k, c, a)
    if k.design == "lossy":
        assert pagestr(c, a, 8) == "........" and probe(c, a, 8) == "oooooooo"
    else:
        assert pagestr(c, a, 8) == "..GG...." and probe(c, a, 8) == "ooSSoooo"


@pytest.mark.parametrize(
    "mode", ["never_guarded", "install_then_remove_all", "install_then_remove_part", "guarded"]
)
def test_fork_copies_shared_file_ptes_per_design(kp, mode):
    """§4.1 controls: a prefaulted memfd MAP_SHARED VMA gets its PTEs copied at fork only
    when the VMA "may hold guards": sticky by `gu` (kept after removal), eager by its
    anon_vma (kept), tagged by ANON_VMA_UNFAULTED (cleared by a whole-VMA remove), lossy
    never (designs.md §10, "Fork after every guard was removed")."""
    k, p = kp
    fd = p.memfd_create("m")
    p.ftruncate(fd, 8 * P)
    a = p.mmap(0, 8 * P, RW, uapi.MAP_SHARED, fd)
    p.write(a, b"Z" * (8 * P))
    if mode != "never_guarded":
        p.madvise(a + 2 * P, 2 * P, INSTALL)
    if mode == "install_then_remove_all":
        p.madvise(a, 8 * P, REMOVE)
    if mode == "install_then_remove_part":
        p.madvise(a + 2 * P, 2 * P, REMOVE)
    c = p.fork()
    copies = {
        "never_guarded": set(),
        "install_then_remove_all": {"sticky", "eager"},
        "install_then_remove_part": {"sticky", "eager", "tagged", "tagged-fixed"},
        "guarded": {"sticky", "eager", "tagged", "tagged-fixed"},
    }[mode]
    if k.design not in copies:
        assert pagestr(c, a, 8) == "........"
    elif mode == "guarded":
        assert pagestr(c, a, 8) == "FFGGFFFF"
    else:
        assert pagestr(c, a, 8) == "FF..FFFF"  # the install zapped pages 2-3
    assert c.read(a, P) == b"Z" * P  # the data is in the page cache either way
    assert probe(c, a, 8) == (
        "ooSSoooo" if mode == "guarded" and k.design != "lossy" else "oooooooo"
    )


def test_wipeonfork_and_dontfork_partial(kp):
    """§4.4: WIPEONFORK / DONTFORK on 8-16 only, guards 2-3 and 10-11."""
    k, p = kp
    a = p.mmap(BASE, 16 * P, RW, PRIV_ANON | FIXED)
    p.write(a, b"x" * (16 * P))
    p.madvise(a + 2 * P, 2 * P, INSTALL)
    p.madvise(a + 10 * P, 2 * P, INSTALL)
    p.madvise(a + 8 * P, 8 * P, uapi.MADV_WIPEONFORK)
    c = p.fork()
    assert rel_layout(c, BASE, 16) == [(0, 8), (8, 16)]
    assert guard_pages(c, a, 16) == [2, 3]
    assert probe(c, a, 16) == "ooSSoooooooooooo"
    assert c.read(a + 8 * P, 1) == b"\0"
    assert gu(k, c, a + 8 * P) and "wf" in vma_at(c, a + 8 * P).flags
    assert guard_pages(p, a, 16) == [2, 3, 10, 11]  # the parent is unchanged
    c.exit()
    p.madvise(a + 8 * P, 8 * P, uapi.MADV_KEEPONFORK)
    c = p.fork()
    assert guard_pages(c, a, 16) == [2, 3, 10, 11]
    g = c.fork()  # grandchildren inherit
    assert guard_pages(g, a, 16) == [2, 3, 10, 11]
    p.madvise(a + 8 * P, 8 * P, uapi.MADV_DONTFORK)
    d = p.fork()
    assert rel_layout(d, BASE, 16) == [(0, 8)]
    assert guard_pages(d, a, 8) == [2, 3]


@pytest.mark.parametrize("order", ["wipe_first", "install_first"])
def test_wipeonfork_unfaulted(kp, order):
    k, p = kp
    a = p.mmap(0, 8 * P, RW, PRIV_ANON)
    if order == "wipe_first":
        p.madvise(a, 8 * P, uapi.MADV_WIPEONFORK)
    p.madvise(a + 2 * P, 2 * P, INSTALL)
    if order == "install_first":
        p.madvise(a, 8 * P, uapi.MADV_WIPEONFORK)
    c = p.fork()
    assert pagestr(c, a, 8) == "........" and probe(c, a, 8) == "oooooooo"
    assert gu(k, c, a) and "wf" in vma_at(c, a).flags
    assert vma_at(c, a).anon_vma is None and vma_at(c, a).anon_vma_flags == 0
    assert probe(p, a, 8) == "ooSSoooo"


# --- MADV_COLLAPSE (live-kernel-facts §4.7, anonymous) --------------------------------
def _thp_anon(p):
    hp = 512 * P
    a = p.mmap(BASE, 2 * hp, RW, PRIV_ANON | FIXED)  # BASE is 1 GiB aligned
    p.madvise(a, 2 * hp, uapi.MADV_HUGEPAGE)
    p.write(a, b"w" * (2 * hp))
    return a, hp


def test_collapse_anon(kp):
    k, p = kp
    a, hp = _thp_anon(p)
    p.madvise(a + hp + 100 * P, P, INSTALL)
    with pytest.raises(OSError) as ei:
        p.madvise(a + hp, hp, uapi.MADV_COLLAPSE)  # marker inside the 2 MiB range
    assert ei.value.errno == errno.EINVAL
    assert guard_pages(p, a + hp, 512) == [100]
    p.madvise(a, hp, uapi.MADV_COLLAPSE)  # guard in the other 2 MiB: fine
    p.madvise(a + hp + 100 * P, P, REMOVE)
    p.madvise(a + hp, hp, uapi.MADV_COLLAPSE)  # gu alone does not block anon collapse
    k.check()
    assert p.read(a + hp, 1) == b"w" and p.read(a + hp + 100 * P, 1) == b"\0"
