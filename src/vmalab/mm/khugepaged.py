"""khugepaged's page-table retraction for file and shmem VMAs.

Models mm/khugepaged.c:retract_page_tables' per-VMA skip test: the design's
file_backed_vma_is_retractable() must allow it (a VMA with an anon_vma, uffd-wp,
VM_MAYBE_GUARD under sticky, or a tagged ANON_VMA_UNFAULTED word is skipped). The
PMD-range alignment test and the collapse itself are not modelled.
"""

from __future__ import annotations

import functools

from vmalab.mm.mm_types import VmArea


def retractable(vma: VmArea) -> bool:
    """Whether retract_page_tables() would retract ``vma``'s PTE tables.

    Models mm/khugepaged.c:retract_page_tables' skip test for one VMA of the file's
    i_mmap: file_backed_vma_is_retractable() (a design hook). Anonymous VMAs are never
    candidates. Whether a PMD-aligned 2 MiB range exists is the caller's question.
    """
    return vma.vm_file is not None and vma.vm_mm.ctx.design.file_vma_retractable(vma)


@functools.cache
def host_thp_mode(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str:
    """The bracketed mode of the host's THP ``enabled`` knob (read once; "never" if
    unreadable)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return "never"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return "never"
