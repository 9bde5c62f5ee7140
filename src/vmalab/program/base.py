"""The op base class and the op registry.

Every operation of the program format is one subclass of ``OpBase`` that names its op
(``class Munlock(RangeOp, op="munlock")``): ``OpBase.__init_subclass__`` makes it a frozen
dataclass and registers it (``register``). The class owns everything about its op:

* its fields (the dataclass fields; ``op``, added by ``__init_subclass__``, is the op's
  name in the JSON format);
* ``parse``: validation of the decoded JSON object (errors located at the field): by
  default each field's ``Spec`` (its dataclass metadata, ``vmalab.program.fields``) reads
  it, in field order, then ``check`` sees the whole op; an op with rules of its own
  (``mmap``, ``mremap``, ``fork``) writes its own ``parse``;
* ``to_json``: the on-disk form (defaults omitted);
* ``run``: what the interpreter does, on any ``Machine`` (the model's ``ModelMachine`` or
  the live runner's ``LiveMachine``, both of which implement the syscalls);
* ``gen_rules``: how the random program generator (``vmalab.oracle.generate``) draws it.

Adding an op is writing one such class in ``vmalab/program/ops/`` (plus, for a new
syscall, the ``Machine`` method on both sides) and documenting it in docs/program-format.md
(``tests/test_program_doc.py`` checks the documentation against the classes).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, dataclass_transform

from vmalab.program.fields import ADDR, LEN, SPEC, Ctx, OpInput, Spec

if TYPE_CHECKING:
    import random

    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner


class GenState(Protocol):
    """What an op's generator may use: the random generator and what was built so far
    (implemented by ``vmalab.oracle.generate.Gen``)."""

    r: random.Random
    arena: int
    files: list[int]
    moves: list[tuple[int, int, int]]
    maps: list[tuple[int, int]]
    memlock: bool
    lockall: bool
    segs: list[tuple[int, int]]
    """shm segments made so far, by segment slot: (key, or -1 - slot if private; pages)."""
    attaches: list[int]
    uffd: bool
    uffd_api: bool
    devzero: bool

    def prot(self) -> str: ...
    def op(self, depth: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GenRule:
    """One entry of the generator's draw table.

    ``kind`` labels the entry (an op name, or a variant such as ``beside``), ``pos`` is its
    place in the table (the table is sorted by it: the order, like the weights, decides
    which program a seed draws, so entries keep the places they had before the op classes
    and seeds keep drawing the same programs), ``weight(g, depth)`` its weight and
    ``make(g, depth, addr, len)`` the op object; ``addr``/``len`` is a random arena range
    drawn for every entry."""

    kind: str
    pos: float
    weight: Callable[[GenState, int], float]
    make: Callable[[GenState, int, int, int], dict[str, Any]]


_T = TypeVar("_T", bound="OpBase")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class OpBase:
    """Base of every op class (see the module docstring)."""

    op: str
    terminal: ClassVar[bool] = False
    """Nothing may follow this op in its list (``exit``)."""
    gen_rules: ClassVar[tuple[GenRule, ...]] = ()
    name_tables: ClassVar[dict[str, dict[str, int]]] = {}
    """The fields whose values are names, with their name tables (documentation check);
    ``register`` adds those of the fields' specs."""
    specs: ClassVar[tuple[tuple[str, Spec, Any], ...]] = ()
    """Each field that ``parse`` reads: its name, spec and default (None: required); set
    by ``register``."""
    commits: ClassVar[tuple[tuple[str, Spec], ...]] = ()
    """The specs among them that change the open slots (``Spec.commit``)."""
    accepts: ClassVar[frozenset[str]] = frozenset()
    """The keys of the op's object: ``op`` and ``fields()`` (set by ``register``)."""

    def __init_subclass__(cls, op: str | None = None, **kw: Any) -> None:
        """Make the subclass a frozen dataclass; one that names its ``op`` gets the last
        field ``op`` with that name as default and is registered."""
        super().__init_subclass__(**kw)
        if op is not None:
            cls.__annotations__ = {**inspect.get_annotations(cls), "op": "str"}
            cls.op = op
        dataclass(frozen=True)(cls)
        if op is not None:
            register(cls)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The JSON keys this op accepts besides ``op``."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "op")  # type: ignore[arg-type]

    @classmethod
    def parse(
        cls: type[_T], ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int
    ) -> _T:
        """Validate the decoded object ``d`` (its keys are known fields) and build the op.
        ``files`` is the set of open file slots (updated by ops that open or close one)."""
        got: dict[str, Any] = {}
        x = OpInput(ctx, d, loc, files, got)
        for name, spec, default in cls.specs:
            got[name] = spec.read(x, name, default)
        o = cls(**got)
        o.check(ctx, loc)
        for name, spec in cls.commits:
            spec.commit(files, got[name])
        return o

    def check(self, ctx: Ctx, loc: str) -> None:
        """The rules between fields, once each is valid (none by default)."""

    def children(self) -> tuple[OpBase, ...]:
        """The ops nested in this one (a fork's child body); none by default."""
        return ()

    def to_json(self) -> dict[str, Any]:
        """The op in the on-disk format (defaults omitted)."""
        d: dict[str, Any] = {"op": self.op}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "op":
                continue
            v = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and v == f.default:
                continue
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def run(self, r: Runner, obs: Observation) -> dict[str, Any] | None:
        """Run the op through ``r`` (its machine, arena and file slots); return the result
        object (None: ``{"ret": 0}``). Failures raise OSError with the errno."""
        raise NotImplementedError(type(self).__name__)


class RangeOp(OpBase):
    """Base of the ops whose fields begin with an arena range ``addr``, ``len``."""

    addr: int = field(metadata=ADDR)
    len: int = field(metadata=LEN)


OPS: dict[str, type[OpBase]] = {}
"""Every op class by its name in the format, in registration order."""

_C = TypeVar("_C", bound=type[OpBase])


def register(cls: _C) -> _C:
    """Add an op class (a dataclass) to ``OPS`` under its ``op`` default, and collect its
    fields' specs (``OpBase.specs``, ``OpBase.name_tables``); ``OpBase.__init_subclass__``
    calls it for every class that names its op. An op class that keeps ``OpBase.parse``
    must give every field a spec."""
    name = cls.__dataclass_fields__["op"].default  # type: ignore[attr-defined]
    if not isinstance(name, str) or name in OPS:
        raise ValueError(f"{cls.__name__}: op name {name!r} is missing or taken")
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = f.metadata.get(SPEC)
        if spec is not None:
            specs.append((f.name, spec, None if f.default is dataclasses.MISSING else f.default))
        elif f.name != "op" and cls.parse.__func__ is OpBase.parse.__func__:  # type: ignore[attr-defined]
            raise ValueError(f"{cls.__name__}.{f.name}: no spec, and no parse of its own")
    cls.specs = tuple(specs)
    cls.commits = tuple((n, s) for n, s, _ in specs if type(s).commit is not Spec.commit)
    cls.accepts = frozenset({"op", *cls.fields()})
    tables = {n: s.table for n, s, _ in specs if s.table is not None}
    if tables:
        cls.name_tables = {**cls.name_tables, **tables}
    OPS[name] = cls
    return cls


def op_to_json(o: OpBase) -> dict[str, Any]:
    """One operation in the on-disk format (defaults omitted)."""
    return o.to_json()


def const(w: float) -> Callable[[GenState, int], float]:
    """A constant generator weight."""
    return lambda g, depth: w


def range_rule(kind: str, pos: float, weight: float) -> GenRule:
    """A generator entry that draws the op ``kind`` on the random arena range alone
    (``{"op": kind, "addr": a, "len": n}``), at a constant weight."""
    return GenRule(
        kind, pos, const(weight), lambda g, depth, a, n: {"op": kind, "addr": a, "len": n}
    )
