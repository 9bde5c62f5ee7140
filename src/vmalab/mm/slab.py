"""Slab caches: object accounting for the kernel objects the model allocates.

Models the accounting side of mm/slub.c (``kmem_cache_alloc``/``kmem_cache_free`` as
counted by /proc/slabinfo ``active_objs``) and the failure injection of
mm/failslab.c (``should_failslab()``). Object sizes are the slabinfo ``objsize`` values
measured on the project's 6.18.44 kernel (``live-kernel-facts.md`` 4.5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final, Protocol

SLAB_SIZES: Final[dict[str, int]] = {
    "vm_area_struct": 192,
    "anon_vma": 104,
    "anon_vma_chain": 64,
    "mm_struct": 1600,
    # Page-table pages come from the page allocator, not a slab; vmalab counts them in a
    # pseudo-cache so that one table shows all of the kernel memory the designs differ in.
    "pgtable": 4096,
}


class AllocFailure(Exception):
    """An injected allocation failure (the kernel's allocator returned NULL)."""


class Budget(Protocol):
    """What the allocators ask of vmalab's host-safety limits (``vmalab.budget.Budget``
    has it; it lives above mm/, so mm/ sees it only through this protocol)."""

    pages: int | None
    stored_bytes: int | None
    vmas: int | None
    pgtables: int | None

    @property
    def breach(self) -> object:
        """The pending breach (None when there is none)."""

    @property
    def deadline(self) -> float | None:
        """When the wall-time budget runs out (None: no time limit)."""

    def check_alloc(self, resource: str, used: int, limit: int | None, what: str) -> None:
        """Refuse (raise an AllocFailure) an allocation past ``limit``."""

    def trip(self, resource: str, limit: float, what: str) -> AllocFailure:
        """Record a breach that the syscall boundary raises."""
        ...


@dataclass
class SlabStats:
    """One cache's counters, as ``Kernel.slab()`` reports them."""

    name: str
    objsize: int
    active: int = 0
    allocs: int = 0
    frees: int = 0

    @property
    def bytes(self) -> int:
        """``active * objsize``."""
        return self.active * self.objsize


@dataclass
class FailPolicy:
    """When to fail an allocation, like the kernel's failslab fault-injection knobs.

    ``nth``: fail the nth allocation (1-based) counted over ``caches`` (or all caches
    when ``caches`` is empty); ``probability``: fail each allocation with this
    probability, drawn from ``random.Random(seed)``; ``times``: at most this many
    failures (-1 for no limit).
    """

    nth: int | None = None
    probability: float = 0.0
    seed: int = 0
    caches: frozenset[str] = frozenset()
    times: int = -1
    seen: int = 0
    failed: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def should_fail(self, cache: str) -> bool:
        """Models mm/failslab.c:should_failslab for one allocation from ``cache``."""
        if self.caches and cache not in self.caches:
            return False
        if self.times >= 0 and self.failed >= self.times:
            return False
        self.seen += 1
        fail = (self.nth is not None and self.seen == self.nth) or (
            self.probability > 0 and self._rng.random() < self.probability
        )
        if fail:
            self.failed += 1
        return fail


class Slabs:
    """All caches of one ``Kernel``."""

    __slots__ = (
        "caches",
        "fail",
        "budget",
        "vm_area_cachep",
        "anon_vma_cachep",
        "anon_vma_chain_cachep",
        "mm_cachep",
        "pgtable_cachep",
    )

    def __init__(self, fail: FailPolicy | None = None, budget: Budget | None = None) -> None:
        self.caches = {n: SlabStats(n, s) for n, s in SLAB_SIZES.items()}
        self.fail = fail
        self.budget = budget
        # The caches by their kernel variable (kernel/fork.c vm_area_cachep, mm/rmap.c
        # anon_vma_cachep and anon_vma_chain_cachep, kernel/fork.c mm_cachep).
        self.vm_area_cachep = self.caches["vm_area_struct"]
        self.anon_vma_cachep = self.caches["anon_vma"]
        self.anon_vma_chain_cachep = self.caches["anon_vma_chain"]
        self.mm_cachep = self.caches["mm_struct"]
        self.pgtable_cachep = self.caches["pgtable"]

    def alloc(self, st: SlabStats) -> None:
        """Account one allocation from cache ``st``; raises AllocFailure if injected.

        Models mm/slub.c:kmem_cache_alloc (and the page allocator for page tables). The
        ``budget`` (vmalab's host-safety limits, not kernel behaviour) refuses a VMA or
        page-table page past its limit with LimitFailure, an AllocFailure.
        """
        b = self.budget
        if b is not None:
            if st is self.vm_area_cachep:
                resource, limit = "vmas", b.vmas
            elif st is self.pgtable_cachep:
                resource, limit = "pgtables", b.pgtables
            else:
                resource, limit = st.name, None
            # check_alloc() refuses only with a breach pending, a deadline set (and
            # passed) or the cache's limit reached: it is called only when one may hold.
            if (
                b.breach is not None
                or b.deadline is not None
                or (limit is not None and st.active >= limit)
            ):
                b.check_alloc(resource, st.active, limit, st.name)
        if self.fail is not None and self.fail.should_fail(st.name):
            raise AllocFailure(st.name)
        st.active += 1
        st.allocs += 1

    @staticmethod
    def free(st: SlabStats) -> None:
        """Account one free to cache ``st``. Models mm/slub.c:kmem_cache_free."""
        st.active -= 1
        st.frees += 1
