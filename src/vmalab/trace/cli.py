"""Command-line entry points: ``vmalab compare``, ``sweep`` and ``workloads`` (``replay``
and ``record`` are in :mod:`vmalab.trace.cli_replay`).

Bad input (unknown design, unreadable file, malformed trace line, bad ``--start``) raises
:class:`vmalab.errors.UserInputError`, which the ``vmalab`` group prints as one line
``vmalab: LOCATION: MESSAGE`` with exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from vmalab.cliutil import (
    MAX_WORKERS,
    check_trace_file,
    format_options,
    int_option,
    quiet_option,
    resolve_format,
)
from vmalab.errors import UserInputError
from vmalab.trace.cli_shared import (
    compare_maps,
    compare_maps_design,
    compare_maps_options,
    designs_of,
    host_files_option,
    maps_report,
    parse_start,
    progress_total,
    replay_options,
)


def _run_all(
    source: str,
    designs: list[str],
    *,
    guardify: bool,
    start: tuple[int, int, str] | None,
    stop_at_line: int | None,
    lenient: bool,
    quiet: bool,
    host_files: bool = False,
) -> list[dict[str, Any]]:
    """run_one for every design, with a progress bar on stderr for long traces."""
    from vmalab.cliutil import progress
    from vmalab.trace.run import RunSpec, run_one, source_kind

    kind = source_kind(source)
    if kind == "trace":
        check_trace_file(source)
    total = progress_total(source, stop_at_line) if kind == "trace" else None
    results = []
    for d in designs:
        specs = [RunSpec(source, d, False, start, stop_at_line, lenient, host_files=host_files)]
        if guardify:
            specs.append(
                RunSpec(source, d, True, start, stop_at_line, lenient, host_files=host_files)
            )
        for spec in specs:
            if total:
                with progress(
                    f"{d}{' +guardify' if spec.guardify else ''}", total, quiet=quiet, unit="lines"
                ) as bar:
                    last = [0]

                    def hook(x: int, bar: Any = bar, last: list[int] = last) -> None:
                        if x - last[0] >= 5000:
                            bar.update(x)
                            last[0] = x

                    results.append(run_one(spec, hook))
            else:
                results.append(run_one(spec))
    return results


def _check_out(path: str | None) -> None:
    """--plot must be .png or .svg in a writable directory."""
    if path is None:
        return
    if not path.lower().endswith((".png", ".svg")):
        raise UserInputError("--plot", "the plot file must end in .png or .svg")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UserInputError("--plot", f"directory {d} does not exist")


_EX_COMPARE = """

\b
Examples:
  vmalab compare allocator
  vmalab compare thread_stacks:guard=mprotect --design tagged,sticky \\
      --guardify
  vmalab compare app.strace --format text --plot deltas.png --baseline sticky
  vmalab compare app.strace --compare-maps 1234.maps --stop-at-line 696

\b
Exit status: 0, or 1 when --compare-maps finds a difference; 2 for bad input."""


@click.command(
    "compare",
    help="Compare the designs on a built-in WORKLOAD[:k=v,...], an "
    "strace log TRACE or a recording DIR of `vmalab record` (the per-design cost "
    "of that real program): kernel objects and memory per design, fork and THP "
    "figures." + _EX_COMPARE,
    short_help="Compare the designs on a workload, an strace log or a recording.",
)
@click.argument("source")
@click.option(
    "--design",
    "design",
    default="all",
    show_default=True,
    help="design id, comma-separated ids, or 'all'",
)
@format_options
@click.option(
    "--plot",
    "plot",
    default=None,
    metavar="OUT.png|OUT.svg",
    help="plot each design's difference from --baseline, one panel per object kind",
)
@click.option(
    "--baseline",
    default=None,
    metavar="DESIGN",
    help="the design the plot subtracts (default: the first design)",
)
@click.option(
    "--guardify",
    is_flag=True,
    help="also run with PROT_NONE guard pages rewritten to MADV_GUARD_INSTALL",
)
@replay_options
@compare_maps_options
@host_files_option
@quiet_option
def compare(
    source: str,
    design: str,
    fmt: str,
    as_json: bool,
    plot: str | None,
    baseline: str | None,
    guardify: bool,
    start: str | None,
    stop_at_line: int | None,
    lenient: bool,
    maps_file: str | None,
    pid: int | None,
    host_files: bool,
    quiet: bool,
) -> None:
    """Compare the designs on a built-in WORKLOAD[:k=v,...] or an strace log TRACE."""
    from vmalab.report.compare import guardify_delta
    from vmalab.report.render import (
        compare_text_table,
        fit,
        guardify_report,
        guardify_text_table,
        plot_deltas,
    )
    from vmalab.report.table import emit, term_width
    from vmalab.trace.run import source_kind

    out_fmt = resolve_format(fmt, as_json)
    designs = designs_of(design)
    if baseline is not None and baseline not in designs:
        raise UserInputError(
            "--baseline", f"{baseline!r} is not one of the compared designs ({', '.join(designs)})"
        )
    _check_out(plot)
    kind = source_kind(source)
    if maps_file is not None and kind != "trace":
        raise UserInputError("--compare-maps", "needs an strace log, not a workload")
    st = parse_start(start)
    results = _run_all(
        source,
        designs,
        guardify=guardify,
        start=st,
        stop_at_line=stop_at_line,
        lenient=lenient,
        quiet=quiet or out_fmt == "json",
        host_files=host_files,
    )
    plain = [r for r in results if not r["guardify"]]
    deltas = [
        guardify_delta(a, b)
        for a, b in zip(plain, [r for r in results if r["guardify"]], strict=False)
    ]
    cm = None
    if maps_file is not None:
        cm = compare_maps(
            source,
            compare_maps_design(designs),
            maps_file,
            pid=pid,
            start=st,
            stop_at_line=stop_at_line,
            lenient=lenient,
            host_files=host_files,
        )
    used_baseline = None
    if plot:
        used_baseline = plot_deltas(
            results,
            plot,
            baseline=baseline,
            title=f"{os.path.basename(source)}: difference from "
            f"{baseline or designs[0]} per object kind",
        )
    if out_fmt == "json":
        out: dict[str, Any] = {"source": source, "results": results}
        if guardify:
            out["guardify"] = deltas
        if cm is not None:
            out["compare_maps"] = cm
        click.echo(json.dumps(out, indent=1))
        sys.exit(0 if cm is None or cm["match"] else 1)
    width = term_width()
    items: list[Any] = [fit(compare_text_table(results, title=source), width)]
    if deltas:
        items.append(fit(guardify_text_table(deltas), width))
        items += guardify_report(results)
    info = plain[0]["info"] if plain else {}
    if plain and plain[0]["kind"] == "trace":
        items.append(
            f"replay: {info['lines']:,} lines, {info['syscalls']:,} calls, "
            f"{info['applied']:,} applied, {info['failed_skipped']:,} failed calls "
            f"skipped, start from {info['start_method']}; unsupported: "
            f"{info['unsupported'] or 'none'}; model rejections: "
            f"{info['model_error_count']}; figures {info['measured_at']}"
        )
    notes = sorted({n for r in results for n in r["metrics"]["notes"]})
    items += [f"note: {n}" for n in notes]
    if plot:
        items.append(f"plot written to {plot} (baseline {used_baseline})")
    if cm is not None:
        items += maps_report(cm)
    emit(items, out_fmt, width=width)
    if cm is not None and not cm["match"]:
        sys.exit(1)


_EX_SWEEP = """

\b
Examples:
  vmalab sweep allocator jit database
  vmalab sweep thread_stacks:threads=256 app.strace --workers 4
  vmalab sweep allocator --scheduler tcp://10.0.0.1:8786 --format json"""


@click.command(
    "sweep",
    help="Run many WORKLOADs/TRACEs x designs, locally or on a Dask "
    "cluster, and print one table per source." + _EX_SWEEP,
    short_help="Run many workloads/traces x designs, locally or on Dask.",
)
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--design", default="all", show_default=True, help="design id, comma-separated ids, or 'all'"
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="dask.distributed scheduler address (default: local processes)",
)
@int_option(
    "--workers", lo=1, hi=MAX_WORKERS, default=2, help=f"local worker processes (1..{MAX_WORKERS})"
)
@click.option("--guardify", is_flag=True, help="also run each pair guardified")
@format_options
@quiet_option
def sweep_cmd(
    sources: tuple[str, ...],
    design: str,
    scheduler: str | None,
    workers: int,
    guardify: bool,
    fmt: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run many WORKLOADs/TRACEs × designs, locally or on a Dask cluster."""
    from vmalab.cliutil import progress
    from vmalab.report.render import compare_text_table, fit
    from vmalab.report.table import emit, term_width
    from vmalab.trace.run import RunSpec, source_kind
    from vmalab.trace.sweep import sweep
    from vmalab.trace.workloads import parse_workload_spec

    out_fmt = resolve_format(fmt, as_json)
    designs = designs_of(design)
    for s in sources:
        if source_kind(s) == "workload":
            try:
                parse_workload_spec(s)
            except ValueError as e:
                raise UserInputError(s, str(e)) from None
        else:
            check_trace_file(s)
    specs = [
        RunSpec(s, d, g)
        for s in sources
        for d in designs
        for g in ((False, True) if guardify else (False,))
    ]
    with progress("sweep", len(specs), quiet=quiet or out_fmt == "json", unit="runs") as bar:
        try:
            results = sweep(specs, scheduler=scheduler, workers=workers, done=bar.update)
        except ConnectionError as e:
            raise UserInputError(f"--scheduler {scheduler}", str(e)) from None
    if out_fmt == "json":
        click.echo(json.dumps({"results": results}, indent=1))
        return
    width = term_width()
    emit(
        [
            fit(compare_text_table([r for r in results if r["source"] == s], title=s), width)
            for s in sources
        ],
        out_fmt,
        width=width,
    )


@click.command(
    "workloads",
    help="List the built-in workloads and their parameters (use "
    "them as NAME:key=value,... in compare and sweep).\n\n\b\nExamples:\n"
    "  vmalab workloads\n  vmalab workloads --format json",
    short_help="List the built-in workloads and their parameters.",
)
@format_options
def workloads_cmd(fmt: str, as_json: bool) -> None:
    """List the built-in workloads and their parameters."""
    import textwrap

    from vmalab.report.table import Table, emit, term_width
    from vmalab.trace.workloads import WORKLOADS, param_limit

    out_fmt = resolve_format(fmt, as_json)
    if out_fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "name": w.name,
                        "summary": w.summary,
                        "defaults": w.defaults,
                        "limits": {
                            k: param_limit(k)
                            for k, v in w.defaults.items()
                            if isinstance(v, int) and not isinstance(v, bool)
                        },
                    }
                    for w in WORKLOADS.values()
                ],
                indent=1,
            )
        )
        return
    width = term_width()
    if out_fmt == "rich":
        t = Table(["workload", "what it models", "parameters (defaults)"])
        for w in WORKLOADS.values():
            t.add_row(w.name, w.summary, ", ".join(f"{k}={v}" for k, v in w.defaults.items()))
        emit([t], "rich", width=width)
        return
    for w in WORKLOADS.values():
        params = ", ".join(f"{k}={v}" for k, v in w.defaults.items())
        click.echo(
            textwrap.fill(
                f"{w.name}: {w.summary}",
                width=max(40, width),
                subsequent_indent="    ",
                break_long_words=False,
            )
        )
        click.echo(
            textwrap.fill(
                params,
                width=max(40, width),
                initial_indent="    ",
                subsequent_indent="    ",
                break_long_words=False,
            )
        )
