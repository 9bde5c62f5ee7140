"""Rendering of comparison results: tables (text or rich) and matplotlib plots."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from vmalab.report.metrics import CACHES
from vmalab.report.table import Table, transpose


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
        out.append(
            (f"{c} objs / KiB", f"{m['objects'].get(c, 0):,} / {_kib(m['bytes'].get(c, 0))}")
        )
    out += [
        ("kernel KiB", _kib(m["kernel_bytes"])),
        ("peak KiB", _kib(m["peak_kernel_bytes"])),
        ("fork: VMAs PT copied", _na(m["fork_copy_vmas"])),
        ("fork: guard markers lost", _na(m["guard_markers_lost"])),
        ("THP retractable file VMAs", f"{_na(m['retractable'])}/{m['file_vmas']:,}"),
    ]
    return out


def compare_table_for(con: Console, results: list[dict[str, Any]], title: str = "") -> Any:
    """The comparison as a rich Table that fits ``con`` (transposed when narrow)."""
    t = compare_text_table(results, title)
    return fit(t, con.width - 3 * len(t.columns)).to_rich()


def compare_table(results: list[dict[str, Any]], title: str = "") -> Any:
    """One row per design: VMAs, objects and KiB per cache, fork and THP figures (rich)."""
    return compare_text_table(results, title).to_rich()


def compare_text_table(results: list[dict[str, Any]], title: str = "") -> Table:
    """The comparison as a :class:`~vmalab.report.table.Table`: one row per design."""
    heads = ["design", "procs", "VMAs"]
    for c in CACHES:
        heads.append(f"{c}\nobjs / KiB")
    heads += [
        "kernel\nKiB",
        "peak\nKiB",
        "fork: VMAs\nPT copied",
        "fork: guard\nmarkers lost",
        "THP retract-\nable file VMAs",
    ]
    t = Table(heads, title=title, right=set(range(1, len(heads))))
    for r in results:
        cells = _cells(r)
        t.add_row(r["design"] + (" +guardify" if r.get("guardify") else ""), *[c[1] for c in cells])
    return t


def fit(t: Table, width: int) -> Table:
    """``t`` if it fits ``width`` columns, else transposed (one column per design)."""
    return t if t.width() <= width else transpose(t)


def _signed(x: int) -> str:
    """An integer change with its sign (``+3``, ``-12``, ``0``)."""
    return f"{x:+,}" if x else "0"


def _signed_kib(b: int) -> str:
    """A change in bytes as signed KiB."""
    return f"{b / 1024:+,.1f}" if b else "0"


def guardify_text_table(deltas: list[dict[str, Any]]) -> Table:
    """The guardify what-if per design, as changes with a sign (+ more, - fewer)."""
    t = Table(
        [
            "design",
            "guards\nrewritten",
            "VMAs\nchange",
            "anon_vma\nchange",
            "AVC\nchange",
            "vm_area_struct\nKiB change",
            "anon_vma+AVC\nKiB change",
            "kernel KiB\nchange",
        ],
        title="guardify: PROT_NONE guard pages -> MADV_GUARD_INSTALL "
        "(change = guardified minus as traced)",
        right=set(range(1, 8)),
    )
    for d in deltas:
        t.add_row(
            d["design"],
            f"{d['guards_rewritten']:,}",
            _signed(-d["vmas_saved"]),
            _signed(d["anon_vma_added"]),
            _signed(d["anon_vma_chain_added"]),
            _signed_kib(d["vm_area_struct_bytes_added"]),
            _signed_kib(d["anon_vma_bytes_added"] + d["anon_vma_chain_bytes_added"]),
            _signed_kib(-d["kernel_bytes_saved"]),
        )
    return t


def guardify_table(deltas: list[dict[str, Any]]) -> Any:
    """guardify_text_table() as a rich Table."""
    return guardify_text_table(deltas).to_rich()


def guardify_report(results: list[dict[str, Any]]) -> list[str]:
    """What the rewrite did, from the first guardified result: counts and first rewrites."""
    for r in results:
        g = r.get("info", {}).get("guardify")
        if not r.get("guardify") or g is None:
            continue
        where = "line" if r["kind"] == "trace" else "step"
        out = [
            f"guardify rewrote {g['mprotect_rewritten']:,} mprotect and "
            f"{g['mmap_rewritten']:,} mmap PROT_NONE guards into MADV_GUARD_INSTALL; "
            f"{g['removed']:,} rewritten guards were taken away again (MADV_GUARD_REMOVE); "
            f"{g['left_alone']:,} PROT_NONE calls left alone (not an edge guard, or "
            "larger than 16 pages)"
        ]
        ex = g.get("examples") or []
        if ex:
            out.append(f"first rewrites ({r['design']}):")
        for line, text in ex:
            out.append(f"  {where} {line if line is not None else '?'}: {text}")
        return out
    return []


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
        ax.plot(
            xs,
            ys,
            label=label,
            drawstyle="steps-post",
            linestyle=styles[i % len(styles)],
            linewidth=max(0.8, 2.6 - 0.4 * i),
        )
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


PANELS = (
    ("anon_vma", "anon_vma"),
    ("anon_vma_chain", "anon_vma_chain"),
    ("vm_area_struct", "vm_area_struct"),
    ("pgtable", "page-table pages"),
    ("guard_markers_lost", "guard markers lost at fork"),
)
"""The object kinds plotted, one panel each: (series key, panel title)."""


def _label(r: dict[str, Any]) -> str:
    """A result's design, marked when guardified."""
    return str(r["design"]) + (" +guardify" if r.get("guardify") else "")


def _at(xs: list[int], ys: list[int], x: int) -> int:
    """The step-function value of (xs, ys) at ``x`` (the last sample at or before it)."""
    import bisect

    i = bisect.bisect_right(xs, x) - 1
    return ys[i] if i >= 0 else (ys[0] if ys else 0)


def plot_deltas(
    results: list[dict[str, Any]], out: str, *, baseline: str | None = None, title: str = ""
) -> str:
    """Per-design differences from a baseline design, one panel per object kind.

    Each panel shows, along the run, every other design's count of one kind (anon_vma,
    anon_vma_chain, vm_area_struct, page-table pages, guard markers lost at fork) minus the
    baseline design's count at the same point; a sixth panel gives every design's absolute
    kernel memory for scale. ``baseline`` is a design id (default: the first result's
    design). The legend sits below the panels, outside the data, and marks a design whose
    differences equal another's in every panel (``tagged (= sticky)``), since coinciding
    lines hide each other. Writes PNG or SVG by
    ``out``'s suffix and returns the baseline used.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = [r for r in results if r.get("series")]
    if not plain:
        raise ValueError("no timeline to plot")
    base_id = baseline or plain[0]["design"]
    base = next((r for r in plain if r["design"] == base_id and not r.get("guardify")), None)
    if base is None:
        raise ValueError(f"baseline design {base_id!r} is not among the compared designs")
    bx = base["series"]["x"]
    xlabel = "trace line" if base["kind"] == "trace" else "workload step"
    others = [r for r in plain if r is not base]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1))]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2), dpi=100, sharex=True)
    flat = list(axes.flat)
    from matplotlib.ticker import MaxNLocator

    # lines that coincide in every panel hide each other: the legend says which they are
    def _sig(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (
                k,
                tuple(r["series"]["x"]),
                tuple(
                    y - _at(bx, base["series"][k], x)
                    for x, y in zip(r["series"]["x"], r["series"][k], strict=True)
                ),
            )
            for k, _ in PANELS
        )

    zero = tuple(
        (k, tuple(base["series"]["x"]), tuple(0 for _ in base["series"]["x"])) for k, _ in PANELS
    )
    first: dict[tuple[Any, ...], str] = {zero: base_id}
    same: dict[str, str] = {}
    for r in others:
        sig = _sig(r)
        if sig in first:
            same[_label(r)] = first[sig]
        else:
            first[sig] = _label(r)
    handles: dict[str, Any] = {}
    for ax, (key, name) in zip(flat, PANELS, strict=False):
        ax.axhline(0, color="0.35", linewidth=1.2, zorder=1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        any_diff = False
        for i, r in enumerate(others):
            xs, ys = r["series"]["x"], r["series"][key]
            d = [y - _at(bx, base["series"][key], x) for x, y in zip(xs, ys, strict=True)]
            any_diff = any_diff or any(d)
            (h,) = ax.plot(
                xs,
                d,
                drawstyle="steps-post",
                color=colors[i % len(colors)],
                linestyle=styles[i % len(styles)],
                linewidth=max(1.0, 2.4 - 0.3 * i),
                label=_label(r),
                zorder=2 + i,
            )
            handles.setdefault(_label(r), h)
        if not any_diff:
            ax.set_ylim(-1, 1)
            ax.text(
                0.5,
                0.62,
                f"every design = {base_id}",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="0.3",
                fontsize=10,
            )
        ax.set_title(name, fontsize=11)
        ax.set_ylabel(f"{'markers' if key == 'guard_markers_lost' else 'objects'} - {base_id}")
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax = flat[5]
    for i, r in enumerate([base] + others):
        pts = r["timeline"]
        ax.plot(
            [p[0] for p in pts],
            [p[1] / 1024 for p in pts],
            drawstyle="steps-post",
            color="0.35" if r is base else colors[(i - 1) % len(colors)],
            linestyle="-" if r is base else styles[(i - 1) % len(styles)],
            linewidth=1.2 if r is base else max(1.0, 2.4 - 0.3 * (i - 1)),
        )
    ax.set_title("kernel memory, absolute", fontsize=11)
    ax.set_ylabel("KiB")
    ax.grid(True, alpha=0.3)
    for a in axes[1]:
        a.set_xlabel(xlabel)
    (bh,) = flat[0].plot([], [], color="0.35", linewidth=1.2)
    labels = [f"{base_id} (baseline, = 0)"] + [
        f"{h} (= {same[h]})" if h in same else h for h in handles
    ]
    # as many legend columns as fit the figure's width (about 150 characters at 10 pt)
    import math

    widest = max(len(x) for x in labels) + 6
    ncol = max(1, min(len(labels), 150 // widest))
    rows = math.ceil(len(labels) / ncol)
    fig.legend(
        [bh] + list(handles.values()),
        labels,
        loc="lower center",
        ncol=ncol,
        frameon=False,
        fontsize=10,
    )
    fig.suptitle(title or f"difference from {base_id} per object kind", fontsize=13)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * rows, 1, 0.96))
    fig.savefig(out)
    plt.close(fig)
    return base_id
