"""/proc views of a process: maps, smaps, pagemap and a structured VMA list.

Models fs/proc/task_mmu.c: show_map_vma (the maps line), show_smap (the smaps block with
smaps_pte_entry's Rss/Pss/Anonymous accounting and show_smap_vma_flags), and
pte_to_pagemap_entry / pagemap_pte_hole for /proc/PID/pagemap.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmalab import uapi
from vmalab.mm import huge_memory, hugetlb, pkeys
from vmalab.mm.flags import (
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_WRITE,
    mnemonic_set,
    mnemonics,
)
from vmalab.mm.mm_types import MmStruct, VmArea
from vmalab.mm.page_alloc import KIND_ANON, KIND_PAGECACHE
from vmalab.mm.pagetable import _PAGE_HUGE_ZERO, _PAGE_PRESENT, PTE_MARKER_GUARD_ENTRY, pte_walk

# Device numbers shown for tmpfs files and the internal shmem mount.
TMPFS_DEV = (0x00, 0x1F)
SHMEM_DEV = (0x00, 0x01)
DEVTMPFS_DEV = (0x00, 0x06)
HUGETLBFS_DEV = (0x00, 0x11)  # the internal hugetlbfs mount (measured)
# The swap "type" of a PTE marker as pagemap's frame field shows it is not modelled;
# guard entries report frame 0.


@dataclass(frozen=True)
class VmaView:
    """One VMA as ``Process.vmas()`` reports it (see the API contract)."""

    start: int
    end: int
    pgoff: int
    flags: frozenset[str]
    path: str | None
    anon_vma: int | None
    anon_vma_flags: int


def vma_name(vma: VmArea) -> str | None:
    """The name column of maps. Models fs/proc/task_mmu.c:get_vma_name.

    In the kernel's order: a file's path (d_path() appends `` (deleted)`` once the name is
    unlinked; memfds and shared anonymous memory are born unlinked), the special
    mapping's name (``[vdso]``, ``[vvar]``, ...), ``[heap]`` for the VMA overlapping
    [mm->start_brk, mm->brk) (include/linux/mm.h:vma_is_initial_heap), ``[stack]`` for the
    VMA holding mm->start_stack (vma_is_initial_stack), then an anonymous VMA's name.
    """
    f = vma.vm_file
    if f is not None:
        if vma.anon_name is not None:
            return f"[anon_shmem:{vma.anon_name}]"
        inode = f.inode  # d_path() of the dentry: its current name
        if inode.kind == "file" and inode.nlink == 0:
            return inode.name + " (deleted)"
        return inode.name
    if vma.special_name is not None:
        return vma.special_name
    mm = vma.vm_mm
    if vma.vm_start < mm.brk and vma.vm_end > mm.start_brk:
        return "[heap]"
    if mm.start_stack and vma.vm_start <= mm.start_stack <= vma.vm_end:
        return "[stack]"
    if vma.anon_name is not None:
        return f"[anon:{vma.anon_name}]"
    return None


def _header(vma: VmArea) -> str:
    f = vma.vm_flags
    perms = (
        ("r" if f & VM_READ else "-")
        + ("w" if f & VM_WRITE else "-")
        + ("x" if f & VM_EXEC else "-")
        + ("s" if f & VM_MAYSHARE else "p")
    )
    if vma.vm_file is not None:
        inode = vma.vm_file.inode
        dev = TMPFS_DEV if inode.kind == "file" else SHMEM_DEV
        ino = inode.ino
        if inode.kind == "devzero":
            dev, ino = DEVTMPFS_DEV, 4  # /dev/zero on devtmpfs (measured)
        elif inode.kind == "hugetlb":
            dev = HUGETLBFS_DEV
        off = vma.vm_pgoff << 12
    else:
        dev, ino, off = (0, 0), 0, 0
    line = f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms} {off:08x} {dev[0]:02x}:{dev[1]:02x} {ino} "
    name = vma_name(vma)
    if name is not None:
        line = line.ljust(73) + name
    return line


def show_maps(mm: MmStruct) -> str:
    """/proc/PID/maps. Models fs/proc/task_mmu.c:show_map_vma."""
    return "".join(_header(v) + "\n" for v in mm.mm_mt.values())


def _rss(vma: VmArea) -> dict[str, int | float]:
    """Per-VMA page accounting. Models fs/proc/task_mmu.c:smaps_pte_entry/smaps_account."""
    phys = vma.vm_mm.ctx.phys
    kind, mapcount, data = phys.kind, phys.mapcount, phys.data
    acc: dict[str, int | float] = dict(rss=0, pss=0.0, anon=0, sc=0, sd=0, pc=0, pd=0)
    for _i, _t, _j, pte in pte_walk(vma.vm_mm.pgtables, vma.vm_start, vma.vm_end):
        if not pte & _PAGE_PRESENT:
            continue
        pfn = pte >> 12
        k = kind[pfn]
        if k not in (KIND_ANON, KIND_PAGECACHE):
            continue  # the zero page is not a normal page (vm_normal_page() is NULL)
        acc["rss"] += 4
        mc = max(mapcount[pfn], 1)
        acc["pss"] += 4 / mc
        dirty = k == KIND_ANON or pfn in data
        if k == KIND_ANON:
            acc["anon"] += 4
        if mc > 1:
            acc["sd" if dirty else "sc"] += 4
        else:
            acc["pd" if dirty else "pc"] += 4
    return acc


def show_smaps(mm: MmStruct) -> str:
    """/proc/PID/smaps. Models fs/proc/task_mmu.c:show_smap + __show_smap + show_smap_vma_flags."""
    out: list[str] = []
    for v in mm.mm_mt.values():
        a = _rss(v)
        size = (v.vm_end - v.vm_start) >> 10
        locked = a["rss"] if v.vm_flags & VM_LOCKED else 0
        pss = int(a["pss"])
        thp = int(
            bool(v.vm_flags & VM_HUGEPAGE)
            and not v.vm_flags & VM_NOHUGEPAGE
            and v.vm_file is None
            and not v.vm_flags & VM_GROWSDOWN
        )
        # vma_kernel_pagesize()/vma_mmu_pagesize(): the huge page size for hugetlb
        pgsz = hugetlb.vma_hpage_size(v) >> 10 if v.vm_flags & VM_HUGETLB else 4
        anon_huge, shmem_pmd = huge_memory.pmd_mapped_kb(v)
        rows = [
            ("Size", size),
            ("KernelPageSize", pgsz),
            ("MMUPageSize", pgsz),
            ("Rss", a["rss"]),
            ("Pss", pss),
            ("Pss_Dirty", int(a["pss"]) if a["sd"] + a["pd"] else 0),
            ("Shared_Clean", a["sc"]),
            ("Shared_Dirty", a["sd"]),
            ("Private_Clean", a["pc"]),
            ("Private_Dirty", a["pd"]),
            ("Referenced", a["rss"]),
            ("Anonymous", a["anon"]),
            ("KSM", 0),
            ("LazyFree", 0),
            ("AnonHugePages", anon_huge),
            ("ShmemPmdMapped", shmem_pmd),
            ("FilePmdMapped", 0),
            ("Shared_Hugetlb", 0),
            ("Private_Hugetlb", 0),
            ("Swap", 0),
            ("SwapPss", 0),
            ("Locked", locked),
        ]
        out.append(_header(v) + "\n")
        out.extend(f"{k + ':':<16}{val:>8} kB\n" for k, val in rows)
        out.append(f"THPeligible:    {thp:>8}\n")
        if mm.ctx.pku:  # arch_pkeys_enabled()
            out.append(f"ProtectionKey:  {pkeys.vma_pkey(v):>8}\n")
        out.append("VmFlags: " + "".join(m + " " for m in mnemonics(v.vm_flags)) + "\n")
    return "".join(out)


def _huge_zero(mm: MmStruct, a: int) -> bool:
    """Whether ``a`` is mapped by an unsplit huge zero PMD (vmalab.mm.fault)."""
    from vmalab.mm.fault import huge_zero_intact

    vma = mm.vma_lookup(a)
    t = mm.pgtables.table(a)
    return vma is not None and t is not None and huge_zero_intact(vma, a, t)


def pagemap_entries(mm: MmStruct, addr: int, npages: int) -> list[int]:
    """/proc/PID/pagemap entries for ``npages`` pages from ``addr``.

    Models fs/proc/task_mmu.c:pte_to_pagemap_entry: present pages get PM_PRESENT and
    the pfn (as root sees it), PM_FILE for page-cache pages and PM_MMAP_EXCLUSIVE when
    mapped once (the zero page has neither, vm_normal_page() being NULL); a guard marker
    is a swap-type entry, so PM_SWAP and PM_GUARD_REGION (bit 58); holes are 0 (no
    soft-dirty: CONFIG_MEM_SOFT_DIRTY is off on the project's kernel).
    """
    pt = mm.pgtables
    phys = mm.ctx.phys
    out: list[int] = []
    for n in range(npages):
        a = addr + (n << 12)
        pte = pt.get(a)
        if not pte:
            out.append(0)
        elif pte & _PAGE_PRESENT:
            pfn = pte >> 12
            k = phys.kind[pfn]
            v = uapi.PM_PRESENT | (pfn & uapi.PM_PFRAME_MASK)
            if k == KIND_PAGECACHE or pte & _PAGE_HUGE_ZERO and _huge_zero(mm, a):
                v |= uapi.PM_FILE  # the (unsplit) huge zero page is not anonymous
            if k in (KIND_ANON, KIND_PAGECACHE) and phys.mapcount[pfn] == 1:
                v |= uapi.PM_MMAP_EXCLUSIVE
            out.append(v)
        elif pte == PTE_MARKER_GUARD_ENTRY:
            out.append(uapi.PM_SWAP | uapi.PM_GUARD_REGION)
        else:  # pragma: no cover
            out.append(uapi.PM_SWAP)
    return out


def vma_views(mm: MmStruct) -> list[VmaView]:
    """The structured VMA list of ``Process.vmas()``."""
    out = []
    design = mm.ctx.design
    for v in mm.mm_mt.values():
        av = v.anon_vma
        out.append(
            VmaView(
                v.vm_start,
                v.vm_end,
                v.vm_pgoff,
                mnemonic_set(v.vm_flags),
                vma_name(v),
                av.id if av is not None else None,
                design.anon_vma_flags(v),
            )
        )
    return out
