"""mincore(2) and the memory-deny-write-execute (MDWE) policy.

Models mm/mincore.c (do_mincore, mincore_pte_range, mincore_unmapped_range /
mincore_page) and the MDWE parts of kernel/sys.c (prctl_set_mdwe, prctl_get_mdwe) and
include/linux/mman.h (map_deny_write_exec).

Simplification: the kernel keeps MDWE in ``mm->flags`` (MMF_HAS_MDWE,
MMF_HAS_MDWE_NO_INHERIT); the model keeps the same bits on the task
(``Process.mdwe``), which is equivalent while a Process owns exactly one mm.
"""

from __future__ import annotations

import errno

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm.flags import VM_EXEC, VM_WRITE
from vmalab.mm.mm_types import PAGE_SHIFT, PAGE_SIZE, MmStruct, linear_page_index, mm_task
from vmalab.mm.pagetable import _PAGE_PRESENT

U64 = (1 << 64) - 1
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE


def mdwe_bits(mm: MmStruct) -> int:
    """The MDWE bits of the mm's task (get_current_mdwe)."""
    task = mm_task(mm)
    return int(getattr(task, "mdwe", 0)) if task is not None else 0


def map_deny_write_exec(mm: MmStruct, old: int, new: int) -> bool:
    """Models include/linux/mman.h:map_deny_write_exec: under MDWE a VMA may not become
    writable and executable, nor executable when it was not."""
    if not new & VM_EXEC:  # tested first: the cheaper of the two early answers
        return False
    if not mdwe_bits(mm) & uapi.PR_MDWE_REFUSE_EXEC_GAIN:
        return False
    if new & VM_WRITE:
        return True
    return not old & VM_EXEC


def prctl_set_mdwe(current: int, bits: int, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """The new MDWE bits. Raises OSError. Models kernel/sys.c:prctl_set_mdwe."""
    if arg3 or arg4 or arg5:
        raise kernel_error(errno.EINVAL, "unused prctl arguments must be 0")
    if bits & ~(uapi.PR_MDWE_REFUSE_EXEC_GAIN | uapi.PR_MDWE_NO_INHERIT):
        raise kernel_error(errno.EINVAL, "unknown MDWE bits")
    if bits & uapi.PR_MDWE_NO_INHERIT and not bits & uapi.PR_MDWE_REFUSE_EXEC_GAIN:
        raise kernel_error(errno.EINVAL, "NO_INHERIT needs REFUSE_EXEC_GAIN")
    if current and current != bits:
        raise kernel_error(errno.EPERM, "MDWE cannot be unset or changed")
    return current | bits


def mdwe_after_fork(bits: int) -> int:
    """Models kernel/fork.c:mmf_init_flags: NO_INHERIT drops both bits in the child."""
    return 0 if bits & uapi.PR_MDWE_NO_INHERIT else bits


def do_mincore(mm: MmStruct, start: int, length: int) -> bytes:
    """The mincore syscall: one byte per page, bit 0 set if resident. Raises OSError.

    Models mm/mincore.c:sys_mincore: EINVAL for an unaligned start, ENOMEM for a range
    outside user space or one that meets a hole (the walk goes VMA by VMA from the
    start: vma_lookup() failing is ENOMEM, whatever came before); a present PTE is
    resident; where no PTE is present, a file (or shmem) page in the page cache is
    resident, anonymous memory is not; a guard marker is none for mincore
    (pte_none_mostly): not resident in anonymous memory, the page cache's answer in a
    file VMA (measured on 6.18.44: a guarded memfd page that is cached is 1, shared or
    private; found by the THP fuzz, seed 7274).
    """
    if start & (PAGE_SIZE - 1) or start < 0:
        raise kernel_error(errno.EINVAL, "unaligned start")
    if length < 0 or start + length > TASK_SIZE_MAX + PAGE_SIZE or length > U64:
        raise kernel_error(errno.ENOMEM, "range outside user space")
    pages = (length + PAGE_SIZE - 1) >> PAGE_SHIFT
    out = bytearray()
    addr = start
    pt = mm.pgtables
    while pages:
        vma = mm.vma_lookup(addr)
        if vma is None:
            raise kernel_error(errno.ENOMEM, "unmapped address")
        end = min(vma.vm_end, addr + (pages << PAGE_SHIFT))
        inode = vma.vm_file.inode if vma.vm_file is not None else None
        for a in range(addr, end, PAGE_SIZE):
            pte = pt.get(a)
            if pte & _PAGE_PRESENT:
                out.append(1)
            elif pte and inode is None:
                out.append(0)  # a guard marker in anonymous memory
            elif inode is not None:
                # pte_none_mostly(): a marker counts as none, so a file page under a
                # guard marker is resident if cached
                out.append(1 if linear_page_index(vma, a) in inode.pages else 0)
            else:
                out.append(0)
        pages -= (end - addr) >> PAGE_SHIFT
        addr = end
    return bytes(out)
