"""docs/program-format.md against the op classes of ``vmalab.program``.

Every op class is documented in the Operations table with exactly the fields it accepts,
and every name of its name-valued fields (flags, advice, seals...) appears in its row; the
table documents no op, field or name the classes do not know. The same for the top-level
keys of a program and for ``observe``.
"""

from __future__ import annotations

import os
import re

import pytest

from vmalab import program as P
from vmalab.program.parse import OBSERVE_KEYS, PROGRAM_KEYS, REPEAT_FIELDS

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "program-format.md")


def _section(title: str) -> str:
    with open(DOC) as f:
        text = f.read()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _rows(title: str) -> dict[str, list[str]]:
    """The first table of a section: first cell (unquoted) -> the other cells."""
    out: dict[str, list[str]] = {}
    for line in _section(title).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        out[cells[0].strip("`")] = cells[1:]
    return out


def _top_level(cell: str) -> str:
    """``cell`` without its parenthesised remarks (which hold defaults and names)."""
    out, depth = [], 0
    for c in cell:
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(c)
    return "".join(out)


def _fields(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", _top_level(cell)))


def _words(cell: str) -> set[str]:
    return {w for code in re.findall(r"`([^`]*)`", cell) for w in re.findall(r"[a-z_]+", code)}


OPS = _rows("Operations")


def test_every_op_is_documented_and_nothing_else() -> None:
    assert set(OPS) == set(P.OPS) | {"repeat"}


@pytest.mark.parametrize("name", sorted(P.OPS))
def test_op_fields_are_documented(name: str) -> None:
    cls = P.OPS[name]
    assert _fields(OPS[name][0]) == set(cls.fields()), f"{name}: fields in the table"


@pytest.mark.parametrize(
    "name,field", sorted((n, f) for n, c in P.OPS.items() for f in c.name_tables)
)
def test_op_names_are_documented(name: str, field: str) -> None:
    cls = P.OPS[name]
    assert field in cls.fields()
    missing = set(cls.name_tables[field]) - _words(" ".join(OPS[name]))
    assert not missing, f"{name}.{field}: names not in the table: {sorted(missing)}"


def test_repeat_fields() -> None:
    assert _fields(OPS["repeat"][0]) == set(REPEAT_FIELDS)


def test_program_keys() -> None:
    keys = _rows("File")
    assert set(keys) == set(PROGRAM_KEYS)
    assert set(OBSERVE_KEYS) <= _words(keys["observe"][1])
