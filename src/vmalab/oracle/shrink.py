"""Shrinking a divergent program: delta debugging (``ddmin``) over its ops and fork bodies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vmalab import program as P
from vmalab.errors import UserInputError
from vmalab.program import Program


def _reparse(ops: list[dict[str, Any]], prog: Program) -> Program | None:
    d = prog.to_json()
    d["ops"] = ops
    d.pop("meta", None)
    try:
        return P.from_json(d, "candidate")
    except UserInputError:  # e.g. an op on a file slot whose open was removed
        return None


def ddmin(items: list[Any], test: Callable[[list[Any]], bool], budget: list[int]) -> list[Any]:
    """Zeller's ddmin: a 1-minimal sublist of ``items`` for which ``test`` holds."""
    n = 2
    while len(items) >= 2 and budget[0] > 0:
        chunk = max(1, len(items) // n)
        subsets = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for i in range(len(subsets)):
            complement = [x for j, s in enumerate(subsets) if j != i for x in s]
            if budget[0] <= 0:
                break
            budget[0] -= 1
            if test(complement):
                items = complement
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    return items


def shrink(prog: Program, still_fails: Callable[[Program], bool], *, budget: int = 200) -> Program:
    """Delta-debug ``prog`` while ``still_fails``: ddmin over its ops, then recursively over
    each fork body (an empty body first), repeated while it makes progress."""
    left = [budget]

    def test(ops: list[dict[str, Any]]) -> bool:
        p = _reparse(ops, prog)
        return p is not None and still_fails(p)

    def shrink_list(
        ops: list[dict[str, Any]], rebuild: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        ops = ddmin(ops, lambda c: test(rebuild(c)), left)
        for i in range(len(ops)):
            o = ops[i]
            if o.get("op") != "fork" or not o.get("child") or left[0] <= 0:
                continue

            def rebuild_child(
                c: list[dict[str, Any]], i: int = i, ops: list[dict[str, Any]] = ops
            ) -> list[dict[str, Any]]:
                return rebuild(ops[:i] + [{"op": "fork", "child": c}] + ops[i + 1 :])

            left[0] -= 1
            body = [] if test(rebuild_child([])) else shrink_list(o["child"], rebuild_child)
            ops = ops[:i] + [{"op": "fork", "child": body}] + ops[i + 1 :]
        # inline fork bodies whose fork does not matter
        i = 0
        while i < len(ops) and left[0] > 0:
            o = ops[i]
            if o.get("op") == "fork":
                cand = ops[:i] + list(o.get("child", [])) + ops[i + 1 :]
                left[0] -= 1
                if test(rebuild(cand)):
                    ops = cand
                    continue
            i += 1
        return ops

    ops = [P.op_to_json(o) for o in prog.ops]
    for _ in range(3):
        before = json.dumps(ops)
        ops = shrink_list(ops, lambda c: c)
        if json.dumps(ops) == before or left[0] <= 0:
            break
    p = _reparse(ops, prog)
    return p if p is not None else prog


_ddmin = ddmin  # the name before the oracle package
