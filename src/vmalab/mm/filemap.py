"""Files: an in-memory tmpfs with one page cache per inode, memfd and seals.

Models the parts of mm/shmem.c, mm/filemap.c, mm/truncate.c, mm/memfd.c and fs/open.c
that the VMA layer sees: the page cache shared by every mapping of a file
(``address_space->i_pages``), the mappings of a file (``i_mmap``) and the count of shared
writable mappings (``i_mmap_writable``), ftruncate, fallocate (allocation and
PUNCH_HOLE), memfd seals and pread/pwrite. Every file has tmpfs semantics, as the API
contract says.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Protocol

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm.page_alloc import KIND_PAGECACHE

if TYPE_CHECKING:
    from vmalab.mm.page_alloc import PhysMem


class PageCacheHost(Protocol):
    """What the page cache needs of the machine (``vmalab.mm.mm_types.MmContext`` has
    it): the page allocator, the inode numbers, the commit charge, and
    mm/memory.c:unmap_mapping_range, handed in because this module sits below
    vmalab.mm.memory and vmalab.mm.mm_types."""

    phys: PhysMem
    ino_seq: int
    vm_committed_as: int

    def unmap_mapping_range(
        self, inode: Inode, first: int, last: int | None, even_cows: bool, /
    ) -> None:
        """Zap every mapping of page-cache indices [first, last] of ``inode``."""


MAX_LFS_FILESIZE = (1 << 63) - 1
MEMFD_NAME_MAX = 249  # NAME_MAX - strlen("memfd:")


class Inode:
    """A tmpfs inode with its page cache (``pages``: index → pfn) and ``i_mmap``."""

    __slots__ = (
        "ctx",
        "ino",
        "name",
        "size",
        "pages",
        "seals",
        "i_mmap",
        "i_mmap_writable",
        "nlink",
        "kind",
        "refs",
        "not_uptodate",
        "clean",
        "acct_pages",
        "on_evict",
        "on_close",
        "huge_folios",
    )

    def __init__(self, ctx: PageCacheHost, name: str, kind: str) -> None:
        self.ctx = ctx
        ctx.ino_seq += 1
        self.ino = ctx.ino_seq
        self.name = name
        self.size = 0
        self.pages: dict[int, int] = {}
        self.seals = uapi.F_SEAL_SEAL
        #: The VMAs mapping the file (``vmalab.mm.mm_types.VmArea``).
        self.i_mmap: set[Hashable] = set()
        self.i_mmap_writable = 0
        self.nlink = 1 if kind == "file" else 0
        self.kind = kind  # "file", "memfd" or "shmem" (MAP_SHARED|MAP_ANONYMOUS)
        self.refs = 0  # open file descriptions' references (fds and VMAs)
        # Indices of folios fallocate() created and nothing has filled yet
        # (!folio_test_uptodate): fault-around skips them.
        self.not_uptodate: set[int] = set()
        # Indices of folios a fault created in a hole (zeroed, uptodate, not dirty);
        # reclaim drops them while nothing has written them.
        self.clean: set[int] = set()
        # Pages charged to vm_committed_as by shmem_acct_size() (shared anonymous
        # memory without VM_NORESERVE), given back when the inode is evicted.
        self.acct_pages = 0
        # Called once when the inode is evicted (hugetlbfs gives back its huge pages).
        self.on_evict: Callable[[Inode], None] | None = None
        # Called when a VMA of the inode is freed (SysV shm: shm_close).
        self.on_close: Callable[[Inode], None] | None = None
        # First indices of PMD-order folios (MADV_COLLAPSE's collapse_file): a fault of
        # an aligned VMA with no PTE table maps such a folio by a huge PMD (do_set_pmd).
        self.huge_folios: set[int] = set()

    def page_cache_alloc(self, index: int) -> int:
        """Add a zeroed page at ``index``. Models mm/shmem.c:shmem_alloc_and_add_folio."""
        pfn = self.ctx.phys.alloc(KIND_PAGECACHE, self.ino)
        self.pages[index] = pfn
        return pfn

    def fallocate_pages(self, first: int, end: int) -> None:
        """Allocate the missing pages of [first, end): dirty, not uptodate.

        Models mm/shmem.c:shmem_fallocate → shmem_get_folio(SGP_FALLOC): a new folio is
        left !uptodate until a fault or write fills it, while a folio an earlier
        fallocate left !uptodate is initialised now ("SGP_FALLOC on a folio fallocated
        earlier must initialize it"); every folio is marked dirty.
        """
        for index in range(first, end):
            if index not in self.pages:
                self.page_cache_alloc(index)
                self.not_uptodate.add(index)
            else:
                self.not_uptodate.discard(index)
            self.clean.discard(index)

    def drop_pages(self, first: int, last: int | None) -> None:
        """Remove page-cache pages [first, last] that no PTE maps any more.

        Models mm/truncate.c:truncate_inode_pages_range after unmap_mapping_range().
        """
        phys = self.ctx.phys
        # A huge folio losing a page is split (truncate_inode_partial_folio).
        # Simplification: into order-0 folios; 6.18 splits it non-uniformly
        # (try_folio_split) into large folios of orders 8, 7, ... around the hole, which
        # later faults map whole (docs/divergences.md, shmem-thp-split).
        self.huge_folios = {
            h for h in self.huge_folios if h + 511 < first or (last is not None and h > last)
        }
        for index in [i for i in self.pages if i >= first and (last is None or i <= last)]:
            pfn = self.pages.pop(index)
            self.not_uptodate.discard(index)
            self.clean.discard(index)
            if phys.mapcount[pfn] != 0:
                raise InvariantError("drop_pages: page-cache page still mapped after unmap")
            phys.free(pfn)

    def truncate(self, size: int) -> None:
        """Set the size; shrinking unmaps and drops pages past EOF, markers kept.

        Models mm/truncate.c:truncate_setsize → truncate_pagecache (unmap_mapping_range
        with even_cows, then truncate_inode_pages) and shmem_setattr's partial-page zeroing.
        """
        old = self.size
        self.size = size
        if size < old:
            first = (size + 4095) >> 12
            self.ctx.unmap_mapping_range(self, first, None, True)  # even_cows
            self.drop_pages(first, None)
            if size & 4095:
                pfn = self.pages.get(size >> 12)
                if pfn is not None:
                    self.ctx.phys.zero_range(pfn, size & 4095, 4096 - (size & 4095))

    def punch_hole(self, offset: int, length: int) -> None:
        """Free the range's pages; partial pages are zeroed.

        Models mm/shmem.c:shmem_fallocate(FALLOC_FL_PUNCH_HOLE): unmap_mapping_range
        without even_cows (private CoW copies survive), then shmem_truncate_range.
        """
        end = min(offset + length, self.size)
        if end <= offset:
            return
        first = (offset + 4095) >> 12
        last_excl = end >> 12
        if first < last_excl:
            self.ctx.unmap_mapping_range(self, first, last_excl - 1, False)  # even_cows
            self.drop_pages(first, last_excl - 1)
        phys = self.ctx.phys
        # Partial pages at either edge are zeroed in place.
        if offset & 4095:
            pfn = self.pages.get(offset >> 12)
            if pfn is not None:
                n = min(4096 - (offset & 4095), end - offset)
                phys.zero_range(pfn, offset & 4095, n)
        if end & 4095 and (end >> 12) != (offset >> 12):
            pfn = self.pages.get(end >> 12)
            if pfn is not None:
                phys.zero_range(pfn, 0, end & 4095)

    def write(self, data: bytes, offset: int) -> None:
        """Write into the page cache, growing the file. Models shmem_write_begin/end
        (i_size grows page by page, so a failing allocation leaves a short write)."""
        phys = self.ctx.phys
        pos = offset
        mv = memoryview(data)
        try:
            while mv:
                index = pos >> 12
                off = pos & 4095
                n = min(4096 - off, len(mv))
                pfn = self.pages.get(index)
                if pfn is None:
                    pfn = self.page_cache_alloc(index)
                self.not_uptodate.discard(index)
                self.clean.discard(index)
                phys.write(pfn, off, mv[:n])
                mv = mv[n:]
                pos += n
        finally:
            self.size = max(self.size, pos)

    def read(self, length: int, offset: int) -> bytes:
        """Read from the page cache up to EOF; holes read as zeroes."""
        end = min(offset + length, self.size)
        out = bytearray()
        pos = offset
        phys = self.ctx.phys
        while pos < end:
            off = pos & 4095
            n = min(4096 - off, end - pos)
            pfn = self.pages.get(pos >> 12)
            out += phys.read(pfn, off, n) if pfn is not None else bytes(n)
            pos += n
        return bytes(out)

    def release_if_unused(self) -> None:
        """Free the page cache once no name, open file or mapping refers to the inode (iput)."""
        if self.nlink == 0 and self.refs == 0 and not self.i_mmap:
            phys = self.ctx.phys
            for pfn in self.pages.values():
                phys.free(pfn)
            self.pages.clear()
            if self.acct_pages:
                # shmem_evict_inode → shmem_unacct_size
                self.ctx.vm_committed_as -= self.acct_pages
                self.acct_pages = 0
            if self.on_evict is not None:
                evict, self.on_evict = self.on_evict, None
                evict(self)


class File:
    """An open file description (``struct file``): the inode and the access mode.

    VMAs compare ``vm_file`` by identity, as the kernel compares ``struct file``
    pointers, so two open() calls of one path give mappings that never merge.
    """

    __slots__ = ("inode", "readable", "writable", "refs", "path")

    def __init__(self, inode: Inode, readable: bool, writable: bool, path: str) -> None:
        self.inode = inode
        self.readable = readable
        self.writable = writable
        self.refs = 0
        self.path = path

    def get(self) -> None:
        """Models get_file."""
        self.refs += 1
        self.inode.refs += 1

    def put(self) -> None:
        """Models fput: the last reference may free an unlinked inode."""
        self.refs -= 1
        self.inode.refs -= 1
        if self.inode.kind != "file":
            self.inode.nlink = 0
        self.inode.release_if_unused()


class FileSystem:
    """The one tmpfs of a Kernel: regular files by path."""

    __slots__ = ("ctx", "files")

    def __init__(self, ctx: PageCacheHost) -> None:
        self.ctx = ctx
        self.files: dict[str, Inode] = {}

    def open(self, path: str, flags: int) -> File:
        """Models fs/open.c:do_sys_openat2 on tmpfs (O_CREAT, O_EXCL, O_TRUNC)."""
        if not isinstance(path, str) or not path:
            raise kernel_error(errno.ENOENT, repr(path))
        if len(path) > 4095:
            raise kernel_error(errno.ENAMETOOLONG)
        acc = flags & uapi.O_ACCMODE
        if acc == 3:
            raise kernel_error(errno.EINVAL, "O_ACCMODE 3")
        if path == "/dev/zero":
            return File(self.devzero(), acc != uapi.O_WRONLY, acc != uapi.O_RDONLY, path)
        inode = self.files.get(path)
        if inode is None:
            if not flags & uapi.O_CREAT:
                raise kernel_error(errno.ENOENT, path)
            inode = self.files[path] = Inode(self.ctx, path, "file")
        elif flags & uapi.O_CREAT and flags & uapi.O_EXCL:
            raise kernel_error(errno.EEXIST, path)
        f = File(
            inode, acc in (uapi.O_RDONLY, uapi.O_RDWR), acc in (uapi.O_WRONLY, uapi.O_RDWR), path
        )
        if flags & uapi.O_TRUNC and f.writable and inode.size:
            check_seals_shrink(inode, 0)
            inode.truncate(0)
        return f

    def unlink(self, path: str) -> None:
        """Remove a name; the inode lives on while files or mappings hold it.

        Models fs/namei.c:do_unlinkat → vfs_unlink → mm/shmem.c:shmem_unlink (drop_nlink).
        /proc/PID/maps then shows the mappings' path with `` (deleted)``, as d_path() does.
        """
        inode = self.files.pop(path, None)
        if inode is None:
            raise kernel_error(errno.ENOENT, path)
        inode.nlink = 0
        inode.release_if_unused()

    def rename(self, old: str, new: str) -> None:
        """Models fs/namei.c:do_renameat2 on tmpfs: ``new``'s old inode loses its name."""
        inode = self.files.pop(old, None)
        if inode is None:
            raise kernel_error(errno.ENOENT, old)
        victim = self.files.get(new)
        if victim is not None and victim is not inode:
            victim.nlink = 0
            victim.release_if_unused()
        self.files[new] = inode
        inode.name = new

    def memfd_create(self, name: str, flags: int) -> File:
        """Models mm/memfd.c:memfd_create for shmem (MFD_HUGETLB memfds are made by
        vmalab.mm.hugetlb.memfd_create_hugetlb; here it is EINVAL)."""
        valid = uapi.MFD_CLOEXEC | uapi.MFD_ALLOW_SEALING | uapi.MFD_NOEXEC_SEAL | uapi.MFD_EXEC
        if flags & ~valid or flags & uapi.MFD_HUGETLB:
            raise kernel_error(errno.EINVAL, "memfd_create flags")
        if flags & uapi.MFD_EXEC and flags & uapi.MFD_NOEXEC_SEAL:
            raise kernel_error(errno.EINVAL, "MFD_EXEC with MFD_NOEXEC_SEAL")
        if len(name.encode()) > MEMFD_NAME_MAX:
            raise kernel_error(errno.EINVAL, "name too long")
        inode = Inode(self.ctx, f"/memfd:{name} (deleted)", "memfd")
        if flags & (uapi.MFD_ALLOW_SEALING | uapi.MFD_NOEXEC_SEAL):
            inode.seals = 0
        if flags & uapi.MFD_NOEXEC_SEAL:
            inode.seals |= uapi.F_SEAL_EXEC
        return File(inode, True, True, inode.name)

    def devzero(self) -> Inode:
        """The character device inode of /dev/zero (devtmpfs, measured as 00:06 4)."""
        inode = self.files.get("\0devzero")
        if inode is None:
            inode = self.files["\0devzero"] = Inode(self.ctx, "/dev/zero", "devzero")
            inode.nlink = 1
            inode.size = MAX_LFS_FILESIZE  # reads never reach an end
        return inode

    def shmem_zero_setup(self) -> File:
        """The shmem object behind a MAP_SHARED|MAP_ANONYMOUS mapping.

        Models mm/shmem.c:shmem_zero_setup ("/dev/zero (deleted)").
        """
        inode = Inode(self.ctx, "/dev/zero (deleted)", "shmem")
        return File(inode, True, True, inode.name)


def check_seals_shrink(inode: Inode, size: int) -> None:
    """Models mm/shmem.c:shmem_setattr's F_SEAL_SHRINK/F_SEAL_GROW checks."""
    if size < inode.size and inode.seals & uapi.F_SEAL_SHRINK:
        raise kernel_error(errno.EPERM, "F_SEAL_SHRINK")
    if size > inode.size and inode.seals & uapi.F_SEAL_GROW:
        raise kernel_error(errno.EPERM, "F_SEAL_GROW")


def add_seals(f: File, seals: int) -> None:
    """Models mm/memfd.c:memfd_add_seals."""
    inode = f.inode
    allowed = (
        uapi.F_SEAL_SEAL
        | uapi.F_SEAL_SHRINK
        | uapi.F_SEAL_GROW
        | uapi.F_SEAL_WRITE
        | uapi.F_SEAL_FUTURE_WRITE
        | uapi.F_SEAL_EXEC
    )
    if inode.kind == "shmem":
        raise kernel_error(errno.EINVAL, "not a sealable file")
    if seals & ~allowed:
        raise kernel_error(errno.EINVAL, "unknown seal")
    if not f.writable:
        raise kernel_error(errno.EPERM, "not open for writing")
    if inode.seals & uapi.F_SEAL_SEAL:
        raise kernel_error(errno.EPERM, "F_SEAL_SEAL")
    if seals & uapi.F_SEAL_WRITE and not inode.seals & uapi.F_SEAL_WRITE:
        # mapping_deny_writable(): fails while shared writable mappings exist.
        if inode.i_mmap_writable > 0:
            raise kernel_error(errno.EBUSY, "writable shared mapping exists")
    inode.seals |= seals


def devzero_mmap_file(fs: FileSystem, flags: int, file: File, length: int) -> File:
    """The file a mapping of /dev/zero gets. Models drivers/char/mem.c:mmap_zero: a
    shared mapping is shmem (shmem_zero_setup: a new ``/dev/zero (deleted)`` object, the
    open mode still checked against PROT_WRITE by do_mmap); a private one keeps the
    /dev/zero file (maps shows ``/dev/zero``, it never merges with anonymous
    neighbours: measured) but is anonymous memory (vma_set_anonymous).

    The private mapping's faults take the anonymous path (do_anonymous_page: a read maps
    the zero page, pagemap `A`; measured, found by fuzz seed 3000384). "Shared" is
    mmap_zero's ``vma->vm_flags & VM_SHARED``: do_mmap drops VM_SHARED (keeping
    VM_MAYSHARE) for a MAP_SHARED mapping of a descriptor not open for writing, so a
    MAP_SHARED mapping of a read-only /dev/zero is anonymous memory too (measured on
    6.18.44: mseal'd and read-only, it refuses MADV_DONTNEED and GUARD_INSTALL with EPERM
    as anonymous memory does; found by fuzz seed 5200099).
    Simplification: a shared mapping's shmem object is not charged to the commit (the
    kernel's shmem_acct_size is).
    """
    if flags & uapi.MAP_TYPE in (uapi.MAP_SHARED, uapi.MAP_SHARED_VALIDATE) and file.writable:
        f = fs.shmem_zero_setup()
        f.inode.size = length
        f.readable, f.writable = file.readable, file.writable
        return f
    return file
