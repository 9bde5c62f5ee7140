"""Comparing the model's /proc/PID/maps or smaps with a real one, for ``verify``.

Used by ``replay(..., verify=True)`` on the snapshots of a recording and by
``vmalab replay --verify``; the comparison itself is :func:`vmalab.trace.mapsdiff.diff_maps`
(start, end, perms, offset, name and, where both texts are smaps, VmFlags; device and inode
numbers are not compared, nor ``[vsyscall]``, which lies above TASK_SIZE).
"""

from __future__ import annotations

from vmalab.trace.mapsdiff import diff_maps, parse_entries

MAX_DIFFERENCES = 20


def compare_maps(model: str, real: str, *, limit: int = MAX_DIFFERENCES) -> tuple[list[str], int]:
    """The first differences of two maps/smaps texts as lines, and the real VMA count.

    An empty list means every compared field of every VMA is equal.
    """
    diffs = diff_maps(model, real, model_source="model", real_source="snapshot")
    n = sum(1 for e in parse_entries(real, "snapshot") if e.name != "[vsyscall]")
    return [d.describe() for d in diffs[:limit]], n
