"""Memory protection keys: pkey_alloc, pkey_free, pkey_mprotect.

Models mm/mprotect.c (sys_pkey_alloc, sys_pkey_free, do_mprotect_pkey's pkey check) and
arch/x86/include/asm/pkeys.h (mm_pkey_alloc, mm_pkey_is_allocated, mm_pkey_free,
execute_only_pkey) and arch/x86/kernel/fpu/xstate.c:arch_set_user_pkey_access, for a
CPU **without OSPKE**, which is what the project's machine exposes: /proc/cpuinfo has
neither ``pku`` nor ``ospke`` (a Firecracker guest), although the kernel is built with
CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS=y. Measured on 6.18.44:

* init_new_context() leaves ``pkey_allocation_map`` and ``execute_only_pkey`` at 0 and
  arch_max_pkey() is 1. The first valid pkey_alloc() therefore allocates key 0,
  arch_set_user_pkey_access() fails with EINVAL, and mm_pkey_free() cannot undo it
  (key 0 looks like the execute-only key): EINVAL, and every later pkey_alloc() is
  ENOSPC.
* pkey_free() is EINVAL for every key; pkey_mprotect() with any key but -1 is EINVAL
  (after the zero-length early return), with -1 it is mprotect().
* execute_only_pkey() is ARCH_DEFAULT_PKEY: PROT_EXEC-only mappings get no key, and a
  load from them succeeds (x86 reads are allowed by VM_EXEC), as the model always did.

Not modelled: a CPU with OSPKE (16 keys, PKRU rights per thread, the execute-only key,
``ProtectionKey:`` in smaps and SEGV_PKUERR faults). ``Kernel.pku`` is False unless the
host CPU has ``ospke``; the model refuses to run with it True (NotImplementedError) rather
than pretend.
"""

from __future__ import annotations

import errno
import functools
from typing import TYPE_CHECKING, Protocol

from vmalab.errors import kernel_error

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmStruct


class PkeyTask(Protocol):
    """What the pkey syscalls use of a task: its mm and the mm->context.pkey_* words
    (``vmalab.process.Process`` has them)."""

    mm: MmStruct
    pkey_map: int
    pkey_exec_only: int


PKEY_DISABLE_ACCESS = 0x1
PKEY_DISABLE_WRITE = 0x2
PKEY_ACCESS_MASK = PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE


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


def _require_no_pku(p: PkeyTask) -> None:
    if p.mm.ctx.pku:
        raise NotImplementedError("protection keys on a CPU with OSPKE are not modelled")


def arch_max_pkey(p: PkeyTask) -> int:
    """Models arch/x86/include/asm/pkeys.h:arch_max_pkey (1 without OSPKE)."""
    return 16 if p.mm.ctx.pku else 1


def mm_pkey_is_allocated(p: PkeyTask, pkey: int) -> bool:
    """Models arch/x86/include/asm/pkeys.h:mm_pkey_is_allocated."""
    if pkey < 0 or pkey >= arch_max_pkey(p):
        return False
    if pkey == p.pkey_exec_only:
        return False
    return bool(p.pkey_map & (1 << pkey))


def pkey_alloc(p: PkeyTask, flags: int, init_val: int) -> int:
    """Models mm/mprotect.c:sys_pkey_alloc. Raises OSError."""
    _require_no_pku(p)
    if flags:
        raise kernel_error(errno.EINVAL, "pkey_alloc flags must be 0")
    if init_val & ~PKEY_ACCESS_MASK:
        raise kernel_error(errno.EINVAL, "unsupported init rights")
    all_mask = (1 << arch_max_pkey(p)) - 1
    if p.pkey_map == all_mask:  # mm_pkey_alloc(): out of keys
        raise kernel_error(errno.ENOSPC, "no free protection key")
    pkey = (~p.pkey_map & (p.pkey_map + 1)).bit_length() - 1  # ffz()
    p.pkey_map |= 1 << pkey
    # arch_set_user_pkey_access(): EINVAL without OSPKE; mm_pkey_free() then refuses to
    # free key 0 (it equals execute_only_pkey), so the key stays allocated.
    if mm_pkey_is_allocated(p, pkey):
        p.pkey_map &= ~(1 << pkey)
    raise kernel_error(errno.EINVAL, "protection keys are not enabled (no OSPKE)")


def pkey_free(p: PkeyTask, pkey: int) -> None:
    """Models mm/mprotect.c:sys_pkey_free → mm_pkey_free. Raises OSError."""
    _require_no_pku(p)
    if not mm_pkey_is_allocated(p, pkey):
        raise kernel_error(errno.EINVAL, f"pkey {pkey} is not allocated")
    p.pkey_map &= ~(1 << pkey)


def check_mprotect_pkey(p: PkeyTask, pkey: int) -> None:
    """do_mprotect_pkey(): "If userspace did not allocate the pkey, do not let them use
    it." Raises OSError(EINVAL)."""
    _require_no_pku(p)
    if pkey != -1 and not mm_pkey_is_allocated(p, pkey):
        raise kernel_error(errno.EINVAL, f"pkey {pkey} is not allocated")
