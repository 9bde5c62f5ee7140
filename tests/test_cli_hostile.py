"""Hostile command lines and files: always one line on stderr and exit 2, never a traceback.

Hypothesis builds argument lists for the subcommands that read user input (compare,
replay, diff, demo, workloads) from a vocabulary of hostile tokens: unknown options and
designs, huge and negative numbers, 64-bit overflows, malformed PID:LINE:FILE, binary
garbage files, truncated strace lines and JSON. Values that would make a valid run long
are kept small, so every example finishes quickly.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab.cli import main

_TMP = tempfile.mkdtemp(prefix="vmalab-hostile-")
atexit.register(shutil.rmtree, _TMP, True)  # leave nothing behind in /tmp


def _file(name: str, data: bytes) -> str:
    path = os.path.join(_TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


FILES = [
    _file("garbage.bin", bytes(range(256)) * 4),
    _file("truncated.strace", b"100 1700000000.000001 mmap(NULL, 4096, PROT_READ|PROT_WR"),
    _file("deep.json", b"[" * 5000 + b"]" * 5000),
    _file(
        "overflow.json",
        b'{"format": "vmalab-program", "version": 1, "arena_pages": 8, '
        b'"ops": [{"op": "mmap", "addr": 18446744073709551615, "len": -1}]}',
    ),
    _file(
        "unknown.strace",
        b"100 1700000000.000001 frobnicate(1, 2) = 0\n"
        b"100 1700000000.000002 mmap(0x1000, -4096, 99, 0, -1, 0) = 0x1000\n",
    ),
    _file("empty.json", b""),
    os.path.join(_TMP, "does-not-exist"),
]
TOKENS = st.sampled_from(
    [
        "--design",
        "all",
        "tagged",
        "nope",
        "--json",
        "--start",
        "1:2",
        "a:b:c",
        "-1:-1:x",
        "--stop-at-line",
        "-5",
        "99999999999999999999999",
        "--lenient",
        "--plot",
        "/nonexistent/x.png",
        "thread_stacks:threads=-1",
        "thread_stacks:threads=2",
        "allocator:arenas=0",
        "jit:regions=x",
        "database:tables=1e99",
        "nosuch:threads=1",
        "--programs",
        "0",
        "--",
        "\x00",
        "é",
        "--unknown-option",
        # options of the command-line rework (issue 17) and the checked ranges (issue 15)
        "--format",
        "text",
        "json",
        "rich",
        "--compare-maps",
        "--pid",
        "0",
        "--timeout",
        "nan",
        "inf",
        "-1",
        "1e400",
        "--workers",
        "--baseline",
        "sticky",
        "--out",
        "-h",
        "--quiet",
        "--guardify",
        "--maps",
    ]
    + FILES
)
COMMANDS = st.sampled_from(["compare", "replay", "diff", "demo", "workloads"])


EXAMPLES = int(os.environ.get("VMALAB_HOSTILE_EXAMPLES", "120"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(COMMANDS, st.lists(TOKENS, max_size=5))
def test_hostile_arguments_never_raise(command: str, args: list[str]) -> None:
    res = CliRunner().invoke(main, [command, *args])
    if res.exit_code == 0:
        return
    # A failure is a clean exit: no exception escaped, status 2, one line naming the place.
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("vmalab: "), res.output
    assert "Traceback" not in res.output


def test_usage_errors_are_one_line_exit_2() -> None:
    for argv in (["nosuchcmd"], ["demo", "--design", "x"], ["compare"]):
        res = CliRunner().invoke(main, argv)
        assert res.exit_code == 2
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("vmalab: "), res.output


def _outside(lo: float, hi: float) -> st.SearchStrategy[str]:
    """Numbers (as the shell passes them) that a [lo, hi] option must refuse."""
    ints = st.integers().filter(lambda x: not lo <= x <= hi).map(str)
    floats = (
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not lo <= x <= hi).map(repr)
    )
    words = st.sampled_from(
        ["nan", "inf", "-inf", "NaN", "1e999", "0x10", "", " ", "1_0", "９", "1.5"]
    )
    return st.one_of(ints, floats, words)


# option -> (argv before the value, accepted range); every command here would start a run
# that takes long with a valid value, so only refused values are generated
RANGED = {
    "--timeout": (["diff", "p.json", "--timeout"], (1e-300, 86400.0)),
    "--workers": (["sweep", "allocator", "--workers"], (1, 256)),
    "--ops": (["soak", "--ops"], (1, 10**9)),
    "--check-every": (["soak", "--check-every"], (1, 10**9)),
    "--processes": (["soak", "--processes"], (1, 1024)),
    "--programs": (["fuzz", "--programs"], (1, 10**6)),
    "--stop-at-line": (["compare", "allocator", "--stop-at-line"], (1, 2**63 - 1)),
    "--pid": (["compare", "allocator", "--pid"], (1, 2**22)),
}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(RANGED)), st.data())
def test_out_of_range_option_values_are_refused(option: str, data: st.DataObject) -> None:
    argv, (lo, hi) = RANGED[option]
    value = data.draw(_outside(lo, hi))
    if option == "--timeout":
        try:  # a float-looking word inside the range is a valid timeout
            x = float(value)
            if lo <= x <= hi:
                return
        except ValueError:
            pass
    else:
        try:  # click's int() reads "1_0", " 5" and "９" as numbers: inside the range, valid
            if lo <= int(value) <= hi:
                return
        except ValueError:
            pass
    res = CliRunner().invoke(main, [*argv, value])
    assert res.exit_code == 2, (argv, value, res.output)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vmalab: "), res.output
