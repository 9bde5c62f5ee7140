"""The core skips only the no-op hooks a design keeps from Design (MmContext.hooked_*)."""

from __future__ import annotations

import pytest

from vmalab import Kernel
from vmalab.designs.base import Design


@pytest.mark.parametrize("design", ["sticky", "tagged", "eager", "lossy", "tagged-fixed"])
def test_hooked_flags_follow_the_design_class(design: str) -> None:
    k = Kernel(design)
    cls = type(k._design)
    for hook in ("anon_vma_changed", "vma_dup", "vma_fork_dup", "vma_free"):
        own = getattr(cls, hook) is not getattr(Design, hook)
        assert getattr(k.ctx, f"hooked_{hook}") is own, hook


def test_an_interpreted_design_overriding_a_hook_is_called() -> None:
    calls: list[str] = []

    class Counting(Design):
        name = "counting-test"

        def vma_free(self, vma: object) -> None:  # type: ignore[override]
            calls.append("free")

        def anon_vma_changed(self, vma: object) -> None:  # type: ignore[override]
            calls.append("changed")

    k = Kernel(Counting())
    assert k.ctx.hooked_vma_free and k.ctx.hooked_anon_vma_changed
    assert not k.ctx.hooked_vma_dup and not k.ctx.hooked_vma_fork_dup
    p = k.spawn()
    a = p.mmap(0, 4096, 3, 0x22)
    p.write(a, b"x")
    p.munmap(a, 4096)
    k.check()
    assert "changed" in calls and "free" in calls
