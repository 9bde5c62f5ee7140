"""The slab diff (issue 8 section 5): the model's anon_vma / anon_vma_chain / vm_area_struct
counts against ``/proc/slabinfo`` for an allocation-heavy program."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmalab import program as P
from vmalab.program import Observation, Program

SLAB_KINDS = ("anon", "shared-anon", "memfd-shared", "memfd-private")


def slab_program(n: int, kind: str = "anon", *, write: bool = True) -> Program:
    """``n`` isolated 2-page VMAs (1-page gaps): slab, fork baseline, mmap, slab, guard install
    on page 0 of each, slab, (write page 1 of each, slab), fork child [slab, exit], slab."""
    if kind not in SLAB_KINDS:
        raise ValueError(f"kind must be one of {SLAB_KINDS}")
    ops: list[dict[str, Any]] = []
    if kind.startswith("memfd"):
        ops += [{"op": "memfd", "file": 0}, {"op": "ftruncate", "file": 0, "pages": 2}]
    m: dict[str, Any] = {"op": "mmap", "addr": 0, "len": 2}
    if kind == "shared-anon":
        m["flags"] = ["shared", "anonymous"]
    elif kind == "memfd-shared":
        m.update(flags=["shared"], file=0)
    elif kind == "memfd-private":
        m.update(flags=["private"], file=0)
    ops += [
        {"op": "slab"},
        {"op": "fork", "child": [{"op": "slab"}, {"op": "exit"}]},
        {"op": "slab"},
        {"op": "repeat", "count": n, "stride": 3, "ops": [m]},
        {"op": "slab"},
        {
            "op": "repeat",
            "count": n,
            "stride": 3,
            "ops": [{"op": "madvise", "addr": 0, "len": 1, "advice": "guard_install"}],
        },
        {"op": "slab"},
    ]
    if write:
        ops += [
            {
                "op": "repeat",
                "count": n,
                "stride": 3,
                "ops": [{"op": "write", "addr": 1, "len": 1}],
            },
            {"op": "slab"},
        ]
    ops += [{"op": "fork", "child": [{"op": "slab"}, {"op": "exit"}]}, {"op": "slab"}]
    return P.from_json(
        {
            "format": P.FORMAT,
            "version": P.VERSION,
            "arena_pages": 3 * n,
            "observe": {"each": False, "probe": False, "contents": False},
            "ops": ops,
        },
        f"slab:{kind}",
    )


def slab_deltas(obs: Observation, prog: Program) -> dict[str, dict[str, int]]:
    """Per-step deltas from a ``slab_program`` observation. ``fork`` is the child's count
    minus the parent's before the fork, with the bare-process fork baseline subtracted."""
    forks = [r for r in obs.results if r.get("ret") == "child"]
    if len(forks) != 2 or any(not r["child"].get("slab") for r in forks):
        raise ValueError("not a slab_program observation")
    s = obs.slab
    base_child = forks[0]["child"]["slab"][0]
    child = forks[1]["child"]["slab"][0]
    has_write = len(s) == 6
    names = ["mmap", "install"] + (["write"] if has_write else [])
    out: dict[str, dict[str, int]] = {}
    keys = list(s[0])
    for j, name in enumerate(names):
        out[name] = {k: s[j + 2][k] - s[j + 1][k] for k in keys}
    before_fork = s[-2]
    out["fork"] = {k: (child[k] - before_fork[k]) - (base_child[k] - s[0][k]) for k in keys}
    out["exit"] = {k: s[-1][k] - before_fork[k] for k in keys}
    out["fork baseline"] = {k: base_child[k] - s[0][k] for k in keys}
    return out


@dataclass
class SlabComparison:
    """Model and kernel slab deltas per step of a ``slab_program``."""

    kind: str
    n: int
    kernel: dict[str, dict[str, int]]
    model: dict[str, dict[str, int]]

    def mismatches(self, tolerance: dict[str, float] | None = None, floor: int = 40) -> list[str]:
        """Steps whose kernel and model deltas differ by more than the tolerance: a fraction
        of ``n`` per cache (default 1% for anon_vma and anon_vma_chain, 10% for
        vm_area_struct, whose per-CPU caching survives ``shrink``; live-kernel-facts 4.5),
        and at least ``floor`` objects (other processes allocate from the same caches, and
        the fork baseline is a separate measurement). A design difference is ~``n``."""
        tol = tolerance or {"anon_vma": 0.01, "anon_vma_chain": 0.01, "vm_area_struct": 0.10}
        bad = []
        for step, kd in self.kernel.items():
            if step in ("fork baseline", "exit"):
                continue
            for cache, t in tol.items():
                kv, mv = kd.get(cache, 0), self.model[step].get(cache, 0)
                if abs(kv - mv) > max(floor, t * self.n):
                    bad.append(f"{step}: {cache} kernel {kv:+d}, model {mv:+d}")
        return bad

    def table(self) -> str:
        """A Markdown table of both sets of deltas."""
        caches = ("anon_vma", "anon_vma_chain", "vm_area_struct")
        lines = [
            f"| {self.kind}, N={self.n} | " + " | ".join(caches) + " |",
            "|---|" + "---|" * len(caches),
        ]
        for step in self.kernel:
            cells = [
                f"{self.kernel[step].get(c, 0):+d} / {self.model[step].get(c, 0):+d}"
                for c in caches
            ]
            lines.append(f"| {step} (kernel / model) | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def slab_compare(
    n: int = 2000,
    kind: str = "anon",
    design: str | None = None,
    *,
    trials: int = 3,
    timeout: float = 120.0,
) -> SlabComparison:
    """Run ``slab_program(n, kind)`` on the model once and on the kernel ``trials`` times;
    the kernel figure of each step and cache is the median over the trials (other processes
    on the machine allocate from the same caches)."""
    from vmalab import live

    design = design or live.detect_design()
    prog = slab_program(n, kind)
    runs = []
    for _ in range(max(1, trials)):
        k = live.run_live(prog, timeout=timeout)
        if k.error:
            raise live.LiveError(k.error)
        runs.append(slab_deltas(k, prog))
    kernel = {
        step: {c: sorted(r[step][c] for r in runs)[len(runs) // 2] for c in runs[0][step]}
        for step in runs[0]
    }
    m = P.run_model(prog, design, check=False)
    if m.error:
        raise RuntimeError(f"model failed on the slab program: {m.error}")
    return SlabComparison(kind, n, kernel, slab_deltas(m, prog))
