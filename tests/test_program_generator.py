"""The one op generator (``vmalab.oracle.generate.Gen``), built from the op classes' rules."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

from vmalab import program as P
from vmalab.oracle import Gen, random_program, rules


def test_rules_have_distinct_kinds_and_places() -> None:
    rs = rules()
    assert len({r.kind for r in rs}) == len(rs)
    assert len({r.pos for r in rs}) == len(rs)
    assert [r.pos for r in rs] == sorted(r.pos for r in rs)


def test_every_generated_op_kind_is_drawn() -> None:
    seen: Counter[str] = Counter()
    for seed in range(300):
        seen.update(o.op for o in P.iter_ops(random_program(seed).ops))
    drawn = {"pkey_alloc", "pkey_free", "pkey_mprotect", "exit", "memfd", "open"}
    drawn |= {name for name, cls in P.OPS.items() if cls.gen_rules}
    assert drawn - set(seen) == set()


def _counted(r: P.GenRule, kinds: Counter[str]) -> P.GenRule:
    def make(g: Any, depth: int, a: int, n: int) -> dict[str, Any]:
        kinds[r.kind] += 1
        return r.make(g, depth, a, n)

    return dataclasses.replace(r, make=make)


def _moves_back(prog: P.Program) -> bool:
    """Some range moved away by mremap and later moved back to where it came from."""
    away: set[tuple[int, int]] = set()
    for o in P.iter_ops(prog.ops):
        if isinstance(o, P.Mremap) and o.to is not None:
            if (o.to, o.addr) in away:
                return True
            away.add((o.addr, o.to))
    return False


def test_moves_beside_unfaulted_neighbours_are_drawn() -> None:
    """Issue 14: after a move the generator maps beside the origin (``beside``) and moves
    back (``back``), and a quarter of the programs hold the whole scenario (move away,
    neighbours, move back)."""
    kinds: Counter[str] = Counter()
    back = 0
    for seed in range(300):
        gen = Gen(random.Random(seed))
        gen.rules = [_counted(r, kinds) for r in gen.rules]
        back += _moves_back(P.from_json(gen.program(), f"seed {seed}"))
    assert kinds["beside"] > 0 and kinds["back"] > 0, kinds
    assert back > 300 * 0.2, back
