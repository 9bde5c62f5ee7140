"""Memory protection keys: pkey_alloc, pkey_free, pkey_mprotect, PKRU and the
execute-only key.

Models mm/mprotect.c (sys_pkey_alloc, sys_pkey_free, do_mprotect_pkey's pkey check and
key override), arch/x86/include/asm/pkeys.h (arch_max_pkey, mm_pkey_alloc,
mm_pkey_is_allocated, mm_pkey_free, execute_only_pkey, arch_override_mprotect_pkey,
vma_pkey), arch/x86/mm/pkeys.c (__execute_only_pkey, __arch_override_mprotect_pkey,
init_pkru_value), arch/x86/kernel/fpu/xstate.c:arch_set_user_pkey_access and the
protection-key side of arch/x86/mm/fault.c (arch_vma_access_permitted in access_error,
bad_area_access_error's SEGV_PKUERR). ``Kernel(pku=...)`` picks the CPU; its default
is the host's, and the project's machine has **no OSPKE**.

Without OSPKE (checked on the live kernel, 6.18.44, a Firecracker guest whose
/proc/cpuinfo has neither ``pku`` nor ``ospke``, although the kernel is built with
CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS=y):

* init_new_context() leaves ``pkey_allocation_map`` and ``execute_only_pkey`` at 0 and
  arch_max_pkey() is 1. The first valid pkey_alloc() therefore allocates key 0,
  arch_set_user_pkey_access() fails with EINVAL, and mm_pkey_free() cannot undo it
  (key 0 looks like the execute-only key): EINVAL, and every later pkey_alloc() is
  ENOSPC.
* pkey_free() is EINVAL for every key; pkey_mprotect() with any key but -1 is EINVAL
  (after the zero-length early return), with -1 it is mprotect().
* execute_only_pkey() is ARCH_DEFAULT_PKEY: PROT_EXEC-only mappings get no key, and a
  load from them succeeds (x86 reads are allowed by VM_EXEC).

With OSPKE (``Kernel(pku=True)``; **model-only**, this machine cannot check it): 16 keys,
key 0 allocated at mm creation and ``execute_only_pkey`` -1 until a PROT_EXEC-only
mmap()/mprotect() allocates one and access-disables it in PKRU; the VMA's key lives in
VM_PKEY_BIT0..3 (vm_flags bits 32-35); loads and stores are checked against PKRU and
the VMA's key (SIGSEGV, si_code SEGV_PKUERR); instruction fetches are not.

Simplifications (deliberate): PKRU is per *process* (``Process.pkru``), not per thread:
the model's tasks are processes, one per mm, so the thread that calls is the only one.
A new process (``Kernel.spawn``, the model's execve) starts with init_pkru_value (every
key but 0 access-disabled), a fork child copies its parent's PKRU (the FPU state is
copied, fpu_clone) and its allocation map (arch_dup_pkeys). Accesses the kernel makes
on the user's behalf (GUP, copy_to_user) are not checked against PKRU here. Signal
delivery's PKRU switch (pkey_sighandler_tests.c) is not modelled: no signals.
"""

from __future__ import annotations

import errno
import functools
from typing import TYPE_CHECKING, Protocol, cast

from vmalab import uapi
from vmalab.errors import InvariantError, kernel_error
from vmalab.mm.flags import VM_ACCESS_FLAGS, VM_EXEC, VMA_PKEY_BIT0_BIT
from vmalab.mm.mm_types import mm_task

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmStruct, VmArea


class PkeyTask(Protocol):
    """What the pkey code uses of a task: its mm, the mm->context.pkey_* words and the
    thread's PKRU (``vmalab.process.Process`` has them)."""

    mm: MmStruct
    pkey_map: int
    pkey_exec_only: int
    pkru: int


PKEY_DISABLE_ACCESS = 0x1
PKEY_DISABLE_WRITE = 0x2
PKEY_ACCESS_MASK = PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE
ARCH_DEFAULT_PKEY = 0
#: arch/x86/include/asm/pkru.h: two bits per key, access-disable then write-disable.
PKRU_AD_BIT = 0x1
PKRU_WD_BIT = 0x2
PKRU_BITS_PER_PKEY = 2
#: arch/x86/mm/pkeys.c:init_pkru_value: every key but 0 access-disabled (0x55555554).
INIT_PKRU_VALUE = sum(PKRU_AD_BIT << (k * PKRU_BITS_PER_PKEY) for k in range(1, 16))
#: VM_PKEY_BIT0..3 (VM_HIGH_ARCH_0..3 on x86) and ARCH_VM_PKEY_FLAGS; VM_PKEY_SHIFT.
VM_PKEY_SHIFT = VMA_PKEY_BIT0_BIT
ARCH_VM_PKEY_FLAGS = 0xF << VM_PKEY_SHIFT


@functools.cache
def host_has_ospke(path: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU (as the kernel sees it) has OSPKE (read once)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return "ospke" in line.split()
    except OSError:
        pass
    return False


def new_context(pku: bool) -> tuple[int, int]:
    """(pkey_allocation_map, execute_only_pkey) of a new mm. Models
    arch/x86/include/asm/mmu_context.h:init_new_context (key 0 allocated and no
    execute-only key only with OSPKE; both words stay 0 without it)."""
    return (1, -1) if pku else (0, 0)


def init_pkru(pku: bool) -> int:
    """The PKRU of a new process. Models arch/x86/mm/pkeys.c:copy_init_pkru_to_fpregs
    (init_pkru_value); 0 without OSPKE, where PKRU does not exist."""
    return INIT_PKRU_VALUE if pku else 0


def current(mm: MmStruct) -> PkeyTask:
    """The task that owns ``mm`` (``current`` for the model's one-task-per-mm)."""
    t = mm_task(mm)
    if t is None:
        raise InvariantError(f"mm of pid {mm.owner_pid} has no task")
    return cast("PkeyTask", t)


def arch_max_pkey(p: PkeyTask) -> int:
    """Models arch/x86/include/asm/pkeys.h:arch_max_pkey (1 without OSPKE)."""
    return 16 if p.mm.ctx.pku else 1


def vma_pkey(vma: VmArea) -> int:
    """Models arch/x86/include/asm/pkeys.h:vma_pkey (VM_PKEY_BIT0..3)."""
    return (vma.vm_flags & ARCH_VM_PKEY_FLAGS) >> VM_PKEY_SHIFT


def pkey_vm_flags(pkey: int) -> int:
    """The VM_PKEY_BIT* of ``pkey``. Models arch/x86/include/asm/mman.h:
    arch_calc_vm_prot_bits (the pkey half of calc_vm_prot_bits(prot, pkey))."""
    return (pkey & 0xF) << VM_PKEY_SHIFT


def mm_pkey_is_allocated(p: PkeyTask, pkey: int) -> bool:
    """Models arch/x86/include/asm/pkeys.h:mm_pkey_is_allocated."""
    if pkey < 0 or pkey >= arch_max_pkey(p):
        return False
    if pkey == p.pkey_exec_only:
        return False
    return bool(p.pkey_map & (1 << pkey))


def mm_pkey_alloc(p: PkeyTask) -> int:
    """Models arch/x86/include/asm/pkeys.h:mm_pkey_alloc: the lowest free key, -1 when
    all arch_max_pkey() keys are taken."""
    all_mask = (1 << arch_max_pkey(p)) - 1
    if p.pkey_map == all_mask:
        return -1
    pkey = (~p.pkey_map & (p.pkey_map + 1)).bit_length() - 1  # ffz()
    p.pkey_map |= 1 << pkey
    return pkey


def mm_pkey_free(p: PkeyTask, pkey: int) -> int:
    """Models arch/x86/include/asm/pkeys.h:mm_pkey_free (0 or -EINVAL's errno)."""
    if not mm_pkey_is_allocated(p, pkey):
        return errno.EINVAL
    p.pkey_map &= ~(1 << pkey)
    return 0


def arch_set_user_pkey_access(p: PkeyTask, pkey: int, init_val: int) -> int:
    """Set ``pkey``'s two PKRU bits from PKEY_DISABLE_*; 0 or an errno (EINVAL without
    OSPKE). Models arch/x86/kernel/fpu/xstate.c:arch_set_user_pkey_access (WRPKRU on
    the calling thread: the model's PKRU is per process)."""
    if not p.mm.ctx.pku:
        return errno.EINVAL
    if pkey >= arch_max_pkey(p):
        return errno.EINVAL
    bits = (PKRU_AD_BIT if init_val & PKEY_DISABLE_ACCESS else 0) | (
        PKRU_WD_BIT if init_val & PKEY_DISABLE_WRITE else 0
    )
    _pkru_write(p, pkey, bits)
    return 0


def _pkru_write(p: PkeyTask, pkey: int, bits: int) -> None:
    """WRPKRU of ``pkey``'s two bits (AD, WD), the other keys' bits kept."""
    shift = pkey * PKRU_BITS_PER_PKEY
    p.pkru = (p.pkru & ~((PKRU_AD_BIT | PKRU_WD_BIT) << shift)) | (bits << shift)


def pkey_alloc(p: PkeyTask, flags: int, init_val: int) -> int:
    """Models mm/mprotect.c:sys_pkey_alloc. Raises OSError (EINVAL for flags or unknown
    rights, ENOSPC out of keys, EINVAL from arch_set_user_pkey_access without OSPKE)."""
    if flags:
        raise kernel_error(errno.EINVAL, "pkey_alloc flags must be 0")
    if init_val & ~PKEY_ACCESS_MASK:
        raise kernel_error(errno.EINVAL, "unsupported init rights")
    pkey = mm_pkey_alloc(p)
    if pkey == -1:
        raise kernel_error(errno.ENOSPC, "no free protection key")
    err = arch_set_user_pkey_access(p, pkey, init_val)
    if err:
        # Without OSPKE this is key 0, which mm_pkey_free() refuses to free (it equals
        # execute_only_pkey, 0): the key stays allocated, as measured.
        mm_pkey_free(p, pkey)
        raise kernel_error(err, "protection keys are not enabled (no OSPKE)")
    return pkey


def pkey_free(p: PkeyTask, pkey: int) -> None:
    """Models mm/mprotect.c:sys_pkey_free → mm_pkey_free. Raises OSError(EINVAL).
    VMAs that still carry the key keep it (the kernel does not look)."""
    err = mm_pkey_free(p, pkey)
    if err:
        raise kernel_error(err, f"pkey {pkey} is not allocated")


def check_mprotect_pkey(p: PkeyTask, pkey: int) -> None:
    """do_mprotect_pkey(): "If userspace did not allocate the pkey, do not let them use
    it." Raises OSError(EINVAL)."""
    if pkey != -1 and not mm_pkey_is_allocated(p, pkey):
        raise kernel_error(errno.EINVAL, f"pkey {pkey} is not allocated")


def pkru_allows_read(pkru: int, pkey: int) -> bool:
    """Models arch/x86/include/asm/pkru.h:__pkru_allows_read."""
    return not pkru >> (pkey * PKRU_BITS_PER_PKEY) & PKRU_AD_BIT


def pkru_allows_write(pkru: int, pkey: int) -> bool:
    """Models arch/x86/include/asm/pkru.h:__pkru_allows_write (AD or WD forbids it)."""
    return not pkru >> (pkey * PKRU_BITS_PER_PKEY) & (PKRU_AD_BIT | PKRU_WD_BIT)


def execute_only_pkey(mm: MmStruct) -> int:
    """The key for a PROT_EXEC-only mapping, or -1. Models
    arch/x86/include/asm/pkeys.h:execute_only_pkey → arch/x86/mm/pkeys.c:
    __execute_only_pkey: allocate the key on first use, then make sure the calling
    thread's PKRU access-disables it; if the PKRU update failed, free it again."""
    if not mm.ctx.pku:
        return ARCH_DEFAULT_PKEY
    p = current(mm)
    pkey = p.pkey_exec_only
    need_to_set_mm_pkey = False
    if pkey == -1:
        pkey = mm_pkey_alloc(p)
        if pkey < 0:
            return -1
        need_to_set_mm_pkey = True
    if not need_to_set_mm_pkey and not pkru_allows_read(p.pkru, pkey):
        return pkey
    if arch_set_user_pkey_access(p, pkey, PKEY_DISABLE_ACCESS):
        p.pkey_map &= ~(1 << pkey)  # mm_set_pkey_free()
        return -1
    if need_to_set_mm_pkey:
        p.pkey_exec_only = pkey
    return pkey


def arch_override_mprotect_pkey(vma: VmArea, prot: int, pkey: int) -> int:
    """The key mprotect()/pkey_mprotect() gives ``vma``. Models
    arch/x86/include/asm/pkeys.h:arch_override_mprotect_pkey →
    arch/x86/mm/pkeys.c:__arch_override_mprotect_pkey: an explicit key wins; plain
    mprotect(PROT_EXEC) takes the execute-only key; leaving execute-only (the VMA is
    exactly VM_EXEC with that key) goes back to key 0; else the VMA keeps its key."""
    mm = vma.vm_mm
    if not mm.ctx.pku:
        return 0
    if pkey != -1:
        return pkey
    if prot == uapi.PROT_EXEC:
        pkey = execute_only_pkey(mm)
        if pkey > 0:
            return pkey
    elif vma.vm_flags & VM_ACCESS_FLAGS == VM_EXEC and vma_pkey(vma) == current(mm).pkey_exec_only:
        return ARCH_DEFAULT_PKEY  # vma_is_pkey_exec_only()
    return vma_pkey(vma)


def access_permitted(vma: VmArea, write: bool) -> bool:
    """Whether the owner's PKRU lets a user data access through ``vma``'s key.

    Models arch/x86/include/asm/mmu_context.h:arch_vma_access_permitted (instruction
    fetches and foreign accesses are always permitted; callers do not ask for them) →
    __pkru_allows_pkey, as access_error() consults it; the hardware's X86_PF_PK on a
    present PTE gives the same answer. Always True without OSPKE.
    """
    mm = vma.vm_mm
    if not mm.ctx.pku:
        return True
    pkru = current(mm).pkru
    pkey = vma_pkey(vma)
    return pkru_allows_write(pkru, pkey) if write else pkru_allows_read(pkru, pkey)


def pkey_get(p: PkeyTask, pkey: int) -> int:
    """glibc's pkey_get(): RDPKRU, the key's PKEY_DISABLE_* rights. OSError(EINVAL)
    for a key outside 0..15 (glibc does not ask whether it is allocated); without OSPKE
    RDPKRU is #UD (SIGILL in a real program): the model raises OSError(ENOSYS)."""
    _check_pkru_insn(p, pkey)
    return p.pkru >> (pkey * PKRU_BITS_PER_PKEY) & PKEY_ACCESS_MASK


def pkey_set(p: PkeyTask, pkey: int, rights: int) -> None:
    """glibc's pkey_set(): RDPKRU, change the key's two bits, WRPKRU. OSError(EINVAL) for
    a key outside 0..15 or unknown rights; ENOSYS without OSPKE (see pkey_get)."""
    _check_pkru_insn(p, pkey)
    if rights & ~PKEY_ACCESS_MASK:
        raise kernel_error(errno.EINVAL, f"unknown pkey rights {rights:#x}")
    _pkru_write(p, pkey, rights)  # PKEY_DISABLE_ACCESS/WRITE are the AD/WD bits


def _check_pkru_insn(p: PkeyTask, pkey: int) -> None:
    if not p.mm.ctx.pku:
        raise kernel_error(errno.ENOSYS, "RDPKRU/WRPKRU need OSPKE (#UD, SIGILL)")
    if not 0 <= pkey < 16:
        raise kernel_error(errno.EINVAL, f"pkey {pkey} out of range")


def check_task(p: PkeyTask) -> str | None:
    """Kernel.check()'s pkey invariants for one task, or a description of the first
    violation: with OSPKE the map has 16 keys, the execute-only key is -1 or an
    allocated key (0 too: after pkey_free(0), __execute_only_pkey() gets key 0) and
    PKRU fits 32 bits; without OSPKE nothing but the measured
    key-0 leak exists and no VMA carries a key. Not invariants: key 0 being allocated
    (mm_pkey_free() frees it like any other: it passes mm_pkey_is_allocated()) and a
    VMA's key being allocated (sys_pkey_free() does not look at VMAs)."""
    if p.mm.ctx.pku:
        if p.pkey_map >> 16:
            return f"pkey map {p.pkey_map:#x} beyond 16 keys"
        x = p.pkey_exec_only
        if x != -1 and not (0 <= x < 16 and p.pkey_map >> x & 1):
            return f"execute-only pkey {x} is not an allocated key"
        if not 0 <= p.pkru < 1 << 32:
            return f"PKRU {p.pkru:#x} is not a 32-bit value"
        return None
    if p.pkey_map not in (0, 1) or p.pkey_exec_only != 0 or p.pkru != 0:
        return "pkey state without OSPKE"
    for v in p.mm.mm_mt.values():
        if v.vm_flags & ARCH_VM_PKEY_FLAGS:
            return f"VMA {v.vm_start:#x} has pkey {vma_pkey(v)} without OSPKE"
    return None
