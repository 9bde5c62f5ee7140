"""The ``vmalab`` command line.

Every subcommand turns bad input into a one-line message naming its location and exit
status 2 (see ``vmalab.errors.UserInputError``), and a breach of one of vmalab's own
resource budgets into ``vmalab: resource limit: ...`` and exit status 3
(``vmalab.errors.ResourceLimitError``); no traceback reaches the user. ``vmalab``
alone prints the help (the list of commands) on stdout and exits 0, as ``vmalab --help``
does; ``-h`` and ``--help`` work on every command (docs/cli.md).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from vmalab.errors import EXIT_RESOURCE_LIMIT, ResourceLimitError, UserInputError


class _Group(click.Group):
    """A click group whose every input error is one line on stderr and exit status 2.

    UserInputError carries its own location; click's usage errors (a bad option value,
    an unknown command) are located by the command path and, where click knows it, the
    parameter.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserInputError as e:
            click.echo(f"vmalab: {e.location}: {e.message}", err=True)
            sys.exit(2)
        except ResourceLimitError as e:
            # a budget of vmalab's own (docs/hostile-input.md) stopped the run
            click.echo(f"vmalab: resource limit: {' '.join(str(e).split())}", err=True)
            sys.exit(EXIT_RESOURCE_LIMIT)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        argv = kwargs.get("args", args[0] if args else None)
        for i, a in enumerate(argv if argv is not None else sys.argv[1:], 1):
            # execve() cannot pass one, but an embedding caller can (click's Path would
            # raise ValueError on it).
            if "\x00" in a:
                click.echo(f"vmalab: argument {i}: contains a NUL byte", err=True)
                sys.exit(2)
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            # `vmalab` alone: the full help with the command list, not a usage error
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "vmalab"
            msg = " ".join(e.format_message().split())
            click.echo(f"vmalab: {where}: {msg}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"vmalab: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("vmalab: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


_EPILOG = """\b
Examples:
  vmalab compare allocator                 every design on a built-in workload
  vmalab compare app.strace --format text  an strace -f log, as plain text
  vmalab diff program.json                 model vs. the running kernel
  vmalab COMMAND -h                        a command's options and examples

Exit status: 0 success, 1 a divergence/difference/violation was found, 2 bad input,
3 a resource budget stopped the run (--budget, docs/hostile-input.md).
Docs: docs/index.md (docs/cli.md for the command line)."""


@click.group(
    "vmalab", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG
)
@click.version_option(package_name="vmalab")
@click.option(
    "--budget",
    metavar="NAME=N,...",
    help="the model's resource budget, as $VMALAB_BUDGET (pages, stored_bytes, "
    "vmas, pgtables, seconds; 'none' or 'unlimited'); exit 3 on a breach",
)
def main(budget: str | None) -> None:
    """vmalab: an executable model of the Linux VMA layer and its guard-region designs."""
    if budget is not None:
        import os

        from vmalab.budget import ENV, Budget

        os.environ[ENV] = budget  # every Kernel of this command reads it
        try:
            Budget.from_env()  # a bad spec is a located input error now, not later
        except UserInputError as e:
            raise UserInputError("--budget", e.message) from None


# Subcommands live next to the code they drive; the command line is the top floor of the
# house, so it imports them plainly (docs/architecture.md) and adds each with one line.
from vmalab.demo import demo  # noqa: E402
from vmalab.oracle_cli import diff, fuzz  # noqa: E402
from vmalab.soak import soak  # noqa: E402
from vmalab.trace.cli import compare, sweep_cmd, workloads_cmd  # noqa: E402
from vmalab.trace.cli_replay import record_cmd, replay_cmd  # noqa: E402

for _cmd in (demo, soak, diff, fuzz, compare, replay_cmd, sweep_cmd, workloads_cmd, record_cmd):
    main.add_command(_cmd)


if __name__ == "__main__":
    main()
