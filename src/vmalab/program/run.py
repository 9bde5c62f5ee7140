"""The interpreter: ``execute`` runs a ``Program`` on a ``Machine``.

A ``Machine`` is one process on which a program runs, seen through its syscalls: the model
(``vmalab.program.model.ModelMachine``) or the real kernel (``vmalab.live.child.LiveMachine``).
The ``Runner`` holds what the ops share (the arena, the file-slot table) and asks each op
to run itself (``OpBase.run``). Nothing here touches the running kernel.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from vmalab.errors import ResourceLimitError
from vmalab.program.names import ARENA_BASE, PAGE
from vmalab.program.observe import Observation, Observe, State, page_char


class RunnableOp(Protocol):
    """What the runner needs of an op (``OpBase`` is one): it sits below the op classes,
    which name ``Runner`` in their ``run`` signatures."""

    @property
    def op(self) -> str: ...
    @property
    def terminal(self) -> bool: ...
    def run(self, r: Runner, obs: Observation) -> dict[str, Any] | None: ...


class ProgramView(Protocol):
    """What the runner needs of a ``Program``: its arena size, observation switches and ops."""

    @property
    def arena_pages(self) -> int: ...
    @property
    def observe(self) -> Observe: ...
    @property
    def ops(self) -> Sequence[RunnableOp]: ...


class Machine(Protocol):
    """One process on which a program runs: the model (``ModelMachine``) or the real kernel
    (``vmalab.live.child.LiveMachine``). Addresses are absolute bytes; failures raise
    ``OSError`` with the kernel errno."""

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int: ...
    def munmap(self, addr: int, length: int) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> None: ...
    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int: ...
    def madvise(self, addr: int, length: int, advice: int) -> None: ...
    def mlock(self, addr: int, length: int, onfault: bool) -> None: ...
    def munlock(self, addr: int, length: int) -> None: ...
    def mseal(self, addr: int, length: int) -> None: ...
    def mlockall(self, flags: int) -> None: ...
    def munlockall(self) -> None: ...
    def memlock(self, limit: int, cap_ipc_lock: bool) -> None: ...
    def mdwe(self, flags: int) -> int: ...
    def mincore(self, addr: int, length: int) -> bytes: ...
    def pkey_alloc(self, rights: int) -> int: ...
    def pkey_free(self, key: int) -> None: ...
    def pkey_mprotect(self, addr: int, length: int, prot: int, key: int) -> None: ...
    def add_seals(self, fd: int, seals: int) -> None: ...
    def msync(self, addr: int, length: int, flags: int) -> None: ...
    def shmget(self, key: int, size: int, flags: int) -> int: ...
    def shmat(self, shmid: int, addr: int, flags: int) -> int: ...
    def shmdt(self, addr: int) -> None: ...
    def shmctl(self, shmid: int, cmd: int) -> int: ...
    def open_devzero(self, write: bool) -> int: ...
    def userfaultfd(self) -> int:
        """userfaultfd(O_CLOEXEC|O_NONBLOCK): a descriptor."""
        ...

    def uffdio_api(self, fd: int, features: int) -> tuple[int, int]: ...
    def uffdio_register(self, fd: int, start: int, length: int, mode: int) -> int: ...
    def uffdio_unregister(self, fd: int, start: int, length: int) -> None: ...
    def memfd_create(self, name: str, flags: int) -> int: ...
    def open(self, name: str, flags: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> int: ...
    def pread(self, fd: int, length: int, offset: int) -> bytes: ...
    def load(self, addr: int) -> tuple[str, int]:
        """A one-byte user load: ("ok", byte) or ("SIGSEGV"/"SIGBUS", 0)."""
        ...

    def store(self, addr: int, byte: int) -> str:
        """A one-byte user store: "ok", "SIGSEGV" or "SIGBUS"."""
        ...

    def fork(self, run_child: Callable[[Machine], Observation]) -> Observation: ...
    def exit(self) -> None: ...
    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, frozenset[str]]]: ...
    def pagemap(self, addr: int, npages: int) -> list[int]: ...
    def pmd_mapped(self, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
        """(start, end, AnonHugePages kB, ShmemPmdMapped kB) of the VMAs overlapping
        [lo, hi) that have PMD-mapped THPs (smaps)."""
        ...

    def slab(self) -> dict[str, int]: ...
    def khugepaged(self, max_ptes_none: int, max_ptes_swap: int, max_ptes_shared: int) -> int:
        """One full khugepaged pass; the THPs made (the live runner refuses it)."""
        ...

    def check(self) -> None:
        """Model invariants after an op (no-op on the live kernel)."""
        ...


def state_of(m: Machine, prog: ProgramView) -> State:
    """The arena's VMAs and pagemap letters as seen by ``m``."""
    lo, hi = ARENA_BASE, ARENA_BASE + prog.arena_pages * PAGE
    vmas = m.vmas(lo, hi)
    pm = m.pagemap(lo, prog.arena_pages)
    chars = [" "] * prog.arena_pages
    out: list[list[Any]] = []
    for s, e, fl in vmas:
        s0, e0 = (max(s, lo) - lo) // PAGE, (min(e, hi) - lo) // PAGE
        out.append([s0, e0, sorted(fl)])
        for i in range(s0, e0):
            chars[i] = page_char(pm[i])
    thp = [
        [(max(s, lo) - lo) // PAGE, (min(e, hi) - lo) // PAGE, anon // 4, shmem // 4]
        for s, e, anon, shmem in m.pmd_mapped(lo, hi)
    ]
    return State(out, "".join(chars), thp)


@mypyc_attr(allow_interpreted_subclasses=True)  # live/child.py subclasses it
class Refused(Exception):
    """An op the runner will not execute (outside the arena, unknown file slot)."""


_Refused = Refused  # the name before the program package

SEG_BASE = 1000
"""Segment slot ``s`` (``shmget``) is ``SEG_BASE + s`` in the slot table (file slots are
below ``MAX_FILES``), so that fork children inherit segment slots with the file slots."""


class Runner:
    """Runs one process's ops on a Machine. Holds the file-slot table (inherited on fork)."""

    def __init__(
        self, prog: ProgramView, m: Machine, files: dict[int, int], uffd_used: bool = False
    ) -> None:
        self.prog = prog
        self.m = m
        self.files = dict(files)
        self.uffd_used = uffd_used
        """A ``userfaultfd`` op ran (here or in an ancestor): accesses check
        ``uffd_blocked`` first."""

    def uffd_blocked(self, page: int) -> bool:
        """Whether a user access to arena page ``page`` is not made because its VMA is
        registered for missing or minor faults (``um``/``ui``): the kernel would hand the
        fault to the userfaultfd (the live runner adds UFFD_FEATURE_SIGBUS, so it would
        be a SIGBUS, never a hang), which the model does not model (vmalab.mm.userfaultfd).
        Only once the program has used ``userfaultfd``."""
        if not self.uffd_used:
            return False
        a = self.a(page)
        return any(
            s <= a < e and ("um" in fl or "ui" in fl) for s, e, fl in self.m.vmas(a, a + PAGE)
        )

    def a(self, page: int) -> int:
        """The absolute address of arena page ``page``."""
        return ARENA_BASE + page * PAGE

    def rel(self, addr: int) -> int | str:
        """An absolute address as an arena page (or ``"outside"``)."""
        if ARENA_BASE <= addr < ARENA_BASE + self.prog.arena_pages * PAGE and addr % PAGE == 0:
            return (addr - ARENA_BASE) // PAGE
        return "outside"

    def check_range(self, page: int, n: int) -> None:
        """Refuse a page range that is not inside the arena."""
        if page < 0 or n < 0 or page + n > self.prog.arena_pages:
            raise Refused(f"[{page}, {page + n}) is outside the arena")

    def span(self, page: int, n: int) -> tuple[int, int]:
        """A page range of the arena, checked (``check_range``), as the absolute address
        and length in bytes that the syscalls take."""
        self.check_range(page, n)
        return self.a(page), n * PAGE

    def fd(self, slot: int) -> int:
        """The descriptor of an open file slot."""
        if slot not in self.files:
            raise Refused(f"file slot {slot} is not open")
        return self.files[slot]

    def child(self, m: Machine) -> Runner:
        """A runner for a fork child on ``m``: same program, a copy of the slot table."""
        return Runner(self.prog, m, self.files, self.uffd_used)

    def step(self, o: RunnableOp, obs: Observation) -> dict[str, Any]:
        """Run one op; its result object."""
        res = o.run(self, obs)
        return {"ret": 0} if res is None else res

    def run(self, ops: Sequence[RunnableOp]) -> Observation:
        """Run ``ops`` in order; what happened, including a model failure as ``error``."""
        obs = Observation()
        for o in ops:
            res: dict[str, Any] | None = None  # set once the op itself has run
            try:
                try:
                    res = self.step(o, obs)
                except OSError as e:
                    res = {"errno": errno_mod.errorcode.get(e.errno or 0, str(e.errno))}
                if o.terminal:
                    obs.results.append(res)
                    return obs
                self.m.check()
            except Refused as e:
                obs.error = f"refused: {e}"
                return obs
            except ResourceLimitError:
                raise  # vmalab's own budget, not a behaviour of either side
            except MemoryError:
                # The host ran out, not the modelled kernel: never a divergence.
                raise ResourceLimitError(
                    "memory", 0, f"host memory exhausted during {o.op} (MemoryError)"
                ) from None
            except Exception as e:  # noqa: BLE001 - the runner's one catch-all, see below
                # Anything else is a model crash (from the op) or a failed Kernel.check()
                # (from Machine.check, after the op): either is itself a divergence, which
                # is reported as ``error`` rather than ending a fuzz run.
                if res is None:
                    obs.error = f"{type(e).__name__}: {e}"
                else:
                    obs.error = f"after {o.op}: {type(e).__name__}: {e}"
                    obs.results.append(res)
                return obs
            if self.prog.observe.each:
                res["state"] = state_of(self.m, self.prog).to_json()
            obs.results.append(res)
        obs.final = self.final()
        return obs

    def final(self) -> dict[str, Any]:
        """The end state, with the per-page probe (and the bytes read) if observed."""
        st = state_of(self.m, self.prog)
        d: dict[str, Any] = st.to_json()
        if self.prog.observe.probe:
            probe, data = [], []
            for i, c in enumerate(st.pages):
                if c == " ":
                    probe.append(" ")
                    data.append("  ")
                    continue
                if self.uffd_blocked(i):
                    probe.append("u")
                    data.append("--")
                    continue
                sig, b = self.m.load(self.a(i))
                probe.append("o" if sig == "ok" else sig[3])
                data.append(f"{b:02x}" if sig == "ok" else "--")
            d["probe"] = "".join(probe)
            if self.prog.observe.contents:
                d["data"] = "".join(data)
        return d


def execute(prog: ProgramView, m: Machine) -> Observation:
    """Run ``prog`` on ``m`` and return what happened (never raises for model failures)."""
    return Runner(prog, m, {}).run(prog.ops)
