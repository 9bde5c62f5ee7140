"""Shared helpers for the kernel-behaviour tests (contract API only).

Every helper uses the public vmalab API of docs/api-contract.md; nothing here reaches into
the model's internals.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmalab import PAGE_SIZE, SegmentationFault, uapi

P = PAGE_SIZE
#: 1 GiB-aligned base used for deterministic MAP_FIXED layouts (as in live-kernel-facts §2).
BASE = 0x200000000000

#: The four designs of the contract, in a fixed order.
DESIGN_IDS = ("tagged", "eager", "sticky", "lossy")
#: Designs that must preserve guards across fork.
FAITHFUL = ("tagged", "eager", "sticky")

RW = uapi.PROT_READ | uapi.PROT_WRITE
PRIV_ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
FIXED = uapi.MAP_FIXED


def try_read(proc, addr: int) -> bool:
    """The selftest's try_read_buf(): a one-byte load, True unless it faults."""
    try:
        proc.read(addr, 1)
    except SegmentationFault:
        return False
    return True


def try_write(proc, addr: int) -> bool:
    """The selftest's try_write_buf(): stores 'x' at addr, True unless it faults."""
    try:
        proc.write(addr, b"x")
    except SegmentationFault:
        return False
    return True


def try_read_write(proc, addr: int) -> bool:
    """try_read_write_buf(): read then write; true only if both succeed."""
    return try_read(proc, addr) and try_write(proc, addr)


def fault_signal(proc, addr: int, write: bool = False) -> str | None:
    """The signal a one-byte access at addr gets, or None if it succeeds."""
    try:
        if write:
            proc.write(addr, b"x")
        else:
            proc.read(addr, 1)
    except SegmentationFault as e:
        return e.signal
    return None


def guard(proc, addr: int, npages: int = 1) -> None:
    proc.madvise(addr, npages * P, uapi.MADV_GUARD_INSTALL)


def unguard(proc, addr: int, npages: int = 1) -> None:
    proc.madvise(addr, npages * P, uapi.MADV_GUARD_REMOVE)


def guard_pages(proc, addr: int, npages: int) -> list[int]:
    """Indices (relative to addr) of the pages whose pagemap entry has PM_GUARD_REGION."""
    ents = proc.pagemap(addr, npages)
    return [i for i, e in enumerate(ents) if e & uapi.PM_GUARD_REGION]


def all_guard_pages(proc) -> set[int]:
    """Absolute page addresses of every guard marker in the process (via pagemap)."""
    out: set[int] = set()
    for v in proc.vmas():
        n = (v.end - v.start) // P
        for i in guard_pages(proc, v.start, n):
            out.add(v.start + i * P)
    return out


def pattern_byte(i: int) -> bytes:
    return bytes([ord("a") + (i % 26)])


def set_pattern(proc, ptr: int, npages: int, first_index: int = 0) -> None:
    """set_pattern(): page i is filled with 'a' + (i % 26)."""
    for i in range(npages):
        proc.write(ptr + i * P, pattern_byte(first_index + i) * P)


def check_pattern_offset(proc, ptr: int, npages: int, pgoff: int) -> bool:
    """check_pattern_offset(): pages pgoff..pgoff+npages hold 'a' + absolute index."""
    for i in range(pgoff, pgoff + npages):
        if proc.read(ptr + i * P, P) != pattern_byte(i) * P:
            return False
    return True


def check_pattern(proc, ptr: int, npages: int) -> bool:
    return check_pattern_offset(proc, ptr, npages, 0)


def layout(proc, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of every VMA, optionally restricted to those inside [lo, hi)."""
    out = []
    for v in proc.vmas():
        if lo is not None and v.end <= lo:
            continue
        if hi is not None and v.start >= hi:
            continue
        out.append((v.start, v.end))
    return out


def rel_layout(proc, base: int, npages: int) -> list[tuple[int, int]]:
    """VMA boundaries inside [base, base+npages·P) as page indices relative to base."""
    return [((s - base) // P, (e - base) // P) for s, e in layout(proc, base, base + npages * P)]


def vma_at(proc, addr: int):
    for v in proc.vmas():
        if v.start <= addr < v.end:
            return v
    return None


def has_gu(proc, addr: int) -> bool:
    """check_vmflag_guard(): 'gu' in the smaps VmFlags of the VMA containing addr."""
    v = vma_at(proc, addr)
    assert v is not None, f"no VMA at {addr:#x}"
    return "gu" in v.flags


def smaps_fields(proc, addr: int) -> dict[str, str]:
    """The smaps block of the VMA containing addr, as {field: rest-of-line}."""
    cur: dict[str, str] | None = None
    blocks: list[tuple[int, int, dict[str, str]]] = []
    for line in proc.smaps().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and ":" not in head[0]:
            s, e = (int(x, 16) for x in head[0].split("-"))
            cur = {}
            blocks.append((s, e, cur))
        elif cur is not None and head[0].endswith(":"):
            cur[head[0][:-1]] = line.split(":", 1)[1].strip()
    for s, e, d in blocks:
        if s <= addr < e:
            return d
    raise AssertionError(f"no smaps block for {addr:#x}")


def smaps_kb(proc, addr: int, field: str) -> int:
    return int(smaps_fields(proc, addr)[field].split()[0])


def slab_active(kernel) -> dict[str, int]:
    return {k: v.active for k, v in kernel.slab().items()}


def slab_delta(before: dict[str, int], after: dict[str, int], keys: Iterable[str]) -> dict:
    return {k: after[k] - before[k] for k in keys}
