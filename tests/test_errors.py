"""The error family of vmalab.errors: what each failure raises."""

from __future__ import annotations

import errno

import pytest
from mmtest_util import BASE, RW, P

from vmalab import Kernel, ResourceLimitError, uapi
from vmalab.budget import Budget
from vmalab.errors import KernelError, UserInputError, kernel_error

ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED


def test_kernel_error_is_an_oserror_with_the_errno() -> None:
    e = kernel_error(errno.ENOENT, "no such file")
    assert isinstance(e, KernelError) and isinstance(e, OSError)
    assert e.errno == errno.ENOENT and str(e.strerror).startswith("ENOENT: ")


def test_syscall_failures_are_kernel_errors() -> None:
    k = Kernel("sticky")
    p = k.spawn()
    with pytest.raises(KernelError) as ei:
        p.munmap(BASE + 1, P)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(KernelError) as ei:
        p.open("/no/such/file", uapi.O_RDONLY)
    assert ei.value.errno == errno.ENOENT
    p.mmap(BASE, 4 * P, RW, ANON)
    with pytest.raises(KernelError) as ei:
        p.madvise(BASE, 4 * P, 12345)
    assert ei.value.errno == errno.EINVAL
    k.check()


def test_a_budget_breach_is_not_an_oserror() -> None:
    k = Kernel("sticky", budget=Budget(vmas=2))
    p = k.spawn()
    with pytest.raises(ResourceLimitError) as ei:
        for i in range(8):
            p.mmap(BASE + 2 * i * P, P, RW, ANON)
    assert not isinstance(ei.value, OSError) and ei.value.resource == "vmas"
    k.check()


def test_user_input_error_names_its_location() -> None:
    e = UserInputError("prog.json:3", "bad op")
    assert str(e) == "prog.json:3: bad op" and e.location == "prog.json:3"


@pytest.mark.parametrize("length", [-1, -4096, -8192])
def test_mseal_negative_length_is_einval(length: int) -> None:
    """len is an unsigned long: a negative one wraps and the range overflows (measured on
    6.18: EINVAL for each of these, nothing sealed). The model sealed [addr - 8192, addr)
    for -8192 and crashed on -4096 before madvise and mseal shared user_range_end()."""
    k = Kernel("sticky")
    p = k.spawn()
    p.mmap(BASE, 8 * P, RW, ANON)
    with pytest.raises(KernelError) as ei:
        p.mseal(BASE + 4 * P, length)
    assert ei.value.errno == errno.EINVAL
    assert all("sl" not in v.flags for v in p.vmas())
    k.check()
