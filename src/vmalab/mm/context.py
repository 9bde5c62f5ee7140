"""The context an address space runs in: what mm/ needs from the machine around it.

The kernel reaches these through globals and ``current`` (the slab caches, the page
allocator, the overcommit sysctls, vm_committed_as, ``current->cred``); the model
passes them explicitly instead, as one ``MmContext`` that hangs off every
``MmStruct`` (``mm.ctx``). ``vmalab.kernel.Kernel`` builds it and hands it down, so
mm/ imports nothing above itself: it calls the active design only through the
``DesignHooks`` protocol below and reads a task's credentials only through
``TaskCreds``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vmalab.mm.filemap import FileSystem
    from vmalab.mm.mm_types import AnonVma, VmArea
    from vmalab.mm.page_alloc import PhysMem
    from vmalab.mm.slab import Slabs
    from vmalab.mm.util import OvercommitConfig


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

    def merge_anon_vma_word(self, target: VmArea, src: VmArea) -> None:
        """A merge makes ``target`` cover (part of) ``src``."""

    def split_anon_vma_word(self, new: VmArea, old: VmArea) -> None:
        """vm_area_dup() of a split copies the word."""

    def fork_anon_vma_word(self, child: VmArea, parent: VmArea, wipe: bool) -> None:
        """The child's word before anon_vma_fork()."""

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
