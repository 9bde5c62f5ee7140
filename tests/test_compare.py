"""vmalab compare / replay / sweep / workloads: results, JSON, plots, errors, Dask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

vmalab = pytest.importorskip("vmalab")
if not hasattr(vmalab, "Kernel"):
    pytest.skip("model not available yet", allow_module_level=True)

from vmalab.cli import main  # noqa: E402
from vmalab.trace.run import RunSpec, run_one  # noqa: E402
from vmalab.trace.sweep import specs_for, sweep  # noqa: E402

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "traces")
SMALL = "thread_stacks:threads=4,stack_kib=32"


def _strip(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """Results without their wall-clock times."""
    out = []
    for r in results:
        r = dict(r)
        r.pop("seconds", None)
        info = dict(r["info"])  # type: ignore[arg-type]
        info.pop("seconds", None)
        r["info"] = info
        out.append(r)
    return out


def test_run_one_workload_has_every_metric() -> None:
    r = run_one(RunSpec(SMALL, "sticky"))
    m = r["metrics"]
    assert r["kind"] == "workload" and r["design"] == "sticky"
    for c in ("vm_area_struct", "anon_vma", "anon_vma_chain", "pgtable"):
        assert c in m["objects"] and c in m["bytes"]
    assert m["kernel_bytes"] == sum(m["bytes"].values())
    assert m["vmas"] > 0 and r["timeline"] and r["timeline"][-1][1] == m["kernel_bytes"]


def test_cli_compare_table_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["compare", SMALL, "--design", "all"])
    assert res.exit_code == 0, res.output
    for d in vmalab.DESIGNS:
        assert d in res.output
    res = runner.invoke(main, ["compare", SMALL, "--design", "tagged,lossy", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [r["design"] for r in data["results"]] == ["tagged", "lossy"]


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_cli_compare_plot(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"p.{suffix}"
    res = CliRunner().invoke(main, ["compare", SMALL, "--plot", str(out)])
    assert res.exit_code == 0, res.output
    head = out.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in out.read_bytes()


def test_cli_compare_guardify() -> None:
    res = CliRunner().invoke(
        main, ["compare", SMALL + ",guard=mprotect", "--design", "sticky", "--guardify", "--json"]
    )
    assert res.exit_code == 0, res.output
    g = json.loads(res.output)["guardify"][0]
    # one VMA per guard saved, and more: unsplit stacks merge with their neighbours
    assert g["design"] == "sticky" and g["vmas_saved"] >= 4 and g["guards_rewritten"] == 4


def test_cli_compare_trace() -> None:
    res = CliRunner().invoke(
        main,
        ["compare", os.path.join(FIX, "python_guard.trace"), "--design", "eager,sticky", "--json"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert all(r["kind"] == "trace" for r in data["results"])


@pytest.mark.parametrize(
    "args,where",
    [
        (["compare", "no_such_thing"], "no_such_thing"),
        (["compare", SMALL, "--design", "bogus"], "--design"),
        (["compare", "jit:bogus=1"], "jit:bogus=1"),
        (["compare", SMALL, "--plot", "x.pdf"], "--plot"),
        (["compare", "TRACE", "--start", "1:2"], "--start"),
        (["replay", "TRACE", "--start", "a:b:c"], "--start"),
        (["compare", "BADTRACE"], "BADTRACE:2"),
        (["replay", "BADTRACE"], "BADTRACE:2"),
        (["sweep", "nope", "--workers", "1"], "nope"),
        (["sweep", "jit:bogus=1", "--workers", "1"], "jit:bogus=1"),
        (["sweep", "BADTRACE", "--workers", "1"], "BADTRACE:2"),
        (["sweep", SMALL, "--scheduler", "ftp://x"], "--scheduler ftp://x"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], where: str) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text("5 brk(NULL) = 0x1000\n5 mmap(NULL, 4096\n")
    trace = os.path.join(FIX, "python_guard.trace")
    args = [str(bad) if a == "BADTRACE" else trace if a == "TRACE" else a for a in args]
    where = where.replace("BADTRACE", str(bad))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vmalab: {where}"), res.output


def test_cli_compare_with_start_dump() -> None:
    with open(os.path.join(FIX, "manifest.json")) as f:
        m = json.load(f)["python_guard"]
    early = next(d for d in m["dumps"] if d["tag"] == "early")
    final = next(d for d in m["dumps"] if d["tag"] == "final" and d["pid"] == early["pid"])
    start = f"{early['pid']}:{early['line']}:{os.path.join(FIX, early['file'])}"
    res = CliRunner().invoke(
        main,
        [
            "compare",
            os.path.join(FIX, "python_guard.trace"),
            "--start",
            start,
            "--stop-at-line",
            str(final["line"]),
            "--design",
            "sticky",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.output)["results"]
    assert r["info"]["start_method"] == "maps-dump" and r["info"]["measured_at"] == "end"
    assert r["metrics"]["vmas"] >= 50


def test_cli_replay_summary_and_maps() -> None:
    trace = os.path.join(FIX, "python_guard.trace")
    with open(os.path.join(FIX, "manifest.json")) as f:
        dumps = json.load(f)["python_guard"]["dumps"]
    pid, line = dumps[0]["pid"], max(d["line"] for d in dumps if d["pid"] == dumps[0]["pid"])
    res = CliRunner().invoke(
        main, ["replay", trace, "--maps", str(pid), "--stop-at-line", str(line)]
    )
    assert res.exit_code == 0, res.output
    assert "calls/s" in res.output and "execve" in res.output and "[stack]" not in res.output
    assert "libc.so.6" in res.output
    res = CliRunner().invoke(main, ["replay", trace, "--maps", str(pid)])
    assert res.exit_code == 2 and "exited" in res.output


def test_cli_workloads_lists_all() -> None:
    res = CliRunner().invoke(main, ["workloads"])
    assert res.exit_code == 0
    for n in ("thread_stacks", "prefork_server", "allocator", "jit", "database"):
        assert n in res.output


def test_sweep_local_and_dask_agree() -> None:
    distributed = pytest.importorskip("dask.distributed")
    specs = specs_for([SMALL, "jit:regions=4,region_pages=2"], ["tagged", "lossy"])
    local = sweep(specs, workers=2)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = sweep(specs, scheduler=cluster)
    assert _strip(local) == _strip(remote)
    assert [(r["source"], r["design"]) for r in local] == [(s.source, s.design) for s in specs]


def test_cli_sweep_json() -> None:
    res = CliRunner().invoke(
        main, ["sweep", SMALL, "jit:regions=3", "--design", "tagged", "--workers", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["results"]) == 2


def test_cli_sweep_on_a_scheduler_address() -> None:
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        res = CliRunner().invoke(
            main,
            [
                "sweep",
                SMALL,
                "--design",
                "sticky,lossy",
                "--scheduler",
                cluster.scheduler_address,
                "--json",
            ],
        )
    assert res.exit_code == 0, res.output
    local = sweep(specs_for([SMALL], ["sticky", "lossy"]), workers=1)
    assert _strip(json.loads(res.output)["results"]) == json.loads(json.dumps(_strip(local)))


def test_timeline_stays_bounded() -> None:
    from vmalab.report.compare import Timeline

    k = vmalab.Kernel("tagged")
    tl = Timeline(target=10)
    for i in range(1, 5000):
        tl.tick(i, k)
    assert len(tl.points) <= 20 and tl.interval >= 256
    xs = [x for x, _ in tl.points]
    assert xs == sorted(xs)


def test_guardify_mmap_rule_on_a_trace(tmp_path: Path) -> None:
    from vmalab.trace.replay import replay

    a = 0x7F0000000000
    p = tmp_path / "g.trace"
    p.write_text(
        f"5 mmap({a:#x}, 65536, 0x3, 0x32, -1, 0) = {a:#x}\n"
        f"5 mmap({a + 65536:#x}, 4096, 0x0, 0x32, -1, 0) = {a + 65536:#x}\n"
        f"5 mprotect({a + 65536:#x}, 4096, 0x3) = 0\n"
    )
    r = replay(str(p), "sticky", guardify=True)
    assert r.guardify.mmap_rewritten == 1 and r.guardify.removed == 1
    assert [(v.start, v.end) for v in r.process(5).vmas()] == [(a, a + 69632)]
    assert not r.process(5).pagemap(a + 65536)[0] & vmalab.uapi.PM_GUARD_REGION
