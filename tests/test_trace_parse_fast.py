"""parse._fast_fields (string methods) never answers differently from the _FAST regex."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from vmalab.trace import parse

FIXTURES = Path(__file__).parent / "fixtures"


def _regex(raw: str) -> tuple[str | None, ...] | None:
    m = parse._FAST.match(raw)
    return None if m is None else m.groups()


def _agrees(raw: str) -> None:
    fast = parse._fast_fields(raw)
    if fast is not None:
        assert fast == _regex(raw), raw


_PIECES = st.sampled_from(
    [
        "11377",
        " ",
        "  ",
        "\t",
        "1796410327.796388",
        "12:00:01.5",
        ".",
        "mprotect",
        "mmap",
        "_x9",
        "9x",
        "(",
        ")",
        "0x7f9d37242000",
        "4096",
        ", ",
        ",",
        " = ",
        "=",
        "0x",
        "0x3",
        "0xg",
        "-1",
        "ENOMEM",
        '"',
        "<",
        ">",
        "/",
        "{",
        "[",
        "\n",
        "\r\n",
        "\x0b",
        "\x1c",
        "\u00a0",
        "\u0663",
        "é",
    ]
)


@given(st.lists(_PIECES, max_size=14).map("".join))
def test_fast_fields_agree_with_the_regex(raw: str) -> None:
    _agrees(raw)


@given(
    st.integers(0, 1 << 40),
    st.sampled_from(["mmap", "mprotect", "madvise", "munmap", "brk"]),
    st.lists(st.integers(0, 1 << 48).map(hex), max_size=6),
    st.sampled_from(["0", "0x7f00", "12", "-1 ENOMEM (Cannot allocate memory)", "?"]),
    st.sampled_from(["\n", "", "  \n", "\r\n"]),
)
def test_common_lines(pid: int, name: str, args: list[str], ret: str, end: str) -> None:
    raw = f"{pid} 1796410327.{pid % 1000000:06d} {name}({', '.join(args)}) = {ret}{end}"
    _agrees(raw)
    if ret[0] != "-" and ret != "?":
        assert parse._fast_fields(raw) is not None


def _fixture_lines() -> list[str]:
    out: list[str] = []
    for f in sorted(FIXTURES.rglob("*")):
        if f.is_file() and f.suffix in ("", ".strace", ".trace", ".txt", ".log"):
            try:
                out += f.read_text().splitlines(keepends=True)
            except (UnicodeDecodeError, OSError):
                continue
    return out


def test_every_fixture_line() -> None:
    lines = _fixture_lines()
    for raw in lines:
        _agrees(raw)
    assert lines


def _same_as_general(raw: str, need: frozenset[str] | None = None) -> None:
    if need is not None and parse._fast_fields(raw) is not None:
        return  # the success fast path keeps every call's arguments (need_args or not)
    try:
        fast = parse.parse_one(7, raw, {}, need)
    except parse.TraceSyntaxError as e:
        fast = ("error", str(e))  # type: ignore[assignment]
    try:
        slow = parse._parse_general(7, raw, {}, need)
    except parse.TraceSyntaxError as e:
        slow = ("error", str(e))  # type: ignore[assignment]
    assert fast == slow, raw


@given(st.lists(_PIECES, max_size=14).map("".join))
def test_parse_one_agrees_with_the_general_reader(raw: str) -> None:
    _same_as_general(raw)
    _same_as_general(raw, frozenset({"mprotect"}))


@given(
    st.integers(0, 1 << 33),
    st.sampled_from(["mmap", "mprotect", "madvise", "mremap", "lseek", "read"]),
    st.lists(st.integers(0, 1 << 48).map(hex), max_size=6),
    st.sampled_from(
        [
            "-1 ENOMEM (Cannot allocate memory)",
            "-1 EFAULT (Bad address)",
            "-1 EINVAL",
            "-1 E2BIG (x)",
            "-1 ENOMEMx (y)",
            "-1 Enomem (y)",
            "-1 E (y)",
            "-1 ERESTART_RESTARTBLOCK (Interrupted by signal)",
            "-1  ENOMEM (two spaces)",
            "-1 (errno 12)",
            "-1",
            "0",
            "0x10",
        ]
    ),
    st.sampled_from(["\n", "", "  \n", "\r\n", " \t"]),
)
def test_failed_lines(pid: int, name: str, args: list[str], ret: str, end: str) -> None:
    raw = f"{pid} 1796410327.{pid % 1000000:06d} {name}({', '.join(args)}) = {ret}{end}"
    for need in (None, frozenset({"mprotect", "madvise"})):
        _same_as_general(raw, need)
    if ret.startswith("-1 ENOMEM (") and pid <= 1 << 31:
        assert parse._fast_failed(raw) is not None


def test_every_fixture_line_parses_as_the_general_reader_does() -> None:
    for raw in _fixture_lines():
        if not raw.startswith(("+++", "---", " ")) and "<unfinished" not in raw:
            _same_as_general(raw)
