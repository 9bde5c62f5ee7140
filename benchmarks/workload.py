"""The mixed operation program of benchmark case (a) and the three drivers that run it.

An *op program* is a deterministic sequence of address-space operations inside a reserved
arena of ``arena_pages`` pages, generated from a seed. It is stored as a flat array of
little-endian ``int32`` records ``(op, page_offset, npages, arg)`` (see ``RECORD``), the
format that ``kdriver.c`` reads. The generator keeps a per-page shadow of the arena
(mapped, protection, guard marker, populated) so that every generated operation is valid:
mprotect, guard install/remove and writes only touch fully mapped ranges, and writes only
hit writable pages without a guard marker. Hence no operation fails and no store faults
with a signal, on the real kernel or in the model.

Drivers:

* ``run_c``: compiles ``kdriver.c`` with ``cc`` and runs the program on the real kernel.
* ``run_ctypes``: the same on the real kernel via libc through ``ctypes`` (fallback, and
  a second figure that includes Python call overhead).
* ``run_model``: the same on a ``vmalab.Process``.

Each returns a ``DriverResult`` with elapsed seconds and the arena's final VMA layout, so
that the model's result can be checked against the kernel's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED = 0x02, 0x20, 0x10
MAP_FIXED_NOREPLACE = 0x100000
MADV_GUARD_INSTALL, MADV_GUARD_REMOVE = 102, 103

#: Op codes of the binary program (shared with kdriver.c).
OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_GUARD_INSTALL, OP_GUARD_REMOVE, OP_WRITE = range(6)
OP_NAMES = ("mmap", "munmap", "mprotect", "guard_install", "guard_remove", "write")

#: One record: op, page offset in the arena, number of pages, argument (prot or byte).
RECORD = struct.Struct("<iiii")

#: Default arena base: 1 GiB aligned, far from anything glibc or CPython maps.
ARENA_BASE = 0x200000000000

HERE = Path(__file__).resolve().parent


@dataclass
class Program:
    """A generated op program: the records, the arena geometry and per-op statistics."""

    ops: list[tuple[int, int, int, int]]
    arena_pages: int
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    write_faults: int = 0  # writes that hit a page not yet populated (a real page fault)

    def to_bytes(self) -> bytes:
        """The program in the binary format read by kdriver.c."""
        return b"".join(RECORD.pack(*op) for op in self.ops)


def generate(n_ops: int, seed: int, arena_pages: int = 2048) -> Program:
    """Generate ``n_ops`` valid operations over an arena of ``arena_pages`` pages.

    Mix (by draw): mmap 10 %, munmap 6 %, mprotect 30 % (splits and merges: prots are
    r, rw and none), guard install 12 %, guard remove 10 %, write 32 %. Op 0 maps the
    whole arena read-write so that the arena starts full. Lengths are 1-16 pages.
    """
    rng = random.Random(seed)
    mapped = bytearray(arena_pages)
    prot = bytearray(arena_pages)
    guard = bytearray(arena_pages)
    populated = bytearray(arena_pages)
    ops: list[tuple[int, int, int, int]] = [(OP_MMAP, 0, arena_pages, PROT_READ | PROT_WRITE)]
    for i in range(arena_pages):
        mapped[i] = 1
        prot[i] = PROT_READ | PROT_WRITE
    counts = dict.fromkeys(OP_NAMES, 0)
    counts["mmap"] = 1
    faults = 0
    prots = (PROT_READ, PROT_READ | PROT_WRITE, PROT_NONE)

    def full(off: int, n: int) -> bool:
        return all(mapped[off : off + n])

    while len(ops) < n_ops:
        r = rng.random()
        n = rng.randint(1, 16)
        off = rng.randrange(0, arena_pages - n + 1)
        if 0.16 <= r < 0.68:  # needs a fully mapped range: a few tries at another place
            for _ in range(8):
                if full(off, n):
                    break
                n = rng.randint(1, 16)
                off = rng.randrange(0, arena_pages - n + 1)
        if r < 0.10:
            p = rng.choice(prots[:2])
            ops.append((OP_MMAP, off, n, p))
            mapped[off : off + n] = b"\x01" * n
            prot[off : off + n] = bytes([p]) * n
            guard[off : off + n] = bytes(n)
            populated[off : off + n] = bytes(n)
            counts["mmap"] += 1
        elif r < 0.16:
            ops.append((OP_MUNMAP, off, n, 0))
            mapped[off : off + n] = bytes(n)
            guard[off : off + n] = bytes(n)
            populated[off : off + n] = bytes(n)
            counts["munmap"] += 1
        elif r < 0.46:
            if not full(off, n):
                continue
            p = rng.choice(prots)
            ops.append((OP_MPROTECT, off, n, p))
            prot[off : off + n] = bytes([p]) * n
            counts["mprotect"] += 1
        elif r < 0.58:
            if not full(off, n):
                continue
            ops.append((OP_GUARD_INSTALL, off, n, 0))
            guard[off : off + n] = b"\x01" * n
            populated[off : off + n] = bytes(n)
            counts["guard_install"] += 1
        elif r < 0.68:
            if not full(off, n):
                continue
            ops.append((OP_GUARD_REMOVE, off, n, 0))
            guard[off : off + n] = bytes(n)
            counts["guard_remove"] += 1
        else:
            for _ in range(8):
                page = rng.randrange(arena_pages)
                if mapped[page] and prot[page] & PROT_WRITE and not guard[page]:
                    break
            else:
                continue
            ops.append((OP_WRITE, page, 1, rng.randrange(1, 256)))
            if not populated[page]:
                faults += 1
                populated[page] = 1
            counts["write"] += 1
    return Program(ops, arena_pages, seed, counts, faults)


@dataclass
class DriverResult:
    """Outcome of running a program once: wall seconds for the op loop and final layout."""

    driver: str
    seconds: float
    n_ops: int
    errors: int
    layout: list[tuple[int, int, str]]  # (start page, end page, perms) of arena VMAs
    pagemap: str = ""  # per arena page: G guard marker, P present, . neither (or unmapped)

    @property
    def us_per_op(self) -> float:
        """Mean microseconds per operation."""
        return self.seconds * 1e6 / self.n_ops


def _maps_layout(text: str, base: int, arena_pages: int) -> list[tuple[int, int, str]]:
    """Arena VMAs of a /proc/PID/maps text as (start page, end page, perms) tuples."""
    out = []
    lim = base + arena_pages * PAGE
    for line in text.splitlines():
        rng, perms = line.split()[:2]
        s, e = (int(x, 16) for x in rng.split("-"))
        if s >= base and e <= lim:
            out.append(((s - base) // PAGE, (e - base) // PAGE, perms))
    return out


# --------------------------------------------------------------------------- C driver


def compile_kdriver(workdir: Path) -> Path | None:
    """Compile kdriver.c with ``cc -O2``; None when no compiler is available."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = workdir / "kdriver"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "kdriver.c")], check=True)
    return exe


def run_c(prog: Program, exe: Path, repeats: int = 3, base: int = ARENA_BASE) -> DriverResult:
    """Run the program on the real kernel with the C driver; best of ``repeats`` runs."""
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "ops.bin"
        path.write_bytes(prog.to_bytes())
        out = subprocess.run(
            [str(exe), str(path), hex(base), str(prog.arena_pages), str(repeats)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    head, _, rest = out.partition("\n")
    pm_line, _, maps = rest.partition("\n")
    info = json.loads(head)
    return DriverResult(
        "c",
        min(info["seconds"]),
        len(prog.ops),
        info["errors"],
        _maps_layout(maps, base, prog.arena_pages),
        pm_line.removeprefix("PAGEMAP "),
    )


# ----------------------------------------------------------------------- ctypes driver


def run_ctypes(prog: Program, base: int = ARENA_BASE) -> DriverResult:
    """Run the program on the real kernel through libc via ctypes, in a forked child.

    The child is used so that the arena never outlives the measurement and a bug can
    not corrupt this process; the child reports through a pipe.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(rfd)
            res = _ctypes_child(prog, base)
            os.write(wfd, json.dumps(res).encode())
        except BaseException:  # noqa: BLE001 - report any failure as exit status
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 1 << 16):
        data += chunk
    os.close(rfd)
    _, st = os.waitpid(pid, 0)
    if st != 0 or not data:
        raise RuntimeError(f"ctypes driver child failed (status {st})")
    res = json.loads(data)
    return DriverResult(
        "ctypes",
        res["seconds"],
        len(prog.ops),
        res["errors"],
        [(int(s), int(e), str(pr)) for s, e, pr in res["layout"]],
    )


def _ctypes_child(prog: Program, base: int) -> dict[str, object]:
    """Body of the ctypes driver (runs in the forked child)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    for fn in (libc.munmap, libc.mprotect, libc.madvise):
        fn.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    length = prog.arena_pages * PAGE
    got = libc.mmap(
        base, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0
    )
    if got != base:
        raise OSError("arena reservation failed")
    libc.munmap(base, length)
    mmap, munmap, mprotect, madvise = libc.mmap, libc.munmap, libc.mprotect, libc.madvise
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    errors = 0
    from_addr = ctypes.c_ubyte.from_address
    t0 = time.perf_counter()
    for op, off, n, arg in prog.ops:
        a = base + off * PAGE
        ln = n * PAGE
        if op == OP_WRITE:
            from_addr(a).value = arg
            continue
        if op == OP_MMAP:
            rc = 0 if mmap(a, ln, arg, flags, -1, 0) == a else -1
        elif op == OP_MUNMAP:
            rc = munmap(a, ln)
        elif op == OP_MPROTECT:
            rc = mprotect(a, ln, arg)
        elif op == OP_GUARD_INSTALL:
            rc = madvise(a, ln, MADV_GUARD_INSTALL)
        else:
            rc = madvise(a, ln, MADV_GUARD_REMOVE)
        if rc != 0:
            errors += 1
    secs = time.perf_counter() - t0
    with open("/proc/self/maps") as f:
        layout = _maps_layout(f.read(), base, prog.arena_pages)
    return {"seconds": secs, "errors": errors, "layout": layout}


# ------------------------------------------------------------------------ model driver


def run_model(
    prog: Program, design: str = "tagged", base: int = ARENA_BASE, profiler: object | None = None
) -> DriverResult:
    """Run the program on a fresh vmalab Process of ``design``.

    ``profiler``, if given, is an object with ``enable()``/``disable()`` (cProfile) wrapped
    around the op loop only.
    """
    import vmalab

    proc = vmalab.Kernel(design).spawn()
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    mmap, munmap, mprotect = proc.mmap, proc.munmap, proc.mprotect
    madvise, write = proc.madvise, proc.write
    byte = [bytes([i]) for i in range(256)]
    errors = 0
    if profiler is not None:
        profiler.enable()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for op, off, n, arg in prog.ops:
        a = base + off * PAGE
        try:
            if op == OP_WRITE:
                write(a, byte[arg])
            elif op == OP_MMAP:
                mmap(a, n * PAGE, arg, flags)
            elif op == OP_MUNMAP:
                munmap(a, n * PAGE)
            elif op == OP_MPROTECT:
                mprotect(a, n * PAGE, arg)
            elif op == OP_GUARD_INSTALL:
                madvise(a, n * PAGE, MADV_GUARD_INSTALL)
            else:
                madvise(a, n * PAGE, MADV_GUARD_REMOVE)
        except (OSError, vmalab.SegmentationFault):
            errors += 1
    secs = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()  # type: ignore[attr-defined]
    layout = _maps_layout(proc.maps(), base, prog.arena_pages)
    return DriverResult(
        f"model:{design}",
        secs,
        len(prog.ops),
        errors,
        layout,
        model_pagemap(proc, layout, base, prog.arena_pages),
    )


def model_pagemap(
    proc: object, layout: list[tuple[int, int, str]], base: int, arena_pages: int
) -> str:
    """The arena's pagemap summary (as kdriver prints it) from the model's pagemap."""
    pm_present, pm_guard = 1 << 63, 1 << 58
    out = ["."] * arena_pages
    for s, e, _ in layout:
        for i, ent in enumerate(proc.pagemap(base + s * PAGE, e - s)):  # type: ignore[attr-defined]
            out[s + i] = "G" if ent & pm_guard else "P" if ent & pm_present else "."
    return "".join(out)


def generate_mixed(n_ops: int, seed: int, arena_pages: int = 2048) -> Program:
    """The mixed sequence of issue 13: 1-page mmaps into a PROT_NONE reservation.

    Op 0 reserves the whole arena ``PROT_NONE`` (``mmap(MAP_FIXED)``, like a
    ``MAP_NORESERVE`` reservation). Then rounds of eleven ops on a random page pair
    ``p, p+1`` of the reservation (``n_ops // 11`` rounds; a last partial round is cut):

    1. mmap page p rw (MAP_FIXED: splits the reservation in three),
    2. write page p (a first-touch fault: anon_vma and a page),
    3. mmap page p+1 rw (merges with p's VMA),
    4. write page p+1 (fault),
    5. MADV_GUARD_INSTALL on p+1 (zaps the page, installs the marker),
    6. mprotect p to r (split),
    7. mprotect p back to rw (merge),
    8. MADV_GUARD_REMOVE on p+1,
    9. write page p+1 (fault again: the guard install zapped it),
    10. munmap p and p+1,
    11. mmap p and p+1 PROT_NONE (the reservation is whole again: a merge on both sides).

    Each round leaves the arena as it found it except for the random pair, so the live
    VMA count stays small (1-5) and each op's cost is the cost of the operation itself.
    Every op is valid on the kernel and in the model (no error, no SIGSEGV).
    """
    rng = random.Random(seed)
    rw = PROT_READ | PROT_WRITE
    ops: list[tuple[int, int, int, int]] = [(OP_MMAP, 0, arena_pages, PROT_NONE)]
    counts = dict.fromkeys(OP_NAMES, 0)
    counts["mmap"] = 1
    while len(ops) + 11 <= n_ops:
        p = rng.randrange(1, arena_pages - 2)
        b1, b2, b3 = rng.randrange(1, 256), rng.randrange(1, 256), rng.randrange(1, 256)
        ops += [
            (OP_MMAP, p, 1, rw),
            (OP_WRITE, p, 1, b1),
            (OP_MMAP, p + 1, 1, rw),
            (OP_WRITE, p + 1, 1, b2),
            (OP_GUARD_INSTALL, p + 1, 1, 0),
            (OP_MPROTECT, p, 1, PROT_READ),
            (OP_MPROTECT, p, 1, rw),
            (OP_GUARD_REMOVE, p + 1, 1, 0),
            (OP_WRITE, p + 1, 1, b3),
            (OP_MUNMAP, p, 2, 0),
            (OP_MMAP, p, 2, PROT_NONE),
        ]
        for name, k in (("mmap", 3), ("write", 3), ("guard_install", 1)):
            counts[name] += k
        counts["mprotect"] += 2
        counts["guard_remove"] += 1
        counts["munmap"] += 1
    return Program(ops, arena_pages, seed, counts, 3 * (len(ops) - 1) // 11)
