"""Read snapshots (notes/recording-spec.md, Addendum 2): what a recorded program read from
its own /proc/PID/maps or smaps is kept, and ``replay(..., verify=True)`` compares the model
at the line of the openat with every consistent one.

Needs ptrace and perf (root, as on the project's machines and CI); skips elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmalab.trace import merge as mg
from vmalab.trace.decode import SEP
from vmalab.trace.recording import open_recording
from vmalab.trace.replay import replay
from vmalab.trace.snapshots import ReadInfo, ReadSnapshot, Snapshot
from vmalab.trace.tracer import Incarnation

FIX = Path(__file__).parent / "fixtures"
VMALAB = [sys.executable, "-m", "vmalab.cli"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "recording needs root (ptrace of the whole tree, perf tracepoints)"
    if shutil.which("perf") is None:
        return "perf is not installed"
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    return None


needs_recording = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _compile(tmp: Path, src: Path) -> str:
    exe = tmp / src.stem
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(src)], check=True)
    return str(exe)


def _record(d: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [*VMALAB, "record", "--quiet", "-o", str(d), "--", *cmd],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def _reads(d: Path) -> list[dict[str, Any]]:
    with open(d / "manifest.json") as f:
        m = json.load(f)
    return [s for s in m["snapshots"] if s["kind"] == "read"]


def _verify(d: Path) -> Any:
    r = replay(str(d), verify=True)
    assert r.model_error_count == 0, r.model_errors[:5]
    bad = {(c.kind, c.line): c.differences[:3] for c in r.checkpoints if not c.matched}
    assert not bad, bad
    return r


@needs_recording
def test_every_way_of_reading(tmp_path: Path) -> None:
    """read() 1 KiB at a time, readv(), pread64(), one large read closed before EOF,
    lseek back and read again, via /proc/thread-self: each is a consistent read snapshot
    whose text is the whole file, and the model matches each at its openat line. A read
    of 100 bytes then close is kept but marked not consistent, and not compared."""
    exe = _compile(tmp_path, FIX / "programs" / "readmaps_many.c")
    d = tmp_path / "rec"
    p = _record(d, exe)
    assert p.stdout.strip() == "7"
    reads = _reads(d)
    assert [s["consistent"] for s in reads] == [True] * 6 + [False]
    assert reads[-1]["why_not"] == "closed before the end of the file"
    assert reads[-1]["bytes"] == 100 and not reads[-1]["complete"]
    assert [s["reads"] for s in reads[:1]] == [3]  # ~2.3 KiB in 1 KiB reads
    assert reads[1]["smaps"] and reads[1]["reads"] > 10  # readv of 1 KiB
    assert reads[3]["path"].endswith("/task/" + str(reads[3]["pid"]) + "/maps")
    assert not reads[3]["eof"] and reads[3]["complete"]  # one read, closed
    assert reads[4]["line"] == reads[5]["line"]  # the same openat, read twice
    lines = (d / "trace.strace").read_text().splitlines()
    for s in reads:
        assert "openat(" in lines[s["line"] - 1] or "open(" in lines[s["line"] - 1]
        last = lines[s["last_line"] - 1]
        assert last.endswith("= 0") and ("read" in last or "close(" in last), last
        assert s["pid"] == int(lines[s["line"] - 1].split()[0])
        text = (d / (s.get("maps") or s["smaps"])).read_bytes()
        assert len(text) == s["bytes"]
    assert any(ln.split(None, 2)[2].startswith("readv(") for ln in lines)
    assert any(ln.split(None, 2)[2].startswith("pread64(") for ln in lines)
    r = _verify(d)
    checked = [c for c in r.checkpoints if c.kind == "read"]
    assert [c.line for c in checked] == [s["line"] for s in reads if s["consistent"]]
    rec = open_recording(str(d))
    assert sum(len(v) for v in rec.read_snapshots().values()) == 6


@needs_recording
def test_capture_is_what_the_program_read(tmp_path: Path) -> None:
    """readmaps writes what it read to a file: the read snapshot holds the same bytes."""
    exe = _compile(tmp_path, FIX / "programs" / "readmaps.c")
    d = tmp_path / "rec"
    _record(d, exe, str(tmp_path / "maps.out"))
    reads = _reads(d)
    assert len(reads) == 2 and all(s["consistent"] for s in reads)
    assert (d / reads[0]["maps"]).read_bytes() == (tmp_path / "maps.out").read_bytes()
    r = _verify(d)
    assert sum(c.kind == "read" for c in r.checkpoints) == 2


@needs_recording
def test_another_thread_mapping_meanwhile(tmp_path: Path) -> None:
    """A thread mmaps and mprotects between two reads of the main thread: that capture is
    not consistent (verify skips it); the read after the join is, and matches."""
    exe = _compile(tmp_path, FIX / "programs" / "readmaps_race.c")
    d = tmp_path / "rec"
    _record(d, exe)
    reads = _reads(d)
    assert [s["consistent"] for s in reads] == [False, True]
    why = reads[0]["why_not"]
    assert why.startswith("the address space changed at line"), why
    changed = int(why.split("line ")[1].split(";")[0])
    assert reads[0]["line"] < changed < reads[0]["last_line"]
    lines = (d / "trace.strace").read_text().splitlines()
    assert lines[changed - 1].split()[0] != str(reads[0]["pid"])  # the other thread
    r = _verify(d)
    assert [c.line for c in r.checkpoints if c.kind == "read"] == [reads[1]["line"]]


@needs_recording
def test_selfmaps_program_reads_all_match(tmp_path: Path) -> None:
    """tests/fixtures/selfmaps/selfmaps.c (guards, brk, memfd, mremap, threads, fork,
    posix_spawn, vfork+exec, stack growth): one read snapshot per dump it saved, of the
    same bytes, every one consistent, and the model matches every one."""
    exe = _compile(tmp_path, FIX / "selfmaps" / "selfmaps.c")
    out = tmp_path / "out"
    out.mkdir()
    d = tmp_path / "rec"
    _record(d, exe, str(out))
    dumps = sorted(f.name for f in out.iterdir() if f.suffix in (".maps", ".smaps"))
    reads = _reads(d)
    assert len(reads) == len(dumps) == 8
    assert all(s["consistent"] for s in reads), [s["why_not"] for s in reads]
    saved = sorted((out / f).read_bytes() for f in dumps)
    # the program saved exactly what it read, so did the recorder
    assert sorted((d / (s.get("maps") or s["smaps"])).read_bytes() for s in reads) == saved
    r = _verify(d)
    assert sum(c.kind == "read" for c in r.checkpoints) == 8
    r.kernel.check()


def _read_snap(cid: int, mm: int) -> ReadSnapshot:
    info = ReadInfo(cid, mm, 100, "/proc/100/maps", "maps", 10, 1, True, True, False, False, False)
    return ReadSnapshot(100, "read", cid, "snapshots/100.1.read.maps", "", read=info)


def test_merge_decides_consistency_from_tags() -> None:
    """The merge's rule, on hand-made tracer records: a change by another task of the same
    mm that completes after the open, or is still running at the last read, makes the
    read inconsistent; a change of another mm does not; process_madvise (V*) does."""
    import io

    def rec(ts: int, tid: int, kind: str, payload: str) -> tuple[int, int, int, str, int, str]:
        return ts, 1, tid, kind, -1, payload

    opn = 'openat\topenat(-100</>, "/proc/self/maps", 0'
    opx = f"openat\t){SEP}3</proc/100/maps>"
    rd = "read\tread(3</proc/100/maps>, "
    rdx = f'read\t"", 9){SEP}0'
    mm_e = "mmap\tmmap(NULL, 4096, 0x3, 0x22, -1, 0"
    mm_x = f"mmap\t){SEP}0x7f0000000000"
    recs = [
        # 0: thread 101's mmap is running while 100 opens and reads to EOF: not consistent
        rec(10, 101, "E", mm_e + "\tV1"),
        rec(11, 100, "E", opn),
        rec(12, 100, "X", opx + "\tO1"),
        rec(13, 100, "E", rd),
        rec(14, 100, "X", rdx + "\tL0"),
        rec(15, 101, "X", mm_x + "\tV1"),
        # 1: opened after it: consistent, although mm 2 changed meanwhile
        rec(20, 100, "E", opn),
        rec(21, 100, "X", opx + "\tO2"),
        rec(22, 102, "E", mm_e + "\tV2"),
        rec(23, 102, "X", mm_x + "\tV2"),
        rec(24, 100, "E", rd),
        rec(25, 100, "X", rdx + "\tL1"),
        # 2: a change of mm 1 completing between the open and the EOF
        rec(30, 100, "E", opn),
        rec(31, 100, "X", opx + "\tO3"),
        rec(32, 101, "E", mm_e + "\tV1"),
        rec(33, 101, "X", mm_x + "\tV1"),
        rec(34, 100, "E", rd),
        rec(35, 100, "X", rdx + "\tL2"),
        # 3: process_madvise (any mm), ended by the reader's exit (an L record)
        rec(40, 100, "E", opn),
        rec(41, 100, "X", opx + "\tO4"),
        rec(42, 102, "E", "process_madvise\tprocess_madvise(3, [], 0, 0x8, 0\tV*"),
        rec(43, 102, "X", f"process_madvise\t){SEP}0\tV*"),
        rec(44, 100, "L", "3"),
    ]
    rsnaps = [_read_snap(1, 1), _read_snap(2, 1), _read_snap(3, 1), _read_snap(4, 1)]
    snaps: list[Snapshot] = list(rsnaps)
    lives = {t: [Incarnation(0, "fork")] for t in (100, 101, 102)}
    out = io.StringIO()
    mg.merge(iter(recs), iter(()), out, offset_ns=0, lives=lives, snapshots=snaps)
    lines = out.getvalue().splitlines()
    assert "\t" not in out.getvalue()  # the tags are not printed
    got = [(s.line or 0, s.read.last_line or 0, s.read.consistent) for s in rsnaps if s.read]
    assert [lines[g[0] - 1].split(None, 2)[2][:6] for g in got] == ["openat"] * 4
    assert [g[2] for g in got] == [False, True, False, False]
    assert rsnaps[0].read is not None and rsnaps[0].read.why == [
        "task 101 was inside a call changing the address space"
    ]
    assert rsnaps[2].read is not None and rsnaps[2].read.why[0].startswith(
        "the address space changed at line "
    )
    assert got[1][1] == got[1][0] + 2  # open, mmap (one line), read
    assert got[3][1] == len(lines)
