"""Crafted hostile inputs: each gets a clean error in bounded time and memory, the model
stays consistent, and nothing is left behind (docs/hostile-input.md).

Budgets are small here so that every case is fast; the figures for the default budgets
are in benchmarks/hostile_ranges.py. No test is timed: "bounded" is checked by the
budgets tripping, not by a stopwatch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab import Kernel, uapi
from vmalab import program as P
from vmalab.budget import Budget
from vmalab.errors import (
    EXIT_RESOURCE_LIMIT,
    ResourceLimitError,
    SegmentationFault,
    UserInputError,
)

ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_NORESERVE
RW = uapi.PROT_READ | uapi.PROT_WRITE
HUGE = 1 << 36


def _raises_limit(k: Kernel, fn: Any, resource: str) -> ResourceLimitError:
    with pytest.raises(ResourceLimitError) as ei:
        fn()
    assert ei.value.resource == resource
    assert "\n" not in str(ei.value)
    assert not isinstance(ei.value, OSError)  # never mistaken for a kernel errno
    k.check()
    assert k.budget.breach is None
    return ei.value


# --- the model's budgets -----------------------------------------------------------------


@pytest.mark.parametrize("advice", [uapi.MADV_POPULATE_WRITE, "mlock", "map_populate"])
def test_huge_populate_stops_at_the_pages_budget(advice: Any) -> None:
    k = Kernel("tagged", budget=Budget(pages=256))
    p = k.spawn()
    a = p.mmap(0, HUGE, RW, ANON, -1, 0)
    if advice == "mlock":
        fn: Any = lambda: p.mlock(a, HUGE)  # noqa: E731
    elif advice == "map_populate":
        p.munmap(a, HUGE)
        fn = lambda: p.mmap(a, HUGE, RW, ANON | uapi.MAP_POPULATE | uapi.MAP_FIXED, -1, 0)  # noqa: E731
    else:
        fn = lambda: p.madvise(a, HUGE, advice)  # noqa: E731
    _raises_limit(k, fn, "pages")
    assert k.phys.nr_anon == 256
    # The model goes on working after a breach (the budget is still full, so populating
    # more fails again, but unmapping frees).
    p.munmap(a, HUGE)
    k.check()
    assert k.phys.nr_anon == 0


@pytest.mark.parametrize("advice", [uapi.MADV_POPULATE_READ, uapi.MADV_GUARD_INSTALL])
def test_huge_zero_page_and_guard_ranges_stop_at_the_pgtables_budget(advice: int) -> None:
    k = Kernel("tagged", budget=Budget(pgtables=32))
    p = k.spawn()
    a = p.mmap(0, HUGE, RW, ANON, -1, 0)
    _raises_limit(k, lambda: p.madvise(a, HUGE, advice), "pgtables")
    assert k.slab()["pgtable"].active <= 32


def test_sparse_ranges_cost_nothing_and_trip_nothing() -> None:
    """Where the kernel's work does not depend on pages (no page tables present), the
    model's does not either: these finish under a budget of a few page tables."""
    k = Kernel("tagged", budget=Budget(pgtables=8, pages=8))
    p = k.spawn()
    a = p.mmap(0, HUGE, RW, ANON, -1, 0)
    p.mlock2(a, HUGE, uapi.MLOCK_ONFAULT)
    p.munlock(a, HUGE)
    p.madvise(a, HUGE, uapi.MADV_GUARD_REMOVE)
    p.madvise(a, HUGE, uapi.MADV_DONTNEED)
    p.write(a + HUGE // 2, b"x")
    p.madvise(a, HUGE, uapi.MADV_GUARD_REMOVE)
    p.mprotect(a, HUGE, uapi.PROT_READ)
    p.fork().exit()
    p.munmap(a, HUGE)
    k.check()


def test_stored_bytes_budget() -> None:
    k = Kernel("tagged", budget=Budget(stored_bytes=16 * 4096))
    p = k.spawn()
    fd = p.memfd_create("x")
    err = _raises_limit(k, lambda: p.pwrite(fd, b"\x01" * (64 * 4096), 0), "stored_bytes")
    assert "stored_bytes" in str(err)
    assert len(k.phys.data) <= 64  # at most the one syscall's own data
    with pytest.raises(ResourceLimitError):  # the budget is still spent
        p.pwrite(fd, b"\x02" * 4096, 1 << 20)
    k.check()


def test_stored_bytes_by_cow_copies() -> None:
    k = Kernel("tagged", budget=Budget(stored_bytes=8 * 4096))
    p = k.spawn()
    a = p.mmap(0, 64 * 4096, RW, ANON & ~uapi.MAP_NORESERVE, -1, 0)
    for i in range(8):  # whole pages: the budget counts the bytes stored (8 * 4096)
        p.write(a + i * 4096, b"y" * 4096)
    c = p.fork()
    _raises_limit(k, lambda: [c.write(a + i * 4096, b"z") for i in range(8)], "stored_bytes")
    c.exit()
    k.check()


def test_vma_budget_over_a_fork_tree() -> None:
    k = Kernel("tagged", budget=Budget(vmas=64))
    p = k.spawn()
    for i in range(16):
        p.mmap(i * 2 * 4096 + (1 << 30), 4096, RW, ANON | uapi.MAP_FIXED, -1, 0)

    def tree() -> None:
        procs = [p]
        while True:
            procs.append(procs[-1].fork())

    _raises_limit(k, tree, "vmas")
    assert k.slab()["vm_area_struct"].active <= 64


def test_wall_time_budget() -> None:
    k = Kernel("tagged", budget=Budget(seconds=0.05))
    p = k.spawn()
    a = p.mmap(0, 4096, RW, ANON, -1, 0)
    time.sleep(0.06)
    _raises_limit(k, lambda: p.madvise(a, 4096, uapi.MADV_POPULATE_WRITE), "seconds")
    p.exit()  # exit is never refused
    k.check()


def test_unlimited_and_bad_budgets() -> None:
    b = Budget.unlimited()
    assert (b.pages, b.stored_bytes, b.vmas, b.pgtables, b.seconds) == (None,) * 5
    for bad in (float("nan"), float("inf"), -1):
        with pytest.raises(ValueError):
            Budget(seconds=bad)
    assert EXIT_RESOURCE_LIMIT == ResourceLimitError.exit_code == 3


_OPS = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, 63), st.integers(1, 64)),
    st.tuples(st.just("munmap"), st.integers(0, 63), st.integers(1, 64)),
    st.tuples(
        st.sampled_from(
            [
                "populate_write",
                "populate_read",
                "guard_install",
                "guard_remove",
                "dontneed",
                "mlock",
                "write",
            ]
        ),
        st.integers(0, 63),
        st.integers(1, 64),
    ),
    st.tuples(st.just("fork"), st.just(0), st.just(0)),
    st.tuples(st.just("pwrite"), st.integers(0, 63), st.integers(1, 16)),
    st.tuples(st.just("fallocate"), st.integers(0, 63), st.integers(1, 64)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_OPS, max_size=30),
    st.integers(1, 40),
    st.integers(1, 20),
    st.integers(4, 24),
    st.integers(1, 64),
)
def test_any_breach_leaves_the_model_consistent(
    ops: list[tuple[str, int, int]], pages: int, vmas: int, pgtables: int, stored: int
) -> None:
    k = Kernel(
        "tagged",
        budget=Budget(pages=pages, vmas=vmas, pgtables=pgtables, stored_bytes=stored * 4096),
    )
    procs = [k.spawn()]
    base = 1 << 32
    fd: int | None = None
    for name, page, n in ops:
        p = procs[-1]
        a, length = base + page * 4096, n * 4096
        try:
            if name == "mmap":
                p.mmap(a, length, RW, ANON | uapi.MAP_FIXED, -1, 0)
            elif name == "munmap":
                p.munmap(a, length)
            elif name == "fork":
                procs.append(p.fork())
            elif name == "mlock":
                p.mlock(a, length)
            elif name == "write":
                p.write(a, b"w")
            elif name in ("pwrite", "fallocate"):
                if fd is None:
                    fd = procs[0].memfd_create("f")
                    procs[0].mmap(
                        base + 200 * 4096, 64 * 4096, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0
                    )
                if name == "pwrite":
                    procs[0].pwrite(fd, b"\x07" * length, page * 4096)
                else:
                    procs[0].fallocate(fd, 0, page * 4096, length)
            else:
                p.madvise(a, length, P.ADVICE_NAMES[name])
        except ResourceLimitError:
            k.check()
            continue
        except (OSError, SegmentationFault):
            pass
        k.check()
    for p in reversed(procs):
        p.exit()
    k.check()


# --- hostile programs --------------------------------------------------------------------


def _prog(ops: list[Any], arena: int = 256, **kw: Any) -> P.Program:
    d = {
        "format": P.FORMAT,
        "version": P.VERSION,
        "arena_pages": arena,
        "observe": {"each": False, "probe": False, "contents": False},
        "ops": ops,
    }
    d.update(kw)
    return P.from_json(d, "hostile")


def _huge_fallocate() -> P.Program:
    ops: list[Any] = []
    for f in range(P.MAX_FILES):
        ops += [
            {"op": "memfd", "file": f},
            {"op": "fallocate", "file": f, "offset": 0, "len": P.MAX_FILE_PAGES},
        ]
    return _prog(ops)


def _memfd_leak() -> P.Program:
    # memfds kept alive by mappings after close: unbounded without a budget.
    body = [
        {"op": "memfd", "file": 0},
        {"op": "fallocate", "file": 0, "offset": 0, "len": 4096},
        {"op": "mmap", "addr": 0, "len": 1, "flags": ["shared"], "file": 0},
        {"op": "close", "file": 0},
    ]
    return _prog([{"op": "repeat", "count": 4096, "stride": 1, "ops": body}], arena=4096)


def _deep_forks() -> P.Program:
    leaf: list[Any] = [
        {"op": "mmap", "addr": 0, "len": 4096, "flags": ["private", "anonymous", "populate"]}
    ]
    for _ in range(P.MAX_DEPTH):
        leaf = [{"op": "repeat", "count": 1, "stride": 0, "ops": []}] + [
            {"op": "fork", "child": leaf}
        ] * 4
    return _prog(leaf, arena=4096)


def _many_vmas() -> P.Program:
    return _prog(
        [
            {
                "op": "repeat",
                "count": 1 << 15,
                "stride": 2,
                "ops": [{"op": "mmap", "addr": 0, "len": 1}],
            }
        ],
        arena=1 << 16,
    )


def _huge_pwrite() -> P.Program:
    return _prog(
        [
            {"op": "memfd", "file": 0},
            {"op": "pwrite", "file": 0, "offset": 0, "len": P.MAX_FILE_PAGES},
        ]
    )


HOSTILE = {
    "huge-fallocate": (_huge_fallocate, Budget(pages=4096)),
    "memfd-leak": (_memfd_leak, Budget(pages=8192)),
    "deep-forks": (_deep_forks, Budget(pages=2048)),
    "many-vmas": (_many_vmas, Budget(vmas=1000)),
    "huge-pwrite": (_huge_pwrite, Budget(stored_bytes=1 << 20)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_end_with_a_resource_limit(name: str) -> None:
    build, budget = HOSTILE[name]
    prog = build()
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError) as ei:
            P.run_model(prog, "sticky", check=False, budget=budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(ei.value)
    # bounded memory: the program's own transient data (one pwrite of 256 MiB is built
    # by the interpreter) plus what the budget allows
    assert peak < (300 << 20), peak


def test_model_wall_time_budget_of_run_model() -> None:
    prog = _prog([{"op": "mmap", "addr": 0, "len": 1}])
    with pytest.raises(ResourceLimitError) as ei:
        P.run_model(prog, "sticky", timeout=0)
    assert ei.value.resource == "seconds"


def test_memory_error_is_not_a_divergence(monkeypatch: Any) -> None:
    def boom(*a: Any) -> None:
        raise MemoryError()

    monkeypatch.setattr(P.ModelMachine, "mmap", boom)
    with pytest.raises(ResourceLimitError) as ei:
        P.run_model(_prog([{"op": "mmap", "addr": 0, "len": 1}]), "sticky")
    assert ei.value.resource == "memory"


INVALID: list[dict[str, Any]] = [
    {"arena_pages": 1 << 40},
    {"arena_pages": -1},
    {"ops": [{"op": "mmap", "addr": 0, "len": 1 << 62}]},
    {"ops": [{"op": "mmap", "addr": -1, "len": 1}]},
    {
        "ops": [
            {"op": "memfd", "file": 0},
            {"op": "fallocate", "file": 0, "offset": 0, "len": 1 << 40},
        ]
    },
    {"ops": [{"op": "memfd", "file": 0}, {"op": "ftruncate", "file": 0, "pages": 1 << 50}]},
    {"ops": [{"op": "repeat", "count": 10**12, "stride": 0, "ops": [{"op": "slab"}]}]},
    {"ops": [{"op": "open", "file": 0, "name": "../../etc/passwd"}]},
    {"ops": [{"op": "open", "file": 0, "name": "a/b"}]},
    {"ops": [{"op": "open", "file": 0, "name": "a\x00b"}]},
    {"ops": [{"op": "open", "file": 0, "name": ".."}]},
    {"ops": [{"op": "madvise", "addr": 0, "len": 1, "advice": 1e308}]},
    {"ops": [{"op": "mmap", "addr": 0, "len": 1.5}]},
    {"ops": [{"op": "write", "addr": 0, "len": 1, "byte": 256}]},
]


@pytest.mark.parametrize("i", range(len(INVALID)))
def test_invalid_values_are_user_input_errors(i: int) -> None:
    d: dict[str, Any] = {"format": P.FORMAT, "version": P.VERSION, "ops": []}
    d.update(INVALID[i])
    with pytest.raises(UserInputError) as ei:
        P.loads(json.dumps(d), "hostile.json")
    assert "\n" not in str(ei.value)


def test_deeply_nested_json_is_a_user_input_error() -> None:
    forks = '{"op": "fork", "child": [' * 100_000 + "]}" * 100_000
    for text in (
        "[" * 200_000 + "]" * 200_000,
        '{"format": "vmalab-program", "version": 1, "ops": [' + forks + "]}",
    ):
        with pytest.raises(UserInputError):
            P.loads(text, "deep.json")


# --- the live runner ---------------------------------------------------------------------

live = pytest.importorskip("vmalab.live")
needs_live = pytest.mark.skipif(
    live.live_support() is not None, reason=f"live runs impossible: {live.live_support()}"
)


@needs_live
def test_live_huge_fallocate_is_refused_by_the_file_budget() -> None:
    with pytest.raises(live.LiveResourceLimit) as ei:
        live.run_live(_huge_fallocate(), timeout=30)
    assert ei.value.resource == "file_bytes"
    assert isinstance(ei.value, ResourceLimitError) and isinstance(ei.value, live.LiveError)
    assert "\n" not in str(ei.value)


@needs_live
def test_live_file_budget_counts_fork_children_and_closed_files() -> None:
    # Each fork child grows a fresh memfd by 1 MiB; the tree as a whole passes 4 MiB.
    child = [{"op": "memfd", "file": 1}, {"op": "fallocate", "file": 1, "offset": 0, "len": 256}]
    prog = _prog([{"op": "fork", "child": child} for _ in range(8)])
    with pytest.raises(live.LiveResourceLimit):
        live.run_live_raw(prog, options={"file_bytes": 4 << 20})
    ok = live.run_live_raw(prog, options={"file_bytes": 16 << 20})
    assert "error" not in ok or ok["error"] is None


@needs_live
def test_live_rss_budget() -> None:
    prog = _prog(
        [{"op": "mmap", "addr": 0, "len": 8192, "flags": ["private", "anonymous", "populate"]}],
        arena=8192,
    )
    with pytest.raises(live.LiveResourceLimit) as ei:
        live.run_live_raw(prog, options={"rss_bytes": 16 << 20})
    assert ei.value.resource == "rss"


@needs_live
def test_live_rlimit_fsize_is_set() -> None:
    res = live.run_live_raw(_prog([]))
    assert res["rlimit_fsize"] == P.MAX_FILE_PAGES * P.PAGE


@needs_live
@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".", "a\x00b", ""])
def test_live_child_refuses_non_plain_names(name: str) -> None:
    res = live.run_live_raw(
        _prog([]),
        options={
            "unchecked_ops": [{"op": "open", "file": 0, "name": name, "flags": ["rdwr", "creat"]}]
        },
    )
    assert res["error"].startswith("refused"), res


_RUNNER = textwrap.dedent("""
    import sys
    from vmalab import live, program as P
    prog = P.from_json({"format": P.FORMAT, "version": 1, "ops": []}, "x")
    live.run_live_raw(prog, timeout=60, options={"hang": sys.argv[1], "alarm": 60})
""")


def _start_hanging_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    pidfile = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(pidfile)])
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    dirs = [str(d) for d in Path("/dev/shm").glob(f"vmalab-live-{proc.pid}-*")]
    assert len(dirs) == 1
    return proc, dirs


def _reap_helpers(tmp_path: Path) -> None:
    """The hang hook's helpers (a live child and its fork child, which SIGKILL of the
    runner orphans): kill those this test started that are still alive."""
    for pid in (int(x) for x in (tmp_path / "pids").read_text().split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_live
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_folder_removed_on_sigterm_and_sigint(tmp_path: Path, sig: int) -> None:
    proc, dirs = _start_hanging_run(tmp_path)
    try:
        os.kill(proc.pid, sig)
        rc = proc.wait(30)
    finally:
        _reap_helpers(tmp_path)
    assert rc == -signal.SIGTERM if sig == signal.SIGTERM else rc != 0
    assert not os.path.exists(dirs[0])


@needs_live
def test_stale_run_folder_swept_after_sigkill(tmp_path: Path) -> None:
    proc, dirs = _start_hanging_run(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        _reap_helpers(tmp_path)
    assert os.path.exists(dirs[0])  # nobody could remove it
    removed = live.sweep_stale_run_dirs()
    assert dirs[0] in removed and not os.path.exists(dirs[0])


@needs_live
def test_diff_has_a_model_time_limit() -> None:
    from vmalab import oracle

    prog = _prog([{"op": "mmap", "addr": 0, "len": 4}])
    with pytest.raises(ResourceLimitError) as ei:
        oracle.diff(prog, "sticky", timeout=30, model_timeout=0)
    assert ei.value.resource == "seconds" and not isinstance(ei.value, live.LiveError)
    assert oracle.diff(prog, live.detect_design(), timeout=30).divergence is None


def test_budget_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("VMALAB_BUDGET", "pages=10, pgtables=none,seconds=1.5")
    b = Budget.from_env(vmas=7)
    assert (b.pages, b.pgtables, b.seconds, b.vmas) == (10, None, 1.5, 7)
    assert Kernel("sticky").budget.pages == 10
    monkeypatch.setenv("VMALAB_BUDGET", "unlimited")
    assert Budget.from_env() == Budget.unlimited()
    for bad in ("pages", "nope=1", "pages=-1", "seconds=nan", "seconds=inf", "pages=x"):
        monkeypatch.setenv("VMALAB_BUDGET", bad)
        with pytest.raises(UserInputError):
            Budget.from_env()
