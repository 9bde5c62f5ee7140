"""``Program``: a validated, expanded list of ops with its arena size and observe flags."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vmalab.program.base import OpBase
from vmalab.program.names import DEFAULT_ARENA_PAGES, FORMAT, VERSION
from vmalab.program.observe import Observe


@dataclass(frozen=True)
class Program:
    """A validated program. ``ops`` has every ``repeat`` already expanded."""

    ops: tuple[OpBase, ...]
    arena_pages: int = DEFAULT_ARENA_PAGES
    observe: Observe = field(default_factory=Observe)
    comment: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: The default-size (2 MiB) hugetlb pool the model runs with (nr_hugepages); None:
    #: the host's. The live runner refuses a program whose pool is not the host's.
    hugetlb_pool: int | None = None

    def count_ops(self) -> int:
        """Number of operations including those of fork bodies."""
        return sum(1 for _ in iter_ops(self.ops))

    def to_json(self) -> dict[str, Any]:
        """The program in the on-disk format (``repeat`` is not re-folded)."""
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arena_pages": self.arena_pages}
        if self.comment:
            d["comment"] = self.comment
        if self.hugetlb_pool is not None:
            d["hugetlb_pool"] = self.hugetlb_pool
        if self.observe != Observe():
            d["observe"] = dataclasses.asdict(self.observe)
        d["ops"] = [o.to_json() for o in self.ops]
        if self.meta:
            d["meta"] = self.meta
        return d

    def dumps(self) -> str:
        """The program as JSON text, one op per line."""
        d = self.to_json()
        ops = d.pop("ops")
        meta = d.pop("meta", None)
        head = json.dumps(d)[:-1]
        lines = [head + ', "ops": [']
        lines += [
            "  " + json.dumps(o) + ("," if i < len(ops) - 1 else "") for i, o in enumerate(ops)
        ]
        tail = "]"
        if meta is not None:
            tail += ', "meta": ' + json.dumps(meta)
        lines.append(tail + "}")
        return "\n".join(lines) + "\n"


def iter_ops(ops: tuple[OpBase, ...]) -> Iterator[OpBase]:
    """Every op, fork bodies included, in program order."""
    for o in ops:
        yield o
        yield from iter_ops(o.children())
