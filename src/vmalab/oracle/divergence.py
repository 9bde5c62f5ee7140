"""One difference between the kernel's and the model's observation of a program.

The bottom of the oracle package: ``compare`` finds a ``Divergence``, ``known`` classifies
it, ``shrink`` and ``fuzz`` preserve its signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Divergence:
    """One difference: where (``ops[3]``, ``ops[2].child[0]``, ``final``), what (``ret``,
    ``errno``, ``vmas``, ``pages``, ``probe``, ``data``, ``error``...), and both values."""

    where: str
    what: str
    kernel: Any
    model: Any
    op: str = ""
    known: str | None = None

    def describe(self) -> str:
        """One line for humans."""
        k = "" if self.known is None else f" [known: {self.known}]"
        op = f" ({self.op})" if self.op else ""
        return (
            f"{self.where}{op}: {self.what} differs: kernel {_fmt(self.kernel)}, "
            f"model {_fmt(self.model)}{k}"
        )

    def signature(self) -> tuple[str, str]:
        """What shrinking must preserve: the kind of difference and the op kind."""
        return (self.what, self.op)

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "what": self.what,
            "op": self.op,
            "kernel": self.kernel,
            "model": self.model,
            "known": self.known,
        }


def _fmt(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 300 else s[:297] + "..."
