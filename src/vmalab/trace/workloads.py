"""Built-in synthetic workloads for ``vmalab compare`` and ``vmalab sweep``.

A workload is a generator function ``fn(kernel, **params)`` that drives a
:class:`vmalab.Kernel` through the contract API (spawn, mmap, madvise, fork, ...) and
yields a short label after each step. :func:`run_workload` runs one and calls a timeline
hook after every ``every`` steps, so metrics can be sampled along the way. Every workload
is deterministic for given parameters (no randomness), so the designs can be compared on
exactly the same operations.

The shapes are those of real programs (see docs/workloads.md):

* ``thread_stacks``: pthread stacks. glibc >= 2.42 maps the stack read-write and installs
  the guard with MADV_GUARD_INSTALL; older glibc maps the whole stack PROT_NONE and
  mprotect()s all but the guard read-write (``guard="mprotect"``), which splits it in two
  VMAs.
* ``prefork_server``: a server that maps its heap, caches and guarded buffers, then forks
  workers that touch a little and exit, over several generations.
* ``allocator``: a memory allocator with guard pages between file-backed (memfd) and
  anonymous arenas.
* ``jit``: a JIT code cache: RW then RX pages, guard pages between code regions,
  periodic flushes (munmap) and re-allocation.
* ``database``: a database mapping data files MAP_SHARED, with guard regions between
  tables and at file ends, and checkpoint forks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vmalab import uapi
from vmalab.mm.mm_types import PAGE_SIZE

RW = uapi.PROT_READ | uapi.PROT_WRITE
RX = uapi.PROT_READ | uapi.PROT_EXEC
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
MAP_STACK = 0x20000
GUARD_INSTALL = uapi.MADV_GUARD_INSTALL
GUARD_REMOVE = uapi.MADV_GUARD_REMOVE

WorkloadFn = Callable[..., Iterator[str]]


def _forks(p: Any, forks: int) -> Iterator[str]:
    """``forks`` times: fork a child, then let it exit (each child lives one step)."""
    for i in range(forks):
        c = p.fork()
        yield f"fork {i}"
        c.exit()


def _touch(p: Any, addr: int, npages: int) -> None:
    """Write one byte to each of ``npages`` pages from ``addr`` (a user store per page)."""
    for i in range(npages):
        p.write(addr + i * PAGE_SIZE, b"\1")


def _guard(p: Any, addr: int, length: int, style: str) -> None:
    """Make ``[addr, addr+length)`` a guard: MADV_GUARD_INSTALL or mprotect(PROT_NONE)."""
    if style == "madvise":
        p.madvise(addr, length, GUARD_INSTALL)
    elif style == "mprotect":
        p.mprotect(addr, length, uapi.PROT_NONE)
    elif style != "none":
        raise ValueError(f"guard style {style!r}: use madvise, mprotect or none")


def thread_stacks(
    k: Any,
    threads: int = 32,
    stack_kib: int = 256,
    guard_kib: int = 4,
    guard: str = "madvise",
    touch_kib: int = 16,
    forks: int = 1,
    exit_every: int = 4,
) -> Iterator[str]:
    """pthread stacks as glibc's allocate_stack() makes them.

    ``guard="madvise"`` (glibc >= 2.42): mmap(stack+guard, RW, MAP_STACK), then
    MADV_GUARD_INSTALL on the lowest ``guard_kib``. ``guard="mprotect"`` (glibc < 2.42):
    mmap(PROT_NONE, MAP_STACK), then mprotect(RW) of everything above the guard. Each thread
    writes ``touch_kib`` at the top of its stack. After all threads exist the process forks
    ``forks`` times (a child that exits at once, like posix_spawn without CLONE_VM); every
    ``exit_every``-th thread exits and its stack is unmapped (the rest stay in glibc's cache).
    """
    p = k.spawn()
    size = stack_kib * 1024
    g = guard_kib * 1024
    stacks = []
    for i in range(threads):
        if guard == "mprotect":
            base = p.mmap(0, size + g, uapi.PROT_NONE, ANON | MAP_STACK)
            p.mprotect(base + g, size, RW)
        else:
            base = p.mmap(0, size + g, RW, ANON | MAP_STACK)
            _guard(p, base, g, guard)
        _touch(p, base + g + size - touch_kib * 1024, touch_kib // 4)
        stacks.append(base)
        yield f"thread {i} created"
    for i in range(forks):
        c = p.fork()
        yield f"fork {i}"
        c.exit()
        yield f"child {i} exited"
    for i, base in enumerate(stacks):
        if exit_every and i % exit_every == exit_every - 1:
            p.munmap(base, size + g)
            yield f"thread {i} exited"


def prefork_server(
    k: Any,
    workers: int = 8,
    generations: int = 3,
    heap_mib: int = 8,
    buffers: int = 16,
    guard: str = "madvise",
    files: int = 4,
) -> Iterator[str]:
    """A pre-forking server (Apache prefork, gunicorn): a master forks short-lived workers.

    The master maps a heap (written), ``files`` read-only file mappings (configuration,
    templates: never written, so without anon_vma), and ``buffers`` connection buffers of
    16 pages, each with a guard page at its end. Each generation forks ``workers`` workers;
    each touches its buffer pages and exits.
    """
    m = k.spawn()
    heap = m.mmap(0, heap_mib << 20, RW, ANON)
    _touch(m, heap, min(64, (heap_mib << 20) // PAGE_SIZE))
    yield "heap"
    for i in range(files):
        fd = m.open(f"/srv/static{i}.dat", uapi.O_RDWR | uapi.O_CREAT)
        m.ftruncate(fd, 64 * PAGE_SIZE)
        a = m.mmap(0, 64 * PAGE_SIZE, uapi.PROT_READ, uapi.MAP_PRIVATE, fd, 0)
        m.close(fd)
        if guard == "madvise":  # a guard page at the end of the file mapping
            _guard(m, a + 63 * PAGE_SIZE, PAGE_SIZE, guard)
        m.read(a, 1)
        yield f"file {i}"
    bufs = []
    for i in range(buffers):
        b = m.mmap(0, 17 * PAGE_SIZE, RW, ANON)
        _guard(m, b + 16 * PAGE_SIZE, PAGE_SIZE, guard)
        bufs.append(b)
        yield f"buffer {i}"
    for gen in range(generations):
        kids = []
        for w in range(workers):
            c = m.fork()
            if bufs:
                _touch(c, bufs[w % len(bufs)], 4)
            kids.append(c)
            yield f"gen {gen} worker {w} forked"
        for c in kids:
            c.exit()
        yield f"gen {gen} reaped"


def allocator(
    k: Any,
    arenas: int = 16,
    arena_pages: int = 64,
    guard: str = "madvise",
    file_backed_every: int = 2,
    frees: int = 4,
    forks: int = 1,
) -> Iterator[str]:
    """An allocator (jemalloc/PartitionAlloc style) with guard pages between arenas.

    Arenas are reserved as one region; every ``file_backed_every``-th arena is a MAP_SHARED
    memfd mapping (shareable heap), the others private anonymous. A guard page sits between
    neighbouring arenas (at the start of each). Half of each arena is written. Then
    ``frees`` arenas are released with MADV_DONTNEED (markers stay), and the process forks.
    """
    p = k.spawn()
    span = arenas * arena_pages * PAGE_SIZE
    base = p.mmap(0, span, uapi.PROT_NONE, ANON | uapi.MAP_NORESERVE)
    fd = p.memfd_create("arena", 0)
    p.ftruncate(fd, span)
    yield "reserve"
    for i in range(arenas):
        a = base + i * arena_pages * PAGE_SIZE
        if file_backed_every and i % file_backed_every == file_backed_every - 1:
            p.mmap(
                a,
                arena_pages * PAGE_SIZE,
                RW,
                uapi.MAP_SHARED | uapi.MAP_FIXED,
                fd,
                i * arena_pages * PAGE_SIZE,
            )
        else:
            p.mmap(a, arena_pages * PAGE_SIZE, RW, ANON | uapi.MAP_FIXED)
        if guard == "mprotect":
            p.mprotect(a, PAGE_SIZE, uapi.PROT_NONE)
        else:
            _guard(p, a, PAGE_SIZE, guard)
        _touch(p, a + PAGE_SIZE, arena_pages // 2)
        yield f"arena {i}"
    p.close(fd)
    for i in range(min(frees, arenas)):
        a = base + i * arena_pages * PAGE_SIZE
        p.madvise(a + PAGE_SIZE, (arena_pages - 1) * PAGE_SIZE, uapi.MADV_DONTNEED)
        yield f"free {i}"
    yield from _forks(p, forks)


def jit(
    k: Any,
    regions: int = 24,
    region_pages: int = 16,
    guard: str = "madvise",
    flushes: int = 2,
    forks: int = 1,
) -> Iterator[str]:
    """A JIT code cache (V8, HotSpot): code written RW, then flipped RX, guarded apart.

    Each region is mapped RW, written, mprotect()ed RX, and followed by a guard page.
    ``flushes`` times, the older half of the regions is unmapped and re-allocated. The
    process forks (``forks`` children that exit).
    """
    p = k.spawn()
    live: list[int] = []

    def alloc(i: int) -> int:
        a: int = p.mmap(0, (region_pages + 1) * PAGE_SIZE, RW, ANON)
        _touch(p, a, region_pages)
        p.mprotect(a, region_pages * PAGE_SIZE, RX)
        _guard(p, a + region_pages * PAGE_SIZE, PAGE_SIZE, guard)
        return a

    for i in range(regions):
        live.append(alloc(i))
        yield f"region {i}"
    for f in range(flushes):
        old, live = live[: len(live) // 2], live[len(live) // 2 :]
        for a in old:
            p.munmap(a, (region_pages + 1) * PAGE_SIZE)
        yield f"flush {f}"
        for i in range(len(old)):
            live.append(alloc(i))
            yield f"flush {f} realloc {i}"
    yield from _forks(p, forks)


def database(
    k: Any,
    tables: int = 8,
    table_pages: int = 256,
    guard: str = "madvise",
    shared: bool = True,
    checkpoints: int = 2,
    hot_pages: int = 8,
) -> Iterator[str]:
    """A database mapping its data files (LMDB, SQLite mmap mode) with guard regions.

    Each table is a file mapped whole (MAP_SHARED, or MAP_PRIVATE with ``shared=False``)
    with a guard page at each end: the guards catch overruns of a page-granular reader.
    ``hot_pages`` pages of each table are read. Then ``checkpoints`` times the process forks
    a checkpointer (like Redis BGSAVE) that reads the tables and exits; fork must keep the
    guards in the child.
    """
    p = k.spawn()
    maps = []
    for i in range(tables):
        fd = p.open(f"/db/table{i}.dat", uapi.O_RDWR | uapi.O_CREAT)
        p.ftruncate(fd, table_pages * PAGE_SIZE)
        fl = uapi.MAP_SHARED if shared else uapi.MAP_PRIVATE
        a = p.mmap(0, table_pages * PAGE_SIZE, RW, fl, fd, 0)
        p.close(fd)
        if guard == "mprotect":
            p.mprotect(a, PAGE_SIZE, uapi.PROT_NONE)
            p.mprotect(a + (table_pages - 1) * PAGE_SIZE, PAGE_SIZE, uapi.PROT_NONE)
        elif guard == "madvise":
            p.madvise(a, PAGE_SIZE, GUARD_INSTALL)
            p.madvise(a + (table_pages - 1) * PAGE_SIZE, PAGE_SIZE, GUARD_INSTALL)
        for j in range(hot_pages):
            p.read(a + (1 + j) * PAGE_SIZE, 1)
        maps.append(a)
        yield f"table {i}"
    for c_i in range(checkpoints):
        c = p.fork()
        for a in maps:
            c.read(a + PAGE_SIZE, 1)
        yield f"checkpoint {c_i}"
        c.exit()
        yield f"checkpoint {c_i} done"


@dataclass(frozen=True)
class WorkloadInfo:
    """A registered workload: its function, one-line summary and default parameters."""

    name: str
    fn: WorkloadFn
    summary: str
    defaults: dict[str, Any]


def _info(name: str, fn: WorkloadFn) -> WorkloadInfo:
    """Describe ``fn`` from its signature and docstring."""
    sig = inspect.signature(fn)
    defaults = {n: p.default for n, p in sig.parameters.items() if n != "k"}
    summary = (fn.__doc__ or "").strip().splitlines()[0]
    return WorkloadInfo(name, fn, summary, defaults)


_FNS: list[tuple[str, WorkloadFn]] = [
    ("thread_stacks", thread_stacks),
    ("prefork_server", prefork_server),
    ("allocator", allocator),
    ("jit", jit),
    ("database", database),
]
WORKLOADS: dict[str, WorkloadInfo] = {n: _info(n, f) for n, f in _FNS}
"""The built-in workloads by name."""


def parse_workload_spec(spec: str) -> tuple[str, dict[str, Any]] | None:
    """Read ``NAME`` or ``NAME:key=val,key=val``; None if NAME is not a workload.

    Values are converted to the type of the parameter's default. Raises ValueError for an
    unknown parameter or a value of the wrong type.
    """
    name, _, rest = spec.partition(":")
    info = WORKLOADS.get(name)
    if info is None:
        return None
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or key not in info.defaults:
            raise ValueError(
                f"workload {name} has no parameter {key!r} (parameters: {', '.join(info.defaults)})"
            )
        d = info.defaults[key]
        try:
            if isinstance(d, bool):
                if val.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(val)
                params[key] = val.lower() in ("1", "true", "yes")
            elif isinstance(d, int):
                params[key] = int(val, 0)
                low = 1 if key in _SIZES else 0
                high = param_limit(key)
                if params[key] < low or params[key] > high:
                    raise ValueError(f"workload {name}: {key} must be in {low}..{high:,}")
            else:
                params[key] = val
        except ValueError as e:
            if str(e).startswith("workload "):
                raise
            raise ValueError(f"workload {name}: bad value {val!r} for {key}") from None
    pages = footprint(name, {**info.defaults, **params})
    if pages > MAX_FOOTPRINT:
        raise ValueError(
            f"workload {name}: these parameters map about {pages:,} pages "
            f"(limit {MAX_FOOTPRINT:,}); make them smaller"
        )
    return name, params


MAX_FOOTPRINT = 1 << 24
"""Largest :func:`footprint` a workload spec may have (64 GiB of 4 KiB pages)."""


def footprint(name: str, p: dict[str, Any]) -> int:
    """Pages a run of workload ``name`` with parameters ``p`` maps, counted once per
    fork, generation, flush or checkpoint that repeats them: a bound on its time and
    memory (the per-parameter limits alone allow 10,000 threads of 1 GiB stacks)."""

    def i(key: str) -> int:
        v = p.get(key, 0)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0

    if name == "thread_stacks":
        return i("threads") * max(1, i("stack_kib") // 4) * (1 + i("forks"))
    if name == "prefork_server":
        return i("workers") * max(1, i("generations")) * i("heap_mib") * 256 + i("files")
    if name == "allocator":
        return i("arenas") * i("arena_pages") * (1 + i("forks"))
    if name == "jit":
        return i("regions") * i("region_pages") * (1 + i("flushes") + i("forks"))
    if name == "database":
        return i("tables") * i("table_pages") * (1 + i("checkpoints"))
    return 0


def param_limit(key: str) -> int:
    """The largest value a workload parameter accepts: sizes in KiB up to 1 GiB, in MiB up
    to 4 GiB, in pages up to 2^18 (1 GiB), counts up to 10,000. Together they bound a run's
    mapped memory and time (a bigger what-if belongs in a script using the API)."""
    if key.endswith("_kib"):
        return 1 << 20
    if key.endswith("_mib"):
        return 4096
    if key.endswith("_pages"):
        return 1 << 18
    return 10_000


StepHook = Callable[[int, str, Any], None]

_SIZES = frozenset(
    {
        "threads",
        "stack_kib",
        "workers",
        "heap_mib",
        "arenas",
        "arena_pages",
        "regions",
        "region_pages",
        "tables",
        "table_pages",
    }
)
"""Parameters that size a mapping or count the things a workload is made of: at least 1."""


def run_workload(
    k: Any,
    name: str,
    params: dict[str, Any] | None = None,
    *,
    on_step: StepHook | None = None,
    every: int = 1,
) -> int:
    """Run workload ``name`` on kernel ``k``; return the number of steps.

    ``on_step(step, label, kernel)`` is the timeline hook, called after every ``every``-th
    step and after the last one.
    """
    info = WORKLOADS[name]
    n = 0
    label = ""
    for n, label in enumerate(info.fn(k, **(params or {})), 1):
        if on_step is not None and every and n % every == 0:
            on_step(n, label, k)
    if on_step is not None and (not every or n % every):
        on_step(n, label, k)
    return n
