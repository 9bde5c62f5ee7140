"""The Kernel: one machine's worth of model state, and its invariant checker.

A ``Kernel`` owns the active design, the slab caches, physical memory, the tmpfs and
the live processes. ``check()`` verifies every invariant the kernel guarantees (and no
more: the kernel does not promise maximal merging), in the spirit of
sortedcontainers' ``_check()``.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from mypy_extensions import mypyc_attr

from vmalab.budget import Budget
from vmalab.designs import Design, get_design
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import huge_memory, khugepaged
from vmalab.mm.filemap import FileSystem, Inode
from vmalab.mm.hugetlb import HugetlbPool, pool_of
from vmalab.mm.khugepaged import host_thp_mode
from vmalab.mm.memory import unmap_mapping_range
from vmalab.mm.mm_types import AnonVma, MmContext, MmStruct, VmArea
from vmalab.mm.page_alloc import KIND_ANON, KIND_PAGECACHE, PhysMem
from vmalab.mm.pagetable import _PAGE_PRESENT, pte_walk
from vmalab.mm.pkeys import check_task as check_pkeys
from vmalab.mm.pkeys import host_has_ospke
from vmalab.mm.shm import ShmNamespace, ns_of
from vmalab.mm.slab import AllocFailure, FailPolicy, Slabs, SlabStats
from vmalab.mm.util import OvercommitConfig, host_overcommit, meminfo
from vmalab.mm.validate import IdTally, MmCheck, validate_mm

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
        #: Whether the CPU has OSPKE (protection keys, vmalab.mm.pkeys). Default: the
        #: host's (no OSPKE on the project's machine); True is model-only.
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
        ctx = self.ctx
        ctx.hooked_anon_vma_changed = _overrides(self._design, "anon_vma_changed")
        ctx.hooked_vma_dup = _overrides(self._design, "vma_dup")
        ctx.hooked_vma_fork_dup = _overrides(self._design, "vma_fork_dup")
        ctx.hooked_vma_free = _overrides(self._design, "vma_free")
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
        """The walk: each mm through mm/validate.py:validate_mm (its VMAs, chains and page
        tables), then the machine-wide totals, the anon_vma trees and the pages."""
        phys = self.phys
        anon_vmas = self.anon_vmas
        acc = MmCheck(self.ctx, _design_check_vma(self._design))
        for proc in self._procs.values():
            mm: MmStruct = proc.mm
            if mm.dead:
                raise InvariantError(f"pid {proc.pid}: live process with a dead mm")
            bad = validate_mm(mm, acc, f"pid {proc.pid}")
            if bad is not None:
                raise InvariantError(bad)
            bad = huge_memory.check_huge_pmds(mm)
            if bad is not None:
                raise InvariantError(f"pid {proc.pid}: {bad}")
            bad = check_pkeys(proc)
            if bad is not None:
                raise InvariantError(f"pid {proc.pid}: {bad}")
        n_vmas, n_avcs = acc.n_vmas, acc.n_avcs
        # Slab accounting.
        sl = self.slabs.caches
        if sl["vm_area_struct"].active != n_vmas:
            raise InvariantError(
                f"vm_area_struct active {sl['vm_area_struct'].active} != {n_vmas} VMAs"
            )
        if sl["anon_vma_chain"].active != n_avcs:
            raise InvariantError(f"anon_vma_chain active {sl['anon_vma_chain'].active} != {n_avcs}")
        if sl["anon_vma"].active != len(anon_vmas):
            raise InvariantError(
                f"anon_vma active {sl['anon_vma'].active} != {len(anon_vmas)} live"
            )
        if sl["mm_struct"].active != len(self._procs):
            raise InvariantError("mm_struct active != live processes")
        if sl["pgtable"].active != acc.n_tables:
            raise InvariantError(f"pgtable active {sl['pgtable'].active} != {acc.n_tables}")
        # anon_vma trees, counters and refcounts. validate_mm found every chain of a live
        # VMA in its own anon_vma's tree, each once; so the trees hold nothing else (no
        # chain of a dead VMA, none twice) exactly when their sizes add up to the chains.
        seq = self.anon_vma_seq
        children = IdTally(seq, len(anon_vmas))
        pins = IdTally(seq, len(anon_vmas))
        in_trees = 0
        for av in anon_vmas.values():
            n = len(av.avcs)
            in_trees += n
            root, parent = av.root, av.parent
            if anon_vmas.get(root.id) is not root:
                raise InvariantError(f"anon_vma {av.id}: freed root")
            if not (parent is av or anon_vmas.get(parent.id) is parent or not n):
                raise InvariantError(f"anon_vma {av.id}: freed parent")
            if n:
                children.add(parent.id)
            if root is not av:
                pins.add(root.id)
        if in_trees != n_avcs:
            raise InvariantError(self._dead_chain(in_trees, n_avcs))
        active = acc.active
        for av in anon_vmas.values():
            ident = av.id
            if av.num_active_vmas != active.get(ident):
                raise InvariantError(
                    f"anon_vma {ident}: num_active_vmas {av.num_active_vmas} != {active.get(ident)}"
                )
            if av.num_children != children.get(ident):
                raise InvariantError(
                    f"anon_vma {ident}: num_children {av.num_children} != {children.get(ident)}"
                )
            if av.root is av:
                want = (1 if av.avcs else 0) + pins.get(ident)
            else:
                want = 1 if av.avcs else 0
            if av.refcount != want:
                raise InvariantError(f"anon_vma {ident}: refcount {av.refcount} != {want}")
            if av.refcount <= 0:
                raise InvariantError(f"anon_vma {ident}: alive at refcount 0")
        try:
            pool_of(self.ctx).check(list(acc.privates.values()))
        except AssertionError as e:
            raise InvariantError(f"hugetlb pool: {e}") from None
        # Pages: mapcounts and leaks.
        inodes = self._inodes(acc.inodes)
        inode_pages: set[int] = set()
        committed = acc.committed
        for inode in inodes:
            inode_pages.update(inode.pages.values())
            key = id(inode)
            if acc.file_vmas.get(key, 0) != len(inode.i_mmap):
                raise InvariantError(f"inode {inode.ino}: i_mmap holds VMAs no process has")
            if inode.i_mmap_writable != acc.writable.get(key, 0):
                raise InvariantError(
                    f"inode {inode.ino}: i_mmap_writable {inode.i_mmap_writable} "
                    f"!= {acc.writable.get(key, 0)}"
                )
            committed += inode.acct_pages
        if self.vm_committed_as != committed + self.commit_leaked:
            raise InvariantError(
                f"vm_committed_as {self.vm_committed_as} != {committed} accounted pages"
                f" + {self.commit_leaked} leaked"
            )
        kind = acc.kind
        n_anon = kind.count(KIND_ANON, 1)
        rem = acc.rem
        if rem.count(0) != len(rem) or acc.anon_mapped != n_anon:
            self._check_mapcounts(acc)  # raises: find the page
        for pfn in _pfns_of_kind(kind, KIND_PAGECACHE):
            if pfn not in inode_pages:
                raise InvariantError(f"page-cache page {pfn} belongs to no live inode")
        if n_anon != phys.nr_anon:
            raise InvariantError("anonymous page count drifted")
        if not self._procs:
            for name, st in sl.items():
                if st.active != 0:
                    raise InvariantError(
                        f"{name}: {st.active} objects leaked after every process exited"
                    )

    def _check_mapcounts(self, acc: MmCheck) -> None:
        """Raise for the page whose mapcount is not the PTEs mapping it (check()'s slow
        path; a free page's stale mapcount is no error, so it may return)."""
        kind, mapcount, rem = acc.kind, acc.mapcount, acc.rem
        for pfn in range(1, len(kind)):
            k = kind[pfn]
            maps = mapcount[pfn] - rem[pfn]
            if k == KIND_ANON:
                if not (mapcount[pfn] == maps > 0):
                    raise InvariantError(
                        f"anon folio {pfn}: mapcount {mapcount[pfn]}, mapped {maps} times"
                    )
            elif k == KIND_PAGECACHE:
                if mapcount[pfn] != maps:
                    raise InvariantError(
                        f"page-cache page {pfn}: mapcount {mapcount[pfn]} != {maps}"
                    )

    def _dead_chain(self, in_trees: int, n_avcs: int) -> str:
        """Why the anon_vma trees hold ``in_trees`` chains and the VMAs ``n_avcs``."""
        live = {
            id(avc)
            for proc in self._procs.values()
            for v in proc.mm.mm_mt.values()
            for avc in v.anon_vma_chain
        }
        for av in self.anon_vmas.values():
            for avc in av.avcs:
                if id(avc) not in live:
                    return f"anon_vma {av.id}: chain of a dead VMA"
                if avc.anon_vma is not av:
                    return f"anon_vma {av.id}: holds a chain of anon_vma {avc.anon_vma.id}"
        return f"anon_vma trees hold {in_trees} chains, the VMAs {n_avcs}"

    def _inodes(self, mapped: dict[int, Inode]) -> list[Inode]:
        """Every inode still holding pages or mappings; ``mapped``: those VMAs map."""
        seen = {id(i): i for i in self.fs.files.values()}
        for i in ns_of(self.ctx).inodes():
            seen.setdefault(id(i), i)
        for proc in self._procs.values():
            for f in proc.fds.values():
                seen.setdefault(id(f.inode), f.inode)
        for key, inode in mapped.items():
            seen.setdefault(key, inode)
        return list(seen.values())


def _overrides(design: Design, hook: str) -> bool:
    """Whether ``design``'s class has its own ``hook`` (not Design's default)."""
    # getattr: the methods as the types hold them (compiled code binds attribute access)
    return getattr(type(design), hook) is not getattr(Design, hook)


def _design_check_vma(design: Design) -> Callable[[VmArea], str | None] | None:
    """The design's ``check_vma``, or None where it keeps Design's (which finds nothing)."""
    return design.check_vma if _overrides(design, "check_vma") else None


def _pfns_of_kind(kind: bytes, k: int) -> list[int]:
    """The pfns (from 1) whose ``kind`` is ``k``."""
    out: list[int] = []
    pat = bytes([k])
    i = kind.find(pat, 1)
    while i >= 0:
        out.append(i)
        i = kind.find(pat, i + 1)
    return out
