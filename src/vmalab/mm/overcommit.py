"""The overcommit policy: the sysctls and memory sizes the commit charge reads.

Configuration only (``vmalab.mm.util`` does the accounting, and re-exports these names);
it imports nothing of the model but the page size, so that
``vmalab.mm.mm_types.MmContext`` can name it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from vmalab.mm.pagetable import PAGE_SHIFT

OVERCOMMIT_GUESS = 0
OVERCOMMIT_ALWAYS = 1
OVERCOMMIT_NEVER = 2


@dataclass(frozen=True)
class OvercommitConfig:
    """The sysctls and memory sizes __vm_enough_memory() reads.

    ``mode``: vm.overcommit_memory (0 guess, 1 always, 2 never); ``ratio`` and
    ``kbytes``: vm.overcommit_ratio / vm.overcommit_kbytes; ``totalram_pages`` and
    ``total_swap_pages``: MemTotal and SwapTotal in pages; ``hugetlb_pages``: the
    hugetlb pool (subtracted from RAM in vm_commit_limit); ``admin_reserve_kbytes`` and
    ``user_reserve_kbytes``: vm.admin_reserve_kbytes / vm.user_reserve_kbytes;
    ``committed_base``: pages committed by processes outside the model.
    """

    mode: int = OVERCOMMIT_GUESS
    ratio: int = 50
    kbytes: int = 0
    totalram_pages: int = (8 << 30) >> PAGE_SHIFT
    total_swap_pages: int = 0
    hugetlb_pages: int = 0
    admin_reserve_kbytes: int = 8192
    user_reserve_kbytes: int = 131072
    committed_base: int = 0

    def __post_init__(self) -> None:
        if self.mode not in (OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER):
            raise ValueError(f"overcommit mode must be 0, 1 or 2, not {self.mode!r}")
        for name in (
            "ratio",
            "kbytes",
            "totalram_pages",
            "total_swap_pages",
            "hugetlb_pages",
            "admin_reserve_kbytes",
            "user_reserve_kbytes",
            "committed_base",
        ):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name} must be a non-negative int, not {v!r}")

    def with_(self, **changes: int) -> OvercommitConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_host(cls, proc: str = "/proc") -> OvercommitConfig:
        """This machine's values (``committed_base`` stays 0). Unreadable files keep the
        defaults."""
        vals: dict[str, int] = {}
        try:
            with open(os.path.join(proc, "meminfo")) as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "SwapTotal"):
                        vals[key] = int(rest.split()[0])
        except OSError:
            pass
        kw: dict[str, int] = {}
        if "MemTotal" in vals:
            kw["totalram_pages"] = vals["MemTotal"] >> (PAGE_SHIFT - 10)
        if "SwapTotal" in vals:
            kw["total_swap_pages"] = vals["SwapTotal"] >> (PAGE_SHIFT - 10)
        for key, sysctl in (
            ("mode", "overcommit_memory"),
            ("ratio", "overcommit_ratio"),
            ("kbytes", "overcommit_kbytes"),
            ("admin_reserve_kbytes", "admin_reserve_kbytes"),
            ("user_reserve_kbytes", "user_reserve_kbytes"),
        ):
            try:
                with open(os.path.join(proc, "sys", "vm", sysctl)) as f:
                    kw[key] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        try:
            return cls(**kw)
        except ValueError:
            return cls()


_HOST: OvercommitConfig | None = None


def host_overcommit() -> OvercommitConfig:
    """``OvercommitConfig.from_host()``, read once per interpreter."""
    global _HOST
    if _HOST is None:
        _HOST = OvercommitConfig.from_host()
    return _HOST
