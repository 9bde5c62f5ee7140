"""Per-process ops: user accesses (read, write), fork, exit, slab counts, MDWE and pkeys."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab.program.base import GenRule, GenState, OpBase, RangeOp, const, range_rule
from vmalab.program.fields import Ctx, Int, Names, Prot
from vmalab.program.names import MAX_DEPTH, MDWE_NAMES, PKEY_RIGHT_NAMES, bits, prot_bits
from vmalab.program.parse import parse_ops

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Machine, Runner


def _access(r: Runner, addr: int, n: int, byte: int | None) -> dict[str, Any]:
    """Loads (``byte`` None) or stores of the first byte of each page, up to a fault."""
    r.check_range(addr, n)
    data: list[str] = []
    res: dict[str, Any]
    for i in range(addr, addr + n):
        if r.uffd_blocked(i):
            res = {"ret": "uffd", "fault": i}
            if data:
                res["data"] = "".join(data)
            return res
        if byte is None:
            sig, got = r.m.load(r.a(i))
            if sig == "ok":
                data.append(f"{got:02x}")
        else:
            sig = r.m.store(r.a(i), byte)
        if sig != "ok":
            res = {"ret": sig, "fault": i}
            if data:
                res["data"] = "".join(data)
            return res
    return {"ret": "ok", "data": "".join(data)} if data else {"ret": "ok"}


class Read(RangeOp, op="read"):
    """A user load of the first byte of each page in [addr, addr+len), stopping at a fault."""

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        return _access(r, self.addr, self.len, None)

    gen_rules = (range_rule("read", 7, 6),)


class Write(RangeOp, op="write"):
    """A user store of ``byte`` to the first byte of each page, stopping at a fault."""

    byte: int = field(default=0x5A, metadata=Int(0, 255))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        return _access(r, self.addr, self.len, self.byte)

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Half the time a range that was mapped: faults that succeed."""
        if g.maps and g.r.random() < 0.5:
            a, n = g.r.choice(g.maps)
        return {"op": "write", "addr": a, "len": n, "byte": g.r.randrange(1, 256)}

    gen_rules = (GenRule("write", 8, const(8), generate),)


class Fork(OpBase, op="fork"):
    """``fork()``: the child runs ``child`` to completion (then exits) before the parent goes on."""

    child: tuple[OpBase, ...] = ()

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Fork:
        if depth >= MAX_DEPTH:
            raise ctx.err(loc, f"fork nested deeper than {MAX_DEPTH}")
        body = d.get("child", [])
        return cls(parse_ops(ctx, body, f"{loc}.child", set(files), depth + 1))

    def children(self) -> tuple[OpBase, ...]:
        return self.child

    def to_json(self) -> dict[str, Any]:
        return {"op": "fork", "child": [c.to_json() for c in self.child]}

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        child_ops = self.child

        def run_child(cm: Machine) -> Observation:
            return r.child(cm).run(child_ops)

        return {"ret": "child", "child": r.m.fork(run_child).to_json()}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """1-5 random ops (nested forks at most 2 deep), sometimes ending in exit."""
        body = [g.op(depth + 1) for _ in range(g.r.randint(1, 5))]
        if g.r.random() < 0.15:
            body.append({"op": "exit"})
        return {"op": "fork", "child": body}

    gen_rules = (GenRule("fork", 9, lambda g, depth: 5 if depth < 2 else 0, generate),)


class Exit(OpBase, op="exit"):
    """``exit()``: must be the last operation of its program; no final state is recorded."""

    terminal = True

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.exit()


class Slab(OpBase, op="slab"):
    """Record slab counts (anon_vma, anon_vma_chain, vm_area_struct) at this point."""

    def run(self, r: Runner, obs: Observation) -> None:
        obs.slab.append(r.m.slab())


class Mdwe(OpBase, op="mdwe"):
    """``prctl(PR_SET_MDWE, flags)`` then ``prctl(PR_GET_MDWE)``, whose value is the
    result; ``flags`` are names from ``MDWE_NAMES``."""

    flags: tuple[str, ...] = field(default=("refuse_exec_gain",), metadata=Names(MDWE_NAMES))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        return {"ret": r.m.mdwe(bits(self.flags, MDWE_NAMES))}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        flags = g.r.choice(
            [["refuse_exec_gain"], ["refuse_exec_gain", "no_inherit"], [], ["no_inherit"]]
        )
        return {"op": "mdwe", "flags": flags}

    gen_rules = (GenRule("mdwe", 21, const(0.5), generate),)


class PkeyAlloc(OpBase, op="pkey_alloc"):
    """``pkey_alloc(0, rights)``; the result is the key. ``rights``: names from
    ``PKEY_RIGHT_NAMES``."""

    rights: tuple[str, ...] = field(default=(), metadata=Names(PKEY_RIGHT_NAMES))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        return {"ret": r.m.pkey_alloc(bits(self.rights, PKEY_RIGHT_NAMES))}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """The pkey family: alloc 40 %, free 20 %, pkey_mprotect 40 %."""
        r = g.r
        t = r.random()
        if t < 0.4:
            return {
                "op": "pkey_alloc",
                "rights": r.choice([[], ["disable_write"], ["disable_access"]]),
            }
        if t < 0.6:
            return {"op": "pkey_free", "key": r.randint(-1, 2)}
        prot = g.prot()
        return {
            "op": "pkey_mprotect",
            "addr": a,
            "len": n,
            "prot": prot,
            "key": r.choice([-1, -1, 0, 1]),
        }

    gen_rules = (GenRule("pkey", 22, const(1), generate),)


PKEY = Int(-1, 16)
"""A protection key (-1: none)."""


class PkeyFree(OpBase, op="pkey_free"):
    """``pkey_free(key)``."""

    key: int = field(metadata=PKEY)

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.pkey_free(self.key)


class PkeyMprotect(RangeOp, op="pkey_mprotect"):
    """``pkey_mprotect(arena+addr, len, prot, key)`` (key -1: plain mprotect)."""

    prot: str = field(metadata=Prot())
    key: int = field(metadata=PKEY)

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.pkey_mprotect(*r.span(self.addr, self.len), prot_bits(self.prot), self.key)
