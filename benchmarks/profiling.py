"""Shared pieces of the benchmark drivers (run.py, targets.py): profile hot spots and the
checkout's commit."""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _short(file: str) -> str:
    """A short module name for a profiled file path."""
    if "/src/" in file:
        return file.split("/src/")[-1]
    if "site-packages/" in file:
        return file.split("site-packages/")[-1]
    return Path(file).name


def hot_spots(prof: cProfile.Profile, n: int = 12) -> dict[str, list[dict[str, Any]]]:
    """Hot spots of a profile, as percentages of total profiled time.

    ``cumulative``: top ``n`` functions by cumulative time (the benchmark drivers left
    out); ``own``: top ``n`` by own time; ``modules``: own time summed per module.
    """
    st = pstats.Stats(prof)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    rows: list[dict[str, Any]] = []
    modules: dict[str, float] = {}
    for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        mod = _short(file) if file != "~" else "builtins"
        if "sortedcontainers" in mod:
            mod = "sortedcontainers (VMA index)"
        modules[mod] = modules.get(mod, 0.0) + tt
        if file.endswith(("workload.py", "cases.py")):
            continue
        name = f"{_short(file)}:{line}({func})" if file != "~" else func
        rows.append(
            {
                "function": name,
                "cum_pct": 100 * ct / total,
                "own_pct": 100 * tt / total,
                "calls": nc,
            }
        )
    by_cum = sorted(rows, key=lambda r: -r["cum_pct"])[:n]
    by_own = sorted(rows, key=lambda r: -r["own_pct"])[:n]
    mods: list[dict[str, Any]] = [
        {"module": m, "own_pct": 100 * t / total}
        for m, t in sorted(modules.items(), key=lambda kv: -kv[1])[:n]
    ]
    return {"cumulative": by_cum, "own": by_own, "modules": mods}


def _git_commit() -> str:
    """The checkout's commit, with "+dirty" if src/ has uncommitted changes."""
    import subprocess

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=HERE,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")
