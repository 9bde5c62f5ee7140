"""Run a workload or a trace under one design and hand back what report/ measures.

:func:`run_one` is the unit of work of ``vmalab compare`` and ``vmalab sweep``: one source
(a built-in workload spec such as ``thread_stacks:guard=mprotect``, an strace log path or a
recording directory) under one design, optionally guardified. It returns a plain, picklable
dict, so the same function runs in-process, in a process pool or on a Dask worker with
identical results (the model is deterministic; only ``seconds`` differs between runs).

This is the running side of the comparison; :mod:`vmalab.report` only measures the kernel
it is handed (:func:`vmalab.report.metrics.measure`, :class:`vmalab.report.compare.Timeline`)
and renders the results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmalab.errors import SegmentationFault, UserInputError
from vmalab.kernel import Kernel
from vmalab.report.compare import Timeline
from vmalab.report.metrics import Metrics, measure
from vmalab.trace.guardify import GuardifyKernel
from vmalab.trace.parse import TraceSyntaxError
from vmalab.trace.recording import TRACE_NAME
from vmalab.trace.replay import replay
from vmalab.trace.workloads import WORKLOADS, parse_workload_spec, run_workload


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


def source_kind(source: str) -> str:
    """``"workload"`` or ``"trace"``; raises UserInputError for neither."""
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
    kind = source_kind(spec.source)
    tl = Timeline(spec.samples)
    t0 = time.perf_counter()
    if kind == "workload":
        kernel, info = _run_workload(spec, tl, progress)
        last: list[tuple[int, Metrics]] = []
    else:
        kernel, info, last = _run_trace(spec, tl, progress)
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


def _run_workload(
    spec: RunSpec, tl: Timeline, progress: ProgressHook | None
) -> tuple[Kernel, dict[str, Any]]:
    """A built-in workload under ``spec.design``: the kernel it leaves and its run info."""
    try:
        parsed = parse_workload_spec(spec.source)
    except ValueError as e:
        raise UserInputError(spec.source, str(e)) from None
    assert parsed is not None
    name, params = parsed
    raw = Kernel(spec.design)
    gk = GuardifyKernel(raw) if spec.guardify else None
    k: Any = gk if gk is not None else raw

    def hook(step: int, label: str, _k: Any) -> None:
        tl.tick(step, raw)
        if gk is not None:
            gk.stats.at(step)
        if progress is not None:
            progress(step)

    try:
        steps = run_workload(k, name, params, on_step=hook)
    except (ValueError, TypeError) as e:
        raise UserInputError(spec.source, str(e)) from None
    except (OSError, SegmentationFault) as e:
        # Parameters that make the workload issue a call the kernel refuses.
        raise UserInputError(spec.source, f"these parameters make an invalid call: {e}") from None
    tl.final(steps, raw)
    info: dict[str, Any] = {"workload": name, "params": params, "steps": steps}
    if gk is not None:
        info["guardify"] = gk.stats.to_dict()
    return raw, info


def _run_trace(
    spec: RunSpec, tl: Timeline, progress: ProgressHook | None
) -> tuple[Kernel, dict[str, Any], list[tuple[int, Metrics]]]:
    """An strace log or a recording replayed under ``spec.design``: the kernel, the run
    info, and the measure taken just before the last process exited (if one did)."""

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
        info["guardify"] = r.guardify.to_dict()
        locate_rewrites(
            spec.source, info["guardify"]["examples"], spec.start[1] if spec.start else 0
        )
    return r.kernel, info, last


def locate_rewrites(path: str, examples: list[list[Any]], after: int = 0) -> None:
    """Give each guardify example without a line the first trace line (after ``after``)
    that makes the rewritten call, found by its name and address (``mprotect(0x...,``).

    ``path`` is an strace log or a recording directory (its trace.strace is read)."""
    todo = [e for e in examples if e[0] is None and "(" in e[1] and "," in e[1]]
    if not todo:
        return
    needles = {e[1][: e[1].index(",") + 1]: e for e in todo}
    if os.path.isdir(path):  # a recording: its trace.strace
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
