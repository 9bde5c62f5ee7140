"""The per-design cost of recorded real programs: the tables of docs/results.md.

    python benchmarks/results.py NAME=DIR [NAME=DIR ...] [--out docs/results-tables.md]

Each DIR is a recording of ``vmalab record``. For each, the script replays it once with
``verify=True`` (how many snapshots match, and the replay time), then runs ``vmalab
compare DIR --guardify`` over every design and prints, in markdown, the kernel objects
each design leaves (anon_vma, anon_vma_chain, vm_area_struct, page-table pages), the
allocations over the whole run, the guard markers copied and lost at fork, and what
guardify (PROT_NONE guard pages rewritten to MADV_GUARD_INSTALL) changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from vmalab import DESIGNS
from vmalab.report.compare import guardify_delta
from vmalab.trace.replay import replay
from vmalab.trace.run import RunSpec, run_one


def _row(r: dict[str, Any]) -> list[str]:
    m = r["metrics"]
    o, a = m["objects"], m["allocs"]
    return [
        r["design"] + (" +guardify" if r["guardify"] else ""),
        str(m["vmas"]),
        f"{o.get('anon_vma', 0)} ({a.get('anon_vma', 0)})",
        f"{o.get('anon_vma_chain', 0)} ({a.get('anon_vma_chain', 0)})",
        f"{o.get('vm_area_struct', 0)} ({a.get('vm_area_struct', 0)})",
        str(o.get("pgtable", 0)),
        f"{m['guard_markers_copied']} / {m['guard_markers_lost']}",
        f"{m['kernel_bytes'] / 1024:.1f}",
    ]


def program(name: str, path: str) -> str:
    """The markdown section of one recording."""
    with open(os.path.join(path, "manifest.json")) as f:
        man = json.load(f)
    t0 = time.perf_counter()
    r = replay(path, verify=True)
    secs = time.perf_counter() - t0
    ok = sum(c.matched for c in r.checkpoints)
    rec = man.get("recorder", {})
    out = [
        f"### {name}",
        "",
        f"`{' '.join(man.get('command', []))}`: {man['counts']['lines']:,} trace lines, "
        f"{man['counts']['syscalls']:,} calls, {man['counts']['faults']:,} faults "
        f"({man['faults'].get('lost', 0)} perf events lost), "
        f"{man['counts'].get('processes', '?')} processes, "
        f"{man['counts'].get('execs', '?')} execs. Recorded in {man.get('seconds', 0):.2f} s"
        + (
            f" (untraced run {rec['baseline_seconds']:.2f} s)"
            if rec.get("baseline_seconds")
            else ""
        )
        + f"; replayed with verify in {secs:.2f} s: **{ok}/{len(r.checkpoints)} "
        f"snapshots match**, {r.model_error_count} model rejections, "
        f"{r.fault_signals} faults answered with a signal.",
        "",
        "| design | VMAs | anon_vma (allocated) | anon_vma_chain (allocated) | "
        "vm_area_struct (allocated) | page-table pages | guard markers copied / lost "
        "at fork | kernel KiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plain, guarded = [], []
    for d in DESIGNS:
        plain.append(run_one(RunSpec(path, d)))
        guarded.append(run_one(RunSpec(path, d, True)))
    for res in plain + guarded:
        out.append("| " + " | ".join(_row(res)) + " |")
    out += [
        "",
        "guardify, per design: "
        + "; ".join(
            f"{g['design']}: {g['guards_rewritten']} guards rewritten, "
            f"{g['vmas_saved']:+d} VMAs saved, anon_vma {g['anon_vma_added']:+d}, "
            f"AVC {g['anon_vma_chain_added']:+d}"
            for g in (guardify_delta(a, b) for a, b in zip(plain, guarded, strict=True))
        ),
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recordings", nargs="+", metavar="NAME=DIR")
    ap.add_argument("--out", default=None, help="write the markdown here (default: stdout)")
    args = ap.parse_args()
    parts = []
    for spec in args.recordings:
        name, _, path = spec.partition("=")
        if not path:
            ap.error(f"{spec}: expected NAME=DIR")
        print(f"{name} ...", file=sys.stderr)
        parts.append(program(name, path))
    text = "\n".join(parts)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
