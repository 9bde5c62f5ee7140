"""Replay of synthetic strace logs into the model: syscalls, tasks, files, start dumps."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

vmalab = pytest.importorskip("vmalab")
if not hasattr(vmalab, "Kernel"):
    pytest.skip("model not available yet", allow_module_level=True)

from vmalab.trace.parse import TraceSyntaxError  # noqa: E402
from vmalab.trace.replay import replay  # noqa: E402

P = 4096
A = 0x7F0000000000


def write(tmp_path: Path, text: str, name: str = "t.trace") -> str:
    """Write a log (leading indentation removed, ``\\`` continues a line); return its path."""
    lines = [ln.strip() for ln in text.strip().replace("\\\n", " ").splitlines()]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def ranges(proc: object) -> list[tuple[int, int]]:
    """(start, end) of every VMA."""
    return [(v.start, v.end) for v in proc.vmas()]  # type: ignore[attr-defined]


def test_basic_calls(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        100 1.0 mmap(NULL, {16 * P}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) \
            = {A:#x}
        100 1.1 mprotect({A:#x}, {P}, PROT_NONE) = 0
        100 1.2 madvise({A + 8 * P:#x}, {P}, 0x66 /* MADV_??? */) = 0
        100 1.3 munmap({A + 15 * P:#x}, {P}) = 0
        100 1.4 mmap({A + 0x100000:#x}, {P}, 0x3, 0x100022, -1, 0) = {A + 0x100000:#x}
        100 1.5 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = -1 ENOMEM (Cannot allocate memory)
    """,
    )
    for design in vmalab.DESIGNS:
        r = replay(t, design)
        p = r.process(100)
        assert ranges(p) == [(A, A + P), (A + P, A + 15 * P), (A + 0x100000, A + 0x101000)]
        assert p.pagemap(A + 8 * P)[0] & vmalab.uapi.PM_GUARD_REGION
        assert r.failed_skipped == 1 and r.applied == 5 and r.model_error_count == 0
        r.kernel.check()


def test_madvise_enomem_is_replayed(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        7 mmap({A:#x}, {4 * P}, 0x3, 0x32, -1, 0) = {A:#x}
        7 madvise({A:#x}, {8 * P}, 0x66) = -1 ENOMEM (Cannot allocate memory)
    """,
    )
    r = replay(t)
    assert r.process(7).pagemap(A, 4)[3] & vmalab.uapi.PM_GUARD_REGION
    assert r.model_error_count == 0


def test_unfinished_threads_and_fork(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        1 mmap(NULL, {4 * P}, 0x3, 0x22, -1, 0) = {A:#x}
        1 clone3({{flags=0x3d0f00, stack={A:#x}, stack_size=0x4000}} <unfinished ...>
        2 mmap(NULL, {P}, 0x3, 0x22, -1, 0 <unfinished ...>
        1 <... clone3 resumed> => {{parent_tid=[2]}}, 88) = 2
        2 <... mmap resumed>) = {A + 0x10000:#x}
        1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, \
            child_tidptr=0x7f) = 3
        3 munmap({A:#x}, {4 * P}) = 0
        2 exit(0) = ?
        2 +++ exited with 0 +++
        3 exit_group(0) = ?
        3 +++ exited with 0 +++
    """,
    )
    r = replay(t)
    assert r.process(1) is r.process(2)
    assert ranges(r.process(1)) == [(A, A + 4 * P), (A + 0x10000, A + 0x11000)]
    assert r.forks == 1 and r.threads == 1
    assert len(r.kernel.processes) == 1
    r.kernel.check()


def test_vfork_child_runs_before_parent_returns(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        1 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A:#x}
        1 vfork( <unfinished ...>
        2 munmap({A:#x}, {P}) = 0
        2 exit_group(127) = ?
        1 <... vfork resumed>) = 2
        2 +++ exited with 127 +++
    """,
    )
    r = replay(t)
    assert ranges(r.process(1)) == []  # the vfork child shares the mm
    assert r.threads == 1 and r.forks == 0
    assert len(r.kernel.processes) == 1


def test_brk_grows_and_shrinks(tmp_path: Path) -> None:
    b = 0x555555580000
    t = write(
        tmp_path,
        f"""
        5 brk(NULL) = {b:#x}
        5 brk({b + 0x21000:#x}) = {b + 0x21000:#x}
        5 brk({b + 0x42000:#x}) = {b + 0x42000:#x}
        5 brk({b + 0x10800:#x}) = {b + 0x10800:#x}
    """,
    )
    r = replay(t)
    assert ranges(r.process(5)) == [(b, b + 0x11000)]


def test_file_mappings_by_y_path_and_open_tracking(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 openat(AT_FDCWD, "/data/f.bin", O_RDONLY|O_CLOEXEC) = 3
        5 mmap(NULL, {8 * P}, PROT_READ, MAP_PRIVATE, 3, 0) = {A:#x}
        5 dup2(3, 7) = 7
        5 close(3) = 0
        5 mmap(NULL, {2 * P}, PROT_READ, MAP_SHARED, 7, {4 * P:#x}) = {A + 0x100000:#x}
        5 mmap(NULL, {P}, 0x1, 0x2, 9</usr/lib/x.so>, 0) = {A + 0x200000:#x}
        5 mmap(NULL, {P}, 0x1, 0x2, 11, 0) = {A + 0x300000:#x}
        5 mmap(NULL, {P}, 0x3, 0x2, 12</dev/zero>, 0) = {A + 0x400000:#x}
        5 mmap(NULL, {P}, 0x3, 0x1, 13</dev/dri/card0>, 0) = {A + 0x500000:#x}
    """,
    )
    r = replay(t)
    vs = r.process(5).vmas()
    assert [(v.start, v.path) for v in vs] == [
        (A, "/data/f.bin"),
        (A + 0x100000, "/data/f.bin"),
        (A + 0x200000, "/usr/lib/x.so"),
        (A + 0x400000, None),
    ]
    assert vs[1].pgoff == 4
    assert r.unsupported == {"mmap(unknown fd)": 1, "mmap(device)": 1}


def test_posix_shm_and_deleted_files_are_files(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 mmap(NULL, 32, 0x3, 0x1, 5</dev/shm/sem.x>(deleted), 0) = {A:#x}
        5 mmap(NULL, {P}, 0x1, 0x2, 6</tmp/gone.so (deleted)>, 0) = {A + 0x10000:#x}
    """,
    )
    r = replay(t)
    # the kernel's d_path() text: an unlinked file keeps " (deleted)" in maps
    assert [v.path for v in r.process(5).vmas()] == [
        "/dev/shm/sem.x (deleted)",
        "/tmp/gone.so (deleted)",
    ]
    assert r.unsupported == {}


def test_memfd_and_mremap(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 memfd_create("pool", MFD_CLOEXEC) = 3
        5 ftruncate(3, {16 * P}) = 0
        5 mmap(NULL, {16 * P}, 0x3, 0x1, 3, 0) = {A:#x}
        5 mmap(NULL, {4 * P}, 0x3, 0x22, -1, 0) = {A + 0x100000:#x}
        5 mremap({A + 0x100000:#x}, {4 * P}, {8 * P}, MREMAP_MAYMOVE) = {A + 0x200000:#x}
        5 mremap({A + 0x200000:#x}, {8 * P}, {2 * P}, 0) = {A + 0x200000:#x}
    """,
    )
    r = replay(t)
    vs = r.process(5).vmas()
    assert [(v.start, v.end) for v in vs] == [(A, A + 16 * P), (A + 0x200000, A + 0x202000)]
    assert "memfd:pool" in (vs[0].path or "")


def test_execve_builds_an_elf_layout(tmp_path: Path) -> None:
    exe = os.path.realpath(sys.executable)
    t = write(
        tmp_path,
        f"""
        9 execve("{exe}", ["python3"], 0x7ffd /* 3 vars */) = 0
        9 brk(NULL) = 0x555555600000
        9 exit_group(0) = ?
    """,
    )
    r = replay(t, stop_at_line=2, host_files=True)
    (lay,) = r.exec_layouts
    assert lay.method == "elf" and lay.path == exe
    paths = {v.path for v in r.process(9).vmas()}
    assert exe in paths
    r.kernel.check()


def test_execve_reads_no_host_file_unless_asked(tmp_path: Path) -> None:
    exe = os.path.realpath(sys.executable)
    t = write(
        tmp_path,
        f"""
        9 execve("{exe}", ["python3"], 0x7ffd /* 3 vars */) = 0
    """,
    )
    r = replay(t)
    assert r.exec_layouts[0].method == "none" and r.process(9).vmas() == []


def test_execve_of_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = write(
        tmp_path,
        f"""
        9 execve("{fifo}", ["x"], 0x7ffd /* 3 vars */) = 0
        9 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000000000
    """,
    )
    r = replay(t, host_files=True)  # the FIFO is refused (not a regular file), not opened
    assert r.exec_layouts[0].method == "none" and len(r.process(9).vmas()) == 1


def test_relative_execve_resolves_against_the_traced_cwd(tmp_path: Path) -> None:
    exe = os.path.realpath(sys.executable)
    d, name = os.path.split(exe)
    t = write(
        tmp_path,
        f"""
        9 execve("{name}", ["python3"], 0x7ffd /* 3 vars */) = 0
        9 openat(-100<{d}>, "x", 0) = -1 ENOENT (No such file or directory)
    """,
    )
    r = replay(t, host_files=True)
    assert r.exec_layouts[0].path == exe and r.exec_layouts[0].method == "elf"


def test_execve_of_missing_binary_is_empty(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        """
        9 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000000000
        9 execve("/no/such/binary", ["x"], 0x7ffd /* 3 vars */) = 0
    """,
    )
    r = replay(t)
    assert r.exec_layouts[0].method == "none"
    assert r.process(9).vmas() == [] and r.exits == 1


def test_stop_at_line_and_start_dump(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A:#x}
        5 munmap({A:#x}, {P}) = 0
        5 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A + 0x10000:#x}
        5 munmap({A + 0x4000:#x}, {P}) = 0
    """,
    )
    assert ranges(replay(t, stop_at_line=1).process(5)) == [(A, A + P)]
    dump = (
        f"{A:x}-{A + 8 * P:x} rw-p 00000000 00:00 0 \n"
        f"{A + 8 * P:x}-{A + 9 * P:x} rw-p 00000000 00:00 0 \n"
        f"{A + 0x20000:x}-{A + 0x22000:x} r--p 00001000 fe:00 12  /usr/lib/y.so\n"
        f"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n"
    )
    r = replay(t, start=(5, 2, dump))
    assert r.start_method == "maps-dump"
    assert ranges(r.process(5)) == [
        (A, A + 4 * P),
        (A + 5 * P, A + 8 * P),
        (A + 8 * P, A + 9 * P),
        (A + 0x10000, A + 0x11000),
        (A + 0x20000, A + 0x22000),
    ]
    r.kernel.check()


def test_malformed_line_names_its_number(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        """
        5 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000000000
        5 mmap(NULL, 4096, PROT_BOGUS, 0x22, -1, 0) = 0x7f0000010000
        this is not strace
    """,
    )
    with pytest.raises(ValueError, match="line 2"):
        replay(t)
    r = replay(t, lenient=True)
    assert r.malformed == 2 and len(r.process(5).vmas()) == 1


def test_unsupported_and_ignored_are_counted(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        """
        5 remap_file_pages(0x7f0000000000, 4096, 0, 1, 0) = 0
        5 shmat(3, NULL, 0) = 0x7f0000000000
        5 read(0, "", 10) = 0
        5 frobnicate(1, 2) = 0
    """,
    )
    r = replay(t)
    assert r.unsupported == {"remap_file_pages": 1, "shmat(unknown segment)": 1}
    assert r.ignored == {"read": 1, "frobnicate": 1}


def test_model_rejection_is_recorded_not_fatal(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 mprotect({A:#x}, {P}, 0x1) = 0
        5 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A:#x}
    """,
    )
    r = replay(t)
    assert r.model_error_count == 1 and r.model_errors[0][2] == "ENOMEM"
    assert ranges(r.process(5)) == [(A, A + P)]


def test_guardify_rewrites_glibc_stack_guards(tmp_path: Path) -> None:
    lines = []
    for i in range(4):
        base = A + i * 0x100000
        lines.append(f"5 mmap(NULL, {65 * P}, 0, 0x20022, -1, 0) = {base:#x}")
        lines.append(f"5 mprotect({base + P:#x}, {64 * P}, 0x3) = 0")
    t = write(tmp_path, "\n".join(lines))
    plain = replay(t, "sticky")
    g = replay(t, "sticky", guardify=True)
    assert len(plain.process(5).vmas()) == 8
    assert len(g.process(5).vmas()) == 4
    assert g.guardify.mprotect_rewritten == 4
    assert g.process(5).pagemap(A)[0] & vmalab.uapi.PM_GUARD_REGION


_line = st.one_of(
    st.sampled_from(
        [
            "5 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000000000",
            "5 munmap(0x7f0000000000, 4096) = 0",
            "5 madvise(0x7f0000000000, 4096, 0x66) = 0",
            "5 mprotect(0x7f0000000000, 99999999999999999999999, 0) = 0",
            "5 mmap(0xffffffffffffffffff, 4096, 0x3, 0x22, -1, 0) = 0xffffffffffffffffff",
            "6 clone(child_stack=NULL, flags=SIGCHLD) = 7",
            "7 exit_group(0) = ?",
            '5 execve("/nonexistent", [], 0x0) = 0',
            "5 brk(NULL) = 0x555555555000",
            "5 brk(0x555555600000) = 0x555555600000",
            "5 frob(1) = 0",
            "5 mremap(0x7f0000000000, 4096, 8192, 1) = 0x7f0000100000",
        ]
    ),
    st.text(max_size=40),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_line, max_size=15))
def test_fuzz_replay_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    p = tmp_path / "fuzz.trace"
    p.write_text("\n".join(lines) + "\n")
    try:
        r = replay(str(p))
    except TraceSyntaxError as e:
        assert "line" in str(e)
        return
    r.kernel.check()
    r = replay(str(p), lenient=True)
    r.kernel.check()


def test_start_from_smaps_applies_vmflags(tmp_path: Path) -> None:
    t = write(tmp_path, f"5 munmap({A + 0x100000:#x}, {P}) = 0")
    smaps = "\n".join(
        [
            f"{A:x}-{A + 4 * P:x} rw-p 00000000 00:00 0 ",
            "Size:                 16 kB",
            "Anonymous:             8 kB",
            "THPeligible:    0",
            "VmFlags: rd wr mr mw me dc ac ",
            f"{A + 4 * P:x}-{A + 8 * P:x} rw-p 00000000 00:00 0 ",
            "Size:                 16 kB",
            "Anonymous:             4 kB",
            "VmFlags: rd wr mr mw me wf ac ",
            f"{A + 8 * P:x}-{A + 9 * P:x} ---p 00000000 00:00 0 ",
            "VmFlags: mr mw me ac ",
            f"{A + 9 * P:x}-{A + 10 * P:x} ---p 00000000 00:00 0 ",
            "VmFlags: mr mw me ac ",
            f"{A + 0x100000:x}-{A + 0x101000:x} r--p 00000000 00:00 0 ",
            "Anonymous:             0 kB",
            "VmFlags: rd mr mw me lo ",
            "",
        ]
    )
    r = replay(t, start=(5, 0, smaps))
    vs = r.process(5).vmas()
    assert [(v.start, v.end) for v in vs] == [
        (A, A + 4 * P),
        (A + 4 * P, A + 8 * P),
        (A + 8 * P, A + 9 * P),
        (A + 9 * P, A + 10 * P),
    ]
    assert "dc" in vs[0].flags and "wf" in vs[1].flags
    assert vs[0].anon_vma is not None and vs[1].anon_vma is not None
    r.kernel.check()


def test_bad_dump_is_a_located_error(tmp_path: Path) -> None:
    from vmalab.errors import UserInputError

    t = write(tmp_path, "5 brk(NULL) = 0x1000")
    with pytest.raises(UserInputError) as ei:
        replay(t, start=(5, 0, "00400000-00401000 r-xp 00000000 00:00 0 /x\nnonsense here\n"))
    assert ei.value.location == "start dump:2"


def test_relative_paths_follow_cwd_and_dirfd(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        5 chdir("/srv/db") = 0
        5 openat(AT_FDCWD, "t1.dat", O_RDONLY) = 3
        5 mmap(NULL, {P}, PROT_READ, MAP_PRIVATE, 3, 0) = {A:#x}
        5 openat(AT_FDCWD, "/etc", O_RDONLY|O_DIRECTORY) = 4
        5 openat(4, "../srv/x.dat", O_RDONLY) = 5
        5 mmap(NULL, {P}, PROT_READ, MAP_PRIVATE, 5, 0) = {A + 0x10000:#x}
    """,
    )
    r = replay(t)
    assert [v.path for v in r.process(5).vmas()] == ["/srv/db/t1.dat", "/srv/x.dat"]


def test_execve_from_a_thread_continues_under_the_leader_pid(tmp_path: Path) -> None:
    t = write(
        tmp_path,
        f"""
        10 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A:#x}
        10 clone3({{flags=0x3d0f00}} => {{parent_tid=[11]}}, 88) = 11
        11 execve("/no/such/prog", ["x"], 0x7ffd /* 1 var */ <unfinished ...>
        10 +++ superseded by execve in pid 11 +++
        10 <... execve resumed>) = 0
        10 mmap(NULL, {P}, 0x3, 0x22, -1, 0) = {A + 0x10000:#x}
    """,
    )
    r = replay(t)
    assert [(v.start, v.end) for v in r.process(10).vmas()] == [(A + 0x10000, A + 0x11000)]
    assert r.execs == 1 and len(r.kernel.processes) == 1


def test_mlockall_mseal_and_pkeys_replay(tmp_path: Path) -> None:
    """mlockall(MCL_FUTURE) locks later mappings, mseal shows "sl" and the trace's EPERM
    munmap is replayed as refused, munlockall unlocks; pkey_alloc gives the trace's key."""
    t = write(
        tmp_path,
        f"""
        5 mmap(NULL, {4 * P}, 0x3, 0x22, -1, 0) = {A:#x}
        5 mlockall(0x2) = 0
        5 mmap(NULL, {2 * P}, 0x3, 0x22, -1, 0) = {A + 0x10000:#x}
        5 mseal({A:#x}, {4 * P}, 0) = 0
        5 munmap({A:#x}, {P}) = -1 EPERM (Operation not permitted)
        5 prctl(0xf, "name") = 0
    """,
    )
    r = replay(t, "sticky")
    flags = [v.flags for v in r.process(5).vmas()]
    assert "sl" in flags[0] and "lo" not in flags[0]
    assert "lo" in flags[1] and "sl" not in flags[1]
    assert r.model_error_count == 0 and r.unsupported == {}
    t2 = write(
        tmp_path,
        f"""
        5 mmap(NULL, {2 * P}, 0x3, 0x22, -1, 0) = {A:#x}
        5 mlockall(0x2) = 0
        5 munlockall() = 0
        5 mmap(NULL, {2 * P}, 0x3, 0x22, -1, 0) = {A + 0x10000:#x}
    """,
    )
    assert all("lo" not in v.flags for v in replay(t2, "sticky").process(5).vmas())


def test_a_budget_breach_stops_the_replay_with_exit_3(tmp_path: Path) -> None:
    """The budget is no model error: the replay stops, the CLI says so in one line."""
    import subprocess

    t = write(
        tmp_path,
        f"""
        5 mmap(NULL, {1 << 30}, 0x3, 0x22, -1, 0) = {A:#x}
        5 madvise({A:#x}, {1 << 30}, 0x17) = 0
    """,
    )
    env = {**os.environ, "VMALAB_BUDGET": "pages=4096"}
    res = subprocess.run(
        [sys.executable, "-m", "vmalab.cli", "replay", str(t)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 3, res.stderr
    assert res.stderr.startswith("vmalab: resource limit:") and res.stderr.count("\n") == 1


def test_anon_vma_names(tmp_path: Path) -> None:
    """PR_SET_VMA_ANON_NAME on a kernel with CONFIG_ANON_VMA_NAME: equal names merge,
    the named part is split off, maps prints [anon:NAME] and [anon_shmem:NAME]; without
    the option (this project's 6.18.44) the prctl is EINVAL."""
    from vmalab import Kernel, uapi

    k = Kernel("sticky")
    p = k.spawn()
    rw, anon = uapi.PROT_READ | uapi.PROT_WRITE, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
    a = p.mmap(0, 16 * P, rw, anon)
    with pytest.raises(OSError) as e:
        p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, a, P, "x")
    assert e.value.errno == errno.EINVAL
    k.anon_vma_name = True
    p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, a + 4 * P, 4 * P, "pool")
    p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, a + 8 * P, 4 * P, "pool")
    s = p.mmap(0, 4 * P, rw, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS)
    p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, s, 4 * P, "shm")
    names = {(v.start - a) // P: v.path for v in p.vmas() if v.start >= a and v.start < a + 16 * P}
    assert names == {0: None, 4: "[anon:pool]", 12: None}
    assert "[anon_shmem:shm]" in p.maps()
    with pytest.raises(OSError) as e:
        p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, a, P, "bad$name")
    assert e.value.errno == errno.EINVAL
    p.prctl(uapi.PR_SET_VMA, uapi.PR_SET_VMA_ANON_NAME, a + 4 * P, 8 * P, None)
    assert len([v for v in p.vmas() if a <= v.start < a + 16 * P]) == 1  # merged again
    k.check()


def test_budget_option(tmp_path: Path) -> None:
    """`vmalab --budget SPEC` bounds the model like $VMALAB_BUDGET; a bad spec is exit 2."""
    import subprocess

    t = write(
        tmp_path,
        f"""
        5 mmap(NULL, {1 << 30}, 0x3, 0x22, -1, 0) = {A:#x}
        5 madvise({A:#x}, {1 << 30}, 0x17) = 0
    """,
    )
    env = {k: v for k, v in os.environ.items() if k != "VMALAB_BUDGET"}
    cmd = [sys.executable, "-m", "vmalab.cli", "--budget"]
    res = subprocess.run(
        [*cmd, "pages=4096", "replay", str(t)], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 3 and "resource limit" in res.stderr
    res = subprocess.run(
        [*cmd, "bogus=1", "replay", str(t)], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 2 and res.stderr.startswith("vmalab: --budget:")


def _docstring(f: object) -> str | None:
    """``f.__doc__``, or for a mypyc-compiled function (no ``__doc__``) its source's docstring."""
    if f.__doc__:
        return str(f.__doc__)
    import ast

    module, name = str(getattr(f, "__module__", "")), str(getattr(f, "__name__", ""))
    mod_file = Path(sys.modules[module].__file__ or "")
    src = mod_file.with_name(module.rsplit(".", 1)[-1] + ".py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_docstring(node)
    return None


def test_one_dispatch_table_of_syscall_families() -> None:
    """Every modelled call has one handler, in exactly one family module, found through the
    one table ``HANDLERS``; what the replay does not model is counted, not dispatched."""
    from vmalab.trace import handlers_fs, handlers_ipc, handlers_mm, handlers_task
    from vmalab.trace import replay as R

    families = [
        handlers_mm.HANDLERS,
        handlers_fs.HANDLERS,
        handlers_task.HANDLERS,
        handlers_ipc.HANDLERS,
    ]
    names = [n for fam in families for n in fam]
    assert len(names) == len(set(names))
    assert set(names) == set(R.HANDLERS) == R.MODELLED
    assert {"mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "mseal"} <= set(
        handlers_mm.HANDLERS
    )
    assert {"openat", "close", "dup2", "fcntl", "memfd_create", "renameat2"} <= set(
        handlers_fs.HANDLERS
    )
    assert {"clone3", "vfork", "execve", "exit_group"} <= set(handlers_task.HANDLERS)
    assert {"shmat", "shmdt", "msync", "userfaultfd", "ioctl"} <= set(handlers_ipc.HANDLERS)
    assert not handlers_mm.UNMODELLED & R.MODELLED
    assert all(_docstring(h) for h in R.HANDLERS.values())


def test_unmodelled_memory_call_is_unsupported(tmp_path: Path) -> None:
    """A memory call without a handler is counted in ``unsupported``, another in
    ``ignored``; neither is applied."""
    t = write(
        tmp_path,
        """
        5 remap_file_pages(0x7f0000000000, 4096, 0, 1, 0) = 0
        5 getpid() = 5
        5 mmap(NULL, 8192, 0x3, 0x22, -1, 0) = 0x7f0000100000
    """,
    )
    r = replay(t)
    assert r.unsupported == {"remap_file_pages": 1}
    assert r.ignored == {"getpid": 1}
    assert r.applied == 1
