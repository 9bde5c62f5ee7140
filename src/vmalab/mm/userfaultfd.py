"""userfaultfd registration, as far as it shows in VMA flags and merging.

Models fs/userfaultfd.c (the userfaultfd syscall, UFFDIO_API, UFFDIO_REGISTER,
UFFDIO_UNREGISTER, userfaultfd_release) and mm/userfaultfd.c
(userfaultfd_register_range, userfaultfd_clear_vma, vma_can_userfault): registering
sets VM_UFFD_MISSING/WP/MINOR (``um``/``uw``/``ui`` in VmFlags) and the VMA's
``uffd_ctx``, splitting at the range's ends or merging with neighbours registered with
the same context (the context is part of is_mergeable_vma); unregistering and closing
the last descriptor clear them and merge back. A fork child loses the registration
(dup_userfaultfd without UFFD_FEATURE_EVENT_FORK), and so does the target of an mremap
move (mremap_userfaultfd_prep without UFFD_FEATURE_EVENT_REMAP).

Not modelled: the faults themselves (a registered range faults as if unregistered: no
thread is ever blocked and no message is queued), UFFDIO_COPY/ZEROPAGE/WRITEPROTECT/
CONTINUE/MOVE/POISON, the events (EVENT_FORK raises NotImplementedError at UFFDIO_API;
the other event features are accepted and have no effect), uffd-wp PTE markers and
/dev/userfaultfd.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm.filemap import File, Inode
from vmalab.mm.flags import (
    VM_DROPPABLE,
    VM_HUGETLB,
    VM_MAYWRITE,
    VM_UFFD_FLAGS,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
)
from vmalab.mm.mm_types import MMAP_MIN_ADDR, TASK_SIZE
from vmalab.mm.vma import VmaMergeStruct, vma_modify

if TYPE_CHECKING:
    from vmalab.mm.filemap import PageCacheHost
    from vmalab.mm.mm_types import MmStruct, VmArea

UFFD_API = 0xAA
#: What 6.18.44 reports in uffdio_api.features (measured) and in .ioctls.
UFFD_API_FEATURES = 0x1FFFF
UFFD_API_IOCTLS = 0x8000000000000003
UFFD_FEATURE_EVENT_FORK = 1 << 1
UFFD_FEATURE_EVENT_REMAP = 1 << 2
UFFD_FEATURE_SIGBUS = uapi.UFFD_FEATURE_SIGBUS
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_MISSING = 1
UFFDIO_REGISTER_MODE_WP = 2
UFFDIO_REGISTER_MODE_MINOR = 4
#: UFFD_API_RANGE_IOCTLS: WAKE, COPY, ZEROPAGE, MOVE, WRITEPROTECT, CONTINUE, POISON;
#: WRITEPROTECT is reported only with MODE_WP and CONTINUE only with MODE_MINOR
#: (measured: 0x13c for MISSING, 0x17c for MISSING|WP, 0x1bc for MINOR).
UFFD_API_RANGE_IOCTLS = 0x1FC
UFFD_API_RANGE_IOCTLS_BASIC = 0x1CC  # hugetlb: no ZEROPAGE, no MOVE
_UFFDIO_WRITEPROTECT = 6
_UFFDIO_CONTINUE = 7
O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
UFFD_USER_MODE_ONLY = 1


class UffdCtx:
    """``struct userfaultfd_ctx``: the mm it watches, its state and features."""

    __slots__ = ("mm", "api_done", "features")

    def __init__(self, mm: MmStruct) -> None:
        self.mm = mm
        self.api_done = False
        self.features = 0

    def __repr__(self) -> str:
        return f"<uffd ctx {id(self):#x}>"


class UffdInode(Inode):
    """The anon inode behind a userfaultfd descriptor, holding its context."""

    __slots__ = ("uffd",)

    def __init__(self, ctx: PageCacheHost, uffd: UffdCtx) -> None:
        super().__init__(ctx, "anon_inode:[userfaultfd]", "uffd")
        self.uffd = uffd


def new_userfaultfd(mm: MmStruct, flags: int) -> File:
    """userfaultfd(2): a descriptor whose last close is userfaultfd_release. Models
    fs/userfaultfd.c:new_userfaultfd (EINVAL for flags other than O_CLOEXEC,
    O_NONBLOCK and UFFD_USER_MODE_ONLY)."""
    if flags & ~(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY):
        raise kernel_error(errno.EINVAL, "userfaultfd flags")
    uffd = UffdCtx(mm)
    inode = UffdInode(mm.ctx.fs.ctx, uffd)
    inode.on_evict = lambda _inode: userfaultfd_release(uffd)
    return File(inode, True, True, inode.name)


def uffd_of(file: File) -> UffdCtx:
    """The context of a userfaultfd descriptor; EINVAL (as ioctl on another file would
    be ENOTTY, which the model does not distinguish) for any other file."""
    inode = file.inode
    if not isinstance(inode, UffdInode):
        raise kernel_error(errno.ENOTTY, "not a userfaultfd")
    return inode.uffd


def userfaultfd_api(uffd: UffdCtx, api: int, features: int) -> tuple[int, int]:
    """UFFDIO_API: returns (features, ioctls). Models fs/userfaultfd.c:userfaultfd_api
    (EINVAL if done already, for another API or unknown features)."""
    if uffd.api_done:
        raise kernel_error(errno.EINVAL, "UFFDIO_API twice")
    if api != UFFD_API or features & ~UFFD_API_FEATURES:
        raise kernel_error(errno.EINVAL, "UFFDIO_API arguments")
    if features & UFFD_FEATURE_EVENT_FORK:
        raise NotImplementedError("UFFD_FEATURE_EVENT_FORK is not modelled")
    uffd.api_done = True
    uffd.features = features
    return UFFD_API_FEATURES, UFFD_API_IOCTLS


def handle_userfault_sigbus(vma: VmArea, addr: int) -> bool:
    """Whether a fault at ``addr`` (whose PTE the caller found none) would be handed to
    the userfaultfd and, the context having UFFD_FEATURE_SIGBUS, fail with
    VM_FAULT_SIGBUS instead of blocking.

    Models the calls of fs/userfaultfd.c:handle_userfault for the faults the model has:
    do_anonymous_page and do_huge_pmd_anonymous_page (an anonymous VMA with
    VM_UFFD_MISSING, read or write), hugetlb_no_page (VM_UFFD_MISSING) and
    shmem_get_folio_gfp (VM_UFFD_MISSING when the page cache has no folio at the index,
    VM_UFFD_MINOR when it has one), then handle_userfault's ``UFFD_FEATURE_SIGBUS``
    early return. Simplification: without the feature the kernel would block the
    faulting thread until the fault is resolved; the model has no such thread and
    resolves the fault as if no userfaultfd were registered."""
    ctx = vma.uffd_ctx
    if not isinstance(ctx, UffdCtx) or not ctx.features & UFFD_FEATURE_SIGBUS:
        return False
    f = vma.vm_flags
    if not f & (VM_UFFD_MISSING | VM_UFFD_MINOR):
        return False
    if vma.is_anonymous() or f & VM_HUGETLB:
        return bool(f & VM_UFFD_MISSING)
    if not vma_is_shmem(vma) or vma.vm_file is None:
        return False
    index = ((addr - vma.vm_start) >> 12) + vma.vm_pgoff
    cached = index in vma.vm_file.inode.pages
    return bool(f & VM_UFFD_MINOR) if cached else bool(f & VM_UFFD_MISSING)


def validate_range(start: int, length: int) -> None:
    """Models fs/userfaultfd.c:validate_range (EINVAL for each failure)."""
    if start & 4095 or length & 4095 or not length:
        raise kernel_error(errno.EINVAL, "unaligned or empty range")
    if start < MMAP_MIN_ADDR or start >= TASK_SIZE or length > TASK_SIZE - start:
        raise kernel_error(errno.EINVAL, "range outside the address space")


def vma_is_shmem(vma: VmArea) -> bool:
    """Models mm/shmem.c:vma_is_shmem (vm_ops are shmem's): every file of the model is
    tmpfs; a SysV shm attach has shm_vm_ops and is not (measured: EINVAL), nor is a
    private /dev/zero mapping."""
    f = vma.vm_file
    return f is not None and f.inode.kind in ("file", "memfd", "shmem")


def vma_can_userfault(vma: VmArea, vm_flags: int, wp_async: bool = False) -> bool:
    """Models include/linux/userfaultfd_k.h:vma_can_userfault: not droppable; MINOR only
    on hugetlb or shmem; WP alone with UFFD_FEATURE_WP_ASYNC on anything; else
    anonymous, hugetlb or shmem memory."""
    vm_flags &= VM_UFFD_FLAGS
    if vma.vm_flags & VM_DROPPABLE:
        return False
    hugetlb = bool(vma.vm_flags & VM_HUGETLB)
    if vm_flags & VM_UFFD_MINOR and not (hugetlb or vma_is_shmem(vma)):
        return False
    if wp_async and vm_flags == VM_UFFD_WP:
        return True
    return vma.is_anonymous() or hugetlb or vma_is_shmem(vma)


def _modify_uffd(
    prev: VmArea | None, vma: VmArea, start: int, end: int, new_flags: int, ctx: UffdCtx | None
) -> VmArea:
    """Models mm/vma.c:vma_modify_flags_uffd, then userfaultfd_set_ctx/reset_ctx."""
    vmg = VmaMergeStruct.vma_state(prev, vma, start, end)
    vmg.vm_flags = new_flags
    vmg.uffd_ctx = ctx
    res, _merged = vma_modify(vmg)
    res.vm_flags = (res.vm_flags & ~VM_UFFD_FLAGS) | (new_flags & VM_UFFD_FLAGS)
    res.uffd_ctx = ctx
    return res


def _range_vmas(uffd: UffdCtx, start: int, length: int) -> tuple[int, list[VmArea]]:
    """The range's end and its VMAs, as userfaultfd_register and userfaultfd_unregister
    both find them (validate_range, then EINVAL without a VMA, then the huge-page
    alignment of the first VMA's start)."""
    validate_range(start, length)
    end = start + length
    vmas = uffd.mm.vmas_in(start, end)
    if not vmas:
        raise kernel_error(errno.EINVAL, "no VMA in range")
    _hpage_check(vmas[0], start)
    return end, vmas


def _hpage_check(vma: VmArea, addr: int) -> None:
    if vma.vm_flags & VM_HUGETLB:
        from vmalab.mm.hugetlb import vma_hpage_size

        if addr & (vma_hpage_size(vma) - 1):
            raise kernel_error(errno.EINVAL, "hugetlb range not huge-page aligned")


def userfaultfd_register(uffd: UffdCtx, start: int, length: int, mode: int) -> int:
    """UFFDIO_REGISTER: returns the range's ioctls. Raises OSError.

    Models fs/userfaultfd.c:userfaultfd_register: EINVAL before UFFDIO_API, for a mode
    of 0 or with unknown bits, for a bad range (validate_range) or one holding no VMA,
    or a VMA that cannot take the mode (vma_can_userfault); EPERM for a VMA without
    VM_MAYWRITE; EBUSY for one registered with another context. Every VMA is checked
    before any changes; then userfaultfd_register_range() sets the flags and context
    VMA by VMA (vma_modify_flags_uffd: merge or split). Holes inside the range are
    skipped.
    Long as the kernel's userfaultfd_register is.
    """
    if not uffd.api_done:
        raise kernel_error(errno.EINVAL, "UFFDIO_API first")
    modes = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR
    if not mode or mode & ~modes:
        raise kernel_error(errno.EINVAL, "register mode")
    vm_flags = 0
    if mode & UFFDIO_REGISTER_MODE_MISSING:
        vm_flags |= VM_UFFD_MISSING
    if mode & UFFDIO_REGISTER_MODE_WP:
        vm_flags |= VM_UFFD_WP
    if mode & UFFDIO_REGISTER_MODE_MINOR:
        vm_flags |= VM_UFFD_MINOR
    end, vmas = _range_vmas(uffd, start, length)
    basic = False
    wp_async = bool(uffd.features & UFFD_FEATURE_WP_ASYNC)
    for cur in vmas:
        if not vma_can_userfault(cur, vm_flags, wp_async):
            raise kernel_error(errno.EINVAL, "VMA cannot be registered in this mode")
        if not cur.vm_flags & VM_MAYWRITE:
            raise kernel_error(errno.EPERM, "VMA without VM_MAYWRITE")
        if cur.vm_flags & VM_HUGETLB and cur.vm_start < end <= cur.vm_end:
            _hpage_check(cur, end)
        if cur.uffd_ctx is not None and cur.uffd_ctx is not uffd:
            raise kernel_error(errno.EBUSY, "registered with another userfaultfd")
        if cur.vm_flags & VM_HUGETLB:
            basic = True
    prev = vmas[0].vm_prev if vmas[0].vm_start >= start else vmas[0]
    vma: VmArea | None = vmas[0]
    while vma is not None and vma.vm_start < end:
        if not (vma.uffd_ctx is uffd and vma.vm_flags & vm_flags == vm_flags):
            start = max(start, vma.vm_start)
            vma_end = min(end, vma.vm_end)
            new_flags = (vma.vm_flags & ~VM_UFFD_FLAGS) | vm_flags
            vma = _modify_uffd(prev, vma, start, vma_end, new_flags, uffd)
        prev = vma
        start = vma.vm_end
        vma = vma.vm_next
    ioctls = UFFD_API_RANGE_IOCTLS_BASIC if basic else UFFD_API_RANGE_IOCTLS
    if not mode & UFFDIO_REGISTER_MODE_WP:
        ioctls &= ~(1 << _UFFDIO_WRITEPROTECT)
    if not mode & UFFDIO_REGISTER_MODE_MINOR:
        ioctls &= ~(1 << _UFFDIO_CONTINUE)
    return ioctls


def userfaultfd_unregister(uffd: UffdCtx, start: int, length: int) -> None:
    """UFFDIO_UNREGISTER. Models fs/userfaultfd.c:userfaultfd_unregister: EINVAL for a bad
    range, one holding no VMA, a VMA that could never be registered or one registered
    with another context; then every
    registered VMA in range is cleared (userfaultfd_clear_vma: merge or split). As in the
    VMA registered with another context is EINVAL (measured on 6.18.44)."""
    if not uffd.api_done:
        raise kernel_error(errno.EINVAL, "UFFDIO_API first")
    end, vmas = _range_vmas(uffd, start, length)
    wp_async = bool(uffd.features & UFFD_FEATURE_WP_ASYNC)
    for cur in vmas:
        if not vma_can_userfault(cur, cur.vm_flags, wp_async):
            raise kernel_error(errno.EINVAL, "VMA cannot be registered")
        if cur.uffd_ctx is not None and cur.uffd_ctx is not uffd:
            raise kernel_error(errno.EINVAL, "registered with another userfaultfd")
    prev = vmas[0].vm_prev if vmas[0].vm_start >= start else vmas[0]
    vma: VmArea | None = vmas[0]
    while vma is not None and vma.vm_start < end:
        if vma.uffd_ctx is not None:
            start = max(start, vma.vm_start)
            vma_end = min(end, vma.vm_end)
            vma = _modify_uffd(prev, vma, start, vma_end, vma.vm_flags & ~VM_UFFD_FLAGS, None)
        prev = vma
        start = vma.vm_end
        vma = vma.vm_next


def userfaultfd_release(uffd: UffdCtx) -> None:
    """The last descriptor closed. Models fs/userfaultfd.c:userfaultfd_release →
    userfaultfd_release_all: every VMA of the context's mm registered with it is
    cleared, merging where it can."""
    mm = uffd.mm
    if getattr(mm, "dead", False):
        return
    prev: VmArea | None = None
    vma = mm.first_vma()
    while vma is not None:
        if vma.uffd_ctx is not uffd:
            prev = vma
            vma = vma.vm_next
            continue
        vma = _modify_uffd(prev, vma, vma.vm_start, vma.vm_end, vma.vm_flags & ~VM_UFFD_FLAGS, None)
        prev = vma
        vma = vma.vm_next


def mremap_userfaultfd_prep(new: VmArea) -> None:
    """Models mm/userfaultfd.c:mremap_userfaultfd_prep: without UFFD_FEATURE_EVENT_REMAP
    the moved VMA loses its registration."""
    ctx = new.uffd_ctx
    if isinstance(ctx, UffdCtx) and not ctx.features & UFFD_FEATURE_EVENT_REMAP:
        userfaultfd_reset_ctx(new)


def userfaultfd_reset_ctx(vma: VmArea) -> None:
    """Models mm/userfaultfd.c:userfaultfd_reset_ctx (fork without EVENT_FORK, mremap
    without EVENT_REMAP): the flags and the context go, nothing merges."""
    vma.uffd_ctx = None
    vma.vm_flags &= ~VM_UFFD_FLAGS


__all__ = [
    "UffdCtx",
    "new_userfaultfd",
    "userfaultfd_api",
    "userfaultfd_register",
    "userfaultfd_release",
    "userfaultfd_unregister",
]
