"""What a run records: ``Observe`` (what to record), ``State`` and ``Observation``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from vmalab import uapi


@dataclass(frozen=True)
class Observe:
    """What to record. ``each``: state (VMAs, pagemap) after every op; ``probe``: a real
    load of every mapped arena page at the end; ``contents``: the byte each probe read."""

    each: bool = True
    probe: bool = True
    contents: bool = True


def page_char(entry: int) -> str:
    """One pagemap entry as a letter: G guard, A anon (or zero page) present, F file/shmem
    present, S swap, . nothing (live-kernel-facts legend)."""
    if entry & uapi.PM_GUARD_REGION:
        return "G"
    if entry & uapi.PM_PRESENT:
        return "F" if entry & uapi.PM_FILE else "A"
    if entry & uapi.PM_SWAP:
        return "S"
    return "."


_SMAPS_HDR = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


def parse_smaps(
    lines: Iterable[str], lo: int, hi: int
) -> tuple[list[tuple[int, int, frozenset[str]]], list[tuple[int, int, int, int]]]:
    """The VMAs of /proc/PID/smaps text overlapping [lo, hi): (start, end, VmFlags) each,
    and (start, end, AnonHugePages kB, ShmemPmdMapped kB) of those with PMD-mapped THPs."""
    vmas: list[tuple[int, int, frozenset[str]]] = []
    pmd: list[tuple[int, int, int, int]] = []
    cur: list[int] | None = None
    for line in lines:
        m = _SMAPS_HDR.match(line)
        if m:
            s, e = int(m.group(1), 16), int(m.group(2), 16)
            cur = [s, e, 0, 0] if e > lo and s < hi else None
        elif cur is None:
            continue
        elif line.startswith("AnonHugePages:"):
            cur[2] = int(line.split()[1])
        elif line.startswith("ShmemPmdMapped:"):
            cur[3] = int(line.split()[1])
        elif line.startswith("VmFlags:"):
            vmas.append((cur[0], cur[1], frozenset(line.split()[1:])))
            if cur[2] or cur[3]:
                pmd.append((cur[0], cur[1], cur[2], cur[3]))
            cur = None
    return vmas, pmd


@dataclass
class State:
    """Arena state: VMAs as [start, end, sorted VmFlags] in arena pages, and one pagemap
    letter per arena page (blank where no VMA); ``thp``: for the arena VMAs with
    PMD-mapped THPs, [start, end, AnonHugePages, ShmemPmdMapped] (smaps, in pages),
    left out of the JSON when there are none."""

    vmas: list[list[Any]]
    pages: str
    thp: list[list[int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"vmas": self.vmas, "pages": self.pages}
        if self.thp:
            d["thp"] = self.thp
        return d


@dataclass
class Observation:
    """What one process did. ``results[i]`` belongs to ``ops[i]``: ``{"ret": ...}`` or
    ``{"errno": "ENOMEM"}`` (and ``"fault"``/``"data"`` for accesses, ``"child"`` for fork,
    ``"state"`` with ``observe.each``). ``final``: the state at the end, with ``probe`` (o/S/B
    per page) and ``data`` (two hex digits per page, ``--`` where not read); None after exit.
    ``error``: a runner failure (model exception, refused op), which is a divergence."""

    results: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    slab: list[dict[str, int]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, by name (the lists and dicts are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Observation:
        return Observation(
            list(d.get("results", [])), d.get("final"), list(d.get("slab", [])), d.get("error")
        )
