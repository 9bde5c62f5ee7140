"""A design with per-VMA state, written as one file (designs_example/guard_count.py).

The design keeps a guard count in ``vma.design_state`` and the core tells it of every
split, move, merge, fork and free; these tests check that it keeps guards across fork as
the sticky design does, that its state goes with each VMA, and that ``Kernel.check()``
(which runs the design's own ``check_vma``) passes in random runs.
"""

from __future__ import annotations

import pytest
from designs_example.guard_count import GuardCount, GuardCountDesign
from hypothesis import HealthCheck, settings
from mmtest_util import BASE, P, try_read
from test_properties import OpsMachine

from vmalab import Kernel, Process, uapi
from vmalab.designs import DESIGNS

RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED


def _state(proc: Process, addr: int) -> GuardCount | None:
    vma = proc.mm.vma_lookup(addr)
    assert vma is not None
    st = vma.design_state
    assert st is None or isinstance(st, GuardCount)
    return st


def test_state_follows_split_merge_fork_and_is_freed() -> None:
    design = GuardCountDesign()
    assert design.name not in DESIGNS  # lives only in the tests
    k = Kernel(design)
    p = k.spawn()
    p.mmap(BASE, 8 * P, RW, ANON)
    p.madvise(BASE + 2 * P, 2 * P, uapi.MADV_GUARD_INSTALL)
    st = _state(p, BASE)
    assert st is not None and st.count == 2
    assert k.slab()["anon_vma"].active == 0  # no anon_vma: the count alone is the state

    p.mprotect(BASE + 5 * P, P, uapi.PROT_READ)  # split into three: each gets the count
    states = [_state(p, BASE + i * P) for i in (0, 5, 6)]
    assert len({id(s) for s in states}) == 3  # one object per VMA
    assert all(s is not None and s.count == 2 for s in states)
    assert design.live == 3
    k.check()

    p.mprotect(BASE + 5 * P, P, RW)  # merged back: the survivor adds the removed counts
    st = _state(p, BASE)
    assert st is not None and st.count == 6
    assert p.mm.map_count == 1
    assert design.live == 1 and design.freed == 2  # the merged-away VMAs freed theirs

    c = p.fork()
    for i in (2, 3):
        assert not try_read(c, BASE + i * P)  # guards kept across fork, as sticky
    cst = _state(c, BASE)
    assert cst is not None and cst is not st and cst.count == 6
    k.check()

    p.madvise(BASE, 8 * P, uapi.MADV_GUARD_REMOVE)  # whole VMA: count 0, fork copies nothing
    st = _state(p, BASE)
    assert st is not None and st.count == 0
    c2 = p.fork()
    assert try_read(c2, BASE + 2 * P)
    k.check()

    for proc in (c2, c, p):
        proc.exit()
    k.check()
    assert design.live == 0  # every GuardCount went with its VMA (the vma_free hook)
    assert {n: s.active for n, s in k.slab().items() if s.active} == {}


def test_state_follows_mremap_move() -> None:
    design = GuardCountDesign()
    k = Kernel(design)
    p = k.spawn()
    p.mmap(BASE, 4 * P, RW, ANON)
    p.madvise(BASE + P, P, uapi.MADV_GUARD_INSTALL)
    dst = BASE + 64 * P
    p.mremap(BASE, 4 * P, 4 * P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, dst)
    st = _state(p, dst)
    assert st is not None and st.count == 1
    c = p.fork()
    assert not try_read(c, dst + P)
    k.check()
    c.exit()
    p.exit()
    assert design.live == 0


def test_check_catches_a_count_below_the_markers() -> None:
    from vmalab import InvariantError

    design = GuardCountDesign()
    k = Kernel(design)
    p = k.spawn()
    p.mmap(BASE, 4 * P, RW, ANON)
    p.madvise(BASE, 2 * P, uapi.MADV_GUARD_INSTALL)
    st = _state(p, BASE)
    assert st is not None
    st.count = 1  # corrupt the design's state: its own invariant catches it
    with pytest.raises(InvariantError, match="guard markers but a count of 1"):
        k.check()
    st.count = 2
    k.check()


class GuardCountMachine(OpsMachine):
    """The property machine of test_properties on the guard-count design: random ops,
    ``Kernel.check()`` after each, the child's guards equal the parent's at each fork,
    no slab object left at the end, and every design state freed."""

    fork_property = True

    def __init__(self) -> None:
        self.design = GuardCountDesign()
        self.designs = (self.design,)  # type: ignore[assignment]
        super().__init__()

    def teardown(self) -> None:
        super().teardown()
        assert self.design.live == 0, f"{self.design.live} design states not freed"


def test_guard_count_state_machine() -> None:
    GuardCountMachine.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    GuardCountMachine.TestCase().runTest()
