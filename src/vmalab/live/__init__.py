"""Run oracle programs on the real, running Linux kernel.

``run_live(program)`` starts ``python -m vmalab.live.child`` in a new session, hands it the
program and returns its ``Observation``. The child is bounded by a timeout here (the whole
session is killed), by ``alarm()``, ``PR_SET_PDEATHSIG`` and ``RLIMIT_AS`` there.
``live_support()`` says why live runs are impossible (or None), ``detect_design()`` which
vmalab design matches this kernel.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from vmalab import program as P


class LiveError(RuntimeError):
    """The live runner failed (timeout, crash, or it refused the program)."""


class LiveTimeout(LiveError):
    """The live runner exceeded its time limit and was killed with its children."""


# The child imports only vmalab.program, vmalab.uapi, vmalab.errors and vmalab.live: a bare
# package object stands in for vmalab/__init__.py, so the runner neither pays for nor depends
# on importing the model (``python -m vmalab.live.child`` works too).
_LAUNCH = """
import os, sys, types
pkg = types.ModuleType("vmalab")
pkg.__path__ = [os.path.join(sys.argv[1], "vmalab")]
sys.modules["vmalab"] = pkg
from vmalab.live.child import main
main()
"""


def _src_path() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_live_raw(prog: P.Program, *, timeout: float = 30.0,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``prog`` in a fresh child; return the child's raw JSON answer (observation fields
    plus ``rlimit_as`` and, with ``options={"sentinels": True}``, ``sentinels_intact``)."""
    opts = dict(options or {})
    opts.setdefault("alarm", int(timeout) + 2)
    opts.setdefault("cpu", min(os.sched_getaffinity(0)))
    # The files of ``open`` ops live here; this process removes it even if the child is killed.
    tmpdir = tempfile.mkdtemp(prefix="vmalab-live-",
                              dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    opts["tmpdir"] = tmpdir
    try:
        return _run_child(prog, opts, timeout)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _run_child(prog: P.Program, opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = json.dumps({"program": prog.to_json(), "options": opts}).encode()
    env = dict(os.environ)
    env["PYTHONPATH"] = _src_path() + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, _src_path()], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
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
        raise LiveError(f"live runner died (status {proc.returncode}): "
                        f"{err.decode(errors='replace').strip()[-400:]}")
    try:
        res: dict[str, Any] = json.loads(out)
    except ValueError as e:
        raise LiveError(f"live runner sent bad output: {e}") from None
    return res


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
        raise LiveError(obs.error)
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
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    a = libc.mmap(None, 2 * P.PAGE, 3, 0x22, -1, 0)
    if a is None or a == (1 << 64) - 1:
        return False, "mmap failed"
    try:
        if libc.madvise(a, P.PAGE, P.uapi.MADV_GUARD_INSTALL) != 0:
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


__all__ = ["LiveError", "LiveTimeout", "detect_design", "live_support", "run_live",
           "run_live_raw"]
