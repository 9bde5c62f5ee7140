"""The strace log parser: formats, joining of unfinished calls, values, errors, fuzzing."""

from __future__ import annotations

import glob
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab.trace.args import ArgError, strip_fdpath, struct_fields, to_int, to_str
from vmalab.trace.parse import Syscall, TaskExit, TraceSyntaxError, parse_lines, split_args

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "traces")


def one(line: str) -> Syscall:
    """The single Syscall of a one-line log."""
    evs = list(parse_lines([line]))
    assert len(evs) == 1 and isinstance(evs[0], Syscall)
    return evs[0]


@pytest.mark.parametrize(
    "line,pid",
    [
        ("4553  1795894645.079670 brk(NULL)       = 0x55844cbf4000", 4553),
        ("4553 brk(NULL) = 0x55844cbf4000", 4553),
        ("1795894645.079670 brk(NULL) = 0x55844cbf4000", None),
        ("19:37:00.123456 brk(NULL) = 0x55844cbf4000", None),
        ("19:37:00 brk(NULL) = 0x55844cbf4000", None),
        ("[pid  4553] brk(NULL) = 0x55844cbf4000", 4553),
        ("brk(NULL) = 0x55844cbf4000", None),
        ("4553       0.000123 brk(NULL) = 0x55844cbf4000 <0.000012>", 4553),
        ("4553  1795894645.079670 [00007f1234567890] brk(NULL) = 0x55844cbf4000", 4553),
        ("4553  [ 12] brk(NULL) = 0x55844cbf4000", 4553),
        ("[pid  4553] 19:37:00 [ 12] [00007f1234567890] brk(NULL) = 0x55844cbf4000", 4553),
    ],
)
def test_prefix_formats(line: str, pid: int | None) -> None:
    ev = one(line)
    assert ev.pid == pid and ev.name == "brk" and ev.args == ["NULL"]
    assert to_int(ev.ret or "") == 0x55844CBF4000 and not ev.failed


def test_mmap_raw_and_symbolic() -> None:
    raw = one("5 1.0 mmap(NULL, 8192, 0x3, 0x22, -1, 0) = 0x7fe98ab4b000")
    sym = one(
        "5 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = "
        "0x7fe98ab4b000"
    )
    assert [to_int(a) for a in raw.args] == [to_int(a) for a in sym.args]
    assert to_int("MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK") == 0x20022
    assert to_int(
        "MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT"
    ) == 0x2 | 0x10 | 0x20 | 0x40000 | (21 << 26)


@pytest.mark.parametrize("text", ["0x66 /* MADV_??? */", "0x66", "102", "MADV_GUARD_INSTALL"])
def test_guard_advice_spellings(text: str) -> None:
    ev = one(f"9 madvise(0x7f425a939000, 4096, {text}) = 0")
    assert to_int(ev.args[2]) == 102


def test_failed_call() -> None:
    ev = one(
        '9 openat(AT_FDCWD, "/nope", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)'
    )
    assert ev.failed and ev.errno == "ENOENT"
    ev = one("9 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = -1 (errno 12)")
    assert ev.errno == "E12"
    ev = one("9 madvise(0x1000, 4096, 0x66) = ? ERESTARTSYS (To be restarted)")
    assert ev.failed


def test_fd_paths_are_opaque() -> None:
    ev = one("9 mmap(NULL, 4096, 0x1, 0x2, 3</tmp/a, b) c>, 0) = 0x7f0000000000")
    assert len(ev.args) == 6
    assert strip_fdpath(ev.args[4]) == ("3", "/tmp/a, b) c")
    ev = one('9 openat(-100</tmp>, "/proc/self/maps", 0x80000) = 3</proc/9/maps>')
    assert strip_fdpath(ev.ret or "") == ("3", "/proc/9/maps")
    assert to_str(ev.args[1]) == "/proc/self/maps"


def test_deleted_fd_paths() -> None:
    ev = one("9 close(5</dev/shm/sem.GL5nP2>(deleted)) = 0")
    assert strip_fdpath(ev.args[0]) == ("5", "/dev/shm/sem.GL5nP2 (deleted)")
    ev = one("9 mmap(NULL, 32, 0x3, 0x1, 5</dev/shm/sem.x>(deleted), 0) = 0x7f0000000000")
    assert len(ev.args) == 6 and strip_fdpath(ev.args[4])[1] == "/dev/shm/sem.x (deleted)"


def test_strings_and_comments_with_parentheses() -> None:
    ev = one('9 read(3, "a) = 5, \\"b\\"", 4096) = 12')
    assert len(ev.args) == 3 and ev.ret == "12"
    ev = one('9 execve("/bin/x", ["x", "a,b"], 0x7ffd /* 35 vars, (x) */) = 0')
    assert to_str(ev.args[0]) == "/bin/x" and len(ev.args) == 3


def test_unfinished_resumed_joining() -> None:
    lines = [
        "10 1.0 mmap(NULL, 8192, 0x3, 0x22, -1, 0 <unfinished ...>",
        "11 1.1 brk(NULL) = 0x1000",
        "10 1.2 <... mmap resumed>) = 0x7f0000000000",
        "11 1.3 read(3</x>,  <unfinished ...>",
        '11 1.4 <... read resumed>"", 16) = 0',
    ]
    evs = list(parse_lines(lines))
    assert [(e.name, e.lineno) for e in evs if isinstance(e, Syscall)] == [
        ("brk", 2),
        ("mmap", 3),
        ("read", 5),
    ]
    mm = evs[1]
    assert isinstance(mm, Syscall) and mm.start_lineno == 1 and len(mm.args) == 6


def test_clone3_struct() -> None:
    ev = one(
        "5 clone3({flags=0x3d0f00, child_tid=0x7f, parent_tid=0x7f, exit_signal=0, "
        "stack=0x7f39fe785000, stack_size=0x7fff80, tls=0x7f} => {parent_tid=[5872]}, 88)"
        " = 5872"
    )
    assert to_int(struct_fields(ev.args[0])["flags"]) == 0x3D0F00
    ev = one(
        "5 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
        "child_tidptr=0x7f) = 6"
    )
    assert ev.args[1].startswith("flags=")


def test_stack_trace_lines_are_skipped() -> None:
    evs = list(
        parse_lines(
            [
                "5 brk(NULL) = 0x1000",
                " > /usr/lib/x86_64-linux-gnu/libc.so.6(brk+0xb) [0xf9a2b]",
                " > /usr/bin/python3(main+0x20) [0x1000]",
            ]
        )
    )
    assert len(evs) == 1


def test_exit_and_signal_lines() -> None:
    evs = list(
        parse_lines(
            [
                "5 exit_group(0)                   = ?",
                "6 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---",
                "5 +++ exited with 0 +++",
                "7 +++ killed by SIGSEGV (core dumped) +++",
                "",
            ]
        )
    )
    assert isinstance(evs[0], Syscall) and evs[0].ret == "?"
    assert [type(e) for e in evs] == [Syscall, TaskExit, TaskExit]


def test_unfinished_exit_at_end_is_reported() -> None:
    evs = list(parse_lines(["5 exit_group(0 <unfinished ...>"]))
    assert len(evs) == 1 and isinstance(evs[0], Syscall) and evs[0].name == "exit_group"


@pytest.mark.parametrize(
    "bad",
    [
        "5 mmap(NULL, 4096",
        "garbage here",
        "5 mmap(NULL, 4096) =",
        '5 open("unterminated) = 3',
        "5 +++ whatever",
        "5 mmap(NULL, 4096) = banana",
    ],
)
def test_malformed_lines_name_their_number(bad: str) -> None:
    with pytest.raises(ValueError, match=r"line 2\b"):
        list(parse_lines(["5 brk(NULL) = 0x1000", bad]))
    skipped: list[int] = []
    evs = list(
        parse_lines(
            ["5 brk(NULL) = 0x1000", bad, "5 brk(NULL) = 0x2000"], lenient=True, skipped=skipped
        )
    )
    assert skipped in ([2], [])
    assert sum(isinstance(e, Syscall) and e.name == "brk" for e in evs) == 2


def test_values() -> None:
    assert to_int("NULL") == 0 and to_int("0755") == 0o755 and to_int("-1") == -1
    assert to_int("O_RDWR|O_CREAT|O_CLOEXEC") == 0o2000102
    with pytest.raises(ArgError):
        to_int("MAP_NO_SUCH_FLAG")
    with pytest.raises(ArgError):
        to_int("0x" + "f" * 40)
    assert split_args("a, b)", 1) == (["a", "b"], "")
    assert split_args(") = 0", 1) == ([], " = 0")


def test_fixture_traces_parse_strictly() -> None:
    files = glob.glob(os.path.join(FIX, "*.trace"))
    assert len(files) >= 4
    for f in files:
        with open(f) as fh:
            n = sum(1 for _ in parse_lines(fh))
        assert n > 100, f


_alphabet = st.sampled_from(
    list('0123456789abcdefx(){}[]<>"\\,|=?.:/ -+*_')
    + [
        "mmap",
        "madvise",
        "<unfinished ...>",
        "<... mmap resumed>",
        "MAP_FIXED",
        "0x66",
        "/* MADV_??? */",
        "+++ exited with 0 +++",
        "---",
        "NULL",
        "clone3",
        "{flags=",
        "E",
        "ENOMEM",
        "99999999999999999999999999",
        "\t",
        "\n",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_alphabet, max_size=30).map("".join), max_size=12))
def test_fuzz_parser_never_crashes(lines: list[str]) -> None:
    try:
        evs = list(parse_lines(lines))
    except TraceSyntaxError as e:
        assert f"line {e.lineno}" in str(e)
        assert 1 <= e.lineno <= max(1, len(lines))
        return
    for ev in evs:
        if isinstance(ev, Syscall):
            for a in ev.args:
                try:
                    to_int(a)
                except ArgError:
                    pass
    list(parse_lines(lines, lenient=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=0, max_value=5))
def test_fuzz_truncated_real_lines(garbage: str, cut: int) -> None:
    real = (
        "4553  1795894645.080998 mmap(NULL, 1974096, 0x1, 0x802, "
        "3</usr/lib/x86_64-linux-gnu/libc.so.6>, 0) = 0x7fe98a960000"
    )
    lines = [real[: len(real) * cut // 5], garbage, real]
    skipped: list[int] = []
    evs = list(parse_lines(lines, lenient=True, skipped=skipped))
    assert (
        any(isinstance(e, Syscall) and e.lineno == 3 for e in evs)
        or 3 in skipped
        or "\n" in garbage
        or "\r" in garbage
    )


def test_lazy_arguments_agree_with_the_full_parse() -> None:
    """The argument-less fast path (need_args) reads the same name, result and errno."""
    from vmalab.trace import parse as P

    lines = [
        '100 1700000000.000001 read(3</etc/x>, "a) = 7 \\"q\\"", 4096) = 9',
        '100 1700000000.000002 write(1, "hi\\n", 3) = -1 EAGAIN (Resource temporarily unavailable)',
        "100 1700000000.000003 futex(0x7f0000001000, FUTEX_WAIT_PRIVATE, 0, NULL) = 0",
        '101 openat(AT_FDCWD, "/x", O_RDONLY) = 3</x>',
    ]
    for i, line in enumerate(lines, 1):
        full = P.parse_one(i, line, {})
        lazy = P.parse_one(i, line, {}, frozenset({"openat"}))
        assert isinstance(full, P.Syscall) and isinstance(lazy, P.Syscall)
        assert (lazy.pid, lazy.name, lazy.errno) == (full.pid, full.name, full.errno)
        if lazy.name == "openat":
            assert lazy.args == full.args and lazy.ret == full.ret
        else:  # plain lines take the one-regex path and keep their arguments
            assert lazy.args in ([], full.args) and lazy.ret == full.ret.split("<")[0]
    with pytest.raises(P.TraceSyntaxError):
        P.parse_one(1, '100 read(3, "abc", 4096', {}, frozenset())
