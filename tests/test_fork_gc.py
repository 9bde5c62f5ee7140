"""fork's host-side GC handling (mm/fork.py:_promote_young_objects): the objects a fork
makes skip the young generations, nothing stays frozen, and a program's own frozen
objects stay frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import vmalab

PAGE = 4096


@pytest.fixture
def proc() -> Iterator[vmalab.Process]:
    k = vmalab.Kernel("sticky")
    p = k.spawn()
    for i in range(50):
        a = 0x100000000 + 2 * i * PAGE
        p.mmap(a, PAGE, 3, 0x32)
        p.write(a, b"x")
    yield p
    k.check()


def test_fork_leaves_nothing_frozen_and_gc_on(proc: vmalab.Process) -> None:
    assert gc.get_freeze_count() == 0
    c = proc.fork()
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    # the child's VMAs are in the oldest generation, not the youngest
    young = {id(o) for o in gc.get_objects(generation=0)}
    vmas = list(c.mm.mm_mt.values())
    assert vmas and not any(id(v) in young for v in vmas)
    c.exit()


def test_fork_keeps_a_programs_frozen_objects(proc: vmalab.Process) -> None:
    marker: list[list[int]] = [[]]  # GC-tracked
    gc.freeze()
    try:
        assert gc.get_freeze_count() > 0
        assert not any(o is marker for o in gc.get_objects())  # frozen: in no generation
        c = proc.fork()
        assert gc.get_freeze_count() > 0
        assert not any(o is marker for o in gc.get_objects())  # not unfrozen by the fork
        c.exit()
    finally:
        gc.unfreeze()


def test_fork_restores_a_disabled_gc(proc: vmalab.Process) -> None:
    gc.disable()
    try:
        proc.fork().exit()
        assert not gc.isenabled()
    finally:
        gc.enable()
