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
    (`A`) on the kernel, and nothing else differs; or the kernel shows more PMD-mapped
    anonymous THPs (``thp``) than the model and nothing else differs. Only THP-sized
    programs."""
    if prog.arena_pages < 512:
        return False
    if d.what == "thp":
        return _more_anon_thps(d.kernel, d.model)
    if d.what != "pages":
        return False
    k, m = d.kernel, d.model
    if not isinstance(k, str) or not isinstance(m, str) or len(k) != len(m):
        return False
    diff = [(a, b) for a, b in zip(k, m, strict=True) if a != b]
    return bool(diff) and all(a == "A" and b == "." for a, b in diff)


def _more_anon_thps(k: list[list[int]], m: list[list[int]]) -> bool:
    """The kernel's per-VMA PMD-mapped THPs (the observation's ``thp``) are the model's
    plus anonymous ones khugepaged made: no VMA has fewer, shmem ones are equal."""
    kd = {(e[0], e[1]): (e[2], e[3]) for e in k}
    md = {(e[0], e[1]): (e[2], e[3]) for e in m}
    if kd == md:
        return False
    for key, (anon, shmem) in md.items():
        ka, ks = kd.get(key, (0, 0))
        if ka < anon or ks != shmem:
            return False
    return all(key in md or v[1] == 0 for key, v in kd.items())


_SHRINKS_CACHE = {("madvise", "remove"), ("fallocate", None), ("ftruncate", None)}


def _shmem_thp_split(prog: Program, d: Divergence) -> bool:
    """A shmem folio MADV_COLLAPSE made was cut by a later hole punch or truncation
    (MADV_REMOVE, fallocate, ftruncate): 6.18 splits it non-uniformly into large folios
    that faults map whole, the model into 4 KiB pages. Any divergence after that."""
    collapsed = files = False
    for o in P.iter_ops(prog.ops):
        adv = getattr(o, "advice", None)
        if o.op in ("memfd", "open"):
            files = True
        elif o.op == "madvise" and adv == "collapse" and files:
            collapsed = True
        elif collapsed and ((o.op, adv) in _SHRINKS_CACHE or (o.op, None) in _SHRINKS_CACHE):
            return True
    return False


KNOWN: list[Known] = [
    Known(
        "khugepaged-collapse",
        "khugepaged collapsed a MADV_HUGEPAGE range in the background, filling its holes",
        _khugepaged_collapse,
    ),
    Known(
        "shmem-thp-split",
        "a shmem THP cut by a hole punch or truncation splits into large folios (model: 4K)",
        _shmem_thp_split,
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
