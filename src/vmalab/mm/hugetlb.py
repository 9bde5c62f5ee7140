"""hugetlb: MAP_HUGETLB, MFD_HUGETLB and the huge page pool.

Models the parts of mm/hugetlb.c, fs/hugetlbfs/inode.c and mm/mmap.c:ksys_mmap_pgoff
that the VMA layer sees: the hstates (2 MiB and 1 GiB on x86-64) with their pools
(``nr_hugepages``, free and reserved pages, as ``HugePages_*`` in /proc/meminfo), the
hugetlbfs files behind ``MAP_HUGETLB`` (``/anon_hugepage (deleted)``) and
``memfd_create(MFD_HUGETLB)``, length rounding and address alignment to the huge page
size, the reservation made when a mapping is created (hugetlb_reserve_pages: ENOMEM when
the pool cannot cover it), huge-page granularity of splits (hugetlb_vm_op_split) and
mremap, and the consumption of a pool page per huge page at fault time.

Deliberate simplifications (each measured difference is listed in docs/coverage.md):

* The data of a hugetlb mapping lives in ordinary 4 KiB pages: once a fault has taken
  its huge page from the pool (or raised SIGBUS), the ordinary fault path maps the page
  (page cache of the hugetlbfs inode for shared mappings, a private copy for private
  ones). smaps therefore counts those pages in ``Rss`` where the kernel shows
  ``Private_Hugetlb``/``Shared_Hugetlb`` and ``Rss: 0``.
* After fork, a private huge page shared by parent and child is the parent's: the child
  takes a new pool page for each huge page it writes (the kernel's CoW does the same),
  but when the parent unmaps first the page goes back to the pool at once (the kernel
  keeps it while the child maps it).
* No surplus pages (``nr_overcommit_hugepages`` is 0 here), no subpools (hugetlbfs
  mounts with ``size=``), no hugetlb cgroups, no PMD sharing.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm.flags import VM_DONTEXPAND, VM_HUGETLB, VM_MAYSHARE, VM_NORESERVE

if TYPE_CHECKING:
    from vmalab.mm.filemap import File, FileSystem, Inode
    from vmalab.mm.mm_types import MmStruct, VmArea

MAP_HUGE_SHIFT = 26
MAP_HUGE_MASK = 0x3F
#: The huge page sizes of x86-64 (with gbpages): log2 of the size.
HUGE_SHIFTS = (21, 30)
DEFAULT_HUGE_SHIFT = 21


@dataclass
class HState:
    """``struct hstate``: one huge page size and its pool (mm/hugetlb.c)."""

    shift: int
    nr_huge_pages: int = 0
    free_huge_pages: int = 0
    resv_huge_pages: int = 0

    @property
    def size(self) -> int:
        """huge_page_size()."""
        return 1 << self.shift

    @property
    def order(self) -> int:
        """huge_page_order(): the shift in base pages."""
        return self.shift - 12

    def available(self) -> int:
        """Free pages not promised to a reservation."""
        return self.free_huge_pages - self.resv_huge_pages


@dataclass
class HugetlbInodeInfo:
    """A hugetlbfs inode's hstate and resv_map (shared mappings reserve per file)."""

    hstate: HState
    #: huge-page indices reserved and not yet instantiated (the inode's resv_map)
    resv: set[int] = field(default_factory=set)
    #: huge-page indices with a page in the page cache
    pages: set[int] = field(default_factory=set)


class HugetlbPrivate:
    """A private mapping's resv_map (``vma->vm_private_data`` with HPAGE_RESV_OWNER).

    Shared by the parts of a split VMA and by the VMA an mremap moved it to
    (hugetlb_vm_op_open); a fork child gets its own, without reservations
    (hugetlb_dup_vma_private).
    """

    __slots__ = ("hstate", "owner", "resv", "pages", "vmas")

    def __init__(self, hstate: HState, owner: bool) -> None:
        self.hstate = hstate
        self.owner = owner
        self.resv: set[int] = set()
        self.pages: set[int] = set()
        self.vmas: list[VmArea] = []


class HugetlbPool:
    """The hstates of a machine: ``HugetlbPool({21: nr_2M, 30: nr_1G})``."""

    def __init__(self, nr_pages: dict[int, int] | None = None) -> None:
        nr_pages = nr_pages or {}
        for shift, n in nr_pages.items():
            if shift not in HUGE_SHIFTS or type(n) is not int or n < 0:
                raise ValueError(f"bad hugetlb pool entry {shift}: {n}")
        self.hstates = {s: HState(s, nr_pages.get(s, 0), nr_pages.get(s, 0)) for s in HUGE_SHIFTS}
        self.inodes: dict[Inode, HugetlbInodeInfo] = {}

    @classmethod
    def from_host(cls, sysfs: str = "/sys/kernel/mm/hugepages") -> HugetlbPool:
        """The pool sizes of this machine (``nr_hugepages`` per size; 0 if unreadable)."""
        pages: dict[int, int] = {}
        for shift in HUGE_SHIFTS:
            try:
                with open(
                    os.path.join(sysfs, f"hugepages-{(1 << shift) >> 10}kB/nr_hugepages")
                ) as f:
                    pages[shift] = int(f.read())
            except (OSError, ValueError):
                pages[shift] = 0
        return cls(pages)

    def hstate_sizelog(self, log: int) -> HState | None:
        """Models include/linux/hugetlb.h:hstate_sizelog (0: the default hstate)."""
        if not log:
            return self.hstates[DEFAULT_HUGE_SHIFT]
        return self.hstates.get(log)

    def meminfo(self) -> dict[str, int]:
        """The ``HugePages_*`` lines of /proc/meminfo (default hstate) and ``Hugetlb`` (kB)."""
        h = self.hstates[DEFAULT_HUGE_SHIFT]
        return {
            "HugePages_Total": h.nr_huge_pages,
            "HugePages_Free": h.free_huge_pages,
            "HugePages_Rsvd": h.resv_huge_pages,
            "HugePages_Surp": 0,
            "Hugepagesize": h.size >> 10,
            "Hugetlb": sum(s.nr_huge_pages * (s.size >> 10) for s in self.hstates.values()),
        }

    def check(self, privates: list[HugetlbPrivate] | None = None) -> None:
        """Pool invariants: 0 <= resv <= free <= nr for every hstate and, given every live
        private resv_map, the pages in use and reserved are exactly what the hugetlbfs
        inodes and the private maps hold."""
        for h in self.hstates.values():
            if not (0 <= h.resv_huge_pages <= h.free_huge_pages <= h.nr_huge_pages):
                raise InvariantError(
                    f"hugetlb: pool counts out of order (0 <= resv <= free <= nr): {h!r}"
                )
            if privates is None:
                continue
            used = sum(len(i.pages) for i in self.inodes.values() if i.hstate is h)
            resv = sum(len(i.resv) for i in self.inodes.values() if i.hstate is h)
            used += sum(len(p.pages) for p in privates if p.hstate is h)
            resv += sum(len(p.resv) for p in privates if p.hstate is h)
            if used != h.nr_huge_pages - h.free_huge_pages:
                raise InvariantError(f"hugetlb: {used} pages in use, but the pool counts {h!r}")
            if resv != h.resv_huge_pages:
                raise InvariantError(
                    f"hugetlb: {resv} reservations held, but the pool counts {h!r}"
                )


def is_file_hugepages(file: File | None) -> bool:
    """Models include/linux/hugetlb.h:is_file_hugepages."""
    return file is not None and file.inode.kind == "hugetlb"


def pool_of(ctx: object) -> HugetlbPool:
    """The HugetlbPool of an MmContext (``ctx.hugetlb``)."""
    pool = getattr(ctx, "hugetlb", None)
    if not isinstance(pool, HugetlbPool):
        raise InvariantError("hugetlb: isinstance(pool, HugetlbPool)")
    return pool


def _pool(mm: MmStruct) -> HugetlbPool:
    return pool_of(mm.ctx)


def hstate_file(pool: HugetlbPool, file: File) -> HState:
    """Models hstate_file()."""
    return pool.inodes[file.inode].hstate


def vma_hpage_size(vma: VmArea) -> int:
    """Models huge_page_size(hstate_vma(vma))."""
    if vma.vm_file is None:
        raise InvariantError("hugetlb: a hugetlb VMA without its file")
    return hstate_file(_pool(vma.vm_mm), vma.vm_file).size


def hugetlb_file_setup(fs: FileSystem, pool: HugetlbPool, name: str, hs: HState) -> File:
    """A hugetlbfs file on the internal mount. Models fs/hugetlbfs/inode.c:hugetlb_file_setup
    (reservation deferred to mmap: ksys_mmap_pgoff passes VM_NORESERVE)."""
    from vmalab.mm.filemap import File, Inode

    inode = Inode(fs.ctx, name, "hugetlb")
    inode.seals = uapi.F_SEAL_SEAL
    info = HugetlbInodeInfo(hs)
    pool.inodes[inode] = info

    def evict(ino: Inode) -> None:
        # hugetlbfs_evict_inode → remove_inode_hugepages + resv_map_release
        hs.free_huge_pages += len(info.pages)
        hs.resv_huge_pages -= len(info.resv)
        info.pages.clear()
        info.resv.clear()
        pool.inodes.pop(ino, None)

    inode.on_evict = evict
    return File(inode, True, True, name)


def memfd_create_hugetlb(fs: FileSystem, pool: HugetlbPool, name: str, flags: int) -> File:
    """memfd_create(MFD_HUGETLB). Models mm/memfd.c:memfd_create → alloc_file →
    hugetlb_file_setup: the size bits pick the hstate (ENODEV for a size the machine has
    no hstate for); MFD_ALLOW_SEALING works (hugetlbfs supports seals)."""
    hs = pool.hstate_sizelog((flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK)
    if hs is None:
        raise kernel_error(errno.ENODEV, "no hstate of that size")
    f = hugetlb_file_setup(fs, pool, f"/memfd:{name} (deleted)", hs)
    if flags & (uapi.MFD_ALLOW_SEALING | uapi.MFD_NOEXEC_SEAL):
        f.inode.seals = 0
    if flags & uapi.MFD_NOEXEC_SEAL:
        f.inode.seals |= uapi.F_SEAL_EXEC
    return f


def ksys_mmap_pgoff_hugetlb(
    fs: FileSystem, pool: HugetlbPool, length: int, flags: int, file: File | None
) -> tuple[int, File | None]:
    """The hugetlb part of mmap's entry: returns (length, file).

    Models mm/mmap.c:ksys_mmap_pgoff: a hugetlbfs file's length is rounded up to its
    huge page size; MAP_HUGETLB on another file is EINVAL; anonymous MAP_HUGETLB picks
    the hstate from the MAP_HUGE_SHIFT bits (EINVAL for an unknown size), rounds the
    length and creates ``/anon_hugepage (deleted)`` (hugetlb_file_setup).
    """
    if file is not None:
        if is_file_hugepages(file):
            hsz = hstate_file(pool, file).size
            return (length + hsz - 1) & ~(hsz - 1), file
        if flags & uapi.MAP_HUGETLB:
            raise kernel_error(errno.EINVAL, "MAP_HUGETLB on a non-hugetlbfs file")
        return length, file
    if not flags & uapi.MAP_HUGETLB:
        return length, None
    hs = pool.hstate_sizelog((flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK)
    if hs is None:
        raise kernel_error(errno.EINVAL, "MAP_HUGE_SHIFT size has no hstate")
    length = (length + hs.size - 1) & ~(hs.size - 1)
    if length == 0 or length >= 1 << 64:
        raise kernel_error(errno.ENOMEM, "length overflows")
    f = hugetlb_file_setup(fs, pool, "/anon_hugepage (deleted)", hs)
    f.inode.size = length  # hugetlb_file_setup: inode->i_size = size
    return length, f


def hugetlb_get_unmapped_area_check(pool: HugetlbPool, file: File, addr: int, flags: int) -> int:
    """The alignment (the huge page size) of a hugetlbfs mapping; EINVAL for an unaligned
    MAP_FIXED address. Models fs/hugetlbfs/inode.c:hugetlb_get_unmapped_area →
    prepare_hugepage_range (hint addresses are aligned up)."""
    hsz = hstate_file(pool, file).size
    if flags & uapi.MAP_FIXED and addr & (hsz - 1):
        raise kernel_error(errno.EINVAL, "MAP_FIXED address not huge-page aligned")
    return hsz


def hugetlbfs_file_mmap(vma_flags: int, file: File, length: int, pgoff: int, mm: MmStruct) -> int:
    """Check and reserve for a new hugetlb mapping; returns its vm_flags. Raises OSError.

    Models fs/hugetlbfs/inode.c:hugetlbfs_file_mmap (VM_HUGETLB | VM_DONTEXPAND, EINVAL
    for a pgoff not huge-page aligned) → mm/hugetlb.c:hugetlb_reserve_pages: nothing
    for VM_NORESERVE; a shared mapping reserves the file's huge pages in range not yet
    reserved or present (region_chg), a private one the whole range; ENOMEM when the
    pool's unreserved free pages do not cover it (hugetlb_acct_memory, no surplus).
    The caller has already unmapped what MAP_FIXED replaces, so a refused mapping leaves
    a hole (measured). The private reservation is handed to the VMA by
    :func:`hugetlb_vma_created`.
    """
    pool = _pool(mm)
    info = pool.inodes[file.inode]
    hs = info.hstate
    if pgoff & ((hs.size >> 12) - 1):
        raise kernel_error(errno.EINVAL, "offset not huge-page aligned")
    vma_flags |= VM_HUGETLB | VM_DONTEXPAND
    if vma_flags & VM_NORESERVE:
        return vma_flags
    first = pgoff >> hs.order
    last = first + (length >> hs.shift)
    if vma_flags & VM_MAYSHARE:
        chg = [i for i in range(first, last) if i not in info.resv and i not in info.pages]
    else:
        chg = list(range(first, last))
    if len(chg) > hs.available():
        raise kernel_error(errno.ENOMEM, "not enough free huge pages to reserve")
    hs.resv_huge_pages += len(chg)
    if vma_flags & VM_MAYSHARE:
        info.resv.update(chg)
    return vma_flags


def hugetlb_vma_created(vma: VmArea) -> None:
    """Give a new hugetlb VMA hugetlb_vm_ops, whose .close (hugetlb_vm_op_close) keeps a
    merge from removing it (can_merge_remove_vma), and a private one its resv_map
    (set_vma_resv_map, HPAGE_RESV_OWNER) holding the reservation hugetlbfs_file_mmap()
    made. Measured on 6.18.44 (nr_hugepages 4 for the run): mprotect of half a hugetlb
    mapping and back leaves it in two VMAs."""
    vma.vm_ops_close = True
    if vma.vm_flags & VM_MAYSHARE:
        return
    if vma.vm_file is None:
        raise InvariantError("hugetlb: a hugetlb VMA without its file")
    hs = hstate_file(_pool(vma.vm_mm), vma.vm_file)
    p = HugetlbPrivate(hs, owner=True)
    if not vma.vm_flags & VM_NORESERVE:
        first = vma.vm_pgoff >> hs.order
        p.resv.update(range(first, first + ((vma.vm_end - vma.vm_start) >> hs.shift)))
    p.vmas.append(vma)
    vma.vm_private_data = p


def _indices(vma: VmArea, hs: HState) -> range:
    first = vma.vm_pgoff >> hs.order
    return range(first, first + ((vma.vm_end - vma.vm_start) >> hs.shift))


def hugetlb_vm_op_open(new: VmArea) -> None:
    """Models mm/hugetlb.c:hugetlb_vm_op_open: a copy (split part, mremap target) shares
    the resv_map."""
    p = new.vm_private_data
    if isinstance(p, HugetlbPrivate):
        p.vmas.append(new)


def hugetlb_vm_op_close(vma: VmArea) -> None:
    """Give back what only this VMA held of a private mapping: its unused reservations
    and its pages. Models mm/hugetlb.c:hugetlb_vm_op_close (hugetlb_acct_memory of the
    reserved-but-unfaulted pages in the VMA's range) and the folios' final put."""
    p = vma.vm_private_data
    if not isinstance(p, HugetlbPrivate):
        return
    p.vmas = [v for v in p.vmas if v is not vma]
    hs = p.hstate
    others: set[int] = set()
    for v in p.vmas:
        others.update(_indices(v, hs))
    for i in _indices(vma, hs):
        if i in others:
            continue
        if i in p.resv:
            p.resv.discard(i)
            hs.resv_huge_pages -= 1
        if i in p.pages:
            p.pages.discard(i)
            hs.free_huge_pages += 1
    vma.vm_private_data = None


def hugetlb_dup_vma_private(child: VmArea, parent: VmArea) -> None:
    """A fork child's private hugetlb VMA owns no reservation. Models
    mm/hugetlb.c:hugetlb_dup_vma_private (see the module's note on shared pages)."""
    p = parent.vm_private_data
    if not isinstance(p, HugetlbPrivate):
        return
    p.vmas = [v for v in p.vmas if v is not child]
    q = HugetlbPrivate(p.hstate, owner=False)
    q.vmas.append(child)
    child.vm_private_data = q


def hugetlb_vm_op_split(vma: VmArea, addr: int) -> None:
    """EINVAL for a split not on a huge page boundary. Models
    mm/hugetlb.c:hugetlb_vm_op_split (vm_ops->may_split, called by __split_vma)."""
    if addr & (vma_hpage_size(vma) - 1):
        raise kernel_error(errno.EINVAL, "split of a hugetlb VMA inside a huge page")


def hugetlb_fault(vma: VmArea, addr: int) -> bool:
    """Take the huge page behind ``addr`` from the pool; False means SIGBUS.

    Models mm/hugetlb.c:hugetlb_no_page → alloc_hugetlb_folio: a page already there
    (page cache of a shared mapping, or this private mapping's) costs nothing; else the
    reservation for this index is consumed (vma_needs_reservation), else an unreserved
    free page is taken, else the fault fails with VM_FAULT_SIGBUS.
    """
    if vma.vm_file is None:
        raise InvariantError("hugetlb: a hugetlb VMA without its file")
    pool = _pool(vma.vm_mm)
    info = pool.inodes[vma.vm_file.inode]
    hs = info.hstate
    idx = (vma.vm_pgoff + ((addr - vma.vm_start) >> 12)) >> hs.order
    if vma.vm_flags & VM_MAYSHARE:
        return _take_huge_page(hs, info.pages, info.resv, idx)
    p = vma.vm_private_data
    if not isinstance(p, HugetlbPrivate):
        raise InvariantError("hugetlb: a private hugetlb VMA without its reservation map")
    return _take_huge_page(hs, p.pages, p.resv, idx)


def _take_huge_page(hs: HState, pages: set[int], resv: set[int], idx: int) -> bool:
    """Page ``idx`` of a file (shared) or of a private mapping's reservation map: present,
    or taken from the pool, consuming its reservation if it had one, else a free page if
    any is unreserved. Models alloc_hugetlb_folio's vma_needs_reservation /
    dequeue_hugetlb_folio_vma / vma_commit_reservation accounting."""
    if idx in pages:
        return True
    if idx in resv:
        resv.discard(idx)
        hs.resv_huge_pages -= 1
    elif hs.available() <= 0:
        return False
    hs.free_huge_pages -= 1
    pages.add(idx)
    return True


def hugetlbfs_fallocate(
    pool: HugetlbPool, inode: Inode, mode: int, offset: int, length: int
) -> None:
    """fallocate of a hugetlbfs file (MFD_HUGETLB). Raises OSError.

    Models fs/hugetlbfs/inode.c:hugetlbfs_fallocate: the range is widened to whole huge
    pages; PUNCH_HOLE frees the pages it covers whole (hugetlbfs_punch_hole); otherwise
    each missing page is taken from the pool (a reservation first), ENOSPC when none is
    left (measured on 6.18.44 with the empty pool: fallocate of 7 pages is ENOSPC), and
    i_size grows unless KEEP_SIZE. Pages already taken before the failure stay.
    """
    info = pool.inodes[inode]
    hs = info.hstate
    if mode & uapi.FALLOC_FL_PUNCH_HOLE:
        first = (offset + hs.size - 1) >> hs.shift
        end = (offset + length) >> hs.shift
        gone = {i for i in info.pages if first <= i < end}
        info.pages -= gone
        hs.free_huge_pages += len(gone)
        return
    first = offset >> hs.shift
    end = (offset + length + hs.size - 1) >> hs.shift
    for idx in range(first, end):
        if not _take_huge_page(hs, info.pages, info.resv, idx):
            raise kernel_error(errno.ENOSPC, "hugetlbfs_fallocate: no free huge page")
    if not mode & uapi.FALLOC_FL_KEEP_SIZE and offset + length > inode.size:
        inode.size = offset + length


def hugetlbfs_setattr_size(pool: HugetlbPool, inode: Inode, size: int) -> None:
    """ftruncate of a hugetlbfs file. Models fs/hugetlbfs/inode.c:hugetlbfs_setattr
    (EINVAL unless a multiple of the huge page size) → hugetlb_vmtruncate
    (remove_inode_hugepages + hugetlb_unreserve_pages past the new end)."""
    info = pool.inodes[inode]
    hs = info.hstate
    if size & (hs.size - 1):
        raise kernel_error(errno.EINVAL, "size not a multiple of the huge page size")
    first = size >> hs.shift
    gone_pages = {i for i in info.pages if i >= first}
    gone_resv = {i for i in info.resv if i >= first}
    info.pages -= gone_pages
    info.resv -= gone_resv
    hs.free_huge_pages += len(gone_pages)
    hs.resv_huge_pages -= len(gone_resv)


def check_mremap_hugetlb(
    vma: VmArea, addr: int, old_len: int, new_len: int, flags: int, new_addr: int = 0
) -> tuple[int, int]:
    """mremap of a hugetlb VMA: both lengths are rounded up to the huge page size (the
    rounded lengths are returned); EINVAL for an address not huge-page aligned, for
    growth, and for MREMAP_DONTUNMAP (VM_DONTEXPAND). Models mm/mremap.c:check_prep_vma
    for is_vm_hugetlb_page (measured on 6.18.44: mremap of a 2 MiB hugetlb mapping to
    32 KiB or 2 MiB - 4 KiB is a no-op returning the address; 8 MiB is EINVAL; found by
    the THP fuzz, seed 7125)."""
    hsz = vma_hpage_size(vma)
    old_len = (old_len + hsz - 1) & ~(hsz - 1)
    new_len = (new_len + hsz - 1) & ~(hsz - 1)
    if (addr | new_addr) & (hsz - 1):
        raise kernel_error(errno.EINVAL, "hugetlb mremap not huge-page aligned")
    if new_len > old_len:
        raise kernel_error(errno.EINVAL, "hugetlb mappings cannot grow")
    if flags & uapi.MREMAP_DONTUNMAP:
        raise kernel_error(errno.EINVAL, "MREMAP_DONTUNMAP on a VM_DONTEXPAND VMA")
    return old_len, new_len


__all__ = [
    "HState",
    "HugetlbPool",
    "hugetlb_fault",
    "is_file_hugepages",
    "ksys_mmap_pgoff_hugetlb",
    "memfd_create_hugetlb",
]


def hugetlb_dontneed_range(vma: VmArea, start: int, end: int) -> int:
    """The end MADV_DONTNEED really zaps; EINVAL for an unaligned start. Models
    mm/madvise.c:madvise_dontneed_free_valid_vma for hugetlb ("Avoid unexpected data loss
    by rounding down the number of huge pages freed")."""
    hsz = vma_hpage_size(vma)
    if start & (hsz - 1):
        raise kernel_error(errno.EINVAL, "hugetlb DONTNEED start not huge-page aligned")
    return end & ~(hsz - 1)


def hugetlb_zap_private(vma: VmArea, start: int, end: int) -> None:
    """A zapped private huge page goes back to the pool (its folio's last unmap); a
    shared one stays in the page cache. Models the folio put of __unmap_hugepage_range."""
    p = vma.vm_private_data
    if not isinstance(p, HugetlbPrivate):
        return
    hs = p.hstate
    first = (vma.vm_pgoff + ((start - vma.vm_start) >> 12)) >> hs.order
    last = (vma.vm_pgoff + ((end - vma.vm_start) >> 12)) >> hs.order
    for i in range(first, last):
        if i in p.pages:
            p.pages.discard(i)
            hs.free_huge_pages += 1
