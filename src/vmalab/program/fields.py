"""Field validators of the program parser: each reads one key of a decoded op object and
raises ``UserInputError`` located at it (``SOURCE:ops[3].len``). The ``Spec`` classes
wrap them as declarations of op fields, which ``OpBase.parse`` reads in field order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
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
    in_arena(ctx, loc, lkey, a, n)
    return a, n


def in_arena(ctx: Ctx, loc: str, lkey: str, a: int, n: int) -> None:
    """The range [a, a+n) lies inside the arena (else an error located at ``lkey``)."""
    if a + n > ctx.arena:
        raise ctx.err(
            f"{loc}.{lkey}", f"range [{a}, {a + n}) leaves the arena of {ctx.arena} pages"
        )


def slot_field(ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], *, new: bool = False) -> int:
    """``file``: a slot that is open (or, with ``new``, one that is not)."""
    s = int_field(ctx, d, "file", loc, 0, MAX_FILES - 1)
    if new and s in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is already open")
    if not new and s not in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is not open")
    return s


def allowed(ctx: Ctx, d: dict[str, Any], loc: str, keys: AbstractSet[str]) -> None:
    """Every key of ``d`` is one of ``keys``."""
    for k in d:
        if not isinstance(k, str) or k not in keys:
            raise ctx.err(f"{loc}.{k}", "unknown field")


SPEC = "vmalab.program.spec"
"""The key under which a field's ``Spec`` sits in its dataclass metadata."""


@dataclass
class OpInput:
    """The op object being read by ``OpBase.parse``: the parser state, the decoded object,
    its location, the open slots and the fields read so far."""

    ctx: Ctx
    d: dict[str, Any]
    loc: str
    files: set[int]
    got: dict[str, Any]


Bound = int | Callable[[OpInput], int]
"""A bound of an ``Int``: a number, or computed from the context and the fields read so far."""


class Spec(Mapping[str, "Spec"]):
    """How ``OpBase.parse`` reads one field of an op: given as the dataclass field's
    metadata (``key: int = field(metadata=Int(-1, 16))``), of which it is the one entry
    (``{SPEC: self}``). ``read`` validates the key (errors located at it) and returns the
    value; ``default`` is the field's default (None: the field is required). ``table`` is
    the name table of a name-valued field (``OpBase.name_tables``)."""

    table: dict[str, int] | None = None

    def __getitem__(self, key: str) -> Spec:
        if key != SPEC:
            raise KeyError(key)
        return self

    def __iter__(self) -> Iterator[str]:
        return iter((SPEC,))

    def __len__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return self is other  # not Mapping's: {SPEC: self} == {SPEC: other} would recurse

    __hash__ = object.__hash__

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        raise NotImplementedError(type(self).__name__)

    def commit(self, files: set[int], value: Any) -> None:
        """What the value does to the open slots once the whole op is valid (nothing)."""


def last_page(x: OpInput) -> int:
    """The arena's last page (an ``Int`` bound)."""
    return x.ctx.arena - 1


def arena_pages(x: OpInput) -> int:
    """The arena's size in pages (an ``Int`` bound)."""
    return x.ctx.arena


class Int(Spec):
    """An integer in [lo, hi] (``int_field``)."""

    def __init__(self, lo: Bound, hi: Bound) -> None:
        self.lo = lo
        self.hi = hi

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        lo = self.lo if isinstance(self.lo, int) else self.lo(x)
        hi = self.hi if isinstance(self.hi, int) else self.hi(x)
        return int_field(x.ctx, x.d, key, x.loc, lo, hi, default)


class Len(Int):
    """A page count from ``addr`` (read before it) that stays inside the arena."""

    def __init__(self) -> None:
        super().__init__(0, arena_pages)

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        n = super().read(x, key, default)
        in_arena(x.ctx, x.loc, key, x.got["addr"], n)
        return n


ADDR = Int(0, last_page)
"""An arena page."""
LEN = Len()
"""The length of the range from ``addr``."""


class Bool(Spec):
    """``true`` or ``false`` (``bool_field``; the field has a default)."""

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        return bool_field(x.ctx, x.d, key, x.loc, default)


class Names(Spec):
    """A list of distinct names from ``table`` (``names_field``; absent: the default, or
    no names for a field without one)."""

    def __init__(self, table: dict[str, int]) -> None:
        self.names = self.table = table

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        return names_field(x.ctx, x.d, key, x.loc, self.names, () if default is None else default)


class Choice(Spec):
    """One name from ``table``; anything else is the error ``unknown``, formatted with the
    value. With ``typed``, a value that is not a string is first ``str_field``'s error."""

    def __init__(self, table: dict[str, int], unknown: str, *, typed: bool = False) -> None:
        self.choices = self.table = table
        self.unknown = unknown
        self.typed = typed

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        v = str_field(x.ctx, x.d, key, x.loc, default) if self.typed else x.d.get(key, default)
        if not isinstance(v, str) or v not in self.choices:
            raise x.ctx.err(f"{x.loc}.{key}", self.unknown.format(short(v)))
        return v


class Prot(Spec):
    """``prot`` (``prot_field``)."""

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        return prot_field(x.ctx, x.d, x.loc, default)


class Slot(Spec):
    """``file``: an open slot (``slot_field``); with ``new``, one that is not open, which
    the op opens; with ``closes``, one that the op closes."""

    def __init__(self, *, new: bool = False, closes: bool = False) -> None:
        self.new = new
        self.closes = closes

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        return slot_field(x.ctx, x.d, x.loc, x.files, new=self.new)

    def commit(self, files: set[int], value: Any) -> None:
        if self.new:
            files.add(value)
        elif self.closes:
            files.discard(value)
