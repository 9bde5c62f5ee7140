"""A hypothesis state machine over SysV shm, msync, /dev/zero, hugetlb and userfaultfd
registration (issue 14), mixed with the ordinary VMA operations, fork and accesses;
``Kernel.check()`` after every step and, at the end, nothing left in the slabs.

What each op does on the real kernel is in docs/coverage.md (and is replayed by
tests/test_coverage_*.py); this machine only asks that every sequence leaves the model
consistent and that failures are OSErrors with the kernel's errnos.
"""

from __future__ import annotations

import errno

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from vmalab import Kernel, SegmentationFault, uapi
from vmalab.mm import shm
from vmalab.mm.userfaultfd import UFFD_FEATURE_SIGBUS

P = 4096
W = 1024  # arena pages (two 2 MiB-aligned halves)
RW = uapi.PROT_READ | uapi.PROT_WRITE
PA = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
FX = uapi.MAP_FIXED
ERRNOS = {
    errno.EINVAL,
    errno.ENOMEM,
    errno.EACCES,
    errno.EBUSY,
    errno.EEXIST,
    errno.ENOENT,
    errno.EFAULT,
    errno.EAGAIN,
    errno.EPERM,
    errno.EBADF,
}
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

page = st.integers(0, 63)
length = st.integers(1, 12)
proc_i = st.integers(0, 3)


class IpcMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.k = Kernel()
        p = self.k.spawn()
        self.base = p.mmap(0, W * P, 0, PA)
        p.munmap(self.base, W * P)
        # 2 MiB-align the arena for the hugetlb rules
        self.base = (self.base + (2 << 20) - 1) & ~((2 << 20) - 1)
        p.mmap(self.base, (W - 512) * P, 0, PA | FX)
        p.munmap(self.base, (W - 512) * P)
        self.procs = [p]
        self.segs: list[int] = []
        self.uffds: dict[int, int] = {}  # proc index -> uffd descriptor
        self.devzero: dict[int, int] = {}

    def p(self, i: int):
        return self.procs[i % len(self.procs)]

    def a(self, pg: int) -> int:
        return self.base + pg * P

    def do(self, fn, *args):
        try:
            r = fn(*args)
        except OSError as e:
            assert e.errno in ERRNOS, f"{fn.__name__}{args}: unexpected {e!r}"
            r = None
        self.k.check()
        return r

    # --- ordinary VMA operations ---------------------------------------------------
    @rule(pi=proc_i, pg=page, n=length, prot=st.sampled_from([RW, uapi.PROT_READ, 0]))
    def mmap_anon(self, pi, pg, n, prot):
        self.do(self.p(pi).mmap, self.a(pg), n * P, prot, PA | FX)

    @rule(pi=proc_i, pg=page, n=length)
    def mmap_shared_anon(self, pi, pg, n):
        self.do(self.p(pi).mmap, self.a(pg), n * P, RW, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS | FX)

    @rule(pi=proc_i, pg=page, n=length)
    def munmap(self, pi, pg, n):
        self.do(self.p(pi).munmap, self.a(pg), n * P)

    @rule(pi=proc_i, pg=page, n=length, prot=st.sampled_from([RW, uapi.PROT_READ]))
    def mprotect(self, pi, pg, n, prot):
        self.do(self.p(pi).mprotect, self.a(pg), n * P, prot)

    @rule(pi=proc_i, pg=page, n=length, to=page)
    def mremap_move(self, pi, pg, n, to):
        flags = uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED
        self.do(self.p(pi).mremap, self.a(pg), n * P, n * P, flags, self.a(to + 64))

    @rule(
        pi=proc_i,
        pg=page,
        n=length,
        adv=st.sampled_from(
            [
                uapi.MADV_DONTNEED,
                uapi.MADV_POPULATE_WRITE,
                uapi.MADV_POPULATE_READ,
                uapi.MADV_GUARD_INSTALL,
                uapi.MADV_DONTFORK,
            ]
        ),
    )
    def madvise(self, pi, pg, n, adv):
        self.do(self.p(pi).madvise, self.a(pg), n * P, adv)

    @rule(pi=proc_i, pg=page, n=length)
    def mlock(self, pi, pg, n):
        self.do(self.p(pi).mlock, self.a(pg), n * P)

    @rule(pi=proc_i, pg=st.integers(0, 127), write=st.booleans())
    def access(self, pi, pg, write):
        p = self.p(pi)
        try:
            if write:
                p.write(self.a(pg), b"\x5a")
            else:
                p.read(self.a(pg), 1)
        except SegmentationFault:
            pass
        self.k.check()

    @precondition(lambda self: len(self.procs) < 4)
    @rule(pi=proc_i)
    def fork(self, pi):
        c = self.do(self.p(pi).fork)
        if c is not None:
            self.procs.append(c)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(pi=st.integers(1, 3))
    def exit(self, pi):
        i = 1 + (pi - 1) % (len(self.procs) - 1)
        self.procs.pop(i).exit()
        self.uffds = {j if j < i else j - 1: fd for j, fd in self.uffds.items() if j != i}
        self.devzero = {j if j < i else j - 1: fd for j, fd in self.devzero.items() if j != i}
        self.k.check()

    # --- hugetlb -------------------------------------------------------------------
    @rule(
        pi=proc_i,
        half=st.sampled_from([0, 512]),
        n=st.sampled_from([1, 100, 512]),
        noreserve=st.booleans(),
        shared=st.booleans(),
    )
    def mmap_huge(self, pi, half, n, noreserve, shared):
        fl = (uapi.MAP_SHARED if shared else uapi.MAP_PRIVATE) | uapi.MAP_ANONYMOUS | FX
        fl |= uapi.MAP_HUGETLB | (21 << 26)
        if noreserve:
            fl |= uapi.MAP_NORESERVE
        self.do(self.p(pi).mmap, self.a(half), n * P, RW, fl)

    # --- /dev/zero -----------------------------------------------------------------
    @rule(pi=proc_i, pg=page, n=length, shared=st.booleans())
    def mmap_devzero(self, pi, pg, n, shared):
        i = pi % len(self.procs)
        p = self.procs[i]
        if i not in self.devzero:
            self.devzero[i] = p.open("/dev/zero", uapi.O_RDWR)
        fl = (uapi.MAP_SHARED if shared else uapi.MAP_PRIVATE) | FX
        self.do(p.mmap, self.a(pg), n * P, RW, fl, self.devzero[i], 0)

    # --- SysV shm ------------------------------------------------------------------
    @rule(
        pi=proc_i,
        pages=st.integers(1, 8),
        key=st.sampled_from([shm.IPC_PRIVATE, 0x1234]),
        excl=st.booleans(),
    )
    def shmget(self, pi, pages, key, excl):
        fl = shm.IPC_CREAT | (shm.IPC_EXCL if excl else 0) | 0o600
        sid = self.do(self.p(pi).shmget, key, pages * P, fl)
        if sid is not None and sid not in self.segs:
            self.segs.append(sid)

    @precondition(lambda self: self.segs)
    @rule(
        pi=proc_i,
        si=st.integers(0, 7),
        pg=page,
        off=st.sampled_from([0, 0, 100]),
        flags=st.sampled_from([0, shm.SHM_RDONLY, shm.SHM_REMAP, shm.SHM_RND, shm.SHM_EXEC]),
    )
    def shmat(self, pi, si, pg, off, flags):
        sid = self.segs[si % len(self.segs)]
        self.do(self.p(pi).shmat, sid, self.a(pg) + off, flags)

    @rule(pi=proc_i, pg=page)
    def shmdt(self, pi, pg):
        self.do(self.p(pi).shmdt, self.a(pg))

    @precondition(lambda self: self.segs)
    @rule(pi=proc_i, si=st.integers(0, 7))
    def shmctl_rmid(self, pi, si):
        self.do(self.p(pi).shmctl, self.segs[si % len(self.segs)], shm.IPC_RMID)

    # --- msync ---------------------------------------------------------------------
    @rule(
        pi=proc_i,
        pg=page,
        n=length,
        flags=st.sampled_from([0, 4, 1, 2, 3, 8]),  # MS_SYNC, MS_ASYNC, MS_INVALIDATE
    )
    def msync(self, pi, pg, n, flags):
        self.do(self.p(pi).msync, self.a(pg), n * P, flags)

    # --- userfaultfd ---------------------------------------------------------------
    @rule(pi=proc_i, sigbus=st.booleans())
    def userfaultfd(self, pi, sigbus):
        i = pi % len(self.procs)
        if i in self.uffds:
            self.do(self.procs[i].close, self.uffds.pop(i))
            return
        p = self.procs[i]
        fd = p.userfaultfd(uapi.O_CLOEXEC)
        p.uffdio_api(fd, UFFD_FEATURE_SIGBUS if sigbus else 0)
        self.uffds[i] = fd
        self.k.check()

    @precondition(lambda self: self.uffds)
    @rule(pi=proc_i, pg=page, n=length, mode=st.sampled_from([1, 2, 3, 4]), unreg=st.booleans())
    def uffd_register(self, pi, pg, n, mode, unreg):
        i = sorted(self.uffds)[pi % len(self.uffds)]
        p, fd = self.procs[i], self.uffds[i]
        if unreg:
            self.do(p.uffdio_unregister, fd, self.a(pg), n * P)
        else:
            self.do(p.uffdio_register, fd, self.a(pg), n * P, mode)

    def teardown(self):
        for p in list(self.procs):
            p.exit()
        for sid in self.segs:
            try:
                self.procs[0].shmctl(sid, shm.IPC_RMID)
            except (OSError, ProcessLookupError):
                pass
        self.k.check()


def test_ipc_state_machine():
    IpcMachine.TestCase.settings = SETTINGS
    IpcMachine.TestCase().runTest()
