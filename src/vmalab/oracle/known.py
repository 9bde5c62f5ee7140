"""Known divergences (docs/divergences.md): ``Known``, ``KNOWN`` and ``classify``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmalab import program as P
from vmalab.oracle.divergence import Divergence
from vmalab.program import Program


@dataclass(frozen=True)
class Known:
    """A documented divergence (docs/divergences.md). ``kind`` is ``"kernel"`` for kernel
    behaviour the model deliberately lacks, ``"model-bug"`` for an open, tracked model bug
    (with a regression program under tests/regressions/) that the lead will fix."""

    id: str
    title: str
    match: Callable[[Program, Divergence], bool]
    kind: str = "kernel"


def _op_at(prog: Program, where: str) -> P.Op | None:
    """The op that ``where`` ("ops[3].child[1]") names, or None for end states."""
    if "/" in where:
        return None
    ops: tuple[P.Op, ...] = prog.ops
    cur: P.Op | None = None
    for part in where.split("."):
        name, _, idx = part.partition("[")
        n = int(idx.rstrip("]"))
        if name == "child":
            if not isinstance(cur, P.Fork):
                raise ValueError(f"{where}: 'child' of a {type(cur).__name__}")
            ops = cur.child
        cur = ops[n]
    return cur


def _khugepaged_collapse(prog: Program, d: Divergence) -> bool:
    """khugepaged (every 10 s, in the background) collapsed a PTE-mapped range of a
    MADV_HUGEPAGE VMA, filling its holes: pages the model has empty (`.`) are present
    (`A`) on the kernel, and nothing else differs. Only THP-sized programs."""
    if prog.arena_pages < 512 or d.what != "pages":
        return False
    k, m = d.kernel, d.model
    if not isinstance(k, str) or not isinstance(m, str) or len(k) != len(m):
        return False
    diff = [(a, b) for a, b in zip(k, m, strict=True) if a != b]
    return bool(diff) and all(a == "A" and b == "." for a, b in diff)


KNOWN: list[Known] = [
    Known(
        "khugepaged-collapse",
        "khugepaged collapsed a MADV_HUGEPAGE range in the background, filling its holes",
        _khugepaged_collapse,
    ),
]
"""Documented divergences, each explained in docs/divergences.md. Fuzz ignores these and
nothing else. (Fixed model bugs leave this list; their regression programs stay.)"""


def classify(prog: Program, d: Divergence) -> Divergence:
    """Set ``d.known`` to the id of the first documented divergence that explains it."""
    for k in KNOWN:
        try:
            if k.match(prog, d):
                d.known = k.id
                break
        except (LookupError, TypeError, ValueError):
            # The divergent values are arbitrary JSON: a matcher that meets a shape it does
            # not expect simply does not explain this divergence.
            continue
    return d
