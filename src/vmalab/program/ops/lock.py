"""Ops on memory locking: mlock, munlock, mlockall, munlockall, memlock (RLIMIT_MEMLOCK)."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab.program.base import GenRule, GenState, OpBase, RangeOp, const, range_rule
from vmalab.program.fields import Bool, Int, Names
from vmalab.program.names import MAX_ARENA_PAGES, MCL_NAMES, PAGE, bits

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner


class Mlock(RangeOp, op="mlock"):
    """``mlock(arena+addr, len)``, or ``mlock2(..., MLOCK_ONFAULT)`` with ``onfault``."""

    onfault: bool = field(default=False, metadata=Bool())

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.mlock(*r.span(self.addr, self.len), self.onfault)

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        if g.r.random() < 0.3:
            return {"op": "mlock", "addr": a, "len": n, "onfault": True}
        return {"op": "mlock", "addr": a, "len": n}

    gen_rules = (GenRule("mlock", 5, const(1), generate),)


class Munlock(RangeOp, op="munlock"):
    """``munlock(arena+addr, len)``."""

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.munlock(*r.span(self.addr, self.len))

    gen_rules = (range_rule("munlock", 6, 1),)


_MUNLOCKALL: dict[str, Any] = {"op": "munlockall"}


class Mlockall(OpBase, op="mlockall"):
    """``mlockall(flags)``; ``flags`` are names from ``MCL_NAMES``."""

    flags: tuple[str, ...] = field(default=("current",), metadata=Names(MCL_NAMES))

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.mlockall(bits(self.flags, MCL_NAMES))

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Never after a ``memlock`` (see ``Memlock.generate``): then munlockall."""
        if g.memlock:
            return dict(_MUNLOCKALL)
        g.lockall = True
        opts = [
            ["future"],
            ["future", "onfault"],
            ["current"],
            ["current", "onfault"],
            ["current", "future"],
        ]
        return {"op": "mlockall", "flags": g.r.choice(opts)}

    gen_rules = (GenRule("mlockall", 17, const(1), generate),)


class Munlockall(OpBase, op="munlockall"):
    """``munlockall()``."""

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.munlockall()

    gen_rules = (GenRule("munlockall", 18, const(1), lambda g, d, a, n: dict(_MUNLOCKALL)),)


class Memlock(OpBase, op="memlock"):
    """``setrlimit(RLIMIT_MEMLOCK, pages * PAGE)`` and, unless ``cap_ipc_lock``, drop
    CAP_IPC_LOCK from the effective capabilities (the runner runs as root)."""

    pages: int = field(metadata=Int(0, MAX_ARENA_PAGES))
    cap_ipc_lock: bool = field(default=False, metadata=Bool())

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.memlock(self.pages * PAGE, self.cap_ipc_lock)

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Never together with mlockall in one program: under a small RLIMIT_MEMLOCK
        without the cap the kernel compares the whole runner's total_vm / locked_vm (all
        of Python's memory once mlockall locked it) with the limit, which the model cannot
        know. Only in the top process."""
        if g.lockall:
            return dict(_MUNLOCKALL)
        g.memlock = True
        return {"op": "memlock", "pages": g.r.choice([0, 2, 4, 8, 16])}

    gen_rules = (GenRule("memlock", 19, lambda g, depth: 0.5 if depth == 0 else 0, generate),)
