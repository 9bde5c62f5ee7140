"""``vmalab diff`` and ``vmalab fuzz``: the differential oracle on the command line."""

from __future__ import annotations

import json
import sys

import click

from vmalab.errors import UserInputError


def _need_live() -> str:
    """The matching model design, or exit 2 with the reason live runs are impossible."""
    from vmalab import live

    reason = live.live_support()
    if reason is not None:
        raise UserInputError("live", f"cannot run on this kernel: {reason}")
    return live.detect_design()


@click.command("diff")
@click.argument("program_path", metavar="PROGRAM")
@click.option("--design", default=None,
              help="Model design (default: the one matching this kernel).")
@click.option("--json", "as_json", is_flag=True, help="Print both observations as JSON.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds for the live run.")
@click.option("--ignore-flag", "ignore", multiple=True, metavar="MNEMONIC",
              help="Leave this VmFlags mnemonic out of the comparison (repeatable), e.g. gu "
                   "to compare a design without VM_MAYBE_GUARD by behaviour.")
def diff(program_path: str, design: str | None, as_json: bool, timeout: float,
         ignore: tuple[str, ...]) -> None:
    """Run PROGRAM (a vmalab program JSON file) on the model and on the running kernel and
    report the first divergence. Exit status 1 if they diverge."""
    from vmalab import oracle, program

    prog = program.load(program_path)
    if design is not None:
        from vmalab import DESIGNS

        if design not in DESIGNS:
            raise UserInputError("--design",
                                 f"unknown design {design!r} (one of {', '.join(DESIGNS)})")
    matching = _need_live()
    design = design or matching
    r = oracle.diff(prog, design, timeout=timeout, ignore_flags=frozenset(ignore))
    if as_json:
        click.echo(json.dumps({"design": r.design, "divergence": None if r.divergence is None
                               else r.divergence.to_json(), "kernel": r.kernel.to_json(),
                               "model": r.model.to_json()}, indent=1))
    click.echo(f"{program_path}: {prog.count_ops()} ops, model design {r.design!r}, "
               f"{r.seconds:.2f}s", err=as_json)
    if r.divergence is None:
        click.echo("no divergence", err=as_json)
        return
    click.echo("DIVERGENCE " + r.divergence.describe(), err=as_json)
    sys.exit(1)


@click.command("fuzz")
@click.option("--programs", "n", default=200, show_default=True, type=click.IntRange(1, 10**6),
              help="Number of random programs.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Seed of the first program (program i uses seed+i).")
@click.option("--design", default=None,
              help="Model design (default: the one matching this kernel).")
@click.option("--regressions", default="tests/regressions", show_default=True,
              help="Directory for shrunk divergent programs ('' to save nothing).")
@click.option("--max-saved", default=20, show_default=True, type=click.IntRange(0, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--ignore-flag", "ignore", multiple=True, metavar="MNEMONIC",
              help="Leave this VmFlags mnemonic out of the comparison (repeatable).")
def fuzz(n: int, seed: int, design: str | None, regressions: str, max_saved: int,
         as_json: bool, ignore: tuple[str, ...]) -> None:
    """Run random programs on the model and the kernel; shrink and save every divergence
    not documented in docs/divergences.md. Exit status 1 if any was found."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from vmalab import oracle

    if design is not None:
        from vmalab import DESIGNS

        if design not in DESIGNS:
            raise UserInputError("--design",
                                 f"unknown design {design!r} (one of {', '.join(DESIGNS)})")
    matching = _need_live()
    design = design or matching
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True, disable=as_json) as bar:
        task = bar.add_task(f"fuzz ({design})", total=n)
        s = oracle.fuzz(n, seed, regressions_dir=regressions or None, design=design,
                        max_saved=max_saved, progress=lambda i: bar.update(task, completed=i),
                        ignore_flags=frozenset(ignore))
    if as_json:
        click.echo(json.dumps(s.to_json(), indent=1))
    else:
        click.echo(f"programs {s.programs} ({s.ops} ops), design {s.design!r}, {s.seconds}s")
        click.echo(f"agreed {s.agreed}, divergences {s.divergences} "
                   f"(known {sum(s.known.values())}, undocumented {len(s.unknown)}), "
                   f"live errors {s.live_errors}")
        kinds = {k.id: k.kind for k in oracle.KNOWN}
        for k, v in sorted(s.known.items()):
            click.echo(f"  known ({kinds.get(k, '?')}) {k}: {v}")
        for u in s.unknown:
            click.echo(f"  seed {u['seed']}: {u.get('shrunk', u['divergence'])}"
                       + (f" -> {u['saved']}" if "saved" in u else ""))
    if s.unknown:
        sys.exit(1)
