"""Run oracle programs on the real, running Linux kernel.

``run_live(program)`` starts ``python -m vmalab.live.child`` in a new session, hands it the
program and returns its ``Observation``. The child is bounded by a timeout here (the whole
session is killed), by ``alarm()``, ``PR_SET_PDEATHSIG`` and ``RLIMIT_AS`` there.
``live_support()`` says why live runs are impossible (or None), ``detect_design()`` which
vmalab design matches this kernel.

Host safety (docs/hostile-input.md): the child refuses file growth past
``DEFAULT_FILE_BYTES`` (fallocate, ftruncate and pwrite, summed over the whole fork tree),
stops when the tree's resident memory passes ``DEFAULT_RSS_BYTES``, and runs under
RLIMIT_AS and RLIMIT_FSIZE; a breach raises ``LiveResourceLimit`` (a ``LiveError`` and a
``ResourceLimitError``). Each run keeps its files in one folder
``/dev/shm/vmalab-live-<pid>-<random>/``, removed on return, on exceptions, on SIGINT and
on SIGTERM; the next run removes folders whose owner pid is dead (after a SIGKILL).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

from vmalab import program as P
from vmalab import uapi
from vmalab.errors import ResourceLimitError


class LiveError(RuntimeError):
    """The live runner failed (timeout, crash, or it refused the program)."""


class LiveTimeout(LiveError):
    """The live runner exceeded its time limit and was killed with its children."""


class LiveResourceLimit(LiveError, ResourceLimitError):
    """The live run passed one of the runner's budgets (``file_bytes``, ``rss``) and was
    stopped: a ``LiveError`` for the oracle, a ``ResourceLimitError`` (exit status 3) for
    the command line."""

    def __init__(self, resource: str, limit: float, message: str = "") -> None:
        ResourceLimitError.__init__(self, resource, limit, message)


DEFAULT_FILE_BYTES = 512 << 20
"""Bytes the files of one live run (memfds and tmpfs files, the whole fork tree) may grow
to, counted as the high-water size each ftruncate, fallocate and pwrite asks for."""
DEFAULT_RSS_BYTES = 1 << 30
"""Resident memory of the live fork tree (the chain of processes alive at once)."""

_RUN_DIR = re.compile(r"^vmalab-live-(\d+)-")


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join(text.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _run_dirs() -> list[str]:
    out = ["/dev/shm"] if os.path.isdir("/dev/shm") else []
    out.append(tempfile.gettempdir())
    return out


def sweep_stale_run_dirs() -> list[str]:
    """Remove run folders (``vmalab-live-<pid>-*``) whose owner pid is dead; return them.

    A SIGKILLed parent cannot clean up; the next run does. A pid that is alive (possibly
    reused) keeps its folder, which errs on the safe side."""
    removed = []
    for d in _run_dirs():
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            m = _RUN_DIR.match(name)
            if m is None or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            path = os.path.join(d, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class _Terminated(BaseException):
    """SIGTERM arrived during a live run: unwind (removing the run folder), then die."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


# The child imports only vmalab.program, vmalab.uapi, vmalab.errors and vmalab.live: a bare
# package object stands in for vmalab/__init__.py, so the runner neither pays for nor depends
# on importing the model (``python -m vmalab.live.child`` works too).
# The first module of the model such a process imports is imported before any other
# (tests/test_live_imports.py; live/child.py says what that once broke in the compiled build).
_BARE_PACKAGE = """
import os, sys, types
pkg = types.ModuleType("vmalab")
pkg.__path__ = [os.path.join(sys.argv[1], "vmalab")]
sys.modules["vmalab"] = pkg
"""
# faulthandler until child.main() turns it off (its accesses fault on purpose): a crash while
# the child imports then names the module and line in the LiveError (``_death_note``).
_LAUNCH = (
    "import faulthandler\nfaulthandler.enable()\n"
    + _BARE_PACKAGE
    + "from vmalab.live.child import main\nmain()\n"
)


def _src_path() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_live_raw(
    prog: P.Program, *, timeout: float = 30.0, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run ``prog`` in a fresh child; return the child's raw JSON answer (observation fields
    plus ``rlimit_as`` and, with ``options={"sentinels": True}``, ``sentinels_intact``)."""
    opts = dict(options or {})
    opts.setdefault("alarm", int(timeout) + 2)
    opts.setdefault("cpu", min(os.sched_getaffinity(0)))
    opts.setdefault("file_bytes", DEFAULT_FILE_BYTES)
    opts.setdefault("rss_bytes", DEFAULT_RSS_BYTES)
    sweep_stale_run_dirs()
    # SIGTERM would kill this process without unwinding; turn it into an exception while
    # the run folder exists (main thread only, and only over the default disposition).
    catch = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if catch:
        signal.signal(signal.SIGTERM, _on_sigterm)
    terminated = False
    try:
        # The files of ``open`` ops live here; this process removes it even if the child
        # is killed.
        tmpdir = tempfile.mkdtemp(
            prefix=f"vmalab-live-{os.getpid()}-",
            dir="/dev/shm" if os.path.isdir("/dev/shm") else None,
        )
        opts["tmpdir"] = tmpdir
        try:
            return _run_child(prog, opts, timeout)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    except _Terminated:
        terminated = True
        raise
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if terminated:
                os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM, as without us


def _run_child(prog: P.Program, opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = json.dumps({"program": prog.to_json(), "options": opts}).encode()
    env = dict(os.environ)
    env["PYTHONPATH"] = _src_path() + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, _src_path()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        out, err = proc.communicate(req, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        raise LiveTimeout(f"live run exceeded {timeout:g}s; its process group was killed") from None
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    # The child is a session leader; kill whatever of its group is left (fork children).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not out:
        note = _death_note(err.decode(errors="replace"))
        raise LiveError(
            f"live runner died (status {proc.returncode})" + (f": {note}" if note else "")
        )
    try:
        res: dict[str, Any] = json.loads(out)
    except (ValueError, RecursionError) as e:
        raise LiveError(f"live runner sent bad output: {_one_line(str(e))}") from None
    if not isinstance(res, dict):
        raise LiveError("live runner sent bad output: not an object")
    lim = res.get("limit")
    if isinstance(lim, dict):
        raise LiveResourceLimit(
            str(lim.get("resource")),
            float(lim.get("limit") or 0),
            "live run: " + _one_line(str(res.get("error", ""))),
        )
    return res


_FRAME = re.compile(r'File "(.*)", line (\d+) in (.*)')


def _death_note(stderr: str) -> str:
    """The line of a dead runner's stderr worth reporting: the last one, or for a
    faulthandler dump ("Fatal Python error: ...") the error and its innermost three frames
    outside the import machinery (for a crash at import, the import statement is there)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("Fatal Python error:"):
            frames = [_FRAME.fullmatch(f) for f in lines[i + 1 :]]
            own = [f"{m[1]}:{m[2]} {m[3]}" for m in frames if m and not m[1].startswith("<frozen ")]
            return _one_line(ln + (f" at {' < '.join(own[:3])}" if own else ""))
    return _one_line(lines[-1]) if lines else ""


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's own process group (it is a session leader) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()
    proc.wait()


def run_live(prog: P.Program, *, timeout: float = 30.0) -> P.Observation:
    """Run ``prog`` on the real kernel and return its ``Observation``. A refusal or runner
    failure raises ``LiveError``."""
    res = run_live_raw(prog, timeout=timeout)
    obs = P.Observation.from_json(res)
    if obs.error and (obs.error.startswith("refused") or obs.error.startswith("live runner")):
        raise LiveError(_one_line(obs.error))
    return obs


@functools.lru_cache(maxsize=1)
def live_support() -> str | None:
    """None if programs can run on this kernel, else the reason they cannot."""
    if sys.platform != "linux":
        return f"not Linux ({sys.platform})"
    if platform.machine() != "x86_64":
        return f"the live runner's probe is x86-64 code (machine is {platform.machine()})"
    if not os.access("/proc/self/pagemap", os.R_OK):
        return "/proc/self/pagemap is not readable"
    gu, err = _probe_guard()
    if err:
        return err
    return None


def _probe_guard() -> tuple[bool, str | None]:
    """Install a guard on a private anonymous page of this process; return (gu seen, error)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    a = libc.mmap(None, 2 * P.PAGE, 3, 0x22, -1, 0)
    if a is None or a == (1 << 64) - 1:
        return False, "mmap failed"
    try:
        if libc.madvise(a, P.PAGE, uapi.MADV_GUARD_INSTALL) != 0:
            e = ctypes.get_errno()
            return False, f"no guard regions (MADV_GUARD_INSTALL: {os.strerror(e)})"
        # The new mapping may have merged with a neighbour: find the VMA containing it.
        inside = False
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(" ", 1)[0]
                if "-" in head and not line.startswith("VmFlags"):
                    try:
                        s, e = (int(x, 16) for x in head.split("-"))
                    except ValueError:
                        continue
                    inside = s <= a < e
                elif inside and line.startswith("VmFlags:"):
                    return "gu" in line.split()[1:], None
        return False, "no smaps entry for the probe mapping"
    finally:
        libc.munmap(a, 2 * P.PAGE)


@functools.lru_cache(maxsize=1)
def detect_design() -> str:
    """The vmalab design that matches this kernel: "sticky" if smaps shows ``gu`` after a
    guard install (VM_MAYBE_GUARD: 6.19, or 6.18.y with the backport), else "eager"
    (6.15–6.18: install calls anon_vma_prepare() on every VMA)."""
    gu, err = _probe_guard()
    if err:
        raise LiveError(err)
    return "sticky" if gu else "eager"


__all__ = [
    "DEFAULT_FILE_BYTES",
    "DEFAULT_RSS_BYTES",
    "LiveError",
    "LiveResourceLimit",
    "LiveTimeout",
    "detect_design",
    "live_support",
    "run_live",
    "run_live_raw",
    "sweep_stale_run_dirs",
]
