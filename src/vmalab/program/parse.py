"""Parsing and validation: ``from_json``, ``loads``, ``load``.

The op-independent part lives here (the program object, op lists, ``repeat`` expansion,
the op budget); each op class validates its own fields (``OpBase.parse``).
"""

from __future__ import annotations

import json
from typing import Any

from vmalab.errors import UserInputError
from vmalab.program.base import OPS, OpBase
from vmalab.program.core import Program
from vmalab.program.fields import Ctx, allowed, bool_field, int_field, short
from vmalab.program.names import (
    DEFAULT_ARENA_PAGES,
    FORMAT,
    MAX_ARENA_PAGES,
    MAX_DEPTH,
    MAX_OPS,
    VERSION,
)
from vmalab.program.observe import Observe

PROGRAM_KEYS = (
    "format",
    "version",
    "arena_pages",
    "hugetlb_pool",
    "ops",
    "observe",
    "comment",
    "meta",
)
"""The keys of a program object."""
MAX_HUGETLB_POOL = 1 << 16
OBSERVE_KEYS = ("each", "probe", "contents")
"""The keys of ``observe``."""
REPEAT_FIELDS = ("count", "stride", "ops")
"""The fields of ``repeat`` (expanded while parsing: it has no op class)."""
ADDRESS_FIELDS = ("addr", "to")
"""The fields holding arena pages, which ``repeat`` moves by its stride."""


def parse_op(ctx: Ctx, d: Any, loc: str, files: set[int], depth: int) -> list[OpBase]:
    """One op object (a ``repeat`` gives its expansion)."""
    if not isinstance(d, dict):
        raise ctx.err(loc, f"expected an object, got {short(d)}")
    kind = d.get("op")
    if kind == "repeat":
        allowed(ctx, d, loc, {"op", *REPEAT_FIELDS})
        return _parse_repeat(ctx, d, loc, files, depth)
    if not isinstance(kind, str) or kind not in OPS:
        raise ctx.err(
            f"{loc}.op", f"unknown op {short(kind)} (one of {', '.join(sorted(OPS))}, repeat)"
        )
    cls = OPS[kind]
    allowed(ctx, d, loc, cls.accepts)
    ctx.budget -= 1
    if ctx.budget < 0:
        raise ctx.err(loc, f"more than {MAX_OPS} operations")
    return [cls.parse(ctx, d, loc, files, depth)]


def _parse_repeat(
    ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int
) -> list[OpBase]:
    if depth >= MAX_DEPTH:
        raise ctx.err(loc, f"repeat nested deeper than {MAX_DEPTH}")
    count = int_field(ctx, d, "count", loc, 0, MAX_OPS)
    stride = int_field(ctx, d, "stride", loc, 0, ctx.arena)
    body = d.get("ops")
    if not isinstance(body, list):
        raise ctx.err(f"{loc}.ops", "expected a list of operations")
    out: list[OpBase] = []
    for i in range(count):
        if ctx.budget - len(body) < 0:
            raise ctx.err(loc, f"more than {MAX_OPS} operations")
        for j, raw in enumerate(body):
            r = _shift(raw, i * stride)
            out += parse_op(ctx, r, f"{loc}.ops[{j}]", files, depth + 1)
    return out


def _shift(raw: Any, delta: int) -> Any:
    """``raw`` with its arena addresses (``ADDRESS_FIELDS``) moved by ``delta`` pages."""
    if not isinstance(raw, dict) or delta == 0:
        return raw
    r = dict(raw)
    for k in ADDRESS_FIELDS:
        v = r.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            r[k] = v + delta
    return r


def parse_ops(ctx: Ctx, raw: Any, loc: str, files: set[int], depth: int) -> tuple[OpBase, ...]:
    """A list of op objects; nothing may follow a terminal op (``exit``)."""
    if not isinstance(raw, list):
        raise ctx.err(loc, f"expected a list of operations, got {short(raw)}")
    out: list[OpBase] = []
    for i, d in enumerate(raw):
        ops = parse_op(ctx, d, f"{loc}[{i}]", files, depth)
        if out and out[-1].terminal:
            raise ctx.err(f"{loc}[{i}]", "nothing may follow 'exit'")
        out += ops
    return tuple(out)


def from_json(data: Any, source: str = "program") -> Program:
    """Validate decoded JSON ``data`` and build a ``Program``.

    Raises ``UserInputError`` whose location is ``SOURCE:ops[3].len`` style.
    """
    if not isinstance(data, dict):
        raise UserInputError(source, "a program is a JSON object")
    ctx = Ctx(source, DEFAULT_ARENA_PAGES)
    allowed(ctx, data, "", set(PROGRAM_KEYS))
    if data.get("format", FORMAT) != FORMAT:
        raise ctx.err("format", f"expected {FORMAT!r}")
    v = data.get("version")
    if v != VERSION or isinstance(v, bool):
        raise ctx.err("version", f"unsupported version {short(v)} (this is version {VERSION})")
    ctx.arena = int_field(ctx, data, "arena_pages", "", 1, MAX_ARENA_PAGES, DEFAULT_ARENA_PAGES)
    pool = (
        int_field(ctx, data, "hugetlb_pool", "", 0, MAX_HUGETLB_POOL, 0)
        if "hugetlb_pool" in data
        else None
    )
    obs = data.get("observe", {})
    if not isinstance(obs, dict):
        raise ctx.err("observe", "expected an object")
    allowed(ctx, obs, "observe", set(OBSERVE_KEYS))
    observe = Observe(*(bool_field(ctx, obs, k, "observe", True) for k in OBSERVE_KEYS))
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        raise ctx.err("comment", "expected a string")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ctx.err("meta", "expected an object")
    if "ops" not in data:
        raise ctx.err("ops", "missing")
    ops = parse_ops(ctx, data["ops"], "ops", set(), 0)
    return Program(ops, ctx.arena, observe, comment, meta, pool)


def loads(text: str | bytes, source: str = "program") -> Program:
    """Parse program text; every problem (JSON syntax included) is a ``UserInputError``."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserInputError(source, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserInputError(source, f"not valid JSON: {e}") from None
    try:
        return from_json(data, source)
    except RecursionError:
        raise UserInputError(source, "program nested too deeply") from None


def load(path: str) -> Program:
    """Read and parse the program file ``path``."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise UserInputError(path, e.strerror or str(e)) from None
    return loads(text, path)
