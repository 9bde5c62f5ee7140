"""The commit charge: overcommit policy and accounting.

Models mm/util.c (Linux 6.18): vm_commit_limit, __vm_enough_memory (through
security_vm_enough_memory_mm, which passes cap_sys_admin) and the vm_committed_as
counter behind vm_acct_memory / vm_unacct_memory; /proc/meminfo's CommitLimit and
Committed_AS.

The policy is the Kernel's configuration (``OvercommitConfig``); by default the values of
the machine the model runs on, read once (lazily, on first use) from /proc/meminfo and
/proc/sys/vm. Tests pass explicit values.

Simplifications (written down where they live):

* ``vm_committed_as`` counts only what the modelled processes charge, plus
  ``OvercommitConfig.committed_base`` standing for everybody else (default 0).
* Charged: private writable mappings (VM_ACCOUNT) in mmap, mprotect, mremap and fork,
  and shared anonymous mappings (shmem_zero_setup → shmem_acct_size) without
  MAP_NORESERVE. Not charged: memfd and tmpfs page allocations (shmem_acct_blocks, which
  charges VM_NORESERVE inodes page by page as they fill), brk and stack growth.
* percpu_counter batching is not modelled: the counter is exact.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmalab.errors import kernel_error
from vmalab.mm.mm_types import PAGE_SHIFT
from vmalab.mm.overcommit import OVERCOMMIT_ALWAYS, OVERCOMMIT_GUESS
from vmalab.mm.overcommit import OVERCOMMIT_NEVER as OVERCOMMIT_NEVER  # re-exported
from vmalab.mm.overcommit import OvercommitConfig as OvercommitConfig  # re-exported
from vmalab.mm.overcommit import host_overcommit as host_overcommit  # re-exported

if TYPE_CHECKING:
    from vmalab.mm.mm_types import MmContext, MmStruct


def vm_commit_limit(cfg: OvercommitConfig) -> int:
    """CommitLimit in pages. Models mm/util.c:vm_commit_limit."""
    if cfg.kbytes:
        allowed = cfg.kbytes >> (PAGE_SHIFT - 10)
    else:
        allowed = (cfg.totalram_pages - cfg.hugetlb_pages) * cfg.ratio // 100
    return allowed + cfg.total_swap_pages


def vm_acct_memory(k: MmContext, pages: int) -> None:
    """Models include/linux/mman.h:vm_acct_memory."""
    k.vm_committed_as += pages


def vm_unacct_memory(k: MmContext, pages: int) -> None:
    """Models include/linux/mman.h:vm_unacct_memory."""
    k.vm_committed_as -= pages


def mm_total_vm(mm: MmStruct) -> int:
    """mm->total_vm: the pages of every VMA (the model keeps no separate counter)."""
    return sum(v.pages() for v in mm.mm_mt.values())


def security_vm_enough_memory_mm(mm: MmStruct, pages: int) -> None:
    """Charge ``pages`` or raise OSError(ENOMEM) with nothing charged.

    Models security/security.c:security_vm_enough_memory_mm (cap_vm_enough_memory:
    cap_sys_admin from the mm's task) → mm/util.c:__vm_enough_memory: the pages are
    charged first; mode 1 always succeeds; mode 0 refuses only a single request larger
    than RAM + swap; mode 2 refuses when the charged total reaches CommitLimit minus the
    admin reserve (without CAP_SYS_ADMIN) and minus min(total_vm / 32, user reserve).
    """
    k = mm.ctx
    cfg = k.overcommit
    vm_acct_memory(k, pages)
    if cfg.mode == OVERCOMMIT_ALWAYS:
        return
    if cfg.mode == OVERCOMMIT_GUESS:
        if pages <= cfg.totalram_pages + cfg.total_swap_pages:
            return
    else:
        allowed = vm_commit_limit(cfg)
        task = k.tasks.get(mm.owner_pid)
        if task is None or not getattr(task, "cap_sys_admin", True):
            allowed -= cfg.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
        reserve = cfg.user_reserve_kbytes >> (PAGE_SHIFT - 10)
        allowed -= min(mm_total_vm(mm) // 32, reserve)
        if cfg.committed_base + k.vm_committed_as < allowed:
            return
    vm_unacct_memory(k, pages)
    raise kernel_error(errno.ENOMEM, f"not enough memory to commit {pages} pages")


def meminfo(k: MmContext) -> dict[str, int]:
    """The commit lines of /proc/meminfo, in kB: CommitLimit and Committed_AS."""
    cfg = k.overcommit
    return {
        "CommitLimit": vm_commit_limit(cfg) << (PAGE_SHIFT - 10),
        "Committed_AS": max(0, cfg.committed_base + k.vm_committed_as) << (PAGE_SHIFT - 10),
    }
