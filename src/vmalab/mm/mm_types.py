"""The core kernel objects: vm_area_struct, mm_struct, anon_vma and anon_vma_chain, and
the ``MmContext`` an mm runs in (design hooks, allocators, configuration, counters).

Models include/linux/mm_types.h and include/linux/rmap.h. Only the fields the VMA layer
uses are kept. ``vma.anon_vma`` is the mainline pointer (written only by
``vmalab.mm.rmap``). What a design keeps per VMA (the RFC's flag bits beside that
pointer, a guard count …) lives in ``vma.design_state``, a ``DesignState`` the active
design owns: mm/ never reads it, and tells the design through ``DesignHooks`` when a VMA
is duplicated, merged, freed or has its anon_vma written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from mypy_extensions import mypyc_attr

from vmalab.mm.flags import VM_ACCESS_FLAGS, VM_READ, VM_SHARED, VM_WRITE
from vmalab.mm.maple_tree import VmaTree as VmaTree

# The page size is defined once, with the paging structures (vmalab.mm.pagetable, a
# leaf); everything else imports it from here.
from vmalab.mm.pagetable import PAGE_MASK as PAGE_MASK
from vmalab.mm.pagetable import PAGE_SHIFT as PAGE_SHIFT
from vmalab.mm.pagetable import PAGE_SIZE as PAGE_SIZE

if TYPE_CHECKING:
    from vmalab.mm.filemap import File, FileSystem, Inode
    from vmalab.mm.overcommit import OvercommitConfig
    from vmalab.mm.page_alloc import PhysMem
    from vmalab.mm.pagetable import PageTables
    from vmalab.mm.slab import Slabs

# x86-64, 4-level paging: TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE.
TASK_SIZE = (1 << 47) - PAGE_SIZE
# sysctl vm.mmap_min_addr default (mm/Kconfig DEFAULT_MMAP_MIN_ADDR on x86).
MMAP_MIN_ADDR = 0x10000
# mm/mmap.c: stack_guard_gap = 256UL << PAGE_SHIFT.
STACK_GUARD_GAP = 256 << PAGE_SHIFT
# A fixed top-down mmap_base (ASLR off): arch/x86/mm/mmap.c:mmap_base() with the
# default 8 MiB stack rlimit and no randomisation gives TASK_SIZE - gap.
DEFAULT_MMAP_BASE = 0x7FFFF7FFF000


AVCS_LIST_MAX: Final = 8
"""``AnonVma.avcs`` is a list up to this many chains, a set past it (``Final``: compiled
code reads it as a constant, not from the module's dictionary)."""


class AnonVma:
    """``struct anon_vma``. Models include/linux/rmap.h.

    ``avcs`` stands for the interval tree ``rb_root``: the chains linking VMAs to this
    anon_vma, in a container sized to how many there are (a simplification of the
    tree, whose order the model never uses): ``()`` while empty, a list of at most
    ``AVCS_LIST_MAX`` chains, a set past that (a 1-element list is 64 B, a set 216 B).
    ``vmalab.mm.rmap`` adds and removes them (``avcs_add``, ``avcs_remove``); others only
    test membership, iterate and count.
    """

    __slots__ = ("id", "root", "parent", "refcount", "num_children", "num_active_vmas", "avcs")

    def __init__(self, ident: int) -> None:
        self.id = ident
        self.root: AnonVma = self
        self.parent: AnonVma = self
        self.refcount = 1
        self.num_children = 0
        self.num_active_vmas = 0
        self.avcs: tuple[()] | list[AnonVmaChain] | set[AnonVmaChain] = ()

    def __repr__(self) -> str:
        return (
            f"<anon_vma {self.id} root={self.root.id} "
            f"ch={self.num_children} act={self.num_active_vmas}>"
        )


class AnonVmaChain:
    """``struct anon_vma_chain``: links one VMA to one anon_vma. Models include/linux/rmap.h."""

    __slots__ = ("vma", "anon_vma")

    def __init__(self, vma: VmArea, anon_vma: AnonVma) -> None:
        self.vma = vma
        self.anon_vma = anon_vma


@mypyc_attr(allow_interpreted_subclasses=True)  # designs (plugins too) subclass it
class DesignState:
    """Base of the per-VMA state a design keeps in ``VmArea.design_state``.

    Not a kernel structure: each design that needs per-VMA state subclasses it (with
    ``__slots__``) and owns every read and write of it, through its hooks for
    vm_area_dup (split and fork), merge and vm_area_free. mm/ only carries the slot.
    """

    __slots__ = ()


class VmArea:
    """``struct vm_area_struct``. Models include/linux/mm_types.h.

    ``anon_vma_chain`` is the VMA's ``same_vma`` list, newest first as
    mm/rmap.c:anon_vma_chain_link() builds it with ``list_add()``; ``()`` while empty
    (shared, so that an unfaulted VMA carries no list), a list once ``vmalab.mm.rmap``
    links a chain.
    """

    __slots__ = (
        "vm_start",
        "vm_end",
        "vm_pgoff",
        "vm_flags",
        "vm_file",
        "vm_mm",
        "anon_vma",
        "design_state",
        "anon_vma_chain",
        "anon_name",
        "uffd_ctx",
        "vm_policy",
        "vm_ops_close",
        "special_name",
        "vm_private_data",
        "vm_prev",
        "vm_next",
    )

    def __init__(
        self,
        mm: MmStruct,
        start: int,
        end: int,
        pgoff: int,
        flags: int,
        file: File | None = None,
    ) -> None:
        self.vm_start = start
        self.vm_end = end
        self.vm_pgoff = pgoff
        self.vm_flags = flags
        self.vm_file = file
        self.vm_mm = mm
        self.anon_vma: AnonVma | None = None
        #: The active design's per-VMA state (``DesignState``), None until it sets one.
        self.design_state: DesignState | None = None
        self.anon_vma_chain: tuple[()] | list[AnonVmaChain] = ()
        self.anon_name: str | None = None
        self.uffd_ctx: object | None = None
        self.vm_policy: object | None = None
        # Whether vm_ops->close exists (special mappings such as [vdso] have one).
        self.vm_ops_close = False
        # arch_vma_name()/special_mapping name such as "[vdso]"; None for ordinary VMAs.
        self.special_name: str | None = None
        # vm_private_data: a private hugetlb mapping's resv_map (vmalab.mm.hugetlb).
        self.vm_private_data: object | None = None
        # Neighbours in the mm's index (maintained by MmStruct.vma_store/vma_erase), so that
        # vma_prev()/vma_next() are O(1) as on a maple-tree iterator.
        self.vm_prev: VmArea | None = None
        self.vm_next: VmArea | None = None

    def pages(self) -> int:
        """Models include/linux/mm.h:vma_pages."""
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def is_anonymous(self) -> bool:
        """Models include/linux/mm.h:vma_is_anonymous (no vm_ops): no file and not a
        special mapping (special_mapping_vmops), or a private mapping of /dev/zero,
        which keeps its file but loses its vm_ops (drivers/char/mem.c:mmap_zero →
        vma_set_anonymous)."""
        f = self.vm_file
        if f is not None:
            return f.inode.kind == "devzero"
        return self.special_name is None

    def is_accessible(self) -> bool:
        """Models include/linux/mm.h:vma_is_accessible."""
        return bool(self.vm_flags & VM_ACCESS_FLAGS)

    def is_cow_mapping(self) -> bool:
        """Models include/linux/mm.h:is_cow_mapping ((flags & (SHARED|MAYWRITE)) == MAYWRITE)."""
        return self.vm_flags & (VM_SHARED | 0x20) == 0x20

    def readable(self) -> bool:
        """x86 access_error(): any of read/write/exec permits a read."""
        return bool(self.vm_flags & (VM_READ | VM_WRITE | 0x4))

    def __repr__(self) -> str:
        return (
            f"<vma {self.vm_start:#x}-{self.vm_end:#x} "
            f"pgoff={self.vm_pgoff:#x} flags={self.vm_flags:#x}>"
        )


def linear_page_index(vma: VmArea, addr: int) -> int:
    """The file page index that ``addr`` maps in ``vma``.

    Models include/linux/pagemap.h:linear_page_index."""
    return ((addr - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


class MmStruct:
    """``struct mm_struct``: the address space. Models include/linux/mm_types.h.

    ``mm_mt`` is the VMA index, the maple tree's job: a ``VmaTree`` from ``vm_start`` to
    the VMA, giving O(log n) lookup, insert, erase and ordered iteration; each VMA's
    ``vm_prev``/``vm_next`` give its neighbours in O(1).
    """

    __slots__ = (
        "ctx",
        "mm_mt",
        "map_count",
        "pgtables",
        "mmap_base",
        "locked_vm",
        "def_flags",
        "owner_pid",
        "dead",
        "start_brk",
        "brk",
        "start_stack",
    )

    def __init__(self, ctx: MmContext, pgtables: PageTables, owner_pid: int) -> None:
        self.ctx = ctx
        self.mm_mt: VmaTree[VmArea] = VmaTree()
        self.map_count = 0
        self.pgtables = pgtables
        self.mmap_base = DEFAULT_MMAP_BASE
        self.locked_vm = 0
        self.def_flags = 0
        self.owner_pid = owner_pid
        self.dead = False
        # mm->start_brk, mm->brk and mm->start_stack: binfmt_elf sets them at exec; they
        # decide which VMAs /proc/PID/maps calls "[heap]" and "[stack]" (0: none).
        self.start_brk = 0
        self.brk = 0
        self.start_stack = 0

    # --- the maple tree's interface (vma_iter_*, find_vma, vma_lookup) -------------

    def floor_vma(self, addr: int) -> VmArea | None:
        """The VMA with the greatest ``vm_start <= addr``."""
        return self.mm_mt.floor(addr)

    def first_vma(self) -> VmArea | None:
        """The lowest VMA."""
        return self.mm_mt.first()

    def last_vma(self) -> VmArea | None:
        """The highest VMA."""
        return self.mm_mt.last()

    def find_vma(self, addr: int) -> VmArea | None:
        """First VMA with ``vm_end > addr``. Models mm/mmap.c:find_vma."""
        v = self.mm_mt.floor(addr)
        if v is None:
            return self.mm_mt.first()
        return v if v.vm_end > addr else v.vm_next

    def vma_lookup(self, addr: int) -> VmArea | None:
        """The VMA containing ``addr``. Models include/linux/mm.h:vma_lookup."""
        v = self.mm_mt.floor(addr)
        return v if v is not None and v.vm_end > addr else None

    def find_vma_prev(self, addr: int) -> tuple[VmArea | None, VmArea | None]:
        """(find_vma(addr), the VMA before it). Models mm/mmap.c:find_vma_prev."""
        v = self.mm_mt.floor(addr)
        if v is None:
            return self.mm_mt.first(), None
        if v.vm_end > addr:
            return v, v.vm_prev
        return v.vm_next, v

    @staticmethod
    def vma_prev(vma: VmArea) -> VmArea | None:
        """The VMA before ``vma``. Models vma_prev() on an iterator at ``vma``."""
        return vma.vm_prev

    @staticmethod
    def vma_next(vma: VmArea) -> VmArea | None:
        """The VMA after ``vma``. Models vma_next() on an iterator at ``vma``."""
        return vma.vm_next

    def vmas_in(self, start: int, end: int) -> list[VmArea]:
        """VMAs intersecting [start, end), in order. Models for_each_vma_range()."""
        out: list[VmArea] = []
        v = self.find_vma(start)
        while v is not None and v.vm_start < end:
            out.append(v)
            v = v.vm_next
        return out

    def vma_store(self, vma: VmArea) -> None:
        """Insert ``vma`` into the index. Models vma_iter_store()/vma_iter_bulk_store()."""
        prev, nxt = self.mm_mt.insert(vma.vm_start, vma)
        vma.vm_prev = prev
        vma.vm_next = nxt
        if prev is not None:
            prev.vm_next = vma
        if nxt is not None:
            nxt.vm_prev = vma

    def vma_erase(self, vma: VmArea) -> None:
        """Remove ``vma`` from the index. Models vma_iter_clear()."""
        self.mm_mt.erase(vma.vm_start)
        prev, nxt = vma.vm_prev, vma.vm_next
        if prev is not None:
            prev.vm_next = nxt
        if nxt is not None:
            nxt.vm_prev = prev
        vma.vm_prev = vma.vm_next = None

    def vma_split_below(self, vma: VmArea, new: VmArea, addr: int) -> None:
        """``new`` takes [vma.vm_start, addr) and ``vma`` now starts at ``addr``.

        One insert: the old start's entry is re-pointed at ``new``, ``vma`` goes right
        after it.
        """
        self.mm_mt.split_entry(vma.vm_start, new, addr, vma)
        vma.vm_start = addr
        prev = vma.vm_prev
        new.vm_prev, new.vm_next = prev, vma
        vma.vm_prev = new
        if prev is not None:
            prev.vm_next = new

    def vma_set_start(self, vma: VmArea, start: int) -> None:
        """Move ``vma``'s start and keep the index keyed by it (order is unchanged)."""
        if start != vma.vm_start:
            self.mm_mt.rekey(vma.vm_start, start)
            vma.vm_start = start


# --- the context an mm runs in ------------------------------------------------------


class DesignHooks(Protocol):
    """The hooks of a design that the core calls (``vmalab.designs.base.Design``)."""

    @property
    def vm_sticky(self) -> int:
        """Flags ORed into the survivor of a merge (include/linux/mm.h VM_STICKY)."""
        ...

    @property
    def vm_ignore_merge(self) -> int:
        """Flags a merge ignores (VM_IGNORE_MERGE)."""
        ...

    def guard_install_prepare(self, vma: VmArea) -> None:
        """Before guard markers are written; may raise AllocFailure."""

    def guard_install_done(self, vma: VmArea, nr_pages: int) -> None:
        """After a walk that counted ``nr_pages`` guard pages."""

    def guard_remove_done(self, vma: VmArea, start: int, end: int) -> None:
        """After markers were removed from [start, end)."""

    def anon_vma_prepare(self, vma: VmArea) -> None:
        """Give ``vma`` a real anon_vma (include/linux/rmap.h:anon_vma_prepare)."""

    def vma_needs_copy(self, dst: VmArea, src: VmArea) -> bool:
        """Whether fork copies ``src``'s page tables (mm/memory.c:vma_needs_copy)."""
        ...

    def anon_vma_changed(self, vma: VmArea) -> None:
        """``vma->anon_vma`` was just written (a real anon_vma, or NULL)."""

    def vma_dup(self, new: VmArea, old: VmArea) -> None:
        """``new`` is vm_area_dup(``old``) of a split (__split_vma) or a move (copy_vma)."""

    def vma_fork_dup(self, child: VmArea, parent: VmArea) -> None:
        """``child`` is dup_mmap()'s vm_area_dup(``parent``), before anon_vma_fork()."""

    def vma_merge(self, target: VmArea, src: VmArea) -> None:
        """A merge makes ``target`` cover (part of) ``src``'s range and page tables."""

    def vma_free(self, vma: VmArea) -> None:
        """``vma`` is about to be freed (mm/vma_init.c:vm_area_free)."""

    def anon_vma_flags(self, vma: VmArea) -> int:
        """Flag bits the design keeps beside ``vma->anon_vma`` (``VmaView.anon_vma_flags``)."""
        ...

    def file_vma_retractable(self, vma: VmArea) -> bool:
        """Whether retract_page_tables() may retract ``vma``'s PTE table."""
        ...


class TaskCreds(Protocol):
    """What mm/ reads of the task that owns an mm (``current->cred``, rlimits, MDWE)."""

    cap_sys_admin: bool
    cap_ipc_lock: bool
    rlimit_memlock: int
    mdwe: int


class MmContext:
    """The machine an mm lives in: design hooks, allocators, filesystem, configuration
    and the global counters of mm/ (vm_committed_as, the anon_vma ids, /proc/vmstat).

    The kernel reaches these through globals and ``current``; the model passes them
    explicitly, as one ``MmContext`` that hangs off every ``MmStruct`` (``mm.ctx``).
    ``vmalab.kernel.Kernel`` builds it and hands it down, so mm/ imports nothing above
    itself: it calls the active design only through ``DesignHooks`` and reads a task's
    credentials only through ``TaskCreds``.

    ``tasks`` maps a pid to its task, for the credential checks that the kernel makes on
    ``current`` (``MmStruct.owner_pid`` names the task). ``fs`` is set once the
    filesystem, which itself needs the context, has been built.
    """

    __slots__ = (
        "design",
        "slabs",
        "phys",
        "fs",
        "max_map_count",
        "overcommit",
        "vm_committed_as",
        "commit_leaked",
        "pku",
        "thp",
        "anon_vmas",
        "anon_vma_seq",
        "ino_seq",
        "vmstat",
        "tasks",
        "unmap_mapping_range",
        "hugetlb",
        "shm_ns",
        "hooked_anon_vma_changed",
        "hooked_vma_dup",
        "hooked_vma_fork_dup",
        "hooked_vma_free",
    )

    fs: FileSystem

    def __init__(
        self,
        design: DesignHooks,
        slabs: Slabs,
        phys: PhysMem,
        *,
        max_map_count: int,
        overcommit: OvercommitConfig,
        pku: bool,
        thp: str,
        tasks: Mapping[int, TaskCreds],
        unmap_mapping_range: Callable[[Inode, int, int | None, bool], None],
    ) -> None:
        self.design = design
        self.slabs = slabs
        self.phys = phys
        self.max_map_count = max_map_count
        #: The commit-charge policy (mm/util.c) and vm_committed_as in pages.
        self.overcommit = overcommit
        self.vm_committed_as = 0
        #: Charge the real kernel never gives back (a shrinking MREMAP_FIXED move).
        self.commit_leaked = 0
        self.pku = pku
        self.thp = thp
        self.anon_vmas: dict[int, AnonVma] = {}
        self.anon_vma_seq = 0
        self.ino_seq = 0
        self.vmstat: Counter[str] = Counter(
            pgfault=0, fork_copy_vmas=0, fork_guard_markers_copied=0, fork_guard_markers_dropped=0
        )
        self.tasks = tasks
        #: mm/memory.c:unmap_mapping_range, for truncation and hole punching in the
        #: page cache (vmalab.mm.filemap sits below vmalab.mm.memory and is handed it).
        self.unmap_mapping_range = unmap_mapping_range
        #: The hugetlb pool (a vmalab.mm.hugetlb.HugetlbPool) and the SysV shm
        #: namespace (a vmalab.mm.shm.ShmNamespace), set by Kernel; typed ``object``
        #: here because those modules sit above this one (hugetlb.pool_of, shm.ns_of).
        self.hugetlb: object = None
        self.shm_ns: object = None
        #: Whether the design has each of these hooks, whose default does nothing; the
        #: core calls a hook only when it is set (all are, unless ``Kernel`` finds the
        #: design keeps the default: ``Kernel`` sets them from the design's class).
        self.hooked_anon_vma_changed = True
        self.hooked_vma_dup = True
        self.hooked_vma_fork_dup = True
        self.hooked_vma_free = True


def mm_task(mm: MmStruct) -> TaskCreds | None:
    """The task that owns ``mm`` (the model runs one task per mm; ``current`` where a
    syscall runs), None once it has gone."""
    return mm.ctx.tasks.get(mm.owner_pid)
