"""Reading a recording made by ``vmalab record`` (the directory format of docs/recording.md).

A recording is a directory holding ``trace.strace`` (strace ``-f -ttt -X raw -y`` lines plus
``--- PAGE_FAULT {...} ---`` lines), ``manifest.json`` and ``snapshots/`` (the
/proc/PID/maps and smaps texts taken right after each successful execve and at each
process's exit). :func:`open_recording` validates the manifest and gives the replay what it
needs: the snapshots by pid and line, the sizes of the mapped files, whether faults were
captured, and the design the recorded kernel implements.
"""

from __future__ import annotations

import json
import os
import re
import stat as _stat
from dataclasses import dataclass, field
from typing import Any

from vmalab.errors import UserInputError

TRACE_NAME = "trace.strace"
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_SNAPSHOT_BYTES = 64 << 20


@dataclass(frozen=True)
class Snapshot:
    """One maps/smaps snapshot of a recording.

    ``kind`` is ``"exec"`` (right after the ``seq``-th successful execve of ``pid``),
    ``"exit"`` (the process's last moment with its mm) or ``"read"`` (what the program
    itself read from its /proc/PID/maps or smaps, opened at ``line``; ``consistent`` when
    no call changed its address space while it read). ``line``: the state is that after
    trace lines 1..line. ``stat`` holds fields of /proc/PID/stat read at the same stop
    (``start_stack``, ``start_brk``, ...) when the recorder took them.
    """

    pid: int
    kind: str
    seq: int
    line: int
    maps: str | None
    smaps: str | None
    stat: dict[str, int] = field(default_factory=dict)
    consistent: bool = True

    def text(self) -> str:
        """The smaps text if there is one (it has VmFlags), else the maps text."""
        path = self.smaps or self.maps
        if path is None:
            raise UserInputError(f"snapshot {self.pid}.{self.seq}.{self.kind}", "no file")
        return _read_capped(path, MAX_SNAPSHOT_BYTES)


@dataclass
class Recording:
    """A recording directory, its manifest read and checked."""

    root: str
    manifest: dict[str, Any]
    snapshots: list[Snapshot]
    files: dict[str, int]

    @property
    def trace(self) -> str:
        """The path of the recording's trace.strace."""
        return os.path.join(self.root, TRACE_NAME)

    @property
    def faults_captured(self) -> bool:
        """Whether the recorder saw page faults (perf); without them replay assumes stores."""
        f = self.manifest.get("faults")
        return bool(isinstance(f, dict) and f.get("captured"))

    @property
    def lost_events(self) -> int:
        """Events perf dropped (PERF_RECORD_LOST): a recording that lost some is not exact."""
        f = self.manifest.get("faults")
        lost = f.get("lost", 0) if isinstance(f, dict) else 0
        return lost if isinstance(lost, int) else 0

    def exec_snapshot(self, pid: int | None, line: int, seq: int) -> Snapshot | None:
        """The exec snapshot of ``pid`` for the execve completing at ``line`` (or its seq)."""
        by_seq = None
        for s in self.snapshots:
            if s.kind != "exec" or s.pid != pid:
                continue
            if s.line == line:
                return s
            if s.seq == seq:
                by_seq = s
        return by_seq

    def read_snapshots(self) -> dict[int, list[Snapshot]]:
        """The program's own consistent maps/smaps reads, by the line of their openat."""
        out: dict[int, list[Snapshot]] = {}
        for s in self.snapshots:
            if s.kind == "read" and s.consistent:
                out.setdefault(s.line, []).append(s)
        return out

    def exit_snapshots(self) -> dict[int, list[Snapshot]]:
        """Exit snapshots by pid, in order."""
        out: dict[int, list[Snapshot]] = {}
        for s in self.snapshots:
            if s.kind == "exit":
                out.setdefault(s.pid, []).append(s)
        return out

    def default_design(self) -> str:
        """The design the recorded kernel implements.

        Linux 6.19, and 6.18 with the VM_MAYBE_GUARD backport (this project's machines,
        whose smaps print ``gu``): ``sticky``; 6.15 to 6.17: ``eager``. An older or unknown
        kernel has no guard regions, where every design behaves alike: ``sticky``.
        """
        m = re.match(r"(\d+)\.(\d+)", str(self.manifest.get("kernel", "")))
        if m and (int(m.group(1)), int(m.group(2))) in ((6, 15), (6, 16), (6, 17)):
            return "eager"
        return "sticky"


def is_recording(path: str) -> bool:
    """Whether ``path`` is a recording directory or the trace.strace inside one."""
    root = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not os.path.isdir(path) and os.path.basename(path) != TRACE_NAME:
        return False
    return os.path.isfile(os.path.join(root, MANIFEST_NAME))


def open_recording(path: str) -> Recording:
    """Read the recording at ``path`` (its directory or its trace.strace).

    Raises :class:`UserInputError` naming the manifest and the field for a manifest that
    is not what ``vmalab record`` writes, and for snapshot paths outside the directory.
    """
    root = path if os.path.isdir(path) else os.path.dirname(path) or "."
    mpath = os.path.join(root, MANIFEST_NAME)
    try:
        text = _read_capped(mpath, MAX_MANIFEST_BYTES)
        man = json.loads(text)
    except ValueError as e:
        raise UserInputError(mpath, f"not JSON: {e}") from None
    except RecursionError:
        raise UserInputError(mpath, "not JSON: nested too deeply") from None
    if not isinstance(man, dict):
        raise UserInputError(mpath, "the manifest is not a JSON object")
    if man.get("format", "vmalab-recording") != "vmalab-recording":
        raise UserInputError(mpath, f"format {man.get('format')!r} is not vmalab-recording")
    snaps_raw = man.get("snapshots", [])
    if not isinstance(snaps_raw, list):
        raise UserInputError(f"{mpath}: snapshots", "not a list")
    snaps: list[Snapshot] = []
    for i, s in enumerate(snaps_raw):
        where = f"{mpath}: snapshots[{i}]"
        if not isinstance(s, dict):
            raise UserInputError(where, "not an object")
        try:
            pid, line = int(s["pid"]), int(s["line"])
            kind, seq = str(s["kind"]), int(s.get("seq", 1))
        except (KeyError, TypeError, ValueError) as e:
            raise UserInputError(where, f"bad or missing field: {e}") from None
        if kind not in ("exec", "exit", "read"):
            raise UserInputError(where, f"kind {kind!r} is not exec, exit or read")
        if line < 0 or pid < 0:
            raise UserInputError(where, "negative pid or line")
        stat = s.get("stat") or {}
        if not isinstance(stat, dict):
            raise UserInputError(where, "stat is not an object")
        snaps.append(
            Snapshot(
                pid,
                kind,
                seq,
                line,
                _inside(root, s.get("maps"), where),
                _inside(root, s.get("smaps"), where),
                {k: v for k, v in stat.items() if isinstance(v, int) and not isinstance(v, bool)},
                bool(s.get("consistent", True)),
            )
        )
    files_raw = man.get("files", {})
    if not isinstance(files_raw, dict):
        raise UserInputError(f"{mpath}: files", "not an object")
    files = {
        str(k): v
        for k, v in files_raw.items()
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63
    }
    return Recording(root, man, snaps, files)


def _inside(root: str, rel: object, where: str) -> str | None:
    """A snapshot path of the manifest, which must stay inside the recording."""
    if rel is None:
        return None
    if not isinstance(rel, str) or "\0" in rel:
        raise UserInputError(where, "snapshot path is not a string")
    full = os.path.realpath(os.path.join(root, rel))
    if not full.startswith(os.path.realpath(root) + os.sep):
        raise UserInputError(where, f"snapshot path {rel!r} leaves the recording")
    return full


def _read_capped(path: str, cap: int) -> str:
    """Read a regular file of at most ``cap`` bytes (no FIFO, device or symlink target)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UserInputError(path, f"cannot read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserInputError(path, "not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise UserInputError(path, f"larger than {cap} bytes")
    return data.decode("utf-8", "replace")
