"""Built-in workloads: they run under every design, keep invariants, and show the designs'
differences the way docs/designs.md section 10 says they should."""

from __future__ import annotations

import pytest

vmalab = pytest.importorskip("vmalab")
if not hasattr(vmalab, "Kernel"):
    pytest.skip("model not available yet", allow_module_level=True)

from vmalab.report.metrics import measure  # noqa: E402
from vmalab.trace.guardify import GuardifyKernel  # noqa: E402
from vmalab.trace.workloads import WORKLOADS, parse_workload_spec, run_workload  # noqa: E402

SMALL = {
    "thread_stacks": {"threads": 6, "stack_kib": 64},
    "prefork_server": {"workers": 2, "generations": 2, "heap_mib": 1, "buffers": 4},
    "allocator": {"arenas": 6, "arena_pages": 16},
    "jit": {"regions": 6, "region_pages": 4},
    "database": {"tables": 3, "table_pages": 32},
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
@pytest.mark.parametrize("design", ["tagged", "eager", "sticky", "lossy"])
def test_workload_runs_and_checks(name: str, design: str) -> None:
    k = vmalab.Kernel(design)
    seen: list[tuple[int, str]] = []

    def hook(step: int, label: str, kk: object) -> None:
        assert kk is k
        k.check()
        seen.append((step, label))

    n = run_workload(k, name, SMALL[name], on_step=hook, every=3)
    assert n > 3 and seen[-1][0] == n
    assert all(s % 3 == 0 for s, _ in seen[:-1])
    k.check()


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workloads_are_deterministic(name: str) -> None:
    def run() -> dict[str, object]:
        k = vmalab.Kernel("tagged")
        run_workload(k, name, SMALL[name])
        return measure(k).to_dict()

    assert run() == run()


def test_old_glibc_stacks_cost_a_vma_each() -> None:
    """PROT_NONE guards split every stack (2 VMAs each, and neighbours cannot merge); with
    MADV_GUARD_INSTALL adjacent stacks merge (the kernel does the same: the newer stack has
    no anon_vma yet, so vma_merge_new_range() joins it to the written neighbour)."""
    out = {}
    for g in ("madvise", "mprotect"):
        k = vmalab.Kernel("sticky")
        run_workload(
            k,
            "thread_stacks",
            {"threads": 8, "stack_kib": 64, "forks": 0, "exit_every": 0, "guard": g},
        )
        out[g] = measure(k).vmas
    assert out["mprotect"] == 16
    assert out["madvise"] < 8


def test_lossy_drops_markers_of_shared_file_tables_at_fork() -> None:
    lost = {}
    for d in vmalab.DESIGNS:
        if d not in ("tagged", "eager", "sticky", "lossy"):
            continue
        k = vmalab.Kernel(d)
        run_workload(k, "database", {"tables": 2, "table_pages": 16, "checkpoints": 1})
        lost[d] = measure(k).guard_markers_lost
    if lost["lossy"] is None:
        pytest.skip("Kernel.vmstat not provided by the model")
    assert lost["lossy"] > 0
    assert lost["tagged"] == lost["eager"] == lost["sticky"] == 0


def test_eager_allocates_anon_vmas_for_file_guards() -> None:
    av = {}
    for d in ("tagged", "eager", "sticky"):
        k = vmalab.Kernel(d)
        run_workload(k, "database", {"tables": 4, "table_pages": 16, "checkpoints": 0})
        av[d] = measure(k).objects["anon_vma"]
    assert av["eager"] >= 4 and av["sticky"] == 0 and av["tagged"] == 0


def test_guardify_on_old_glibc_stacks_matches_new_glibc() -> None:
    p = {"threads": 8, "stack_kib": 64, "forks": 0, "exit_every": 0}
    k1 = vmalab.Kernel("sticky")
    g = GuardifyKernel(k1)
    run_workload(g, "thread_stacks", dict(p, guard="mprotect"))
    k2 = vmalab.Kernel("sticky")
    run_workload(k2, "thread_stacks", dict(p, guard="madvise"))
    assert g.stats.mprotect_rewritten == 8
    assert measure(k1).vmas == measure(k2).vmas


def test_workload_specs() -> None:
    assert parse_workload_spec("jit") == ("jit", {})
    assert parse_workload_spec("database:shared=false,tables=2") == (
        "database",
        {"shared": False, "tables": 2},
    )
    assert parse_workload_spec("nope") is None
    with pytest.raises(ValueError, match="no parameter"):
        parse_workload_spec("jit:bogus=1")
    with pytest.raises(ValueError, match="bad value"):
        parse_workload_spec("jit:regions=many")
