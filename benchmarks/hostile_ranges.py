"""Operations over a 2^36-byte range on the model: time, outcome, peak RSS.

    python benchmarks/hostile_ranges.py [--bits 36] [--limit 120] [--src DIR]

Each case runs in its own subprocess (so a slow one is cut off at ``--limit`` seconds and
the peak RSS is that case's own) on a fresh ``Kernel("sticky")`` with a private anonymous
MAP_NORESERVE mapping of 2^bits bytes. Sparse cases (no pages present) must cost per
range; populating cases really touch every page in the kernel too, and must end at the
default ``Budget`` quickly. ``--src`` runs another checkout's ``src`` (the numbers before
the budgets: ``git archive BASE src | tar -x -C /tmp/base``, then ``--src /tmp/base/src``).
Results are in docs/hostile-input.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

CASES = {
    "mlock2(MLOCK_ONFAULT)": "p.mlock2(a, N, uapi.MLOCK_ONFAULT)",
    "MADV_GUARD_REMOVE, no markers": "p.madvise(a, N, uapi.MADV_GUARD_REMOVE)",
    "MADV_DONTNEED, nothing present": "p.madvise(a, N, uapi.MADV_DONTNEED)",
    "MADV_GUARD_REMOVE, 1 marker": "p.madvise(a + 4096, 4096, uapi.MADV_GUARD_INSTALL); "
    "p.madvise(a, N, uapi.MADV_GUARD_REMOVE)",
    "munmap, 1 page present": "p.write(a + N // 2, b'x'); p.munmap(a, N)",
    "fork, 1 page present": "p.write(a + N // 2, b'x'); p.fork().exit()",
    "MADV_POPULATE_WRITE": "p.madvise(a, N, uapi.MADV_POPULATE_WRITE)",
    "MADV_POPULATE_READ": "p.madvise(a, N, uapi.MADV_POPULATE_READ)",
    "mlock": "p.mlock(a, N)",
    "MAP_POPULATE": "p.munmap(a, N); p.mmap(a, N, 3, F | uapi.MAP_POPULATE | uapi.MAP_FIXED, "
    "-1, 0)",
    "MADV_GUARD_INSTALL": "p.madvise(a, N, uapi.MADV_GUARD_INSTALL)",
}

_CHILD = """
import json, resource, sys, time
from vmalab import Kernel, uapi
N = 1 << int(sys.argv[1])
F = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_NORESERVE
k = Kernel("sticky")
p = k.spawn()
a = p.mmap(0, N, 3, F, -1, 0)
t0 = time.perf_counter()
try:
    exec(sys.argv[2])
    out = "ok"
except Exception as e:
    out = type(e).__name__ + ": " + str(e)
dt = time.perf_counter() - t0
k.check()
print(json.dumps({"seconds": round(dt, 4), "outcome": out[:100],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=36)
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--src", default=None)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.src:
        env["PYTHONPATH"] = a.src
    rows: list[dict[str, Any]] = []
    for name, code in CASES.items():
        if a.only and name not in a.only.split(","):
            continue
        res: dict[str, Any]
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(a.bits), code],
                env=env,
                capture_output=True,
                text=True,
                timeout=a.limit,
            )
            lines = proc.stdout.strip().splitlines()
            res = (
                json.loads(lines[-1])
                if lines
                else {"outcome": "crashed: " + proc.stderr.strip()[-100:]}
            )
        except subprocess.TimeoutExpired:
            res = {"seconds": None, "outcome": f"killed after {a.limit:g}s"}
        res["case"] = name
        rows.append(res)
        print(json.dumps(res), flush=True)
    print("| case | seconds | outcome | peak RSS MiB |")
    print("|---|---|---|---|")
    for r in rows:
        s = "-" if r.get("seconds") is None else f"{r['seconds']:.4f}"
        print(f"| {r['case']} | {s} | {r['outcome']} | {r.get('peak_rss_mib', '-')} |")


if __name__ == "__main__":
    main()
