"""Command-line entry points: ``vmalab compare``, ``replay``, ``sweep`` and ``workloads``.

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
    MAX_LINE,
    MAX_WORKERS,
    PID_MAX,
    check_trace_file,
    format_options,
    quiet_option,
    resolve_format,
    trace_file,
)
from vmalab.errors import UserInputError


def _designs(spec: str) -> list[str]:
    """``all`` or a comma-separated list of design ids, checked against vmalab.DESIGNS."""
    from vmalab.designs import DESIGNS

    if spec == "all":
        return list(DESIGNS)
    out = [d.strip() for d in spec.split(",") if d.strip()]
    for d in out:
        if d not in DESIGNS:
            raise UserInputError(
                "--design", f"unknown design {d!r} (valid: all, " + ", ".join(DESIGNS) + ")"
            )
    if not out:
        raise UserInputError("--design", "no design given")
    return out


def parse_start(spec: str | None) -> tuple[int, int, str] | None:
    """``PID:LINE:FILE`` → ``(pid, line, dump text)`` for ``replay(start=...)``."""
    if spec is None:
        return None
    parts = spec.split(":", 2)
    if len(parts) != 3:
        raise UserInputError("--start", "expected PID:LINE:FILE")
    try:
        pid, line = int(parts[0]), int(parts[1])
    except ValueError:
        raise UserInputError("--start", "PID and LINE must be integers") from None
    if pid < 0 or line < 0:
        raise UserInputError("--start", "PID and LINE must not be negative")
    from vmalab.cliutil import read_text_file
    from vmalab.trace.layout import parse_maps

    dump = read_text_file(parts[2], "maps dump")  # regular files only (no FIFO hang)

    parse_maps(dump, parts[2])  # located errors before any replay starts
    return pid, line, dump


def _count_lines(path: str) -> int:
    """Lines in a file (for the progress bar), at C speed."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


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
    total = None
    if kind == "trace" and os.path.getsize(trace_file(source)) > (1 << 20):
        total = _count_lines(trace_file(source))
        if stop_at_line:
            total = min(total, stop_at_line)
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


def _root_pid(trace: str) -> int:
    """The pid of the trace's first line (the traced root process)."""
    with open(trace_file(trace), "rb") as f:
        for raw in f:
            head = raw.split(None, 1)
            if head and head[0].isdigit():
                return int(head[0])
    raise UserInputError(trace, "no line starts with a pid (not an strace -f log)")


def _exit_line(trace: str, pid: int) -> int | None:
    """The first line where ``pid`` ends: its ``exit_group(`` call or its ``+++ exited``/
    ``+++ killed`` record, if any."""
    prefix = f"{pid} ".encode()
    with open(trace_file(trace), "rb") as f:
        for no, raw in enumerate(f, 1):
            if raw.startswith(prefix) and (
                b" exit_group(" in raw
                or (b"+++ " in raw and (b"exited" in raw or b"killed" in raw))
            ):
                return no
    return None


def compare_maps(
    trace: str,
    design: str,
    real_path: str,
    *,
    pid: int | None,
    start: tuple[int, int, str] | None,
    stop_at_line: int | None,
    lenient: bool,
    host_files: bool = False,
) -> dict[str, Any]:
    """Replay ``trace`` under ``design`` and diff ``pid``'s final maps with a real dump.

    The model's maps are taken at ``stop_at_line``, else just before ``pid`` exits, else
    at the end of the trace. ``pid`` defaults to the ``--start`` pid or the traced root
    process. Returns a JSON-ready dict (``differences`` as from
    :func:`vmalab.trace.mapsdiff.diff_maps`).
    """
    from dataclasses import asdict

    from vmalab.cliutil import read_text_file
    from vmalab.trace.mapsdiff import diff_maps
    from vmalab.trace.parse import TraceSyntaxError
    from vmalab.trace.replay import replay

    real = read_text_file(real_path, "maps dump")
    if pid is None:
        pid = start[0] if start else _root_pid(trace)
    stop = stop_at_line
    if stop is None:
        ex = _exit_line(trace, pid)
        stop = ex - 1 if ex else None
    try:
        r = replay(
            trace, design, stop_at_line=stop, start=start, lenient=lenient, host_files=host_files
        )
    except TraceSyntaxError as e:
        raise UserInputError(f"{trace}:{e.lineno}", e.reason) from None
    except OSError as e:
        raise UserInputError(trace, f"cannot replay: {e.strerror or e}") from None
    try:
        proc = r.process(pid)
        smaps = "VmFlags:" in real
        model = proc.smaps() if smaps else proc.maps()
    except KeyError:
        raise UserInputError(
            "--pid", f"pid {pid} is not in the replayed part of the trace"
        ) from None
    except ProcessLookupError:
        raise UserInputError(
            "--pid", f"pid {pid} has exited by line {stop or r.lines} (use --stop-at-line)"
        ) from None
    diffs = diff_maps(model, real, real_source=real_path)
    return {
        "file": real_path,
        "pid": pid,
        "design": design,
        "line": stop or r.lines,
        "match": not diffs,
        "differences": [asdict(d) for d in diffs],
        "describe": [d.describe() for d in diffs],
    }


def maps_report(cm: dict[str, Any], limit: int = 20) -> list[str]:
    """The --compare-maps result as lines: a verdict and the first differences."""
    head = (
        f"maps of pid {cm['pid']} at line {cm['line']:,} (model, design {cm['design']}) "
        f"vs {cm['file']}: "
    )
    if cm["match"]:
        return [head + "identical"]
    n = len(cm["describe"])
    out = [
        head + f"{n} difference{'s' if n != 1 else ''}" + (f" (first {limit})" if n > limit else "")
    ]
    out += ["  " + d for d in cm["describe"][:limit]]
    return out


def _compare_maps_design(designs: list[str]) -> str:
    """The design whose maps --compare-maps checks: the running kernel's (sticky) if
    compared, else the first."""
    return "sticky" if "sticky" in designs else designs[0]


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
@click.option(
    "--start",
    "start",
    default=None,
    metavar="PID:LINE:FILE",
    help="start the replay at LINE with PID holding the mappings of a maps dump",
)
@click.option(
    "--stop-at-line",
    type=click.IntRange(1, MAX_LINE),
    default=None,
    help="stop the replay after this line (1-based)",
)
@click.option("--lenient", is_flag=True, help="skip and count malformed trace lines")
@click.option(
    "--compare-maps",
    "maps_file",
    default=None,
    metavar="FILE",
    help="compare the replay's final maps of --pid with this real maps/smaps dump",
)
@click.option(
    "--pid",
    type=click.IntRange(1, PID_MAX),
    default=None,
    help="traced pid for --compare-maps (default: the traced root process)",
)
@click.option(
    "--host-files",
    is_flag=True,
    help="let a plain strace log's execve read the binary on this machine",
)
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
    designs = _designs(design)
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
            _compare_maps_design(designs),
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


_EX_REPLAY = """

\b
Examples:
  vmalab replay app.strace
  vmalab replay app.strace --design sticky --stop-at-line 696 --maps 1234
  vmalab replay app.strace --guardify --format text
  vmalab replay app.strace --compare-maps app.1234.final.maps
  vmalab replay rec/ --verify              # a recording of `vmalab record`

\b
Exit status: 0; 1 when --compare-maps or --verify finds a difference;
2 for bad input."""


@click.command(
    "replay",
    help="Replay an strace log TRACE (strace -f -ttt), or a recording "
    "DIR of `vmalab record`, into the model and summarise it." + _EX_REPLAY,
    short_help="Replay an strace log or a recording into the model.",
)
@click.argument("trace", type=click.Path())
@click.option(
    "--design",
    default=None,
    help="design id [default: the recorded kernel's for a recording, else tagged]",
)
@click.option(
    "--start",
    "start",
    default=None,
    metavar="PID:LINE:FILE",
    help="start at LINE with PID holding the mappings of a maps dump",
)
@click.option(
    "--stop-at-line",
    type=click.IntRange(1, MAX_LINE),
    default=None,
    help="stop after this line (1-based)",
)
@click.option("--lenient", is_flag=True, help="skip and count malformed trace lines")
@click.option(
    "--guardify",
    is_flag=True,
    help="rewrite PROT_NONE guard pages to MADV_GUARD_INSTALL and report it",
)
@click.option(
    "--maps",
    "maps_pid",
    type=click.IntRange(1, PID_MAX),
    default=None,
    help="print /proc/PID/maps of this traced pid at the stopping point",
)
@click.option(
    "--compare-maps",
    "maps_file",
    default=None,
    metavar="FILE",
    help="compare the final maps of --pid with this real maps/smaps dump",
)
@click.option(
    "--pid",
    type=click.IntRange(1, PID_MAX),
    default=None,
    help="traced pid for --compare-maps (default: the traced root process)",
)
@click.option(
    "--verify",
    is_flag=True,
    help="compare the model with every snapshot of a recording (exit 1 on a difference)",
)
@click.option(
    "--host-files",
    is_flag=True,
    help="let a plain strace log's execve read the binary on this machine",
)
@format_options
@quiet_option
def replay_cmd(
    trace: str,
    design: str | None,
    start: str | None,
    stop_at_line: int | None,
    lenient: bool,
    guardify: bool,
    maps_pid: int | None,
    maps_file: str | None,
    pid: int | None,
    verify: bool,
    host_files: bool,
    fmt: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Replay an strace log TRACE, or a recording DIR, into the model and summarise it."""
    from vmalab.cliutil import progress
    from vmalab.report.table import Table, emit, term_width
    from vmalab.trace.parse import TraceSyntaxError
    from vmalab.trace.recording import is_recording
    from vmalab.trace.replay import replay
    from vmalab.trace.run import locate_rewrites

    out_fmt = resolve_format(fmt, as_json)
    want = _designs(design)[0] if design is not None else None
    st = parse_start(start)
    check_trace_file(trace)
    if verify and not is_recording(trace):
        raise UserInputError("--verify", f"{trace} is not a recording of `vmalab record`")
    total = None
    if os.path.getsize(trace_file(trace)) > (1 << 20) and not quiet and out_fmt != "json":
        total = _count_lines(trace_file(trace))
        if stop_at_line:
            total = min(total, stop_at_line)
    with progress(
        f"replay ({want or 'default design'})", total, quiet=quiet or not total, unit="lines"
    ) as bar:
        try:
            r = replay(
                trace,
                want,
                stop_at_line=stop_at_line,
                start=st,
                lenient=lenient,
                guardify=guardify,
                observer=(lambda x, _k: bar.update(x)) if total else None,
                sample_every=2000 if total else 0,
                verify=verify,
                host_files=host_files,
            )
        except TraceSyntaxError as e:
            raise UserInputError(f"{trace}:{e.lineno}", e.reason) from None
        except OSError as e:
            raise UserInputError(trace, f"cannot replay: {e.strerror or e}") from None
    d = r.design
    if maps_pid is not None:
        try:
            proc = r.process(maps_pid)
            maps_text = proc.maps()
        except KeyError:
            raise UserInputError(
                "--maps", f"pid {maps_pid} is not in the replayed part of the trace"
            ) from None
        except ProcessLookupError:
            raise UserInputError(
                "--maps", f"pid {maps_pid} has exited by the stopping point (use --stop-at-line)"
            ) from None
    cm = None
    if maps_file is not None:
        cm = compare_maps(
            trace,
            d,
            maps_file,
            pid=pid,
            start=st,
            stop_at_line=stop_at_line,
            lenient=lenient,
            host_files=host_files,
        )
    s = r.summary()
    g = None
    if r.guardify is not None:
        g = r.guardify.to_dict()
        locate_rewrites(trace, g["examples"], st[1] if st else 0)
    if out_fmt == "json":
        if maps_pid is not None:
            s["maps"] = maps_text
        if g is not None:
            s["guardify"] = g
        if cm is not None:
            s["compare_maps"] = cm
        click.echo(json.dumps(s, indent=1))
        verified = all(c.matched for c in r.checkpoints)
        sys.exit(0 if (cm is None or cm["match"]) and verified else 1)
    t = Table(
        ["", "count"],
        title=f"{trace}: replayed under design {d} in "
        f"{s['seconds']:.2f} s ({s['syscalls'] / max(s['seconds'], 1e-9):,.0f} calls/s)",
        right={1},
    )
    for label, key in (
        ("lines", "lines"),
        ("system calls", "syscalls"),
        ("applied to the model", "applied"),
        ("failed calls skipped", "failed_skipped"),
        ("malformed lines", "malformed"),
        ("forks", "forks"),
        ("threads and vforks", "threads"),
        ("execs", "execs"),
        ("processes exited", "exits"),
        ("calls the model rejected (kernel accepted)", "model_error_count"),
        ("page faults replayed", "faults"),
        ("faults answered with a signal", "fault_signals"),
    ):
        t.add_row(label, f"{s[key]:,}")
    items: list[Any] = [
        t,
        f"start from {s['start_method']}; unsupported: {s['unsupported'] or 'none'}",
    ]
    for x in s["exec_layouts"]:
        items.append(
            f"execve line {x['line']} pid {x['pid']}: {x['path']} by {x['method']}"
            f" ({x['placed_by'] or '; '.join(x['notes'])})"
        )
    for line, call, err in r.model_errors[:10]:
        items.append(f"model rejected line {line}: {call[:100]} -> {err}")
    if g is not None:
        from vmalab.report.render import guardify_report

        items += guardify_report(
            [{"guardify": True, "kind": "trace", "design": d, "info": {"guardify": g}}]
        )
    items += [f"undecided: {u}" for u in s["undecided"]]
    if verify:
        items += _verify_report(r.checkpoints)
    if cm is not None:
        items += maps_report(cm)
    emit(items, out_fmt, width=term_width())
    if maps_pid is not None:
        sys.stdout.write(maps_text)
    if (cm is not None and not cm["match"]) or not all(c.matched for c in r.checkpoints):
        sys.exit(1)


def _verify_report(checkpoints: list[Any], limit: int = 5) -> list[str]:
    """``--verify``: a verdict, then a line per snapshot and its first differing VMAs."""
    bad = [c for c in checkpoints if not c.matched]
    out = [f"verify: {len(checkpoints) - len(bad)}/{len(checkpoints)} snapshots match"]
    for c in checkpoints:
        state = "match" if c.matched else f"{len(c.differences)} differences"
        out.append(f"  pid {c.pid} {c.kind} #{c.seq} at line {c.line}: {c.vmas} VMAs, {state}")
        out += [f"    {diff}" for diff in c.differences[:limit]]
    return out


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
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=2,
    show_default=True,
    help=f"local worker processes (1..{MAX_WORKERS})",
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
    designs = _designs(design)
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


@click.command(
    "record", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    metavar="DIR",
    help="the recording directory (trace.strace, manifest.json, snapshots/)",
)
@click.option("--force", is_flag=True, help="replace a recording already in DIR")
@click.option(
    "--no-faults",
    is_flag=True,
    help="do not run perf: a syscall-only recording (also VMALAB_RECORD_NO_PERF=1)",
)
@click.option("--baseline", is_flag=True, help="run CMD once untraced first; print the ratio")
@click.option(
    "--perf-mmap",
    default="16M",
    show_default=True,
    metavar="SIZE",
    help="perf's ring buffer per CPU (perf record -m)",
)
@click.option("--quiet", is_flag=True, help="no progress lines")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def record_cmd(
    out: str,
    force: bool,
    no_faults: bool,
    baseline: bool,
    perf_mmap: str,
    quiet: bool,
    command: tuple[str, ...],
) -> int:
    """Run COMMAND and record its syscalls, page faults and maps snapshots into DIR.

    The exit status is COMMAND's (128+N if signal N killed it).
    """
    from vmalab.trace.record import Options, record

    return record(
        Options(
            out=out,
            command=list(command),
            force=force,
            faults=not no_faults,
            baseline=baseline,
            perf_mmap=perf_mmap,
            progress=not quiet,
        )
    )
