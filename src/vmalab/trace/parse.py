"""A streaming parser for strace logs.

Understands the output of ``strace -f -ttt -X raw -y -o FILE`` and its variants: with or
without ``-f`` (a leading pid, or ``[pid N]``), ``-t``/``-tt``/``-ttt``/``-r`` timestamps,
``-T`` durations, ``-i`` instruction pointers, ``-n`` syscall numbers, ``-k`` stack frames
(skipped), ``-y``/``-yy`` fd paths (``3</usr/lib/libc.so.6>``), raw (``-X raw``) or
symbolic flags. One file per pid (``-ff``) is not read as a whole: replay each file.
``<unfinished ...>`` and ``<... NAME resumed>`` halves are joined per pid;
a call is reported at the line where it completed.

:func:`parse_lines` is a generator: it holds only the unfinished halves (at most one per
pid), so memory stays constant however long the log is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final


class TraceSyntaxError(ValueError):
    """A line of an strace log that is not in any format strace writes.

    ``lineno`` is 1-based; the message names it ("line N: ...").
    """

    def __init__(self, lineno: int, message: str) -> None:
        self.lineno = lineno
        self.reason = message
        super().__init__(f"line {lineno}: {message}")


@dataclass(slots=True)
class Syscall:
    """One completed system call of the log.

    ``args`` are the top-level argument texts (comments and -y paths kept); ``ret`` is the
    return value text (``"0x7f..."``, ``"0"``, ``"?"``) or None when strace printed none;
    ``errno`` is the error name of a failed call (``"ENOMEM"``) or None. ``lineno`` is the
    line where the call completed and ``start_lineno`` where it began.
    """

    lineno: int
    start_lineno: int
    pid: int | None
    name: str
    args: list[str]
    ret: str | None
    errno: str | None
    extra: str = ""

    @property
    def failed(self) -> bool:
        """Whether the call returned an error (``= -1 EFOO`` or ``= ? ERESTART...``)."""
        return self.errno is not None


@dataclass(slots=True)
class TaskExit:
    """A ``+++ exited with N +++`` or ``+++ killed by SIG +++`` line: the task is gone."""

    lineno: int
    pid: int | None
    how: str


@dataclass(slots=True)
class PageFault:
    """A ``--- PAGE_FAULT {address=..., access=..., mode=...} ---`` line of a recording.

    vmalab's own line form (docs/recording.md): one page fault of task ``pid``, as the
    exceptions:page_fault_user / page_fault_kernel tracepoints saw it. ``access`` is
    ``"read"``, ``"write"`` or ``"exec"``; ``mode`` is ``"user"`` or ``"kernel"`` (the
    kernel touching user memory inside a system call).
    """

    lineno: int
    pid: int | None
    address: int
    access: str
    mode: str


Event = Syscall | TaskExit | PageFault

_FAULT: Final = re.compile(
    r"--- PAGE_FAULT \{address=(?P<addr>0x[0-9a-fA-F]+), access=(?P<access>read|write|exec), "
    r"mode=(?P<mode>user|kernel)(?:, [a-z_]+=[^,}]*)*\} ---\s*$"
)

_PREFIX: Final = re.compile(
    r"^\s*(?:\[pid\s+(?P<bpid>\d+)\]\s*|(?P<pid>\d+)\s+)?"
    r"(?:(?P<ts>\d+\.\d+|\d\d:\d\d:\d\d(?:\.\d+)?)\s+)?"
    r"(?:\[\s*\d+\]\s+|\[[0-9a-f?]{8,16}\]\s+){0,2}"  # -n syscall number, -i pointer
)
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESUMED: Final = re.compile(r"<\.\.\. (?P<name>[A-Za-z_][A-Za-z0-9_]*) resumed>\s?")
_UNFINISHED: Final = " <unfinished ...>"
_EXIT: Final = re.compile(
    r"\+\+\+ (?P<how>exited with -?\d+|killed by [A-Z0-9+]+.*?|"
    r"superseded by execve in pid \d+) \+\+\+\s*$"
)
_RET: Final = re.compile(
    r"^\s*=\s*(?P<ret>-?(?:0x[0-9a-fA-F]+|\d+)|\?)"
    r"(?P<fdpath><.*>)?"
    r"(?:\s+(?P<err>E[A-Z0-9_]+|\(errno \d+\)|\([A-Z_]+ \d+\)))?"
    r"(?P<rest>.*)$"
)
_MAX_LINE: Final = 1 << 20
# the common case in one match: "PID [TIME] name(plain args) = number"
_FAST: Final = re.compile(
    r"^(?:(\d+)\s+)?(?:\d+\.\d+\s+|\d\d:\d\d:\d\d(?:\.\d+)?\s+)?([A-Za-z_][A-Za-z0-9_]*)"
    r"\(([^\"/<>(){}\[\]]*)\)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*$"
)


_NOT_IN_FAST_ARGS: Final = '"/<>(){}[]'
_HEX: Final = "0123456789abcdefABCDEF"


def _fast_split(raw: str) -> tuple[str, str, str, str] | None:
    """(pid, name, argument text, what follows the ``)``, right-stripped) of a line of
    the shape ``PID SECS.USECS name(plain args)...`` (ASCII, single spaces, no quote,
    path, bracket or parenthesis in the arguments); None for any other line."""
    if not raw.isascii():
        return None
    i1 = raw.find(" ")
    if i1 <= 0:
        return None
    i2 = raw.find(" ", i1 + 1)
    lp = raw.find("(", i2 + 1)
    if i2 < 0 or lp < 0:
        return None
    pid = raw[:i1]
    secs, dot, usecs = raw[i1 + 1 : i2].partition(".")
    name = raw[i2 + 1 : lp]
    if not (pid.isdigit() and dot and secs.isdigit() and usecs.isdigit() and name.isidentifier()):
        return None
    rp = raw.find(")", lp + 1)
    if rp < 0:
        return None
    argtext = raw[lp + 1 : rp]
    for c in _NOT_IN_FAST_ARGS:
        if c in argtext:
            return None
    return pid, name, argtext, raw[rp + 1 :].rstrip()


def _fast_fields(raw: str) -> tuple[str | None, str, str, str] | None:
    """``_FAST.match(raw).groups()`` for the one shape ``strace -f -ttt`` prints most,
    ``PID SECS.USECS name(plain args) = number``, read with string methods; None where
    the line is not exactly that shape (then the regex decides). Never a different
    answer from the regex: tests/test_trace_parse_fast.py compares the two."""
    sp = _fast_split(raw)
    return None if sp is None else _fast_success(sp)


_Split = tuple[str, str, str, str]


def _fast_success(sp: _Split) -> tuple[str | None, str, str, str] | None:
    """``_fast_fields`` of a line ``_fast_split`` has already split."""
    pid, name, argtext, tail = sp
    if not tail.startswith(" = "):
        return None
    ret = tail[3:]
    if ret.isdigit():
        return pid, name, argtext, ret
    if len(ret) > 2 and ret.startswith("0x") and not ret[2:].strip(_HEX):
        return pid, name, argtext, ret
    return None


def _fast_failed(raw: str) -> tuple[str, str, str, str, str] | None:
    """(pid, name, argument text, errno, note) of a failed call of the same shape,
    ``PID SECS.USECS name(plain args) = -1 ENAME (note)``; None for any other line (the
    general reader then decides, and gives the same answer: tests compare them)."""
    sp = _fast_split(raw)
    return None if sp is None else _fast_failure(sp)


def _fast_failure(sp: _Split) -> tuple[str, str, str, str, str] | None:
    """``_fast_failed`` of a line ``_fast_split`` has already split."""
    pid, name, argtext, tail = sp
    if not tail.startswith(" = -1 E") or "\n" in tail or "\r" in tail:
        return None
    err, _, note = tail[6:].partition(" ")
    if len(err) < 2 or not err[1:].replace("_", "A").isalnum() or err.upper() != err:
        return None
    return pid, name, argtext, err, note.strip()


def _plain_args(argtext: str) -> list[str]:
    """The arguments of a fast-path line (no quote, bracket or parenthesis in them)."""
    return [a.strip() for a in argtext.split(",")] if argtext.strip() else []


_SPECIAL: Final = re.compile(r'["/<(\[{]')
# "PID [TIME] name(" for the argument-less fast path of parse_one (need_args)
_LAZY: Final = re.compile(
    r"(?:(\d+)\s+)?(?:\d+\.\d+\s+|\d\d:\d\d:\d\d(?:\.\d+)?\s+)?([A-Za-z_][A-Za-z0-9_]*)\("
)


def split_args(text: str, lineno: int) -> tuple[list[str], str]:
    """Split ``a, b, {c, d}, "e,f")...`` at top-level commas up to the closing parenthesis.

    Returns the argument texts and the text after the ``)``. Quotes (with backslash
    escapes), ``/* comments */``, brackets and -y fd paths (``3</a,b>``) are opaque.
    """
    close = text.find(")")
    if close >= 0 and not _SPECIAL.search(text, 0, close):
        # fast path: plain numbers and flag names before the first ')'
        head = text[:close]
        return ([a.strip() for a in head.split(",")] if head.strip() else []), text[close + 1 :]
    args: list[str] = []
    depth = 0
    i = 0
    n = len(text)
    cur_start = 0
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise TraceSyntaxError(lineno, "unterminated string")
            i += 1
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise TraceSyntaxError(lineno, "unterminated comment")
            i = j + 2
            continue
        if c == "<" and text.startswith("<<", i):
            i += 2  # a shift (strace's ``1<<_UFFDIO_API``), not a -y path
            continue
        if c == "<" and i > 0 and text[i - 1].isdigit():
            # -y path: 3</path> or 3<socket:[123]>; paths may contain '<' '>' escaped
            j = i + 1
            nest = 1
            while j < n and nest:
                if text[j] == "<":
                    nest += 1
                elif text[j] == ">":
                    nest -= 1
                elif text[j] == "\\":
                    j += 1
                j += 1
            if nest:
                raise TraceSyntaxError(lineno, "unterminated fd path")
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth < 0:
                raise TraceSyntaxError(lineno, f"unbalanced {c!r}")
        elif c == ")":
            if depth == 0:
                last = text[cur_start:i].strip()
                if last or args:
                    args.append(last)
                return args, text[i + 1 :]
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[cur_start:i].strip())
            cur_start = i + 1
        i += 1
    raise TraceSyntaxError(lineno, "missing ')' closing the argument list")


def _complete(lineno: int, start: int, pid: int | None, name: str, body: str) -> Syscall:
    """Parse ``ARGS) = RET ...`` (the text after ``NAME(``) into a Syscall."""
    args, rest = split_args(body, lineno)
    if not rest.strip():
        # e.g. a call cut off by the process's death: "exit_group(0)" with nothing after
        return Syscall(lineno, start, pid, name, args, None, None)
    m = _RET.match(rest)
    if not m:
        raise TraceSyntaxError(lineno, f"cannot read the result of {name}(): {rest.strip()[:60]!r}")
    ret = m.group("ret")
    err = m.group("err")
    if m.group("fdpath"):
        ret += m.group("fdpath")  # -y: "3</proc/9/maps>"
    errno: str | None = None
    if err is not None:
        if err.startswith("E"):
            errno = err
        else:
            errno = "E" + re.sub(r"\D", "", err)
    elif ret == "-1" and name not in _SIGNED_OK:
        errno = "EUNKNOWN"
    return Syscall(lineno, start, pid, name, args, ret, errno, m.group("rest").strip())


# calls whose -1 may be a legitimate value (none of the modelled ones)
_SIGNED_OK: Final = frozenset({"lseek", "getpriority", "ptrace"})


def parse_lines(
    lines: Iterable[str], *, lenient: bool = False, skipped: list[int] | None = None
) -> Iterator[Event]:
    """Yield the completed calls and task exits of an strace log, in completion order.

    A malformed line raises :class:`TraceSyntaxError` (a ValueError naming the line); with
    ``lenient=True`` it is skipped and its number appended to ``skipped``. Signal lines
    (``--- SIG... ---``), strace's own notes and blank lines are ignored. A ``<... resumed>``
    half without its start (a log taken mid-call) is skipped the same way in either mode.
    """
    pending: dict[int | None, tuple[int, str, str]] = {}
    for lineno, raw in enumerate(lines, 1):
        try:
            ev = parse_one(lineno, raw, pending)
        except TraceSyntaxError:
            if not lenient:
                raise
            if skipped is not None:
                skipped.append(lineno)
            continue
        if ev is not None:
            yield ev
    yield from unfinished_exits(pending)


def unfinished_exits(pending: dict[int | None, tuple[int, str, str]]) -> list[Syscall]:
    """The exit and exit_group calls among the calls still unfinished at the end of a log.

    Calls cut off by the end of the log never completed; exit calls did, since exit
    never returns and the log may end before strace prints its ``= ?``.
    """
    return [
        Syscall(start, start, pid, name, [body.strip().rstrip(",")], "?", None)
        for pid, (start, name, body) in pending.items()
        if name in ("exit", "exit_group")
    ]


def parse_one(
    lineno: int,
    raw: str,
    pending: dict[int | None, tuple[int, str, str]],
    need_args: frozenset[str] | None = None,
) -> Event | None:
    """Parse one line; keep unfinished halves in ``pending``; return a complete event.

    With ``need_args``, a complete call whose name is not in it is returned without its
    arguments (``args == []``): the reader does not look at them, and splitting quoted
    buffers is most of the cost of a read() or write() line.
    """
    if len(raw) > _MAX_LINE:
        raise TraceSyntaxError(lineno, "line too long")
    sp = _fast_split(raw)  # once, for both fast readers
    fields = None if sp is None else _fast_success(sp)
    # A split line whose result starts "= -" (a failed call, a fifth of a log's lines)
    # cannot match _FAST, which wants a digit after "=": skip the regex's backtracking.
    if fields is None and (sp is None or not sp[3].startswith(" = -")):
        fm = _FAST.match(raw)
        if fm is not None:
            fields = (fm.group(1), fm.group(2), fm.group(3), fm.group(4))
    if fields is not None:
        p0, name, argtext, ret = fields
        fpid = int(p0) if p0 is not None else None
        if fpid is None or fpid <= 1 << 31:
            return Syscall(lineno, lineno, fpid, name, _plain_args(argtext), ret, None)
    elif sp is not None:
        failed = _fast_failure(sp)
        if failed is not None:
            p1, name, argtext, err, note = failed
            fpid = int(p1)
            if fpid <= 1 << 31 and (need_args is None or name in need_args):
                return Syscall(lineno, lineno, fpid, name, _plain_args(argtext), "-1", err, note)
    return _parse_general(lineno, raw, pending, need_args)


def _parse_general(
    lineno: int,
    raw: str,
    pending: dict[int | None, tuple[int, str, str]],
    need_args: frozenset[str] | None,
) -> Event | None:
    """:func:`parse_one` for every line its fast paths leave (the regex readers)."""
    if need_args is not None:
        lm = _LAZY.match(raw)
        if lm is not None and lm.group(2) not in need_args:
            # The result is after the last ") = " (buffers may contain one, results never).
            cut = raw.rfind(") = ")
            rm = _RET.match(raw[cut + 1 :]) if cut > lm.end() else None
            p0 = lm.group(1)
            if rm is not None and (p0 is None or int(p0) <= 1 << 31):
                err = rm.group("err")
                errno = err if err is not None and err.startswith("E") else None
                if err is not None and errno is None:
                    errno = "E" + re.sub(r"\D", "", err)
                return Syscall(
                    lineno,
                    lineno,
                    int(p0) if p0 is not None else None,
                    lm.group(2),
                    [],
                    rm.group("ret"),
                    errno,
                    rm.group("rest").strip(),
                )
    line = raw.rstrip("\r\n")
    if not line.strip() or line.startswith(" > "):
        return None  # blank, or a -k stack frame
    m = _PREFIX.match(line)
    assert m is not None  # every part is optional
    p = m.group("pid") or m.group("bpid")
    try:
        pid = int(p) if p is not None else None
    except ValueError:
        raise TraceSyntaxError(lineno, "bad pid") from None
    if pid is not None and pid > 1 << 31:
        raise TraceSyntaxError(lineno, f"pid {pid} out of range")
    body = line[m.end() :]
    if body.startswith("---"):
        if body.startswith("--- PAGE_FAULT"):
            fm2 = _FAULT.match(body)
            if fm2 is None:
                raise TraceSyntaxError(lineno, "malformed PAGE_FAULT line")
            addr = int(fm2.group("addr"), 16)
            if addr >= 1 << 64:
                raise TraceSyntaxError(lineno, "fault address over 64 bits")
            return PageFault(lineno, pid, addr, fm2.group("access"), fm2.group("mode"))
        return None  # signal delivery
    if body.startswith("strace: ") or body.startswith("????"):
        return None
    if body.startswith("+++"):
        em = _EXIT.match(body)
        if not em:
            raise TraceSyntaxError(lineno, "malformed exit line")
        how = em.group("how")
        pending.pop(pid, None)
        if how.startswith("superseded"):
            # a non-leader thread's execve: it goes on under the leader's pid, and the
            # execve it started resumes there
            other = int(how.rsplit(" ", 1)[1])
            if other in pending:
                pending[pid] = pending.pop(other)
        return TaskExit(lineno, pid, how)
    rm = _RESUMED.match(body)
    if rm:
        name = rm.group("name")
        st = pending.pop(pid, None)
        rest = body[rm.end() :]
        if st is None or st[1] != name:
            return None  # orphan resumption (log starts mid-call, or -o truncated)
        start, _, head = st
        text = head + rest
        if text.endswith(_UNFINISHED):  # resumed and interrupted again
            pending[pid] = (start, name, text[: -len(_UNFINISHED)])
            return None
        return _complete(lineno, start, pid, name, text)
    nm = _NAME.match(body)
    if not nm or body[nm.end() : nm.end() + 1] != "(":
        raise TraceSyntaxError(lineno, f"not a system call: {body[:60]!r}")
    name = nm.group(0)
    rest = body[nm.end() + 1 :]
    if rest.endswith(_UNFINISHED) or rest.endswith(" <unfinished ...>)"):
        cut = rest.rfind(" <unfinished")
        pending[pid] = (lineno, name, rest[:cut])
        return None
    return _complete(lineno, lineno, pid, name, rest)
