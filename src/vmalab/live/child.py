"""The live runner's child process: runs one program on the real kernel with ctypes.

Started by ``vmalab.live.run_live`` as ``python -m vmalab.live.child`` in its own session.
It reads ``{"program": ..., "options": ...}`` as JSON on stdin and writes one JSON object
(an ``Observation`` plus runner facts) on stdout. Safety (live-kernel-facts section 2):

* every mapping is created with MAP_FIXED (or MAP_FIXED_NOREPLACE) inside an arena that was
  first reserved with MAP_FIXED_NOREPLACE, so it was free; every address range is checked
  against the arena before the syscall (``Runner.check_range`` and ``LiveMachine._inside``);
* user accesses are real one-byte loads and stores made by a ``clone(CLONE_VM|CLONE_VFORK)``
  child on this very mm, so a SIGSEGV or SIGBUS kills only that child;
* ``PR_SET_PDEATHSIG(SIGKILL)``, ``alarm()``, ``RLIMIT_CORE=0``, ``RLIMIT_AS`` and
  ``RLIMIT_FSIZE`` bound this process and its fork children; the parent kills the whole
  session on timeout;
* host memory: file growth (ftruncate, fallocate, pwrite) is charged against the
  ``file_bytes`` budget before the syscall, and the resident memory of the processes alive
  at once against ``rss_bytes`` after every op, both through one shared page so that fork
  children count too (``HostBudget``); a breach ends the run with ``"limit"`` in the answer;
* file names are refused unless they are plain names (no '/', NUL, '.' or '..').
"""

from __future__ import annotations

import ctypes
import faulthandler
import fcntl
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from vmalab import program as P
from vmalab import uapi
from vmalab.errors import ResourceLimitError
from vmalab.live.libc import (
    CLONE_NEWIPC,
    CLONE_VFORK,
    CLONE_VM,
    MAP_FAILED,
    PR_SET_PDEATHSIG,
    PROBE_CODE,
    STACK,
    SYS_MSEAL,
    SYS_MSYNC,
    SYS_PKEY_ALLOC,
    SYS_PKEY_FREE,
    SYS_PKEY_MPROTECT,
    SYS_SHMAT,
    SYS_SHMCTL,
    SYS_SHMDT,
    SYS_SHMGET,
    SYS_USERFAULTFD,
    Libc,
)
from vmalab.live.safety import HostBudget, Refused, plain_name
from vmalab.program.observe import parse_smaps

# The ABI constants come from vmalab.uapi, not from the model's mm/shm.py and
# mm/userfaultfd.py. Imported from those two, the compiled (mypyc) build's runner died of
# SIGSEGV (status -11) in every live test while the pure build passed (CI, stop 20), at
# import, before main() ran. The cause is mypyc bug mypyc/mypyc#1209. The launcher
# (``vmalab.live._LAUNCH``) puts a bare package in place of vmalab/__init__.py, so
# vmalab.mm.shm was the first mm module this process imported. Compiled, the body of its
# dataclass ShmSegment fills ``__annotations__`` with the native type object of
# ``file: File``, and File is imported only under TYPE_CHECKING. vmalab.mm.filemap had
# not been initialised yet, so that type pointer was NULL and PyDict_SetItem crashed on
# it (gdb: CPyDef_vmalab___mm___shm_____top_level__ -> PyDict_SetItem(value=0x0)).
# mm/shm.py now imports File at run time, which ends the crash (built and run: the live
# tests pass with the mm imports back); the constants stay in uapi all the same, since the
# runner needs nothing of the model. tests/test_live_imports.py checks that this process
# imports no vmalab.mm module and that every mm module can be imported first.
from vmalab.uapi import (
    IPC_RMID,
    UFFD_FEATURE_SIGBUS,
    UFFDIO_API,
    UFFDIO_REGISTER,
    UFFDIO_UNREGISTER,
)

SLAB_CACHES = ("anon_vma", "anon_vma_chain", "vm_area_struct")


class LiveMachine:
    """A ``vmalab.program.Machine`` over the calling process and the real kernel."""

    def __init__(self, arena_pages: int, tmpdir: str, budget: HostBudget | None = None) -> None:
        self.lib = Libc()
        self.budget = budget
        self.lo = P.ARENA_BASE
        self.hi = P.ARENA_BASE + arena_pages * P.PAGE
        self._pmd: tuple[int, int, list[tuple[int, int, int, int]]] | None = None
        self.tmpdir = tmpdir
        self.exited = False
        c = self.lib.c
        code = c.mmap(None, P.PAGE, 7, 0x22, -1, 0)
        stack = c.mmap(None, STACK, 3, 0x22 | 0x20000, -1, 0)
        if code in (None, MAP_FAILED) or stack in (None, MAP_FAILED):
            raise self.lib.fail()
        for a in (code, stack):
            if a + STACK > self.lo and a < self.hi:
                raise Refused("helper mapping landed in the arena")
        ctypes.memmove(code, PROBE_CODE, len(PROBE_CODE))
        c.mprotect(code, P.PAGE, 5)
        self.code = code
        self.stack_top = stack + STACK - 64
        self.arg = (ctypes.c_uint64 * 4)()
        self.pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        self.shm_sizes: dict[int, int] = {}
        """Every segment this run created (id: size); removed at the end (``rmid_all``)."""

    def _inside(self, addr: int, length: int) -> None:
        if length < 0 or addr < self.lo or addr + length > self.hi:
            raise Refused(f"[{addr:#x}, {addr + length:#x}) is outside the arena")

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        self._inside(addr, length)
        if flags & uapi.MAP_HUGETLB:
            # the kernel rounds the length up to the huge page size (and MAP_FIXED unmaps
            # all of it before a failed reservation): the whole rounded range must be ours
            log = (flags >> 26) & 0x3F
            if log in (0, 21, 30):
                hsize = 1 << (log or 21)
                self._inside(addr, -(-max(length, 1) // hsize) * hsize)
        if not flags & (uapi.MAP_FIXED | uapi.MAP_FIXED_NOREPLACE):
            raise Refused("mmap without MAP_FIXED")
        r = self.lib.c.mmap(addr, length, prot, flags, fd, offset)
        if r is None or r == MAP_FAILED:
            raise self.lib.fail()
        return int(r)

    def munmap(self, addr: int, length: int) -> None:
        self._inside(addr, length)
        if self.lib.c.munmap(addr, length):
            raise self.lib.fail()

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self._inside(addr, length)
        if self.lib.c.mprotect(addr, length, prot):
            raise self.lib.fail()

    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int:
        self._inside(addr, old)
        if flags & uapi.MREMAP_FIXED:
            self._inside(new_addr, new)
        elif flags & uapi.MREMAP_MAYMOVE:
            # Without MREMAP_FIXED the kernel chooses a free range (new_addr is at most a
            # hint), so nothing mapped can be replaced; it may lie outside the arena.
            self._inside(new_addr, new)
        else:
            self._inside(addr, new)
        r = self.lib.c.mremap(addr, old, new, flags, new_addr)
        if r is None or r == MAP_FAILED:
            raise self.lib.fail()
        return int(r)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        self._inside(addr, length)
        if self.lib.c.madvise(addr, length, advice):
            raise self.lib.fail()

    def mlock(self, addr: int, length: int, onfault: bool) -> None:
        self._inside(addr, length)
        if onfault:
            r = self.lib.c.mlock2(addr, length, uapi.MLOCK_ONFAULT)
        else:
            r = self.lib.c.mlock(addr, length)
        if r:
            raise self.lib.fail()

    def add_seals(self, fd: int, seals: int) -> None:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)

    def _sys(self, nr: int, *args: int) -> int:
        a = list(args) + [0] * (5 - len(args))
        r = self.lib.c.syscall(nr, *a)
        if r == -1:
            raise self.lib.fail()
        return int(r)

    def mseal(self, addr: int, length: int) -> None:
        self._inside(addr, length)
        self._sys(SYS_MSEAL, addr, length, 0)

    def mlockall(self, flags: int) -> None:
        # Refused unless the arena's VMAs are the only ones mlockall could populate
        # cheaply: MCL_CURRENT locks (and faults in) the runner's whole address space,
        # which is bounded by RLIMIT_AS; the VmFlags compared are the arena's only.
        if self.lib.c.mlockall(flags):
            raise self.lib.fail()

    def munlockall(self) -> None:
        if self.lib.c.munlockall():
            raise self.lib.fail()

    def mdwe(self, flags: int) -> int:
        c = self.lib.c
        if c.prctl(uapi.PR_SET_MDWE, flags, 0, 0, 0):
            raise self.lib.fail()
        r = c.prctl(uapi.PR_GET_MDWE, 0, 0, 0, 0)
        if r < 0:
            raise self.lib.fail()
        return int(r)

    def mincore(self, addr: int, length: int) -> bytes:
        self._inside(addr, length)
        n = (length + P.PAGE - 1) // P.PAGE
        vec = (ctypes.c_ubyte * max(n, 1))()
        if self.lib.c.mincore(addr, length, vec):
            raise self.lib.fail()
        return bytes(vec[:n])

    def pkey_alloc(self, rights: int) -> int:
        return self._sys(SYS_PKEY_ALLOC, 0, rights)

    def pkey_free(self, key: int) -> None:
        self._sys(SYS_PKEY_FREE, key & ((1 << 64) - 1))

    def pkey_mprotect(self, addr: int, length: int, prot: int, key: int) -> None:
        self._inside(addr, length)
        self._sys(SYS_PKEY_MPROTECT, addr, length, prot, key & ((1 << 64) - 1))

    def memlock(self, limit: int, cap_ipc_lock: bool) -> None:
        # Only the soft limit (what mlock checks): lowering the hard one too would make
        # a later, larger memlock op fail to raise it again.
        _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if hard != resource.RLIM_INFINITY:
            hard = max(hard, limit)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, hard))
        if not cap_ipc_lock:
            _drop_effective_cap(CAP_IPC_LOCK)

    def munlock(self, addr: int, length: int) -> None:
        self._inside(addr, length)
        if self.lib.c.munlock(addr, length):
            raise self.lib.fail()

    def msync(self, addr: int, length: int, flags: int) -> None:
        self._inside(addr - addr % P.PAGE, length + addr % P.PAGE)
        self._sys(SYS_MSYNC, addr, length, flags)

    def shmget(self, key: int, size: int, flags: int) -> int:
        sid = self._sys(SYS_SHMGET, key, size, flags)
        if sid not in self.shm_sizes:
            self.shm_sizes[sid] = size
        return sid

    def shmat(self, shmid: int, addr: int, flags: int) -> int:
        # Only segments of this run, attached inside the arena (SHM_RND rounds down to a
        # page: SHMLBA is PAGE_SIZE on x86-64).
        size = self.shm_sizes.get(shmid)
        if size is None:
            raise Refused(f"shmat of a segment ({shmid}) this run did not create")
        base = addr - addr % P.PAGE
        self._inside(base, -(-max(size, 1) // P.PAGE) * P.PAGE)
        r = self.lib.c.syscall(SYS_SHMAT, shmid, addr, flags, 0, 0)
        if r == -1:
            raise self.lib.fail()
        return int(r) & ((1 << 64) - 1)

    def shmdt(self, addr: int) -> None:
        # shmdt unmaps every VMA of the attach (from addr on): only attaches made here,
        # which were inside the arena; it may follow a mremap of one, also in the arena.
        self._inside(addr, 1)
        self._sys(SYS_SHMDT, addr)

    def shmctl(self, shmid: int, cmd: int) -> int:
        if cmd != IPC_RMID or shmid not in self.shm_sizes:
            raise Refused(f"shmctl {cmd} of a segment ({shmid}) this run did not create")
        return self._sys(SYS_SHMCTL, shmid, cmd, 0)

    def rmid_all(self) -> None:
        """IPC_RMID of every segment this run created (errors ignored: already gone)."""
        for sid in self.shm_sizes:
            self.lib.c.syscall(SYS_SHMCTL, sid, IPC_RMID, 0, 0, 0)

    def open_devzero(self, write: bool) -> int:
        return os.open("/dev/zero", os.O_RDWR if write else os.O_RDONLY)

    def userfaultfd(self) -> int:
        return self._sys(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)

    def _ioctl(self, fd: int, req: int, buf: Any) -> None:
        if self.lib.c.syscall(16, fd, req, ctypes.addressof(buf), 0, 0) == -1:
            raise self.lib.fail()

    def uffdio_api(self, fd: int, features: int) -> tuple[int, int]:
        # UFFD_FEATURE_SIGBUS always: a fault in a registered range is then a SIGBUS,
        # never a thread blocked for ever (the reply does not depend on it).
        buf = (ctypes.c_uint64 * 3)(0xAA, features | UFFD_FEATURE_SIGBUS, 0)
        self._ioctl(fd, UFFDIO_API, buf)
        return int(buf[1]), int(buf[2])

    def uffdio_register(self, fd: int, start: int, length: int, mode: int) -> int:
        self._inside(start, length)
        buf = (ctypes.c_uint64 * 4)(start, length, mode, 0)
        self._ioctl(fd, UFFDIO_REGISTER, buf)
        return int(buf[3])

    def uffdio_unregister(self, fd: int, start: int, length: int) -> None:
        self._inside(start, length)
        buf = (ctypes.c_uint64 * 2)(start, length)
        self._ioctl(fd, UFFDIO_UNREGISTER, buf)

    def memfd_create(self, name: str, flags: int) -> int:
        if "\0" in name:
            raise Refused("memfd name contains NUL")
        return os.memfd_create(name, flags)

    def open(self, name: str, flags: int) -> int:
        plain_name(name)
        return os.open(os.path.join(self.tmpdir, name), flags | os.O_NOFOLLOW, 0o600)

    def close(self, fd: int) -> None:
        os.close(fd)

    def _charge(self, fd: int, end: int, what: str) -> None:
        if self.budget is not None:
            self.budget.charge(fd, end, what)

    def ftruncate(self, fd: int, length: int) -> None:
        self._charge(fd, length, "ftruncate")
        os.ftruncate(fd, length)

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        if not mode & uapi.FALLOC_FL_PUNCH_HOLE:
            self._charge(fd, offset + length, "fallocate")
        if self.lib.c.fallocate(fd, mode, offset, length):
            raise self.lib.fail()

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        self._charge(fd, offset + len(data), "pwrite")
        return os.pwrite(fd, data, offset)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return os.pread(fd, length, offset)

    def _access(self, addr: int, write: bool, byte: int) -> tuple[str, int]:
        """One real access by a CLONE_VM|CLONE_VFORK child; a fault kills only the child."""
        self._inside(addr, 1)
        a = self.arg
        a[0], a[1], a[2], a[3] = addr, int(write), byte, 0
        pid = self.lib.c.clone(
            self.code, self.stack_top, CLONE_VM | CLONE_VFORK | signal.SIGCHLD, ctypes.addressof(a)
        )
        if pid < 0:
            raise self.lib.fail()
        _, st = os.waitpid(pid, 0)
        if os.WIFSIGNALED(st):
            return signal.Signals(os.WTERMSIG(st)).name, 0
        return "ok", int(a[3]) & 0xFF

    def load(self, addr: int) -> tuple[str, int]:
        return self._access(addr, False, 0)

    def store(self, addr: int, byte: int) -> str:
        return self._access(addr, True, byte)[0]

    def fork(self, run_child: Callable[[P.Machine], P.Observation]) -> P.Observation:
        r, w = os.pipe()
        alarm_left = signal.alarm(0)
        signal.alarm(alarm_left)
        pid = os.fork()
        if pid == 0:  # the fork child: run the nested program, report, exit
            os.close(r)
            code = 0
            try:
                os.close(self.pagemap_fd)  # it still reads the parent's mm
                self.pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY)
                if self.budget is not None:
                    self.budget.forked()
                self.lib.c.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                signal.alarm(max(alarm_left, 1))
                out = run_child(self).to_json()
            except ResourceLimitError as e:
                out, code = {"error": str(e), "limit": _limit_json(e)}, 1
            except BaseException as e:  # noqa: BLE001 - the fork child must always _exit
                # and report: anything escaping would run the parent's code in the child.
                out, code = {"error": f"fork child: {type(e).__name__}: {e}"}, 1
            try:
                data = json.dumps(out).encode()
                while data:
                    data = data[os.write(w, data) :]
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 1 << 16)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        os.waitpid(pid, 0)
        try:
            got = json.loads(b"".join(chunks))
        except ValueError:
            return P.Observation(error="fork child sent no observation")
        if isinstance(got, dict) and isinstance(got.get("limit"), dict):
            lim = got["limit"]
            raise ResourceLimitError(str(lim["resource"]), lim["limit"], str(got["error"]))
        return P.Observation.from_json(got)

    def exit(self) -> None:
        self.exited = True

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, frozenset[str]]]:
        with open("/proc/self/smaps") as f:
            out, pmd = parse_smaps(f, lo, hi)
        self._pmd = (lo, hi, pmd)
        return out

    def pmd_mapped(self, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
        """From the smaps read of the last ``vmas()`` call over the same range (the
        state is always read as vmas, pagemap, pmd_mapped), else a new read."""
        last = self._pmd
        if last is None or last[:2] != (lo, hi):
            self.vmas(lo, hi)
            last = self._pmd
        self._pmd = None
        return last[2] if last is not None else []

    def pagemap(self, addr: int, npages: int) -> list[int]:
        data = os.pread(self.pagemap_fd, 8 * npages, (addr // P.PAGE) * 8)
        return list(struct.unpack(f"<{len(data) // 8}Q", data))

    def slab(self) -> dict[str, int]:
        return read_slab()

    def khugepaged(self, max_ptes_none: int, max_ptes_swap: int, max_ptes_shared: int) -> int:
        raise Refused(
            "khugepaged cannot be run on demand (it scans in the background every 10 s; "
            "waking it needs the host's sysfs knobs)"
        )

    def check(self) -> None:
        """After every op: the resident-memory budget of the live fork tree."""
        if self.budget is not None:
            self.budget.check_rss()


CAP_IPC_LOCK = 14
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _drop_effective_cap(cap: int) -> None:
    """Clear one capability from this thread's effective set (capget + capset)."""
    c = ctypes.CDLL(None, use_errno=True)
    hdr = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if c.syscall(125, hdr, data) != 0:  # capget
        raise OSError(ctypes.get_errno(), "capget")
    data[0 + 3 * (cap // 32)] &= ~(1 << (cap % 32))
    if c.syscall(126, hdr, data) != 0:  # capset
        raise OSError(ctypes.get_errno(), "capset")


def read_slab(shrink: bool = True) -> dict[str, int]:
    """``active_objs`` of the anon_vma, anon_vma_chain and vm_area_struct caches, each cache
    shrunk first (``/sys/kernel/slab/CACHE/shrink``) so per-CPU slabs do not blur the count."""
    if shrink:
        for c in SLAB_CACHES:
            try:
                with open(f"/sys/kernel/slab/{c}/shrink", "w") as f:
                    f.write("1")
            except OSError:
                pass
    out: dict[str, int] = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in SLAB_CACHES:
                out[parts[0]] = int(parts[1])
    return out


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    """Entry point: read the request, run it, print the result JSON."""
    faulthandler.disable()
    for s in (signal.SIGSEGV, signal.SIGBUS):
        signal.signal(s, signal.SIG_DFL)
    req = json.loads(sys.stdin.buffer.read())
    opts: dict[str, Any] = req.get("options", {})
    lib = Libc()
    lib.c.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.alarm(int(opts.get("alarm", 60)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if opts.get("cpu") is not None:
        # One CPU: per-CPU LRU-add batches are then drained by the lru_add_drain() of
        # MADV_COLD/PAGEOUT, which makes reclaim results repeatable.
        os.sched_setaffinity(0, {int(opts["cpu"])})
    out: dict[str, Any] = {}
    own_tmp = "tmpdir" not in opts
    tmpdir = opts.get("tmpdir") or tempfile.mkdtemp(
        prefix=f"vmalab-live-{os.getpid()}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    try:
        prog = P.from_json(req["program"], "program")
        if prog.hugetlb_pool is not None and prog.hugetlb_pool != _host_hugetlb_pool():
            raise Refused(
                f"hugetlb_pool {prog.hugetlb_pool} is not this machine's "
                f"({_host_hugetlb_pool()} pages; the runner does not change the host's pool)"
            )
        size = prog.arena_pages * P.PAGE
        c = lib.c
        r = c.mmap(P.ARENA_BASE, size, 0, 0x22 | uapi.MAP_FIXED_NOREPLACE, -1, 0)
        if r != P.ARENA_BASE:
            raise Refused(
                f"cannot reserve the arena at {P.ARENA_BASE:#x}: {os.strerror(ctypes.get_errno())}"
            )
        c.munmap(P.ARENA_BASE, size)
        # SysV shm: a new IPC namespace (as root), so that keys and ids are the run's own
        c.unshare(CLONE_NEWIPC)
        budget = HostBudget(lib, opts.get("file_bytes"), opts.get("rss_bytes"))
        m = LiveMachine(prog.arena_pages, tmpdir, budget)
        sentinels = []
        if opts.get("sentinels"):
            for a in (P.ARENA_BASE - 2 * P.PAGE, P.ARENA_BASE + size + P.PAGE):
                got = c.mmap(a, P.PAGE, 3, 0x22 | uapi.MAP_FIXED_NOREPLACE, -1, 0)
                if got != a:
                    raise Refused("cannot place sentinel pages")
                ctypes.memset(a, 0xA5, P.PAGE)
                sentinels.append(a)
        if opts.get("hang"):  # test hook: a helper child and a hang, for the timeout test
            pid = os.fork()
            if pid == 0:
                while True:
                    time.sleep(1)
            with open(opts["hang"], "w") as f:
                f.write(f"{os.getpid()} {pid}\n")
            while True:
                time.sleep(1)
        extra = int(opts.get("as_extra", size + (64 << 20)))
        limit = _vm_size() + extra
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out["rlimit_as"] = limit
        # No file may pass the program format's largest offset; EFBIG instead of SIGXFSZ.
        fsize = int(opts.get("fsize", P.MAX_FILE_PAGES * P.PAGE))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        out["rlimit_fsize"] = fsize
        if opts.get("unchecked_ops"):  # test hook: ops that bypassed validation
            prog = P.Program(
                tuple(_raw_op(d) for d in opts["unchecked_ops"]), prog.arena_pages, prog.observe
            )
        try:
            obs = P.execute(prog, m)
        finally:
            m.rmid_all()
        out.update(obs.to_json())
        if sentinels:
            ok = all(ctypes.string_at(a, P.PAGE) == b"\xa5" * P.PAGE for a in sentinels)
            around = m.vmas(P.ARENA_BASE - 2 * P.PAGE, P.ARENA_BASE + size + 2 * P.PAGE)
            spans = {(s, e) for s, e, _ in around}
            ok = ok and all((a, a + P.PAGE) in spans for a in sentinels)
            out["sentinels_intact"] = ok
    except Refused as e:
        out["error"] = f"refused: {e}"
    except ResourceLimitError as e:
        out["error"] = str(e)
        out["limit"] = _limit_json(e)
    except Exception as e:  # noqa: BLE001 - the one catch-all of the live runner
        # Whatever else goes wrong in here (a bad request, a ctypes surprise) must reach
        # the parent as one JSON line, which run_live raises as a LiveError: never a
        # traceback on stdout in place of the answer.
        out["error"] = f"live runner: {type(e).__name__}: {e}"
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()


def _host_hugetlb_pool() -> int:
    """/proc/sys/vm/nr_hugepages (the default 2 MiB pool; 0 if unreadable)."""
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _limit_json(e: ResourceLimitError) -> dict[str, Any]:
    return {"resource": e.resource, "limit": e.limit}


def _raw_op(d: dict[str, Any]) -> P.Op:
    """Build an op without validation (test hook for the refusal checks)."""
    cls = P.OPS[d["op"]]
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "op"})


if __name__ == "__main__":
    main()
