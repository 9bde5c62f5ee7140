"""Field validators of the program parser: each reads one key of a decoded op object and
raises ``UserInputError`` located at it (``SOURCE:ops[3].len``)."""

from __future__ import annotations

from typing import Any

from vmalab.errors import UserInputError
from vmalab.program.names import MAX_FILES, MAX_OPS, PROT_NAMES


class Ctx:
    """Parser state: source name, arena size, op budget."""

    def __init__(self, source: str, arena: int) -> None:
        self.source = source
        self.arena = arena
        self.budget = MAX_OPS

    def err(self, loc: str, msg: str) -> UserInputError:
        loc = loc.lstrip(".")
        return UserInputError(f"{self.source}:{loc}" if loc else self.source, msg)


def short(v: Any) -> str:
    """``repr(v)``, cut to 40 characters for an error message."""
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def int_field(
    ctx: Ctx, d: dict[str, Any], key: str, loc: str, lo: int, hi: int, default: int | None = None
) -> int:
    """An integer in [lo, hi]; required unless ``default`` is given."""
    if key not in d:
        if default is None:
            raise ctx.err(f"{loc}.{key}", "missing")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.err(f"{loc}.{key}", f"expected an integer, got {short(v)}")
    if not lo <= v <= hi:
        raise ctx.err(f"{loc}.{key}", f"{short(v)} is out of range [{lo}, {hi}]")
    return v


def bool_field(ctx: Ctx, d: dict[str, Any], key: str, loc: str, default: bool) -> bool:
    """``true`` or ``false`` (``default`` when absent)."""
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ctx.err(f"{loc}.{key}", f"expected true or false, got {short(v)}")
    return v


def names_field(
    ctx: Ctx,
    d: dict[str, Any],
    key: str,
    loc: str,
    table: dict[str, int],
    default: tuple[str, ...],
) -> tuple[str, ...]:
    """A list of distinct names from ``table``."""
    v = d.get(key, list(default))
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ctx.err(f"{loc}.{key}", f"expected a list of names, got {short(v)}")
    for i, x in enumerate(v):
        if x not in table:
            raise ctx.err(
                f"{loc}.{key}[{i}]", f"unknown name {short(x)} (one of {', '.join(sorted(table))})"
            )
    if len(set(v)) != len(v):
        raise ctx.err(f"{loc}.{key}", "duplicate names")
    return tuple(v)


def str_field(ctx: Ctx, d: dict[str, Any], key: str, loc: str, default: str | None = None) -> str:
    """A string; required unless ``default`` is given."""
    if key not in d:
        if default is None:
            raise ctx.err(f"{loc}.{key}", "missing")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise ctx.err(f"{loc}.{key}", f"expected a string, got {short(v)}")
    return v


def prot_field(ctx: Ctx, d: dict[str, Any], loc: str, default: str | None) -> str:
    """``prot``: ``"none"`` or letters from ``rwx``, normalised to ``rwx`` order."""
    p = str_field(ctx, d, "prot", loc, default)
    if p == "none":
        return ""
    if any(c not in PROT_NAMES for c in p) or len(set(p)) != len(p):
        raise ctx.err(f"{loc}.prot", f"expected 'none' or letters from 'rwx', got {short(p)}")
    return "".join(c for c in "rwx" if c in p)


def range_field(ctx: Ctx, d: dict[str, Any], loc: str, lkey: str = "len") -> tuple[int, int]:
    """``addr`` and ``len`` (or ``lkey``): a page range inside the arena."""
    a = int_field(ctx, d, "addr", loc, 0, ctx.arena - 1)
    n = int_field(ctx, d, lkey, loc, 0, ctx.arena)
    if a + n > ctx.arena:
        raise ctx.err(
            f"{loc}.{lkey}", f"range [{a}, {a + n}) leaves the arena of {ctx.arena} pages"
        )
    return a, n


def slot_field(ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], *, new: bool = False) -> int:
    """``file``: a slot that is open (or, with ``new``, one that is not)."""
    s = int_field(ctx, d, "file", loc, 0, MAX_FILES - 1)
    if new and s in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is already open")
    if not new and s not in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is not open")
    return s


def allowed(ctx: Ctx, d: dict[str, Any], loc: str, keys: set[str]) -> None:
    """Every key of ``d`` is one of ``keys``."""
    for k in d:
        if not isinstance(k, str) or k not in keys:
            raise ctx.err(f"{loc}.{k}", "unknown field")
