"""Argument values of strace lines: numbers, flag and signal names, strings, structs and
``-y`` fd paths, as ``strace -X raw`` (or its symbolic form) prints them.

Split from vmalab.trace.parse, which splits a line into its name, arguments and result;
the replay's handlers read the arguments with these.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Final

from vmalab import uapi

_MAP_HUGE_SHIFT: Final = 26
_CLONE = {
    "CLONE_VM": 0x100,
    "CLONE_FS": 0x200,
    "CLONE_FILES": 0x400,
    "CLONE_SIGHAND": 0x800,
    "CLONE_PIDFD": 0x1000,
    "CLONE_PTRACE": 0x2000,
    "CLONE_VFORK": 0x4000,
    "CLONE_PARENT": 0x8000,
    "CLONE_THREAD": 0x10000,
    "CLONE_NEWNS": 0x20000,
    "CLONE_SYSVSEM": 0x40000,
    "CLONE_SETTLS": 0x80000,
    "CLONE_PARENT_SETTID": 0x100000,
    "CLONE_CHILD_CLEARTID": 0x200000,
    "CLONE_DETACHED": 0x400000,
    "CLONE_UNTRACED": 0x800000,
    "CLONE_CHILD_SETTID": 0x1000000,
    "CLONE_NEWCGROUP": 0x2000000,
    "CLONE_NEWUTS": 0x4000000,
    "CLONE_NEWIPC": 0x8000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_IO": 0x80000000,
    "CLONE_CLEAR_SIGHAND": 0x100000000,
    "CLONE_INTO_CGROUP": 0x200000000,
    "CLONE_NEWTIME": 0x80,
}
CLONE_VM = _CLONE["CLONE_VM"]
CLONE_VFORK = _CLONE["CLONE_VFORK"]
CLONE_THREAD = _CLONE["CLONE_THREAD"]
CLONE_FILES = _CLONE["CLONE_FILES"]
_SIGNALS = {
    f"SIG{n}": i
    for i, n in enumerate(
        "HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD "
        "CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS".split(),
        1,
    )
}
_EXTRA = {
    "O_NOCTTY": 0o400,
    "O_NONBLOCK": 0o4000,
    "O_NDELAY": 0o4000,
    "O_DSYNC": 0o10000,
    "O_ASYNC": 0o20000,
    "O_DIRECT": 0o40000,
    "O_LARGEFILE": 0o100000,
    "O_DIRECTORY": 0o200000,
    "O_NOFOLLOW": 0o400000,
    "O_NOATIME": 0o1000000,
    "O_PATH": 0o10000000,
    "O_SYNC": 0o4010000,
    "O_TMPFILE": 0o20200000,
    "AT_FDCWD": -100,
    "MAP_FILE": 0,
    "MAP_HUGE_2MB": 21 << 26,
    "MAP_HUGE_1GB": 30 << 26,
    "MAP_HUGE_SHIFT": _MAP_HUGE_SHIFT,
    "MLOCK_ONFAULT": 1,
    "F_DUPFD": 0,
    "F_DUPFD_CLOEXEC": 1030,
}


def _symbols() -> dict[str, int]:
    """Every symbolic constant strace may print for an argument the replay reads."""
    table: dict[str, int] = {}
    for k, v in vars(uapi).items():
        if k.isupper() and isinstance(v, int) and not k.startswith("PM_"):
            table[k] = v
    table.update(_CLONE)
    table.update(_SIGNALS)
    table.update(_EXTRA)
    return table


SYMBOLS = _symbols()
_COMMENT: Final = re.compile(r"/\*.*?\*/", re.S)
_INTLIT = re.compile(r"^[-+]?(?:0x[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


class ArgError(ValueError):
    """An argument text that cannot be read as the number the call needs."""


def strip_fdpath(text: str) -> tuple[str, str | None]:
    """Split ``3</usr/lib/libc.so.6>`` into ``("3", "/usr/lib/libc.so.6")``.

    strace 6.x marks an unlinked file as ``5</dev/shm/sem.x>(deleted)``; the path then
    ends in `` (deleted)``, as /proc/PID/maps shows it.
    """
    i = text.find("<")
    if i > 0 and text[:i].lstrip("-").isdigit():
        if text.endswith(">"):
            return text[:i], unescape(text[i + 1 : -1])
        if text.endswith(">(deleted)"):
            return text[:i], unescape(text[i + 1 : -len(">(deleted)")]) + " (deleted)"
    return text, None


_ESCAPE: Final = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.S)
_SIMPLE_ESCAPES: Final = {
    "n": "\n",
    "t": "\t",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "?": "?",
}


def _unescape_one(m: re.Match[str]) -> str:
    e = m.group(1)
    if e[0] == "x" and len(e) == 3:
        return chr(int(e[1:], 16))
    if e[0] in "01234567":
        return chr(int(e, 8))
    return _SIMPLE_ESCAPES.get(e, m.group(0))


def unescape(s: str) -> str:
    """Undo strace's C-style escapes in a path or string (``\\x20``, ``\\040``,
    ``\\n``, ``\\\\``); a backslash before anything else stays as it is (Python's
    ``unicode_escape`` warned about those, and strace writes none)."""
    if "\\" not in s:
        return s
    return _ESCAPE.sub(_unescape_one, s)


def to_int(text: str) -> int:
    """Read a numeric argument: ``NULL``, decimal, hex, octal, ``A|B|0x10``, ``1<<12``.

    Symbolic names come from :data:`SYMBOLS`; a name strace could not decode appears as
    ``0x66 /* MADV_??? */`` and is read as its number. Raises :class:`ArgError`.

    A plain ``0x`` hex or decimal literal (all of a ``-X raw`` log's numbers, and every
    address) is read directly; anything else goes through the full reader.
    """
    if text.isascii() and text.isalnum():
        v = -1
        if text.startswith("0x"):
            if len(text) > 2:
                try:
                    v = int(text, 16)
                except ValueError:
                    v = -1
        elif text.isdigit() and (text[0] != "0" or len(text) == 1):
            v = int(text)
        if 0 <= v < 1 << 64 and len(text) <= 200:
            return v
    return _to_int(text)


@functools.lru_cache(maxsize=4096)
def _to_int(text: str) -> int:
    """:func:`to_int`'s full reader (comments, -y paths, ``|``, ``<<``, names)."""
    t = _COMMENT.sub("", text).strip()
    t, _ = strip_fdpath(t)
    if not t:
        raise ArgError("empty value")
    if t == "NULL":
        return 0
    if len(t) > 200:
        raise ArgError("value too long")
    total = 0
    for part in t.split("|"):
        part = part.strip()
        if "<<" in part:
            a, _, b = part.partition("<<")
            total |= _atom(a.strip()) << min(_atom(b.strip()), 64)
        else:
            total |= _atom(part)
    if total >= 1 << 64 or total < -(1 << 63):
        raise ArgError("value out of range")
    return total


def _atom(part: str) -> int:
    """One ``|``-separated component of a flags value."""
    if _INTLIT.match(part):
        if part.lstrip("+-").startswith("0x"):
            return int(part, 16)
        if part.lstrip("+-") not in ("0",) and part.lstrip("+-").startswith("0"):
            return int(part, 8)
        return int(part, 10)
    v = SYMBOLS.get(part)
    if v is None:
        raise ArgError(f"unknown constant {part!r}")
    return v


def to_str(text: str) -> str:
    """Read a string argument (``"/usr/lib/x.so"``, possibly followed by ``...``)."""
    t = text.strip()
    if t.startswith('"'):
        end = t.rfind('"')
        if end <= 0:
            raise ArgError("unterminated string")
        return unescape(t[1:end])
    raise ArgError(f"not a string: {t[:40]!r}")


def struct_fields(text: str) -> dict[str, str]:
    """Read ``{flags=..., stack=...}`` (clone3's struct) into field texts.

    Only the first brace group counts (``{...} => {parent_tid=[5]}`` reads the first).
    """
    t = text.strip()
    if not t.startswith("{"):
        raise ArgError("not a struct")
    depth = 0
    end = -1
    for i, c in enumerate(t):
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        raise ArgError("unterminated struct")
    out: dict[str, str] = {}
    for part, _ in _split_top(t[1:end]):
        k, eq, v = part.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def _split_top(text: str) -> Iterator[tuple[str, int]]:
    """Split at top-level commas (used for struct fields)."""
    depth = 0
    start = 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            yield text[start:i].strip(), start
            start = i + 1
    if text[start:].strip():
        yield text[start:].strip(), start


def keyword_arg(args: list[str], key: str) -> str | None:
    """The value of a ``key=value`` argument (clone's ``flags=...``), if present."""
    for a in args:
        k, eq, v = a.partition("=")
        if eq and k.strip() == key:
            return v.strip()
    return None
