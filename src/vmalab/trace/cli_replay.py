"""Command-line entry points: ``vmalab replay`` (an strace log or a recording into the model)
and ``vmalab record`` (a real program into a recording).

Bad input raises :class:`vmalab.errors.UserInputError`, which the ``vmalab`` group prints
as one line ``vmalab: LOCATION: MESSAGE`` with exit status 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from vmalab.cliutil import (
    PID_MAX,
    check_trace_file,
    format_options,
    int_option,
    quiet_option,
    resolve_format,
)
from vmalab.errors import UserInputError
from vmalab.trace.cli_shared import (
    compare_maps,
    compare_maps_options,
    designs_of,
    host_files_option,
    maps_report,
    parse_start,
    progress_total,
    replay_located,
    replay_options,
    traced_maps,
    verify_report,
)

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
@replay_options
@click.option(
    "--guardify",
    is_flag=True,
    help="rewrite PROT_NONE guard pages to MADV_GUARD_INSTALL and report it",
)
@int_option(
    "--maps",
    "maps_pid",
    lo=1,
    hi=PID_MAX,
    default=None,
    help="print /proc/PID/maps of this traced pid at the stopping point",
)
@compare_maps_options
@click.option(
    "--verify",
    is_flag=True,
    help="compare the model with every snapshot of a recording (exit 1 on a difference)",
)
@host_files_option
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
    from vmalab.trace.recording import is_recording
    from vmalab.trace.run import locate_rewrites

    out_fmt = resolve_format(fmt, as_json)
    want = designs_of(design)[0] if design is not None else None
    st = parse_start(start)
    check_trace_file(trace)
    if verify and not is_recording(trace):
        raise UserInputError("--verify", f"{trace} is not a recording of `vmalab record`")
    total = None if quiet or out_fmt == "json" else progress_total(trace, stop_at_line)
    with progress(
        f"replay ({want or 'default design'})", total, quiet=quiet or not total, unit="lines"
    ) as bar:
        r = replay_located(
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
    d = r.design
    if maps_pid is not None:
        maps_text = traced_maps(r, maps_pid, "--maps", "the stopping point")
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
        items += verify_report(r.checkpoints)
    if cm is not None:
        items += maps_report(cm)
    emit(items, out_fmt, width=term_width())
    if maps_pid is not None:
        sys.stdout.write(maps_text)
    if (cm is not None and not cm["match"]) or not all(c.matched for c in r.checkpoints):
        sys.exit(1)


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
