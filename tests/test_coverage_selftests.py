"""Kernel selftest cases ported to oracle programs (issue 14).

Each case is a program plus the facts the real kernel gave for it on 6.18.44 (measured
with ``vmalab diff`` / the live runner when the case was written). The model must
reproduce the facts; where the live runner is available the kernel is checked too, so a
case that stops holding on the kernel fails loudly instead of silently testing fiction.

Sources: tools/testing/selftests/mm/mremap_dontunmap.c, mseal_test.c, mlock2-tests.c,
mdwe_test.c, pkey tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from vmalab import program as P
from vmalab.live import live_support

LIVE = live_support() is None
RW = ["ac", "me", "mr", "mw", "rd", "wr"]


def get(obs: Any, path: str) -> Any:
    cur = obs
    for part in path.split("."):
        cur = cur[int(part)] if part.isdigit() else cur[part]
    return cur


def check(
    ops: list[dict[str, Any]],
    expect: dict[str, Any],
    arena: int = 16,
    design: str = "sticky",
    live: bool = True,
) -> None:
    """Run ``ops`` on the model (and the kernel when possible); assert every fact."""
    prog = P.from_json({"version": 1, "arena_pages": arena, "ops": ops}, "case")
    runs = [("model", P.run_model(prog, design).to_json())]
    if live and LIVE:
        from vmalab.live import run_live

        runs.append(("kernel", run_live(prog).to_json()))
    for who, obs in runs:
        assert obs["error"] is None, f"{who}: {obs['error']}"
        for k, v in expect.items():
            assert get(obs, k) == v, f"{who}: {k} is {get(obs, k)!r}, kernel gave {v!r}"


# --- mremap_dontunmap.c ---------------------------------------------------------------

MOVE = {"maymove": True, "dontunmap": True}


def test_mremap_dontunmap_simple() -> None:
    """The old range stays mapped and reads zeros; the data moved."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "write", "addr": 0, "len": 4, "byte": 0xAA},
            {"op": "mremap", "addr": 0, "old_len": 4, "new_len": 4, "to": 8, **MOVE},
            {"op": "read", "addr": 0, "len": 4},
            {"op": "read", "addr": 8, "len": 4},
        ],
        {
            "results.2.ret": 8,
            "results.2.state.vmas": [[0, 4, RW], [8, 12, RW]],
            "results.2.state.pages": "....    AAAA    ",
            "results.3.data": "00000000",
            "results.4.data": "aaaaaaaa",
        },
    )


def test_mremap_dontunmap_simple_shmem() -> None:
    """Shared anonymous memory: the old range still maps the shmem object."""
    sh = ["me", "mr", "ms", "mw", "rd", "sh", "wr"]
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4, "flags": ["shared", "anonymous"]},
            {"op": "write", "addr": 0, "len": 4, "byte": 0xAA},
            {"op": "mremap", "addr": 0, "old_len": 4, "new_len": 4, "to": 8, **MOVE},
            {"op": "read", "addr": 0, "len": 4},
        ],
        {
            "results.2.state.vmas": [[0, 4, sh], [8, 12, sh]],
            "results.2.state.pages": "....    FFFF    ",
            "results.3.data": "aaaaaaaa",
        },
    )


def test_mremap_dontunmap_partial_mapping_and_overwrite() -> None:
    """Part of a VMA moves (the source VMA is not split); a fixed destination inside
    another mapping replaces only the moved pages; a resize or a missing MAYMOVE is
    EINVAL."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 6},
            {"op": "write", "addr": 0, "len": 6, "byte": 0xAA},
            {"op": "mremap", "addr": 2, "old_len": 2, "new_len": 2, "to": 10, **MOVE},
            {"op": "mmap", "addr": 12, "len": 6},
            {"op": "write", "addr": 12, "len": 6, "byte": 0xBB},
            {"op": "mremap", "addr": 0, "old_len": 2, "new_len": 2, "to": 12, **MOVE},
            {"op": "mremap", "addr": 0, "old_len": 2, "new_len": 4, "to": 20, **MOVE},
            {"op": "mremap", "addr": 0, "old_len": 2, "new_len": 2, "to": 20, "dontunmap": True},
        ],
        {
            "results.2.state.vmas": [[0, 6, RW], [10, 12, RW]],
            "results.2.state.pages": "AA..AA    AA            ",
            "results.5.ret": 12,
            "results.6.errno": "EINVAL",
            "results.7.errno": "EINVAL",
            "final.pages": "....AA    AAAAAAAA      ",
            "final.data": "00000000aaaa        aaaaaaaabbbbbbbb            ",
        },
        arena=24,
    )


def test_mremap_dontunmap_without_fixed_moves_to_the_hint() -> None:
    """MREMAP_DONTUNMAP without MREMAP_FIXED: a free hint is used; a taken one is not."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "write", "addr": 0, "len": 4, "byte": 5},
            {
                "op": "mremap",
                "addr": 0,
                "old_len": 4,
                "new_len": 4,
                "to": 10,
                "fixed": False,
                **MOVE,
            },
            {
                "op": "mremap",
                "addr": 0,
                "old_len": 4,
                "new_len": 4,
                "to": 10,
                "fixed": False,
                **MOVE,
            },
        ],
        {
            "results.2.ret": 10,
            "results.2.state.pages": "....      AAAA  ",
            "results.3.ret": "outside",
        },
    )


def test_mremap_maymove_without_fixed_same_size_is_a_no_op() -> None:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {
                "op": "mremap",
                "addr": 0,
                "old_len": 4,
                "new_len": 4,
                "to": 8,
                "fixed": False,
                "maymove": True,
            },
        ],
        {"results.1.ret": 0, "results.1.state.vmas": [[0, 4, RW]]},
    )


@pytest.mark.parametrize("fork", [False, True])
def test_mremap_merge_into_unfaulted_neighbours(fork: bool) -> None:
    """tools/testing/selftests/mm/merge.c (6.19 tgt-src mremap merges): a faulted VMA
    moved back between unfaulted neighbours merges with both; in a fork child it does
    not (vma_is_fork_child(copied_from))."""
    body = [
        {"op": "mremap", "addr": 20, "old_len": 4, "new_len": 4, "maymove": True, "to": 30},
        {"op": "mmap", "addr": 16, "len": 4},
        {"op": "mmap", "addr": 24, "len": 4},
        {"op": "mremap", "addr": 30, "old_len": 4, "new_len": 4, "maymove": True, "to": 20},
        {"op": "read", "addr": 16, "len": 12},
    ]
    pre = [{"op": "mmap", "addr": 20, "len": 4}, {"op": "write", "addr": 20, "len": 4, "byte": 7}]
    if fork:
        check(
            pre + [{"op": "fork", "child": body}],
            {"results.2.child.results.3.state.vmas": [[16, 20, RW], [20, 24, RW], [24, 28, RW]]},
            arena=48,
        )
    else:
        check(
            pre + body,
            {"results.5.state.vmas": [[16, 28, RW]], "results.6.data": "000000000707070700000000"},
            arena=48,
        )


# --- mseal_test.c ------------------------------------------------------------------------

RO = ["me", "mr", "mw", "rd"]


def test_mseal_basics_and_in_loop_checks() -> None:
    """Sealing splits; a range with a hole is ENOMEM with nothing sealed; munmap,
    mprotect and mremap of sealed memory are EPERM; mprotect changes the VMAs before
    the sealed one (the check is per VMA); discarding advice on sealed read-only
    anonymous memory is EPERM, on writable memory it is allowed."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "mmap", "addr": 4, "len": 4, "prot": "r"},
            {"op": "mseal", "addr": 1, "len": 2},
            {"op": "mseal", "addr": 0, "len": 12},
            {"op": "munmap", "addr": 0, "len": 2},
            {"op": "mprotect", "addr": 0, "len": 4, "prot": "r"},
            {"op": "mremap", "addr": 1, "old_len": 1, "new_len": 1, "maymove": True, "to": 10},
            {"op": "mseal", "addr": 4, "len": 4},
            {"op": "madvise", "addr": 4, "len": 4, "advice": "dontneed"},
            {"op": "madvise", "addr": 1, "len": 2, "advice": "dontneed"},
            {"op": "madvise", "addr": 0, "len": 8, "advice": "dontdump"},
        ],
        {
            "results.2.state.vmas": [
                [0, 1, RW],
                [1, 3, sorted(RW + ["sl"])],
                [3, 4, RW],
                [4, 8, RO],
            ],
            "results.3.errno": "ENOMEM",
            "results.4.errno": "EPERM",
            "results.5.errno": "EPERM",
            "results.5.state.vmas.0": [0, 1, RO],
            "results.6.errno": "EPERM",
            "results.8.errno": "EPERM",
            "results.9.ret": 0,
            "results.10.ret": 0,
        },
    )


def test_mseal_munmap_keeps_the_split_before_the_sealed_vma() -> None:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "mseal", "addr": 2, "len": 2},
            {"op": "munmap", "addr": 1, "len": 2},
            {"op": "mmap", "addr": 2, "len": 1},
            {"op": "mremap", "addr": 0, "old_len": 1, "new_len": 1, "maymove": True, "to": 3},
        ],
        {
            "results.2.errno": "EPERM",
            "results.2.state.vmas": [[0, 1, RW], [1, 2, RW], [2, 4, sorted(RW + ["sl"])]],
            "results.3.errno": "EPERM",
            "results.4.errno": "EPERM",
        },
    )


def test_mseal_discard_rules() -> None:
    """File-backed (even MAP_PRIVATE read-only) and shared sealed mappings may be
    discarded; sealed read-only anonymous memory refuses GUARD_INSTALL, WIPEONFORK and
    FREE but not COLD; a fork child inherits the seal."""
    check(
        [
            {"op": "memfd", "file": 0},
            {"op": "ftruncate", "file": 0, "pages": 8},
            {"op": "mmap", "addr": 6, "len": 2, "prot": "r", "flags": ["private"], "file": 0},
            {"op": "mseal", "addr": 6, "len": 2},
            {"op": "madvise", "addr": 6, "len": 2, "advice": "dontneed"},
            {"op": "mmap", "addr": 10, "len": 2, "prot": "r", "flags": ["shared"], "file": 0},
            {"op": "mseal", "addr": 10, "len": 2},
            {"op": "madvise", "addr": 10, "len": 2, "advice": "dontneed"},
            {"op": "mmap", "addr": 13, "len": 1, "prot": "r"},
            {"op": "mseal", "addr": 13, "len": 1},
            {"op": "madvise", "addr": 13, "len": 1, "advice": "guard_install"},
            {"op": "madvise", "addr": 13, "len": 1, "advice": "wipeonfork"},
            {"op": "madvise", "addr": 13, "len": 1, "advice": "free"},
            {"op": "madvise", "addr": 13, "len": 1, "advice": "cold"},
            {"op": "fork", "child": [{"op": "munmap", "addr": 13, "len": 1}]},
        ],
        {
            "results.4.ret": 0,
            "results.7.ret": 0,
            "results.10.errno": "EPERM",
            "results.11.errno": "EPERM",
            "results.12.errno": "EPERM",
            "results.13.ret": 0,
            "results.14.child.results.0.errno": "EPERM",
        },
    )


def test_mseal_multi_vma_move_stops_at_the_sealed_vma() -> None:
    """A pure MREMAP_FIXED move over [rw][sealed r] moves the first VMA, then EPERM."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 2},
            {"op": "mmap", "addr": 2, "len": 2, "prot": "r"},
            {"op": "mseal", "addr": 2, "len": 2},
            {"op": "mremap", "addr": 0, "old_len": 4, "new_len": 4, "maymove": True, "to": 8},
        ],
        {
            "results.3.errno": "EPERM",
            "results.3.state.vmas": [[2, 4, sorted(RO + ["sl"])], [8, 10, RW]],
        },
    )


# --- mlock2-tests.c / mlockall ---------------------------------------------------------

LO = sorted(RW + ["lo"])


def test_mlockall_future_current_onfault_and_munlockall() -> None:
    """MCL_FUTURE locks (and populates) later mappings, PROT_NONE ones included, but
    not in a fork child; MCL_ONFAULT adds `lf` and populates nothing; MCL_ONFAULT alone
    is EINVAL; munlockall clears every lock flag (the VMAs then merge)."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "mlockall", "flags": ["future"]},
            {"op": "mmap", "addr": 4, "len": 4},
            {"op": "mmap", "addr": 8, "len": 4, "prot": "none"},
            {"op": "fork", "child": [{"op": "mmap", "addr": 12, "len": 2}]},
            {"op": "mlockall", "flags": ["future", "onfault"]},
            {"op": "mmap", "addr": 12, "len": 2},
            {"op": "munlockall"},
            {"op": "mlockall", "flags": ["onfault"]},
            {"op": "mlockall", "flags": ["current"]},
        ],
        {
            "results.2.state.vmas.1": [4, 8, LO],
            "results.2.state.pages": "....AAAA        ",
            "results.3.state.vmas.2": [8, 12, ["lo", "me", "mr", "mw"]],
            "results.4.child.results.0.state.vmas.3": [12, 14, RW],
            "results.6.state.vmas.3": [12, 14, sorted(RW + ["lf", "lo"])],
            "results.6.state.pages": "....AAAA......  ",
            "results.7.state.vmas": [[0, 8, RW], [8, 12, ["me", "mr", "mw"]], [12, 14, RW]],
            "results.8.errno": "EINVAL",
            "results.9.state.pages": "AAAAAAAA....AA  ",
        },
    )


def test_rlimit_memlock_without_cap_ipc_lock() -> None:
    """mlock counts pages already locked once; MAP_LOCKED and MCL_FUTURE mappings past
    the limit are EAGAIN; a limit of 0 is EPERM for mlock, MAP_LOCKED and mlockall."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 8},
            {"op": "memlock", "pages": 4},
            {"op": "mlock", "addr": 0, "len": 2},
            {"op": "mlock", "addr": 0, "len": 6},
            {"op": "mlock", "addr": 0, "len": 4},
            {"op": "mmap", "addr": 8, "len": 1, "flags": ["private", "anonymous", "locked"]},
            {"op": "munlock", "addr": 0, "len": 4},
            {"op": "mmap", "addr": 8, "len": 3, "flags": ["private", "anonymous", "locked"]},
            {"op": "mlockall", "flags": ["future"]},
            {"op": "mmap", "addr": 12, "len": 2},
            {"op": "munlockall"},
            {"op": "memlock", "pages": 0},
            {"op": "mlock", "addr": 0, "len": 1},
            {"op": "mmap", "addr": 12, "len": 1, "flags": ["private", "anonymous", "locked"]},
            {"op": "mlockall", "flags": ["future"]},
        ],
        {
            "results.2.ret": 0,
            "results.3.errno": "ENOMEM",
            "results.4.ret": 0,
            "results.5.errno": "EAGAIN",
            "results.7.ret": 8,
            "results.8.ret": 0,
            "results.9.errno": "EAGAIN",
            "results.12.errno": "EPERM",
            "results.13.errno": "EPERM",
            "results.14.errno": "EPERM",
        },
    )


# --- mdwe_test.c ---------------------------------------------------------------------

X = ["ex", "me", "mr", "mw"]


def test_mdwe_prctl_and_refusals() -> None:
    """NO_INHERIT alone is EINVAL; the bits cannot change once set (EPERM); under MDWE
    mmap(rwx) and mprotect to rwx or exec gain are EACCES, while exec-only and r-x
    mappings and exec-keeping changes are fine; NO_INHERIT children start without it."""
    check(
        [
            {"op": "mmap", "addr": 0, "len": 2, "prot": "rwx"},
            {"op": "mmap", "addr": 2, "len": 2, "prot": "r"},
            {"op": "mmap", "addr": 4, "len": 2, "prot": "x"},
            {"op": "mdwe", "flags": ["no_inherit"]},
            {"op": "mdwe"},
            {"op": "mdwe", "flags": ["refuse_exec_gain", "no_inherit"]},
            {"op": "mmap", "addr": 6, "len": 2, "prot": "rwx"},
            {"op": "mmap", "addr": 6, "len": 2, "prot": "rx"},
            {"op": "mprotect", "addr": 2, "len": 2, "prot": "rx"},
            {"op": "mprotect", "addr": 4, "len": 2, "prot": "rx"},
            {"op": "mprotect", "addr": 0, "len": 2, "prot": "rwx"},
            {"op": "mprotect", "addr": 0, "len": 2, "prot": "r"},
            {"op": "mprotect", "addr": 0, "len": 2, "prot": "rx"},
        ],
        {
            "results.3.errno": "EINVAL",
            "results.4.ret": 1,
            "results.5.errno": "EPERM",
            "results.6.errno": "EACCES",
            "results.7.ret": 6,
            "results.8.errno": "EACCES",
            "results.9.ret": 0,
            "results.10.errno": "EACCES",
            "results.11.ret": 0,
            "results.12.errno": "EACCES",
        },
    )
    check(
        [
            {"op": "mdwe", "flags": ["refuse_exec_gain", "no_inherit"]},
            {"op": "fork", "child": [{"op": "mmap", "addr": 0, "len": 1, "prot": "rwx"}]},
            {"op": "mmap", "addr": 0, "len": 1, "prot": "rwx"},
        ],
        {"results.0.ret": 3, "results.1.child.results.0.ret": 0, "results.2.errno": "EACCES"},
    )
    check(
        [
            {"op": "mdwe"},
            {"op": "fork", "child": [{"op": "mmap", "addr": 0, "len": 1, "prot": "rwx"}]},
        ],
        {"results.1.child.results.0.errno": "EACCES"},
    )


def test_mincore() -> None:
    """Present PTEs are resident; file and shmem VMAs report page-cache pages even
    where nothing is mapped; guard markers and anonymous holes are not; a hole in the
    range is ENOMEM."""
    check(
        [
            {"op": "memfd", "file": 0},
            {"op": "ftruncate", "file": 0, "pages": 8},
            {"op": "pwrite", "file": 0, "offset": 2, "len": 2},
            {"op": "mmap", "addr": 0, "len": 6},
            {"op": "write", "addr": 1, "len": 1},
            {"op": "read", "addr": 3, "len": 1},
            {"op": "madvise", "addr": 4, "len": 1, "advice": "guard_install"},
            {"op": "mincore", "addr": 0, "len": 6},
            {"op": "mmap", "addr": 8, "len": 6, "prot": "r", "flags": ["private"], "file": 0},
            {"op": "mincore", "addr": 8, "len": 6},
            {"op": "mincore", "addr": 4, "len": 6},
            {"op": "mmap", "addr": 16, "len": 2, "flags": ["shared", "anonymous"]},
            {"op": "write", "addr": 17, "len": 1},
            {"op": "madvise", "addr": 17, "len": 1, "advice": "dontneed"},
            {"op": "mincore", "addr": 16, "len": 2},
        ],
        {
            "results.7.ret": "010100",
            "results.9.ret": "001100",
            "results.10.errno": "ENOMEM",
            "results.14.ret": "01",
        },
        arena=24,
    )


# --- protection keys (pkey tests, protection_keys.c) on a CPU without OSPKE -------------


def test_pkeys_without_ospke_and_execute_only_memory() -> None:
    """The project's machine exposes no OSPKE: the first pkey_alloc is EINVAL (and leaks
    key 0), then ENOSPC; pkey_free and pkey_mprotect with a key are EINVAL, key -1 is
    mprotect; PROT_EXEC-only memory gets no execute-only key, so loads succeed (stores
    fault); a fork child inherits the allocation map."""
    if _ospke():
        pytest.skip("the model implements protection keys only for CPUs without OSPKE")
    check(
        [
            {"op": "mmap", "addr": 0, "len": 4},
            {"op": "pkey_mprotect", "addr": 0, "len": 2, "prot": "r", "key": 0},
            {"op": "pkey_mprotect", "addr": 0, "len": 2, "prot": "r", "key": -1},
            {"op": "pkey_free", "key": 0},
            {"op": "pkey_alloc", "rights": ["disable_write"]},
            {"op": "pkey_alloc"},
            {"op": "pkey_free", "key": 1},
            {"op": "pkey_mprotect", "addr": 0, "len": 0, "prot": "r", "key": 5},
            {"op": "mmap", "addr": 8, "len": 2, "prot": "x"},
            {"op": "read", "addr": 8, "len": 2},
            {"op": "write", "addr": 8, "len": 1},
            {"op": "fork", "child": [{"op": "pkey_alloc"}]},
        ],
        {
            "results.1.errno": "EINVAL",
            "results.2.ret": 0,
            "results.3.errno": "EINVAL",
            "results.4.errno": "EINVAL",
            "results.5.errno": "ENOSPC",
            "results.6.errno": "EINVAL",
            "results.7.ret": 0,
            "results.8.state.vmas.2": [8, 10, X],
            "results.9.data": "0000",
            "results.10.ret": "SIGSEGV",
            "results.11.child.results.0.errno": "ENOSPC",
        },
    )


def _ospke() -> bool:
    from vmalab.mm.pkeys import host_has_ospke

    return host_has_ospke()


# --- MADV_FREE and Kernel.reclaim() ------------------------------------------------------


def test_kernel_reclaim_discards_lazyfree_and_droppable_pages() -> None:
    """Model only: the kernel's reclaim needs memory pressure. MADV_PAGEOUT showing the
    same discard on the kernel is regression 046."""
    from vmalab import Kernel, uapi

    k = Kernel("sticky")
    p = k.spawn()
    a = p.mmap(0, 4 * 4096, 3, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS)
    d = p.mmap(0, 2 * 4096, 3, uapi.MAP_DROPPABLE | uapi.MAP_ANONYMOUS)
    p.write(a, b"\x07" * 4 * 4096)
    p.write(d, b"\x05" * 2 * 4096)
    p.madvise(a, 4 * 4096, uapi.MADV_FREE)
    p.write(a + 4096, b"\x09")  # dirtied again: kept
    assert [x & uapi.PM_PRESENT != 0 for x in p.pagemap(a, 4)] == [True] * 4
    assert k.reclaim() == 3 + 2
    assert [x & uapi.PM_PRESENT != 0 for x in p.pagemap(a, 4)] == [False, True, False, False]
    assert p.read(a, 1) == b"\x00" and p.read(a + 4096, 1) == b"\x09"
    assert p.read(d, 1) == b"\x00"
    k.check()


# --- THP (transhuge / split_huge_page tests, as far as the model has the state) --------


def test_thp_faults_huge_zero_page_and_split() -> None:
    """enabled=madvise: a write fault in an aligned 2 MiB range of a MADV_HUGEPAGE VMA
    maps all 512 pages; a read maps the huge zero page (pagemap: present, not anonymous:
    F), a later write turns it into a THP; a partial DONTNEED splits the huge zero PMD
    into 4K zero pages (A); VMAs not covering the aligned range, or NOHUGEPAGE ones, get
    4K pages (all measured on the kernel when written)."""
    from vmalab.mm.khugepaged import host_thp_mode

    if host_thp_mode() != "madvise":
        pytest.skip("recorded with THP enabled=madvise")
    F512, A512, D512 = "F" * 512, "A" * 512, "." * 512

    def pad(x: str) -> str:
        return x + " " * (2048 - len(x))

    check(
        [
            {"op": "mmap", "addr": 0, "len": 1024},
            {"op": "madvise", "addr": 0, "len": 1024, "advice": "hugepage"},
            {"op": "read", "addr": 5, "len": 1},
            {"op": "write", "addr": 600, "len": 1},
            {"op": "write", "addr": 7, "len": 1},
            {"op": "madvise", "addr": 512, "len": 2, "advice": "dontneed"},
            {"op": "mmap", "addr": 1024, "len": 512},
            {"op": "write", "addr": 1030, "len": 1},
            {"op": "madvise", "addr": 1024, "len": 512, "advice": "nohugepage"},
            {"op": "mmap", "addr": 1536, "len": 512},
            {"op": "madvise", "addr": 1536, "len": 512, "advice": "hugepage"},
            {"op": "read", "addr": 1600, "len": 1},
            {"op": "madvise", "addr": 1536, "len": 2, "advice": "dontneed"},
        ],
        {
            "results.2.state.pages": pad(F512 + D512),
            "results.3.state.pages": pad(F512 + A512),
            "results.4.state.pages": pad(A512 + A512),
            "results.5.state.pages": pad(A512 + ".." + "A" * 510),
            "results.7.state.pages": pad(A512 + ".." + "A" * 510 + "......A" + "." * 505),
            "results.12.state.pages": A512
            + ".."
            + "A" * 510
            + "......A"
            + "." * 505
            + ".."
            + "A" * 510,
        },
        arena=2048,
        live=False,
    )
    # Model only: khugepaged (every 10 s) may collapse the split ranges on the kernel
    # and refill their holes (docs/divergences.md, khugepaged-collapse). The same facts
    # without holes left behind, on both:
    check(
        [
            {"op": "mmap", "addr": 0, "len": 1024},
            {"op": "madvise", "addr": 0, "len": 1024, "advice": "hugepage"},
            {"op": "read", "addr": 5, "len": 1},
            {"op": "write", "addr": 600, "len": 1},
            {"op": "write", "addr": 7, "len": 1},
        ],
        {
            "results.2.state.pages": F512 + D512,
            "results.3.state.pages": F512 + A512,
            "results.4.state.pages": A512 + A512,
        },
        arena=1024,
    )
