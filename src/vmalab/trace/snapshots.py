"""The snapshots of a recording: of a process's maps at exec and exit, and of what the
program itself read from a /proc/PID/maps or smaps file (read captures).

**Read captures** (notes/recording-spec.md, Addendum 2): when the program opens a
/proc/PID/maps or smaps file, the bytes every read()/pread64()/readv()/preadv() of that fd
returns are copied from its buffer at the syscall's exit (process_vm_readv) into
``DIR/snapshots/.capture.CID`` at their file offset, at most :data:`CAPTURE_LIMIT` bytes.
When a read returns 0 (EOF), or the fd is closed, or the reader exits or execs, the
capture becomes ``PID.N.read.maps`` (``.read.smaps``) and a ``read`` snapshot; the merge
gives it its lines and decides ``consistent``. :class:`ReadCaptures` keeps them for the
:class:`vmalab.trace.tracer.Tracer`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vmalab.trace import decode as dc
from vmalab.trace import ptrace as pt
from vmalab.trace import syscalls as sc
from vmalab.trace.strace_fmt import fd_path, sint

CAPTURE_LIMIT = 64 << 20  # bytes kept of one read capture; beyond, it is marked truncated
_MAPS_PATH = re.compile(r"^/proc/(\d+)(?:/task/(\d+))?/(maps|smaps)$")
_HEADER = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ ", re.M)
_EBADF = 9
_CLOSE_RANGE_CLOEXEC = 4


@dataclass
class ReadInfo:
    """What a ``read`` snapshot knows besides its file: the merge fills in the lines."""

    cid: int
    mm: int
    reader: int
    path: str
    what: str  # maps | smaps
    nbytes: int
    reads: int
    eof: bool  # a read returned 0
    complete: bool  # eof, or at the close the text held every VMA of a fresh read
    truncated: bool
    gaps: bool  # bytes missing in the middle (an unreadable buffer, a pread past them)
    gone: bool  # the target process died while the capture was open
    last_line: int | None = None
    consistent: bool = False
    why: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """One maps/smaps snapshot taken while the process was stopped."""

    pid: int
    kind: str
    seq: int
    maps: str
    smaps: str
    line: int | None = None
    stat: dict[str, int] = field(default_factory=dict)


@dataclass
class ReadSnapshot(Snapshot):
    """What the program itself read from a maps or smaps file (``maps`` or ``smaps`` is
    its file, the other is empty)."""

    read: ReadInfo | None = None


@dataclass
class Capture:
    """An open /proc/PID/{maps,smaps} fd of a traced process and the bytes read from it."""

    cid: int
    tgid: int  # the reader's thread group (its fd table)
    fd: int
    target: int  # the thread group whose maps it reads
    mm: int
    what: str
    path: str
    tmp: str
    fh: int = -1
    size: int = 0  # bytes [0, size) written
    pos: int = 0  # the file position after the last read()
    gaps: bool = False
    truncated: bool = False
    reads: int = 0
    gone: bool = False


class ReadCaptures:
    """The open read captures of the traced processes, keyed by (reader tgid, fd).

    ``snapshots`` is the tracer's list, to which each finished capture is appended as a
    :class:`ReadSnapshot`; ``group_mm(pid)`` gives (tgid, mm id) of a traced task or
    thread group, None if it is not traced.
    """

    def __init__(
        self,
        snapdir: str,
        snapshots: list[Snapshot],
        group_mm: Callable[[int], tuple[int, int] | None],
    ) -> None:
        self.snapdir = snapdir
        self.snapshots = snapshots
        self.group_mm = group_mm
        self.captures: dict[tuple[int, int], Capture] = {}
        self.read_seq: dict[int, int] = {}
        self._cids = 0

    def is_open(self, tgid: int, fd: int) -> bool:
        """Whether thread group ``tgid``'s ``fd`` is a capture."""
        return (tgid, fd) in self.captures

    def fd_effects(self, tgid: int, tags: list[str], ctx: dc.Ctx, val: int) -> None:
        """What a completed call of a task of thread group ``tgid`` does to the read
        captures: open, read, close them; ``tags`` are its exit record's tags."""
        nr, a = ctx.nr, ctx.args
        if nr in sc.READS:
            cap = self.captures.get((tgid, sint(a[0], 32)))
            if cap is None:
                return
            if val > 0:
                self._captured(cap, ctx, val)
            elif val == 0:
                self._end_tag(tags, self._finish(cap, "eof"))
        elif nr in sc.OPENS:
            if val >= 0:
                self._opened(tgid, tags, ctx.tid, val)
        elif nr == sc.NR["close"]:
            if val != -_EBADF:  # Linux releases the fd even when close fails otherwise
                self._closed(tgid, tags, sint(a[0], 32))
        elif nr == sc.NR["close_range"]:
            if val == 0 and not a[2] & _CLOSE_RANGE_CLOEXEC:
                for holder, fd in list(self.captures):
                    if holder == tgid and a[0] <= fd <= a[1]:
                        self._closed(tgid, tags, fd)
        elif nr in (sc.NR["dup2"], sc.NR["dup3"]):
            if val >= 0 and a[0] != a[1]:
                self._closed(tgid, tags, sint(a[1], 32))

    @staticmethod
    def _end_tag(tags: list[str], idx: int | None) -> None:
        if idx is not None:
            tags.append(f"L{idx}")

    def _closed(self, tgid: int, tags: list[str], fd: int) -> None:
        cap = self.captures.pop((tgid, fd), None)
        if cap is not None:
            self._end_tag(tags, self._finish(cap, "close"))

    def _opened(self, tgid: int, tags: list[str], tid: int, fd: int) -> None:
        """An open returned ``fd``: start a capture if it is a traced process's maps/smaps."""
        self._closed(tgid, tags, fd)  # a capture whose close we did not see
        path = fd_path(tid, fd)
        m = _MAPS_PATH.match(path) if path is not None else None
        if m is None or path is None:
            return
        who = self.group_mm(int(m.group(2) or m.group(1)))
        if who is None:
            return
        self._cids += 1
        cid = self._cids
        tmp = os.path.join(self.snapdir, f".capture.{cid}")
        self.captures[(tgid, fd)] = Capture(cid, tgid, fd, who[0], who[1], m.group(3), path, tmp)
        tags.append(f"O{cid}")

    def _captured(self, cap: Capture, ctx: dc.Ctx, val: int) -> None:
        """A read of ``cap``'s fd returned ``val`` bytes: copy them from the tracee."""
        tid, a = ctx.tid, ctx.args
        if ctx.nr in sc.VREADS:
            chunks, left = [], val
            for base, ln in dc.iovecs(tid, a[1], a[2]):
                if left <= 0:
                    break
                n = min(ln, left)
                chunks.append(_read_all(tid, base, n))
                left -= n
            data = b"".join(chunks)
        else:
            data = _read_all(tid, a[1], val)
        if ctx.nr in sc.PREADS:
            off = sint(a[3])
        else:
            pos = _fd_pos(tid, cap.fd)
            off = pos - val if pos is not None and pos >= val else cap.pos
            cap.pos = off + val
        cap.reads += 1
        if len(data) < val:
            cap.gaps = True
        if off + len(data) > CAPTURE_LIMIT:
            cap.truncated = True
            data = data[: max(0, CAPTURE_LIMIT - off)]
        if not data:
            return
        if off > cap.size:
            cap.gaps = True
        try:
            if cap.fh < 0:
                cap.fh = os.open(
                    cap.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
                )
            os.pwrite(cap.fh, data, off)
        except OSError:
            cap.gaps = True
            return
        cap.size = max(cap.size, off + len(data))

    def _finish(self, cap: Capture, how: str) -> int | None:
        """End ``cap`` (``how``: eof, close, exec or exit) as a read snapshot; its index.

        Nothing is written for a capture that got no bytes. After EOF the capture starts
        afresh on the same fd (a program may seek back and read again).
        """
        if cap.fh >= 0:
            os.close(cap.fh)
            cap.fh = -1
        if cap.size == 0:
            _unlink(cap.tmp)
            return None
        eof = how == "eof"
        complete = eof or (how != "exec" and self._complete(cap))
        seq = self.read_seq.get(cap.target, 0) + 1
        self.read_seq[cap.target] = seq
        rel = f"snapshots/{cap.target}.{seq}.read.{cap.what}"
        try:
            os.rename(cap.tmp, os.path.join(self.snapdir, os.path.basename(rel)))
        except OSError:
            return None
        info = ReadInfo(
            cap.cid,
            cap.mm,
            cap.tgid,
            cap.path,
            cap.what,
            cap.size,
            cap.reads,
            eof,
            complete,
            cap.truncated,
            cap.gaps,
            cap.gone,
        )
        self.snapshots.append(
            ReadSnapshot(
                cap.target,
                "read",
                seq,
                rel if cap.what == "maps" else "",
                rel if cap.what == "smaps" else "",
                read=info,
            )
        )
        if eof:
            cap.size = cap.pos = cap.reads = 0
            cap.gaps = cap.truncated = False
        return len(self.snapshots) - 1

    def _complete(self, cap: Capture) -> bool:
        """Whether a capture closed before EOF holds the whole file anyway (one read of a
        small maps): its VMA lines equal those of a fresh read of the same file."""
        try:
            with open(cap.tmp, "rb") as f:
                mine = f.read(CAPTURE_LIMIT)
            with open(cap.path, "rb") as f:
                fresh = f.read(CAPTURE_LIMIT + 1)
        except OSError:
            return False
        if not mine.endswith(b"\n") or len(fresh) > CAPTURE_LIMIT:
            return False
        if cap.what == "smaps" and not mine[:-1].rsplit(b"\n", 1)[-1].startswith(b"VmFlags:"):
            return False
        return _HEADER.findall(mine) == _HEADER.findall(fresh) and (
            cap.what == "smaps" or mine == fresh
        )

    def end_group(self, pid: int, how: str) -> list[int]:
        """Thread group ``pid`` exits or execs (``how``): end the captures it holds and
        return the indexes of their snapshots; those of other readers on its maps lose
        their target."""
        ended = []
        for key in [k for k in self.captures if k[0] == pid]:
            idx = self._finish(self.captures.pop(key), how)
            if idx is not None:
                ended.append(idx)
        if how == "exit":
            for cap in self.captures.values():
                if cap.target == pid:
                    cap.gone = True
        return ended

    def end_all(self) -> list[tuple[int, int]]:
        """End every capture still open (none normally: the exits ended them); return
        (reader tgid, snapshot index) of each that became a snapshot."""
        out = []
        for key in list(self.captures):
            idx = self._finish(self.captures.pop(key), "exit")
            if idx is not None:
                out.append((key[0], idx))
        return out


def _read_all(tid: int, addr: int, size: int) -> bytes:
    """``size`` bytes of tracee memory at ``addr``, in chunks (short if memory ends)."""
    out = []
    while size > 0:
        n = min(size, 1 << 20)
        got = pt.read_mem(tid, addr, n)
        out.append(got)
        if len(got) < n:
            break
        addr += n
        size -= n
    return b"".join(out)


def _fd_pos(tid: int, fd: int) -> int | None:
    """The file position of ``fd`` in ``tid`` (``pos:`` of /proc/TID/fdinfo/FD)."""
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
            first = f.readline()
        return int(first.split()[1]) if first.startswith(b"pos:") else None
    except (OSError, ValueError, IndexError):
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
