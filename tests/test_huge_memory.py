"""PMD-mapped THPs, MADV_COLLAPSE, khugepaged and shmem retraction (issue 14).

Each program case runs on the model and, where the live runner works, on the kernel; the
expected facts were measured on 6.18.44 (enabled=madvise, defrag=madvise, shmem_enabled=
never, use_zero_page=1, khugepaged max_ptes_none 511 / swap 64 / shared 256). Ports of
tools/testing/selftests/mm/khugepaged.c (the madvise context on both; the khugepaged
context on the model only: the real khugepaged cannot be run on demand),
split_huge_page_test.c (split_pmd_thp: contents survive a PMD split) and
transhuge-stress.c (random 4 KiB discards over THPs, with Kernel.check() after every
step).
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from vmalab import DESIGNS, Kernel, uapi
from vmalab import program as P
from vmalab.live import live_support
from vmalab.mm.khugepaged import host_thp_mode

LIVE = live_support() is None
P4 = 4096
HUGE = 512 * P4
BASE = 0x400000000  # 2 MiB aligned
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED

pytestmark = pytest.mark.skipif(
    host_thp_mode() != "madvise", reason="facts recorded with THP enabled=madvise"
)

A512, D512, F512 = "A" * 512, "." * 512, "F" * 512
THP = [[0, 512, 512, 0]]  # one anonymous PMD-mapped THP in the VMA [0, 512)


def get(obs: Any, path: str) -> Any:
    cur = obs
    for part in path.split("."):
        if part.isdigit():
            cur = cur[int(part)]
        elif part == "thp":
            cur = cur.get("thp", [])
        else:
            cur = cur[part]
    return cur


def check(ops: list[dict[str, Any]], expect: dict[str, Any], arena: int = 1024) -> None:
    """Run ``ops`` on the model (and the kernel when possible); assert every fact."""
    prog = P.from_json({"version": 1, "arena_pages": arena, "ops": ops}, "case")
    runs = [("model", P.run_model(prog, "eager").to_json())]
    if LIVE:
        from vmalab.live import run_live

        runs.append(("kernel", run_live(prog).to_json()))
    for who, obs in runs:
        assert obs["error"] is None, f"{who}: {obs['error']}"
        for k, v in expect.items():
            assert get(obs, k) == v, f"{who}: {k} is {get(obs, k)!r}, kernel gave {v!r}"


def thp_region(n: int = 512) -> list[dict[str, Any]]:
    """A written THP (ops 0-3); MADV_NOHUGEPAGE after the fault keeps the PMD (measured)
    and keeps the real khugepaged, which scans in the background, from collapsing the
    range again after a later split (docs/divergences.md, khugepaged-collapse)."""
    return [
        {"op": "mmap", "addr": 0, "len": n},
        {"op": "madvise", "addr": 0, "len": n, "advice": "hugepage"},
        {"op": "write", "addr": 0, "len": 1},
        {"op": "madvise", "addr": 0, "len": n, "advice": "nohugepage"},
    ]


# --- PMD-mapped anonymous THPs: faults and splits --------------------------------------------


def test_write_fault_maps_a_pmd_and_a_4k_dontneed_splits_it() -> None:
    check(
        [*thp_region(), {"op": "madvise", "addr": 5, "len": 1, "advice": "dontneed"}],
        {
            "results.2.state.thp": THP,
            "results.2.state.pages": A512 + " " * 512,
            "results.3.state.thp": THP,
            "results.4.state.thp": [],
            "results.4.state.pages": "AAAAA.A" + "A" * 505 + " " * 512,
        },
    )


@pytest.mark.parametrize(
    ("op", "kept"),
    [
        ({"op": "munmap", "addr": 511, "len": 1}, False),
        ({"op": "mprotect", "addr": 0, "len": 1, "prot": "r"}, False),
        ({"op": "mprotect", "addr": 0, "len": 512, "prot": "r"}, True),
        ({"op": "madvise", "addr": 3, "len": 1, "advice": "guard_install"}, False),
        ({"op": "madvise", "addr": 0, "len": 1, "advice": "free"}, False),
        ({"op": "madvise", "addr": 0, "len": 512, "advice": "free"}, True),
        ({"op": "madvise", "addr": 0, "len": 1, "advice": "hugepage"}, False),
        ({"op": "madvise", "addr": 0, "len": 512, "advice": "hugepage"}, True),
        ({"op": "madvise", "addr": 0, "len": 1, "advice": "cold"}, False),
        ({"op": "madvise", "addr": 0, "len": 512, "advice": "cold"}, True),
        ({"op": "madvise", "addr": 0, "len": 512, "advice": "pageout"}, False),
        ({"op": "mlock", "addr": 0, "len": 512}, True),
    ],
    ids=lambda x: x if isinstance(x, bool) else f"{x['op']}-{x.get('advice', '')}-{x['len']}",
)
def test_what_splits_a_pmd(op: dict[str, Any], kept: bool) -> None:
    """A range covering the whole PMD is handled as one; a VMA split inside it, a partial
    zap, free, cold/pageout or marker splits it (mm/huge_memory.c:__split_huge_pmd)."""
    check([*thp_region(), op], {"results.4.state.thp": THP if kept else []})


def test_mremap_keeps_the_pmd_only_when_aligned() -> None:
    move = {"op": "mremap", "addr": 0, "old_len": 512, "new_len": 512, "maymove": True}
    check(
        [*thp_region(), {**move, "to": 512}],
        {"results.4.ret": 512, "results.4.state.thp": [[512, 1024, 512, 0]]},
        arena=1536,
    )
    check(
        [*thp_region(), {**move, "to": 513}],
        {"results.4.ret": 513, "results.4.state.thp": []},
        arena=1536,
    )


def test_fork_copies_the_pmd_and_cow_splits_only_the_writer() -> None:
    """copy_huge_pmd(); do_huge_pmd_wp_page() falls back in the writer; after the child
    is gone the parent's write reuses the whole PMD."""
    check(
        [
            *thp_region(),
            {
                "op": "fork",
                "child": [
                    {"op": "read", "addr": 1, "len": 1},
                    {"op": "write", "addr": 1, "len": 1, "byte": 7},
                ],
            },
            {"op": "write", "addr": 2, "len": 1},
            {"op": "read", "addr": 1, "len": 1},
        ],
        {
            "results.4.child.results.0.state.thp": THP,
            "results.4.child.results.1.state.thp": [],
            "results.4.state.thp": THP,
            "results.5.state.thp": THP,
            "results.6.data": "00",
        },
    )


def test_huge_zero_page_then_write() -> None:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 512},
            {"op": "madvise", "addr": 0, "len": 512, "advice": "hugepage"},
            {"op": "read", "addr": 9, "len": 1},
            {"op": "write", "addr": 9, "len": 1},
        ],
        {
            "results.2.state.pages": F512,
            "results.2.state.thp": [],
            "results.3.state.thp": THP,
        },
        arena=512,
    )


# --- MADV_COLLAPSE (khugepaged.c selftest, madvise context) ----------------------------------


def collapse(addr: int = 0, n: int = 512) -> dict[str, Any]:
    return {"op": "madvise", "addr": addr, "len": n, "advice": "collapse"}


def test_collapse_full_and_single_pte_entry() -> None:
    """collapse_full and collapse_single_pte_entry: no MADV_HUGEPAGE needed, the contents
    move into the THP, the holes read zeroes."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 512},
            {"op": "write", "addr": 100, "len": 1, "byte": 7},
            collapse(),
            {"op": "read", "addr": 100, "len": 2},
        ],
        {"results.2.ret": 0, "results.2.state.thp": THP, "results.3.data": "0700"},
        arena=512,
    )
    check(
        [{"op": "mmap", "addr": 0, "len": 512}, {"op": "write", "addr": 0, "len": 512}, collapse()],
        {"results.2.ret": 0, "results.2.state.thp": THP},
        arena=512,
    )


def test_collapse_empty_and_zero_page_only() -> None:
    """collapse_empty: no anon_vma (not even after a read of the zero page): EINVAL."""
    for touch in ([], [{"op": "read", "addr": 3, "len": 1}]):
        check(
            [{"op": "mmap", "addr": 0, "len": 512}, *touch, collapse()],
            {f"results.{1 + len(touch)}.errno": "EINVAL"},
            arena=512,
        )


def test_collapse_max_ptes_none_is_ignored_by_madvise() -> None:
    """collapse_max_ptes_none: MADV_COLLAPSE collapses a table with one page left, but a
    PMD without a table is SCAN_PMD_NONE (EINVAL), which also stops the walk."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 1024},
            {"op": "write", "addr": 0, "len": 2},
            {"op": "madvise", "addr": 0, "len": 1, "advice": "dontneed"},
            collapse(0, 1024),
        ],
        {"results.3.errno": "EINVAL", "results.3.state.thp": [[0, 1024, 512, 0]]},
    )


def test_collapse_refusals() -> None:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 511},
            {"op": "write", "addr": 0, "len": 1},
            collapse(0, 511),
            {"op": "mmap", "addr": 512, "len": 512},
            {"op": "write", "addr": 512, "len": 1},
            {"op": "madvise", "addr": 512, "len": 512, "advice": "nohugepage"},
            collapse(512, 512),
            collapse(512, 1),  # no aligned PMD inside the range: nothing to do
        ],
        {
            "results.2.errno": "EINVAL",  # the VMA cannot hold an aligned PMD
            "results.6.errno": "EINVAL",  # VM_NOHUGEPAGE
            "results.7.errno": "EINVAL",
        },
    )


def test_collapse_over_a_guard_marker() -> None:
    """EINVAL and the marker stays; a marker in the first PMD stops the walk before the
    second (SCAN_FAIL is not on madvise_collapse()'s continue list)."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 1024},
            {"op": "write", "addr": 0, "len": 1},
            {"op": "write", "addr": 512, "len": 1},
            {"op": "madvise", "addr": 1, "len": 1, "advice": "guard_install"},
            collapse(0, 1024),
        ],
        {
            "results.4.errno": "EINVAL",
            "results.4.state.thp": [],
            "results.4.state.pages": "AG" + "." * 510 + "A" + "." * 511,
        },
    )


def test_collapse_read_only_mlocked_and_shared_after_fork() -> None:
    """collapse_fork: the child collapses pages it shares with its parent (max_ptes_shared
    binds khugepaged only); the parent keeps its 4 KiB pages, now exclusive."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 512},
            {"op": "write", "addr": 0, "len": 2},
            {"op": "fork", "child": [collapse(), {"op": "read", "addr": 1, "len": 1}]},
            {"op": "mprotect", "addr": 0, "len": 512, "prot": "r"},
            collapse(),
        ],
        {
            "results.2.child.results.0.ret": 0,
            "results.2.child.results.0.state.thp": THP,
            "results.2.child.results.1.data": "5a",
            "results.2.state.thp": [],
            "results.4.ret": 0,
            "results.4.state.thp": THP,
        },
        arena=512,
    )


def test_collapse_of_a_huge_zero_pmd_is_a_no_op() -> None:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 512},
            {"op": "madvise", "addr": 0, "len": 512, "advice": "hugepage"},
            {"op": "read", "addr": 1, "len": 1},
            collapse(),
        ],
        {"results.3.ret": 0, "results.3.state.pages": F512, "results.3.state.thp": []},
        arena=512,
    )


# --- shmem: collapse_file, retract_page_tables ------------------------------------------------


def two_memfd_maps(second: str = "shared") -> list[dict[str, Any]]:
    return [
        {"op": "memfd", "file": 3},
        {"op": "ftruncate", "file": 3, "pages": 512},
        {"op": "mmap", "addr": 0, "len": 512, "flags": ["shared"], "file": 3},
        {"op": "mmap", "addr": 512, "len": 512, "flags": [second], "file": 3},
        {"op": "write", "addr": 0, "len": 1},
        {"op": "read", "addr": 513, "len": 2},
    ]


def test_shmem_collapse_retracts_the_other_mapping() -> None:
    """The caller's mapping becomes ShmemPmdMapped; the other loses its PTEs (and its
    table); its next read maps the whole folio by a PMD."""
    check(
        [*two_memfd_maps(), collapse(), {"op": "read", "addr": 600, "len": 1}],
        {
            "results.6.ret": 0,
            "results.6.state.pages": F512 + D512,
            "results.6.state.thp": [[0, 512, 0, 512]],
            "results.7.state.pages": F512 + F512,
            "results.7.state.thp": [[0, 512, 0, 512], [512, 1024, 0, 512]],
        },
    )


def test_shmem_collapse_keeps_markers_and_cow_pages_of_anon_vma_mappings() -> None:
    """retract_page_tables() skips a VMA with an anon_vma: the marker (guard install made
    one) or the CoW page stays, the page-cache PTEs are unmapped anyway."""
    check(
        [
            *two_memfd_maps(),
            {"op": "madvise", "addr": 517, "len": 1, "advice": "guard_install"},
            collapse(),
        ],
        {"results.7.ret": 0, "results.7.state.pages": F512 + ".....G" + "." * 506},
    )
    check(
        [*two_memfd_maps("private"), {"op": "write", "addr": 515, "len": 1}, collapse()],
        {"results.7.ret": 0, "results.7.state.pages": F512 + "...A" + "." * 508},
    )


def test_shmem_collapse_refusals_and_past_eof() -> None:
    check(
        [
            {"op": "memfd", "file": 3},
            {"op": "ftruncate", "file": 3, "pages": 512},
            {"op": "mmap", "addr": 0, "len": 512, "flags": ["shared"], "file": 3},
            collapse(),  # nothing cached: SCAN_TRUNCATED
            {"op": "mmap", "addr": 512, "len": 512, "flags": ["private"], "file": 3},
            {"op": "write", "addr": 512, "len": 1},
            collapse(512, 512),  # the caller's CoW page: collapse_pte_mapped_thp fails
            {"op": "memfd", "file": 4},
            {"op": "pwrite", "file": 4, "offset": 9, "len": 1},
            {"op": "mmap", "addr": 1024, "len": 512, "flags": ["shared"], "file": 4},
            collapse(1024, 512),  # 10 pages long, mapped 512: all of it collapses
        ],
        {
            "results.3.errno": "EINVAL",
            "results.6.errno": "EINVAL",
            "results.10.ret": 0,
            "results.10.state.thp": [[1024, 1536, 0, 512]],
            "final.probe": "o" * 1536,
        },
        arena=1536,
    )


def _tables_after_collapse(design: str, remove: bool) -> tuple[int, int]:
    """(page-table pages freed by the collapse, guard markers left in the other VMA)."""
    k = Kernel(design)
    p = k.spawn()
    fd = p.memfd_create("thp")
    p.ftruncate(fd, HUGE)
    a = p.mmap(BASE, HUGE, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0)
    b = p.mmap(BASE + 2 * HUGE, HUGE, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0)
    p.write(a, b"x")
    p.read(b + P4, 1)
    p.madvise(b + 5 * P4, P4, uapi.MADV_GUARD_INSTALL)
    if remove:
        p.madvise(b, HUGE, uapi.MADV_GUARD_REMOVE)
    before = p.mm.pgtables.nr_tables()
    p.madvise(a, HUGE, uapi.MADV_COLLAPSE)
    k.check()
    markers = sum(1 for e in p.pagemap(b, 512) if e & uapi.PM_GUARD_REGION)
    return before - p.mm.pgtables.nr_tables(), markers


# design: (tables freed, markers) with the guard still installed / after a whole remove.
# The kernel (eager): 4 KiB of VmPTE go in both cases (the caller's table only).
RETRACT = {
    "eager": ((0, 1), (0, 0)),
    "sticky": ((0, 1), (0, 0)),
    "tagged": ((0, 1), (1, 0)),
    "tagged-fixed": ((0, 1), (1, 0)),
    "lossy": ((1, 0), (1, 0)),
}


@pytest.mark.parametrize("design", DESIGNS)
def test_retraction_differs_between_designs(design: str) -> None:
    """The RFC's THP claim, on the real retraction path: a guarded file VMA is never
    retracted under eager (a real anon_vma) or sticky (VM_MAYBE_GUARD is never
    cleared); the RFC (tagged) retracts it again once every guard was removed; lossy
    retracts it with its marker (the guard is gone). The model keeps a table under a
    file huge PMD that the kernel does not have, so 0 here is the kernel's -4 kB."""
    assert (
        _tables_after_collapse(design, False),
        _tables_after_collapse(design, True),
    ) == RETRACT[design]


# --- khugepaged (model only: the kernel's runs in the background every 10 s) ---------------


def _khugepaged_case(
    touch: int, *, hugepage: bool = True, guard: bool = False, cow: int = -1, **kw: int
) -> tuple[int, str]:
    """khugepaged over one MADV_HUGEPAGE THP range with ``touch`` pages written; with
    ``cow`` >= 0, after a fork whose child then writes (CoWs) its first ``cow`` pages:
    the answer is the child's."""
    k = Kernel("eager")
    p = k.spawn()
    p.mmap(BASE, HUGE, RW, ANON, -1, 0)
    if not hugepage:
        p.madvise(BASE, HUGE, uapi.MADV_NOHUGEPAGE)
    for i in range(touch):
        p.write(BASE + i * P4, b"\x01")
    if hugepage:
        p.madvise(BASE, HUGE, uapi.MADV_HUGEPAGE)
    if guard:
        p.madvise(BASE + 300 * P4, P4, uapi.MADV_GUARD_INSTALL)
    if cow >= 0:
        p = p.fork()
        for i in range(cow):
            p.write(BASE + i * P4, b"\x02")
    n = k.khugepaged(**kw)
    k.check()
    m = re.search(r"AnonHugePages:\s+(\d+) kB", p.smaps())
    return n, m.group(1) if m else "?"


def test_khugepaged_max_ptes_none() -> None:
    """collapse_max_ptes_none (khugepaged context): one page present collapses with the
    default 511; with max_ptes_none 510 a table needs two."""
    assert _khugepaged_case(1) == (1, "2048")
    assert _khugepaged_case(1, max_ptes_none=510) == (0, "0")
    assert _khugepaged_case(2, max_ptes_none=510) == (1, "2048")
    assert _khugepaged_case(0) == (0, "0")  # no table at all: SCAN_PMD_NONE


def test_khugepaged_needs_vm_hugepage_and_refuses_markers() -> None:
    assert _khugepaged_case(8, hugepage=False) == (0, "0")  # enabled=madvise
    assert _khugepaged_case(8, guard=True) == (0, "0")  # swap-in of a marker fails


def test_khugepaged_max_ptes_shared() -> None:
    """collapse_max_ptes_shared: after fork the child CoWs some pages; the others are
    shared with the parent, and at most 256 may be."""
    assert _khugepaged_case(512, cow=512 - 256 - 1) == (0, "0")
    assert _khugepaged_case(512, cow=512 - 256) == (1, "2048")
    assert _khugepaged_case(512, cow=512 - 256 - 1, max_ptes_shared=511) == (1, "2048")
    assert _khugepaged_case(512, cow=0) == (0, "0")  # no writable PTE: SCAN_PAGE_RO


# --- split_huge_page_test / transhuge-stress ---------------------------------------------------


def test_split_pmd_thp_keeps_contents() -> None:
    """split_pmd_thp: a pattern written to a THP reads back after its PMD is split (here
    by mprotect of one page, the VMA split's __split_huge_pmd), and after a collapse."""
    k = Kernel("eager")
    p = k.spawn()
    p.mmap(BASE, HUGE, RW, ANON, -1, 0)
    p.madvise(BASE, HUGE, uapi.MADV_HUGEPAGE)
    for i in range(512):
        p.write(BASE + i * P4 + i % 7, bytes([i % 251 + 1]))
    assert p.mm.pgtables.huge
    p.mprotect(BASE + 100 * P4, P4, uapi.PROT_READ)
    assert not p.mm.pgtables.huge
    k.check()
    p.mprotect(BASE + 100 * P4, P4, RW)
    p.madvise(BASE, HUGE, uapi.MADV_COLLAPSE)
    assert p.mm.pgtables.huge
    k.check()
    for i in range(512):
        assert p.read(BASE + i * P4 + i % 7, 1) == bytes([i % 251 + 1]), i


def test_transhuge_stress() -> None:
    """transhuge-stress: THPs faulted in and broken up by random 4 KiB MADV_DONTNEED,
    with collapses, forks and partial protections mixed in; every page reads what was
    last written and Kernel.check() holds after every step."""
    rnd = random.Random(14)
    k = Kernel("eager")
    p = k.spawn()
    size = 4 * HUGE
    p.mmap(BASE, size, RW, ANON, -1, 0)
    p.madvise(BASE, size, uapi.MADV_HUGEPAGE)
    want: dict[int, int] = {}
    for _step in range(300):
        page = rnd.randrange(size // P4)
        a = BASE + page * P4
        t = rnd.random()
        if t < 0.5:
            b = rnd.randrange(1, 256)
            p.write(a, bytes([b]))
            want[page] = b
        elif t < 0.75:
            p.madvise(a, P4, uapi.MADV_DONTNEED)
            want.pop(page, None)
        elif t < 0.85:
            h = a & ~(HUGE - 1)
            try:
                p.madvise(h, HUGE, uapi.MADV_COLLAPSE)
            except OSError as e:
                assert e.errno == 22  # a PMD without a table
        elif t < 0.93:
            child = p.fork()
            child.write(a, b"\xee")
            assert child.read(a, 1) == b"\xee"
            child.exit()
        else:
            p.mprotect(a, P4, uapi.PROT_READ)
            p.mprotect(a, P4, RW)
        k.check()
    for page in range(size // P4):
        assert p.read(BASE + page * P4, 1) == bytes([want.get(page, 0)]), page
    k.check()
