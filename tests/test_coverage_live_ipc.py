"""The new ops on the running kernel and on the model, side by side.

Each case runs a small ctypes program in a child Python (so nothing leaks into the test
process) and the same calls on the model, and compares errnos and the maps shape
(relative offsets, permissions, names with ids masked). Skipped off Linux x86-64 or
without root (SysV shm and userfaultfd as root are what was measured).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys

import pytest

from vmalab import Kernel, uapi
from vmalab.mm import shm

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64" or os.geteuid() != 0,
    reason="needs Linux x86-64 as root",
)

HELPER = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.syscall.argtypes = [ctypes.c_long] + [ctypes.c_ulong] * 6
def sc(nr, *a):
    a = [x & (2**64 - 1) for x in list(a) + [0] * (6 - len(a))]
    r = libc.syscall(nr, *a)
    return -ctypes.get_errno() if r == -1 else r
def en(r):
    return errno.errorcode[-r] if -4096 < r < 0 else "ok"
def rel(base, n):
    out = []
    for l in open("/proc/self/maps"):
        f = l.split(None, 5)
        s, e = (int(x, 16) for x in f[0].split("-"))
        if base <= s < base + n:
            name = f[5].strip() if len(f) > 5 else ""
            out.append([s - base, e - base, f[1], name])
    return out
res = {}
"""


def run_live(body: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", HELPER + body + "\nprint(json.dumps(res))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def en(fn, *a):
    try:
        fn(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"


def rel(p, base, n):
    out = []
    for line in p.maps().splitlines():
        f = line.split(None, 5)
        s, e = (int(x, 16) for x in f[0].split("-"))
        if base <= s < base + n:
            out.append([s - base, e - base, f[1], f[5].strip() if len(f) > 5 else ""])
    return out


def test_shm_live_matches_model():
    live = run_live(
        """
base = sc(9, 0, 64 << 12, 0, 0x22, -1, 0)
sid = sc(29, 0, 8192, 0o1000 | 0o600)
f = sc(30, sid, base + 16 * 4096, 0o40000)
sc(10, f + 4096, 4096, 1)
res["split"] = rel(base + 15 * 4096, 4 * 4096)
res["dt_mid"] = en(sc(67, f + 4096))
res["dt"] = en(sc(67, f))
res["after"] = rel(base + 15 * 4096, 4 * 4096)
res["rnd"] = en(sc(30, sid, base + 8 * 4096 + 100, 0o20000))
res["noremap"] = en(sc(30, sid, base + 30 * 4096, 0))
res["rmid"] = en(sc(31, sid, 0, 0))
res["at_gone"] = en(sc(30, sid, 0, 0))
res["get_excl"] = en(sc(29, 0x5eed, 4096, 0o1000 | 0o600))
res["get_excl2"] = en(sc(29, 0x5eed, 4096, 0o1000 | 0o2000 | 0o600))
res["get_big"] = en(sc(29, 0x5eed, 8192, 0o600))
sc(31, sc(29, 0x5eed, 0, 0o600), 0, 0)
"""
    )
    k = Kernel()
    p = k.spawn()
    base = p.mmap(0, 64 << 12, 0, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS)
    sid = p.shmget(0, 8192, shm.IPC_CREAT | 0o600)
    f = p.shmat(sid, base + 16 * 4096, shm.SHM_REMAP)
    p.mprotect(f + 4096, 4096, uapi.PROT_READ)
    model = {"split": rel(p, base + 15 * 4096, 4 * 4096)}
    model["dt_mid"] = en(p.shmdt, f + 4096)
    model["dt"] = en(p.shmdt, f)
    model["after"] = rel(p, base + 15 * 4096, 4 * 4096)
    model["rnd"] = en(p.shmat, sid, base + 8 * 4096 + 100, shm.SHM_RND)
    model["noremap"] = en(p.shmat, sid, base + 30 * 4096, 0)
    model["rmid"] = en(p.shmctl, sid, shm.IPC_RMID)
    model["at_gone"] = en(p.shmat, sid, 0, 0)
    model["get_excl"] = en(p.shmget, 0x5EED, 4096, shm.IPC_CREAT | 0o600)
    model["get_excl2"] = en(p.shmget, 0x5EED, 4096, shm.IPC_CREAT | shm.IPC_EXCL | 0o600)
    model["get_big"] = en(p.shmget, 0x5EED, 8192, 0o600)
    assert model == live
    k.check()


def test_msync_live_matches_model():
    body = """
m = sc(9, 0, 4 * 4096, 3, 0x22, -1, 0)
sc(11, m + 4096, 4096)
sc(149, m + 2 * 4096, 4096)
for name, a, n, fl in CASES:
    res[name] = en(sc(26, m + a, n, fl))
"""
    cases = [
        ("sync", 0, 4096, 4),
        ("zero", 0, 4096, 0),
        ("bad", 0, 4096, 8),
        ("both", 0, 4096, 5),
        ("unal", 1, 4096, 4),
        ("len0", 0, 0, 4),
        ("hole_sync", 0, 3 * 4096, 4),
        ("hole_async", 0, 3 * 4096, 1),
        ("hole_inval", 0, 3 * 4096, 2),
        ("locked_inval", 2 * 4096, 4096, 2),
        ("locked_sync", 2 * 4096, 4096, 4),
        ("wrap", 0, 2**64 - 4096, 4),
    ]
    live = run_live("CASES = " + repr(cases) + "\n" + body)
    k = Kernel()
    p = k.spawn()
    m = p.mmap(0, 4 * 4096, 3, 0x22)
    p.munmap(m + 4096, 4096)
    p.mlock(m + 2 * 4096, 4096)
    model = {name: en(p.msync, m + a, n, fl) for name, a, n, fl in cases}
    assert model == live


def test_userfaultfd_live_matches_model():
    live = run_live(
        """
import struct
def ioc(fd, cmd, fmt, *v):
    b = ctypes.create_string_buffer(struct.pack(fmt, *v))
    return sc(16, fd, cmd, ctypes.addressof(b))
API, REG, UNREG = 0xc018aa3f, 0xc020aa00, 0x8010aa01
q = sc(9, 0, 32 << 12, 0, 0x22, -1, 0)
a = sc(9, q, 8 << 12, 3, 0x32, -1, 0)
fd = sc(323, 0o2000000 | 0o4000)
res["reg_early"] = en(ioc(fd, REG, "QQQQ", a, 4096, 1, 0))
res["api"] = en(ioc(fd, API, "QQQ", 0xAA, 0, 0))
res["reg"] = en(ioc(fd, REG, "QQQQ", a + 2 * 4096, 2 * 4096, 1, 0))
res["l1"] = rel(q, 9 * 4096)
res["reg2"] = en(ioc(fd, REG, "QQQQ", a + 4 * 4096, 2 * 4096, 1, 0))
res["l2"] = rel(q, 9 * 4096)
res["minor"] = en(ioc(fd, REG, "QQQQ", a, 4096, 4, 0))
res["unreg"] = en(ioc(fd, UNREG, "QQ", a + 2 * 4096, 4 * 4096))
res["l3"] = rel(q, 9 * 4096)
res["reg3"] = en(ioc(fd, REG, "QQQQ", a + 4096, 4096, 1, 0))
os.close(fd)
res["l4"] = rel(q, 9 * 4096)
"""
    )
    k = Kernel()
    p = k.spawn()
    q = p.mmap(0, 32 << 12, 0, 0x22)
    a = p.mmap(q, 8 << 12, 3, 0x32)
    fd = p.userfaultfd(0o2000000 | 0o4000)
    model = {"reg_early": en(p.uffdio_register, fd, a, 4096, 1)}
    model["api"] = en(p.uffdio_api, fd)
    model["reg"] = en(p.uffdio_register, fd, a + 2 * 4096, 2 * 4096, 1)
    model["l1"] = rel(p, q, 9 * 4096)
    model["reg2"] = en(p.uffdio_register, fd, a + 4 * 4096, 2 * 4096, 1)
    model["l2"] = rel(p, q, 9 * 4096)
    model["minor"] = en(p.uffdio_register, fd, a, 4096, 4)
    model["unreg"] = en(p.uffdio_unregister, fd, a + 2 * 4096, 4 * 4096)
    model["l3"] = rel(p, q, 9 * 4096)
    model["reg3"] = en(p.uffdio_register, fd, a + 4096, 4096, 1)
    p.close(fd)
    model["l4"] = rel(p, q, 9 * 4096)
    assert model == live
    k.check()


def _nr_hugepages() -> int:
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            return int(f.read())
    except OSError:
        return -1


@pytest.mark.skipif(_nr_hugepages() != 0, reason="measured with an empty hugetlb pool")
def test_hugetlb_empty_pool_live_matches_model():
    live = run_live(
        """
M2 = 2 << 20
res["priv"] = en(sc(9, 0, M2, 3, 0x40022, -1, 0))
res["bits22"] = en(sc(9, 0, M2, 3, 0x40022 | (22 << 26), -1, 0))
r = sc(9, 0, 4096, 3, 0x44022, -1, 0)
res["nr"] = rel(r, 2 << 20)
res["unmap4k"] = en(sc(11, r, 4096))
res["guard"] = en(sc(28, r, 4096, 102))
res["grow"] = en(sc(25, r, M2, 2 * M2, 1))
"""
    )
    k = Kernel()  # the machine's pool: 0 pages, as the skip condition says
    p = k.spawn()
    m2 = 2 << 20
    model = {"priv": en(p.mmap, 0, m2, 3, 0x40022)}
    model["bits22"] = en(p.mmap, 0, m2, 3, 0x40022 | (22 << 26))
    r = p.mmap(0, 4096, 3, 0x44022)
    model["nr"] = rel(p, r, 2 << 20)
    model["unmap4k"] = en(p.munmap, r, 4096)
    model["guard"] = en(p.madvise, r, 4096, 102)
    model["grow"] = en(p.mremap, r, m2, 2 * m2, 1)
    assert model == live
    k.check()
