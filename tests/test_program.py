"""The oracle program format: parsing, validation with locations, round trips, and a
hypothesis fuzz of the parser (bad input is always a UserInputError, never a traceback)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab import program as P
from vmalab.errors import UserInputError


def prog(ops: list[Any], **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": "vmalab-program", "version": 1, "ops": ops}
    d.update(kw)
    return d


def err(d: Any, source: str = "prog.json") -> UserInputError:
    with pytest.raises(UserInputError) as e:
        P.from_json(d, source)
    return e.value


def test_minimal_program_and_defaults() -> None:
    p = P.from_json(prog([{"op": "mmap", "addr": 0, "len": 4}]))
    assert p.arena_pages == P.DEFAULT_ARENA_PAGES
    (m,) = p.ops
    assert isinstance(m, P.Mmap)
    assert (m.addr, m.len, m.prot, m.flags, m.file) == (0, 4, "rw", ("private", "anonymous"), None)


def test_every_op_parses_and_round_trips() -> None:
    ops = [
        {"op": "memfd", "file": 0, "name": "m", "flags": ["allow_sealing"]},
        {"op": "open", "file": 1, "name": "f.dat", "flags": ["rdwr", "creat", "trunc"]},
        {"op": "ftruncate", "file": 0, "pages": 16},
        {"op": "fallocate", "file": 0, "offset": 2, "len": 2, "mode": ["punch_hole", "keep_size"]},
        {"op": "pwrite", "file": 0, "offset": 0, "len": 2, "byte": 7},
        {"op": "pread", "file": 0, "offset": 0, "len": 2},
        {
            "op": "mmap",
            "addr": 0,
            "len": 8,
            "prot": "rw",
            "flags": ["shared"],
            "file": 0,
            "pgoff": 1,
        },
        {
            "op": "mmap",
            "addr": 10,
            "len": 8,
            "prot": "none",
            "flags": ["private", "anonymous", "populate", "noreserve"],
        },
        {"op": "mprotect", "addr": 10, "len": 2, "prot": "wr"},
        {"op": "mremap", "addr": 10, "old_len": 2, "new_len": 4, "maymove": True, "to": 30},
        {"op": "mremap", "addr": 30, "old_len": 4, "new_len": 2},
        {"op": "madvise", "addr": 0, "len": 8, "advice": "guard_install"},
        {"op": "mlock", "addr": 0, "len": 1},
        {"op": "munlock", "addr": 0, "len": 1},
        {"op": "read", "addr": 0, "len": 2},
        {"op": "write", "addr": 0, "len": 2, "byte": 255},
        {"op": "slab"},
        {
            "op": "fork",
            "child": [
                {"op": "read", "addr": 0, "len": 1},
                {"op": "fork", "child": [{"op": "exit"}]},
                {"op": "exit"},
            ],
        },
        {"op": "close", "file": 1},
        {"op": "munmap", "addr": 0, "len": 64},
        {"op": "exit"},
    ]
    p = P.from_json(prog(ops, arena_pages=64, comment="all ops"), "all.json")
    assert p.count_ops() == len(ops) + 4
    assert isinstance(p.ops[8], P.Mprotect) and p.ops[8].prot == "rw"  # normalised order
    again = P.loads(p.dumps(), "again.json")
    assert again == p
    assert json.loads(p.dumps())["ops"][7]["prot"] == ""


def test_repeat_expands_with_stride() -> None:
    p = P.from_json(
        prog(
            [
                {
                    "op": "repeat",
                    "count": 3,
                    "stride": 4,
                    "ops": [
                        {"op": "mmap", "addr": 1, "len": 2},
                        {
                            "op": "mremap",
                            "addr": 1,
                            "old_len": 2,
                            "new_len": 2,
                            "maymove": True,
                            "to": 20,
                        },
                    ],
                }
            ],
            arena_pages=64,
        )
    )
    assert [o.addr for o in p.ops if isinstance(o, P.Mmap)] == [1, 5, 9]
    assert [o.to for o in p.ops if isinstance(o, P.Mremap)] == [20, 24, 28]


@pytest.mark.parametrize(
    "ops,loc,words",
    [
        ([{"op": "mmap", "addr": 0, "len": -1}], "prog.json:ops[0].len", "out of range"),
        ([{"op": "mmap", "addr": 0}], "prog.json:ops[0].len", "missing"),
        ([{"op": "mmap", "addr": 250, "len": 10}], "prog.json:ops[0].len", "leaves the arena"),
        ([{"op": "mmap", "addr": 2**64, "len": 1}], "prog.json:ops[0].addr", "out of range"),
        ([{"op": "mmap", "addr": 1.5, "len": 1}], "prog.json:ops[0].addr", "integer"),
        ([{"op": "mmap", "addr": True, "len": 1}], "prog.json:ops[0].addr", "integer"),
        ([{"op": "mmap", "addr": 0, "len": 1, "prot": "rq"}], "prog.json:ops[0].prot", "rwx"),
        (
            [{"op": "mmap", "addr": 0, "len": 1, "flags": ["anonymous"]}],
            "prog.json:ops[0].flags",
            "shared",
        ),
        (
            [{"op": "mmap", "addr": 0, "len": 1, "flags": ["private", "bogus"]}],
            "prog.json:ops[0].flags[1]",
            "unknown name",
        ),
        (
            [{"op": "mmap", "addr": 0, "len": 1, "flags": ["private"]}],
            "prog.json:ops[0].file",
            "file slot",
        ),
        (
            [{"op": "mmap", "addr": 0, "len": 1, "flags": ["private"], "file": 3}],
            "prog.json:ops[0].file",
            "not open",
        ),
        (
            [{"op": "mmap", "addr": 0, "len": 1, "extra": 1}],
            "prog.json:ops[0].extra",
            "unknown field",
        ),
        ([{"op": "frobnicate"}], "prog.json:ops[0].op", "unknown op"),
        (
            [{"op": "madvise", "addr": 0, "len": 1, "advice": "guard"}],
            "prog.json:ops[0].advice",
            "unknown advice",
        ),
        (
            [{"op": "mremap", "addr": 0, "old_len": 1, "new_len": 2, "maymove": True}],
            "prog.json:ops[0].to",
            "destination",
        ),
        (
            [{"op": "mremap", "addr": 0, "old_len": 1, "new_len": 20, "maymove": True, "to": 250}],
            "prog.json:ops[0].new_len",
            "leaves the arena",
        ),
        ([{"op": "exit"}, {"op": "slab"}], "prog.json:ops[1]", "follow"),
        (
            [{"op": "fork", "child": [{"op": "munmap", "addr": 0, "len": 300}]}],
            "prog.json:ops[0].child[0].len",
            "out of range",
        ),
        (
            [
                {"op": "memfd", "file": 0},
                {"op": "close", "file": 0},
                {"op": "ftruncate", "file": 0, "pages": 1},
            ],
            "prog.json:ops[2].file",
            "not open",
        ),
        (
            [{"op": "memfd", "file": 0}, {"op": "memfd", "file": 0}],
            "prog.json:ops[1].file",
            "already open",
        ),
        (
            [{"op": "open", "file": 0, "name": "../etc/passwd"}],
            "prog.json:ops[0].name",
            "characters",
        ),
        (
            [{"op": "repeat", "count": 10**9, "stride": 1, "ops": [{"op": "slab"}]}],
            "prog.json:ops[0].count",
            "out of range",
        ),
        (
            [
                {
                    "op": "repeat",
                    "count": 150000,
                    "stride": 0,
                    "ops": [{"op": "slab"}, {"op": "slab"}],
                }
            ],
            "prog.json:ops[0]",
            "more than",
        ),
        (
            [
                {
                    "op": "repeat",
                    "count": 3,
                    "stride": 200,
                    "ops": [{"op": "mmap", "addr": 0, "len": 1}],
                }
            ],
            "prog.json:ops[0].ops[0].addr",
            "out of range",
        ),
        ("nope", "prog.json:ops", "list"),
    ],
)
def test_errors_name_their_location(ops: Any, loc: str, words: str) -> None:
    e = err(prog(ops))
    assert e.location == loc, e
    assert words in e.message


def test_top_level_errors() -> None:
    assert err([1]).location == "prog.json"
    assert err(prog([], version=2)).location == "prog.json:version"
    assert err({"version": 1}).location == "prog.json:ops"
    assert err(prog([], format="other")).location == "prog.json:format"
    assert err(prog([], arena_pages=0)).location == "prog.json:arena_pages"
    assert err(prog([], arena_pages=2**70)).location == "prog.json:arena_pages"
    assert err(prog([], observe={"probe": 1})).location == "prog.json:observe.probe"
    assert err(prog([], surprise=1)).location == "prog.json:surprise"


def test_deep_fork_nesting_is_refused() -> None:
    ops: list[Any] = [{"op": "slab"}]
    for _ in range(P.MAX_DEPTH + 1):
        ops = [{"op": "fork", "child": ops}]
    e = err(prog(ops))
    assert "deeper" in e.message and e.location.startswith("prog.json:ops[0].child[0]")


def test_loads_rejects_bad_json_and_deep_nesting() -> None:
    for text in [
        "",
        "{",
        "[" * 100000 + "]" * 100000,
        '{"version": 1, "ops": ' + "[" * 50000,
        b"\xff\xfe",
        "null",
        '{"version": 1, "ops": [' + "[" * 3000 + "]" * 3000 + "]}",
    ]:
        with pytest.raises(UserInputError) as e:
            P.loads(text, "x.json")
        assert e.value.location.startswith("x.json")


def test_load_missing_file() -> None:
    with pytest.raises(UserInputError) as e:
        P.load("/nonexistent/prog.json")
    assert e.value.location == "/nonexistent/prog.json"


def test_page_chars() -> None:
    u = P.uapi
    assert P.page_char(u.PM_SWAP | u.PM_GUARD_REGION) == "G"
    assert P.page_char(u.PM_PRESENT) == "A"
    assert P.page_char(u.PM_PRESENT | u.PM_FILE) == "F"
    assert P.page_char(u.PM_SWAP) == "S"
    assert P.page_char(0) == "."


# ----------------------------------------------------------------------------- hypothesis

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "op",
        "addr",
        "len",
        "prot",
        "flags",
        "file",
        "pgoff",
        "advice",
        "to",
        "maymove",
        "new_len",
        "old_len",
        "child",
        "name",
        "pages",
        "offset",
        "byte",
        "mode",
        "count",
        "stride",
        "ops",
        "dontunmap",
    ]
)
_ops = st.sampled_from(sorted(P._OPS) + ["repeat"])
_nums = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([0, 1, 255, 256, 2**31, 2**63 - 1, 2**63, 2**64, -1]),
)


@st.composite
def _op_like(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    d: dict[str, Any] = {"op": draw(_ops)}
    for k in draw(st.lists(_keys, max_size=6)):
        if k in ("child", "ops") and depth < 6:
            d[k] = draw(st.lists(_op_like(depth + 1), max_size=3))
        else:
            d[k] = draw(
                st.one_of(
                    _nums,
                    _json,
                    st.sampled_from(
                        ["rw", "none", "guard_install", "x", ["private", "anonymous"], ["shared"]]
                    ),
                )
            )
    return d


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_op_like(), max_size=6), st.one_of(st.just(1), _json), st.one_of(st.just(64), _nums)
)
def test_parser_never_crashes_on_op_soup(ops: list[Any], version: Any, arena: Any) -> None:
    d = {"version": version, "arena_pages": arena, "ops": ops}
    try:
        p = P.from_json(d, "fz.json")
    except UserInputError as e:
        assert e.location.startswith("fz.json")
        return
    assert P.loads(p.dumps()) == p  # whatever is accepted round-trips


@settings(max_examples=300, deadline=None)
@given(_json)
def test_parser_never_crashes_on_garbage(data: Any) -> None:
    try:
        P.from_json(data, "g.json")
    except UserInputError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_loads_never_crashes_on_bytes(text: Any) -> None:
    try:
        P.loads(text, "b.json")
    except UserInputError:
        pass


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**31))
def test_random_programs_are_valid_and_round_trip(seed: int) -> None:
    from vmalab.oracle import random_program

    p = random_program(seed)
    assert P.loads(p.dumps()) == p


# ----------------------------------------------------------------------------- oracle helpers


def test_shrink_finds_a_minimal_program() -> None:
    from vmalab.oracle import shrink

    ops: list[Any] = [{"op": "mmap", "addr": i, "len": 1} for i in range(10)]
    ops.insert(4, {"op": "madvise", "addr": 3, "len": 1, "advice": "guard_install"})
    ops.append(
        {
            "op": "fork",
            "child": [
                {"op": "read", "addr": 1, "len": 1},
                {"op": "write", "addr": 3, "len": 1},
                {"op": "read", "addr": 2, "len": 1},
            ],
        }
    )
    p = P.from_json(prog(ops, arena_pages=16))

    def fails(q: P.Program) -> bool:  # "diverges" iff an install precedes a child's write
        kinds = [o.op for o in q.ops]
        return "madvise" in kinds and any(
            isinstance(o, P.Fork) and any(isinstance(c, P.Write) for c in o.child) for o in q.ops
        )

    small = shrink(p, fails)
    assert [o.op for o in small.ops] == ["madvise", "fork"]
    fork = small.ops[1]
    assert isinstance(fork, P.Fork) and [c.op for c in fork.child] == ["write"]


def test_compare_reports_the_first_difference() -> None:
    from vmalab.oracle import compare

    p = P.from_json(
        prog(
            [
                {"op": "mmap", "addr": 0, "len": 2},
                {"op": "fork", "child": [{"op": "read", "addr": 0, "len": 1}]},
            ],
            arena_pages=4,
        )
    )
    st = {"vmas": [[0, 2, ["rd", "wr"]]], "pages": "..  "}
    fin = {"vmas": [[0, 2, ["rd", "wr"]]], "pages": "..  ", "probe": "oo  ", "data": "0000    "}
    child_k = {"results": [{"ret": "ok", "data": "00", "state": st}], "final": fin}
    child_m = {"results": [{"ret": "SIGSEGV", "fault": 0, "state": st}], "final": fin}
    k = P.Observation(
        [{"ret": 0, "state": st}, {"ret": "child", "child": child_k, "state": st}], fin
    )
    m = P.Observation(
        [{"ret": 0, "state": st}, {"ret": "child", "child": child_m, "state": st}], fin
    )
    assert compare(p.ops, k, k) is None
    d = compare(p.ops, k, m)
    assert d is not None and (d.where, d.what, d.kernel, d.model) == (
        "ops[1].child[0]",
        "ret",
        {"ret": "ok", "data": "00"},
        {"ret": "SIGSEGV", "fault": 0},
    )
    m2 = P.Observation(k.results, dict(fin, probe="oS  "))
    d2 = compare(p.ops, k, m2)
    assert d2 is not None and (d2.where, d2.what) == ("ops/final", "probe")
    m3 = P.Observation(k.results[:1], None, error="ValueError: boom")
    d3 = compare(p.ops, k, m3)
    assert d3 is not None and d3.what == "error" and "boom" in str(d3.model)


def test_cli_bad_program_is_one_line_and_exit_2(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from vmalab.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "ops": [{"op": "mmap", "addr": 0, "len": -3}]}')
    r = CliRunner().invoke(main, ["diff", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"vmalab: {bad}:ops[0].len: -3 is out of range [0, 256]"
    ]
    r = CliRunner().invoke(main, ["diff", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["fuzz", "--programs", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_seal_and_mlock_onfault() -> None:
    p = P.from_json(
        prog(
            [
                {"op": "memfd", "file": 0, "flags": ["allow_sealing"]},
                {"op": "seal", "file": 0, "seals": ["grow", "shrink"]},
                {"op": "mmap", "addr": 0, "len": 2},
                {"op": "mlock", "addr": 0, "len": 2, "onfault": True},
            ]
        )
    )
    assert p.ops[1] == P.Seal(0, ("grow", "shrink"))
    assert p.ops[3] == P.Mlock(0, 2, True)
    assert P.loads(p.dumps()) == p
    assert (
        err(
            prog([{"op": "memfd", "file": 0}, {"op": "seal", "file": 0, "seals": ["all"]}])
        ).location
        == "prog.json:ops[1].seals[0]"
    )


def test_an_op_class_without_parse_needs_a_spec_for_every_field() -> None:
    """OpBase.parse reads only declared fields: a field it could not read is refused when
    the class is made, and the op name stays free."""
    from vmalab.program.base import OpBase

    with pytest.raises(ValueError, match=r"Bogus\.count: no spec"):

        class Bogus(OpBase, op="bogus_no_spec"):
            count: int

    assert "bogus_no_spec" not in P.OPS


def test_an_op_name_is_registered_once() -> None:
    from vmalab.program.base import OpBase

    with pytest.raises(ValueError, match="'munmap' is missing or taken"):

        class Munmap2(OpBase, op="munmap"):
            pass

    assert P.OPS["munmap"] is P.Munmap


def test_specs_are_read_in_field_order_and_slots_change_only_when_valid() -> None:
    """The first bad field in field order is the error (file before name before flags), and
    an op that fails its whole-op check (open without an access mode) opens no slot."""
    from vmalab.program.fields import Ctx

    bad = [{"op": "open", "file": 99, "name": "", "flags": ["bogus"]}]
    with pytest.raises(UserInputError, match=r"ops\[0\]\.file: 99 is out of range"):
        P.from_json(prog(bad))
    bad = [{"op": "open", "file": 0, "name": "", "flags": ["bogus"]}]
    with pytest.raises(UserInputError, match=r"ops\[0\]\.name: expected 1-32"):
        P.from_json(prog(bad))
    files: set[int] = set()
    ctx = Ctx("t", 16)
    with pytest.raises(UserInputError, match="exactly one of rdonly"):
        P.Open.parse(ctx, {"op": "open", "file": 3, "name": "f", "flags": ["creat"]}, "o", files, 0)
    assert files == set()
    P.Open.parse(ctx, {"op": "open", "file": 3, "name": "f"}, "o", files, 0)
    assert files == {3}
    P.Close.parse(ctx, {"op": "close", "file": 3}, "o", files, 0)
    assert files == set()
