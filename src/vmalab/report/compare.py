"""Run a workload or a trace under each design and collect the comparison.

:func:`run_one` is the unit of work of ``vmalab compare`` and ``vmalab sweep``: one source
(a built-in workload spec such as ``thread_stacks:guard=mprotect`` or an strace log path)
under one design, optionally guardified. It returns a plain, picklable dict, so the same
function runs in-process, in a process pool or on a Dask worker with identical results
(the model is deterministic; only ``seconds`` differs between runs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmalab.errors import SegmentationFault, UserInputError
from vmalab.report.metrics import CACHES, Metrics, measure


@dataclass(frozen=True)
class RunSpec:
    """One comparison run: a source under a design.

    ``source`` is a workload spec (``NAME[:k=v,...]``), an strace log path or a recording
    directory of ``vmalab record``. ``start`` is the replay's ``(pid, line, dump_text)``;
    ``samples`` bounds the timeline's points; ``host_files`` lets a plain log's execve read
    the binary's ELF headers on this machine.
    """

    source: str
    design: str
    guardify: bool = False
    start: tuple[int, int, str] | None = None
    stop_at_line: int | None = None
    lenient: bool = False
    samples: int = 200
    host_files: bool = False


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


def source_kind(source: str) -> str:
    """``"workload"`` or ``"trace"``; raises UserInputError for neither."""
    from vmalab.trace.workloads import WORKLOADS

    if source.partition(":")[0] in WORKLOADS:
        return "workload"
    if os.path.exists(source):
        return "trace"
    raise UserInputError(
        source,
        "neither a built-in workload ("
        + ", ".join(sorted(WORKLOADS))
        + ") nor a readable trace file",
    )


ProgressHook = Callable[[int], None]


def run_one(spec: RunSpec, progress: ProgressHook | None = None) -> dict[str, Any]:
    """Run ``spec`` and return its metrics, timeline and run information as a dict.

    Raises UserInputError for a bad source, workload parameter or trace line.
    """
    from vmalab import Kernel
    from vmalab.trace.guardify import GuardifyKernel
    from vmalab.trace.parse import TraceSyntaxError
    from vmalab.trace.replay import replay
    from vmalab.trace.workloads import parse_workload_spec, run_workload

    kind = source_kind(spec.source)
    tl = Timeline(spec.samples)
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if kind == "workload":
        try:
            parsed = parse_workload_spec(spec.source)
        except ValueError as e:
            raise UserInputError(spec.source, str(e)) from None
        assert parsed is not None
        name, params = parsed
        raw = Kernel(spec.design)
        k: Any = GuardifyKernel(raw) if spec.guardify else raw

        def hook(step: int, label: str, _k: Any) -> None:
            tl.tick(step, raw)
            if spec.guardify:
                k.stats.at(step)
            if progress is not None:
                progress(step)

        try:
            steps = run_workload(k, name, params, on_step=hook)
        except (ValueError, TypeError) as e:
            raise UserInputError(spec.source, str(e)) from None
        except (OSError, SegmentationFault) as e:
            # Parameters that make the workload issue a call the kernel refuses.
            raise UserInputError(
                spec.source, f"these parameters make an invalid call: {e}"
            ) from None
        tl.final(steps, raw)
        info = {"workload": name, "params": params, "steps": steps}
        if spec.guardify:
            info["guardify"] = _gstats(k.stats)
        kernel = raw
    else:

        def obs(lineno: int, kk: Any) -> None:
            tl.tick(lineno, kk)
            if progress is not None:
                progress(lineno)

        last: list[tuple[int, Metrics]] = []

        def before_last_exit(lineno: int, kk: Any) -> None:
            last[:] = [(lineno, measure(kk))]

        try:
            r = replay(
                spec.source,
                spec.design,
                stop_at_line=spec.stop_at_line,
                start=spec.start,
                lenient=spec.lenient,
                observer=obs,
                sample_every=1,
                guardify=spec.guardify,
                on_last_exit=before_last_exit,
                host_files=spec.host_files,
            )
        except TraceSyntaxError as e:
            raise UserInputError(f"{spec.source}:{e.lineno}", e.reason) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            raise UserInputError(spec.source, str(e)) from None
        tl.final(r.lines, r.kernel)
        info = r.summary()
        if r.guardify is not None:
            info["guardify"] = _gstats(r.guardify)
            from vmalab.cliutil import trace_file

            locate_rewrites(
                trace_file(spec.source),
                info["guardify"]["examples"],
                spec.start[1] if spec.start else 0,
            )
        kernel = r.kernel
    m = measure(kernel)
    info["measured_at"] = "end"
    if kind == "trace" and not m.processes and last:
        # every process exited: report the address spaces as they were just before
        at, m = last[0]
        fresh = measure(kernel)  # fork figures accumulate to the very end
        m.fork_copy_vmas = fresh.fork_copy_vmas
        m.guard_markers_copied = fresh.guard_markers_copied
        m.guard_markers_lost = fresh.guard_markers_lost
        info["measured_at"] = f"before the last process exited (line {at})"
    m.peak_kernel_bytes = max([m.kernel_bytes] + [b for _, b in tl.points])
    return {
        "source": spec.source,
        "kind": kind,
        "design": spec.design,
        "guardify": spec.guardify,
        "metrics": m.to_dict(),
        "timeline": tl.points,
        "series": tl.series(),
        "info": info,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _gstats(s: Any) -> dict[str, Any]:
    """The counters of a GuardifyStats."""
    return {
        "mprotect_rewritten": s.mprotect_rewritten,
        "mmap_rewritten": s.mmap_rewritten,
        "removed": s.removed,
        "left_alone": s.left_alone,
        "examples": [list(e) for e in s.examples],
    }


def locate_rewrites(path: str, examples: list[list[Any]], after: int = 0) -> None:
    """Give each guardify example without a line the first trace line (after ``after``)
    that makes the rewritten call, found by its name and address (``mprotect(0x...,``)."""
    todo = [e for e in examples if e[0] is None and "(" in e[1] and "," in e[1]]
    if not todo:
        return
    needles = {e[1][: e[1].index(",") + 1]: e for e in todo}
    if os.path.isdir(path):  # a recording: its trace.strace
        from vmalab.trace.recording import TRACE_NAME

        path = os.path.join(path, TRACE_NAME)
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            if no <= after:
                continue
            ln = raw.decode("utf-8", "replace")
            for nd in [n for n in needles if n in ln]:
                needles.pop(nd)[0] = no
            if not needles:
                return


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
