"""Replay of SysV shm, msync, /dev/zero and userfaultfd calls (trace/handlers_ipc.py),
checked against what the real kernel showed.

``fixtures/traces/ipc_uffd.c`` attaches a SysV segment twice, removes it and detaches
one attach, msyncs, opens a userfaultfd (UFFDIO_API with UFFD_FEATURE_SIGBUS), registers
two pages of an anonymous mapping for missing faults, unregisters one, maps /dev/zero
shared, prints its /proc/self/maps, then closes the userfaultfd and detaches. The
``.strace`` (``strace -f -y``) and ``.maps`` beside it are from one run on Linux 6.18.44;
the same program is also traced afresh when gcc and strace are there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vmalab.trace.replay import replay

FIX = Path(__file__).parent / "fixtures" / "traces"
_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")


def _anon_like(maps: str) -> list[tuple[int, int, str]]:
    """(start, end, perms) of the maps lines that are anonymous, SysV or /dev/zero."""
    out = []
    for line in maps.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name = m.group(5)
        if name.startswith("[") or (name and "SYSV" not in name and "/dev/zero" not in name):
            continue
        out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return out


def _check(trace: Path, maps: str) -> None:
    lines = trace.read_text().splitlines()
    pid = int(lines[0].split()[0])
    # the maps were printed before close(userfaultfd): stop the replay there
    stop = next(
        i for i, ln in enumerate(lines, 1) if re.search(r"close\(\d+<anon_inode:\[userfaultfd", ln)
    )
    r = replay(str(trace), "sticky", host_files=True, stop_at_line=stop - 1)
    assert not r.unsupported, r.unsupported
    handled = {ev.split("(")[0] for _, ev, _ in r.model_errors}
    assert not handled & {"shmget", "shmat", "shmdt", "shmctl", "msync", "userfaultfd", "ioctl"}
    p = r.process(pid)
    model = {(v.start, v.end): v for v in p.vmas()}
    real = _anon_like(maps)
    assert len(real) >= 6
    for s, e, perms in real:
        v = model.get((s, e))
        assert v is not None, f"{s:#x}-{e:#x} {perms} is not a model VMA"
        assert ("sh" in v.flags) == (perms[3] == "s")
        assert ("wr" in v.flags) == (perms[1] == "w")
    # the registered page (second page of the 8-page mapping) is `um`, its neighbours not
    shm_at = int(re.search(r"shmat\(\d+, NULL, 0\)\s+= (0x[0-9a-f]+)", trace.read_text())[1], 16)
    assert "sh" in model[(shm_at, shm_at + 3 * 4096)].flags
    reg = re.search(r"UFFDIO_REGISTER, \{range=\{start=(0x[0-9a-f]+)", trace.read_text())
    start = int(reg[1], 16)
    assert "um" in model[(start, start + 4096)].flags
    assert not any("um" in v.flags for (s, _e), v in model.items() if s != start)
    # to the end: close releases the registration, shmdt the last attach
    end = next(i for i, ln in enumerate(lines, 1) if "exit_group(" in ln)
    r = replay(str(trace), "sticky", host_files=True, stop_at_line=end - 1)
    p = r.process(pid)
    assert not any("um" in v.flags for v in p.vmas())
    assert not any(v.start == shm_at for v in p.vmas())
    r.kernel.check()


def test_replay_recorded_ipc_uffd_trace() -> None:
    _check(FIX / "ipc_uffd.strace", (FIX / "ipc_uffd.maps").read_text())


@pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("strace")) or os.geteuid() != 0,
    reason="needs gcc and strace (as root)",
)
def test_replay_fresh_ipc_uffd_trace(tmp_path: Path) -> None:
    exe = tmp_path / "ipc"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(FIX / "ipc_uffd.c")], check=True)
    out = subprocess.run(
        ["strace", "-f", "-y", "-o", str(tmp_path / "t.strace"), str(exe)],
        check=True,
        capture_output=True,
        text=True,
    )
    _check(tmp_path / "t.strace", out.stdout)
