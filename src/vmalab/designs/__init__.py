"""The designs vmalab compares, one module each (see ``vmalab.designs.base``).

Every module in this package that defines a ``Design`` subclass with a ``name`` is a
design; ``DESIGNS`` lists their ids, the four of the mission first.
"""

from __future__ import annotations

import importlib
import pkgutil

from vmalab.designs.base import Design

_ORDER = ("tagged", "eager", "sticky", "lossy")


def _discover() -> dict[str, type[Design]]:
    found: dict[str, type[Design]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Design) and obj.name:
                found[obj.name] = obj
    return found


_REGISTRY = _discover()
DESIGNS: tuple[str, ...] = tuple(
    [n for n in _ORDER if n in _REGISTRY] + sorted(n for n in _REGISTRY if n not in _ORDER)
)


def get_design(design: str | Design) -> Design:
    """A design instance from an id in DESIGNS, or the instance itself.

    Raises ValueError naming the valid ids for an unknown id.
    """
    if isinstance(design, Design):
        return design
    cls = _REGISTRY.get(design) if isinstance(design, str) else None
    if cls is None:
        raise ValueError(f"unknown design {design!r}; valid designs: {', '.join(DESIGNS)}")
    return cls()


__all__ = ["DESIGNS", "Design", "get_design"]
