"""The live runner's safety bounds: what it refuses (memory outside the arena, file names
that are not plain names) and the host budgets of one run (file bytes and resident memory),
shared by the run's fork children through one MAP_SHARED page. The child's module
docstring (vmalab.live.child) lists every bound."""

from __future__ import annotations

import ctypes
import os

from vmalab import program as P
from vmalab.errors import ResourceLimitError
from vmalab.live.libc import MAP_FAILED, Libc


class Refused(P.Refused):
    """An operation that would touch memory outside the arena (or a file outside the run
    folder); the interpreter reports it as ``refused: ...``, which ``run_live`` raises as
    a LiveError rather than comparing it."""


def plain_name(name: str) -> None:
    """Refuse a file name unless it is a plain name (no '/', NUL, '.' or '..')."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise Refused(f"file name {name[:40]!r} is not a plain name")


MAX_DEPTH = 16


class HostBudget:
    """The host budgets of one live run, shared by its fork children through one
    MAP_SHARED page: word 0 is the file bytes charged so far, words 1.. the resident
    bytes of the process at each fork depth (forks run one at a time, so the processes
    alive at once are one chain and their sum is the tree's footprint).

    File growth is charged conservatively: the high-water size each ftruncate, fallocate
    and pwrite asks for, per inode and never credited back."""

    def __init__(self, lib: Libc, file_bytes: int | None, rss_bytes: int | None) -> None:
        self.file_bytes = file_bytes
        self.rss_bytes = rss_bytes
        page = lib.c.mmap(None, P.PAGE, 3, 0x21, -1, 0)  # MAP_SHARED|MAP_ANONYMOUS
        if page in (None, MAP_FAILED):
            raise lib.fail()
        if page + P.PAGE > P.ARENA_BASE and page < P.ARENA_BASE + (P.MAX_ARENA_PAGES << 12):
            raise Refused("budget page landed in the arena")
        self.words = (ctypes.c_uint64 * (1 + MAX_DEPTH)).from_address(page)
        self.hwm: dict[tuple[int, int], int] = {}
        self.depth = 0
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)

    def charge(self, fd: int, end: int, what: str) -> None:
        """Charge file ``fd`` growing to ``end`` bytes; raise ResourceLimitError past the
        budget (nothing is done then)."""
        if self.file_bytes is None:
            return
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        old = max(self.hwm.get(key, 0), st.st_size)
        if end <= old:
            return
        total = self.words[0] + end - old
        if total > self.file_bytes:
            raise ResourceLimitError(
                "file_bytes",
                self.file_bytes,
                f"{what} would grow the run's files to {total} bytes, "
                f"past the file_bytes budget of {self.file_bytes}",
            )
        self.words[0] = total
        self.hwm[key] = end

    def forked(self) -> None:
        """In a fork child: a fresh statm fd and the next depth slot."""
        os.close(self.statm)
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        self.depth = min(self.depth + 1, MAX_DEPTH - 1)

    def check_rss(self) -> None:
        if self.rss_bytes is None:
            return
        resident = int(os.pread(self.statm, 128, 0).split()[1]) * P.PAGE
        self.words[1 + self.depth] = resident
        total = sum(self.words[1 + i] for i in range(self.depth + 1))
        if total > self.rss_bytes:
            raise ResourceLimitError(
                "rss",
                self.rss_bytes,
                f"resident memory of the live processes reached {total} "
                f"bytes, past the rss budget of {self.rss_bytes}",
            )
