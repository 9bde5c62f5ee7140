"""Compact model state (issue 13, memory): page contents and anon_vma trees.

Page contents are stored by what was written (``vmalab.mm.page_alloc.PhysMem.data``):
the compact forms (an immutable ``bytes`` prefix shared by CoW copies, a private 4 KiB
``bytearray`` past ``PROMOTE``) must read back exactly what a whole 4 KiB buffer per
written page holds, keep ``pfn in data`` as the "written" mark, and account ``stored``.
``AnonVma.avcs`` changes form with its size and stays what ``Kernel.check()`` expects.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab import Kernel, uapi
from vmalab.budget import Budget
from vmalab.errors import ResourceLimitError
from vmalab.mm.mm_types import AVCS_LIST_MAX
from vmalab.mm.page_alloc import KIND_ANON, PROMOTE, PhysMem

PAGE = 4096
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS


class _Reference:
    """The representation before: one 4 KiB bytearray per written page."""

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}

    def read(self, pfn: int, off: int, n: int) -> bytes:
        d = self.data.get(pfn)
        return bytes(d[off : off + n]) if d is not None else bytes(n)

    def write(self, pfn: int, off: int, b: bytes) -> None:
        d = self.data.setdefault(pfn, bytearray(PAGE))
        d[off : off + len(b)] = b

    def copy(self, dst: int, src: int) -> None:
        d = self.data.get(src)
        if d is not None:
            self.data[dst] = bytearray(d)
        else:
            self.data.pop(dst, None)

    def zero_range(self, pfn: int, off: int, n: int) -> None:
        d = self.data.get(pfn)
        if d is not None:
            d[off : off + n] = bytes(n)


_OFF = st.one_of(st.integers(0, 16), st.integers(PROMOTE - 8, PROMOTE + 8), st.integers(0, PAGE))
_OP = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 4), _OFF, st.integers(0, 600), st.integers(0, 3)),
    st.tuples(st.just("copy"), st.integers(1, 4), st.integers(1, 4), st.just(0), st.just(0)),
    st.tuples(st.just("zero"), st.integers(1, 4), _OFF, st.integers(0, 700), st.just(0)),
    st.tuples(st.just("free"), st.integers(1, 4), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OP, max_size=40))
def test_contents_read_back_as_whole_buffers(ops: list[tuple[str, int, int, int, int]]) -> None:
    pm, ref = PhysMem(), _Reference()
    for _ in range(4):
        pm.alloc(KIND_ANON, 1)
    for name, a, b, c, fill in ops:
        if name == "write":
            n = max(0, min(c, PAGE - b))
            data = bytes([fill]) * n if fill else bytes(range(n)) if n < 256 else bytes(n)
            pm.write(a, b, memoryview(data) if fill == 3 else data)
            ref.write(a, b, data)
        elif name == "copy":
            pm.copy(a, b)
            ref.copy(a, b)
        elif name == "zero":
            n = max(0, min(c, PAGE - b))
            pm.zero_range(a, b, n)
            ref.zero_range(a, b, n)
        else:
            pm.free(a)
            ref.data.pop(a, None)
            assert pm.alloc(KIND_ANON, 1) == a
        assert pm.data.keys() == ref.data.keys()
        assert pm.stored == sum(len(v) for v in pm.data.values())
        for pfn in range(1, 5):
            assert pm.read(pfn, 0, PAGE) == ref.read(pfn, 0, PAGE)
            assert pm.read(pfn, 100, 7) == ref.read(pfn, 100, 7)
            assert pm.read(pfn, PAGE - 3, 3) == ref.read(pfn, PAGE - 3, 3)
            assert type(pm.read(pfn, 0, 1)) is bytes
        for v in pm.data.values():
            assert len(v) <= PAGE
            assert type(v) is bytes or len(v) == PAGE


def test_a_written_byte_stores_one_byte() -> None:
    k = Kernel("tagged")
    p = k.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON, -1, 0)
    p.write(a + 1, b"x")
    (v,) = k.phys.data.values()
    assert v == b"\0x" and k.phys.stored == 2
    p.write(a + 3 * PAGE + PROMOTE, b"y")  # past PROMOTE: a private 4 KiB buffer
    assert sorted(len(v) for v in k.phys.data.values()) == [2, PAGE]
    assert p.read(a, 4) == b"\0x\0\0" and p.read(a + 3 * PAGE + PROMOTE - 1, 3) == b"\0y\0"
    k.check()


def test_copy_shares_contents() -> None:
    pm = PhysMem()
    src, big, dst, dst2 = (pm.alloc(KIND_ANON, 1) for _ in range(4))
    pm.write(src, 0, b"parent")
    pm.write(big, 0, b"q" * 100 + bytes(PAGE - 100))
    assert isinstance(pm.data[big], bytearray)
    pm.copy(dst, src)
    pm.copy(dst2, big)  # a private buffer is frozen (trailing zeroes dropped), then shared
    assert pm.data[dst] is pm.data[src] and pm.data[dst2] is pm.data[big] == b"q" * 100
    assert pm.stored == 2 * 6 + 2 * 100
    pm.write(dst, 1, b"C")
    assert pm.read(src, 0, 6) == b"parent" and pm.read(dst, 0, 6) == b"pCrent"


def test_cow_after_fork_reads_back() -> None:
    k = Kernel("tagged")
    p = k.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON, -1, 0)
    p.write(a, b"parent")
    p.write(a + PAGE, b"q" * PAGE)
    c = p.fork()
    c.write(a + PAGE, b"C")
    c.write(a + 1, b"c")
    p.write(a + 1, b"P")
    p.write(a + PAGE + 1, b"P")
    assert c.read(a, 6) == b"pcrent" and p.read(a, 6) == b"pPrent"
    assert c.read(a + PAGE, 3) == b"Cqq" and p.read(a + PAGE, 3) == b"qPq"
    assert k.phys.stored == sum(len(v) for v in k.phys.data.values())
    c.exit()
    k.check()


def test_stored_bytes_counts_what_is_stored() -> None:
    k = Kernel("tagged", budget=Budget(stored_bytes=PAGE))
    p = k.spawn()
    a = p.mmap(0, 64 * PAGE, RW, ANON, -1, 0)
    for i in range(64):  # 64 pages of 8 bytes: 512 bytes stored
        p.write(a + i * PAGE, b"12345678")
    assert k.phys.stored == 512
    with pytest.raises(ResourceLimitError):
        p.write(a, b"z" * PAGE)
    k.check()


def test_anon_vma_tree_forms() -> None:
    """``AnonVma.avcs``: () while empty, a list up to AVCS_LIST_MAX chains, then a set."""
    k = Kernel("tagged")
    p = k.spawn()
    n = 2 * AVCS_LIST_MAX
    a = p.mmap(0, 2 * n * PAGE, RW, ANON, -1, 0)
    p.write(a, b"x")
    (av,) = k.anon_vmas.values()
    assert isinstance(av.avcs, list) and len(av.avcs) == 1
    for i in range(n):  # every other page read-only: 2n VMAs on one anon_vma
        p.mprotect(a + (2 * i + 1) * PAGE, PAGE, uapi.PROT_READ)
        assert isinstance(av.avcs, list if len(av.avcs) <= AVCS_LIST_MAX else set)
        k.check()
    assert len(av.avcs) == 2 * n
    for i in range(2 * n - 1):
        p.munmap(a + i * PAGE, PAGE)
        k.check()
    assert len(av.avcs) == 1
    p.munmap(a, 2 * n * PAGE)
    assert not k.anon_vmas
    k.check()
