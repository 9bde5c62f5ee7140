"""What a user of the command line sees: help, --format, tables that fit, fuzz --out,
--compare-maps, and option values checked before anything runs (one line, exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmalab.cli import main

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "traces")
SMALL = "thread_stacks:threads=4,stack_kib=32,guard=mprotect"
COMMANDS = ["compare", "demo", "diff", "fuzz", "replay", "soak", "sweep", "workloads"]
BOX = set(chr(c) for c in range(0x2500, 0x2580)) | {"…"}


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "80", **(env or {})})


def one_line_error(res: Any) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vmalab: "), res.output
    return lines[0]


def test_no_arguments_lists_the_commands() -> None:
    res = run()
    assert res.exit_code == 0
    assert "Commands:" in res.output and "Examples:" in res.output
    for c in COMMANDS:
        assert f"\n  {c} " in res.output, c


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str, flag: str) -> None:
    res = run(command, flag)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"Usage: vmalab {command}")
    assert "Examples:" in res.output and f"vmalab {command}" in res.output.split("Examples:")[1]


def _plain(text: str, width: int = 80) -> None:
    assert not BOX & set(text), text
    for ln in text.splitlines():
        assert len(ln) <= width, ln


def test_compare_text_fits_80_columns_and_is_not_cut() -> None:
    res = run("compare", SMALL, "--guardify", "--format", "text")
    assert res.exit_code == 0, res.output
    _plain(res.output)
    for d in ("tagged", "eager", "sticky", "lossy", "tagged-fixed"):
        assert d in res.output
    # every label and figure whole: the guardify report says what was rewritten
    assert "guardify rewrote 4 mprotect" in res.output
    assert "MADV_GUARD_INSTALL" in res.output and "step 1:" in res.output
    assert "saved" not in res.output  # signed changes, no "saved -3"
    assert "THP retractable file VMAs" in res.output


def test_text_is_the_default_when_piped_and_rich_folds() -> None:
    piped = run("compare", SMALL, "--design", "tagged,sticky")
    assert piped.exit_code == 0 and not BOX & set(piped.output)
    rich = run("compare", SMALL, "--design", "all", "--format", "rich")
    assert rich.exit_code == 0 and "…" not in rich.output
    for ln in rich.output.splitlines():
        assert len(ln) <= 80, ln


def test_json_flag_is_an_alias_of_format_json() -> None:
    a = json.loads(run("compare", SMALL, "--design", "sticky", "--json").output)
    b = json.loads(run("compare", SMALL, "--design", "sticky", "--format", "json").output)
    for x in (a, b):
        for r in x["results"]:
            r.pop("seconds")
            r["info"].pop("seconds", None)
    assert a == b
    one_line_error(run("compare", SMALL, "--json", "--format", "text"))


@pytest.mark.parametrize(
    "args",
    [
        ["workloads", "--format", "text"],
        ["replay", os.path.join(FIX, "python_guard.trace"), "--guardify", "--format", "text"],
    ],
)
def test_other_text_outputs_fit(args: list[str]) -> None:
    res = run(*args)
    assert res.exit_code == 0, res.output
    _plain(res.output)


def test_workloads_json() -> None:
    data = json.loads(run("workloads", "--json").output)
    assert {w["name"] for w in data} >= {"thread_stacks", "allocator"}
    assert all("limits" in w for w in data)


def test_fuzz_writes_to_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fuzz saves into --out (default ./vmalab-regressions), never ./tests/regressions."""
    from vmalab import oracle, oracle_cli

    seen: list[Any] = []

    def fake_fuzz(n: int, seed: int, **kw: Any) -> Any:
        seen.append(kw)
        return (
            oracle.FuzzSummary(design=kw["design"])
            if hasattr(oracle, "FuzzSummary")
            else _Summary(kw["design"])
        )

    monkeypatch.setattr(oracle, "fuzz", fake_fuzz)
    monkeypatch.setattr(oracle_cli, "_need_live", lambda: "sticky")
    monkeypatch.chdir(tmp_path)
    assert run("fuzz", "--programs", "1").exit_code == 0
    assert run("fuzz", "--programs", "1", "--out", str(tmp_path / "r")).exit_code == 0
    assert run("fuzz", "--programs", "1", "--design", "tagged").exit_code == 0
    assert [kw["regressions_dir"] for kw in seen] == [
        "vmalab-regressions",
        str(tmp_path / "r"),
        "vmalab-regressions",
    ]
    # the kernel's gu is not a divergence of a design without VM_MAYBE_GUARD
    assert [sorted(kw["ignore_flags"]) for kw in seen] == [[], [], ["gu"]]
    assert not (tmp_path / "tests").exists()
    (tmp_path / "file").write_text("x")
    one_line_error(run("fuzz", "--out", str(tmp_path / "file")))


class _Summary:
    def __init__(self, design: str) -> None:
        self.design = design
        self.programs = self.ops = self.agreed = self.divergences = self.live_errors = 0
        self.seconds = 0.0
        self.known: dict[str, int] = {}
        self.unknown: list[dict[str, Any]] = []

    def to_json(self) -> dict[str, Any]:
        return {"design": self.design}


def _model_maps(tmp_path: Path) -> tuple[str, str, str]:
    """A trace, the model's own maps of its root pid at line 696, and that file."""
    from vmalab.trace.replay import replay

    trace = os.path.join(FIX, "python_threads.trace")
    early = os.path.join(FIX, "python_threads.15144.early.maps")
    with open(early) as f:
        dump = f.read()
    r = replay(trace, "sticky", stop_at_line=696, start=(15144, 420, dump))
    out = tmp_path / "model.maps"
    out.write_text(r.process(15144).maps())
    return trace, f"15144:420:{early}", str(out)


@pytest.mark.parametrize("command", ["compare", "replay"])
def test_compare_maps_match_and_mismatch(tmp_path: Path, command: str) -> None:
    trace, start, maps = _model_maps(tmp_path)
    args = [
        command,
        trace,
        "--design",
        "sticky",
        "--start",
        start,
        "--stop-at-line",
        "696",
        "--format",
        "text",
    ]
    res = run(*args, "--compare-maps", maps)
    assert res.exit_code == 0, res.output
    assert "identical" in res.output
    lines = Path(maps).read_text().splitlines()
    a = lines[3].split()
    a[1] = "r--p" if a[1] != "r--p" else "rw-p"
    lines[3] = " ".join(a)
    bad = tmp_path / "real.maps"
    bad.write_text("\n".join(lines) + "\n")
    res = run(*args, "--compare-maps", str(bad))
    assert res.exit_code == 1, res.output
    flat = " ".join(res.output.split())
    assert "1 difference" in flat and f"{a[0]} perms: model" in flat
    data = json.loads(run(*args[:-2], "--json", "--compare-maps", str(bad)).output)
    assert data["compare_maps"]["differences"][0]["kind"] == "perms"
    one_line_error(run(*args, "--compare-maps", str(tmp_path / "nope")))
    one_line_error(run(*args, "--compare-maps", maps, "--pid", "99999"))


def test_compare_maps_needs_a_trace() -> None:
    one_line_error(run("compare", SMALL, "--compare-maps", "x"))


def test_plot_has_a_baseline(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    res = run("compare", SMALL, "--plot", str(out), "--baseline", "sticky")
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(b"\x89PNG") and "baseline sticky" in res.output
    one_line_error(
        run("compare", SMALL, "--design", "tagged", "--plot", str(out), "--baseline", "sticky")
    )


@pytest.mark.parametrize(
    "args",
    [
        ["diff", "p.json", "--timeout", "nan"],
        ["diff", "p.json", "--timeout", "inf"],
        ["diff", "p.json", "--timeout", "-1"],
        ["diff", "p.json", "--timeout", "0"],
        ["diff", "p.json", "--timeout", "1e400"],
        ["sweep", "allocator", "--workers", "0"],
        ["sweep", "allocator", "--workers", "257"],
        ["sweep", "allocator", "--workers", "99999999999"],
        ["soak", "--ops", "0"],
        ["soak", "--ops", "1000000001"],
        ["soak", "--processes", "0"],
        ["soak", "--check-every", "-1"],
        ["compare", SMALL, "--stop-at-line", "0"],
        ["replay", os.path.join(FIX, "tiny.c"), "--stop-at-line", "-1"],
        ["replay", os.path.join(FIX, "tiny.c"), "--maps", "0"],
        ["compare", "thread_stacks:threads=10001"],
        ["compare", "thread_stacks:stack_kib=99999999999"],
        ["compare", "thread_stacks:threads=10000,stack_kib=1048576"],
        ["sweep", "prefork_server:workers=10000,heap_mib=4096"],
        ["sweep", "allocator:arenas=0"],
        ["fuzz", "--programs", "0"],
    ],
)
def test_bad_option_values_are_one_line(args: list[str]) -> None:
    one_line_error(run(*args))


def test_empty_trace_is_a_located_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.strace"
    empty.write_text("")
    for cmd in ("replay", "compare", "sweep"):
        line = one_line_error(run(cmd, str(empty)))
        assert line == f"vmalab: {empty}: empty trace file", line


def test_diff_reports_a_live_failure_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmalab import live, oracle, oracle_cli

    prog = os.path.join(os.path.dirname(__file__), "regressions", "001.json")
    monkeypatch.setattr(oracle_cli, "_need_live", lambda: "sticky")
    for exc in (
        live.LiveTimeout("live run exceeded 3s; its process group was killed"),
        live.LiveError("live runner died (status -9):\nTraceback (most recent)"),
    ):

        def boom(*a: Any, exc: Exception = exc, **kw: Any) -> Any:
            raise exc

        monkeypatch.setattr(oracle, "diff", boom)
        line = one_line_error(run("diff", prog))
        assert line.startswith("vmalab: live: ")


def test_text_table_splits_into_blocks_and_keeps_every_cell() -> None:
    from vmalab.report.table import Table, transpose

    t = Table(
        ["design"] + [f"column\nnumber {i}" for i in range(8)],
        title="a wide table",
        right=set(range(1, 9)),
    )
    t.add_row("tagged-fixed", *[f"{i * 1111:,} / {i}.5" for i in range(8)])
    t.add_row("eager", *[str(i) for i in range(8)])
    text = t.to_text(40)
    _plain(text, 40)
    for i in range(8):
        assert f"number {i}" in text and f"{i * 1111:,} / {i}.5" in text
    assert text.count("tagged-fixed") == len(t._blocks(40)) > 1  # label column repeated
    tt = transpose(t)
    assert tt.columns == ["", "tagged-fixed", "eager"] and tt.rows[0][0] == "column number 0"
    assert "retractable" == transpose(Table(["d", "retract-\nable"], [["x", "1"]])).rows[0][0]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_fits_80_columns(command: str | None) -> None:
    res = run(*([command, "-h"] if command else []))
    assert res.exit_code == 0
    _plain(res.output)
