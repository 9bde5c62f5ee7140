"""args.to_int's direct read of plain literals agrees with its full reader."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vmalab.trace import args


def _read(fn: object, text: str) -> object:
    try:
        return fn(text)  # type: ignore[operator]
    except args.ArgError:
        return "ArgError"


_TEXT = st.one_of(
    st.text(alphabet="0123456789abcdefxX_ |<NUL", max_size=24),
    st.integers(min_value=-(1 << 65), max_value=1 << 65).map(str),
    st.integers(min_value=0, max_value=1 << 66).map(hex),
    st.text(max_size=6),
)


@given(_TEXT)
def test_direct_read_matches_the_full_reader(text: str) -> None:
    full = args._to_int.__wrapped__  # the reader without its cache
    assert _read(args.to_int, text) == _read(full, text)


def test_plain_literals() -> None:
    assert args.to_int("0x7f9d38470000") == 0x7F9D38470000
    assert args.to_int("4096") == 4096
    assert args.to_int("017") == 0o17
    assert args.to_int("0xffffffffffffffff") == (1 << 64) - 1
    for bad in ("0x", "0x10000000000000000", "0x1_0", "0x\u0663"):
        assert _read(args.to_int, bad) == "ArgError"
