#!/usr/bin/env python3
"""Run vmalab's benchmark suite and write ``report.json`` and ``report.md``.

Usage (from the repository root)::

    python benchmarks/run.py [--quick] [--out benchmarks/results] [--cases a,b,c,d,e]
                             [--design tagged] [--seed 1] [--profile]

``python benchmarks/run.py targets [--quick]`` runs the five targets of issue 13 instead
(``benchmarks/targets.py``).

Cases: (a) side by side with the real kernel, (b) scaling with live VMAs, (c) fork and
exit, (d) strace replay throughput, (e) Python heap memory. See benchmarks/README.md.
With ``--profile`` each model case runs a second time under cProfile and the top hot
spots go to ``OUT/profiles/CASE.txt`` and into the report.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import pstats
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import cases  # noqa: E402
from profiling import _git_commit, hot_spots  # noqa: E402


def _md_profile(name: str, prof: dict[str, list[dict[str, Any]]]) -> str:
    out = [
        f"\n#### Profile: case {name} (cProfile; % of profiled time)\n",
        "| function (by cumulative) | cum % | own % | calls |",
        "|---|---:|---:|---:|",
    ]
    for r in prof["cumulative"]:
        out.append(
            f"| `{r['function']}` | {r['cum_pct']:.1f} | {r['own_pct']:.1f} | {r['calls']} |"
        )
    out += ["", "| function (by own time) | cum % | own % | calls |", "|---|---:|---:|---:|"]
    for r in prof["own"]:
        out.append(
            f"| `{r['function']}` | {r['cum_pct']:.1f} | {r['own_pct']:.1f} | {r['calls']} |"
        )
    out += ["", "| module | own % |", "|---|---:|"]
    for m in prof["modules"]:
        out.append(f"| `{m['module']}` | {m['own_pct']:.1f} |")
    return "\n".join(out) + "\n"


def markdown(rep: dict[str, Any]) -> str:
    """The report as a markdown document with one table per case."""
    m = rep["machine"]
    lines = [
        f"# vmalab benchmarks ({rep['mode']}, {rep['date']})\n",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux "
        f"{m['kernel']}, {m['implementation']} {m['python']}. Seed {rep['seed']}, "
        f"design `{rep['design']}`, model at commit `{rep.get('model_commit')}`. "
        f"Load average {m.get('loadavg_at_start', 0):.2f} at start, "
        f"{rep.get('loadavg_at_end', 0):.2f} at end (other jobs share the cores: "
        "expect ±30 % between runs).\n",
        "| case | figure | value | target | ok |",
        "|---|---|---:|---|---|",
    ]

    def row(case: str, fig: str, val: str, tgt: str = "", ok: Any = "") -> None:
        ok_s = {True: "yes", False: "**no**"}.get(ok, "") if isinstance(ok, bool) else ok
        lines.append(f"| {case} | {fig} | {val} | {tgt} | {ok_s} |")

    r = rep["cases"]
    if "a" in r and "error" not in r["a"]:
        a = r["a"]
        kc = a["kernel_c_us_per_op"]
        row("a", "kernel (C driver) µs/op", f"{kc:.2f}" if kc else "n/a")
        row("a", "kernel (ctypes driver) µs/op", f"{a['kernel_ctypes_us_per_op']:.2f}")
        row("a", f"model ({a['model_design']}) µs/op", f"{a['model_us_per_op']:.2f}")
        row("a", "ratio model/kernel", f"{a['ratio_model_kernel']:.1f}×", "≤ 5×", a["ok"])
        row("a", "ratio model/ctypes", f"{a['ratio_model_ctypes']:.1f}×")
        if a["model_design"] != "sticky":
            row("a", "model (sticky) µs/op", f"{a['sticky_us_per_op']:.2f}")
        row(
            "a",
            "final arena layout (sticky) equals kernel's",
            f"{a['layout_matches_kernel']} ({a['layout_vmas_model']} vs "
            f"{a['layout_vmas_kernel']} VMAs)",
        )
        if "pagemap_matches_kernel" in a:
            row(
                "a",
                "final pagemap (sticky) equals kernel's",
                f"{a['pagemap_matches_kernel']} ({a['pagemap_mismatched_pages']} pages differ; "
                f"kernel: {a['kernel_guard_pages']} guard, {a['kernel_present_pages']} present)",
            )
    if "b" in r and "error" not in r["b"]:
        b = r["b"]
        for x in b["rows"]:
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in x["us_per_kind"].items())
            row(
                "b",
                f"{x['vmas']:,} VMAs µs/op",
                f"{x['us_per_op']:.2f}",
                f"({kinds}; setup {x['setup_us_per_mmap']:.1f} µs/mmap)",
            )
            row("b", f"{x['vmas']:,} VMAs µs/op, GC disabled", f"{x['us_per_op_gc_disabled']:.2f}")
        row("b", "ratio largest/smallest", f"{b['ratio_largest_smallest']:.2f}×", "≤ 1.5×", b["ok"])
        row(
            "b",
            "ratio largest/smallest, GC disabled",
            f"{b['ratio_largest_smallest_gc_disabled']:.2f}×",
        )
    if "c" in r and "error" not in r["c"]:
        c = r["c"]
        row(
            "c",
            f"fork ({c['vmas']:,} VMAs, {c['pages']:,} pages) s",
            f"{c['fork_s']:.3f}",
            "< 2 s",
            c["fork_s"] < 2,
        )
        row("c", "child exit s", f"{c['child_exit_s']:.3f}", "< 1 s", c["child_exit_s"] < 1)
        row("c", "parent exit s", f"{c['parent_exit_s']:.3f}", "< 1 s", c["parent_exit_s"] < 1)
        row("c", "setup (mmap+populate) s", f"{c['setup_s']:.2f}")
        if c.get("kernel"):
            kc = c["kernel"]
            row(
                "c",
                "real kernel: fork / child exit / munmap all, s",
                f"{kc['fork_s']:.3f} / {kc['child_exit_s']:.3f} / {kc['unmap_s']:.3f}",
            )
    if "d" in r and "error" not in r["d"]:
        d = r["d"]
        for x in d["rows"]:
            row(
                "d",
                f"{x['design']}: syscalls/s ({x['lines']:,} lines)",
                f"{x['syscalls_per_s']:,.0f}",
                "≥ 200,000",
                x["syscalls_per_s"] >= 200_000,
            )
        row("d", "mode", d["mode"])
        if "mixed_20pct_mm" in d:
            mx = d["mixed_20pct_mm"]
            row(
                "d",
                f"{mx['design']}: syscalls/s, 20 % memory calls ({mx['lines']:,} lines)",
                f"{mx['syscalls_per_s']:,.0f}",
                "≥ 200,000",
                mx["syscalls_per_s"] >= 200_000,
            )
    if "e" in r and "error" not in r["e"]:
        e = r["e"]
        row(
            "e",
            "heap bytes per VMA",
            f"{e['bytes_per_vma']:.0f}",
            "≤ 1024",
            e["bytes_per_vma"] <= 1024,
        )
        row(
            "e",
            "heap bytes per populated page",
            f"{e['bytes_per_page']:.1f}",
            "≤ 24",
            e["bytes_per_page"] <= 24,
        )
    for k, v in r.items():
        if "error" in v:
            row(k, "ERROR", f"`{v['error']}`")
    for k, v in rep.get("profiles", {}).items():
        lines.append(_md_profile(k, v))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen cases and write the reports.

    ``run.py targets ...`` runs the issue-13 targets instead (benchmarks/targets.py).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["targets"]:
        import targets

        return targets.main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (minutes, not tens)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output directory")
    ap.add_argument("--cases", default="a,b,c,d,e", help="comma-separated subset of a-e")
    ap.add_argument("--design", default="tagged", help="model design for cases a, b, c, e")
    ap.add_argument("--replay-designs", default="", help="designs for case d (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run each model case under cProfile and report hot spots",
    )
    ap.add_argument(
        "--src",
        default=None,
        help="import vmalab from this source tree instead of ../src "
        "(e.g. one built by mypyc_tree.py)",
    )
    args = ap.parse_args(argv)
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    import vmalab

    rep_src = str(Path(vmalab.__file__).resolve().parent)

    sz = cases.QUICK if args.quick else cases.FULL
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    designs = tuple(x for x in args.replay_designs.split(",") if x) or tuple(vmalab.DESIGNS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rep: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "seed": args.seed,
        "design": args.design,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": cases.machine(),
        "sizes": sz.__dict__,
        "model_commit": _git_commit(),
        "model_path": rep_src,
        "cases": {},
        "profiles": {},
    }

    def run(name: str, prof: cProfile.Profile | None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as td:
            if name == "a":
                return cases.side_by_side(sz, args.seed, Path(td), args.design, prof)
            if name == "b":
                return cases.scaling(sz, args.seed, args.design, prof)
            if name == "c":
                return cases.fork_exit(sz, args.design, prof, Path(td))
            if name == "d":
                return cases.replay_throughput(sz, args.seed, designs, prof)
            if name == "e":
                return cases.memory(sz, args.design)
        raise SystemExit(f"unknown case {name!r}")

    for name in chosen:
        t0 = time.perf_counter()
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        try:
            rep["cases"][name] = run(name, None)
        except Exception as exc:  # a model crash is a finding, not the end of the run
            rep["cases"][name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        rep["cases"][name]["wall_s"] = time.perf_counter() - t0
        print(
            f"[{name}] {json.dumps(rep['cases'][name], default=str)[:600]}",
            file=sys.stderr,
            flush=True,
        )
        if args.profile and name != "e" and "error" not in rep["cases"][name]:
            prof = cProfile.Profile()
            try:
                run(name, prof)
            except Exception as exc:
                print(f"[{name}] profile run failed: {exc}", file=sys.stderr)
            rows = hot_spots(prof)
            rep["profiles"][name] = rows
            (out / "profiles").mkdir(exist_ok=True)
            with open(out / "profiles" / f"{name}.txt", "w") as f:
                pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(40)
        rep["loadavg_at_end"] = os.getloadavg()[0]
        (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
        (out / "report.md").write_text(markdown(rep))
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
