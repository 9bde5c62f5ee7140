"""The comparison's measures: a kernel's figures along a run, and what guardify changed.

:class:`Timeline` samples the kernel it is handed (kernel bytes and the object counts of
:data:`SERIES`) in constant memory; :func:`guardify_delta` compares a plain run's result with
its guardified twin. Running a workload or a trace is not done here: that is
:func:`vmalab.trace.run.run_one`, which calls these.
"""

from __future__ import annotations

from typing import Any

from vmalab.report.metrics import CACHES

SERIES = ("vm_area_struct", "anon_vma", "anon_vma_chain", "pgtable", "guard_markers_lost")
"""The object kinds a run's ``series`` follows (active objects; markers lost at fork)."""


def _sample(k: Any) -> tuple[int, tuple[int, ...]]:
    """Kernel bytes and the :data:`SERIES` counts of ``k`` now."""
    slab = k.slab()
    total = sum(int(slab[c].bytes) for c in CACHES if c in slab)
    counts = [int(slab[c].active) if c in slab else 0 for c in SERIES[:4]]
    vmstat = getattr(k, "vmstat", None)
    if callable(vmstat):
        vmstat = vmstat()
    lost = vmstat.get("fork_guard_markers_dropped") if isinstance(vmstat, dict) else None
    counts.append(int(lost or 0))
    return total, tuple(counts)


class Timeline:
    """Kernel bytes (and the :data:`SERIES` object counts) along a run, in constant memory.

    Samples every ``interval``-th event; when the series grows past ``2 * target`` points
    every other point is dropped and the interval doubles.
    """

    def __init__(self, target: int = 200) -> None:
        self.target = max(2, target)
        self.interval = 1
        self.count = 0
        self.points: list[tuple[int, int]] = []
        self.counts: list[tuple[int, ...]] = []

    def tick(self, x: int, k: Any) -> None:
        """An event happened at ``x`` (line or step); sample if it is due."""
        self.count += 1
        if self.count % self.interval:
            return
        b, c = _sample(k)
        self.points.append((x, b))
        self.counts.append(c)
        if len(self.points) > 2 * self.target:
            self.points = self.points[1::2]
            self.counts = self.counts[1::2]
            self.interval *= 2

    def final(self, x: int, k: Any) -> None:
        """Add the end point."""
        if not self.points or self.points[-1][0] != x:
            b, c = _sample(k)
            self.points.append((x, b))
            self.counts.append(c)

    def series(self) -> dict[str, list[int]]:
        """``{"x": [...], KIND: [...]}`` for every kind of :data:`SERIES`."""
        out: dict[str, list[int]] = {"x": [p[0] for p in self.points]}
        for i, kind in enumerate(SERIES):
            out[kind] = [c[i] for c in self.counts]
        return out


def guardify_delta(plain: dict[str, Any], guarded: dict[str, Any]) -> dict[str, Any]:
    """What guardify changed for one design: VMAs saved and anon_vma/AVC cost.

    Positive ``vmas_saved`` means fewer VMAs with MADV_GUARD_INSTALL; ``*_added`` are
    extra objects (and bytes) the guard-install design costs.
    """
    a, b = plain["metrics"], guarded["metrics"]
    out: dict[str, Any] = {
        "design": plain["design"],
        "vmas_saved": a["vmas"] - b["vmas"],
        "kernel_bytes_saved": a["kernel_bytes"] - b["kernel_bytes"],
    }
    for c in ("anon_vma", "anon_vma_chain", "vm_area_struct", "pgtable"):
        out[f"{c}_added"] = b["objects"].get(c, 0) - a["objects"].get(c, 0)
        out[f"{c}_bytes_added"] = b["bytes"].get(c, 0) - a["bytes"].get(c, 0)
    out["guards_rewritten"] = sum(
        guarded["info"].get("guardify", {}).get(x, 0)
        for x in ("mprotect_rewritten", "mmap_rewritten")
    )
    return out
