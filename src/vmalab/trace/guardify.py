"""The guardify what-if: PROT_NONE guard pages rewritten into MADV_GUARD_INSTALL.

Programs written before Linux 6.13 make a guard page with ``mprotect(page, PROT_NONE)`` at
the edge of a mapping (glibc < 2.42 thread stacks, allocators) or by mapping a PROT_NONE
page next to one. Each such guard costs a VMA (the mapping is split, or the guard is its
own VMA). With MADV_GUARD_INSTALL the guard lives in the page tables and the mapping stays
one VMA; the designs differ in what that costs in anon_vma and anon_vma_chain objects.

:class:`GuardifyKernel` wraps a Kernel so that every Process it hands out (spawn, fork)
applies the rewrite; the trace replay and the workloads run unchanged on top of it. The
rewrite, for a range of at most ``max_pages`` pages:

* ``mprotect(a, n, PROT_NONE)`` where ``[a, a+n)`` lies inside one accessible mapping and
  touches its start or its end → ``madvise(a, n, MADV_GUARD_INSTALL)`` (the mapping keeps
  its protection and stays whole);
* ``mprotect(a, n, P)`` with P accessible, inside a PROT_NONE mapping, leaving at most
  ``max_pages`` PROT_NONE at one end and none at the other (glibc < 2.42 allocate_stack():
  mmap the stack PROT_NONE, mprotect all but the guard) → the whole mapping gets P and the
  remnant is guarded;
* ``mmap(a, n, PROT_NONE, private anonymous)`` directly below or above an accessible
  private anonymous mapping → the page is mapped with that neighbour's protection (so it
  merges) and guarded;
* a later ``mprotect`` of a rewritten range to an accessible protection (a guard taken
  away, as glibc does when it reuses a cached stack with a smaller guard) →
  ``MADV_GUARD_REMOVE`` plus the mprotect; ``munmap`` forgets the range.

Semantics that change under the rewrite, by design of the what-if: a read of the guard
page still faults (SIGSEGV) but mincore/pagemap report a guard marker, and the neighbour's
mprotect now covers the guard too. ``mmap(PROT_NONE)`` reservations larger than
``max_pages`` (malloc arenas, stack reservations) are left alone.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from vmalab import uapi
from vmalab.mm.flags import VM_SHARED
from vmalab.mm.mm_types import PAGE_SIZE

MAX_EXAMPLES = 5
"""Rewrites remembered word for word (for the report of what was rewritten)."""


@dataclass
class GuardifyStats:
    """What the rewrite did: guards installed instead of PROT_NONE, and guards taken away."""

    mprotect_rewritten: int = 0
    mmap_rewritten: int = 0
    removed: int = 0
    left_alone: int = 0
    ranges: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    examples: list[list[Any]] = field(default_factory=list)
    """The first :data:`MAX_EXAMPLES` rewrites as ``[line, text]`` (line None until
    :meth:`at` names it)."""

    def note(self, text: str) -> None:
        """Remember one rewrite (the first few only)."""
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append([None, text])

    def at(self, line: int) -> None:
        """The rewrites noted since the last call happened at ``line`` (trace line or step)."""
        for e in reversed(self.examples):
            if e[0] is not None:
                break
            e[0] = line

    def to_dict(self) -> dict[str, Any]:
        """The counters and examples as a JSON-ready dict (what ``compare`` and ``replay``
        print under ``guardify``)."""
        return {
            "mprotect_rewritten": self.mprotect_rewritten,
            "mmap_rewritten": self.mmap_rewritten,
            "removed": self.removed,
            "left_alone": self.left_alone,
            "examples": [list(e) for e in self.examples],
        }


_PROT_BITS = uapi.PROT_READ | uapi.PROT_WRITE | uapi.PROT_EXEC


@dataclass(frozen=True, slots=True)
class _Span:
    """A VMA's range and protection, as guardify's rewrite needs them."""

    start: int
    end: int
    prot: int
    anon_private: bool


class GuardifyProcess:
    """A Process proxy applying the guardify rewrite; everything else is delegated."""

    def __init__(self, raw: Any, stats: GuardifyStats, max_pages: int) -> None:
        self.raw = raw
        self._stats = stats
        self._max = max_pages * PAGE_SIZE
        self._guards = stats.ranges.setdefault(id(raw), set())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def _vma_at(self, addr: int) -> _Span | None:
        """The VMA containing ``addr`` (its range and protection), or None.

        One lookup in the model's VMA index (find_vma): building every VmaView per call
        made a guardified replay quadratic in the number of VMAs.
        """
        vma = self.raw.mm.vma_lookup(addr)
        if vma is None:
            return None
        return _Span(
            vma.vm_start,
            vma.vm_end,
            vma.vm_flags & _PROT_BITS,
            vma.vm_file is None and not vma.vm_flags & VM_SHARED,
        )

    @staticmethod
    def _prot(v: _Span) -> int:
        """PROT_* bits of a VMA (VM_READ/WRITE/EXEC share their bit positions)."""
        return v.prot

    def _install_guard(self, start: int, length: int, note: str, by_mmap: bool = False) -> None:
        """Install the guard region that stands for a PROT_NONE range; count the rewrite
        (of an mmap or an mprotect) and note it."""
        self.raw.madvise(start, length, uapi.MADV_GUARD_INSTALL)
        self._guards.add((start, length))
        if by_mmap:
            self._stats.mmap_rewritten += 1
        else:
            self._stats.mprotect_rewritten += 1
        self._stats.note(note)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect, with PROT_NONE edge pages turned into guard installs."""
        ln = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if prot == uapi.PROT_NONE and 0 < ln <= self._max and addr % PAGE_SIZE == 0:
            v = self._vma_at(addr)
            if (
                v is not None
                and addr + ln <= v.end
                and self._prot(v) != uapi.PROT_NONE
                and (addr == v.start or addr + ln == v.end)
                and v.end - v.start > ln
            ):
                self._install_guard(
                    addr,
                    ln,
                    f"mprotect({addr:#x}, {length}, PROT_NONE) -> "
                    f"madvise({addr:#x}, {ln}, MADV_GUARD_INSTALL)",
                )
                return
            self._stats.left_alone += 1
        elif prot != uapi.PROT_NONE and addr % PAGE_SIZE == 0 and ln:
            v = self._vma_at(addr)
            if v is not None and self._prot(v) == uapi.PROT_NONE and addr + ln <= v.end:
                lo, hi = addr - v.start, v.end - (addr + ln)
                if (lo == 0) != (hi == 0) and max(lo, hi) <= self._max:
                    g = (v.start, lo) if lo else (addr + ln, hi)
                    self.raw.mprotect(v.start, v.end - v.start, prot)
                    self._install_guard(
                        g[0],
                        g[1],
                        f"mprotect({addr:#x}, {length}, {prot:#x}) in PROT_NONE "
                        f"{v.start:#x}-{v.end:#x} -> mprotect of the whole mapping + "
                        f"madvise({g[0]:#x}, {g[1]}, MADV_GUARD_INSTALL)",
                    )
                    return
        if prot != uapi.PROT_NONE and self._guards:
            hit = [g for g in self._guards if g[0] < addr + ln and addr < g[0] + g[1]]
            for g in hit:
                self.raw.madvise(g[0], g[1], uapi.MADV_GUARD_REMOVE)
                self._guards.discard(g)
                self._stats.removed += 1
        self.raw.mprotect(addr, length, prot)

    def mprotect_ret(self, addr: int, length: int, prot: int) -> int:
        """:meth:`mprotect` in the replay's form (``Process.mprotect_ret``): 0, or -ENOMEM
        where the range has a hole."""
        try:
            self.mprotect(addr, length, prot)
        except OSError as e:
            if e.errno == errno.ENOMEM:
                return -errno.ENOMEM
            raise
        return 0

    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """mmap, with a small PROT_NONE page next to an anonymous mapping made a guard."""
        ln = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        anon_private = flags & uapi.MAP_ANONYMOUS and flags & uapi.MAP_TYPE == uapi.MAP_PRIVATE
        if (
            prot == uapi.PROT_NONE
            and anon_private
            and 0 < ln <= self._max
            and flags & (uapi.MAP_FIXED | uapi.MAP_FIXED_NOREPLACE)
        ):
            for nb in (self._vma_at(addr - 1) if addr else None, self._vma_at(addr + ln)):
                if nb is not None and nb.anon_private and self._prot(nb) != uapi.PROT_NONE:
                    r: int = self.raw.mmap(addr, length, self._prot(nb), flags, fd, offset)
                    self._install_guard(
                        r,
                        ln,
                        f"mmap({addr:#x}, {length}, PROT_NONE) -> mmap with the "
                        f"neighbour's protection + madvise({r:#x}, {ln}, "
                        "MADV_GUARD_INSTALL)",
                        by_mmap=True,
                    )
                    return r
            self._stats.left_alone += 1
        ret: int = self.raw.mmap(addr, length, prot, flags, fd, offset)
        return ret

    def munmap(self, addr: int, length: int) -> None:
        """munmap; rewritten guards inside the range are forgotten."""
        self.raw.munmap(addr, length)
        if self._guards:
            end = addr + length
            for g in [g for g in self._guards if addr <= g[0] and g[0] + g[1] <= end]:
                self._guards.discard(g)

    def fork(self) -> GuardifyProcess:
        """fork; the child inherits the record of rewritten guards."""
        child = GuardifyProcess(self.raw.fork(), self._stats, self._max // PAGE_SIZE)
        child._guards.update(self._guards)
        return child


class GuardifyKernel:
    """A Kernel proxy whose processes apply the guardify rewrite."""

    def __init__(self, raw: Any, max_pages: int = 16) -> None:
        self.raw = raw
        self.stats = GuardifyStats()
        self.max_pages = max_pages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def spawn(self) -> GuardifyProcess:
        """spawn a Process wrapped in the rewrite."""
        return GuardifyProcess(self.raw.spawn(), self.stats, self.max_pages)


def unwrap(p: Any) -> Any:
    """The real Process behind a (possibly) guardified one."""
    return getattr(p, "raw", p)
