"""Comparing the model's /proc/PID/maps or smaps with a real one, VMA by VMA.

Used by ``replay(..., verify=True)`` on the snapshots of a recording, and by
``vmalab replay --verify``. Two VMAs agree when start, end, perms, offset and name agree
and, where both texts are smaps, the VmFlags too. Device and inode numbers are not
compared (the model's tmpfs numbers its own inodes), nor ``[vsyscall]`` (above TASK_SIZE,
not modelled).
"""

from __future__ import annotations

from vmalab.trace.layout import DumpVma, parse_maps

IGNORED_NAMES = frozenset({"[vsyscall]"})
MAX_DIFFERENCES = 20


def _key(v: DumpVma, flags: bool) -> tuple[object, ...]:
    return (v.start, v.end, v.perms, v.offset, v.path,
            tuple(sorted(v.vmflags)) if flags and v.vmflags is not None else None)


def _show(v: DumpVma | None, flags: bool) -> str:
    if v is None:
        return "(none)"
    text = f"{v.start:x}-{v.end:x} {v.perms} {v.offset:08x} {v.path}".rstrip()
    if flags and v.vmflags is not None:
        text += " [" + " ".join(sorted(v.vmflags)) + "]"
    return text


def compare_maps(model: str, real: str, *, limit: int = MAX_DIFFERENCES
                 ) -> tuple[list[str], int]:
    """The first differing VMAs of two maps/smaps texts, and how many real VMAs there are.

    Each difference reads ``model: <vma> | kernel: <vma>`` (``(none)`` where a side has no
    VMA at that place). An empty list means every compared field is equal.
    """
    a = [v for v in parse_maps(model, "model") if v.path not in IGNORED_NAMES]
    b = [v for v in parse_maps(real, "snapshot") if v.path not in IGNORED_NAMES]
    flags = all(v.vmflags is not None for v in a + b)
    out: list[str] = []
    i = j = 0
    while (i < len(a) or j < len(b)) and len(out) < limit:
        va = a[i] if i < len(a) else None
        vb = b[j] if j < len(b) else None
        if va is not None and vb is not None and _key(va, flags) == _key(vb, flags):
            i += 1
            j += 1
            continue
        # step past the side that starts first, so one stray VMA is one difference
        if vb is None or (va is not None and va.start < vb.start):
            out.append(f"model: {_show(va, flags)} | kernel: (none)")
            i += 1
        elif va is None or vb.start < va.start:
            out.append(f"model: (none) | kernel: {_show(vb, flags)}")
            j += 1
        else:
            out.append(f"model: {_show(va, flags)} | kernel: {_show(vb, flags)}")
            i += 1
            j += 1
    return out, len(b)
