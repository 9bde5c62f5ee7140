"""userfaultfd registration: VMA flags, splits and merges, as 6.18.44 showed them.

Measured on the project's machine (root, ctypes, syscall 323 and the UFFDIO ioctls in a
child process); the tables are in docs/coverage.md.
"""

from __future__ import annotations

import errno

from vmalab import Kernel, uapi
from vmalab.mm import shm

RW = uapi.PROT_READ | uapi.PROT_WRITE
PA = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
FX = uapi.MAP_FIXED
MISSING, WP, MINOR = 1, 2, 4
P = 4096


def errno_of(fn, *a):
    try:
        fn(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"


def layout(p, base, n=32):
    return [(v.start - base, v.end - base) for v in p.vmas() if base <= v.start < base + n * P]


def vmflags(p, addr):
    cur = False
    for line in p.smaps().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            s, e = (int(x, 16) for x in head.split("-"))
            cur = s <= addr < e
        elif cur and line.startswith("VmFlags:"):
            return line.split(":", 1)[1].split()
    raise AssertionError


def setup():
    k = Kernel()
    p = k.spawn()
    q = p.mmap(0, 32 * P, 0, PA)
    a = p.mmap(q, 8 * P, RW, PA | FX)
    return k, p, q, a


def test_api_and_register_errnos():
    k, p, q, a = setup()
    fd = p.userfaultfd(0o2000000 | 0o4000)
    assert errno_of(p.uffdio_register, fd, a, P, MISSING) == "EINVAL"  # before UFFDIO_API
    assert p.uffdio_api(fd) == (0x1FFFF, 0x8000000000000003)
    assert errno_of(p.uffdio_api, fd) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, a, P, MINOR) == "EINVAL"  # anonymous
    assert errno_of(p.uffdio_register, fd, a, P, 0) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, a, P, 8) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, a + 1, P, MISSING) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, a, 0, MISSING) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, 1 << 40, P, MISSING) == "EINVAL"
    assert errno_of(p.uffdio_register, fd, P, P, MISSING) == "EINVAL"  # below mmap_min_addr
    f3 = p.userfaultfd(0)
    assert errno_of(p.uffdio_api, f3, 0, 0xAB) == "EINVAL"
    assert errno_of(p.uffdio_api, f3) == "ok"  # a failed API leaves it waiting for one
    assert errno_of(p.userfaultfd, 1) == "ok"  # UFFD_USER_MODE_ONLY
    assert errno_of(p.mmap, 0, P, RW, uapi.MAP_SHARED, fd, 0) == "EACCES"
    d = p.mmap(0, P, RW, uapi.MAP_DROPPABLE | uapi.MAP_ANONYMOUS)
    assert errno_of(p.uffdio_register, fd, d, P, MISSING) == "EINVAL"
    p.install_special_mapping(0x7FFF00000000, 2 * P, 0x75, "[vdso]")
    assert errno_of(p.uffdio_register, fd, 0x7FFF00000000, P, MISSING) == "EINVAL"
    ro = p.mmap(0, P, uapi.PROT_READ, PA)
    assert errno_of(p.uffdio_register, fd, ro, P, MISSING) == "ok"
    assert errno_of(p.uffdio_register, fd, ro, P, WP) == "ok"
    k.check()


def test_register_splits_merges_and_unregister_merges_back():
    k, p, q, a = setup()
    fd = p.userfaultfd(0)
    p.uffdio_api(fd)
    assert p.uffdio_register(fd, a + 2 * P, 2 * P, MISSING) == 0x13C
    assert layout(p, q)[:3] == [(0, 2 * P), (2 * P, 4 * P), (4 * P, 8 * P)]
    assert vmflags(p, a) == ["rd", "wr", "mr", "mw", "me", "ac"]
    assert vmflags(p, a + 2 * P) == ["rd", "wr", "mr", "mw", "me", "um", "ac"]
    p.uffdio_register(fd, a + 4 * P, 2 * P, MISSING)  # same ctx and flags: merges
    assert layout(p, q)[:3] == [(0, 2 * P), (2 * P, 6 * P), (6 * P, 8 * P)]
    assert p.uffdio_register(fd, a + 2 * P, 4 * P, MISSING | WP) == 0x17C
    assert layout(p, q)[:3] == [(0, 2 * P), (2 * P, 6 * P), (6 * P, 8 * P)]
    assert vmflags(p, a + 2 * P) == ["rd", "wr", "mr", "mw", "me", "um", "uw", "ac"]
    p.uffdio_register(fd, a + 7 * P, 2 * P, MISSING)  # spans into the PROT_NONE part
    p.mprotect(a + 3 * P, P, uapi.PROT_READ)
    p.mprotect(a + 3 * P, P, RW)
    assert layout(p, q)[:4] == [(0, 2 * P), (2 * P, 6 * P), (6 * P, 7 * P), (7 * P, 8 * P)]
    p.uffdio_unregister(fd, a + 2 * P, 4 * P)
    assert layout(p, q)[:2] == [(0, 7 * P), (7 * P, 8 * P)]
    assert errno_of(p.uffdio_unregister, fd, a + 6 * P, P) == "ok"  # not registered
    assert errno_of(p.uffdio_unregister, fd, a + 1, P) == "EINVAL"
    assert errno_of(p.uffdio_unregister, fd, 1 << 40, P) == "EINVAL"
    k.check()


def test_two_contexts_and_close():
    k, p, q, a = setup()
    fd = p.userfaultfd(0)
    p.uffdio_api(fd)
    fd2 = p.userfaultfd(0)
    p.uffdio_api(fd2)
    p.uffdio_register(fd, a, P, MISSING)
    assert errno_of(p.uffdio_register, fd2, a + P, P, MISSING) == "ok"
    assert layout(p, q)[:3] == [(0, P), (P, 2 * P), (2 * P, 8 * P)]  # no merge
    assert errno_of(p.uffdio_register, fd2, a, P, MISSING) == "EBUSY"
    assert errno_of(p.uffdio_unregister, fd2, a, P) == "EINVAL"
    assert "um" in vmflags(p, a)
    p.close(fd)
    p.close(fd2)
    assert layout(p, q)[:1] == [(0, 8 * P)]
    assert vmflags(p, a) == ["rd", "wr", "mr", "mw", "me", "ac"]
    k.check()


def test_shmem_minor_wp_and_sysv_refused():
    k = Kernel()
    p = k.spawn()
    fd = p.userfaultfd(0)
    p.uffdio_api(fd)
    s = p.mmap(0, 4 * P, RW, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS)
    assert p.uffdio_register(fd, s, P, MINOR) == 0x1BC
    assert vmflags(p, s)[-1] == "ui"
    p.uffdio_register(fd, s + P, P, WP)
    assert vmflags(p, s + P)[-1] == "uw"
    m = p.memfd_create("m")
    p.ftruncate(m, P)
    pm = p.mmap(0, P, RW, uapi.MAP_PRIVATE, m, 0)
    assert errno_of(p.uffdio_register, fd, pm, P, MISSING) == "ok"
    sid = p.shmget(0, 8192, shm.IPC_CREAT | 0o600)
    assert errno_of(p.uffdio_register, fd, p.shmat(sid, 0, shm.SHM_RDONLY), P, MISSING) == (
        "EINVAL"
    )
    assert errno_of(p.uffdio_register, fd, p.shmat(sid), P, MISSING) == "EINVAL"
    k.check()


def test_fork_and_mremap_drop_the_registration():
    k, p, q, a = setup()
    fd = p.userfaultfd(0)
    p.uffdio_api(fd)
    p.uffdio_register(fd, a + 5 * P, P, MISSING)
    c = p.fork()
    assert layout(c, q)[:3] == [(0, 5 * P), (5 * P, 6 * P), (6 * P, 8 * P)]  # no merge
    assert "um" not in vmflags(c, a + 5 * P)
    assert "um" in vmflags(p, a + 5 * P)
    p.uffdio_register(fd, a, P, MISSING)
    p.mremap(a, P, P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, q + 16 * P)
    assert "um" not in vmflags(p, q + 16 * P)
    k.check()
    c.exit()
    p.exit()
    k.check()
