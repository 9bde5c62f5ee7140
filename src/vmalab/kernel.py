"""The Kernel: one machine's worth of model state, and its invariant checker.

A ``Kernel`` owns the active design, the slab caches, physical memory, the tmpfs and
the live processes. ``check()`` verifies every invariant the kernel guarantees (and no
more: the kernel does not promise maximal merging), in the spirit of
sortedcontainers' ``_check()``.
"""

from __future__ import annotations

import bisect
import errno
from collections import Counter
from typing import TYPE_CHECKING, Generic, TypeVar

from mypy_extensions import mypyc_attr

from vmalab.budget import Budget
from vmalab.designs import Design, get_design
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import huge_memory, khugepaged
from vmalab.mm.filemap import FileSystem, Inode
from vmalab.mm.flags import VM_ACCOUNT, VM_SHARED, VM_WIPEONFORK
from vmalab.mm.hugetlb import HugetlbPool, HugetlbPrivate, pool_of
from vmalab.mm.khugepaged import host_thp_mode
from vmalab.mm.memory import unmap_mapping_range
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, AnonVma, MmContext, MmStruct, VmArea
from vmalab.mm.page_alloc import KIND_ANON, KIND_FREE, KIND_PAGECACHE, PhysMem
from vmalab.mm.pagetable import (
    _PAGE_PRESENT,
    PMD_SHIFT,
    PTE_MARKER_GUARD_ENTRY,
    PTRS_PER_PTE,
    pte_walk,
)
from vmalab.mm.pkeys import host_has_ospke
from vmalab.mm.shm import ShmNamespace, ns_of
from vmalab.mm.slab import AllocFailure, FailPolicy, Slabs, SlabStats
from vmalab.mm.util import OvercommitConfig, host_overcommit, meminfo
from vmalab.mm.vma import is_shared_maywrite

if TYPE_CHECKING:
    from vmalab.process import Process

DEFAULT_MAX_MAP_COUNT = 65530

_T = TypeVar("_T")


@mypyc_attr(native_class=False)  # a descriptor
class _CtxAttr(Generic[_T]):
    """A Kernel attribute that lives in the Kernel's ``MmContext`` (read and written)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Kernel, objtype: type | None = None) -> _T:
        value: _T = getattr(obj.ctx, self.name)
        return value

    def __set__(self, obj: Kernel, value: _T) -> None:
        setattr(obj.ctx, self.name, value)


@mypyc_attr(native_class=False)  # a descriptor: mypyc has no property setters here
class _FailAttr:
    """``Kernel.fail``: the failure-injection policy, if any (settable; kept in Slabs)."""

    def __get__(self, obj: Kernel, objtype: type | None = None) -> FailPolicy | None:
        return obj.slabs.fail

    def __set__(self, obj: Kernel, policy: FailPolicy | None) -> None:
        obj.slabs.fail = policy


@mypyc_attr(native_class=False)  # _CtxAttr descriptors; tests monkeypatch methods
class Kernel:
    """A modelled Linux kernel running one design.

    ``Kernel(design="tagged", *, max_map_count=65530, fail=None, overcommit=None,
    budget=None)``: ``design`` is an id from ``vmalab.DESIGNS`` (or a ``Design`` instance,
    for prototypes); ``fail`` is a ``FailPolicy`` for allocation-failure injection
    (failslab); ``overcommit`` an ``OvercommitConfig`` (default: this machine's
    vm.overcommit_* sysctls and memory, read once); ``budget`` is a ``vmalab.budget.Budget``
    bounding the host memory and time the model may use (default ``Budget.from_env()``:
    generous limits that ``$VMALAB_BUDGET`` may change; ``Budget.unlimited()`` for none). A
    breach raises ``vmalab.errors.ResourceLimitError`` and leaves the state consistent.
    """

    def __init__(
        self,
        design: str | Design = "tagged",
        *,
        max_map_count: int = DEFAULT_MAX_MAP_COUNT,
        fail: FailPolicy | None = None,
        overcommit: OvercommitConfig | None = None,
        budget: Budget | None = None,
        pku: bool | None = None,
        thp: str | None = None,
        hugetlb_pages: dict[int, int] | None = None,
    ) -> None:
        self._design = get_design(design)
        #: The commit-charge policy (mm/util.c); default: the host's.
        overcommit = overcommit if overcommit is not None else host_overcommit()
        #: Whether the CPU has OSPKE (protection keys). Default: the host's; the model
        #: only implements the no-OSPKE behaviour (vmalab.mm.pkeys).
        pku = host_has_ospke() if pku is None else pku
        #: /sys/kernel/mm/transparent_hugepage/enabled: "always", "madvise" or "never"
        #: (default: the host's, "madvise" on the project's machine).
        thp = host_thp_mode() if thp is None else thp
        if thp not in ("always", "madvise", "never"):
            raise ValueError(f"thp must be 'always', 'madvise' or 'never', not {thp!r}")
        self.budget = budget if budget is not None else Budget.from_env()
        #: CONFIG_ANON_VMA_NAME: prctl(PR_SET_VMA_ANON_NAME) works only with it. Off as on
        #: this project's 6.18.44 kernel, which answers every PR_SET_VMA with EINVAL
        #: (measured); set it for a kernel that has it.
        self.anon_vma_name = False
        self._pid_seq = 0
        self._procs: dict[int, Process] = {}
        #: What mm/ sees of this machine (vmalab.mm.mm_types): the design's hooks, the
        #: slab caches, physical memory, the tmpfs, the configuration and the counters.
        #: The attributes below of the same names read and write it.
        self.ctx = MmContext(
            self._design,
            Slabs(fail, self.budget),
            PhysMem(self.budget),
            max_map_count=max_map_count,
            overcommit=overcommit,
            pku=pku,
            thp=thp,
            tasks=self._procs,
            unmap_mapping_range=unmap_mapping_range,
        )
        self.ctx.fs = FileSystem(self.ctx)
        self.ctx.shm_ns = ShmNamespace()
        #: The hugetlb pool: ``hugetlb_pages`` maps log2(huge page size) (21, 30) to
        #: nr_hugepages; default: this machine's (vmalab.mm.hugetlb).
        self.ctx.hugetlb = (
            HugetlbPool.from_host() if hugetlb_pages is None else HugetlbPool(hugetlb_pages)
        )

    # The machine state lives in self.ctx (vmalab.mm.mm_types.MmContext); these read and
    # write it under the names the Kernel has always had.
    max_map_count = _CtxAttr[int]()
    #: The commit-charge policy (mm/util.c) and vm_committed_as in pages.
    overcommit = _CtxAttr[OvercommitConfig]()
    vm_committed_as = _CtxAttr[int]()
    #: Charge the real kernel never gives back (a shrinking MREMAP_FIXED move, see
    #: mm/mremap.py), so that check() can still account for every committed page.
    commit_leaked = _CtxAttr[int]()
    pku = _CtxAttr[bool]()
    thp = _CtxAttr[str]()
    slabs = _CtxAttr[Slabs]()
    phys = _CtxAttr[PhysMem]()
    fs = _CtxAttr[FileSystem]()
    anon_vmas = _CtxAttr[dict[int, AnonVma]]()
    anon_vma_seq = _CtxAttr[int]()
    ino_seq = _CtxAttr[int]()
    #: Event counters (like /proc/vmstat): pgfault, fork_copy_vmas,
    #: fork_guard_markers_copied, fork_guard_markers_dropped.
    vmstat = _CtxAttr[Counter[str]]()

    @property
    def design(self) -> str:
        """The design id."""
        return self._design.name

    fail = _FailAttr()

    @property
    def processes(self) -> list[Process]:
        """The live processes, oldest first."""
        return list(self._procs.values())

    def alloc_pid(self) -> int:
        """The next pid. Models kernel/pid.c:alloc_pid (sequential, never reused)."""
        self._pid_seq += 1
        return self._pid_seq

    def attach_pid(self, proc: Process) -> None:
        """Make ``proc`` a live task of this kernel. Models kernel/pid.c:attach_pid."""
        self._procs[proc.pid] = proc

    def detach_pid(self, pid: int) -> None:
        """Forget the task ``pid`` at exit. Models kernel/pid.c:detach_pid."""
        del self._procs[pid]

    def spawn(self) -> Process:
        """A new process with an empty address space (mm_alloc + pgd_alloc)."""
        from vmalab.process import Process

        try:
            return Process._new(self)
        except AllocFailure:
            breach = self.budget.take()
            if breach is not None:
                raise breach from None
            raise kernel_error(errno.ENOMEM, "cannot allocate the mm") from None

    def slab(self) -> dict[str, SlabStats]:
        """Per-cache counters, like /proc/slabinfo (copies)."""
        return {
            n: SlabStats(s.name, s.objsize, s.active, s.allocs, s.frees)
            for n, s in self.slabs.caches.items()
        }

    def reclaim(self) -> int:
        """Reclaim what reclaim can take without swap; returns the pages freed.

        Models mm/vmscan.c:shrink_folio_list under memory pressure for the folios the
        model tracks: clean MADV_FREE'd (lazyfree) anonymous folios and MAP_DROPPABLE
        folios mapped once are unmapped and freed (later loads read zeros). Other
        anonymous memory stays (no swap); page-cache reclaim is not modelled here.
        """
        from vmalab.mm.flags import VM_DROPPABLE

        phys = self.phys
        freed = 0
        for proc in self._procs.values():
            for v in proc.mm.mm_mt.values():
                droppable = bool(v.vm_flags & VM_DROPPABLE)
                huge_memory.reclaim_split(proc.mm, v.vm_start, v.vm_end)
                for _i, t, j, pte in pte_walk(proc.mm.pgtables, v.vm_start, v.vm_end):
                    if not pte & _PAGE_PRESENT:
                        continue
                    pfn = pte >> 12
                    if (
                        phys.kind[pfn] == KIND_ANON
                        and phys.mapcount[pfn] == 1
                        and (droppable or pfn in phys.lazyfree)
                    ):
                        phys.free(pfn)
                        t[j] = 0
                        freed += 1
        return freed

    def khugepaged(
        self, *, max_ptes_none: int = 511, max_ptes_swap: int = 64, max_ptes_shared: int = 256
    ) -> int:
        """Run one full khugepaged scan over every process; returns the THPs collapsed.

        Models mm/khugepaged.c:khugepaged_do_scan → khugepaged_scan_mm_slot →
        hpage_collapse_scan_pmd → collapse_huge_page, with the sysfs knobs of
        /sys/kernel/mm/transparent_hugepage/khugepaged (defaults: khugepaged_init()'s,
        this machine's). The kernel scans 4096 pages every 10 s in the background; here
        one call is one whole pass (vmalab.mm.khugepaged).
        """
        cc = khugepaged.CollapseControl(
            is_khugepaged=True,
            max_ptes_none=max_ptes_none,
            max_ptes_swap=max_ptes_swap,
            max_ptes_shared=max_ptes_shared,
        )
        n = 0
        for proc in list(self._procs.values()):
            n += khugepaged.khugepaged_scan_mm_slot(proc.mm, cc)
        self.vmstat["thp_collapse_alloc"] += n
        return n

    def meminfo(self) -> dict[str, int]:
        """Lines of /proc/meminfo: ``CommitLimit``, ``Committed_AS`` (kB) and the hugetlb
        pool's ``HugePages_*`` (pages), ``Hugepagesize`` and ``Hugetlb`` (kB)."""
        return {**meminfo(self.ctx), **pool_of(self.ctx).meminfo()}

    # --- invariants --------------------------------------------------------------------

    def check(self) -> None:
        """Verify every invariant; raise InvariantError describing the first violation.

        Every invariant is tested with an explicit ``raise``, never ``assert``, so that the
        check also holds under ``python -O``.
        """
        try:
            self._check()
        except InvariantError:
            raise
        except AssertionError as e:
            raise InvariantError(str(e)) from None

    def _check(self) -> None:  # noqa: C901 - one flat list of invariants reads best
        phys = self.phys
        n_vmas = 0
        n_avcs = 0
        n_tables = 0
        active_vmas: Counter[int] = Counter()
        maps_of: Counter[int] = Counter()
        live_avcs = set()
        i_mmap_seen: dict[int, set[int]] = {}
        writable_seen: Counter[int] = Counter()
        committed = 0
        anon_vmas = self.anon_vmas
        check_vma = self._design.check_vma
        kind = phys.kind
        owner_of = phys.owner
        for proc in self._procs.values():
            mm: MmStruct = proc.mm
            if mm.dead:
                raise InvariantError(f"pid {proc.pid}: live process with a dead mm")
            prev_end = 0
            bad_index = mm.check_index()
            if bad_index is not None:
                raise InvariantError(f"pid {proc.pid}: VMA index: {bad_index}")
            if mm.map_count != len(mm.mm_mt):
                raise InvariantError(f"pid {proc.pid}: map_count {mm.map_count} != {len(mm.mm_mt)}")
            pt = mm.pgtables
            n_ptes = 0  # entries that are not pte_none, inside VMAs
            for v in mm.mm_mt.values():
                vm_start, vm_end, vm_flags = v.vm_start, v.vm_end, v.vm_flags
                if vm_flags & VM_ACCOUNT:
                    committed += (vm_end - vm_start) >> PAGE_SHIFT
                if v.vm_mm is not mm:
                    raise InvariantError(f"{_where(proc.pid, v)}: vm_mm is another mm")
                if (vm_start | vm_end) & (PAGE_SIZE - 1):
                    raise InvariantError(f"{_where(proc.pid, v)}: unaligned")
                if vm_start >= vm_end:
                    raise InvariantError(f"{_where(proc.pid, v)}: empty")
                if vm_start < prev_end:
                    raise InvariantError(f"{_where(proc.pid, v)}: overlaps the previous VMA")
                prev_end = vm_end
                if vm_flags & VM_SHARED:
                    if v.vm_file is None:
                        raise InvariantError(f"{_where(proc.pid, v)}: VM_SHARED without a file")
                if vm_flags & VM_WIPEONFORK:
                    if v.vm_file is not None:
                        raise InvariantError(f"{_where(proc.pid, v)}: VM_WIPEONFORK on a file VMA")
                av = v.anon_vma
                bad = check_vma(v)
                if bad is not None:
                    raise InvariantError(f"{_where(proc.pid, v)}: {bad}")
                chain = v.anon_vma_chain
                seen_avs = set()
                for avc in chain:
                    cav = avc.anon_vma
                    if avc.vma is not v:
                        raise InvariantError(f"{_where(proc.pid, v)}: chain entry of another VMA")
                    if avc not in cav.avcs:
                        raise InvariantError(
                            f"{_where(proc.pid, v)}: chain entry missing from its anon_vma tree"
                        )
                    if cav.id not in anon_vmas:
                        raise InvariantError(f"{_where(proc.pid, v)}: chain to a freed anon_vma")
                    if cav in seen_avs:
                        raise InvariantError(f"{_where(proc.pid, v)}: two chains to one anon_vma")
                    seen_avs.add(cav)
                    live_avcs.add(avc)
                n_avcs += len(chain)
                if av is not None:
                    if av not in seen_avs:
                        raise InvariantError(
                            f"{_where(proc.pid, v)}: anon_vma not on its own chain"
                        )
                    active_vmas[av.id] += 1
                else:
                    if chain:
                        raise InvariantError(f"{_where(proc.pid, v)}: chain without an anon_vma")
                if v.vm_file is not None:
                    inode = v.vm_file.inode
                    if v not in inode.i_mmap:
                        raise InvariantError(
                            f"{_where(proc.pid, v)}: missing from its file's i_mmap"
                        )
                    i_mmap_seen.setdefault(id(inode), set()).add(id(v))
                    if is_shared_maywrite(vm_flags):
                        writable_seen[id(inode)] += 1
                # Page tables of this VMA.
                for _i, t, lo, hi in pt.tables_in(vm_start, vm_end):
                    for j in range(lo, hi):
                        pte = t[j]
                        if not pte:
                            continue
                        n_ptes += 1
                        if pte & _PAGE_PRESENT:
                            pfn = pte >> 12
                            k = kind[pfn]
                            if k == KIND_FREE:
                                raise InvariantError(
                                    f"{_where(proc.pid, v)}: PTE maps a freed page {pfn}"
                                )
                            if k == KIND_ANON:
                                owner = owner_of[pfn]
                                if not any(a.id == owner for a in seen_avs):
                                    raise InvariantError(
                                        f"{_where(proc.pid, v)}: folio {pfn}'s anon_vma {owner} "
                                        "is not on the VMA's chain"
                                    )
                            if k == KIND_ANON or k == KIND_PAGECACHE:
                                maps_of[pfn] += 1
                        elif pte != PTE_MARKER_GUARD_ENTRY:
                            raise InvariantError(f"{_where(proc.pid, v)}: unknown PTE {pte:#x}")
            bad_huge = huge_memory.check_huge_pmds(mm)
            if bad_huge is not None:
                raise InvariantError(f"pid {proc.pid}: {bad_huge}")
            n_vmas += len(mm.mm_mt)
            # No PTE outside a VMA: every entry that is not pte_none was counted above
            # (the VMAs do not overlap); only when the totals differ is the stray found.
            if n_ptes != sum(PTRS_PER_PTE - t.count(0) for t in pt.pte.values()):
                spans = [(v.vm_start, v.vm_end) for v in mm.mm_mt.values()]
                for i, _t, j, _pte in pte_walk(pt, 0, 1 << 64):
                    a = (i << PMD_SHIFT) + (j << PAGE_SHIFT)
                    if not _covered(spans, a):
                        raise InvariantError(f"pid {proc.pid}: PTE at {a:#x} outside every VMA")
                raise InvariantError(f"pid {proc.pid}: PTE count drifted")  # pragma: no cover
            n_tables += mm.pgtables.nr_tables()
        # Slab accounting.
        sl = self.slabs.caches
        if sl["vm_area_struct"].active != n_vmas:
            raise InvariantError(
                f"vm_area_struct active {sl['vm_area_struct'].active} != {n_vmas} VMAs"
            )
        if sl["anon_vma_chain"].active != n_avcs:
            raise InvariantError(f"anon_vma_chain active {sl['anon_vma_chain'].active} != {n_avcs}")
        if sl["anon_vma"].active != len(self.anon_vmas):
            raise InvariantError(
                f"anon_vma active {sl['anon_vma'].active} != {len(self.anon_vmas)} live"
            )
        if sl["mm_struct"].active != len(self._procs):
            raise InvariantError("mm_struct active != live processes")
        if sl["pgtable"].active != n_tables:
            raise InvariantError(f"pgtable active {sl['pgtable'].active} != {n_tables}")
        # anon_vma trees, counters and refcounts.
        children: Counter[int] = Counter()
        pins: Counter[int] = Counter()
        for av in self.anon_vmas.values():
            for avc in av.avcs:
                if avc not in live_avcs:
                    raise InvariantError(f"anon_vma {av.id}: chain of a dead VMA")
            if av.root.id not in self.anon_vmas:
                raise InvariantError(f"anon_vma {av.id}: freed root")
            if not (av.parent is av or av.parent.id in self.anon_vmas or not av.avcs):
                raise InvariantError(f"anon_vma {av.id}: freed parent")
            if av.avcs:
                children[av.parent.id] += 1
            if av.root is not av:
                pins[av.root.id] += 1
        for av in self.anon_vmas.values():
            if av.num_active_vmas != active_vmas[av.id]:
                raise InvariantError(
                    f"anon_vma {av.id}: num_active_vmas {av.num_active_vmas} "
                    f"!= {active_vmas[av.id]}"
                )
            if av.num_children != children[av.id]:
                raise InvariantError(
                    f"anon_vma {av.id}: num_children {av.num_children} != {children[av.id]}"
                )
            if av.root is av:
                want = (1 if av.avcs else 0) + pins[av.id]
            else:
                want = 1 if av.avcs else 0
            if av.refcount != want:
                raise InvariantError(f"anon_vma {av.id}: refcount {av.refcount} != {want}")
            if av.refcount <= 0:
                raise InvariantError(f"anon_vma {av.id}: alive at refcount 0")
        privates = {
            id(v.vm_private_data): v.vm_private_data
            for proc in self._procs.values()
            for v in proc.mm.mm_mt.values()
            if isinstance(v.vm_private_data, HugetlbPrivate)
        }
        try:
            pool_of(self.ctx).check(list(privates.values()))
        except AssertionError as e:
            raise InvariantError(f"hugetlb pool: {e}") from None
        # Pages: mapcounts and leaks.
        inode_pages: set[int] = set()
        for inode in self._inodes():
            inode_pages.update(inode.pages.values())
            if len(i_mmap_seen.get(id(inode), ())) != len(inode.i_mmap):
                raise InvariantError(f"inode {inode.ino}: i_mmap holds VMAs no process has")
            if inode.i_mmap_writable != writable_seen[id(inode)]:
                raise InvariantError(
                    f"inode {inode.ino}: i_mmap_writable {inode.i_mmap_writable} "
                    f"!= {writable_seen[id(inode)]}"
                )
        committed += sum(i.acct_pages for i in self._inodes())
        if self.vm_committed_as != committed + self.commit_leaked:
            raise InvariantError(
                f"vm_committed_as {self.vm_committed_as} != {committed} accounted pages"
                f" + {self.commit_leaked} leaked"
            )
        n_anon = 0
        for pfn in range(1, len(phys.kind)):
            k = phys.kind[pfn]
            if k == KIND_ANON:
                n_anon += 1
                if not (phys.mapcount[pfn] == maps_of[pfn] > 0):
                    raise InvariantError(
                        f"anon folio {pfn}: mapcount {phys.mapcount[pfn]}, "
                        f"mapped {maps_of[pfn]} times"
                    )
            elif k == KIND_PAGECACHE:
                if pfn not in inode_pages:
                    raise InvariantError(f"page-cache page {pfn} belongs to no live inode")
                if phys.mapcount[pfn] != maps_of[pfn]:
                    raise InvariantError(
                        f"page-cache page {pfn}: mapcount {phys.mapcount[pfn]} != {maps_of[pfn]}"
                    )
        if n_anon != phys.nr_anon:
            raise InvariantError("anonymous page count drifted")
        if not self._procs:
            for name, st in sl.items():
                if st.active != 0:
                    raise InvariantError(
                        f"{name}: {st.active} objects leaked after every process exited"
                    )

    def _inodes(self) -> list[Inode]:
        """Every inode still holding pages or mappings."""
        seen = {id(i): i for i in self.fs.files.values()}
        for i in ns_of(self.ctx).inodes():
            seen.setdefault(id(i), i)
        for proc in self._procs.values():
            for f in proc.fds.values():
                seen.setdefault(id(f.inode), f.inode)
            for v in proc.mm.mm_mt.values():
                if v.vm_file is not None:
                    seen.setdefault(id(v.vm_file.inode), v.vm_file.inode)
        return list(seen.values())


def _where(pid: int, v: VmArea) -> str:
    """A VMA named in a check() message (built only when one is raised)."""
    return f"pid {pid} vma {v.vm_start:#x}-{v.vm_end:#x}"


def _covered(spans: list[tuple[int, int]], a: int) -> bool:
    """Whether ``a`` lies in one of the sorted, disjoint ``spans``."""
    i = bisect.bisect_right(spans, (a, 1 << 64)) - 1
    return i >= 0 and spans[i][0] <= a < spans[i][1]
