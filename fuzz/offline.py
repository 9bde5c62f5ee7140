"""Long offline fuzzing of vmalab's input readers (no atheris needed).

    python fuzz/offline.py TARGET [--inputs N] [--seed S] [--hang SECONDS] [--save DIR]

Mutates the seed inputs of ``fuzz/harness.py`` (inputs that got further than the parser
join the corpus), runs each through the target with a per-input alarm, and prints one JSON
line: inputs, tracebacks (``Unclean``), hangs, distinct failure kinds, peak RSS. Failing
inputs are written to ``--save`` (default: nowhere). Exit status 1 if any input failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import signal
import sys
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


class Hang(BaseException):
    """The per-input alarm fired."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def run(target: str, n: int, seed: int, hang: float, save: str | None) -> dict[str, Any]:
    fn = harness.TARGETS[target]
    rnd = random.Random(seed)
    corpus = harness.seeds(target)
    tracebacks = hangs = 0
    kinds: Counter[str] = Counter()
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.monotonic()
    slowest = 0.0
    for _i in range(n):
        src = rnd.choice(corpus)
        if target in ("program", "recording") and rnd.random() < 0.8:
            data = harness.mutate_structured(src, rnd)
        else:
            data = harness.mutate(src, rnd)
        t1 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, hang)
        failed = None
        try:
            fn(data)
        except harness.Unclean as e:
            tracebacks += 1
            failed = f"{e.target}: {type(e.exc).__name__}: {str(e.exc)[:80]}"
        except Hang:
            hangs += 1
            failed = "hang"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.monotonic() - t1)
        if failed is not None:
            kinds[failed] += 1
            if save:
                os.makedirs(save, exist_ok=True)
                h = hashlib.sha1(data).hexdigest()[:12]
                with open(os.path.join(save, f"{target}-{h}"), "wb") as f:
                    f.write(data)
        elif len(corpus) < 500 and rnd.random() < 0.02:
            corpus.append(data)
    return {
        "target": target,
        "inputs": n,
        "seed": seed,
        "tracebacks": tracebacks,
        "hangs": hangs,
        "kinds": dict(kinds.most_common(20)),
        "seconds": round(time.monotonic() - t0, 1),
        "slowest_input_s": round(slowest, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "recordings_supported": harness.RECORDINGS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=sorted(harness.TARGETS))
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang", type=float, default=10.0, help="seconds per input")
    ap.add_argument("--save", default=None)
    a = ap.parse_args()
    if a.inputs < 1 or not 0 < a.hang < 3600:
        ap.error("--inputs must be >= 1 and --hang in (0, 3600)")
    res = run(a.target, a.inputs, a.seed, a.hang, a.save)
    print(json.dumps(res))
    sys.exit(1 if res["tracebacks"] or res["hangs"] else 0)


if __name__ == "__main__":
    main()
