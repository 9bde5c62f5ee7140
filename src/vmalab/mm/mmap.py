"""mmap and munmap.

Models mm/mmap.c:do_mmap and the x86-64 entry (arch/x86/kernel/sys_x86_64.c:sys_mmap →
mm/util.c:vm_mmap_pgoff), mm/vma.c:__mmap_region, do_vmi_align_munmap
(vms_gather_munmap_vmas + vms_complete_munmap_vmas), unmap_region/free_pgtables and
mm/gup.c:__mm_populate. The top-down search of mm/mmap.c:generic_get_unmapped_area_topdown
→ vm_unmapped_area is in :mod:`vmalab.mm.unmapped_area` (re-exported here); brk and the
special mappings are in :mod:`vmalab.mm.brk`.
"""

from __future__ import annotations

import errno
from typing import Final

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm import hugetlb, pkeys, rmap
from vmalab.mm.fault import FaultError, populate_range
from vmalab.mm.filemap import File
from vmalab.mm.flags import (
    VM_ACCOUNT,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_PFNMAP,
    VM_SEALED,
    VM_SHARED,
    VM_SPECIAL,
    VM_SYNC,
    VM_WIPEONFORK,
    VM_WRITE,
    calc_vm_prot_bits,
)
from vmalab.mm.memory import zap_page_range
from vmalab.mm.mm_types import (
    MMAP_MIN_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    MmStruct,
    VmArea,
    mm_task,
)
from vmalab.mm.slab import AllocFailure

# get_unmapped_area and its helpers live in mm/unmapped_area.py; importable from here too.
from vmalab.mm.unmapped_area import get_unmapped_area as get_unmapped_area
from vmalab.mm.unmapped_area import hugetlb_get_unmapped_area
from vmalab.mm.unmapped_area import page_align as page_align
from vmalab.mm.unmapped_area import user_range_end as user_range_end
from vmalab.mm.unmapped_area import vm_start_gap as vm_start_gap
from vmalab.mm.unmapped_area import vm_unmapped_area_topdown as vm_unmapped_area_topdown
from vmalab.mm.util import (
    OVERCOMMIT_NEVER,
    security_vm_enough_memory_mm,
    vm_acct_memory,
    vm_unacct_memory,
)
from vmalab.mm.vma import (
    VmaMergeStruct,
    remove_vma_from_mm,
    split_vma_raw,
    vm_area_alloc,
    vma_link,
    vma_merge_new_range,
)

LEGACY_MAP_MASK: Final = (
    uapi.MAP_SHARED
    | uapi.MAP_PRIVATE
    | uapi.MAP_FIXED
    | uapi.MAP_ANONYMOUS
    | uapi.MAP_DENYWRITE
    | uapi.MAP_EXECUTABLE
    | uapi.MAP_UNINITIALIZED
    | uapi.MAP_GROWSDOWN
    | uapi.MAP_LOCKED
    | uapi.MAP_NORESERVE
    | uapi.MAP_POPULATE
    | uapi.MAP_NONBLOCK
    | uapi.MAP_STACK
    | uapi.MAP_HUGETLB
    | uapi.MAP_32BIT
    | 0x3F << 26  # MAP_HUGE_MASK << MAP_HUGE_SHIFT
)


def unmap_vmas_and_free(mm: MmStruct, vmas: list[VmArea], start: int, end: int) -> int:
    """Zap, free page tables, unlink and free ``vmas`` (already split to [start, end)).

    Models mm/vma.c:vms_complete_munmap_vmas → unmap_region (unmap_vmas with
    ZAP_FLAG_DROP_MARKER, free_pgtables between the surviving neighbours) and
    remove_vma. Returns the number of guard markers dropped.
    """
    dropped = [0]
    for v in vmas:
        zap_page_range(v, v.vm_start, v.vm_end, drop_markers=True, guard_count=dropped)
    nr_accounted = 0
    for v in vmas:
        if v.vm_flags & VM_LOCKED:
            mm.locked_vm -= v.pages()
        if v.vm_flags & VM_ACCOUNT:
            nr_accounted += v.pages()
        remove_vma_from_mm(v)
    vm_unacct_memory(mm.ctx, nr_accounted)  # vms_complete_munmap_vmas()
    prev_vma, nxt_vma = _neighbours(mm, start, end)
    floor = prev_vma.vm_end if prev_vma is not None else 0
    ceiling = nxt_vma.vm_start if nxt_vma is not None else 0
    mm.pgtables.free_pgd_range(start, end, floor, ceiling)
    return dropped[0]


def _neighbours(mm: MmStruct, start: int, end: int) -> tuple[VmArea | None, VmArea | None]:
    """(the VMA below ``start``, the VMA from ``end`` on) around a range holding no VMA."""
    nxt = mm.find_vma(start)
    prev = nxt.vm_prev if nxt is not None else mm.last_vma()
    return prev, nxt


def do_vmi_munmap(mm: MmStruct, start: int, length: int) -> None:
    """Unmap [start, start+length), splitting VMAs at the edges. Raises OSError.

    Models mm/vma.c:do_vmi_munmap → do_vmi_align_munmap (vms_gather_munmap_vmas: the
    map_count check only when the first VMA is split in its middle; EPERM for a sealed
    VMA, before the first split if that one is sealed, else after it (the split stays);
    the original VMA objects are the unmapped parts).
    """
    end = start + length
    vmas = mm.vmas_in(start, end)
    if not vmas:
        return
    first = vmas[0]
    try:
        if start > first.vm_start:
            if end < first.vm_end and mm.map_count >= mm.ctx.max_map_count:
                raise kernel_error(errno.ENOMEM, "max_map_count")
            if first.vm_flags & VM_SEALED:
                # "Don't bother splitting the VMA if we can't unmap it anyway"
                raise kernel_error(errno.EPERM, "sealed VMA")
            split_vma_raw(first, start, True)
        # The detach loop refuses a sealed VMA; a split of the first one stays.
        if any(v.vm_flags & VM_SEALED for v in vmas):
            raise kernel_error(errno.EPERM, "sealed VMA")
        last = vmas[-1]
        if last.vm_end > end:
            split_vma_raw(last, end, False)
    except AllocFailure:
        raise kernel_error(errno.ENOMEM, "munmap split failed") from None
    unmap_vmas_and_free(mm, vmas, start, end)


def accountable_mapping(file: File | None, vm_flags: int) -> bool:
    """Models mm/vma.c:accountable_mapping (private writable, not NORESERVE, not hugetlb)."""
    if file is not None and vm_flags & VM_HUGETLB:
        return False
    return vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE) == VM_WRITE


def mmap_region(
    mm: MmStruct, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int
) -> VmArea:
    """Map [addr, addr+length) with ``vm_flags``; returns the VMA now covering it.

    Models mm/vma.c:__mmap_region: unmap what MAP_FIXED replaces, charge VM_ACCOUNT,
    try vma_merge_new_range() with VMG_MMAP_STATE (no anon_vma, name, uffd or policy),
    else allocate a new VMA (shmem_zero_setup for shared anonymous memory), then
    __mmap_complete (VM_LOCKED dropped for special, hugetlb and droppable VMAs).
    """
    from vmalab.mm.mincore import map_deny_write_exec

    if map_deny_write_exec(mm, vm_flags, vm_flags):  # mm/mmap.c:mmap_region
        raise kernel_error(errno.EACCES, "MDWE: writable and executable")
    end = addr + length
    k = mm.ctx
    pglen = length >> PAGE_SHIFT
    # __mmap_prepare(): the commit charge comes before anything replaced is unmapped,
    # so a refusal leaves the old mappings in place; the pages of replaced VM_ACCOUNT
    # VMAs (vms->nr_accounted) carry over to the new one.
    charged = 0
    nr_accounted = 0
    if accountable_mapping(file, vm_flags):
        nr_accounted = (
            sum(
                min(v.vm_end, end) - max(v.vm_start, addr)
                for v in mm.vmas_in(addr, end)
                if v.vm_flags & VM_ACCOUNT
            )
            >> PAGE_SHIFT
        )
        charged = pglen - nr_accounted
        if charged:
            security_vm_enough_memory_mm(mm, charged)
        vm_flags |= VM_ACCOUNT
    shmem_charge = 0
    if file is None and vm_flags & VM_SHARED and not vm_flags & VM_NORESERVE:
        # shmem_zero_setup → shmem_kernel_file_setup → shmem_acct_size
        try:
            security_vm_enough_memory_mm(mm, pglen)
        except OSError:
            vm_unacct_memory(k, charged)
            raise
        shmem_charge = pglen
    try:
        vma = _mmap_region_locked(mm, file, addr, length, vm_flags, pgoff, shmem_charge)
    except BaseException:
        vm_unacct_memory(k, charged + shmem_charge)
        raise
    if nr_accounted:
        vm_acct_memory(k, nr_accounted)  # do_vmi_munmap() gave them back
    return vma


def _mmap_region_locked(
    mm: MmStruct,
    file: File | None,
    addr: int,
    length: int,
    vm_flags: int,
    pgoff: int,
    shmem_charge: int,
) -> VmArea:
    """The part of __mmap_region after the charge: unmap, merge or allocate, complete.

    Long as __mmap_region is.
    """
    end = addr + length
    do_vmi_munmap(mm, addr, length)
    huge = hugetlb.is_file_hugepages(file)
    if huge:
        if file is None:
            raise InvariantError("mmap: a file mapping without its file")
        # call_mmap() → hugetlbfs_file_mmap(): after the unmap, so a refused
        # reservation leaves a hole where MAP_FIXED replaced something (measured)
        vm_flags = hugetlb.hugetlbfs_file_mmap(vm_flags, file, length, pgoff, mm)
    prev, nxt = _neighbours(mm, addr, end)
    vma: VmArea | None = None
    if (prev is not None or nxt is not None) and not huge:
        vmg = VmaMergeStruct(mm, prev, None, addr, end, pgoff, vm_flags, file)
        vmg.next = nxt
        vma = vma_merge_new_range(vmg)
        if vmg.nomem:
            raise kernel_error(errno.ENOMEM, "merge allocation failed")
    if vma is None:
        try:
            vma = vm_area_alloc(mm, addr, end, pgoff, vm_flags, file)
        except AllocFailure:
            raise kernel_error(errno.ENOMEM, "vm_area_alloc failed") from None
        if file is None and vm_flags & VM_SHARED:
            vma.vm_file = mm.ctx.fs.shmem_zero_setup()
            vma.vm_file.inode.size = length
            vma.vm_file.inode.acct_pages = shmem_charge
        elif file is not None and file.inode.kind == "sysv":
            # shm_mmap(): shm_vm_ops has .close (shm_close), so a merge may not remove
            # an attach's VMA (can_merge_remove_vma; measured on 6.18.44: munlockall
            # after an mlock of part of an attach leaves it in two; fuzz seed 8000664)
            vma.vm_ops_close = True
        vma_link(mm, vma)
        if huge:
            hugetlb.hugetlb_vma_created(vma)
    # __mmap_complete()
    if vma.vm_flags & VM_LOCKED:
        # vma_supports_mlock(): not special, hugetlb or droppable memory (measured on
        # 6.18.44: mlockall(MCL_FUTURE) then MAP_DROPPABLE gives no "lo")
        if vma.vm_flags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
            vma.vm_flags &= ~VM_LOCKED_MASK
        else:
            mm.locked_vm += length >> PAGE_SHIFT
    return vma


def memfd_check_seals_mmap(file: File, vm_flags: int) -> int:
    """Refuse or restrict a shared mapping of a write-sealed file; returns the flags.

    Models mm/memfd.c:memfd_check_seals_mmap → check_write_seal: private mappings are
    not affected; a new shared writable mapping is EPERM; a shared read-only one loses
    VM_MAYWRITE so that mprotect() can never make it writable.
    """
    if file.inode.seals & (uapi.F_SEAL_WRITE | uapi.F_SEAL_FUTURE_WRITE) and vm_flags & VM_SHARED:
        if vm_flags & VM_WRITE:
            raise kernel_error(errno.EPERM, "shared writable mapping of a write-sealed file")
        vm_flags &= ~VM_MAYWRITE
    return vm_flags


def calc_vm_flag_bits(flags: int) -> int:
    """Models include/linux/mman.h:calc_vm_flag_bits (x86-64, THP enabled)."""
    f = 0
    if flags & uapi.MAP_GROWSDOWN:
        f |= VM_GROWSDOWN
    if flags & uapi.MAP_LOCKED:
        f |= VM_LOCKED
    if flags & uapi.MAP_SYNC:
        f |= VM_SYNC
    if flags & uapi.MAP_STACK:
        f |= VM_NOHUGEPAGE
    return f


def mlock_limits(mm: MmStruct) -> tuple[bool, int]:
    """(capable(CAP_IPC_LOCK), rlimit(RLIMIT_MEMLOCK) in pages) of the mm's task."""
    task = mm_task(mm)
    if task is None:
        return True, 0
    return bool(task.cap_ipc_lock), int(task.rlimit_memlock) >> PAGE_SHIFT


def can_do_mlock(mm: MmStruct) -> bool:
    """Models mm/mlock.c:can_do_mlock: a non-zero RLIMIT_MEMLOCK or CAP_IPC_LOCK."""
    cap, limit = mlock_limits(mm)
    return cap or limit != 0


def mlock_future_ok(mm: MmStruct, vm_flags: int, nbytes: int) -> bool:
    """Models mm/mmap.c:mlock_future_ok: locked_vm plus the new pages within
    RLIMIT_MEMLOCK, unless not VM_LOCKED or CAP_IPC_LOCK."""
    cap, limit = mlock_limits(mm)
    if not vm_flags & VM_LOCKED or cap:
        return True
    return mm.locked_vm + (nbytes >> PAGE_SHIFT) <= limit


def do_mmap(
    mm: MmStruct, addr: int, length: int, prot: int, flags: int, file: File | None, offset: int
) -> tuple[int, int]:
    """The mmap syscall: returns (address, bytes to populate). Raises OSError.

    Models arch/x86/kernel/sys_x86_64.c:sys_mmap (offset alignment),
    mm/mmap.c:ksys_mmap_pgoff and do_mmap: argument checks in the kernel's order, vm_flags
    from prot and flags, the per-type rules for files (EACCES for PROT_WRITE on a
    MAP_SHARED mapping of a file opened read-only, seals) and anonymous memory (pgoff
    addr >> PAGE_SHIFT for private, 0 for shared; MAP_DROPPABLE), and the populate
    decision of vm_mmap_pgoff.

    Long as mm/mmap.c:do_mmap is (one check per flag, in its order).
    """
    if offset < 0 or offset & (PAGE_SIZE - 1):
        raise kernel_error(errno.EINVAL, "unaligned offset")
    pgoff = offset >> PAGE_SHIFT
    if not length:
        raise kernel_error(errno.EINVAL, "zero length")
    if length < 0 or addr < 0:
        raise kernel_error(errno.EINVAL, "negative argument")
    if not flags & uapi.MAP_FIXED and addr < MMAP_MIN_ADDR and addr:
        addr = MMAP_MIN_ADDR & ~(PAGE_SIZE - 1)  # round_hint_to_min()
    length = page_align(length)
    if not length:
        raise kernel_error(errno.ENOMEM, "length overflows")
    if pgoff + (length >> PAGE_SHIFT) >= 1 << 64:
        raise kernel_error(errno.EOVERFLOW, "pgoff overflows")
    if mm.map_count > mm.ctx.max_map_count:
        raise kernel_error(errno.ENOMEM, "max_map_count")
    if flags & uapi.MAP_FIXED_NOREPLACE:
        flags |= uapi.MAP_FIXED
    exec_only = prot == uapi.PROT_EXEC  # do_mmap compares the prot it was given
    if prot & ~(uapi.PROT_READ | uapi.PROT_WRITE | uapi.PROT_EXEC | uapi.PROT_SEM):
        # x86 arch_validate_prot is only consulted by mprotect; mmap ignores other bits
        prot &= 0xF
    vm_flags = calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags) | mm.def_flags
    if exec_only and mm.ctx.pku:  # the pkey half of calc_vm_prot_bits()
        vm_flags |= pkeys.pkey_vm_flags(max(pkeys.execute_only_pkey(mm), 0))
    vm_flags |= VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    huge = hugetlb.is_file_hugepages(file)
    if huge:
        # (ksys_mmap_pgoff already rounded the length and made the anonymous file.)
        # VM_HUGETLB is set by hugetlbfs_file_mmap(); set early so that
        # accountable_mapping() sees it, as its is_file_hugepages() test does.
        vm_flags |= VM_HUGETLB
    # __get_unmapped_area() and the MAP_FIXED_NOREPLACE overlap check come before the
    # per-type checks (so NOREPLACE over a mapping is EEXIST whatever else is wrong).
    if huge:
        if file is None:
            raise InvariantError("mmap: a file mapping without its file")
        align = hugetlb.hugetlb_get_unmapped_area_check(hugetlb.pool_of(mm.ctx), file, addr, flags)
        if flags & uapi.MAP_FIXED:
            addr = get_unmapped_area(mm, addr, length, pgoff, flags, file)
        else:
            addr = hugetlb_get_unmapped_area(mm, addr, length, align)
    else:
        addr = get_unmapped_area(mm, addr, length, pgoff, flags, file)
    if flags & uapi.MAP_FIXED_NOREPLACE and mm.vmas_in(addr, addr + length):
        raise kernel_error(errno.EEXIST, "MAP_FIXED_NOREPLACE over a mapping")
    if flags & uapi.MAP_LOCKED and not can_do_mlock(mm):
        raise kernel_error(errno.EPERM, "MAP_LOCKED without RLIMIT_MEMLOCK or CAP_IPC_LOCK")
    if not mlock_future_ok(mm, vm_flags, length):
        raise kernel_error(errno.EAGAIN, "locked mapping above RLIMIT_MEMLOCK")
    map_type = flags & uapi.MAP_TYPE
    if file is not None:
        if map_type in (uapi.MAP_SHARED, uapi.MAP_SHARED_VALIDATE):
            if map_type == uapi.MAP_SHARED_VALIDATE and flags & ~(
                LEGACY_MAP_MASK | uapi.MAP_SYNC | uapi.MAP_FIXED_NOREPLACE
            ):
                raise kernel_error(errno.EOPNOTSUPP, "unknown flags with MAP_SHARED_VALIDATE")
            if flags & uapi.MAP_SYNC:
                raise kernel_error(errno.EOPNOTSUPP, "MAP_SYNC needs DAX")
            if prot & uapi.PROT_WRITE and not file.writable:
                raise kernel_error(errno.EACCES, "PROT_WRITE on a file opened read-only")
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.writable:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        elif map_type != uapi.MAP_PRIVATE:
            raise kernel_error(errno.EINVAL, "bad map type for a file")
        if not file.readable:
            raise kernel_error(errno.EACCES, "file not open for reading")
        if vm_flags & VM_GROWSDOWN:
            raise kernel_error(errno.EINVAL, "MAP_GROWSDOWN on a file mapping")
        vm_flags = memfd_check_seals_mmap(file, vm_flags)
    else:
        if map_type in (uapi.MAP_SHARED, uapi.MAP_SHARED_VALIDATE):
            if map_type == uapi.MAP_SHARED_VALIDATE and flags & ~(
                LEGACY_MAP_MASK | uapi.MAP_FIXED_NOREPLACE
            ):
                raise kernel_error(errno.EOPNOTSUPP, "unknown flags with MAP_SHARED_VALIDATE")
            if flags & uapi.MAP_GROWSDOWN:
                raise kernel_error(errno.EINVAL, "shared MAP_GROWSDOWN")
            vm_flags |= VM_SHARED | VM_MAYSHARE
            pgoff = 0
        elif map_type == uapi.MAP_DROPPABLE:
            if flags & (uapi.MAP_LOCKED | uapi.MAP_HUGETLB):
                raise kernel_error(errno.EINVAL, "droppable with MAP_LOCKED")
            if vm_flags & VM_GROWSDOWN:
                raise kernel_error(errno.EINVAL, "droppable stack")
            vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP
            pgoff = -1  # set below, once the address is known
        elif map_type == uapi.MAP_PRIVATE:
            pgoff = -1
        else:
            raise kernel_error(errno.EINVAL, "bad map type")
    if pgoff == -1:
        pgoff = addr >> PAGE_SHIFT  # "Set pgoff according to addr for anon_vma"
    if flags & uapi.MAP_NORESERVE and mm.ctx.overcommit.mode != OVERCOMMIT_NEVER:
        vm_flags |= VM_NORESERVE  # "We honor MAP_NORESERVE if allowed to overcommit"
    if flags & uapi.MAP_NORESERVE and huge:
        vm_flags |= VM_NORESERVE  # "hugetlb applies strict overcommit unless MAP_NORESERVE"
    mmap_region(mm, file, addr, length, vm_flags, pgoff)
    populate = 0
    # do_mmap() tests its own vm_flags, not the VMA's: a VM_LOCKED that
    # __mmap_complete() dropped (droppable memory under MCL_FUTURE) still populates;
    # __mm_populate() skips VM_LOCKONFAULT VMAs by itself.
    if vm_flags & VM_LOCKED:
        populate = length
    elif flags & (uapi.MAP_POPULATE | uapi.MAP_NONBLOCK) == uapi.MAP_POPULATE:
        populate = length
    return addr, populate


def mm_populate(mm: MmStruct, start: int, length: int, ignore_errors: bool) -> int:
    """Fault in a range VMA by VMA. Returns 0 or -errno.

    Models mm/gup.c:__mm_populate → populate_vma_page_range: VM_IO/VM_PFNMAP VMAs are
    skipped; private writable VMAs get write faults (FOLL_WRITE, which breaks CoW and
    allocates anon_vmas), others read faults with FOLL_FORCE, except PROT_NONE VMAs, which
    GUP refuses (-EFAULT); a fault error gives -EFAULT, or -ENOMEM for VM_FAULT_OOM.
    """
    end = start + length
    pos = start
    while pos < end:
        vma = mm.find_vma(pos)
        if vma is None or vma.vm_start >= end:
            break
        pos = max(pos, vma.vm_start)
        nend = min(end, vma.vm_end)
        if vma.vm_flags & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT):
            # populate_vma_page_range(): "the VM_LOCKONFAULT case has never used
            # faultin_page() ... so it has no work to do here".
            pos = nend
            continue
        write = vma.vm_flags & (VM_WRITE | VM_SHARED) == VM_WRITE
        try:
            if not vma.is_accessible():
                # No FOLL_FORCE for PROT_NONE: GUP's check_vma_flags() refuses it.
                raise FaultError("SIGSEGV", "PROT_NONE")
            populate_range(mm, vma, pos, nend, write)
        except FaultError as e:
            if ignore_errors:
                pos = nend
                continue
            return -errno.ENOMEM if e.kind == "OOM" else -errno.EFAULT
        pos = nend
    return 0


__all__ = [
    "do_mmap",
    "do_vmi_munmap",
    "get_unmapped_area",
    "mm_populate",
    "mmap_region",
    "unmap_vmas_and_free",
    "rmap",
]
