"""``Process.mprotect_ret`` and ``madvise_ret``: the hole's ENOMEM returned, not raised.

They must leave the model exactly as ``mprotect``/``madvise`` leave it (the kernel changes
the VMAs before a hole, then fails with ENOMEM), return ``-ENOMEM`` where those raise it,
and raise every other error as they do. Checked on random layouts with holes against the
raising forms, with ``Kernel.check()`` after every call.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import Kernel, uapi

P = 4096
BASE = 0x7F0000000000
RW = uapi.PROT_READ | uapi.PROT_WRITE
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
ADVICE = [uapi.MADV_NORMAL, uapi.MADV_DONTNEED, uapi.MADV_GUARD_INSTALL, uapi.MADV_GUARD_REMOVE]


def _two(holes: list[int]) -> tuple[object, object]:
    """Two kernels with the same 16-page layout: a mapping with the pages of ``holes``
    unmapped and the rest written."""
    ps = []
    for _ in range(2):
        k = Kernel("tagged")
        p = k.spawn()
        p.mmap(BASE, 16 * P, RW, ANON)
        p.write(BASE, b"x" * (16 * P))
        for h in holes:
            p.munmap(BASE + h * P, P)
        ps.append((k, p))
    return ps[0], ps[1]


def _outcome(fn: object, *args: int) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as e:
        assert e.errno is not None
        return -e.errno
    return 0


@settings(max_examples=60, deadline=None)
@given(
    holes=st.lists(st.integers(0, 15), max_size=4, unique=True),
    start=st.integers(0, 15),
    npages=st.integers(1, 16),
    prot=st.sampled_from([uapi.PROT_NONE, uapi.PROT_READ, RW]),
    advice=st.sampled_from(ADVICE),
)
def test_ret_forms_match_the_raising_forms(
    holes: list[int], start: int, npages: int, prot: int, advice: int
) -> None:
    (k1, p1), (k2, p2) = _two(holes)
    addr, length = BASE + start * P, npages * P
    assert p2.mprotect_ret(addr, length, prot) == _outcome(p1.mprotect, addr, length, prot)
    assert p2.madvise_ret(addr, length, advice) == _outcome(p1.madvise, addr, length, advice)
    k1.check()
    k2.check()
    assert p1.smaps() == p2.smaps()
    assert p1.pagemap(BASE, 16) == p2.pagemap(BASE, 16)


def test_hole_returns_enomem_after_changing_the_vma_before_it() -> None:
    (_k1, _p1), (k, p) = _two([4])
    assert p.mprotect_ret(BASE, 8 * P, uapi.PROT_READ) == -errno.ENOMEM
    assert p.vmas()[0].start == BASE and p.vmas()[0].end == BASE + 4 * P
    assert "wr" not in p.vmas()[0].flags  # VmFlags: the part before the hole lost write
    assert p.madvise_ret(BASE, 8 * P, uapi.MADV_DONTNEED) == -errno.ENOMEM
    assert not any(e & uapi.PM_PRESENT for e in p.pagemap(BASE, 4))
    k.check()


def test_other_errors_still_raise() -> None:
    (_k1, _p1), (_k, p) = _two([])
    with pytest.raises(OSError) as ei:
        p.mprotect_ret(BASE + 1, P, RW)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        p.madvise_ret(BASE, P, 12345)
    assert ei.value.errno == errno.EINVAL
