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

from vmalab.errors import UserInputError


def _designs(spec: str) -> list[str]:
    """``all`` or a comma-separated list of design ids, checked against vmalab.DESIGNS."""
    from vmalab import DESIGNS

    if spec == "all":
        return list(DESIGNS)
    out = [d.strip() for d in spec.split(",") if d.strip()]
    for d in out:
        if d not in DESIGNS:
            raise UserInputError("--design", f"unknown design {d!r} (valid: all, "
                                 + ", ".join(DESIGNS) + ")")
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
    try:
        with open(parts[2]) as f:
            dump = f.read()
    except OSError as e:
        raise UserInputError(parts[2], f"cannot read maps dump: {e.strerror}") from None
    from vmalab.trace.layout import parse_maps

    parse_maps(dump, parts[2])  # located errors before any replay starts
    return pid, line, dump


def _count_lines(path: str) -> int:
    """Lines in a file (for the progress bar), at C speed."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def _run_all(source: str, designs: list[str], *, guardify: bool,
             start: tuple[int, int, str] | None, stop_at_line: int | None, lenient: bool,
             quiet: bool, host_files: bool = False) -> list[dict[str, Any]]:
    """run_one for every design, with a rich progress bar on long traces."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vmalab.report.compare import RunSpec, run_one, source_kind
    from vmalab.trace.recording import TRACE_NAME

    kind = source_kind(source)
    total = None
    text = os.path.join(source, TRACE_NAME) if os.path.isdir(source) else source
    if kind == "trace" and os.path.getsize(text) > (1 << 20) and not quiet:
        total = _count_lines(text)
        if stop_at_line:
            total = min(total, stop_at_line)
    results = []
    for d in designs:
        specs = [RunSpec(source, d, False, start, stop_at_line, lenient, host_files=host_files)]
        if guardify:
            specs.append(RunSpec(source, d, True, start, stop_at_line, lenient,
                                 host_files=host_files))
        for spec in specs:
            if total:
                with Progress(TextColumn(f"{d}{' +guardify' if spec.guardify else ''}"),
                              BarColumn(), TextColumn("{task.completed:,}/{task.total:,} lines"),
                              TimeRemainingColumn(), transient=True,
                              console=_err_console()) as prog:
                    task = prog.add_task("replay", total=total)
                    last = [0]

                    def hook(x: int, prog: Any = prog, task: Any = task,
                             last: list[int] = last) -> None:
                        if x - last[0] >= 5000:
                            prog.update(task, completed=x)
                            last[0] = x

                    results.append(run_one(spec, hook))
            else:
                results.append(run_one(spec))
    return results


def _err_console() -> Any:
    """A rich console on stderr (progress never mixes with --json output)."""
    from rich.console import Console

    return Console(stderr=True)


def _check_out(path: str | None) -> None:
    """--plot must be .png or .svg in a writable directory."""
    if path is None:
        return
    if not path.lower().endswith((".png", ".svg")):
        raise UserInputError("--plot", "the plot file must end in .png or .svg")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UserInputError("--plot", f"directory {d} does not exist")


@click.command("compare")
@click.argument("source")
@click.option("--design", "design", default="all", show_default=True,
              help="design id, comma-separated ids, or 'all'")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--plot", "plot", default=None, metavar="OUT.png|OUT.svg",
              help="plot kernel memory per design along the run")
@click.option("--guardify", is_flag=True,
              help="also run with PROT_NONE guard pages rewritten to MADV_GUARD_INSTALL")
@click.option("--start", "start", default=None, metavar="PID:LINE:FILE",
              help="start the replay at LINE with PID holding the mappings of a maps dump")
@click.option("--stop-at-line", type=int, default=None, help="stop the replay after this line")
@click.option("--lenient", is_flag=True, help="skip and count malformed trace lines")
@click.option("--host-files", is_flag=True,
              help="let a plain strace log's execve read the binary on this machine")
def compare(source: str, design: str, as_json: bool, plot: str | None, guardify: bool,
            start: str | None, stop_at_line: int | None, lenient: bool,
            host_files: bool) -> None:
    """Compare the designs on a built-in WORKLOAD[:k=v,...], an strace log TRACE or a
    recording DIR of `vmalab record` (the per-design cost of that real program)."""
    from vmalab.report.compare import guardify_delta
    from vmalab.report.render import compare_table_for, console, guardify_table, plot_timeline

    designs = _designs(design)
    _check_out(plot)
    st = parse_start(start)
    results = _run_all(source, designs, guardify=guardify, start=st,
                       stop_at_line=stop_at_line, lenient=lenient, quiet=as_json,
                       host_files=host_files)
    plain = [r for r in results if not r["guardify"]]
    deltas = [guardify_delta(a, b) for a, b in zip(
        plain, [r for r in results if r["guardify"]], strict=False)]
    if plot:
        plot_timeline(results, plot, title=f"{source}: VMA-layer kernel memory")
    if as_json:
        out: dict[str, Any] = {"source": source, "results": results}
        if guardify:
            out["guardify"] = deltas
        click.echo(json.dumps(out, indent=1))
        return
    con = console()
    con.print(compare_table_for(con, results, title=source))
    if deltas:
        con.print(guardify_table(deltas))
    info = plain[0]["info"] if plain else {}
    if plain and plain[0]["kind"] == "trace":
        con.print(f"replay: {info['lines']:,} lines, {info['syscalls']:,} calls, "
                  f"{info['applied']:,} applied, {info['failed_skipped']:,} failed calls "
                  f"skipped, start from {info['start_method']}; unsupported: "
                  f"{info['unsupported'] or 'none'}; model rejections: "
                  f"{info['model_error_count']}; figures {info['measured_at']}")
    notes = sorted({n for r in results for n in r["metrics"]["notes"]})
    for n in notes:
        con.print(f"[dim]note: {n}[/dim]")
    if plot:
        con.print(f"plot written to {plot}")


@click.command("replay")
@click.argument("trace", type=click.Path())
@click.option("--design", default=None,
              help="design id [default: the recorded kernel's for a recording, else tagged]")
@click.option("--start", "start", default=None, metavar="PID:LINE:FILE")
@click.option("--stop-at-line", type=int, default=None)
@click.option("--lenient", is_flag=True)
@click.option("--guardify", is_flag=True)
@click.option("--maps", "maps_pid", type=int, default=None,
              help="print /proc/PID/maps of this traced pid at the stopping point")
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify", is_flag=True,
              help="compare the model with every snapshot of a recording (exit 1 on a difference)")
@click.option("--host-files", is_flag=True,
              help="let a plain strace log's execve read the binary on this machine")
def replay_cmd(trace: str, design: str | None, start: str | None, stop_at_line: int | None,
               lenient: bool, guardify: bool, maps_pid: int | None, as_json: bool,
               verify: bool, host_files: bool) -> None:
    """Replay an strace log TRACE, or a recording DIR of `vmalab record`, into the model.

    Example: vmalab replay rec/ --verify
    """
    from vmalab.trace.parse import TraceSyntaxError
    from vmalab.trace.recording import is_recording
    from vmalab.trace.replay import replay

    d = _designs(design)[0] if design is not None else None
    st = parse_start(start)
    if not os.path.isfile(trace) and not is_recording(trace):
        raise UserInputError(trace, "neither a trace file nor a recording directory")
    if verify and not is_recording(trace):
        raise UserInputError("--verify", f"{trace} is not a recording of `vmalab record`")
    try:
        r = replay(trace, d, stop_at_line=stop_at_line, start=st, lenient=lenient,
                   guardify=guardify, verify=verify, host_files=host_files)
    except TraceSyntaxError as e:
        raise UserInputError(f"{trace}:{e.lineno}", e.reason) from None
    d = r.design
    if maps_pid is not None:
        try:
            proc = r.process(maps_pid)
            text = proc.maps()
        except KeyError:
            raise UserInputError("--maps", f"pid {maps_pid} is not in the replayed part of "
                                 "the trace") from None
        except ProcessLookupError:
            raise UserInputError("--maps", f"pid {maps_pid} has exited by the stopping point "
                                 "(use --stop-at-line)") from None
    s = r.summary()
    if as_json:
        if maps_pid is not None:
            s["maps"] = text
        click.echo(json.dumps(s, indent=1))
        if verify and not all(c.matched for c in r.checkpoints):
            sys.exit(1)
        return
    click.echo(f"{trace}: {s['lines']:,} lines, {s['syscalls']:,} calls, {s['applied']:,} "
               f"applied in {s['seconds']:.2f} s ({s['syscalls'] / max(s['seconds'], 1e-9):,.0f}"
               f" calls/s), design {d}")
    click.echo(f"  tasks: {s['forks']} forks, {s['threads']} threads/vforks, {s['execs']} execs,"
               f" {s['exits']} processes exited; start from {s['start_method']}")
    for x in s["exec_layouts"]:
        click.echo(f"  execve line {x['line']} pid {x['pid']}: {x['path']} by {x['method']}"
                   f" ({x['placed_by'] or '; '.join(x['notes'])})")
    click.echo(f"  failed calls skipped: {s['failed_skipped']}, malformed: {s['malformed']}, "
               f"unsupported: {s['unsupported'] or 'none'}")
    click.echo(f"  model rejected {s['model_error_count']} calls the kernel accepted")
    for line, call, err in r.model_errors[:10]:
        click.echo(f"    line {line}: {call[:100]} -> {err}")
    if s["faults"] or r.recording is not None:
        click.echo(f"  page faults replayed: {s['faults']:,} ({s['fault_signals']} answered "
                   "with a signal)")
    for u in s["undecided"]:
        click.echo(f"  undecided: {u}")
    if verify:
        bad = [c for c in r.checkpoints if not c.matched]
        click.echo(f"  verify: {len(r.checkpoints) - len(bad)}/{len(r.checkpoints)} "
                   "snapshots match")
        for c in r.checkpoints:
            state = "match" if c.matched else f"{len(c.differences)} differences"
            click.echo(f"    pid {c.pid} {c.kind} #{c.seq} at line {c.line}: {c.vmas} VMAs, "
                       f"{state}")
            for diff in c.differences[:5]:
                click.echo(f"      {diff}")
    if maps_pid is not None:
        sys.stdout.write(text)
    if verify and not all(c.matched for c in r.checkpoints):
        sys.exit(1)


@click.command("sweep")
@click.argument("sources", nargs=-1, required=True)
@click.option("--design", default="all", show_default=True)
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="dask.distributed scheduler address (default: local processes)")
@click.option("--workers", type=int, default=2, show_default=True,
              help="local worker processes")
@click.option("--guardify", is_flag=True, help="also run each pair guardified")
@click.option("--json", "as_json", is_flag=True)
def sweep_cmd(sources: tuple[str, ...], design: str, scheduler: str | None, workers: int,
              guardify: bool, as_json: bool) -> None:
    """Run many WORKLOADs/TRACEs × designs, locally or on a Dask cluster."""
    from vmalab.report.compare import RunSpec, source_kind
    from vmalab.report.render import compare_table_for, console
    from vmalab.report.sweep import sweep
    from vmalab.trace.workloads import parse_workload_spec

    designs = _designs(design)
    for s in sources:
        if source_kind(s) == "workload":
            try:
                parse_workload_spec(s)
            except ValueError as e:
                raise UserInputError(s, str(e)) from None
    if workers < 1:
        raise UserInputError("--workers", "must be at least 1")
    specs = [RunSpec(s, d, g) for s in sources for d in designs
             for g in ((False, True) if guardify else (False,))]
    try:
        results = sweep(specs, scheduler=scheduler, workers=workers)
    except ConnectionError as e:
        raise UserInputError(f"--scheduler {scheduler}", str(e)) from None
    if as_json:
        click.echo(json.dumps({"results": results}, indent=1))
        return
    con = console()
    for s in sources:
        con.print(compare_table_for(con, [r for r in results if r["source"] == s], title=s))


@click.command("workloads")
def workloads_cmd() -> None:
    """List the built-in workloads and their parameters."""
    from vmalab.trace.workloads import WORKLOADS

    for w in WORKLOADS.values():
        params = ", ".join(f"{k}={v}" for k, v in w.defaults.items())
        click.echo(f"{w.name}: {w.summary}\n    {params}")


@click.command("record", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.option("-o", "--output", "out", required=True, metavar="DIR",
              help="the recording directory (trace.strace, manifest.json, snapshots/)")
@click.option("--force", is_flag=True, help="replace a recording already in DIR")
@click.option("--no-faults", is_flag=True,
              help="do not run perf: a syscall-only recording (also VMALAB_RECORD_NO_PERF=1)")
@click.option("--baseline", is_flag=True, help="run CMD once untraced first; print the ratio")
@click.option("--perf-mmap", default="16M", show_default=True, metavar="SIZE",
              help="perf's ring buffer per CPU (perf record -m)")
@click.option("--quiet", is_flag=True, help="no progress lines")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def record_cmd(out: str, force: bool, no_faults: bool, baseline: bool, perf_mmap: str,
               quiet: bool, command: tuple[str, ...]) -> int:
    """Run COMMAND and record its syscalls, page faults and maps snapshots into DIR.

    The exit status is COMMAND's (128+N if signal N killed it).
    """
    from vmalab.trace.record import Options, record

    return record(Options(out=out, command=list(command), force=force, faults=not no_faults,
                          baseline=baseline, perf_mmap=perf_mmap, progress=not quiet))
