"""``vmalab diff`` and ``vmalab fuzz``: the differential oracle on the command line."""

from __future__ import annotations

import json
import sys

import click

from vmalab.cliutil import Seconds, format_options, int_option, quiet_option, resolve_format
from vmalab.errors import UserInputError

DEFAULT_OUT = "vmalab-regressions"
"""Where ``vmalab fuzz`` saves shrunk divergent programs (relative to the cwd)."""


def _need_live() -> str:
    """The matching model design, or exit 2 with the reason live runs are impossible."""
    from vmalab import live

    reason = live.live_support()
    if reason is not None:
        raise UserInputError("live", f"cannot run on this kernel: {reason}")
    return live.detect_design()


def _auto_ignore(design: str, matching: str, ignore: tuple[str, ...]) -> frozenset[str]:
    """``ignore`` plus ``gu`` when the kernel sets VM_MAYBE_GUARD but ``design`` has no
    such flag: a design compared by behaviour must not count the kernel's ``gu`` in smaps
    as a divergence."""
    from vmalab.designs import get_design
    from vmalab.mm.flags import VM_MAYBE_GUARD

    out = set(ignore)
    if (
        get_design(matching).vm_sticky & VM_MAYBE_GUARD
        and not get_design(design).vm_sticky & VM_MAYBE_GUARD
    ):
        out.add("gu")
    return frozenset(out)


def _live_failure(e: Exception) -> UserInputError:
    """A LiveTimeout/LiveError as the one-line error of the command line."""
    from vmalab import live

    kind = "timeout" if isinstance(e, live.LiveTimeout) else "live run failed"
    first = (str(e).strip().splitlines() or [""])[0].strip()
    return UserInputError("live", f"{kind}: {first[:300]}")


@click.command(
    "diff",
    help="""Run PROGRAM (a vmalab program JSON file, docs/program-format.md)
on the model and on the running kernel and report the first divergence.

\b
Examples:
  vmalab diff program.json
  vmalab diff program.json --design tagged --timeout 10 --json

\b
Exit status: 0 no divergence, 1 divergence, 2 bad input, a kernel without
guard regions, or a live run that failed or timed out.""",
    short_help="Run a program on the model and the kernel; first divergence.",
)
@click.argument("program_path", metavar="PROGRAM")
@click.option(
    "--design", default=None, help="Model design (default: the one matching this kernel)."
)
@click.option("--json", "as_json", is_flag=True, help="Print both observations as JSON.")
@click.option(
    "--timeout",
    type=Seconds(),
    default=30.0,
    show_default=True,
    help="Seconds for the live run (finite, > 0).",
)
@click.option(
    "--ignore-flag",
    "ignore",
    multiple=True,
    metavar="MNEMONIC",
    help="Leave this VmFlags mnemonic out of the comparison (repeatable), e.g. gu "
    "to compare a design without VM_MAYBE_GUARD by behaviour.",
)
def diff(
    program_path: str, design: str | None, as_json: bool, timeout: float, ignore: tuple[str, ...]
) -> None:
    """Run PROGRAM on the model and on the running kernel; report the first divergence."""
    from vmalab import oracle, program
    from vmalab.cliutil import read_text_file

    # a regular file only: a FIFO or /dev/zero would block or never end
    prog = program.loads(read_text_file(program_path, "program"), program_path)
    if design is not None:
        from vmalab import DESIGNS

        if design not in DESIGNS:
            raise UserInputError(
                "--design", f"unknown design {design!r} (one of {', '.join(DESIGNS)})"
            )
    from vmalab import live

    matching = _need_live()
    design = design or matching
    flags = _auto_ignore(design, matching, ignore)
    try:
        r = oracle.diff(prog, design, timeout=timeout, ignore_flags=flags)
    except live.LiveError as e:
        raise _live_failure(e) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "design": r.design,
                    "divergence": None if r.divergence is None else r.divergence.to_json(),
                    "kernel": r.kernel.to_json(),
                    "model": r.model.to_json(),
                },
                indent=1,
            )
        )
    click.echo(
        f"{program_path}: {prog.count_ops()} ops, model design {r.design!r}, "
        f"{r.seconds:.2f}s"
        + (f", VmFlags not compared: {' '.join(sorted(flags))}" if flags else ""),
        err=as_json,
    )
    if r.divergence is None:
        click.echo("no divergence", err=as_json)
        return
    click.echo("DIVERGENCE " + r.divergence.describe(), err=as_json)
    sys.exit(1)


@click.command(
    "fuzz",
    help=f"""Run random programs on the model and the running kernel;
shrink and save every divergence not documented in docs/divergences.md.

Shrunk programs go to --out DIR (default ./{DEFAULT_OUT}); `vmalab diff FILE` replays
one. With a design that has no VM_MAYBE_GUARD (tagged, eager, lossy, tagged-fixed) on a
kernel that has it, the smaps flag `gu` is left out of the comparison automatically.

\b
Examples:
  vmalab fuzz --programs 1000 --seed 1
  vmalab fuzz --programs 200 --design tagged --out /tmp/regr --format json

\b
Exit status: 0 no undocumented divergence, 1 some were found, 2 bad input.""",
    short_help="Random programs on the model and the kernel; save divergences.",
)
@int_option("--programs", "n", lo=1, hi=10**6, default=200, help="Number of random programs.")
@int_option(
    "--seed",
    lo=0,
    hi=2**63 - 1,
    default=0,
    help="Seed of the first program (program i uses seed+i).",
)
@click.option(
    "--design", default=None, help="Model design (default: the one matching this kernel)."
)
@click.option(
    "--out",
    "out",
    default=DEFAULT_OUT,
    show_default=True,
    metavar="DIR",
    help="Directory for shrunk divergent programs ('' to save nothing).",
)
@click.option("--regressions", "regressions", default=None, hidden=True, help="Old name of --out.")
@click.option("--max-saved", default=20, show_default=True, type=click.IntRange(0, 1000))
@format_options
@click.option(
    "--ignore-flag",
    "ignore",
    multiple=True,
    metavar="MNEMONIC",
    help="Leave this VmFlags mnemonic out of the comparison (repeatable).",
)
@click.option(
    "--thp",
    is_flag=True,
    help="Every program with the 1024-page arena and the THP scenario (huge PMDs, "
    "MADV_COLLAPSE, shmem retraction); otherwise 6 % of them.",
)
@quiet_option
def fuzz(
    n: int,
    seed: int,
    design: str | None,
    out: str,
    regressions: str | None,
    max_saved: int,
    fmt: str,
    as_json: bool,
    ignore: tuple[str, ...],
    thp: bool,
    quiet: bool,
) -> None:
    """Run random programs on the model and the kernel; save undocumented divergences."""
    import os

    from vmalab import oracle
    from vmalab.cliutil import progress

    out_fmt = resolve_format(fmt, as_json)
    if regressions is not None:
        out = regressions
    if design is not None:
        from vmalab import DESIGNS

        if design not in DESIGNS:
            raise UserInputError(
                "--design", f"unknown design {design!r} (one of {', '.join(DESIGNS)})"
            )
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise UserInputError("--out", f"{out} exists and is not a directory")
    matching = _need_live()
    design = design or matching
    flags = _auto_ignore(design, matching, ignore)
    with progress(f"fuzz ({design})", n, quiet=quiet or out_fmt == "json", unit="programs") as bar:
        s = oracle.fuzz(
            n,
            seed,
            regressions_dir=out or None,
            design=design,
            max_saved=max_saved,
            progress=bar.update,
            ignore_flags=flags,
            thp=thp,
        )
    if out_fmt == "json":
        d = s.to_json()
        d["ignored_flags"] = sorted(flags)
        click.echo(json.dumps(d, indent=1))
    else:
        click.echo(
            f"programs {s.programs} ({s.ops} ops), design {s.design!r}, {s.seconds}s"
            + (f", VmFlags not compared: {' '.join(sorted(flags))}" if flags else "")
        )
        click.echo(
            f"agreed {s.agreed}, divergences {s.divergences} "
            f"(known {sum(s.known.values())}, undocumented {len(s.unknown)}), "
            f"live errors {s.live_errors}"
        )
        kinds = {k.id: k.kind for k in oracle.KNOWN}
        for k, v in sorted(s.known.items()):
            click.echo(f"  known ({kinds.get(k, '?')}) {k}: {v}")
        for u in s.unknown:
            click.echo(
                f"  seed {u['seed']}: {u.get('shrunk', u['divergence'])}"
                + (f" -> {u['saved']}" if "saved" in u else "")
            )
    if s.unknown:
        sys.exit(1)
