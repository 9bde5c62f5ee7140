"""`vmalab record`: real programs recorded under ptrace (+ perf page faults), then parsed and
replayed. Skipped where ptrace, gcc or perf are unavailable (the reason is in the skip)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vmalab.trace import merge as mg
from vmalab.trace.parse import Syscall, parse_lines
from vmalab.trace.replay import replay
from vmalab.trace.strace_fmt import quote
from vmalab.trace.tracer import Incarnation

PROGRAMS = Path(__file__).parent / "fixtures" / "programs"
VMALAB = [sys.executable, "-m", "vmalab.cli"]


def _ptrace_ok() -> str | None:
    """Why ptrace cannot be used here (None if it can)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "vmalab record needs x86-64 Linux"
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            if int(f.read()) >= 3:
                return "ptrace is disabled (yama ptrace_scope 3)"
    except OSError:
        pass
    return None


def _probe() -> str | None:
    """Record `true` once without perf: the reason if that cannot work here."""
    why = _ptrace_ok()
    if why is not None:
        return why
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run(
            [*VMALAB, "record", "--quiet", "--no-faults", "-o", d + "/r", "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if p.returncode != 0:
            return "vmalab record cannot run here: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return None


_why = _probe()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


def run_record(
    out: Path, *cmd: str, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [*VMALAB, "record", "--quiet", "-o", str(out), *extra, "--", *cmd],
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


def manifest(d: Path) -> dict[str, Any]:
    with open(d / "manifest.json") as f:
        m: dict[str, Any] = json.load(f)
    return m


def lines(d: Path) -> list[str]:
    return (d / "trace.strace").read_text().splitlines()


def need_faults(m: dict[str, Any]) -> None:
    if not m["faults"]["captured"]:
        pytest.skip(f"page faults not captured here: {m['faults']['why_not']}")


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C programs of tests/fixtures/programs, compiled."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("bins")
    for name in (
        "pthreads_spawn",
        "readmaps",
        "guard_loop",
        "tree",
        "thread_exec",
        "allcalls",
        "leader_exit",
    ):
        subprocess.run(
            ["gcc", "-O1", "-pthread", "-o", str(d / name), str(PROGRAMS / f"{name}.c")], check=True
        )
    return d


@pytest.fixture(scope="module")
def recs(bins: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """One recording of each program (shared by the checks below)."""
    root = tmp_path_factory.mktemp("recs")
    procs: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for name, cmd in {
        "spawn": [str(bins / "pthreads_spawn")],
        "readmaps": [str(bins / "readmaps"), str(root / "maps.out")],
        "guard": [str(bins / "guard_loop"), "300", "7"],
        "tree": [str(bins / "tree")],
        "thread_exec": [str(bins / "thread_exec")],
        "leader_exit": [str(bins / "leader_exit")],
        "python": [sys.executable, "-S", str(PROGRAMS / "threads.py")],
    }.items():
        d = root / name
        # in parallel: most of a recording's time is perf starting and stopping
        procs[name] = (
            d,
            subprocess.Popen(
                [*VMALAB, "record", "--quiet", "-o", str(d), "--", *cmd],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    out: dict[str, tuple[Path, Any]] = {}
    for name, (d, p) in procs.items():
        so, se = p.communicate(timeout=180)
        out[name] = (d, subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return out


# -- every recording ---------------------------------------------------------------------------


ALL = ["spawn", "readmaps", "guard", "tree", "thread_exec", "leader_exit", "python"]


@pytest.mark.parametrize("name", ALL)
def test_recording_parses_and_replays(recs: dict[str, tuple[Path, Any]], name: str) -> None:
    d, proc = recs[name]
    assert (d / "manifest.json").exists(), proc.stderr
    m = manifest(d)
    assert m["format"] == "vmalab-recording" and m["version"] == 1
    assert m["counts"]["lines"] == len(lines(d))
    events = list(parse_lines(open(d / "trace.strace")))
    assert sum(isinstance(e, Syscall) for e in events) >= m["counts"]["syscalls"] - 2
    r = replay(str(d / "trace.strace"))
    assert r.malformed == 0
    assert r.model_errors == [], r.model_errors[:3]
    assert m["faults"]["lost"] == 0


@pytest.mark.parametrize("name", ALL)
def test_snapshots_for_every_exec_and_exit(recs: dict[str, tuple[Path, Any]], name: str) -> None:
    d, _ = recs[name]
    m = manifest(d)
    text = lines(d)
    snaps = m["snapshots"]
    execs = [s for s in snaps if s["kind"] == "exec"]
    assert len(execs) == m["counts"]["execs"]
    for s in snaps:
        assert 1 <= s["line"] <= len(text)
        if s["kind"] == "read":  # one file: what the program read (test_record_reads.py)
            assert (d / (s.get("maps") or s["smaps"])).stat().st_size > 0
            assert s["line"] <= s["last_line"] <= len(text)
            continue
        assert (d / s["maps"]).stat().st_size > 0 and (d / s["smaps"]).stat().st_size > 0
        if s["kind"] == "exec":
            last = text[s["line"] - 1]
            assert "execve" in last and last.endswith("= 0"), last
            assert last.split()[0] == str(s["pid"])
    # every process that exited has an exit snapshot, after its exec snapshot
    exited = {int(t.split()[0]) for t in text if "+++ exited with" in t or "+++ killed" in t}
    pids = {s["pid"] for s in snaps if s["kind"] == "exit"}
    procs = {s["pid"] for s in execs} | pids
    assert procs & exited <= pids
    for s in execs:
        ex = [e for e in snaps if e["kind"] == "exit" and e["pid"] == s["pid"]]
        if ex:
            assert ex[0]["line"] >= s["line"]


# -- specific behaviour ------------------------------------------------------------------------


def test_exit_status_and_children(recs: dict[str, tuple[Path, Any]]) -> None:
    d, proc = recs["spawn"]
    assert proc.returncode == 3, proc.stderr
    m = manifest(d)
    assert m["exit_status"] == 3
    assert m["counts"]["execs"] == 4  # the program, fork+exec, posix_spawn, vfork+exec
    assert m["counts"]["threads"] == 3
    text = "\n".join(lines(d))
    assert "clone3({flags=0x4100, exit_signal=17" in text  # posix_spawn: CLONE_VM|CLONE_VFORK
    assert re.search(r"vfork\(\s*(<unfinished \.\.\.>|\) = \d+)", text)
    assert "fork+exec child: 7" in proc.stdout
    assert m["files"], "no mmapped file sizes"


def _faults_after_mmap(text: list[str], tid: str) -> list[str]:
    """The fault lines of ``tid`` inside the ranges its 8192-byte mmaps returned."""
    ranges = []
    for t in text:
        mm = re.match(rf"{tid}\s+\S+ mmap\(NULL, 8192, 0x3, 0x22, -1, 0\)\s+= (0x[0-9a-f]+)", t)
        if mm:
            ranges.append(int(mm.group(1), 16))
    out = []
    for t in text:
        fm = re.match(rf"{tid}\s+\S+ --- PAGE_FAULT \{{address=(0x[0-9a-f]+)", t)
        if fm and any(b <= int(fm.group(1), 16) < b + 8192 for b in ranges):
            out.append(t)
    return out


def test_faults_of_a_thread_and_a_grandchild(recs: dict[str, tuple[Path, Any]]) -> None:
    d, _ = recs["tree"]
    m = manifest(d)
    need_faults(m)
    text = lines(d)
    pids = {t.split()[0] for t in text}
    root = text[0].split()[0]
    hits = {p: _faults_after_mmap(text, p) for p in pids}
    thread = [p for p, h in hits.items() if h and p != root]
    assert len(thread) >= 2, hits  # the thread and the grandchild
    for p in thread:
        assert all("access=write, mode=user" in t for t in hits[p]), hits[p]


def test_fresh_mmap_write_fault_and_kernel_fault_inside_read(
    recs: dict[str, tuple[Path, Any]],
) -> None:
    d, proc = recs["readmaps"]
    assert proc.returncode == 0, proc.stderr
    m = manifest(d)
    need_faults(m)
    text = lines(d)
    pid = text[0].split()[0]
    pat = r"mmap\(NULL, 65536, 0x3, 0x22, -1, 0\)\s+= (0x[0-9a-f]+)"
    rets = [int(x, 16) for x in re.findall(pat, "\n".join(text))]
    assert len(rets) == 2
    user = [t for t in text if f"address={hex(rets[0])}, access=write, mode=user" in t]
    assert user, "no user write fault on the fresh mmap"
    # the second read() of /proc/self/maps into the untouched mmap: a kernel write fault
    # between its <unfinished ...> and <... read resumed> halves
    k = next(
        i for i, t in enumerate(text) if f"address={hex(rets[1])}, access=write, mode=kernel" in t
    )
    assert re.match(rf"{pid}\s+\S+ read\(\d+</proc/{pid}/maps>, <unfinished \.\.\.>$", text[k - 1])
    assert re.match(rf"{pid}\s+\S+ <\.\.\. read resumed>\"", text[k + 1]), text[k + 1]
    assert m["faults"]["kernel"] >= 1 and m["faults"]["user"] >= 1


def test_guard_advice_recorded(recs: dict[str, tuple[Path, Any]]) -> None:
    d, _ = recs["guard"]
    text = "\n".join(lines(d))
    assert re.search(r"madvise\(0x[0-9a-f]+, \d+, 0x66\)", text)
    assert re.search(r"madvise\(0x[0-9a-f]+, \d+, 0x67\)", text)
    assert "mremap(" in text and "clone(" in text


def test_non_leader_exec(recs: dict[str, tuple[Path, Any]]) -> None:
    d, _ = recs["thread_exec"]
    text = lines(d)
    sup = [t for t in text if "+++ superseded by execve in pid" in t]
    assert len(sup) == 1
    assert manifest(d)["counts"]["execs"] == 2


def test_python_threads(recs: dict[str, tuple[Path, Any]]) -> None:
    d, proc = recs["python"]
    assert proc.returncode == 0, proc.stderr
    m = manifest(d)
    assert m["counts"]["threads"] == 4
    if m["faults"]["captured"]:
        tids = {t.split()[0] for t in lines(d) if "PAGE_FAULT" in t}
        assert len(tids) >= 3  # the main thread and workers


def test_no_perf_fallback(bins: Path, tmp_path: Path) -> None:
    d = tmp_path / "r"
    proc = run_record(d, str(bins / "readmaps"), env={"VMALAB_RECORD_NO_PERF": "1"})
    assert proc.returncode == 0
    assert "WARNING: page faults were not seen" in proc.stderr
    m = manifest(d)
    assert m["faults"]["captured"] is False and "VMALAB_RECORD_NO_PERF" in m["faults"]["why_not"]
    assert not any("PAGE_FAULT" in t for t in lines(d))
    assert replay(str(d / "trace.strace")).model_errors == []


def test_sigint_leaves_a_valid_recording(tmp_path: Path) -> None:
    d = tmp_path / "r"
    prog = "import time\nfor _ in range(600): time.sleep(0.05)\n"
    p = subprocess.Popen(
        [*VMALAB, "record", "--quiet", "-o", str(d), "--", sys.executable, "-S", "-c", prog],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list((d / "snapshots").glob("*.exec.maps")):
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, err
    m = manifest(d)
    assert m["interrupted"] is True and m["exit_status"] == 130
    assert lines(d)[-1].endswith("+++ killed by SIGINT +++")
    assert [s["kind"] for s in m["snapshots"]] == ["exec", "exit"]
    assert replay(str(d / "trace.strace")).model_errors == []


def test_matches_real_strace(bins: Path, tmp_path: Path) -> None:
    """Line for line what `strace -f -X raw -y` prints for the same calls (addresses aside)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    os.chdir(tmp_path)
    (tmp_path / "rec").mkdir()
    d = tmp_path / "r"
    prog = str(bins / "allcalls")
    env = {"VMALAB_RECORD_NO_PERF": "1"}
    assert run_record(d, prog, env=env).returncode == 0
    st = tmp_path / "s.strace"
    subprocess.run(
        ["strace", "-f", "--timestamps=unix,ns", "-X", "raw", "-y", "-o", str(st), prog],
        check=True,
        capture_output=True,
    )
    ours = _normalise((d / "trace.strace").read_text().splitlines(), strace=False)
    theirs = _normalise(st.read_text().splitlines(), strace=True)
    assert ours == theirs


_KEEP = set(
    """mmap munmap mprotect pkey_mprotect pkey_alloc pkey_free mremap madvise brk mlock
mlock2 munlock mlockall munlockall shmget shmat shmdt mincore prctl open openat creat close
close_range dup dup2 dup3 fcntl memfd_create ftruncate fallocate chdir fchdir unlink unlinkat
rename renameat renameat2 clone clone3 fork vfork execve exit exit_group""".split()
)


def _normalise(text: list[str], strace: bool) -> list[str]:
    """Per-process call sequences with addresses, pids and env counts masked."""
    out: dict[str, list[str]] = {}
    order: list[str] = []
    pending: dict[str, str] = {}
    for line in text:
        pid, _, body = line.split(None, 2)
        if body.startswith("---"):
            continue
        if body.endswith("<unfinished ...>"):
            pending[pid] = body[: -len("<unfinished ...>")].rstrip()
            continue
        m = re.match(r"<\.\.\. \w+ resumed>(.*)", body)
        if m:
            body = pending.pop(pid, "") + m.group(1)
        name = re.match(r"[a-z_0-9]*", body).group(0)  # type: ignore[union-attr]
        if body.startswith("+++"):
            name = "+++"
        elif name in ("read", "pread64"):
            if "/maps>" not in body:
                continue
        elif strace and name not in _KEEP:
            continue
        # mmap_base is randomised down to 0x7e...: a mapping may land below 0x7f0000000000
        body = re.sub(r"0x7f[0-9a-f]+|0x7[0-9a-e][0-9a-f]{10}\b|0x5[56][0-9a-f]+", "ADDR", body)
        body = re.sub(r"/\* \d+ vars \*/", "/* N vars */", body)
        body = re.sub(r"/proc/\d+/", "/proc/N/", body)
        # shm ids first: a large one would otherwise be masked as a pid on one side only
        body = re.sub(r"shm(get|at)\((.*?)\) = \d+", r"shm\1(\2) = ID", body)
        body = re.sub(r"= \d{3,}$", "= PID", body)
        body = re.sub(r"shmat\(\d+", "shmat(ID", body)
        body = re.sub(
            r"</tmp/bash_jobs[^>]*>|</dev/pts/\d+>|<pipe:\[\d+\]>|<socket:\[\d+\]>", "<STDIO>", body
        )
        body = re.sub(r"\s+= ", " = ", body)
        if pid not in out:
            order.append(pid)
            out[pid] = []
        out[pid].append(body)
    return [f"P{i} {b}" for i, p in enumerate(order) for b in out[p]]


# -- bad input ------------------------------------------------------------------------------


def test_bad_input(tmp_path: Path) -> None:
    p = run_record(tmp_path / "a", "no-such-command-xyz")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "command not found" in p.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:
            p = run_record(ro / "x", "true")
            assert p.returncode == 2 and "cannot write" in p.stderr
    finally:
        ro.chmod(0o700)
    d = tmp_path / "b"
    env = {"VMALAB_RECORD_NO_PERF": "1"}
    assert run_record(d, "true", env=env).returncode == 0
    p = run_record(d, "true", env=env)
    assert p.returncode == 2 and "already holds a recording" in p.stderr
    assert p.stderr.count("\n") == 1
    assert run_record(d, "true", env=env, extra=("--force",)).returncode == 0
    p = subprocess.run(
        [*VMALAB, "record", "-o", str(tmp_path / "c")], capture_output=True, text=True
    )
    assert p.returncode == 2


def test_unwritable_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    p = run_record(f / "sub", "true")
    assert p.returncode == 2 and "cannot write" in p.stderr and p.stderr.count("\n") == 1


# -- pure parts --------------------------------------------------------------------------------


def test_quote_like_strace() -> None:
    assert quote(b"\x7fELF\x02\x01\x01\x00\x00") == '"\\177ELF\\2\\1\\1\\0\\0"'
    assert quote(b'a\n"b\\') == '"a\\n\\"b\\\\"'
    assert quote(b"\x010") == '"\\0010"'
    assert quote(b"x" * 40) == '"' + "x" * 32 + '"...'


def test_perf_lines_and_merge_order() -> None:
    stats = mg.FaultStats()
    perf = [
        "  100  1.000000100: exceptions:page_fault_user: address=0x7f0000001000 ip=0x401000 "
        "error_code=0x6",
        "  100  1.000000300: exceptions:page_fault_kernel: address=0x7f0000002000 "
        "ip=_copy_to_iter error_code=0x2",
        "  100  1.000000350: exceptions:page_fault_kernel: address=0xffff888000000000 "
        "ip=x error_code=0x0",
        "  100  1.000000400: exceptions:page_fault_user: address=0x7f0000003000 ip=0x7f0000003000 "
        "error_code=0x14",
    ]
    recs = [
        (1_000_000_200, 1, 100, "E", -1, "read\tread(3</proc/100/maps>, "),
        (1_000_000_350, 1, 100, "X", -1, 'read\t"", 5)\x1f0'),
    ]
    lives = {100: [Incarnation(0, "fork")]}
    import io

    out = io.StringIO()
    st = mg.merge(
        iter(recs), mg.perf_events(perf, stats), out, offset_ns=0, lives=lives, snapshots=[]
    )
    got = out.getvalue().splitlines()
    assert [g.split(None, 2)[2] for g in got] == [
        "--- PAGE_FAULT {address=0x7f0000001000, access=write, mode=user, ip=0x401000, "
        "error_code=0x6} ---",
        "read(3</proc/100/maps>, <unfinished ...>",
        "--- PAGE_FAULT {address=0x7f0000002000, access=write, mode=kernel, ip=_copy_to_iter, "
        "error_code=0x2} ---",
        '<... read resumed>"", 5) = 0',
        "--- PAGE_FAULT {address=0x7f0000003000, access=exec, mode=user, ip=0x7f0000003000, "
        "error_code=0x14} ---",
    ]
    assert st.faults.user == 2 and st.faults.kernel == 1 and stats.dropped_kernel_addr == 1
    assert got[0].startswith("100   1.000000100 ")
