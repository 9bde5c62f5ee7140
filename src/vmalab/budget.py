"""Resource budgets: how much of the host one model ``Kernel`` may use.

The model has no RAM of its own: a process that populates 2^36 bytes, stores the contents
of every page or forks a deep tree of copies spends the memory and time of the host that
runs vmalab. ``Budget`` bounds that. It is vmalab's own limit, not kernel behaviour (see
``vmalab.errors.ResourceLimitError``, which a breach raises), and it is checked where the
model allocates:

* ``pages``: populated folios, anonymous and page cache (``PhysMem.alloc``);
* ``stored_bytes``: page contents kept for written pages, counted in the bytes stored
  (``PhysMem.stored``: a compact page holds what was written up to its last written byte,
  one written past 512 bytes a whole 4 KiB; contents shared by CoW count for each page
  holding them), checked in ``PhysMem.write`` / ``PhysMem.copy``;
* ``vmas``: VMAs over every process (the ``vm_area_struct`` slab);
* ``pgtables``: page-table pages over every process (the ``pgtable`` pseudo-cache; a
  populated, zero-page or guard-marked range costs one per 2 MiB);
* ``seconds``: wall time since the Kernel was created (or ``start()``), checked at every
  syscall entry and allocation.

A breach unwinds inside the model exactly as an allocation failure does (``LimitFailure``
is an ``AllocFailure``, so every ENOMEM unwind path of the model runs and ``Kernel.check()``
passes afterwards); the syscall boundary (``vmalab.task.syscall``) then raises the
``ResourceLimitError`` instead of the ENOMEM, so a program never sees an errno the kernel
would not have given. A breach recorded where nothing can fail (storing the bytes of a
page, copying a page for CoW) lets the current syscall finish and is raised at its end;
the next allocation fails meanwhile, so the overshoot is at most one syscall's own data.

Defaults are generous for every workload the project runs (a million-op soak stays far
below them) and keep one Kernel to about 2 GiB of host memory; ``$VMALAB_BUDGET`` changes
them for a process (``Budget.from_env()``, what ``Kernel()`` uses).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from vmalab.errors import InvariantError, ResourceLimitError, UserInputError
from vmalab.mm.slab import AllocFailure

DEFAULT_PAGES = 1 << 19
"""Populated folios: 2 GiB of modelled memory (a few seconds of model time to fill)."""
DEFAULT_STORED_BYTES = 1 << 30
"""Contents of written pages: 1 GiB of host memory."""
DEFAULT_VMAS = 1 << 19
"""VMAs over all processes (eight full max_map_count address spaces)."""
DEFAULT_PGTABLES = 1 << 11
"""Page-table pages over all processes: 8 MiB of host memory, 4 GiB of populated range
(the real traces of tests/fixtures use under 100)."""

ENV = "VMALAB_BUDGET"
"""``VMALAB_BUDGET="pages=1000000,pgtables=8192,seconds=60"`` (or ``unlimited``) changes the
defaults of every ``Budget()`` of this process; a field set to ``none`` is unlimited."""

_FIELDS = ("pages", "stored_bytes", "vmas", "pgtables", "seconds")


class LimitFailure(AllocFailure):
    """The allocation a budget refused (unwinds like an injected allocation failure)."""


@dataclass
class Budget:
    """Limits of one ``Kernel`` (``None``: unlimited). ``Kernel(budget=Budget(...))``;
    ``Budget.unlimited()`` turns every check off."""

    pages: int | None = DEFAULT_PAGES
    stored_bytes: int | None = DEFAULT_STORED_BYTES
    vmas: int | None = DEFAULT_VMAS
    pgtables: int | None = DEFAULT_PGTABLES
    seconds: float | None = None
    breach: ResourceLimitError | None = field(default=None, repr=False, compare=False)
    deadline: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _FIELDS:
            v = getattr(self, name)
            if v is not None and not (
                isinstance(v, int | float) and v >= 0 and v == v and v != float("inf")
            ):
                raise ValueError(f"Budget.{name} must be a finite number >= 0 or None")
        self.start()

    @classmethod
    def unlimited(cls) -> Budget:
        """A budget that checks nothing."""
        return cls(None, None, None, None, None)

    @classmethod
    def from_env(cls, **overrides: Any) -> Budget:
        """The defaults as ``$VMALAB_BUDGET`` changes them, then ``overrides``. A bad
        value raises UserInputError (one line, exit 2 on the command line)."""
        spec = os.environ.get(ENV, "").strip()
        kw: dict[str, Any] = {}
        if spec == "unlimited":
            kw = dict.fromkeys(_FIELDS)
        elif spec:
            for item in spec.split(","):
                key, eq, val = item.strip().partition("=")
                if key not in _FIELDS or not eq:
                    raise UserInputError(
                        ENV,
                        f"expected NAME=VALUE with NAME one of "
                        f"{', '.join(_FIELDS)}, got {item.strip()[:40]!r}",
                    )
                if val.strip().lower() == "none":
                    kw[key] = None
                    continue
                try:
                    num = float(val)
                except ValueError:
                    num = float("nan")
                if not (num >= 0 and num != float("inf")):
                    raise UserInputError(
                        ENV, f"{key}: expected a finite number >= 0 or none, got {val[:40]!r}"
                    )
                kw[key] = num if key == "seconds" else int(num)
        kw.update(overrides)
        return cls(**kw)

    def start(self) -> None:
        """Restart the wall-time budget from now."""
        self.deadline = None if self.seconds is None else time.monotonic() + self.seconds

    def trip(self, resource: str, limit: float, what: str) -> LimitFailure:
        """Record a breach (the first one wins) and return the failure to raise."""
        if self.breach is None:
            shown = int(limit) if float(limit).is_integer() else limit
            self.breach = ResourceLimitError(
                resource, limit, f"{what}: {resource} budget of {shown} exceeded"
            )
        return LimitFailure(f"{resource} budget")

    def out_of_time(self) -> bool:
        """Whether the wall-time budget is spent (recording the breach)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            if self.seconds is None:
                raise InvariantError("out_of_time: self.seconds is None")
            self.trip("seconds", self.seconds, "wall time")
            return True
        return False

    def check_alloc(self, resource: str, used: int, limit: int | None, what: str) -> None:
        """Raise LimitFailure if one more ``resource`` would pass ``limit``, a breach is
        pending, or the time is up."""
        if self.breach is not None:
            raise LimitFailure(self.breach.resource)
        if limit is not None and used >= limit:
            raise self.trip(resource, limit, what)
        if self.deadline is not None and self.out_of_time():
            raise LimitFailure("seconds")

    def take(self) -> ResourceLimitError | None:
        """The pending breach, cleared (the syscall boundary raises it)."""
        b, self.breach = self.breach, None
        return b
