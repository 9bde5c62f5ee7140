"""The model side: ``ModelMachine`` (a ``Machine`` over a vmalab ``Process``) and
``run_model``. The model itself is imported only when a run starts, so that parsing and the
live runner work without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmalab import uapi
from vmalab.errors import SegmentationFault
from vmalab.program.core import Program
from vmalab.program.names import PAGE
from vmalab.program.observe import Observation, parse_smaps
from vmalab.program.run import Machine, execute


class ModelMachine:
    """A ``Machine`` over a vmalab ``Process`` (the public contract API only)."""

    def __init__(self, kernel: Any, proc: Any, *, check: bool = True) -> None:
        self.k = kernel
        self.p = proc
        self.do_check = check

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        return int(self.p.mmap(addr, length, prot, flags, fd, offset))

    def munmap(self, addr: int, length: int) -> None:
        self.p.munmap(addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.p.mprotect(addr, length, prot)

    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int:
        return int(self.p.mremap(addr, old, new, flags, new_addr))

    def madvise(self, addr: int, length: int, advice: int) -> None:
        self.p.madvise(addr, length, advice)

    def mlock(self, addr: int, length: int, onfault: bool) -> None:
        if onfault:
            self.p.mlock2(addr, length, uapi.MLOCK_ONFAULT)
        else:
            self.p.mlock(addr, length)

    def add_seals(self, fd: int, seals: int) -> None:
        self.p.add_seals(fd, seals)

    def munlock(self, addr: int, length: int) -> None:
        self.p.munlock(addr, length)

    def msync(self, addr: int, length: int, flags: int) -> None:
        self.p.msync(addr, length, flags)

    def shmget(self, key: int, size: int, flags: int) -> int:
        return int(self.p.shmget(key, size, flags))

    def shmat(self, shmid: int, addr: int, flags: int) -> int:
        return int(self.p.shmat(shmid, addr, flags))

    def shmdt(self, addr: int) -> None:
        self.p.shmdt(addr)

    def shmctl(self, shmid: int, cmd: int) -> int:
        return int(self.p.shmctl(shmid, cmd))

    def open_devzero(self, write: bool) -> int:
        return int(self.p.open("/dev/zero", uapi.O_RDWR if write else uapi.O_RDONLY))

    def userfaultfd(self) -> int:
        return int(self.p.userfaultfd(uapi.O_CLOEXEC | uapi.O_NONBLOCK))

    def uffdio_api(self, fd: int, features: int) -> tuple[int, int]:
        feat, ioctls = self.p.uffdio_api(fd, features)
        return int(feat), int(ioctls)

    def uffdio_register(self, fd: int, start: int, length: int, mode: int) -> int:
        return int(self.p.uffdio_register(fd, start, length, mode))

    def uffdio_unregister(self, fd: int, start: int, length: int) -> None:
        self.p.uffdio_unregister(fd, start, length)

    def mseal(self, addr: int, length: int) -> None:
        self.p.mseal(addr, length, 0)

    def mlockall(self, flags: int) -> None:
        self.p.mlockall(flags)

    def munlockall(self) -> None:
        self.p.munlockall()

    def memlock(self, limit: int, cap_ipc_lock: bool) -> None:
        self.p.rlimit_memlock = limit
        self.p.cap_ipc_lock = cap_ipc_lock

    def mdwe(self, flags: int) -> int:
        self.p.prctl(uapi.PR_SET_MDWE, flags)
        return int(self.p.prctl(uapi.PR_GET_MDWE))

    def mincore(self, addr: int, length: int) -> bytes:
        return bytes(self.p.mincore(addr, length))

    def pkey_alloc(self, rights: int) -> int:
        return int(self.p.pkey_alloc(0, rights))

    def pkey_free(self, key: int) -> None:
        self.p.pkey_free(key)

    def pkey_mprotect(self, addr: int, length: int, prot: int, key: int) -> None:
        self.p.pkey_mprotect(addr, length, prot, key)

    def memfd_create(self, name: str, flags: int) -> int:
        return int(self.p.memfd_create(name, flags))

    def open(self, name: str, flags: int) -> int:
        return int(self.p.open("/" + name, flags, 0o600))

    def close(self, fd: int) -> None:
        self.p.close(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self.p.ftruncate(fd, length)

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        self.p.fallocate(fd, mode, offset, length)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return int(self.p.pwrite(fd, data, offset))

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return bytes(self.p.pread(fd, length, offset))

    def load(self, addr: int) -> tuple[str, int]:
        try:
            return "ok", self.p.read(addr, 1)[0]
        except SegmentationFault as e:
            return e.signal, 0

    def store(self, addr: int, byte: int) -> str:
        try:
            self.p.write(addr, bytes([byte]))
            return "ok"
        except SegmentationFault as e:
            return str(e.signal)

    def fork(self, run_child: Callable[[Machine], Observation]) -> Observation:
        child = ModelMachine(self.k, self.p.fork(), check=self.do_check)
        obs = run_child(child)
        if obs.final is not None or obs.error is not None:
            try:
                child.p.exit()
            except ProcessLookupError:
                pass
        return obs

    def exit(self) -> None:
        self.p.exit()

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, frozenset[str]]]:
        return [
            (v.start, v.end, frozenset(v.flags))
            for v in self.p.vmas()
            if v.end > lo and v.start < hi
        ]

    def pagemap(self, addr: int, npages: int) -> list[int]:
        return [int(x) for x in self.p.pagemap(addr, npages)]

    def pmd_mapped(self, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
        if hi - lo < 512 * PAGE:  # no PMD-aligned 2 MiB range fits in the arena
            return []
        return parse_smaps(str(self.p.smaps()).splitlines(), lo, hi)[1]

    def khugepaged(self, max_ptes_none: int, max_ptes_swap: int, max_ptes_shared: int) -> int:
        return int(
            self.k.khugepaged(
                max_ptes_none=max_ptes_none,
                max_ptes_swap=max_ptes_swap,
                max_ptes_shared=max_ptes_shared,
            )
        )

    def slab(self) -> dict[str, int]:
        s = self.k.slab()
        return {k: int(s[k].active) for k in ("anon_vma", "anon_vma_chain", "vm_area_struct")}

    def check(self) -> None:
        if self.do_check:
            self.k.check()


DEFAULT_MODEL_SECONDS = 120.0
"""Wall-time budget of one ``run_model`` unless the caller gives one."""


def run_model(
    prog: Program,
    design: str,
    *,
    check: bool | None = None,
    timeout: float | None = DEFAULT_MODEL_SECONDS,
    budget: Any = None,
) -> Observation:
    """Run ``prog`` on a fresh vmalab ``Kernel(design)``. ``check`` (default: programs of at
    most 1000 ops) runs ``Kernel.check()`` after every op; a failure ends the run with
    ``error`` set. ``budget`` (a ``vmalab.budget.Budget``; default: the default limits with
    ``timeout`` seconds of wall time) bounds the host resources: a breach, or a MemoryError,
    raises ``ResourceLimitError`` rather than being reported as a divergence."""
    from vmalab import Kernel  # the core model; imported late so parsing works without it
    from vmalab.budget import Budget

    if budget is None:
        budget = Budget.from_env(seconds=timeout)
    pool = prog.hugetlb_pool
    k = Kernel(design, budget=budget, hugetlb_pages=None if pool is None else {21: pool, 30: 0})
    if check is None:
        check = prog.count_ops() <= 1000
    return execute(prog, ModelMachine(k, k.spawn(), check=check))
