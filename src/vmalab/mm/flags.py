"""VMA flags as a bitmap, in the style of the kernel's ``vma_flags_t``.

Models include/linux/mm.h (``DECLARE_VMA_BIT()``, ``mk_vma_flags()``,
``vma_flags_test()``/``set``/``clear``) with Linux's x86-64 bit numbering, and the smaps
mnemonic table of fs/proc/task_mmu.c:show_smap_vma_flags().

A flags value is a plain Python ``int`` used as a bitmap: it has room for any number of
bits (``NUM_VMA_FLAG_BITS`` is 128, as in the kernel's userland VMA tests), and the
legacy ``VM_*`` masks, which all live in the first word, are ordinary ints built from the
bit numbers. Plain ints keep the hot paths (merge checks, faults) as cheap as the
kernel's word operations.
"""

from __future__ import annotations

import functools
from typing import Final

vma_flags_t = int
"""A VMA flags bitmap (``vma_flags_t``)."""

NUM_VMA_FLAG_BITS: Final = 128

# DECLARE_VMA_BIT(NAME, n) -> VMA_NAME_BIT = n  (include/linux/mm.h, x86-64)
VMA_READ_BIT: Final = 0
VMA_WRITE_BIT: Final = 1
VMA_EXEC_BIT: Final = 2
VMA_SHARED_BIT: Final = 3
VMA_MAYREAD_BIT: Final = 4
VMA_MAYWRITE_BIT: Final = 5
VMA_MAYEXEC_BIT: Final = 6
VMA_MAYSHARE_BIT: Final = 7
VMA_GROWSDOWN_BIT: Final = 8
VMA_UFFD_MISSING_BIT: Final = 9
VMA_PFNMAP_BIT: Final = 10
VMA_MAYBE_GUARD_BIT: Final = 11  # was VM_DENYWRITE (8d0920bde5eb)
VMA_UFFD_WP_BIT: Final = 12
VMA_LOCKED_BIT: Final = 13
VMA_IO_BIT: Final = 14
VMA_SEQ_READ_BIT: Final = 15
VMA_RAND_READ_BIT: Final = 16
VMA_DONTCOPY_BIT: Final = 17
VMA_DONTEXPAND_BIT: Final = 18
VMA_LOCKONFAULT_BIT: Final = 19
VMA_ACCOUNT_BIT: Final = 20
VMA_NORESERVE_BIT: Final = 21
VMA_HUGETLB_BIT: Final = 22
VMA_SYNC_BIT: Final = 23
VMA_ARCH_1_BIT: Final = 24  # VM_PAT on x86
VMA_WIPEONFORK_BIT: Final = 25
VMA_DONTDUMP_BIT: Final = 26
VMA_SOFTDIRTY_BIT: Final = 27
VMA_MIXEDMAP_BIT: Final = 28
VMA_HUGEPAGE_BIT: Final = 29
VMA_NOHUGEPAGE_BIT: Final = 30
VMA_MERGEABLE_BIT: Final = 31
VMA_PKEY_BIT0_BIT: Final = 32
VMA_SHADOW_STACK_BIT: Final = 37  # VM_HIGH_ARCH_5 on x86
VMA_ALLOW_ANY_UNCACHED_BIT: Final = 39
VMA_DROPPABLE_BIT: Final = 40
VMA_UFFD_MINOR_BIT: Final = 41
VMA_SEALED_BIT: Final = 42


def mk_vma_flags(*bits: int) -> vma_flags_t:
    """Build a flags bitmap from bit numbers. Models include/linux/mm.h:mk_vma_flags."""
    m = 0
    for b in bits:
        if not 0 <= b < NUM_VMA_FLAG_BITS:
            raise ValueError(f"VMA flag bit {b} out of range")
        m |= 1 << b
    return m


def vma_flags_test(flags: vma_flags_t, bit: int) -> bool:
    """Whether ``bit`` is set. Models include/linux/mm.h:vma_flags_test."""
    return bool(flags >> bit & 1)


def vma_flags_test_mask(flags: vma_flags_t, mask: vma_flags_t) -> bool:
    """Whether any bit of ``mask`` is set. Models vma_flags_test_mask."""
    return bool(flags & mask)


def vma_flags_test_all_mask(flags: vma_flags_t, mask: vma_flags_t) -> bool:
    """Whether every bit of ``mask`` is set. Models vma_flags_test_all_mask."""
    return flags & mask == mask


def vma_flags_set(flags: vma_flags_t, *bits: int) -> vma_flags_t:
    """``flags`` with ``bits`` set. Models vma_flags_set."""
    return flags | mk_vma_flags(*bits)


def vma_flags_clear(flags: vma_flags_t, *bits: int) -> vma_flags_t:
    """``flags`` with ``bits`` cleared. Models vma_flags_clear."""
    return flags & ~mk_vma_flags(*bits)


VM_NONE: Final = 0
VM_READ: Final = 1 << VMA_READ_BIT
VM_WRITE: Final = 1 << VMA_WRITE_BIT
VM_EXEC: Final = 1 << VMA_EXEC_BIT
VM_SHARED: Final = 1 << VMA_SHARED_BIT
VM_MAYREAD: Final = 1 << VMA_MAYREAD_BIT
VM_MAYWRITE: Final = 1 << VMA_MAYWRITE_BIT
VM_MAYEXEC: Final = 1 << VMA_MAYEXEC_BIT
VM_MAYSHARE: Final = 1 << VMA_MAYSHARE_BIT
VM_GROWSDOWN: Final = 1 << VMA_GROWSDOWN_BIT
VM_GROWSUP: Final = VM_NONE  # x86-64 has no upward-growing stacks
VM_UFFD_MISSING: Final = 1 << VMA_UFFD_MISSING_BIT
VM_PFNMAP: Final = 1 << VMA_PFNMAP_BIT
VM_MAYBE_GUARD: Final = 1 << VMA_MAYBE_GUARD_BIT
VM_UFFD_WP: Final = 1 << VMA_UFFD_WP_BIT
VM_LOCKED: Final = 1 << VMA_LOCKED_BIT
VM_IO: Final = 1 << VMA_IO_BIT
VM_SEQ_READ: Final = 1 << VMA_SEQ_READ_BIT
VM_RAND_READ: Final = 1 << VMA_RAND_READ_BIT
VM_DONTCOPY: Final = 1 << VMA_DONTCOPY_BIT
VM_DONTEXPAND: Final = 1 << VMA_DONTEXPAND_BIT
VM_LOCKONFAULT: Final = 1 << VMA_LOCKONFAULT_BIT
VM_ACCOUNT: Final = 1 << VMA_ACCOUNT_BIT
VM_NORESERVE: Final = 1 << VMA_NORESERVE_BIT
VM_HUGETLB: Final = 1 << VMA_HUGETLB_BIT
VM_SYNC: Final = 1 << VMA_SYNC_BIT
VM_ARCH_1: Final = 1 << VMA_ARCH_1_BIT
VM_WIPEONFORK: Final = 1 << VMA_WIPEONFORK_BIT
VM_DONTDUMP: Final = 1 << VMA_DONTDUMP_BIT
# CONFIG_MEM_SOFT_DIRTY: the project's 6.18.44 kernel shows no "sd" in any smaps VmFlags
# line (measured), so VM_SOFTDIRTY is VM_NONE, as include/linux/mm.h defines it without
# the option. The bit number is kept for the bitmap table.
VM_SOFTDIRTY: Final = VM_NONE
VM_MIXEDMAP: Final = 1 << VMA_MIXEDMAP_BIT
VM_HUGEPAGE: Final = 1 << VMA_HUGEPAGE_BIT
VM_NOHUGEPAGE: Final = 1 << VMA_NOHUGEPAGE_BIT
VM_MERGEABLE: Final = 1 << VMA_MERGEABLE_BIT
VM_SHADOW_STACK: Final = 1 << VMA_SHADOW_STACK_BIT
VM_DROPPABLE: Final = 1 << VMA_DROPPABLE_BIT
VM_UFFD_MINOR: Final = 1 << VMA_UFFD_MINOR_BIT
VM_SEALED: Final = 1 << VMA_SEALED_BIT

# Composite masks, as include/linux/mm.h defines them (6.19 / 6.18.y backport).
VM_SPECIAL: Final = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_ACCESS_FLAGS: Final = VM_READ | VM_WRITE | VM_EXEC
VM_LOCKED_MASK: Final = VM_LOCKED | VM_LOCKONFAULT
VM_STACK: Final = VM_GROWSDOWN
# VM_STICKY, VM_IGNORE_MERGE and VM_COPY_ON_FORK are the sticky design's
# (vmalab.designs.sticky): mm/ takes the active design's masks.
VM_ATOMIC_SET_ALLOWED: Final = VM_MAYBE_GUARD
VM_UFFD_FLAGS: Final = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR

# fs/proc/task_mmu.c:show_smap_vma_flags(): mnemonic per bit, printed in bit order.
MNEMONICS: Final[dict[int, str]] = {
    VMA_READ_BIT: "rd",
    VMA_WRITE_BIT: "wr",
    VMA_EXEC_BIT: "ex",
    VMA_SHARED_BIT: "sh",
    VMA_MAYREAD_BIT: "mr",
    VMA_MAYWRITE_BIT: "mw",
    VMA_MAYEXEC_BIT: "me",
    VMA_MAYSHARE_BIT: "ms",
    VMA_GROWSDOWN_BIT: "gd",
    VMA_UFFD_MISSING_BIT: "um",
    VMA_PFNMAP_BIT: "pf",
    VMA_MAYBE_GUARD_BIT: "gu",
    VMA_UFFD_WP_BIT: "uw",
    VMA_LOCKED_BIT: "lo",
    VMA_IO_BIT: "io",
    VMA_SEQ_READ_BIT: "sr",
    VMA_RAND_READ_BIT: "rr",
    VMA_DONTCOPY_BIT: "dc",
    VMA_DONTEXPAND_BIT: "de",
    VMA_LOCKONFAULT_BIT: "lf",
    VMA_ACCOUNT_BIT: "ac",
    VMA_NORESERVE_BIT: "nr",
    VMA_HUGETLB_BIT: "ht",
    VMA_SYNC_BIT: "sf",
    VMA_ARCH_1_BIT: "ar",
    VMA_WIPEONFORK_BIT: "wf",
    VMA_DONTDUMP_BIT: "dd",
    VMA_SOFTDIRTY_BIT: "sd",
    VMA_MIXEDMAP_BIT: "mm",
    VMA_HUGEPAGE_BIT: "hg",
    VMA_NOHUGEPAGE_BIT: "nh",
    VMA_MERGEABLE_BIT: "mg",
    VMA_SHADOW_STACK_BIT: "ss",
    VMA_DROPPABLE_BIT: "dp",
    VMA_UFFD_MINOR_BIT: "ui",
    VMA_SEALED_BIT: "sl",
}
_MNEMONIC_BITS: Final = sorted(MNEMONICS)
MNEMONIC_TO_FLAG: Final[dict[str, int]] = {m: 1 << b for b, m in MNEMONICS.items()}


@functools.lru_cache(maxsize=4096)
def mnemonics(flags: vma_flags_t) -> tuple[str, ...]:
    """The smaps VmFlags mnemonics of ``flags`` in bit order (cached: few distinct values).

    Models fs/proc/task_mmu.c:show_smap_vma_flags.
    """
    return tuple(MNEMONICS[b] for b in _MNEMONIC_BITS if flags >> b & 1)


@functools.lru_cache(maxsize=4096)
def mnemonic_set(flags: vma_flags_t) -> frozenset[str]:
    """The mnemonics of ``flags`` as a set, as ``VmaView.flags`` reports them (cached)."""
    return frozenset(mnemonics(flags))


def calc_vm_prot_bits(prot: int) -> vma_flags_t:
    """PROT_* to VM_READ/WRITE/EXEC. Models include/linux/mman.h:calc_vm_prot_bits."""
    return prot & 0x7  # PROT_READ/WRITE/EXEC share bit positions with VM_READ/WRITE/EXEC
