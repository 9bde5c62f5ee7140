"""validate_mm: the per-mm walk of ``Kernel.check()``.

Models mm/vma.c:validate_mm (CONFIG_DEBUG_VM_MAPLE_TREE), widened to every invariant
``Kernel.check()`` has: the index against each VMA, the neighbour links, the anon_vma
chains, the files, the page tables and the mapcounts. Split from mm/vma.py, whose merge
and split code it checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vmalab.mm import hugetlb
from vmalab.mm.flags import (
    VM_ACCOUNT,
    VM_SHARED,
    VM_WIPEONFORK,
)
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, AnonVma, MmContext, MmStruct, VmArea
from vmalab.mm.page_alloc import KIND_ANON, KIND_FREE, KIND_PAGECACHE
from vmalab.mm.pagetable import _PAGE_PRESENT, PMD_SHIFT, PTE_MARKER_GUARD_ENTRY, PTRS_PER_PTE
from vmalab.mm.vma import is_shared_maywrite

if TYPE_CHECKING:
    from vmalab.mm.filemap import Inode


class IdTally:
    """A count per anon_vma id (ids run from 1 to ``MmContext.anon_vma_seq``): a list
    indexed by id while the ids are dense, a dict once most of them are freed."""

    __slots__ = ("dense", "sparse")

    def __init__(self, n_ids: int, n_live: int) -> None:
        self.dense: list[int] = []
        self.sparse: dict[int, int] | None = None
        if n_ids <= 4 * n_live + 1024:
            self.dense = [0] * (n_ids + 1)
        else:
            self.sparse = {}

    def add(self, ident: int) -> None:
        """One more for ``ident``."""
        sp = self.sparse
        if sp is None:
            if 0 <= ident < len(self.dense):
                self.dense[ident] += 1
                return
            self.sparse = sp = {i: c for i, c in enumerate(self.dense) if c}
            self.dense = []
        sp[ident] = sp.get(ident, 0) + 1

    def get(self, ident: int) -> int:
        """The count of ``ident``."""
        sp = self.sparse
        if sp is None:
            return self.dense[ident] if 0 <= ident < len(self.dense) else 0
        return sp.get(ident, 0)


class MmCheck:
    """What validate_mm gathers over every mm of one machine, for ``Kernel.check()``'s
    machine-wide invariants (slab counts, anon_vma counters, mapcounts, i_mmap).

    ``rem`` starts as each page's ``mapcount`` and loses one per PTE found mapping the
    page, so it ends all zero exactly when every mapcount is right; ``anon_mapped``
    counts the anonymous pages found mapped at least once.
    """

    __slots__ = (
        "anon_vmas",
        "check_vma",
        "kind",
        "owner",
        "mapcount",
        "rem",
        "anon_mapped",
        "n_vmas",
        "n_avcs",
        "n_tables",
        "committed",
        "active",
        "file_vmas",
        "writable",
        "inodes",
        "privates",
    )

    def __init__(self, ctx: MmContext, check_vma: Callable[[VmArea], str | None] | None) -> None:
        self.anon_vmas = ctx.anon_vmas
        #: The design's check_vma, or None when the design keeps no per-VMA invariant.
        self.check_vma = check_vma
        phys = ctx.phys
        self.kind = bytes(phys.kind)
        self.owner = phys.owner
        self.mapcount: list[int] = list(phys.mapcount)
        self.rem: list[int] = list(self.mapcount)
        self.anon_mapped = 0
        self.n_vmas = 0
        self.n_avcs = 0
        self.n_tables = 0
        self.committed = 0  # pages of VM_ACCOUNT VMAs
        #: VMAs whose anon_vma is each anon_vma (num_active_vmas).
        self.active = IdTally(ctx.anon_vma_seq, len(ctx.anon_vmas))
        #: id(inode) -> the VMAs mapping it, and those of them shared and writable.
        self.file_vmas: dict[int, int] = {}
        self.writable: dict[int, int] = {}
        #: Every inode a VMA maps, and every private hugetlb resv_map, by id().
        self.inodes: dict[int, Inode] = {}
        self.privates: dict[int, hugetlb.HugetlbPrivate] = {}


def _vma_where(who: str, v: VmArea) -> str:
    """A VMA named in a validate_mm message (built only when one is returned)."""
    return f"{who} vma {v.vm_start:#x}-{v.vm_end:#x}"


def validate_mm(mm: MmStruct, acc: MmCheck, who: str) -> str | None:  # noqa: C901
    """What is wrong with ``mm``'s VMAs, chains and page tables (None: nothing), its
    totals added to ``acc``; ``who`` ("pid N") starts each message.

    Models mm/vma.c:validate_mm (CONFIG_DEBUG_VM_MAPLE_TREE: the tree, each VMA's range
    against the tree, map_count) widened to what ``Kernel.check()`` verifies of one mm:
    each VMA's range, flags, design state, anon_vma chain and file, then its PTEs. Two
    walks, each in address order: the VMAs leaf by leaf (no per-VMA allocation), then
    the PTE tables, each non-none entry matched to the VMA holding it by advancing
    along ``vm_next`` (so an entry outside every VMA is found where it lies).
    """
    tree = mm.mm_mt
    bad = tree.check_shape()
    if bad is not None:
        return f"{who}: VMA index: {bad}"
    if mm.map_count != len(tree):
        return f"{who}: map_count {mm.map_count} != {len(tree)}"
    anon_vmas = acc.anon_vmas
    check_vma = acc.check_vma
    active = acc.active
    prev: VmArea | None = None
    prev_end = 0
    committed = 0
    n_avcs = 0
    for keys, vals in tree.leaves():
        for j in range(len(vals)):
            v = vals[j]
            vm_start, vm_end, vm_flags = v.vm_start, v.vm_end, v.vm_flags
            if keys[j] != vm_start:
                return f"{who}: VMA index: vma {vm_start:#x}-{vm_end:#x}: indexed at {keys[j]:#x}"
            if v.vm_prev is not prev:
                return (
                    f"{who}: VMA index: vma {vm_start:#x}-{vm_end:#x}: "
                    "vm_prev is not the previous VMA"
                )
            if prev is not None and prev.vm_next is not v:
                return (
                    f"{who}: VMA index: vma {prev.vm_start:#x}-{prev.vm_end:#x}: "
                    "vm_next is not the next VMA"
                )
            prev = v
            if v.vm_mm is not mm:
                return f"{_vma_where(who, v)}: vm_mm is another mm"
            if (vm_start | vm_end) & (PAGE_SIZE - 1):
                return f"{_vma_where(who, v)}: unaligned"
            if vm_start >= vm_end:
                return f"{_vma_where(who, v)}: empty"
            if vm_start < prev_end:
                return f"{_vma_where(who, v)}: overlaps the previous VMA"
            prev_end = vm_end
            if vm_flags & VM_ACCOUNT:
                committed += (vm_end - vm_start) >> PAGE_SHIFT
            f = v.vm_file
            if vm_flags & VM_SHARED and f is None:
                return f"{_vma_where(who, v)}: VM_SHARED without a file"
            if vm_flags & VM_WIPEONFORK and f is not None:
                return f"{_vma_where(who, v)}: VM_WIPEONFORK on a file VMA"
            if check_vma is not None:
                bad = check_vma(v)
                if bad is not None:
                    return f"{_vma_where(who, v)}: {bad}"
            chain = v.anon_vma_chain
            n = len(chain)
            av = v.anon_vma
            on_chain = False  # av among the chain's anon_vmas (found in the walk below)
            if n:
                seen: set[AnonVma] | None = set() if n > 8 else None
                for q in range(n):
                    avc = chain[q]
                    cav = avc.anon_vma
                    if cav is av:
                        on_chain = True
                    if avc.vma is not v:
                        return f"{_vma_where(who, v)}: chain entry of another VMA"
                    if avc not in cav.avcs:
                        return f"{_vma_where(who, v)}: chain entry missing from its anon_vma tree"
                    if anon_vmas.get(cav.id) is not cav:
                        return f"{_vma_where(who, v)}: chain to a freed anon_vma"
                    if seen is not None:
                        if cav in seen:
                            return f"{_vma_where(who, v)}: two chains to one anon_vma"
                        seen.add(cav)
                    else:
                        for r in range(q):
                            if chain[r].anon_vma is cav:
                                return f"{_vma_where(who, v)}: two chains to one anon_vma"
                n_avcs += n
            if av is not None:
                if not on_chain:
                    return f"{_vma_where(who, v)}: anon_vma not on its own chain"
                active.add(av.id)
            elif n:
                return f"{_vma_where(who, v)}: chain without an anon_vma"
            if f is not None:
                inode = f.inode
                if v not in inode.i_mmap:
                    return f"{_vma_where(who, v)}: missing from its file's i_mmap"
                key = id(inode)
                acc.inodes[key] = inode
                acc.file_vmas[key] = acc.file_vmas.get(key, 0) + 1
                if is_shared_maywrite(vm_flags):
                    acc.writable[key] = acc.writable.get(key, 0) + 1
            pd = v.vm_private_data
            if pd is not None and isinstance(pd, hugetlb.HugetlbPrivate):
                acc.privates[id(pd)] = pd
    if prev is not None and prev.vm_next is not None:
        return f"{who}: VMA index: vma {prev.vm_start:#x}-{prev.vm_end:#x}: last VMA has a vm_next"
    acc.n_vmas += len(tree)
    acc.n_avcs += n_avcs
    acc.committed += committed
    # The page tables, table by table in address order, against the VMAs.
    pt = mm.pgtables
    acc.n_tables += pt.nr_tables()
    kind = acc.kind
    nkind = len(kind)
    owner = acc.owner
    mapcount = acc.mapcount
    rem = acc.rem
    anon_mapped = 0
    cur = tree.first()
    tables = pt.pte
    for i in sorted(tables):
        t = tables[i]
        if t.count(0) == PTRS_PER_PTE:
            continue
        base = i << PMD_SHIFT
        ents: list[int] = t.tolist()
        for j in range(PTRS_PER_PTE):
            pte = ents[j]
            if not pte:
                continue
            a = base + (j << PAGE_SHIFT)
            while cur is not None and cur.vm_end <= a:
                cur = cur.vm_next
            if cur is None or cur.vm_start > a:
                return f"{who}: PTE at {a:#x} outside every VMA"
            if pte & _PAGE_PRESENT:
                pfn = pte >> 12
                if pfn >= nkind:
                    return f"{_vma_where(who, cur)}: PTE maps pfn {pfn} beyond memory"
                k = kind[pfn]
                if k == KIND_FREE:
                    return f"{_vma_where(who, cur)}: PTE maps a freed page {pfn}"
                if k == KIND_ANON:
                    folio_av = owner[pfn]
                    on_chain = False
                    for avc in cur.anon_vma_chain:
                        if avc.anon_vma.id == folio_av:
                            on_chain = True
                            break
                    if not on_chain:
                        return (
                            f"{_vma_where(who, cur)}: folio {pfn}'s anon_vma {folio_av} "
                            "is not on the VMA's chain"
                        )
                    r = rem[pfn]
                    if r == mapcount[pfn]:
                        anon_mapped += 1
                    rem[pfn] = r - 1
                elif k == KIND_PAGECACHE:
                    rem[pfn] -= 1
            elif pte != PTE_MARKER_GUARD_ENTRY:
                return f"{_vma_where(who, cur)}: unknown PTE {pte:#x}"
    acc.anon_mapped += anon_mapped
    return None
