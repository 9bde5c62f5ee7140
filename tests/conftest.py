"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import vmalab
from vmalab import Kernel, Process


@pytest.fixture(params=vmalab.DESIGNS)
def kp(request: pytest.FixtureRequest) -> Iterator[tuple[Kernel, Process]]:
    """A Kernel of each design with one process; every invariant is checked at the end,
    and again after every process has exited (which includes: no slab object leaked)."""
    k = Kernel(request.param)
    p = k.spawn()
    yield k, p
    k.check()
    for proc in list(k.processes):
        proc.exit()
    k.check()
