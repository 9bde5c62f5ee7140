"""Target e on the real kernel: how the kernel's own per-op cost grows from 10^3 to 10^6
live VMAs, with the model's op groups (benchmarks/kscaling.c, benchmarks/cases.py:scaling).

Target e asks the model for a per-op cost that stays flat as the VMA count grows; this
gives the yardstick of what the kernel itself does on this machine (its maple tree and
caches grow too). Run as root: vm.max_map_count is raised for the run (to NVMAS + 1000)
and restored after it.

    python benchmarks/kernel_scaling.py [--sizes 1000,10000,100000,1000000]
        [--groups 1000] [--seed 1] [--repeats 3] [--json]

Each size runs ``--repeats`` times (fresh processes; below ``--groups`` VMAs, several
processes until as many groups were timed); the median µs/op per size is reported with
its spread, and the ratio of the largest size's to the smallest's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")


def build(workdir: Path) -> Path:
    """Compile kscaling.c with the system's C compiler (-O2)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("kernel_scaling: no C compiler (cc) found")
    exe = workdir / "kscaling"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "kscaling.c")], check=True)
    return exe


def run_size(exe: Path, n: int, groups: int, seed: int) -> dict[str, Any]:
    """One size: as many kscaling processes as it takes to time ``groups`` groups."""
    procs = -(-groups // n)
    per_kind: dict[str, float] = {}
    done = 0
    for rep in range(procs):
        g = min(n, groups - done)
        out = subprocess.run(
            [str(exe), str(n), str(g), str(seed + rep)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout)
        if r["errors"]:
            raise SystemExit(f"kernel_scaling: {r['errors']} failed calls at {n} VMAs")
        for k, v in r["us_per_kind"].items():
            per_kind[k] = per_kind.get(k, 0.0) + v * g
        done += g
    kinds = {k: v / done for k, v in per_kind.items()}
    return {"vmas": n, "groups": done, "us_per_kind": kinds, "us_per_op": sum(kinds.values()) / 4}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    try:
        sizes = [int(x) for x in a.sizes.split(",")]
    except ValueError:
        print(f"kernel_scaling: --sizes: not a list of integers: {a.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1 or a.groups < 1 or a.repeats < 1:
        print("kernel_scaling: sizes, --groups and --repeats must be positive", file=sys.stderr)
        return 2
    old = int(MAX_MAP_COUNT.read_text())
    need = max(sizes) + 1000
    if need > old and os.geteuid() != 0:
        print(f"kernel_scaling: {max(sizes)} VMAs need root (vm.max_map_count)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        try:
            if need > old:
                MAX_MAP_COUNT.write_text(str(need))
            for n in sizes:
                runs = [run_size(exe, n, a.groups, a.seed + 7919 * i) for i in range(a.repeats)]
                ops = sorted(r["us_per_op"] for r in runs)
                kinds = {
                    k: statistics.median(r["us_per_kind"][k] for r in runs)
                    for k in runs[0]["us_per_kind"]
                }
                rows.append(
                    {
                        "vmas": n,
                        "us_per_op": statistics.median(ops),
                        "min": ops[0],
                        "max": ops[-1],
                        "us_per_kind": kinds,
                    }
                )
        finally:
            if need > old:
                MAX_MAP_COUNT.write_text(str(old))
    ratio = rows[-1]["us_per_op"] / rows[0]["us_per_op"]
    res = {"rows": rows, "ratio_largest_smallest": ratio, "load": os.getloadavg()}
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"kernel per-op cost by live VMAs (median of {a.repeats}; load {res['load'][0]:.2f})")
    print("| VMAs | µs/op (min-max) | split | merge | guard install | fault |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        k = r["us_per_kind"]
        print(
            f"| {r['vmas']:,} | {r['us_per_op']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
            f"{k['split']:.2f} | {k['merge']:.2f} | {k['guard_install']:.2f} | {k['fault']:.2f} |"
        )
    print(f"cost({rows[-1]['vmas']:,}) / cost({rows[0]['vmas']:,}) = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
