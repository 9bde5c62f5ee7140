"""Compare two ``/proc/PID/maps`` (or smaps) texts: the model's and the real kernel's.

:func:`diff_maps` is what ``vmalab compare --compare-maps`` and ``vmalab replay
--compare-maps`` print, and what ``replay --verify`` reuses. Both texts are read as maps or
smaps (an smaps text gives each VMA its ``VmFlags``). The VMAs are walked in address order:

* two VMAs with the same range are compared field by field: perms, offset, name, and the
  VmFlags when both sides have them (``kind`` ``"perms"``, ``"offset"``, ``"name"``,
  ``"vmflags"``);
* a cluster of overlapping VMAs whose ranges differ is one ``"range"`` difference (the
  kernel kept apart what the model merged, or the other way round), listing each side's
  ranges;
* a VMA only one side has is ``"missing"`` (only in the real dump) or ``"extra"`` (only in
  the model).

The device and inode columns are not compared: the model's files are not the host's.
VMAs whose name is in ``ignore`` (by default ``[vsyscall]``, which the kernel shows in
every x86-64 process outside any VMA tree) are left out on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vmalab.errors import UserInputError

__all__ = ["Difference", "MapsEntry", "diff_maps", "parse_entries"]

#: One maps line (shared with trace/layout.py, which reads snapshots the same way).
MAPS_LINE = re.compile(
    r"^(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+)\s+(?P<perms>[-r][-w][-x][-sp])\s+"
    r"(?P<off>[0-9a-fA-F]+)\s+(?P<dev>[0-9a-fA-F]+:[0-9a-fA-F]+)\s+(?P<ino>\d+)\s*(?P<name>.*)$"
)
#: An smaps field line (``Rss:   4 kB``) that follows a maps line.
SMAPS_FIELD = re.compile(r"^[A-Z][A-Za-z_]*:\s")


@dataclass
class MapsEntry:
    """One VMA of a maps/smaps text (``vmflags`` is None for a plain maps text)."""

    start: int
    end: int
    perms: str
    offset: int
    name: str
    vmflags: frozenset[str] | None = None
    line: int = 0

    @property
    def range(self) -> str:
        """``start-end`` as the maps file prints it."""
        return f"{self.start:08x}-{self.end:08x}"


@dataclass(frozen=True)
class Difference:
    """One difference between the model's maps and the real ones.

    ``kind`` is ``"missing"``, ``"extra"``, ``"range"``, ``"perms"``, ``"offset"``,
    ``"name"`` or ``"vmflags"``; ``start``/``end`` the range concerned (for ``"range"``,
    the extent of the cluster of overlapping VMAs, and ``model``/``real`` list each
    side's ranges); ``model`` and ``real`` each side's value as text (None
    where a side has no VMA there). For ``"vmflags"``, ``model`` holds the mnemonics only
    the model has and ``real`` those only the real dump has (``-`` for none).
    """

    kind: str
    start: int
    end: int
    model: str | None
    real: str | None

    def describe(self) -> str:
        """One line: ``RANGE KIND: model X, real Y``."""
        rng = f"{self.start:08x}-{self.end:08x}"
        if self.kind == "missing":
            return f"{rng} missing in the model: real has {self.real}"
        if self.kind == "extra":
            return f"{rng} only in the model: {self.model}"
        if self.kind == "vmflags":
            return (
                f"{rng} VmFlags: only the model has {self.model}, only the real one has {self.real}"
            )
        return f"{rng} {self.kind}: model {self.model}, real {self.real}"


def parse_entries(text: str, source: str = "maps") -> list[MapsEntry]:
    """The VMAs of a maps or smaps text, in the text's order.

    Raises :class:`vmalab.errors.UserInputError` at ``SOURCE:LINE`` for a line that is
    neither a VMA header nor an smaps field, and at ``SOURCE`` for a text without any VMA.
    """
    out: list[MapsEntry] = []
    for no, ln in enumerate(text.splitlines(), 1):
        if not ln.strip():
            continue
        m = MAPS_LINE.match(ln)
        if m:
            start, end = int(m.group("start"), 16), int(m.group("end"), 16)
            if end <= start:
                raise UserInputError(f"{source}:{no}", "VMA end is not above its start")
            out.append(
                MapsEntry(
                    start,
                    end,
                    m.group("perms"),
                    int(m.group("off"), 16),
                    m.group("name").strip(),
                    line=no,
                )
            )
            continue
        if SMAPS_FIELD.match(ln) and out:
            key, _, val = ln.partition(":")
            if key == "VmFlags":
                out[-1].vmflags = frozenset(val.split())
            continue
        raise UserInputError(f"{source}:{no}", f"not a maps or smaps line: {ln[:60]!r}")
    if not out:
        raise UserInputError(source, "no VMA in this maps dump")
    return out


def _describe(e: MapsEntry) -> str:
    """A VMA in one short maps-like line."""
    return f"{e.range} {e.perms} {e.offset:08x} {e.name or '(anonymous)'}"


def diff_maps(
    model_text: str,
    real_text: str,
    *,
    ignore: Iterable[str] = ("[vsyscall]",),
    ignore_flags: Iterable[str] = (),
    model_source: str = "model",
    real_source: str = "real",
) -> list[Difference]:
    """Every difference between the model's maps text and a real maps/smaps dump.

    ``ignore``: VMA names left out on both sides. ``ignore_flags``: VmFlags mnemonics left
    out of the VmFlags comparison (e.g. ``("gu",)`` for a design without VM_MAYBE_GUARD).
    An empty list means the two agree. Raises UserInputError (located at
    ``model_source``/``real_source`` and the line) for a malformed text.
    """
    skip = set(ignore)
    drop = frozenset(ignore_flags)
    model = sorted(
        (e for e in parse_entries(model_text, model_source) if e.name not in skip),
        key=lambda e: e.start,
    )
    real = sorted(
        (e for e in parse_entries(real_text, real_source) if e.name not in skip),
        key=lambda e: e.start,
    )
    out: list[Difference] = []
    i = j = 0
    while i < len(model) or j < len(real):
        a = model[i] if i < len(model) else None
        b = real[j] if j < len(real) else None
        if b is None or (a is not None and a.end <= b.start):
            assert a is not None
            out.append(Difference("extra", a.start, a.end, _describe(a), None))
            i += 1
            continue
        if a is None or b.end <= a.start:
            out.append(Difference("missing", b.start, b.end, None, _describe(b)))
            j += 1
            continue
        if (a.start, a.end) != (b.start, b.end):
            # one difference for the whole cluster of overlapping VMAs of both sides
            hi = max(a.end, b.end)
            ma, rb = [a], [b]
            i += 1
            j += 1
            while True:
                if i < len(model) and model[i].start < hi:
                    ma.append(model[i])
                    hi = max(hi, model[i].end)
                    i += 1
                elif j < len(real) and real[j].start < hi:
                    rb.append(real[j])
                    hi = max(hi, real[j].end)
                    j += 1
                else:
                    break
            out.append(
                Difference(
                    "range",
                    min(a.start, b.start),
                    hi,
                    " ".join(e.range for e in ma),
                    " ".join(e.range for e in rb),
                )
            )
            continue
        for kind, x, y in (
            ("perms", a.perms, b.perms),
            ("offset", f"{a.offset:08x}", f"{b.offset:08x}"),
            ("name", a.name or "(anonymous)", b.name or "(anonymous)"),
        ):
            if x != y:
                out.append(Difference(kind, a.start, a.end, x, y))
        if a.vmflags is not None and b.vmflags is not None:
            fa, fb = a.vmflags - drop, b.vmflags - drop
            if fa != fb:
                out.append(
                    Difference(
                        "vmflags",
                        a.start,
                        a.end,
                        " ".join(sorted(fa - fb)) or "-",
                        " ".join(sorted(fb - fa)) or "-",
                    )
                )
        i += 1
        j += 1
    return out
