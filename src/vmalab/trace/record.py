"""``vmalab record -o DIR [--] CMD [ARGS...]``: record a program's address-space history.

The arrangement (docs/recording.md has the argument for each step):

1. perf, when it can be used, runs a tiny Python wrapper as its workload:
   ``perf record --clockid=CLOCK_MONOTONIC -e exceptions:page_fault_user
   -e exceptions:page_fault_kernel -- python -c WRAPPER ...``. perf enables its counters
   (inherited by every descendant) before it lets the wrapper exec, so nothing the
   program does is missed. Without perf the wrapper is started directly.
2. The wrapper writes its pid to a pipe and blocks reading another; the recorder
   PTRACE_SEIZEs it, then releases it; the wrapper execs CMD. The tracer
   (:mod:`vmalab.trace.tracer`) follows the program from that execve on.
3. After the run, ``perf script`` streams the faults, and :mod:`vmalab.trace.merge` merges
   them with the tracer's records by CLOCK_MONOTONIC time into ``trace.strace``.
4. ``manifest.json`` is written last (see notes/recording-spec.md for its fields).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from vmalab.errors import UserInputError
from vmalab.trace import decode as dc
from vmalab.trace import merge as mg
from vmalab.trace.snapshots import ReadSnapshot
from vmalab.trace.tracer import Tracer

NO_PERF_ENV = "VMALAB_RECORD_NO_PERF"
NO_SECCOMP_ENV = "VMALAB_RECORD_NO_SECCOMP"  # every syscall stops (slower; for comparison)
FAULT_METHOD = "perf exceptions:page_fault_user,page_fault_kernel"
_WRAPPER = (
    "import os,sys\n"
    "w,r,nrs=int(sys.argv[1]),int(sys.argv[2]),sys.argv[3]\n"
    "os.write(w,b'%d\\n'%os.getpid());os.close(w)\n"
    "os.read(r,1);os.close(r)\n"
    "if nrs:\n"
    " import ctypes,struct\n"
    " ns=[int(x) for x in nrs.split(',')];n=len(ns)\n"
    " ins=[(0x20,0,0,4),(0x15,0,n+1,0xc000003e),(0x20,0,0,0)]\n"
    " ins+=[(0x15,n-i,0,x) for i,x in enumerate(ns)]+[(6,0,0,0x7fff0000),(6,0,0,0x7ff00000)]\n"
    " code=b''.join(struct.pack('=HBBI',*x) for x in ins)\n"
    " buf=ctypes.create_string_buffer(code,len(code))\n"
    " prog=struct.pack('=HxxxxxxQ',len(ins),ctypes.addressof(buf))\n"
    " L=ctypes.CDLL(None,use_errno=True)\n"
    " os.geteuid()==0 or L.prctl(38,1,0,0,0)\n"
    " L.prctl(22,2,ctypes.c_char_p(prog),0,0)\n"
    "try:os.execv(sys.argv[4],sys.argv[5:])\n"
    "except OSError as e:\n"
    " sys.stderr.write('vmalab record: cannot execute %s: %s\\n'%(sys.argv[4],e.strerror))\n"
    " os._exit(127)\n"
)
_NEEDS = (
    "root, or perf_event_paranoid <= -1, or CAP_PERFMON + CAP_SYS_PTRACE with read "
    "access to tracefs (exceptions:page_fault_user/kernel)"
)


@dataclass
class Options:
    """The command line of ``vmalab record``."""

    out: str
    command: list[str]
    force: bool = False
    faults: bool = True
    baseline: bool = False
    perf_mmap: str = "16M"
    progress: bool = True


def resolve_command(cmd: list[str]) -> str:
    """The executable CMD[0] names (searched in PATH like execvp); UserInputError if none."""
    if not cmd:
        raise UserInputError("record", "no command given")
    name = cmd[0]
    if "/" in name:
        # executed as given, like strace (and execvp) do: the trace shows the same path
        if not os.path.isfile(name) or not os.access(name, os.X_OK):
            raise UserInputError(name, "not an executable file")
        return name
    found = shutil.which(name)
    if found is None:
        raise UserInputError(name, "command not found")
    return os.path.abspath(found)


def prepare_dir(out: str, force: bool) -> None:
    """Create DIR, DIR/snapshots and DIR/raw; refuse a DIR holding a recording unless force."""
    for name in ("manifest.json", "trace.strace"):
        if os.path.exists(os.path.join(out, name)) and not force:
            raise UserInputError(out, "already holds a recording (use --force to replace it)")
    try:
        os.makedirs(out, exist_ok=True)
        for sub in ("snapshots", "raw"):
            d = os.path.join(out, sub)
            if force and os.path.isdir(d):
                shutil.rmtree(d)
            os.makedirs(d, exist_ok=True)
        for name in ("manifest.json", "trace.strace"):
            if force and os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        probe = os.path.join(out, "raw", ".probe")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise UserInputError(out, f"cannot write: {e.strerror}") from None


def perf_unavailable(opts: Options) -> str | None:
    """Why perf cannot record the faults here, or None if it should work."""
    if not opts.faults:
        return "disabled by --no-faults"
    if os.environ.get(NO_PERF_ENV):
        return f"disabled by {NO_PERF_ENV}"
    if shutil.which("perf") is None:
        return "perf is not installed; " + _NEEDS
    if os.geteuid() != 0:
        try:
            with open("/proc/sys/kernel/perf_event_paranoid") as f:
                level = int(f.read())
        except (OSError, ValueError):
            level = 2
        if level > -1:
            return f"not root and perf_event_paranoid is {level}; needs " + _NEEDS
    return None


def _perf_version() -> str | None:
    try:
        return (
            subprocess.run(
                ["perf", "version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


class Session:
    """One recording: launch, trace, merge, manifest."""

    def __init__(self, opts: Options, exe: str) -> None:
        self.opts = opts
        self.exe = exe
        self.out = opts.out
        self.raw = os.path.join(opts.out, "raw")
        self.perf_pid: int | None = None
        self.why_not: str | None = perf_unavailable(opts)
        self.tracer: Tracer | None = None
        self._alarm_armed = False

    # -- launch ---------------------------------------------------------------------------

    def _spawn(self, use_perf: bool) -> tuple[int, int | None, int]:
        """Fork perf (or the wrapper); return (launcher pid, wrapper pid or None, release fd)."""
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        nrs = "" if os.environ.get(NO_SECCOMP_ENV) else ",".join(map(str, sorted(dc.ENTER)))
        wrapper = [
            sys.executable,
            "-S",
            "-E",
            "-c",
            _WRAPPER,
            str(w1),
            str(r2),
            nrs,
            self.exe,
            *self.opts.command,
        ]
        if use_perf:
            # -B -N: no build-id work at the end; --no-bpf-event: no side-band thread
            # (it holds perf's exit back by up to a second)
            argv = [
                "perf",
                "record",
                "-q",
                "-B",
                "-N",
                "--no-bpf-event",
                "-o",
                os.path.join(self.raw, "perf.data"),
                "--clockid=CLOCK_MONOTONIC",
                "-m",
                self.opts.perf_mmap,
                "-e",
                "exceptions:page_fault_user",
                "-e",
                "exceptions:page_fault_kernel",
                "-e",
                "raw_syscalls:sys_enter",
                "--filter",
                mg.perf_filter(),
                "-e",
                "raw_syscalls:sys_exit",
                "--filter",
                mg.perf_filter(),
                "--",
                *wrapper,
            ]
        else:
            argv = wrapper
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setpgid(0, 0)
                os.close(r1)
                os.close(w2)
                os.set_inheritable(w1, True)
                os.set_inheritable(r2, True)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        os.close(w1)
        os.close(r2)
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(r1, 64)
            if not chunk:
                break
            data += chunk
        os.close(r1)
        return pid, int(data) if data.strip() else None, w2

    def launch(self, tracer: Tracer) -> None:
        """Start the program under the tracer (with perf when it is available)."""
        use_perf = self.why_not is None
        launcher, wrapper, release = self._spawn(use_perf)
        if wrapper is None:
            os.close(release)
            _, status = os.waitpid(launcher, 0)
            if not use_perf:
                raise UserInputError(self.exe, "the recorder's wrapper did not start")
            self.why_not = "perf record failed to start (its message is above); needs " + _NEEDS
            launcher, wrapper, release = self._spawn(False)
            if wrapper is None:
                raise UserInputError(self.exe, "the recorder's wrapper did not start")
            use_perf = False
        if use_perf:
            self.perf_pid = launcher
            tracer.extra_children[launcher] = None
        try:
            tracer.attach(wrapper)
        except OSError as e:
            # never let the wrapper run the program untraced
            for pid in (wrapper, launcher):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            os.close(release)
            for pid in {wrapper, launcher}:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            raise UserInputError(
                "ptrace",
                f"cannot trace the program: {e.strerror or e} "
                "(needs ptrace of one's own children: Yama ptrace_scope <= 1, "
                "or CAP_SYS_PTRACE)",
            ) from None
        os.write(release, b"g")
        os.close(release)

    # -- signals --------------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: Any) -> None:
        tr = self.tracer
        if tr is None:
            return
        if tr.interrupted:
            tr.kill_all(signal.SIGKILL)
            return
        tr.interrupted = True
        print("vmalab record: interrupted; stopping the program", file=sys.stderr)
        tr.kill_all(signal.SIGINT)
        signal.setitimer(signal.ITIMER_REAL, 2.0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.tracer is not None and self.tracer.tasks:
            print("vmalab record: the program did not exit; killing it", file=sys.stderr)
            self.tracer.kill_all(signal.SIGKILL)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        """Record; write trace.strace and manifest.json; return the program's exit status."""
        started = time.time()
        offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        t0 = time.perf_counter()
        events_path = os.path.join(self.raw, "events.tsv")
        old_int = signal.signal(signal.SIGINT, self._on_sigint)
        old_term = signal.signal(signal.SIGTERM, self._on_sigint)
        old_alrm = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            with open(events_path, "w", buffering=1 << 20) as ev:
                tracer = self.tracer = Tracer(
                    ev, os.path.join(self.out, "snapshots"), progress=self.opts.progress
                )
                self.launch(tracer)
                tracer.run()
            perf_status = self._wait_perf(tracer)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGALRM, old_alrm)
        data = os.path.join(self.raw, "perf.data")
        root = tracer.root_status
        same_death = (
            perf_status is not None
            and perf_status < 0
            and root is not None
            and os.WIFSIGNALED(root)
            and -perf_status == os.WTERMSIG(root)
        )
        bad = perf_status is None or (perf_status < 0 and not same_death)
        if self.perf_pid is not None and (bad or not os.path.exists(data)):
            # perf record exits with its workload's status, and re-raises the signal that
            # killed it: only another signal, or no data, is a failure
            self.why_not = f"perf record failed (status {perf_status}); needs " + _NEEDS
        t1 = time.perf_counter()
        st = self._merge(tracer, events_path, offset)
        seconds = time.perf_counter() - t0
        code = _exit_code(tracer.root_status)
        self._manifest(tracer, st, started, seconds, code)
        self._report(tracer, st, seconds, time.perf_counter() - t1)
        return code

    def _wait_perf(self, tracer: Tracer) -> int | None:
        """Wait for perf to write its data (it ends when its workload is reaped)."""
        pid = self.perf_pid
        if pid is None:
            return None
        status = tracer.extra_children.get(pid)
        deadline = time.monotonic() + 30
        while status is None:
            try:
                wpid, st = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if wpid:
                status = st
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGINT)
                deadline = time.monotonic() + 30
            time.sleep(0.01)
        return os.waitstatus_to_exitcode(status)

    def _merge(self, tracer: Tracer, events_path: str, offset: int) -> mg.MergeStats:
        fstats = mg.FaultStats()
        proc = None
        faults: Any = iter(())
        if self.why_not is None and self.perf_pid is not None:
            proc = mg.run_perf_script("perf", os.path.join(self.raw, "perf.data"))
            assert proc.stdout is not None
            faults = mg.perf_events(proc.stdout, fstats)
        with (
            open(events_path) as ev,
            open(os.path.join(self.out, "trace.strace"), "w", buffering=1 << 20) as out,
        ):
            st = mg.merge(
                mg.tracer_records(ev),
                faults,
                out,
                offset_ns=offset,
                lives=tracer.lives,
                snapshots=tracer.snapshots,
                fstats=fstats,
            )
        if proc is not None:
            proc.wait()
        if not os.environ.get("VMALAB_RECORD_KEEP_RAW"):
            os.unlink(events_path)
        return st

    def _manifest(
        self, tracer: Tracer, st: mg.MergeStats, started: float, seconds: float, code: int
    ) -> None:
        from importlib.metadata import version

        f = st.faults
        captured = self.why_not is None
        man: dict[str, Any] = {
            "format": "vmalab-recording",
            "version": 1,
            "command": list(self.opts.command),
            "executable": self.exe,
            "cwd": os.getcwd(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(seconds, 3),
            "exit_status": code,
            "interrupted": tracer.interrupted,
            "kernel": os.uname().release,
            "tools": {
                "vmalab": version("vmalab"),
                "perf": _perf_version() if captured else None,
                "python": platform.python_version(),
            },
            "faults": {
                "captured": captured,
                "method": FAULT_METHOD if captured else None,
                "user": f.user,
                "kernel": f.kernel,
                "lost": f.lost,
                "why_not": self.why_not,
            },
            "counts": {
                "lines": st.lines,
                "syscalls": tracer.stats.syscalls,
                "faults": f.user + f.kernel,
                "processes": tracer.stats.processes,
                "threads": tracer.stats.threads,
                "execs": tracer.stats.execs,
            },
            "snapshots": [
                {
                    "pid": s.pid,
                    "kind": s.kind,
                    "seq": s.seq,
                    "line": s.line,
                    "maps": s.maps,
                    "smaps": s.smaps,
                    **({"stat": s.stat} if s.stat else {}),
                }
                for s in tracer.snapshots
            ],
            "files": tracer.stats.files,
            "recorder": {
                "stops": tracer.stats.stops,
                "perf_mmap": self.opts.perf_mmap,
                "traced_run_seconds": round(tracer.t_end - tracer.t_start, 3),
                "tracer_cpu_seconds": round(tracer.cpu, 3),
                "perf_events": f.events,
                "lost_records": f.lost_records,
                "faults_dropped_pre_exec": f.dropped_pre_exec,
                "faults_dropped_kernel_address": f.dropped_kernel_addr,
                "faults_dropped_untraced": f.dropped_untraced,
                "perf_stamped_calls": st.perf_stamped,
                "tracer_stamped_calls": st.tracer_stamped,
                "order_violations": st.order_violations,
            },
        }
        _read_entries(man, tracer)
        with open(os.path.join(self.out, "manifest.json"), "w") as fh:
            json.dump(man, fh, indent=1)
            fh.write("\n")

    def _report(self, tracer: Tracer, st: mg.MergeStats, wall: float, merge: float) -> None:
        s = tracer.stats
        loop = tracer.t_end - tracer.t_start
        us = tracer.cpu * 1e6 / s.stops if s.stops else 0.0
        f = st.faults
        if self.why_not is None:
            fl = (
                f"perf: {f.events} events, {f.lost} lost; "
                f"{f.user + f.kernel} faults ({f.user} user, {f.kernel} kernel)"
            )
        else:
            fl = "faults NOT recorded"
        print(
            f"vmalab record: {wall:.2f} s wall ({loop:.2f} s traced run, {merge:.2f} s merge); "
            f"{s.stops} stops, {us:.1f} µs tracer CPU/stop; {st.lines} lines, "
            f"{s.syscalls} calls; {fl}; "
            f"{len(tracer.snapshots)} snapshots → {self.out}",
            file=sys.stderr,
        )
        if self.why_not is not None:
            print(
                f"vmalab record: WARNING: page faults were not seen ({self.why_not}); "
                "this is a syscall-only recording",
                file=sys.stderr,
            )
        if f.lost:
            print(
                f"vmalab record: WARNING: perf lost {f.lost} events; raise --perf-mmap",
                file=sys.stderr,
            )


def _read_entries(man: dict[str, Any], tracer: Tracer) -> None:
    """Turn the manifest entries of read snapshots into Addendum 2's form, and count them.

    ``{"pid", "kind": "read", "seq", "line", "last_line", "maps"|"smaps", "consistent",
    "why_not", ...}`` (notes/recording-spec.md; docs/recording.md, "Read snapshots").
    """
    reads = consistent = 0
    for s, e in zip(tracer.snapshots, man["snapshots"], strict=True):
        r = s.read if isinstance(s, ReadSnapshot) else None
        if r is None:
            continue
        reads += 1
        consistent += r.consistent
        e.pop("maps", None)
        e.pop("smaps", None)
        e.pop("stat", None)
        e["last_line"] = r.last_line
        e[r.what] = s.maps if r.what == "maps" else s.smaps
        e["consistent"] = r.consistent
        e.update(
            {
                "why_not": "; ".join(r.why) or None,
                "reader": r.reader,
                "path": r.path,
                "bytes": r.nbytes,
                "reads": r.reads,
                "eof": r.eof,
                "complete": r.complete,
                "truncated": r.truncated,
            }
        )
    man["counts"]["read_snapshots"] = reads
    man["counts"]["read_snapshots_consistent"] = consistent


def _exit_code(status: int | None) -> int:
    """The program's exit status as a shell reports it (128+signal if killed)."""
    if status is None:
        return 1
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 128 + os.WTERMSIG(status)


def baseline(cmd: list[str], exe: str) -> float:
    """Wall time of one untraced run of the command."""
    t0 = time.perf_counter()
    subprocess.run(cmd, executable=exe, check=False)
    return time.perf_counter() - t0


def record(opts: Options) -> int:
    """Run ``vmalab record``; returns the program's exit status."""
    if not re.fullmatch(r"[1-9][0-9]*[KMG]?", opts.perf_mmap):
        raise UserInputError("--perf-mmap", f"expected a size like 16M, not {opts.perf_mmap!r}")
    exe = resolve_command(opts.command)
    prepare_dir(opts.out, opts.force)
    base = baseline(opts.command, exe) if opts.baseline else None
    t0 = time.perf_counter()
    code = Session(opts, exe).run()
    wall = time.perf_counter() - t0
    if base is not None:
        print(
            f"vmalab record: untraced {base:.3f} s, recorded {wall:.3f} s "
            f"(×{wall / base if base > 0 else float('inf'):.1f})",
            file=sys.stderr,
        )
    return code
