"""Random sequences of the new ops mixed with the old ones: Kernel.check() after every step.

Model-only (no live kernel): the invariants are the model's own (VMA tree, i_mmap,
page counts, commit charge, the hugetlb pool's 0 <= resv <= free <= total). Every step
either succeeds or raises OSError / SegmentationFault; nothing else.
"""

from __future__ import annotations

import random

import pytest

from vmalab import Kernel, uapi
from vmalab.errors import SegmentationFault
from vmalab.mm import shm

M2 = 2 << 20
P = 4096


def _step(rng: random.Random, k: Kernel, procs: list, state: dict) -> None:
    p = rng.choice(procs)
    base = state["base"][p.pid] if p.pid in state["base"] else None
    op = rng.randrange(22)
    huge_flags = uapi.MAP_HUGETLB | (uapi.MAP_NORESERVE if rng.random() < 0.5 else 0)
    if op == 0:
        typ = uapi.MAP_SHARED if rng.random() < 0.3 else uapi.MAP_PRIVATE
        p.mmap(0, rng.choice([P, M2, 2 * M2]), 3, typ | uapi.MAP_ANONYMOUS | huge_flags)
    elif op == 1 and base is not None:
        off = rng.randrange(8) * M2
        p.mmap(
            base + off, M2, 3, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED | huge_flags
        )
    elif op == 2:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            a = v.start + rng.randrange(max(1, (v.end - v.start) // P)) * P
            p.munmap(a, rng.choice([P, M2, v.end - v.start]))
    elif op == 3:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            a = v.start + rng.randrange(max(1, (v.end - v.start) // P)) * P
            p.mprotect(a, rng.choice([P, M2]), rng.choice([1, 3, 0]))
    elif op == 4:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            a = v.start + rng.randrange(max(1, (v.end - v.start) // P)) * P
            if rng.random() < 0.5:
                p.write(a, b"x")
            else:
                p.read(a, 1)
    elif op == 5:
        sid = p.shmget(
            rng.choice([0, 0x77, 0x78]), rng.choice([P, 3 * P, 10000]), shm.IPC_CREAT | 0o600
        )
        state["shm"].append(sid)
    elif op == 6 and state["shm"]:
        flags = rng.choice([0, shm.SHM_RDONLY, shm.SHM_EXEC, shm.SHM_REMAP])
        addr = 0
        if base is not None and rng.random() < 0.5:
            addr = base + rng.randrange(4096) * P + rng.choice([0, 100])
            flags |= rng.choice([0, shm.SHM_RND])
        p.shmat(rng.choice(state["shm"]), addr, flags)
    elif op == 7:
        vs = p.vmas()
        if vs:
            p.shmdt(rng.choice(vs).start + rng.choice([0, P]))
    elif op == 8 and state["shm"]:
        p.shmctl(rng.choice(state["shm"]), shm.IPC_RMID)
    elif op == 9:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            p.msync(v.start, rng.choice([P, M2, 1 << 30]), rng.choice([1, 2, 4, 6, 3]))
    elif op == 10:
        fd = p.userfaultfd(0)
        p.uffdio_api(fd)
        state["uffd"].setdefault(p.pid, []).append(fd)
    elif op in (11, 12) and state["uffd"].get(p.pid):
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            fd = rng.choice(state["uffd"][p.pid])
            a = v.start + rng.randrange(max(1, (v.end - v.start) // P)) * P
            n = rng.choice([P, 2 * P, M2])
            if op == 11:
                p.uffdio_register(fd, a, n, rng.choice([1, 2, 3, 4]))
            else:
                p.uffdio_unregister(fd, a, n)
    elif op == 13 and state["uffd"].get(p.pid):
        fds = state["uffd"][p.pid]
        p.close(fds.pop(rng.randrange(len(fds))))
    elif op == 14 and len(procs) < 4:
        c = p.fork()
        procs.append(c)
        if p.pid in state["base"]:
            state["base"][c.pid] = state["base"][p.pid]
        state["uffd"][c.pid] = list(state["uffd"].get(p.pid, []))
    elif op == 15 and len(procs) > 1:
        procs.remove(p)
        p.exit()
    elif op == 16:
        fd = p.memfd_create("h", uapi.MFD_HUGETLB)
        p.ftruncate(fd, rng.choice([0, M2, 2 * M2, P]))
        typ = rng.choice([uapi.MAP_SHARED, uapi.MAP_PRIVATE])
        p.mmap(
            0,
            rng.choice([P, M2]),
            3,
            typ | (uapi.MAP_NORESERVE if rng.random() < 0.5 else 0),
            fd,
            0,
        )
        p.close(fd)
    elif op == 17:
        fd = p.open("/dev/zero", uapi.O_RDWR)
        p.mmap(
            0,
            rng.choice([P, 4 * P]),
            3,
            rng.choice([uapi.MAP_SHARED, uapi.MAP_PRIVATE]),
            fd,
            rng.choice([0, P]),
        )
        p.close(fd)
    elif op == 18:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            p.mremap(
                v.start, v.end - v.start, rng.choice([P, M2, v.end - v.start]), uapi.MREMAP_MAYMOVE
            )
    elif op == 19:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            p.madvise(v.start, rng.choice([P, M2]), rng.choice([4, 8, 10, 14, 102, 23]))
    elif op == 20:
        vs = p.vmas()
        if vs:
            v = rng.choice(vs)
            p.mlock(v.start, rng.choice([P, M2]))
    else:
        pass  # a no-op step


@pytest.mark.parametrize("seed", range(12))
def test_random_new_ops_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    k = Kernel(hugetlb_pages={21: rng.choice([0, 2, 6]), 30: 0})
    p = k.spawn()
    state: dict = {"base": {}, "shm": [], "uffd": {}}
    state["base"][p.pid] = p.mmap(
        0, 16 * M2, 0, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_NORESERVE
    )
    procs = [p]
    for _ in range(250):
        try:
            _step(rng, k, procs, state)
        except (OSError, SegmentationFault):
            pass
        k.check()
    for q in list(procs):
        q.exit()
    k.check()
    m = k.meminfo()
    assert m["HugePages_Free"] == m["HugePages_Total"]
    assert m["HugePages_Rsvd"] == 0
