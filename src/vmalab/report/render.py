"""Rendering of comparison results: rich tables and matplotlib timelines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from vmalab.report.metrics import CACHES


def _na(x: Any) -> str:
    """A figure or ``n/a``."""
    return "n/a" if x is None else f"{x:,}"


def _kib(b: int) -> str:
    """Bytes as KiB with one decimal."""
    return f"{b / 1024:,.1f}"


WIDE = 150
"""Columns the one-row-per-design table needs; narrower consoles get it transposed."""


def console() -> Console:
    """A rich console for tables: the terminal's width, or 160 columns when piped."""
    import os
    import sys

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "0") or 0) or 160
    return Console(width=width)


def _cells(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading, text) of every figure of one result, in table order."""
    m = r["metrics"]
    out = [("procs", str(m["processes"])), ("VMAs", f"{m['vmas']:,}")]
    for c in CACHES:
        out.append((f"{c} objs / KiB",
                    f"{m['objects'].get(c, 0):,} / {_kib(m['bytes'].get(c, 0))}"))
    out += [("kernel KiB", _kib(m["kernel_bytes"])), ("peak KiB", _kib(m["peak_kernel_bytes"])),
            ("fork: VMAs PT copied", _na(m["fork_copy_vmas"])),
            ("fork: guard markers lost", _na(m["guard_markers_lost"])),
            ("THP retractable file VMAs", f"{_na(m['retractable'])}/{m['file_vmas']:,}")]
    return out


def compare_table_for(con: Console, results: list[dict[str, Any]], title: str = "") -> Table:
    """compare_table(), transposed (one column per design) when ``con`` is narrow."""
    if con.width >= WIDE:
        return compare_table(results, title)
    t = Table(title=title or None)
    t.add_column("", style="bold", no_wrap=True)
    for r in results:
        t.add_column(r["design"] + (" +g" if r.get("guardify") else ""), justify="right")
    cols = [_cells(r) for r in results]
    for i, (head, _) in enumerate(cols[0] if cols else []):
        t.add_row(head, *[c[i][1] for c in cols])
    return t


def compare_table(results: list[dict[str, Any]], title: str = "") -> Table:
    """One row per design: VMAs, objects and KiB per cache, fork and THP figures."""
    t = Table(title=title or None, show_lines=False)
    t.add_column("design", style="bold", no_wrap=True)
    t.add_column("procs", justify="right")
    t.add_column("VMAs", justify="right")
    for c in CACHES:
        t.add_column(f"{c}\nobjs / KiB", justify="right", no_wrap=True)
    t.add_column("kernel\nKiB", justify="right", style="bold")
    t.add_column("peak\nKiB", justify="right")
    t.add_column("fork: VMAs\nPT copied", justify="right")
    t.add_column("fork: guard\nmarkers lost", justify="right")
    t.add_column("THP retract-\nable file VMAs", justify="right")
    for r in results:
        m = r["metrics"]
        row = [r["design"] + (" +guardify" if r.get("guardify") else ""),
               str(m["processes"]), f"{m['vmas']:,}"]
        for c in CACHES:
            row.append(f"{m['objects'].get(c, 0):,} / {_kib(m['bytes'].get(c, 0))}")
        row += [_kib(m["kernel_bytes"]), _kib(m["peak_kernel_bytes"]), _na(m["fork_copy_vmas"]),
                _na(m["guard_markers_lost"]),
                f"{_na(m['retractable'])}/{m['file_vmas']:,}"]
        t.add_row(*row)
    return t


def guardify_table(deltas: list[dict[str, Any]]) -> Table:
    """The guardify what-if per design: VMAs saved, anon_vma/AVC added."""
    t = Table(title="guardify: PROT_NONE guard pages → MADV_GUARD_INSTALL")
    for col in ("design", "guards rewritten", "VMAs saved", "anon_vma added",
                "AVC added", "vma KiB saved", "anon_vma+AVC KiB added", "kernel KiB saved"):
        t.add_column(col, justify="left" if col == "design" else "right")
    for d in deltas:
        t.add_row(d["design"], f"{d['guards_rewritten']:,}", f"{d['vmas_saved']:,}",
                  f"{d['anon_vma_added']:,}", f"{d['anon_vma_chain_added']:,}",
                  _kib(-d["vm_area_struct_bytes_added"]),
                  _kib(d["anon_vma_bytes_added"] + d["anon_vma_chain_bytes_added"]),
                  _kib(d["kernel_bytes_saved"]))
    return t


def plot_timeline(results: list[dict[str, Any]], out: str, title: str = "") -> None:
    """Kernel memory (vm_area_struct + anon_vma + AVC + page tables) per design along the
    run, as PNG or SVG by ``out``'s suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    xlabel = "step"
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1))]
    for i, r in enumerate(results):
        pts = r["timeline"]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] / 1024 for p in pts]
        label = r["design"] + (" +guardify" if r.get("guardify") else "")
        # designs often coincide: distinct dashes and widths keep every line visible
        ax.plot(xs, ys, label=label, drawstyle="steps-post", linestyle=styles[i % len(styles)],
                linewidth=max(0.8, 2.6 - 0.4 * i))
        if r["kind"] == "trace":
            xlabel = "trace line"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("kernel memory (KiB)")
    ax.set_title(title or "VMA-layer kernel memory per design")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
