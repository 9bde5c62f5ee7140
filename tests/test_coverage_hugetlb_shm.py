"""hugetlb, SysV shm, /dev/zero and msync: the model against what 6.18.44 answered.

Every expectation below was measured on the project's machine (Linux 6.18.44, root,
x86-64) with ctypes in a child process; docs/coverage.md has the tables. The pool of 4
pages was measured with nr_hugepages set to 4 for the run (and restored to 0).
"""

from __future__ import annotations

import errno

import pytest

from vmalab import Kernel, uapi
from vmalab.errors import SegmentationFault
from vmalab.mm import shm

M2 = 2 << 20
RW = uapi.PROT_READ | uapi.PROT_WRITE
PA = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
SA = uapi.MAP_SHARED | uapi.MAP_ANONYMOUS
HT = uapi.MAP_HUGETLB
NR = uapi.MAP_NORESERVE
FX = uapi.MAP_FIXED


def errno_of(fn, *a):
    try:
        fn(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"


def kern(pages: int = 0) -> Kernel:
    return Kernel(hugetlb_pages={21: pages, 30: 0})


def flags_of(p, addr):
    smaps = p.smaps().splitlines()
    cur = False
    for line in smaps:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            s, e = (int(x, 16) for x in head.split("-"))
            cur = s <= addr < e
        elif cur and line.startswith("VmFlags:"):
            return line.split(":", 1)[1].split()
    raise AssertionError("no VMA")


def maps_line(p, addr):
    for line in p.maps().splitlines():
        s, e = (int(x, 16) for x in line.split()[0].split("-"))
        if s <= addr < e:
            return line
    return None


# --- hugetlb with the machine's empty pool ------------------------------------------------


def test_hugetlb_empty_pool_errnos():
    k = kern(0)
    p = k.spawn()
    assert errno_of(p.mmap, 0, M2, RW, PA | HT) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, RW, SA | HT) == "ENOMEM"
    assert errno_of(p.mmap, 0, 4096, RW, PA | HT) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, 0, PA | HT) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, RW, PA | HT | (21 << 26)) == "ENOMEM"
    assert errno_of(p.mmap, 0, 1 << 30, RW, PA | HT | (30 << 26)) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, RW, PA | HT | (22 << 26)) == "EINVAL"
    assert errno_of(p.mmap, 0, M2, RW, PA | HT | (12 << 26)) == "EINVAL"
    assert errno_of(p.mmap, 0, 4096, RW, PA | (21 << 26)) == "ok"
    k.check()


def test_hugetlb_noreserve_vma_rules():
    k = kern(0)
    p = k.spawn()
    a = p.mmap(0, 4096, RW, PA | HT | NR)  # rounded up to 2 MiB
    assert a % M2 == 0
    line = maps_line(p, a)
    assert line is not None and "/anon_hugepage (deleted)" in line and " rw-p " in line
    assert line.split()[0] == f"{a:08x}-{a + M2:08x}"
    assert " 00:11 " in line
    assert flags_of(p, a) == ["rd", "wr", "mr", "mw", "me", "de", "nr", "ht"]
    assert "KernelPageSize:     2048 kB" in p.smaps()
    assert errno_of(p.munmap, a, 4096) == "EINVAL"
    assert errno_of(p.munmap, a + 4096, 4096) == "EINVAL"
    assert errno_of(p.mprotect, a, 4096, uapi.PROT_READ) == "EINVAL"
    assert errno_of(p.madvise, a, 4096, uapi.MADV_GUARD_INSTALL) == "EINVAL"
    assert errno_of(p.madvise, a, M2, uapi.MADV_WIPEONFORK) == "EINVAL"
    assert errno_of(p.madvise, a, M2, uapi.MADV_FREE) == "EINVAL"
    assert errno_of(p.madvise, a, 4096, uapi.MADV_DONTNEED) == "ok"
    assert errno_of(p.madvise, a, M2, uapi.MADV_DONTNEED) == "ok"
    assert errno_of(p.madvise, a, M2, uapi.MADV_HUGEPAGE) == "ok"
    assert errno_of(p.madvise, a, M2, uapi.MADV_DONTFORK) == "ok"
    assert flags_of(p, a)[-3:] == ["nr", "ht", "hg"]
    assert errno_of(p.mremap, a, M2, 2 * M2, uapi.MREMAP_MAYMOVE) == "EINVAL"
    with pytest.raises(SegmentationFault) as ei:
        p.write(a, b"x")  # no huge page to fault in: SIGBUS (measured: signal 7)
    assert ei.value.signal == "SIGBUS" if hasattr(ei.value, "signal") else True
    assert errno_of(p.mprotect, a, M2, uapi.PROT_READ) == "ok"
    assert errno_of(p.munmap, a, M2) == "ok"
    k.check()


def test_hugetlb_split_at_huge_boundary():
    k = kern(0)
    p = k.spawn()
    a = p.mmap(0, 2 * M2, RW, PA | HT | NR)
    p.mprotect(a + M2, M2, uapi.PROT_READ)
    vs = [(v.start - a, v.end - a, v.pgoff) for v in p.vmas() if a <= v.start < a + 2 * M2]
    assert vs == [(0, M2, 0), (M2, 2 * M2, M2 >> 12)]
    p.munmap(a, M2)
    assert errno_of(p.munmap, a + M2, 4096) == "EINVAL"
    assert errno_of(p.munmap, a + M2, M2 - 4096) == "EINVAL"
    k.check()


def test_hugetlb_fixed_alignment_and_failed_fixed_leaves_hole():
    k = kern(0)
    p = k.spawn()
    base = p.mmap(0, 16 * M2, 0, PA)
    b2 = (base + M2 - 1) & ~(M2 - 1)
    assert errno_of(p.mmap, b2 + 4096, M2, RW, PA | HT | NR | FX) == "EINVAL"
    assert errno_of(p.mmap, b2 + 4096, M2, RW, PA | HT | NR | uapi.MAP_FIXED_NOREPLACE) == (
        "EINVAL"
    )
    assert p.mmap(b2, M2, RW, PA | HT | NR | FX) == b2
    # a refused reservation comes after the unmap: the old mapping is gone (measured)
    assert errno_of(p.mmap, b2 + 6 * M2, M2, RW, PA | HT | FX) == "ENOMEM"
    assert maps_line(p, b2 + 6 * M2) is None
    k.check()


def test_memfd_hugetlb():
    k = kern(0)
    p = k.spawn()
    fd = p.memfd_create("hug", uapi.MFD_HUGETLB)
    assert errno_of(p.memfd_create, "x", uapi.MFD_HUGETLB | (30 << 26)) == "ok"
    assert errno_of(p.memfd_create, "x", uapi.MFD_HUGETLB | (22 << 26)) == "ENODEV"
    assert errno_of(p.memfd_create, "x", 30 << 26) == "EINVAL"
    assert errno_of(p.memfd_create, "x", uapi.MFD_HUGETLB | uapi.MFD_ALLOW_SEALING) == "ok"
    assert errno_of(p.ftruncate, fd, 4096) == "EINVAL"
    p.ftruncate(fd, M2)
    assert errno_of(p.mmap, 0, M2, RW, uapi.MAP_SHARED, fd, 0) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, RW, uapi.MAP_PRIVATE, fd, 0) == "ENOMEM"
    assert errno_of(p.mmap, 0, M2, RW, uapi.MAP_SHARED | NR, fd, 4096) == "EINVAL"
    a = p.mmap(0, 4096, RW, uapi.MAP_SHARED | NR, fd, 0)
    line = maps_line(p, a)
    assert line is not None and "/memfd:hug (deleted)" in line and " rw-s " in line
    assert line.split()[0] == f"{a:08x}-{a + M2:08x}"
    assert flags_of(p, a) == ["rd", "wr", "sh", "mr", "mw", "me", "ms", "de", "nr", "ht"]
    assert errno_of(p.pwrite, fd, b"x", 0) == "EINVAL"
    assert errno_of(p.pread, fd, 1, 0) == "ok"
    k.check()


def _pool(k):
    m = k.meminfo()
    return m["HugePages_Total"], m["HugePages_Free"], m["HugePages_Rsvd"]


def test_hugetlb_pool_of_four_measured_sequence():
    k = kern(4)
    p = k.spawn()
    assert _pool(k) == (4, 4, 0)
    a = p.mmap(0, M2, RW, PA | HT)
    assert flags_of(p, a) == ["rd", "wr", "mr", "mw", "me", "de", "ht"]
    assert _pool(k) == (4, 4, 1)
    p.write(a, b"x")
    assert _pool(k) == (4, 3, 0)
    p.mlock(a, M2)
    assert "lo" not in flags_of(p, a)
    p.munmap(a, M2)
    assert _pool(k) == (4, 4, 0)
    a = p.mmap(0, 2 * M2, RW, PA | HT)
    assert _pool(k) == (4, 4, 2)
    assert p.mremap(a, 2 * M2, M2, 0) == a
    assert _pool(k) == (4, 4, 1)
    base = p.mmap(0, 8 * M2, 0, PA)
    b2 = (base + M2 - 1) & ~(M2 - 1)
    assert p.mremap(a, M2, M2, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, b2) == b2
    assert _pool(k) == (4, 4, 1)
    assert errno_of(p.mremap, b2, M2, 2 * M2, 0) == "EINVAL"
    assert errno_of(p.mremap, b2, M2, M2 + 4096, 0) == "EINVAL"
    assert errno_of(p.mremap, b2, M2, M2, 7, b2 + 4 * M2) == "EINVAL"
    p.munmap(b2, M2)
    assert _pool(k) == (4, 4, 0)
    assert errno_of(p.mmap, 0, 5 * M2, RW, PA | HT) == "ENOMEM"
    p.munmap(p.mmap(0, 5 * M2, RW, PA | HT | NR), 5 * M2)
    s = p.mmap(0, M2, RW, SA | HT)
    assert _pool(k) == (4, 4, 1)
    p.write(s, b"x")
    assert _pool(k) == (4, 3, 0)
    p.munmap(s, M2)
    assert _pool(k) == (4, 4, 0)
    fd = p.memfd_create("hug", uapi.MFD_HUGETLB)
    p.ftruncate(fd, 2 * M2)
    r1 = p.mmap(0, 2 * M2, RW, uapi.MAP_SHARED, fd, 0)
    assert _pool(k) == (4, 4, 2)
    r2 = p.mmap(0, 2 * M2, RW, uapi.MAP_SHARED, fd, 0)
    assert _pool(k) == (4, 4, 2)
    r3 = p.mmap(0, 2 * M2, RW, uapi.MAP_PRIVATE, fd, 0)
    assert _pool(k) == (4, 4, 4)
    assert errno_of(p.mmap, 0, M2, RW, uapi.MAP_SHARED, fd, 2 * M2) == "ENOMEM"
    p.write(r1, b"x")
    assert _pool(k) == (4, 3, 3)
    p.ftruncate(fd, 0)
    assert _pool(k) == (4, 4, 2)
    p.munmap(r1, 2 * M2)
    p.munmap(r2, 2 * M2)
    assert _pool(k) == (4, 4, 2)
    p.munmap(r3, 2 * M2)
    assert _pool(k) == (4, 4, 0)
    p.close(fd)
    rs = [p.mmap(0, M2, RW, PA | HT) for _ in range(4)]
    assert _pool(k) == (4, 4, 4)
    nr = p.mmap(0, M2, RW, PA | HT | NR)
    with pytest.raises(SegmentationFault):
        p.write(nr, b"x")
    assert errno_of(p.mlock, nr, M2) == "ENOMEM"
    for a in rs:
        p.munmap(a, M2)
    assert _pool(k) == (4, 4, 0)
    k.check()
    p.exit()
    k.check()


def test_hugetlb_fork_and_exit_give_pages_back():
    k = kern(4)
    p = k.spawn()
    a = p.mmap(0, 2 * M2, RW, PA | HT)
    p.write(a, b"x")
    c = p.fork()
    assert c.read(a, 1) == b"x"
    c.write(a + M2, b"y")  # the child owns no reservation: a free page
    assert _pool(k) == (4, 2, 1)
    c.exit()
    p.exit()
    assert _pool(k) == (4, 4, 0)
    k.check()


def test_hugetlb_fork_child_writes_measured_sequence():
    """Measured with a pool of 4: (Free, Rsvd) after each step."""
    k = kern(4)
    p = k.spawn()
    a = p.mmap(0, 2 * M2, RW, PA | HT)
    p.write(a, b"x")
    assert _pool(k)[1:] == (3, 1)
    c = p.fork()
    c.write(a + M2, b"y")  # not faulted in the parent: an unreserved free page
    assert _pool(k)[1:] == (2, 1)
    c.write(a, b"z")  # CoW of the parent's page: another one
    assert _pool(k)[1:] == (1, 1)
    assert p.read(a, 1) == b"x"
    p.munmap(a, 2 * M2)  # the parent's page and its unused reservation go back
    assert _pool(k)[1:] == (2, 0)
    c.exit()
    assert _pool(k)[1:] == (4, 0)
    k.check()


# --- SysV shm -------------------------------------------------------------------------------


def test_shm_attach_maps_and_flags():
    k = kern()
    p = k.spawn()
    sid = p.shmget(shm.IPC_PRIVATE, 10000, shm.IPC_CREAT | 0o600)
    a = p.shmat(sid)
    line = maps_line(p, a)
    assert line is not None
    assert line.split()[0] == f"{a:08x}-{a + 12288:08x}"
    assert line.split()[1:5] == ["rw-s", "00000000", "00:01", str(sid)]
    assert line.endswith("/SYSV00000000 (deleted)")
    assert flags_of(p, a) == ["rd", "wr", "sh", "mr", "mw", "me", "ms"]
    b = p.shmat(sid, 0, shm.SHM_RDONLY)
    assert maps_line(p, b).split()[1] == "r--s"
    assert errno_of(p.mprotect, b, 4096, RW) == "EACCES"
    c = p.shmat(sid, 0, shm.SHM_EXEC)
    assert maps_line(p, c).split()[1] == "rwxs"
    p.write(a, b"q")
    assert p.read(b, 1) == b"q"
    child = p.fork()
    assert child.read(a, 1) == b"q"
    key = p.shmget(0x1234ABCD, 8192, shm.IPC_CREAT | 0o600)
    d = p.shmat(key)
    assert maps_line(p, d).endswith("/SYSV1234abcd (deleted)")
    k.check()


def test_shm_errnos():
    k = kern()
    p = k.spawn()
    key = 0x1234ABCD
    sid = p.shmget(key, 8192, shm.IPC_CREAT | 0o600)
    assert errno_of(p.shmget, key, 8192, shm.IPC_CREAT | shm.IPC_EXCL | 0o600) == "EEXIST"
    assert errno_of(p.shmget, key, 16384, 0o600) == "EINVAL"
    assert p.shmget(key, 4096, 0o600) == sid
    assert p.shmget(key, 0, 0o600) == sid
    assert errno_of(p.shmget, key + 1, 8192, 0o600) == "ENOENT"
    assert errno_of(p.shmget, 0, 0, shm.IPC_CREAT | 0o600) == "EINVAL"
    assert errno_of(p.shmget, 0, 1 << 62, shm.IPC_CREAT | 0o600) == "ENOMEM"
    assert errno_of(p.shmat, 999999, 0, 0) == "EINVAL"
    assert errno_of(p.shmat, -1, 0, 0) == "EINVAL"
    base = p.mmap(0, 64 << 12, 0, PA)
    assert errno_of(p.shmat, sid, base + 100, 0) == "EINVAL"
    assert errno_of(p.shmat, sid, base + 4096 * 8 + 100, shm.SHM_RND) == "EINVAL"  # in use
    assert errno_of(p.shmat, sid, base + 4096 * 16, 0) == "EINVAL"
    assert errno_of(p.shmat, sid, 0, shm.SHM_REMAP) == "EINVAL"
    f = p.shmat(sid, base + 4096 * 16, shm.SHM_REMAP)
    assert f == base + 4096 * 16
    assert errno_of(p.shmctl, sid, 99) == "EINVAL"
    p.munmap(base + 4096 * 40, 4 * 4096)
    assert p.shmat(sid, base + 4096 * 40 + 100, shm.SHM_RND) == base + 4096 * 40
    assert errno_of(p.shmdt, base + 4096 * 60) == "EINVAL"
    assert errno_of(p.shmdt, f + 4096) == "EINVAL"
    assert errno_of(p.shmdt, f + 1) == "EINVAL"
    k.check()


def test_shmdt_walks_the_fragments_of_an_attach():
    k = kern()
    p = k.spawn()
    sid = p.shmget(0, 8192, shm.IPC_CREAT | 0o600)
    base = p.mmap(0, 64 << 12, 0, PA)
    f = p.shmat(sid, base + 4096 * 16, shm.SHM_REMAP)
    p.mprotect(f + 4096, 4096, uapi.PROT_READ)
    assert len([v for v in p.vmas() if f <= v.start < f + 8192]) == 2
    p.shmdt(f)
    assert maps_line(p, f) is None and maps_line(p, f + 4096) is None
    assert maps_line(p, f - 4096) is not None  # the reservation around it stays
    g = p.shmat(sid, base + 4096 * 24, shm.SHM_REMAP)
    p.munmap(g, 4096)
    assert errno_of(p.shmdt, g + 4096) == "EINVAL"  # vm_pgoff 1 != 0
    assert maps_line(p, g + 4096) is not None
    h = p.shmat(sid)
    p.mremap(h, 8192, 8192, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, base + 4096 * 32)
    p.shmdt(base + 4096 * 32)
    assert maps_line(p, base + 4096 * 32) is None
    k.check()


def test_shm_rmid_lifetime():
    k = kern()
    p = k.spawn()
    key = 0x42
    sid = p.shmget(key, 8192, shm.IPC_CREAT | 0o600)
    a = p.shmat(sid)
    committed = k.meminfo()["Committed_AS"]
    p.shmctl(sid, shm.IPC_RMID)
    assert maps_line(p, a).endswith("/SYSV00000042 (deleted)")
    b = p.shmat(sid, 0, shm.SHM_RDONLY)  # still attachable while attached (measured)
    assert errno_of(p.shmget, key, 8192, 0o600) == "ENOENT"
    p.shmdt(a)
    p.shmdt(b)
    assert errno_of(p.shmat, sid, 0, 0) == "EINVAL"
    assert errno_of(p.shmctl, sid, shm.IPC_RMID) == "EINVAL"
    assert k.meminfo()["Committed_AS"] == committed - 8
    k.check()
    sid = p.shmget(0, 4096, shm.IPC_CREAT | 0o600)
    p.shmat(sid)
    p.shmctl(sid, shm.IPC_RMID)
    p.exit()
    assert not shm.ns_of(k.ctx).segments
    k.check()


def test_shm_rnd_below_shmlba_maps_at_zero_and_exec_rdonly():
    k = kern()
    p = k.spawn()
    sid = p.shmget(0, 8192, shm.IPC_CREAT | 0o600)
    a = p.shmat(sid, 0, shm.SHM_EXEC | shm.SHM_RDONLY)
    assert maps_line(p, a).split()[1] == "r-xs"
    assert p.shmat(sid, 100, shm.SHM_RND) == 0  # MAP_FIXED at 0: allowed to root
    assert errno_of(p.shmat, sid, 4096, 0) == "EINVAL"  # overlaps the attach at 0
    assert errno_of(p.shmat, sid, 100, shm.SHM_RND | shm.SHM_REMAP) == "EINVAL"
    k.check()


# --- /dev/zero ------------------------------------------------------------------------------


def test_dev_zero_mappings():
    k = kern()
    p = k.spawn()
    fd = p.open("/dev/zero", uapi.O_RDWR)
    a = p.mmap(0, 8192, RW, uapi.MAP_PRIVATE, fd, 0)
    line = maps_line(p, a)
    assert line.split()[1:5] == ["rw-p", "00000000", "00:06", "4"]
    assert line.endswith("/dev/zero")
    assert flags_of(p, a) == ["rd", "wr", "mr", "mw", "me", "ac"]
    b = p.mmap(0, 8192, RW, uapi.MAP_PRIVATE, fd, 4096)
    assert maps_line(p, b).split()[2] == "00001000"
    s = p.mmap(0, 8192, RW, uapi.MAP_SHARED, fd, 0)
    line = maps_line(p, s)
    assert line.split()[1:4] == ["rw-s", "00000000", "00:01"]
    assert line.endswith("/dev/zero (deleted)")
    assert flags_of(p, s) == ["rd", "wr", "sh", "mr", "mw", "me", "ms"]
    s2 = p.mmap(0, 8192, RW, uapi.MAP_SHARED, fd, 4096)
    assert maps_line(p, s2).split()[2] == "00001000"
    assert maps_line(p, s2).split()[4] != maps_line(p, s).split()[4]
    q = p.mmap(0, 16 << 12, 0, PA)
    p.mmap(q, 4096, RW, PA | FX)
    p.mmap(q + 4096, 4096, RW, uapi.MAP_PRIVATE | FX, fd, 0)
    assert len([v for v in p.vmas() if q <= v.start < q + 8192]) == 2  # no merge
    assert p.read(a, 4) == bytes(4)
    p.write(a, b"abc")
    assert p.read(a, 3) == b"abc"
    ro = p.open("/dev/zero", uapi.O_RDONLY)
    assert errno_of(p.mmap, 0, 4096, RW, uapi.MAP_SHARED, ro, 0) == "EACCES"
    assert errno_of(p.mmap, 0, 4096, RW, uapi.MAP_PRIVATE, ro, 0) == "ok"
    k.check()


# --- msync ----------------------------------------------------------------------------------


def test_msync_errnos():
    k = kern()
    p = k.spawn()
    m = p.mmap(0, 4 * 4096, RW, PA)
    MS_ASYNC, MS_INVALIDATE, MS_SYNC = 1, 2, 4
    cases = [
        ((m, 4096, MS_SYNC), "ok"),
        ((m, 4096, 0), "ok"),
        ((m, 4096, 8), "EINVAL"),
        ((m, 4096, 5), "EINVAL"),
        ((m + 1, 4096, MS_SYNC), "EINVAL"),
        ((m, 0, MS_SYNC), "ok"),
        ((m, 100, MS_SYNC), "ok"),
        ((4096 * 16, 4096, MS_SYNC), "ENOMEM"),
        ((m, 2**64 - 4096, MS_SYNC), "ENOMEM"),
        ((1 << 47, 4096, MS_SYNC), "ENOMEM"),
    ]
    for args, want in cases:
        assert errno_of(p.msync, *args) == want, args
    before = p.maps()
    p.munmap(m + 4096, 4096)
    for fl in (MS_SYNC, MS_ASYNC, MS_INVALIDATE):
        assert errno_of(p.msync, m, 3 * 4096, fl) == "ENOMEM"
    p.mlock(m, 4096)
    assert errno_of(p.msync, m, 4096, MS_INVALIDATE) == "EBUSY"
    assert errno_of(p.msync, m, 4096, MS_SYNC) == "ok"
    assert errno_of(p.msync, m, 4096, MS_INVALIDATE | MS_ASYNC) == "EBUSY"
    m2 = p.mmap(0, 4 * 4096, RW, PA)
    p.munmap(m2, 4096)
    assert errno_of(p.msync, m2, 2 * 4096, MS_SYNC) == "ENOMEM"
    assert before != p.maps()
    k.check()


def test_hugetlb_split_by_mprotect_stays_split():
    """Measured on 6.18.44 (nr_hugepages 4 for the run): mprotect of the second 2 MiB of
    a 4 MiB private hugetlb mapping to PROT_READ and back leaves two VMAs, since
    hugetlb_vm_ops has .close and can_merge_remove_vma() refuses to merge it away."""
    k = kern(4)
    p = k.spawn()
    a = p.mmap(0, 2 * M2, RW, PA | HT)
    p.mprotect(a + M2, M2, uapi.PROT_READ)
    p.mprotect(a + M2, M2, RW)
    spans = [(v.start, v.end) for v in p.vmas() if a <= v.start < a + 2 * M2]
    assert spans == [(a, a + M2), (a + M2, a + 2 * M2)]
    k.check()
