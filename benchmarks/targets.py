#!/usr/bin/env python3
"""The five targets of issue 13, each measured as a same-run ratio or figure.

Usage (from the repository root)::

    python benchmarks/run.py targets [--quick] [--out DIR] [--only a,b,c,d,e] [--profile]
    python benchmarks/targets.py ...     # the same

Targets (issue 13):

* **a. mixed sequence** — the same ops (``workload.generate_mixed``: 1-page mmaps into a
  PROT_NONE reservation, faults, guard install, mprotect split/merge, guard remove,
  munmap; 110,001 ops) from C on the real kernel (``kdriver.c``, best of 3) and from
  Python on the model (best of 3), µs/op each and model/kernel. Target ≤ 3×.
* **b. replay vs native** — ``tests/fixtures/selfmaps/randloop.c`` (190,000 ops) is run
  natively (best of 3, whole process, wall time), traced (``strace -f -ttt -X raw -y``;
  with ``--record``, ``vmalab record`` where root and perf are available), and the log replayed
  (``vmalab.trace.replay.replay``, parsing included). Lines/s, and replay/native. Target
  ≤ 2×, ≥ 300,000 lines/s.
* **c. memory per one-page VMA** (tracemalloc: traced Python heap, ``gc.collect()``
  before each reading) at 6×10^4 separate one-page VMAs: untouched; after one byte is
  written in each (total per VMA); after ``fork()`` (total model heap per VMA pair: the
  parent's VMA, the child's and what they share). Targets ≤ 1 KiB written, ≤ 2 KiB/pair.
* **d. fork, exit, check at 10^6 VMAs** — separate one-page VMAs, each written once (so
  each has an anon_vma and a page); seconds for ``Kernel.check()`` (one process), ``fork()``,
  ``Kernel.check()`` (both), the child's ``exit()``, the parent's ``exit()``. Target ≤ 2 s
  each. For scale the real kernel's fork/exit of ``kdriver --fork`` at the largest count
  ``vm.max_map_count`` allows (not changed here).
* **e. scaling** — per-op cost (split, merge, guard install, fault on a random VMA) with
  10^3 … 10^6 live VMAs (``cases.scaling``); cost(10^6)/cost(10^3). Target ≤ 1.2×.

The machine (CPU model, cores, kernel, Python), the model commit and the build (compiled
by mypyc or pure Python) are printed with the table. ``--quick`` runs small sizes in
about a minute (the figures are then not the targets' sizes, and the table says so).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import gc
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402
import workload as wl  # noqa: E402

PAGE = wl.PAGE
RW = wl.PROT_READ | wl.PROT_WRITE
FIXED = wl.MAP_PRIVATE | wl.MAP_ANONYMOUS | wl.MAP_FIXED
FIXTURES = ROOT / "tests" / "fixtures" / "selfmaps"


@dataclass(frozen=True)
class TSizes:
    """Problem sizes of one targets run (FULL is what the issue's targets refer to)."""

    mixed_ops: int
    randloop_ops: int
    mem_vmas: int
    fork_vmas: int
    scaling_vmas: tuple[int, ...]
    scaling_groups: int
    repeats: int


FULL = TSizes(110_001, 190_000, 60_000, 1_000_000, (1_000, 10_000, 100_000, 1_000_000), 1_000, 3)
QUICK = TSizes(11_001, 6_000, 3_000, 10_000, (1_000, 10_000), 200, 1)


def build_kind() -> dict[str, Any]:
    """Which vmalab is imported: its path, and which core modules are mypyc-compiled."""
    import importlib

    import vmalab

    mods = {}
    for name in ("vmalab.mm.vma", "vmalab.mm.mmap", "vmalab.designs.base", "vmalab.kernel"):
        try:
            f = importlib.import_module(name).__file__ or ""
        except ImportError:
            continue
        mods[name] = "compiled" if f.endswith((".so", ".pyd")) else "pure"
    compiled = sum(v == "compiled" for v in mods.values())
    return {
        "path": str(Path(vmalab.__file__).resolve().parent),
        "modules": mods,
        "build": "mypyc" if compiled else "pure Python",
    }


# ---------------------------------------------------------------- a. mixed sequence


def mixed(sz: TSizes, seed: int, workdir: Path, prof: cProfile.Profile | None) -> dict[str, Any]:
    """Target a: the mixed sequence on the kernel (C) and the model (sticky design)."""
    prog = wl.generate_mixed(sz.mixed_ops, seed)
    out: dict[str, Any] = {"ops": len(prog.ops), "mix": prog.counts}
    exe = wl.compile_kdriver(workdir)
    if exe is None:
        kern = wl.run_ctypes(prog)
        out["kernel_driver"] = "ctypes (no C compiler)"
    else:
        kern = wl.run_c(prog, exe, repeats=sz.repeats)
        out["kernel_driver"] = "C (kdriver.c, cc -O2)"
    gc.collect()
    if prof is not None:
        model = wl.run_model(prog, "sticky", profiler=prof)
    else:
        model = min(
            (wl.run_model(prog, "sticky") for _ in range(sz.repeats)), key=lambda r: r.seconds
        )
    out["kernel_us_per_op"] = kern.us_per_op
    out["model_us_per_op"] = model.us_per_op
    out["ratio"] = model.us_per_op / kern.us_per_op
    out["errors"] = {"kernel": kern.errors, "model": model.errors}
    out["layout_matches_kernel"] = model.layout == kern.layout
    if kern.pagemap:
        out["pagemap_matches_kernel"] = model.pagemap == kern.pagemap
    return out


# ---------------------------------------------------------------- b. replay vs native


def _compile_fixture(workdir: Path, name: str) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = workdir / name
    subprocess.run([cc, "-O1", "-pthread", "-o", str(exe), str(FIXTURES / f"{name}.c")], check=True)
    return exe


def _can_record() -> bool:
    return os.geteuid() == 0 and shutil.which("perf") is not None


def replay_vs_native(
    sz: TSizes, seed: int, workdir: Path, prof: cProfile.Profile | None, record: bool = False
) -> dict[str, Any]:
    """Target b: replay of a traced randloop run against the same program's native run.

    The log is plain ``strace -f -ttt -X raw -y`` (as in the issue's figure) unless
    ``record`` (or strace is missing): then ``vmalab record``, whose recording also has
    every page fault (about twice the lines) and starts from exec snapshots.
    """
    from vmalab.trace.replay import replay

    exe = _compile_fixture(workdir, "randloop")
    if exe is None:
        return {"skipped": "no C compiler"}
    args = [str(sz.randloop_ops), str(seed)]
    native = []
    for i in range(sz.repeats):
        o = workdir / f"native{i}"
        o.mkdir()
        t0 = time.perf_counter()
        subprocess.run([str(exe), str(o), *args], check=True)
        native.append(time.perf_counter() - t0)
    out_dir = workdir / "recout"
    out_dir.mkdir()
    t0 = time.perf_counter()
    if shutil.which("strace") and not record:
        log = workdir / "randloop.strace"
        subprocess.run(
            ["strace", "-f", "-ttt", "-X", "raw", "-y", "-o", str(log), str(exe), str(out_dir)]
            + args,
            check=True,
            capture_output=True,
        )
        target: Path = log
        how = "strace -f -ttt -X raw -y"
    elif _can_record():
        import vmalab

        env = dict(os.environ)
        pkg_parent = str(Path(vmalab.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
        rec = workdir / "rec"
        subprocess.run(
            [sys.executable, "-m", "vmalab.cli", "record", "-o", str(rec), "--", str(exe)]
            + [str(out_dir), *args],
            check=True,
            capture_output=True,
            env=env,
        )
        log = rec / "trace.strace"
        target = rec
        how = "vmalab record (ptrace + perf page faults)"
    else:
        return {"skipped": "neither strace nor vmalab record (root + perf) available"}
    record_s = time.perf_counter() - t0
    with open(log) as f:
        lines = sum(1 for _ in f)
    times = []
    runs = 1 if prof is not None else sz.repeats
    res = None
    for _ in range(runs):
        gc.collect()
        if prof is not None:
            prof.enable()
        t0 = time.perf_counter()
        res = replay(str(target))
        times.append(time.perf_counter() - t0)
        if prof is not None:
            prof.disable()
    assert res is not None
    rs = min(times)
    return {
        "program": f"randloop {' '.join(args)}",
        "recorded_with": how,
        "record_s": record_s,
        "lines": lines,
        "syscalls": res.syscalls,
        "model_errors": res.model_error_count,
        "native_s": min(native),
        "replay_s": rs,
        "lines_per_s": lines / rs,
        "ratio": rs / min(native),
    }


# ---------------------------------------------------------------- c. memory


def memory(sz: TSizes) -> dict[str, Any]:
    """Target c: tracemalloc bytes per one-page VMA: untouched, written, per pair after fork."""
    import vmalab
    from vmalab.budget import Budget

    n = sz.mem_vmas
    base = 0x100000000000
    tracemalloc.start()
    try:
        gc.collect()
        b0 = tracemalloc.get_traced_memory()[0]
        k = vmalab.Kernel("sticky", max_map_count=2_000_000, budget=Budget.unlimited())
        p = k.spawn()
        gc.collect()
        b1 = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            p.mmap(base + 2 * i * PAGE, PAGE, RW, FIXED)
        gc.collect()
        b2 = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            p.write(base + 2 * i * PAGE, b"x")
        gc.collect()
        b3 = tracemalloc.get_traced_memory()[0]
        c = p.fork()
        gc.collect()
        b4 = tracemalloc.get_traced_memory()[0]
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    top = [
        {"where": str(s.traceback[0]), "bytes_per_vma_pair": s.size / n}
        for s in snap.statistics("lineno")[:12]
    ]
    del c, p, k, snap
    gc.collect()
    return {
        "vmas": n,
        "measure": "tracemalloc traced heap, gc.collect() before each reading",
        "empty_kernel_and_process_bytes": b1 - b0,
        "untouched_b_per_vma": (b2 - b1) / n,
        "written_b_per_vma": (b3 - b1) / n,
        "write_delta_b_per_vma": (b3 - b2) / n,
        "after_fork_b_per_vma_pair": (b4 - b1) / n,
        "fork_delta_b_per_vma": (b4 - b3) / n,
        "top_allocation_sites_after_fork": top,
    }


# ---------------------------------------------------------------- d. fork/exit/check


def fork_exit_check(sz: TSizes, workdir: Path, prof: cProfile.Profile | None) -> dict[str, Any]:
    """Target d: check(), fork(), check(), child exit, parent exit at ``fork_vmas`` VMAs."""
    import vmalab
    from vmalab.budget import Budget

    n = sz.fork_vmas
    base = 0x100000000000
    k = vmalab.Kernel("sticky", max_map_count=4_000_000, budget=Budget.unlimited())
    p = k.spawn()
    t0 = time.perf_counter()
    mmap, write = p.mmap, p.write
    for i in range(n):
        a = base + 2 * i * PAGE
        mmap(a, PAGE, RW, FIXED)
        write(a, b"x")
    setup = time.perf_counter() - t0
    gc.collect()
    pc = time.perf_counter
    if prof is not None:
        prof.enable()
    t0 = pc()
    k.check()
    t1 = pc()
    c = p.fork()
    t2 = pc()
    k.check()
    t3 = pc()
    c.exit()
    t4 = pc()
    p.exit()
    t5 = pc()
    if prof is not None:
        prof.disable()
    out: dict[str, Any] = {
        "vmas": n,
        "setup_s": setup,
        "setup_us_per_vma": setup * 1e6 / n,
        "check_s": t1 - t0,
        "fork_s": t2 - t1,
        "check_after_fork_s": t3 - t2,
        "child_exit_s": t4 - t3,
        "parent_exit_s": t5 - t4,
    }
    del c, p, k
    gc.collect()
    exe = wl.compile_kdriver(workdir)
    if exe is not None and prof is None:
        try:
            limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        except OSError:
            limit = 65530
        kn = min(n, limit - 1000)
        res = subprocess.run(
            [str(exe), "--fork", str(kn), "1"], check=True, capture_output=True, text=True
        ).stdout
        kern = json.loads(res)
        kern["vmas"] = kn
        out["kernel"] = kern
    return out


# ---------------------------------------------------------------- e. scaling


def scaling(sz: TSizes, seed: int, prof: cProfile.Profile | None) -> dict[str, Any]:
    """Target e: per-op cost from 10^3 to 10^6 live VMAs (cases.scaling, sticky design)."""
    s = cases.Sizes(0, sz.scaling_vmas, sz.scaling_groups, 0, 0, 0, 0, 0)
    r = cases.scaling(s, seed, "sticky", prof)
    return {
        "rows": [
            {
                "vmas": x["vmas"],
                "us_per_op": x["us_per_op"],
                "us_per_op_gc_disabled": x["us_per_op_gc_disabled"],
                "us_per_kind": x["us_per_kind"],
                "setup_us_per_mmap": x["setup_us_per_mmap"],
            }
            for x in r["rows"]
        ],
        "ratio": r["ratio_largest_smallest"],
        "ratio_gc_disabled": r["ratio_largest_smallest_gc_disabled"],
    }


# ---------------------------------------------------------------- report


def table(rep: dict[str, Any]) -> str:
    """The report as one markdown table: figure, value, target, met."""
    m = rep["machine"]
    lines = [
        f"# vmalab issue-13 targets ({rep['mode']}, {rep['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}; load average {m['loadavg_at_start']:.2f} at "
        f"start, {rep['loadavg_at_end']:.2f} at end. Model commit `{rep['model_commit']}`, "
        f"build: {rep['build']['build']} ({rep['build']['path']}).",
        "",
        "| target | figure | value | target | met |",
        "|---|---|---:|---|---|",
    ]

    def row(t: str, fig: str, val: str, tgt: str = "", ok: bool | None = None) -> None:
        met = "" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {t} | {fig} | {val} | {tgt} | {met} |")

    r = rep["targets"]
    if "a" in r and "error" not in r["a"]:
        a = r["a"]
        row(
            "a",
            f"kernel µs/op ({a['kernel_driver']}, {a['ops']:,} ops)",
            f"{a['kernel_us_per_op']:.2f}",
        )
        row("a", "model µs/op (sticky)", f"{a['model_us_per_op']:.2f}")
        row("a", "model / kernel", f"{a['ratio']:.1f}×", "≤ 3×", a["ratio"] <= 3)
        row(
            "a",
            "final layout / pagemap equal the kernel's",
            f"{a['layout_matches_kernel']} / {a.get('pagemap_matches_kernel')}",
        )
    if "b" in r and "error" not in r["b"]:
        b = r["b"]
        if "skipped" in b:
            row("b", "skipped", b["skipped"])
        else:
            row("b", f"native run s ({b['program']})", f"{b['native_s']:.3f}")
            row(
                "b",
                f"replay s ({b['lines']:,} lines; {b['recorded_with']})",
                f"{b['replay_s']:.2f}",
            )
            row(
                "b",
                "replay lines/s",
                f"{b['lines_per_s']:,.0f}",
                "≥ 300,000",
                b["lines_per_s"] >= 3e5,
            )
            row("b", "replay / native", f"{b['ratio']:.1f}×", "≤ 2×", b["ratio"] <= 2)
            row(
                "b",
                "calls the model rejected (of the log's syscalls)",
                f"{b['model_errors']} of {b['syscalls']:,}",
            )
    if "c" in r and "error" not in r["c"]:
        c = r["c"]
        row(
            "c",
            f"B per untouched 1-page VMA ({c['vmas']:,} VMAs, tracemalloc)",
            f"{c['untouched_b_per_vma']:.0f}",
        )
        row(
            "c",
            "B per VMA once one byte is written",
            f"{c['written_b_per_vma']:.0f}",
            "≤ 1024",
            c["written_b_per_vma"] <= 1024,
        )
        row(
            "c",
            "B per VMA pair after fork",
            f"{c['after_fork_b_per_vma_pair']:.0f}",
            "≤ 2048",
            c["after_fork_b_per_vma_pair"] <= 2048,
        )
    if "d" in r and "error" not in r["d"]:
        d = r["d"]
        v = f"{d['vmas']:,} VMAs"
        row(
            "d",
            f"Kernel.check() s ({v}, one process)",
            f"{d['check_s']:.2f}",
            "≤ 2 s",
            d["check_s"] <= 2,
        )
        row("d", "fork() s", f"{d['fork_s']:.2f}", "≤ 2 s", d["fork_s"] <= 2)
        row(
            "d",
            "Kernel.check() s after fork (2 processes)",
            f"{d['check_after_fork_s']:.2f}",
            "≤ 2 s",
            d["check_after_fork_s"] <= 2,
        )
        row("d", "child exit() s", f"{d['child_exit_s']:.2f}", "≤ 2 s", d["child_exit_s"] <= 2)
        row("d", "parent exit() s", f"{d['parent_exit_s']:.2f}", "≤ 2 s", d["parent_exit_s"] <= 2)
        if "kernel" in d:
            kk = d["kernel"]
            row(
                "d",
                f"real kernel at {kk['vmas']:,} VMAs: fork / child exit / munmap all, s",
                f"{kk['fork_s']:.3f} / {kk['child_exit_s']:.3f} / {kk['unmap_s']:.3f}",
            )
            per = d["fork_s"] / d["vmas"]
            kper = kk["fork_s"] / kk["vmas"]
            row("d", "fork per VMA, model / kernel", f"{per / kper:.0f}×")
    if "e" in r and "error" not in r["e"]:
        e = r["e"]
        for x in e["rows"]:
            row("e", f"µs/op at {x['vmas']:,} VMAs", f"{x['us_per_op']:.2f}")
        n0, n1 = e["rows"][0]["vmas"], e["rows"][-1]["vmas"]
        row("e", f"cost({n1:,}) / cost({n0:,})", f"{e['ratio']:.2f}×", "≤ 1.2×", e["ratio"] <= 1.2)
        row("e", "the same, cyclic GC disabled", f"{e['ratio_gc_disabled']:.2f}×")
    for k, v in r.items():
        if "error" in v:
            row(k, "ERROR", f"`{v['error']}`")
    if rep["mode"] == "quick":
        lines += ["", "(quick sizes: not the targets' sizes; a smoke run, not a measurement)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen targets; print the table and write OUT/targets.{json,md}."""
    ap = argparse.ArgumentParser(description="issue 13 targets")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="a,b,c,d,e")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fork-vmas", type=int, default=None, help="target d at N VMAs")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument(
        "--profile", action="store_true", help="a second run of a, b, d, e under cProfile"
    )
    ap.add_argument(
        "--record",
        action="store_true",
        help="target b: replay a vmalab record recording instead of a plain strace log",
    )
    ap.add_argument(
        "--installed",
        action="store_true",
        help="benchmark the installed vmalab (e.g. a mypyc build) instead of the checkout's src/",
    )
    args = ap.parse_args(argv)
    src = str(ROOT / "src")
    saved = list(sys.path)
    import profiling

    sys.path[:] = [x for x in saved if x != src]
    if not args.installed:
        sys.path.insert(0, src)
    sz = QUICK if args.quick else FULL
    if args.fork_vmas is not None:
        sz = dataclasses.replace(sz, fork_vmas=args.fork_vmas)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rep: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": cases.machine(),
        "model_commit": profiling._git_commit(),
        "build": build_kind(),
        "sizes": sz.__dict__,
        "targets": {},
        "profiles": {},
    }

    def one(name: str, td: Path, prof: cProfile.Profile | None) -> dict[str, Any]:
        if name == "a":
            return mixed(sz, args.seed, td, prof)
        if name == "b":
            return replay_vs_native(sz, args.seed, td, prof, args.record)
        if name == "c":
            return memory(sz)
        if name == "d":
            return fork_exit_check(sz, td, prof)
        if name == "e":
            return scaling(sz, args.seed, prof)
        raise SystemExit(f"unknown target {name!r}")

    for name in [x.strip() for x in args.only.split(",") if x.strip()]:
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as td:
            try:
                rep["targets"][name] = one(name, Path(td), None)
            except Exception as exc:  # a crash is a finding; the other targets still run
                import traceback

                rep["targets"][name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
        rep["targets"][name]["wall_s"] = time.perf_counter() - t0
        print(f"[{name}] {json.dumps(rep['targets'][name], default=str)[:400]}", file=sys.stderr)
        if args.profile and name != "c" and "error" not in rep["targets"][name]:
            prof = cProfile.Profile()
            with tempfile.TemporaryDirectory() as td:
                one(name, Path(td), prof)
            rep["profiles"][name] = profiling.hot_spots(prof, 20)
            (out / "profiles").mkdir(exist_ok=True)
            with open(out / "profiles" / f"target-{name}.txt", "w") as f:
                pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(50)
                pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(40)
        rep["loadavg_at_end"] = os.getloadavg()[0]
        (out / "targets.json").write_text(json.dumps(rep, indent=2, default=str))
        (out / "targets.md").write_text(table(rep))
    print(table(rep))
    return 1 if any("error" in v for v in rep["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
