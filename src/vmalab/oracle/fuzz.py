"""Fuzzing: random programs through ``diff``; undocumented divergences are shrunk and
saved as regression programs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmalab.errors import ResourceLimitError
from vmalab.oracle.compare import diff
from vmalab.oracle.divergence import Divergence
from vmalab.oracle.generate import random_program
from vmalab.oracle.shrink import shrink
from vmalab.program import Program


@dataclass
class FuzzSummary:
    """What a fuzz run did."""

    programs: int = 0
    ops: int = 0
    agreed: int = 0
    divergences: int = 0
    known: dict[str, int] = field(default_factory=dict)
    unknown: list[dict[str, Any]] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    live_errors: int = 0
    resource_limits: int = 0
    seconds: float = 0.0
    design: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _next_regression_path(d: str) -> str:
    os.makedirs(d, exist_ok=True)
    used = {int(f[:3]) for f in os.listdir(d) if f[:3].isdigit() and f.endswith(".json")}
    n = 1
    while n in used:
        n += 1
    return os.path.join(d, f"{n:03d}.json")


def fuzz(
    n: int,
    seed: int,
    *,
    regressions_dir: str | None = "tests/regressions",
    design: str | None = None,
    shrink_budget: int = 120,
    max_saved: int = 20,
    progress: Callable[[int], None] | None = None,
    timeout: float = 30.0,
    ignore_flags: frozenset[str] = frozenset(),
    thp: bool = False,
) -> FuzzSummary:
    """Run ``n`` random programs (seeds ``seed``, ``seed+1``, ...; with ``thp`` all of
    them THP programs) through ``diff``. Every
    undocumented divergence is shrunk and (up to ``max_saved``) written to
    ``regressions_dir``."""
    from vmalab import live

    t0 = time.monotonic()
    design = design or live.detect_design()
    s = FuzzSummary(design=design)
    seen: set[str] = set()
    for i in range(n):
        prog = random_program(seed + i, thp=thp)
        s.programs += 1
        s.ops += prog.count_ops()
        try:
            r = diff(prog, design, timeout=timeout, ignore_flags=ignore_flags)
        except (live.LiveError, ResourceLimitError) as e:
            if isinstance(e, ResourceLimitError):  # LiveResourceLimit included
                s.resource_limits += 1
            else:
                s.live_errors += 1
            if progress:
                progress(i + 1)
            continue
        d = r.divergence
        if d is None:
            s.agreed += 1
        else:
            s.divergences += 1
            if d.known is not None:
                s.known[d.known] = s.known.get(d.known, 0) + 1
            else:
                entry: dict[str, Any] = {"seed": seed + i, "divergence": d.describe()}
                if regressions_dir is not None and len(s.saved) < max_saved:
                    small, sd = _shrink_divergence(
                        prog, d, design, shrink_budget, timeout, ignore_flags
                    )
                    text = json.dumps(small.to_json()["ops"])
                    if text not in seen:
                        seen.add(text)
                        path = save_regression(small, sd, design, seed + i, regressions_dir)
                        s.saved.append(path)
                        entry["saved"] = path
                    entry["shrunk"] = sd.describe()
                s.unknown.append(entry)
        if progress:
            progress(i + 1)
    s.seconds = round(time.monotonic() - t0, 1)
    return s


def _shrink_divergence(
    prog: Program,
    d: Divergence,
    design: str,
    budget: int,
    timeout: float,
    ignore_flags: frozenset[str] = frozenset(),
) -> tuple[Program, Divergence]:
    from vmalab import live

    sig = d.signature()
    last: list[Divergence] = [d]

    def still(p: Program) -> bool:
        try:
            r = diff(p, design, timeout=timeout, ignore_flags=ignore_flags)
        except (live.LiveError, ResourceLimitError):  # a candidate that cannot be compared
            return False
        if (
            r.divergence is not None
            and r.divergence.known is None
            and r.divergence.signature() == sig
        ):
            last[0] = r.divergence
            return True
        return False

    small = shrink(prog, still, budget=budget)
    if small is not prog:
        still(small)  # refresh the divergence of the final program
    return small, last[0]


def save_regression(
    prog: Program, d: Divergence, design: str, seed: int | None, directory: str
) -> str:
    """Write ``prog`` with what diverged as ``directory/NNN.json``; return its path."""
    path = _next_regression_path(directory)
    meta = {
        "design": design,
        "divergence": d.to_json(),
        "status": "open",
        "found_by": f"fuzz seed {seed}" if seed is not None else "hand-written",
    }
    p = Program(prog.ops, prog.arena_pages, prog.observe, prog.comment or d.describe(), meta)
    with open(path, "w") as f:
        f.write(p.dumps())
    return path
