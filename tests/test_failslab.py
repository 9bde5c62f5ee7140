"""Allocation-failure injection (failslab): every allocation point of a set of programs.

For each program, run it once to count its allocations, then once per allocation k with
the kth allocation failing. Every syscall must either succeed or fail the way the
kernel's error path does (ENOMEM/EAGAIN, or a fault answered with VM_FAULT_OOM), after
which ``Kernel.check()`` passes; once every process has exited nothing has leaked.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vmalab import DESIGNS, FailPolicy, Kernel, Process, SegmentationFault, uapi

P = 4096
BASE = 0x100000000
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED


def _anon_program(k: Kernel) -> list[Callable[[], object]]:
    p = k.spawn()
    state: dict[str, Process] = {}

    def fork() -> None:
        state["c"] = p.fork()

    def child_write() -> None:
        if "c" in state:
            state["c"].write(BASE + 3 * P, b"c")

    return [
        lambda: p.mmap(BASE, 16 * P, RW, ANON),
        lambda: p.write(BASE, b"x" * (3 * P)),
        lambda: p.madvise(BASE + 5 * P, P, uapi.MADV_GUARD_INSTALL),
        lambda: p.mmap(BASE + 20 * P, 4 * P, RW, ANON),
        lambda: p.madvise(BASE + 21 * P, P, uapi.MADV_GUARD_INSTALL),
        lambda: p.mprotect(BASE + 8 * P, 2 * P, uapi.PROT_READ),
        fork,
        child_write,
        lambda: p.write(BASE + P, b"y"),
        lambda: p.mprotect(BASE + 8 * P, 2 * P, RW),
        lambda: p.mremap(
            BASE + 20 * P, 4 * P, 8 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 40 * P
        ),
        lambda: p.munmap(BASE + 2 * P, 2 * P),
        lambda: p.fork().exit(),
    ]


def _file_program(k: Kernel) -> list[Callable[[], object]]:
    p = k.spawn()
    fd = p.memfd_create("f")
    q = k.spawn()
    qfd = q.open("/data", uapi.O_RDWR | uapi.O_CREAT)
    return [
        lambda: p.ftruncate(fd, 16 * P),
        lambda: p.mmap(BASE, 8 * P, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0),
        lambda: p.mmap(BASE + 8 * P, 8 * P, RW, uapi.MAP_PRIVATE | uapi.MAP_FIXED, fd, 8 * P),
        lambda: p.madvise(BASE + P, P, uapi.MADV_GUARD_INSTALL),
        lambda: p.madvise(BASE + 9 * P, P, uapi.MADV_GUARD_INSTALL),
        lambda: p.write(BASE + 10 * P, b"cow"),
        lambda: p.fork(),
        lambda: q.ftruncate(qfd, 4 * P),
        lambda: q.mmap(BASE, 4 * P, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, qfd, 0),
        lambda: q.madvise(BASE, 4 * P, uapi.MADV_POPULATE_WRITE),
        lambda: q.fork(),
        lambda: p.madvise(BASE, 16 * P, uapi.MADV_GUARD_REMOVE),
    ]


PROGRAMS = {"anon": _anon_program, "file": _file_program}


def _run(design: str, program: str, fail: FailPolicy | None) -> tuple[int, int]:
    """Run one program; return (allocations made, syscalls that failed)."""
    k = Kernel(design)
    ops = PROGRAMS[program](k)
    before = sum(s.allocs for s in k.slab().values())
    k.fail = fail
    failed = 0
    for op in ops:
        try:
            op()
        except OSError as e:
            # ENOMEM/EAGAIN from the failing path, or a knock-on error of a call that
            # works on what an earlier failed call did not create.
            assert e.errno in (12, 11) or failed, f"unexpected errno {e.errno}: {e}"
            failed += 1
        except SegmentationFault as e:
            # VM_FAULT_OOM, or an access to memory an earlier failed call did not map.
            assert e.signal == "SIGKILL" or failed, e
            failed += 1
        k.check()
    made = sum(s.allocs for s in k.slab().values()) - before
    k.fail = None
    for proc in k.processes:
        proc.exit()
    k.check()  # includes: every slab cache is empty
    return made, failed


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("design", DESIGNS)
def test_every_allocation_point(design: str, program: str) -> None:
    total, failed = _run(design, program, None)
    assert failed == 0
    assert total > 10
    injected = 0
    for nth in range(1, total + 1):
        policy = FailPolicy(nth=nth)
        _run(design, program, policy)
        injected += policy.failed
    assert injected == total  # every allocation point was reached and failed once


@pytest.mark.parametrize("design", DESIGNS)
def test_random_failures(design: str) -> None:
    for seed in range(20):
        _run(design, "anon", FailPolicy(probability=0.05, seed=seed))


def test_cache_filter() -> None:
    policy = FailPolicy(nth=1, caches=frozenset({"anon_vma"}))
    k = Kernel("eager", fail=policy)
    p = k.spawn()
    p.mmap(BASE, 4 * P, RW, ANON)
    with pytest.raises(OSError) as ei:
        p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
    assert ei.value.errno == 12
    k.check()
    assert p.pagemap(BASE)[0] == 0  # nothing installed
    p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)  # the second anon_vma allocation succeeds
    assert p.pagemap(BASE)[0] & uapi.PM_GUARD_REGION
