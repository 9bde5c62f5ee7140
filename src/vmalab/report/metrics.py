"""Kernel-memory metrics of a model Kernel, for the design comparison.

:func:`measure` reads a Kernel through the contract API and the introspection the model
offers beyond it (``Kernel.vmstat``, ``Process.khugepaged_retractable``). Where the model
lacks one of those, the figure is computed from the contract API (VmaView) when that is
possible, and :attr:`Metrics.notes` says so; otherwise it is None ("n/a").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CACHES = ("vm_area_struct", "anon_vma", "anon_vma_chain", "pgtable")
"""The slab caches the comparison reports (objects and bytes each)."""


@dataclass
class Metrics:
    """One design's figures at one point (usually the end of a run).

    ``objects``/``bytes`` are the active objects and bytes of each cache in :data:`CACHES`
    (``Kernel.slab()``); ``kernel_bytes`` is their sum. ``fork_copy_vmas`` counts VMAs
    whose page tables fork copied; ``guard_markers_lost`` markers fork dropped although the
    VMA was neither WIPEONFORK nor DONTCOPY; ``file_vmas``/``retractable`` how many live
    file-backed VMAs there are and how many retract_page_tables() could retract.
    ``peak_kernel_bytes`` is the largest ``kernel_bytes`` seen on the run's timeline
    (sampled; filled in by the comparison runner).
    """

    design: str
    processes: int = 0
    vmas: int = 0
    objects: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    allocs: dict[str, int] = field(default_factory=dict)
    kernel_bytes: int = 0
    peak_kernel_bytes: int = 0
    fork_copy_vmas: int | None = None
    guard_markers_copied: int | None = None
    guard_markers_lost: int | None = None
    file_vmas: int = 0
    retractable: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def kernel_bytes(k: Any) -> int:
    """Bytes of vm_area_struct, anon_vma, anon_vma_chain and page-table pages."""
    slab = k.slab()
    return sum(int(slab[c].bytes) for c in CACHES if c in slab)


def _retractable_fallback(design: str, v: Any) -> bool:
    """retract_page_tables()'s verdict from a VmaView, per design (khugepaged.c)."""
    if v.anon_vma is not None:
        return False
    if design == "sticky" and "gu" in v.flags:
        return False  # file_backed_vma_is_retractable(): VM_MAYBE_GUARD
    if design == "tagged" and v.anon_vma_flags & 1:
        return False  # ANON_VMA_UNFAULTED set
    return True


def measure(k: Any) -> Metrics:
    """Take every metric of kernel ``k`` now."""
    design = str(k.design)
    m = Metrics(design)
    slab = k.slab()
    for c in CACHES:
        s = slab.get(c)
        if s is None:
            m.notes.append(f"slab cache {c} missing")
            continue
        m.objects[c] = int(s.active)
        m.bytes[c] = int(s.bytes)
        m.allocs[c] = int(s.allocs)
    m.kernel_bytes = sum(m.bytes.values())
    m.peak_kernel_bytes = m.kernel_bytes
    vmstat = getattr(k, "vmstat", None)
    if callable(vmstat):
        vmstat = vmstat()
    if isinstance(vmstat, dict):
        m.fork_copy_vmas = vmstat.get("fork_copy_vmas")
        m.guard_markers_copied = vmstat.get("fork_guard_markers_copied")
        m.guard_markers_lost = vmstat.get("fork_guard_markers_dropped")
    else:
        m.notes.append("Kernel.vmstat missing: fork figures n/a")
    retract = 0
    used_fallback = False
    procs = list(k.processes)
    m.processes = len(procs)
    for p in procs:
        views = p.vmas()
        m.vmas += len(views)
        probe = getattr(p, "khugepaged_retractable", None)
        for v in views:
            if v.path is None:
                continue
            m.file_vmas += 1
            if probe is not None:
                retract += bool(probe(v.start))
            else:
                used_fallback = True
                retract += _retractable_fallback(design, v)
    m.retractable = retract
    if used_fallback:
        m.notes.append(
            "Process.khugepaged_retractable missing: retractability computed "
            "from VmaView (anon_vma, gu, ANON_VMA_UNFAULTED)"
        )
    return m
