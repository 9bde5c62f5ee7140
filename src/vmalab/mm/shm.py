"""SysV shared memory: shmget, shmat, shmdt and shmctl(IPC_RMID), as the VMA layer sees it.

Models ipc/shm.c: a segment is a shmem file on the internal mount named
``SYSV%08x`` (the key), with the segment's id as its inode number; each shmat() opens a
new ``struct file`` on it (so two attaches never merge) and maps it MAP_SHARED with
do_mmap(); shmdt() unmaps every VMA of the attach that starts where the attach would
have (``(vm_start - addr) / PAGE_SIZE == vm_pgoff``), within the segment's size. The
segment charges the commit at creation (shmem_acct_size, unless SHM_NORESERVE) and
lives until IPC_RMID and the last detach (shm_close → shm_destroy).

Deliberate simplifications: one IPC namespace per Kernel; the caller is root (no
permission checks, no ``SHM_LOCK``/``SHM_UNLOCK``, no ``IPC_STAT``/``IPC_SET``/``SHM_INFO``:
shmctl knows IPC_RMID only and answers EINVAL to the rest); no SHM_HUGETLB; limits are
the kernel's defaults (SHMMNI 4096, SHMMAX/SHMALL ULONG_MAX - 2**24); ids are
``32768 * seq + index`` as ipc_buildid() makes them, but seq starts at 0 here.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error

# File at run time, not only for the type checker: compiled, ShmSegment's class body
# stores File's native type in __annotations__, which is NULL (a SIGSEGV) until
# vmalab.mm.filemap is imported (mypyc/mypyc#1209; the live runner's child imported this
# module first and died of it)
from vmalab.mm.filemap import File

if TYPE_CHECKING:
    from vmalab.mm.filemap import Inode
    from vmalab.mm.mm_types import MmStruct

IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_RMID = uapi.IPC_RMID
SHM_RDONLY = 0o10000
SHM_RND = 0o20000
SHM_REMAP = 0o40000
SHM_EXEC = 0o100000
SHM_NORESERVE = 0o10000  # shmget flag (same value as SHM_RDONLY, another call)
SHM_HUGETLB = 0o4000
SHMLBA = 4096
SHMMIN = 1
SHMMNI = 4096
SHMMAX = (1 << 64) - 1 - (1 << 24)
IPCMNI_SEQ_SHIFT = 15


@dataclass
class ShmSegment:
    """``struct shmid_kernel``: the key, the size in bytes and the shmem file."""

    id: int
    key: int
    size: int
    file: File
    deleted: bool = False

    @property
    def inode(self) -> Inode:
        return self.file.inode

    def nattch(self) -> int:
        """shm_nattch: the VMAs mapping the segment (shm_open/shm_close count each)."""
        return len(self.file.inode.i_mmap)


def ns_of(ctx: object) -> ShmNamespace:
    """The ShmNamespace of an MmContext (``ctx.shm_ns``)."""
    ns = getattr(ctx, "shm_ns", None)
    if not isinstance(ns, ShmNamespace):
        raise InvariantError("shm: isinstance(ns, ShmNamespace)")
    return ns


class ShmNamespace:
    """``struct ipc_namespace``'s shm ids."""

    def __init__(self) -> None:
        self.segments: dict[int, ShmSegment] = {}
        self.keys: dict[int, int] = {}
        self.seq = 0

    def inodes(self) -> list[Inode]:
        """The inodes the namespace holds (for Kernel.check)."""
        return [s.inode for s in self.segments.values()]

    def _lookup(self, shmid: int) -> ShmSegment:
        seg = self.segments.get(shmid) if shmid >= 0 else None
        if seg is None:
            raise kernel_error(errno.EINVAL, f"no shm segment {shmid}")
        return seg

    def _destroy(self, seg: ShmSegment) -> None:
        """Models ipc/shm.c:shm_destroy: the id goes, the file reference is dropped."""
        self.segments.pop(seg.id, None)
        if self.keys.get(seg.key) == seg.id:
            del self.keys[seg.key]
        seg.file.put()

    def shm_close(self, inode: Inode) -> None:
        """A VMA of the segment went away. Models ipc/shm.c:shm_close → shm_may_destroy."""
        for seg in list(self.segments.values()):
            if seg.inode is inode and seg.deleted and not seg.nattch():
                self._destroy(seg)


def newseg(mm: MmStruct, ns: ShmNamespace, key: int, size: int, shmflg: int) -> int:
    """Models ipc/shm.c:newseg: EINVAL outside [SHMMIN, SHMMAX], ENOSPC past SHMMNI,
    the commit charge (ENOMEM), a shmem file ``SYSV%08x`` whose inode number is the id."""
    from vmalab.mm.filemap import File, Inode
    from vmalab.mm.util import security_vm_enough_memory_mm

    if size < SHMMIN or size > SHMMAX:
        raise kernel_error(errno.EINVAL, "shm size out of range")
    if shmflg & SHM_HUGETLB:
        raise kernel_error(errno.EINVAL, "SHM_HUGETLB is not modelled")
    if len(ns.segments) >= SHMMNI:
        raise kernel_error(errno.ENOSPC, "SHMMNI")
    pages = (size + 4095) >> 12
    if not shmflg & SHM_NORESERVE:
        security_vm_enough_memory_mm(mm, pages)  # shmem_acct_size
    inode = Inode(mm.ctx.fs.ctx, f"/SYSV{key & 0xFFFFFFFF:08x} (deleted)", "sysv")
    inode.size = size
    if not shmflg & SHM_NORESERVE:
        inode.acct_pages = pages
    idx = 0
    used = {i & ((1 << IPCMNI_SEQ_SHIFT) - 1) for i in ns.segments}
    while idx in used:
        idx += 1
    shmid = (ns.seq << IPCMNI_SEQ_SHIFT) + idx
    ns.seq += 1
    inode.ino = shmid  # newseg: file_inode(file)->i_ino = shp->shm_perm.id
    inode.on_close = ns.shm_close
    f = File(inode, True, True, inode.name)
    f.get()
    ns.segments[shmid] = ShmSegment(shmid, key, size, f)
    if key != IPC_PRIVATE:
        ns.keys[key] = shmid
    return shmid


def ksys_shmget(mm: MmStruct, ns: ShmNamespace, key: int, size: int, shmflg: int) -> int:
    """shmget(2). Models ipc/shm.c:ksys_shmget → ipcget: IPC_PRIVATE always creates; a
    missing key is ENOENT without IPC_CREAT; an existing one EEXIST with
    IPC_CREAT|IPC_EXCL, EINVAL when asked for more than its size (shm_more_checks)."""
    if key == IPC_PRIVATE:
        return newseg(mm, ns, key, size, shmflg)
    shmid = ns.keys.get(key)
    if shmid is None:
        if not shmflg & IPC_CREAT:
            raise kernel_error(errno.ENOENT, "no segment with that key")
        return newseg(mm, ns, key, size, shmflg)
    if shmflg & IPC_CREAT and shmflg & IPC_EXCL:
        raise kernel_error(errno.EEXIST, "segment exists")
    if ns.segments[shmid].size < size:
        raise kernel_error(errno.EINVAL, "segment smaller than asked")
    return shmid


def do_shmat(mm: MmStruct, ns: ShmNamespace, shmid: int, addr: int, shmflg: int) -> int:
    """shmat(2); returns the address. Models ipc/shm.c:do_shmat.

    An unaligned address is EINVAL unless SHM_RND rounds it down to SHMLBA (a round
    down to 0 with SHM_REMAP is EINVAL); an address means MAP_FIXED, and without
    SHM_REMAP a range holding any VMA is EINVAL; SHM_REMAP without an address is
    EINVAL. SHM_RDONLY maps PROT_READ on a read-only file (no VM_MAYWRITE: a later
    mprotect(PROT_WRITE) is EACCES), SHM_EXEC adds PROT_EXEC. A removed segment can
    still be attached while it has attaches (measured).
    Long as the kernel's do_shmat is.
    """
    from vmalab.mm.mmap import do_mmap, mm_populate

    flags = uapi.MAP_SHARED
    if addr:
        if addr & (SHMLBA - 1):
            if shmflg & SHM_RND:
                addr &= ~(SHMLBA - 1)
                if not addr and shmflg & SHM_REMAP:
                    raise kernel_error(errno.EINVAL, "SHM_RND to 0 with SHM_REMAP")
            else:
                raise kernel_error(errno.EINVAL, "unaligned shmaddr")
        flags |= uapi.MAP_FIXED
    elif shmflg & SHM_REMAP:
        raise kernel_error(errno.EINVAL, "SHM_REMAP without an address")
    if shmflg & SHM_RDONLY:
        prot = uapi.PROT_READ
        writable = False
    else:
        prot = uapi.PROT_READ | uapi.PROT_WRITE
        writable = True
    if shmflg & SHM_EXEC:
        prot |= uapi.PROT_EXEC
    seg = ns._lookup(shmid)
    size = seg.size
    if flags & uapi.MAP_FIXED and not shmflg & SHM_REMAP:
        if addr + size < addr or mm.vmas_in(addr, addr + size):
            raise kernel_error(errno.EINVAL, "shmaddr range in use")
    f = File(seg.inode, True, writable, seg.file.path)
    f.get()  # the attach's struct file, held by its VMAs only
    try:
        a, populate = do_mmap(mm, addr, size, prot, flags, f, 0)
    finally:
        f.put()
    if populate:
        mm_populate(mm, a, populate, ignore_errors=True)
    return a


def ksys_shmdt(mm: MmStruct, addr: int) -> None:
    """shmdt(2). Models ipc/shm.c:ksys_shmdt: EINVAL for an unaligned address; the
    first shm VMA at or above ``addr`` with ``(vm_start - addr) / PAGE_SIZE == vm_pgoff``
    gives the file and size, then every VMA of that file up to ``addr + size`` that
    satisfies the same test is unmapped. No such VMA is EINVAL. The unmaps' own errors
    are ignored, as ksys_shmdt ignores do_vmi_align_munmap()'s return: a sealed attach
    (mseal) stays mapped and shmdt still returns 0 (measured on 6.18.44)."""
    if addr & 4095:
        raise kernel_error(errno.EINVAL, "unaligned shmaddr")
    mask = (1 << 64) - 1

    def matches(v: object) -> bool:
        from vmalab.mm.mm_types import VmArea

        if not isinstance(v, VmArea):
            raise InvariantError("shm: isinstance(v, VmArea)")
        return (
            v.vm_file is not None
            and v.vm_file.inode.kind == "sysv"
            and ((v.vm_start - addr) & mask) >> 12 == v.vm_pgoff
        )

    vma = mm.find_vma(addr)
    file = None
    size = 0
    while vma is not None:
        nxt = vma.vm_next
        if matches(vma):
            if vma.vm_file is None:
                raise InvariantError("shm: a SysV shm VMA without its file")
            file = vma.vm_file
            size = file.inode.size
            _unmap_ignoring_errors(mm, vma.vm_start, vma.vm_end)
            vma = nxt
            break
        vma = nxt
    if file is None:
        raise kernel_error(errno.EINVAL, "no attach at shmaddr")
    size = (size + 4095) & ~4095
    while vma is not None and vma.vm_end - addr <= size:
        nxt = vma.vm_next
        if matches(vma) and vma.vm_file is file:
            _unmap_ignoring_errors(mm, vma.vm_start, vma.vm_end)
        vma = nxt


def _unmap_ignoring_errors(mm: MmStruct, start: int, end: int) -> None:
    """ksys_shmdt's ``do_vmi_align_munmap(&vmi, vma, mm, start, end, NULL, false)``, whose
    return value the kernel drops (EPERM for a sealed VMA leaves it mapped)."""
    from vmalab.mm.mmap import do_vmi_munmap

    try:
        do_vmi_munmap(mm, start, end - start)
    except OSError:
        pass


def ksys_shmctl(ns: ShmNamespace, shmid: int, cmd: int) -> int:
    """shmctl(2) with IPC_RMID (others EINVAL). Models ipc/shm.c:shmctl_down → do_shm_rmid:
    without attaches the segment is destroyed; else it is marked and its key becomes
    IPC_PRIVATE (shmget by key is ENOENT) until the last detach."""
    if cmd != IPC_RMID:
        raise kernel_error(errno.EINVAL, f"shmctl cmd {cmd} is not modelled")
    seg = ns._lookup(shmid)
    if not seg.nattch():
        ns._destroy(seg)
        return 0
    seg.deleted = True
    if ns.keys.get(seg.key) == seg.id:
        del ns.keys[seg.key]
    return 0


__all__ = ["ShmNamespace", "do_shmat", "ksys_shmctl", "ksys_shmdt", "ksys_shmget"]
