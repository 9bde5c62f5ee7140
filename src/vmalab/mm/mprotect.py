"""mprotect.

Models mm/mprotect.c:do_mprotect_pkey, mprotect_fixup and change_protection (PTE
write-protection; guard markers are skipped, so they survive).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm import pkeys
from vmalab.mm.flags import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_LOCKED,
    VM_NORESERVE,
    VM_READ,
    VM_SEALED,
    VM_SHARED,
    VM_WRITE,
    calc_vm_prot_bits,
)
from vmalab.mm.mincore import map_deny_write_exec
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, MmStruct, VmArea
from vmalab.mm.mmap import mm_populate, page_align
from vmalab.mm.pagetable import _PAGE_PRESENT, _PAGE_RW, pte_walk
from vmalab.mm.util import security_vm_enough_memory_mm, vm_unacct_memory
from vmalab.mm.vma import fixup_vma_range, vma_modify_flags


def change_protection(vma: VmArea, start: int, end: int, newflags: int) -> None:
    """Write-protect present PTEs when VM_WRITE goes away.

    Models mm/mprotect.c:change_pte_range. Making a range writable leaves PTEs read-only
    (the next write fault upgrades them, as for a non-exclusive page); markers are
    skipped.
    """
    if newflags & VM_WRITE:
        return
    for _i, t, j, pte in pte_walk(vma.vm_mm.pgtables, start, end):
        if pte & _PAGE_PRESENT and pte & _PAGE_RW:
            t[j] = pte & ~_PAGE_RW


def mprotect_fixup(
    mm: MmStruct, vma: VmArea, prev: VmArea | None, start: int, end: int, newflags: int
) -> VmArea:
    """Apply ``newflags`` to [start, end) of ``vma``: merge or split, then update PTEs.

    Models mm/mprotect.c:mprotect_fixup: EPERM for a sealed VMA (even with unchanged
    flags); no-op when the flags are unchanged; VM_ACCOUNT
    charged (security_vm_enough_memory_mm, ENOMEM) when a private mapping first becomes
    writable and dropped (vm_unacct_memory) when an anonymous
    VMA without an anon_vma becomes read-only; vma_modify_flags(); a locked
    private mapping made writable is populated.
    """
    oldflags = vma.vm_flags
    if oldflags & VM_SEALED:
        raise kernel_error(errno.EPERM, "sealed VMA")
    if newflags == oldflags:
        return vma
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            charged = nrpages
            security_vm_enough_memory_mm(mm, charged)
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
        # "cannot reduce our commit if we make it unwritable again except in the
        # anonymous case where no anon_vma has yet been instantiated"
        newflags &= ~VM_ACCOUNT
    try:
        vma, newflags = vma_modify_flags(prev, vma, start, end, newflags)
    except OSError:
        vm_unacct_memory(mm.ctx, charged)
        raise
    vma.vm_flags = newflags
    if oldflags & VM_ACCOUNT and not newflags & VM_ACCOUNT:
        vm_unacct_memory(mm.ctx, nrpages)
    change_protection(vma, start, end, newflags)
    if oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED) == VM_LOCKED and newflags & VM_WRITE:
        # populate_vma_page_range(); its errors are ignored
        mm_populate(mm, start, end - start, ignore_errors=True)
    return vma


def do_mprotect(
    mm: MmStruct,
    start: int,
    length: int,
    prot: int,
    pkey_check: Callable[[], None] | None = None,
    pkey: int = -1,
) -> int:
    """The mprotect syscall (and pkey_mprotect: ``pkey_check`` raises for a key the
    process did not allocate, after the argument checks; ``pkey`` is the key, -1 for
    mprotect, which arch_override_mprotect_pkey() turns into each VMA's): 0, or -ENOMEM
    when the VMA walk meets a hole. Raises OSError for the other errors.

    Models mm/mprotect.c:do_mprotect_pkey: EINVAL for an unaligned start or unknown prot
    bits (arch_validate_prot), ENOMEM for an overflowing or unmapped range, EACCES when
    a VMA may not get the access (VM_MAY* missing) or MDWE refuses it
    (map_deny_write_exec); it stops at the first hole with
    ENOMEM, leaving the VMAs before it changed.

    The walk's ENOMEM is returned, as the kernel returns its ``error``, not raised: a
    replayed log meets it often (a sixth of a random loop's calls), and raised through
    the compiled frames it made such a call cost about 10 µs instead of 2 µs. Long as
    mm/mprotect.c:do_mprotect_pkey is.
    """
    if start & (PAGE_SIZE - 1) or start < 0:
        raise kernel_error(errno.EINVAL, "unaligned start")
    if length < 0:
        raise kernel_error(errno.EINVAL, "negative length")
    if not length:
        return 0
    grows = prot & (uapi.PROT_GROWSDOWN | uapi.PROT_GROWSUP)
    prot &= ~grows
    if grows == uapi.PROT_GROWSDOWN | uapi.PROT_GROWSUP:
        raise kernel_error(errno.EINVAL, "both PROT_GROWSDOWN and PROT_GROWSUP")
    length = page_align(length)
    end = start + length
    if end <= start or end > (1 << 64) - 1:
        raise kernel_error(errno.ENOMEM, "range overflows")
    if prot & ~(uapi.PROT_READ | uapi.PROT_WRITE | uapi.PROT_EXEC | uapi.PROT_SEM):
        raise kernel_error(errno.EINVAL, "unknown prot bits")
    if grows & uapi.PROT_GROWSUP:
        raise kernel_error(errno.EINVAL, "PROT_GROWSUP on x86")
    if pkey_check is not None:
        pkey_check()
    vma = mm.find_vma(start)
    if vma is None or vma.vm_start >= end:
        return -errno.ENOMEM  # range not mapped
    if grows & uapi.PROT_GROWSDOWN:
        if vma.vm_start >= end:
            return -errno.ENOMEM
        start = vma.vm_start
        if not vma.vm_flags & VM_GROWSDOWN:
            raise kernel_error(errno.EINVAL, "PROT_GROWSDOWN on a non-stack VMA")
    elif vma.vm_start > start:
        return -errno.ENOMEM  # the range starts in a hole
    newprot = calc_vm_prot_bits(prot)

    def fixup(vma: VmArea, prev: VmArea | None, nstart: int, tmp: int) -> VmArea:
        newflags = newprot | (vma.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC))
        if mm.ctx.pku:  # mask_off_old_flags has ARCH_VM_PKEY_FLAGS (all 0 without OSPKE)
            new_vma_pkey = pkeys.arch_override_mprotect_pkey(vma, prot, pkey)
            newflags = newflags & ~pkeys.ARCH_VM_PKEY_FLAGS | pkeys.pkey_vm_flags(new_vma_pkey)
        # newflags >> 4 shifts VM_MAY* into the VM_* position
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            raise kernel_error(errno.EACCES, "VM_MAY* forbids this protection")
        if map_deny_write_exec(mm, vma.vm_flags, newflags):
            raise kernel_error(errno.EACCES, "MDWE refuses this protection")
        return mprotect_fixup(mm, vma, prev, nstart, tmp, newflags)

    # The VMA loop, the same as apply_vma_lock_flags()'s.
    return fixup_vma_range(mm, vma, start, end, fixup)
