"""Soak test: long random runs over many processes, checking invariants and leaks.

``run_soak`` drives one ``Kernel`` through the public API only (api-contract.md): it
starts with one process and keeps up to ``processes`` alive, and each step performs one
random operation on a random live process: mmap (private or shared anonymous, memfd
private or shared, fixed or at a kernel-chosen address, sometimes MAP_POPULATE), munmap,
mprotect, mremap, madvise (guard install/remove, DONTNEED, FREE, COLD, PAGEOUT,
POPULATE_READ/WRITE, WIPEONFORK/KEEPONFORK, DONTFORK/DOFORK), mlock/munlock, user reads and
writes, fork and exit; and one op in ten of the program format, drawn by the same generator
as ``vmalab fuzz`` (``vmalab.oracle.generate.Gen``, built from the op classes' generator
rules) and run by the program interpreter on that process, so that every op the format
has (mseal, mlockall, pkeys, MDWE, mincore, every advice...) reaches the soak too. The
first process starts with its arena mapped read-write. Most
addresses fall inside that small per-process arena so that operations collide: splits,
merges, holes and guard markers are frequent.

A syscall failing with OSError (with an errno) or an access raising SegmentationFault is
expected behaviour. A *violation* is any of:

* ``Kernel.check()`` raising (run every ``check_every`` steps and at the end);
* an operation raising anything else (a model crash), or an OSError without errno;
* a call on an exited process not raising ProcessLookupError;
* after every process has exited, a ``Kernel.slab()`` cache with active objects (a leak).

The run stops at the first failed ``check()`` (later ones would only repeat it).
"""

from __future__ import annotations

import errno as errno_mod
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from vmalab import Kernel, Process

from vmalab import program as P
from vmalab.cliutil import int_option

PAGE = P.PAGE
#: Base and size (in pages) of the arena most operations target, in every process: the
#: program format's arena, where the generated program ops act too.
ARENA_BASE = P.ARENA_BASE
ARENA_PAGES = 256
_GEN_DEPTH = 2
"""The fork depth the generator is asked for: no fork op (the soak forks live processes
itself) and no memlock (a top-level-only op)."""


@dataclass
class Violation:
    """One problem found: the step, the operation (or phase) and what went wrong."""

    step: int
    op: str
    message: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.op}: {self.message}"


@dataclass
class SoakResult:
    """The outcome of a soak run: counts, timing and the violations found."""

    ops: int = 0
    seconds: float = 0.0
    checks: int = 0
    forks: int = 0
    exits: int = 0
    max_live: int = 0
    op_counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # "op:ERRNO" and "op:SIGSEGV"
    violations: list[Violation] = field(default_factory=list)
    slab_active_after_exit: dict[str, int] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        """Operations per second over the whole run (checks included)."""
        return self.ops / self.seconds if self.seconds else 0.0


class _Soak:
    """The state of one soak run (kernel, live processes, per-process extra regions)."""

    def __init__(self, kernel: Kernel, rng: random.Random, max_procs: int, res: SoakResult) -> None:
        from vmalab import uapi

        self.k = kernel
        self.u = uapi
        self.rng = rng
        self.max_procs = max_procs
        self.res = res
        first = kernel.spawn()
        first.mmap(
            ARENA_BASE,
            ARENA_PAGES * PAGE,
            uapi.PROT_READ | uapi.PROT_WRITE,
            uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED,
        )
        self.live: list[Process] = [first]
        self.extra: dict[int, list[tuple[int, int]]] = {}  # pid -> [(addr, len)] outside
        self.memfd: dict[int, int] = {}  # pid -> memfd number
        self.dead: Process | None = None
        self.vma_cache: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        self.step = 0
        from vmalab.oracle.generate import Gen
        from vmalab.program.fields import Ctx

        self.gen = Gen(rng, ARENA_PAGES)
        self.prog = P.Program((), ARENA_PAGES, P.Observe(each=False, probe=False, contents=False))
        self.ctx = Ctx("soak", ARENA_PAGES)

    # -------------------------------------------------------------- random values

    def _range(self, p: Process, whole: bool = True) -> tuple[int, int]:
        """A random (addr, length): inside one existing VMA (40 %), else mostly inside the
        arena, sometimes in a region the kernel placed."""
        rng = self.rng
        ex = self.extra.get(p.pid)
        if ex and rng.random() < 0.15:
            a, ln = rng.choice(ex)
            npg = ln // PAGE
            off = rng.randrange(npg)
            return a + off * PAGE, rng.randint(1, npg - off) * PAGE
        if rng.random() < 0.4:  # inside one existing VMA: mostly succeeds, splits it
            vmas = self._vmas(p)
            if vmas:
                start, end = rng.choice(vmas)
                npg = (end - start) // PAGE
                off = rng.randrange(npg)
                return start + off * PAGE, rng.randint(1, min(npg - off, 16)) * PAGE
        r = rng.random()
        if r < 0.03 and whole:
            return ARENA_BASE, ARENA_PAGES * PAGE
        n = rng.randint(1, 8) if r < 0.7 else rng.randint(1, 48)
        off = rng.randrange(0, ARENA_PAGES - n + 1)
        return ARENA_BASE + off * PAGE, n * PAGE

    def _vmas(self, p: Process) -> list[tuple[int, int]]:
        """(start, end) of p's VMAs, refreshed every 64 steps (stale ranges are fine)."""
        got = self.vma_cache.get(p.pid)
        if got is None or self.step - got[0] >= 64:
            got = (self.step, [(v.start, v.end) for v in p.vmas()])
            self.vma_cache[p.pid] = got
        return got[1]

    def _prot(self) -> int:
        u = self.u
        return int(self.rng.choice([u.PROT_READ | u.PROT_WRITE] * 3 + [u.PROT_READ, u.PROT_NONE]))

    # ------------------------------------------------------------------ the ops

    def op_mmap(self, p: Process) -> str:
        u, rng = self.u, self.rng
        a, ln = self._range(p)
        prot = self._prot()
        kind = rng.random()
        fd, off = -1, 0
        flags = u.MAP_PRIVATE | u.MAP_ANONYMOUS
        if kind < 0.1:
            flags = u.MAP_SHARED | u.MAP_ANONYMOUS
        elif kind < 0.2:
            fd = self._memfd(p)
            flags = rng.choice([u.MAP_SHARED, u.MAP_PRIVATE])
            off = rng.randrange(0, 32) * PAGE
        if rng.random() < 0.1:
            flags |= u.MAP_POPULATE
        placement = rng.random()
        if placement < 0.8:
            flags |= u.MAP_FIXED
        elif placement < 0.9:
            flags |= u.MAP_FIXED_NOREPLACE
        else:
            a = 0
        got = p.mmap(a, ln, prot, flags, fd, off)
        if a == 0:
            self._remember(p, got, ln)
        return "mmap"

    def _remember(self, p: Process, addr: int, ln: int) -> None:
        """Track a region outside the arena; beyond 8 of them, unmap the oldest.

        This bounds the number of VMAs a long run accumulates outside the arena (where
        the arena's random munmaps never reach).
        """
        if ARENA_BASE <= addr < ARENA_BASE + ARENA_PAGES * PAGE:
            return
        ex = self.extra.setdefault(p.pid, [])
        ex.append((addr, ln))
        while len(ex) > 8:
            old, oln = ex.pop(0)
            try:
                p.munmap(old, oln)
            except OSError:
                pass

    def _memfd(self, p: Process) -> int:
        fd = self.memfd.get(p.pid)
        if fd is None:
            fd = p.memfd_create("soak")
            p.ftruncate(fd, 64 * PAGE)
            self.memfd[p.pid] = fd
        return fd

    def op_munmap(self, p: Process) -> str:
        p.munmap(*self._range(p, whole=False))
        return "munmap"

    def op_mprotect(self, p: Process) -> str:
        a, ln = self._range(p)
        p.mprotect(a, ln, self._prot())
        return "mprotect"

    def op_madvise(self, p: Process) -> str:
        u = self.u
        adv = self.rng.choice(
            [
                u.MADV_GUARD_INSTALL,
                u.MADV_GUARD_INSTALL,
                u.MADV_GUARD_INSTALL,
                u.MADV_GUARD_REMOVE,
                u.MADV_GUARD_REMOVE,
                u.MADV_DONTNEED,
                u.MADV_FREE,
                u.MADV_COLD,
                u.MADV_PAGEOUT,
                u.MADV_POPULATE_READ,
                u.MADV_POPULATE_WRITE,
                u.MADV_WIPEONFORK,
                u.MADV_KEEPONFORK,
                u.MADV_DONTFORK,
                u.MADV_DOFORK,
            ]
        )
        a, ln = self._range(p)
        p.madvise(a, ln, adv)
        return f"madvise({adv})"

    def op_mremap(self, p: Process) -> str:
        u, rng = self.u, self.rng
        a, ln = self._range(p)
        r = rng.random()
        if r < 0.3:
            p.mremap(a, ln, max(PAGE, ln - rng.randint(1, 4) * PAGE))
        elif r < 0.6:
            nln = ln + rng.randint(1, 8) * PAGE
            self._remember(p, p.mremap(a, ln, nln, u.MREMAP_MAYMOVE), nln)
        else:
            na, _ = self._range(p)
            p.mremap(a, ln, ln, u.MREMAP_MAYMOVE | u.MREMAP_FIXED, na)
        return "mremap"

    def op_mlock(self, p: Process) -> str:
        a, ln = self._range(p)
        if self.rng.random() < 0.5:
            p.mlock(a, ln)
            return "mlock"
        p.munlock(a, ln)
        return "munlock"

    def op_write(self, p: Process) -> str:
        a, ln = self._range(p)
        n = self.rng.choice([1, 8, PAGE, min(ln, 3 * PAGE)])
        p.write(a + self.rng.randrange(0, PAGE - 8), b"\x5a" * n)
        return "write"

    def op_read(self, p: Process) -> str:
        a, _ = self._range(p)
        p.read(a + self.rng.randrange(0, PAGE), 16)
        return "read"

    def op_fork(self, p: Process) -> str:
        if len(self.live) >= self.max_procs:
            return self.op_exit(p)
        child = p.fork()
        self.live.append(child)
        if p.pid in self.memfd:
            self.memfd[child.pid] = self.memfd[p.pid]
        if p.pid in self.extra:
            self.extra[child.pid] = list(self.extra[p.pid])
        self.res.forks += 1
        self.res.max_live = max(self.res.max_live, len(self.live))
        return "fork"

    def op_exit(self, p: Process) -> str:
        if len(self.live) <= 1:
            return self.op_fork(p) if self.max_procs > 1 else "noop"
        self.live.remove(p)
        p.exit()
        self.memfd.pop(p.pid, None)
        self.extra.pop(p.pid, None)
        self.res.exits += 1
        self.dead = p
        return "exit"

    def op_program(self, p: Process) -> str:
        """One op drawn by the shared program generator, run by the program interpreter
        on ``p`` (its failures are OSError and signals like the soak's own ops)."""
        from vmalab.program.parse import parse_op

        g = self.gen
        d = g.op(_GEN_DEPTH)
        for seen in (g.maps, g.moves):  # what the generator remembers, bounded
            if len(seen) > 256:
                del seen[:128]
        self.ctx.budget = P.MAX_OPS
        (o,) = parse_op(self.ctx, d, "op", set(), _GEN_DEPTH)
        P.Runner(self.prog, P.ModelMachine(self.k, p, check=False), {}).step(o, P.Observation())
        return f"program:{o.op}"

    def op_dead(self, p: Process) -> str:
        """A call on an exited process must raise ProcessLookupError."""
        d = self.dead
        if d is None:
            return self.op_read(p)
        try:
            d.mmap(0, PAGE, self.u.PROT_READ, self.u.MAP_PRIVATE | self.u.MAP_ANONYMOUS)
        except ProcessLookupError:
            return "dead-call"
        self.res.violations.append(
            Violation(
                self.step,
                "dead-call",
                f"pid {d.pid}: mmap after exit did not raise ProcessLookupError",
            )
        )
        return "dead-call"

    # ------------------------------------------------------------------ driving

    def table(self) -> list[tuple[float, Callable[[Process], str]]]:
        """(weight, op) pairs of the random mix."""
        return [
            (16, self.op_mmap),
            (5, self.op_munmap),
            (14, self.op_mprotect),
            (20, self.op_madvise),
            (5, self.op_mremap),
            (3, self.op_mlock),
            (18, self.op_write),
            (8, self.op_read),
            (2.5, self.op_fork),
            (2, self.op_exit),
            (0.5, self.op_dead),
            (10, self.op_program),
        ]

    def check(self, where: str) -> bool:
        """Run Kernel.check(); record a violation and return False if it fails."""
        from vmalab import InvariantError

        self.res.checks += 1
        try:
            self.k.check()
        except InvariantError as e:
            self.res.violations.append(Violation(self.step, f"check ({where})", str(e)))
            return False
        except Exception as e:  # noqa: BLE001 - a crash inside check() is a finding too
            self.res.violations.append(
                Violation(self.step, f"check ({where})", f"crashed: {type(e).__name__}: {e}")
            )
            return False
        return True


def run_soak(
    ops: int,
    seed: int = 1,
    check_every: int = 1000,
    processes: int = 8,
    design: str = "tagged",
    *,
    progress: Callable[[int, SoakResult], None] | None = None,
) -> SoakResult:
    """Run ``ops`` random operations; return counts, timing and violations.

    ``processes`` bounds the number of live processes; ``progress`` (if given) is called
    with the step number and the result so far after each periodic check.
    """
    from vmalab import Kernel, SegmentationFault

    res = SoakResult()
    rng = random.Random(seed)
    k = Kernel(design)
    s = _Soak(k, rng, max(1, processes), res)
    table = s.table()
    weights = [w for w, _ in table]
    fns = [f for _, f in table]
    t0 = time.perf_counter()
    ok = True
    for step in range(1, ops + 1):
        s.step = step
        fn = rng.choices(fns, weights)[0]
        p = rng.choice(s.live)
        name = fn.__name__[3:]
        try:
            name = fn(p)
        except SegmentationFault as e:
            res.failures[f"{name}:{e.signal}"] += 1
        except OSError as e:
            if e.errno is None:
                res.violations.append(Violation(step, name, f"OSError without errno: {e}"))
            else:
                res.failures[f"{name}:{errno_mod.errorcode.get(e.errno, e.errno)}"] += 1
        except Exception as e:  # noqa: BLE001 - a model crash is what the soak looks for
            tb = traceback.format_exc(limit=-3)
            res.violations.append(Violation(step, name, f"{type(e).__name__}: {e}\n{tb}"))
            if not s.check("after crash"):
                ok = False
                break
        res.op_counts[name] += 1
        res.ops = step
        if step % check_every == 0:
            if not s.check("periodic"):
                ok = False
                break
            if progress is not None:
                progress(step, res)
    if ok:
        s.check("end")
    for p in list(s.live):
        try:
            p.exit()
        except Exception as e:  # noqa: BLE001 - a model crash in exit is a violation too
            res.violations.append(
                Violation(res.ops, "final exit", f"pid {p.pid}: {type(e).__name__}: {e}")
            )
    s.live.clear()
    if ok:
        s.check("after all exits")
    res.slab_active_after_exit = {name: st.active for name, st in k.slab().items()}
    for name, active in res.slab_active_after_exit.items():
        if active:
            res.violations.append(
                Violation(
                    res.ops,
                    "leak",
                    f"slab {name}: {active} active objects after all processes exited",
                )
            )
    res.seconds = time.perf_counter() - t0
    return res


def _summary(res: SoakResult) -> dict[str, Any]:
    """The result as plain data (for printing)."""
    return {
        "ops": res.ops,
        "seconds": round(res.seconds, 3),
        "ops_per_s": round(res.ops_per_s, 1),
        "checks": res.checks,
        "forks": res.forks,
        "exits": res.exits,
        "max_live": res.max_live,
        "violations": len(res.violations),
    }


@click.command(
    "soak",
    help="""Random operations over many processes, with Kernel.check()
every --check-every operations and a leak check after all processes exit.

\b
Examples:
  vmalab soak --ops 1000000
  vmalab soak --ops 200000 --design sticky --seed 7 --processes 16 --quiet

\b
Exit status: 0 no violation, 1 a violation was found, 2 bad input.""",
    short_help="Long random runs with invariant and leak checks.",
)
@int_option(
    "--ops", "n_ops", lo=1, hi=10**9, default=100_000, help="number of random operations (1..10^9)"
)
@int_option("--seed", lo=0, hi=2**63 - 1, default=1, help="random seed")
@int_option(
    "--check-every",
    lo=1,
    hi=10**9,
    default=1000,
    help="run Kernel.check() every N operations (and at the end)",
)
@int_option(
    "--processes", lo=1, hi=1024, default=8, help="maximum number of live processes (1..1024)"
)
@click.option("--design", default="tagged", show_default=True, help="model design id")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def soak(n_ops: int, seed: int, check_every: int, processes: int, design: str, quiet: bool) -> None:
    """Random operations over many processes with invariant checks and a leak check."""
    from vmalab import DESIGNS
    from vmalab.cliutil import progress as progress_bar
    from vmalab.errors import UserInputError

    if design not in DESIGNS:
        raise UserInputError("--design", f"unknown design {design!r}; valid: " + ", ".join(DESIGNS))

    with progress_bar(f"soak ({design})", n_ops, quiet=quiet, unit="ops") as bar:

        def progress(step: int, so_far: SoakResult) -> None:
            bar.update(step)

        res = run_soak(n_ops, seed, check_every, processes, design, progress=progress)
    s = _summary(res)
    click.echo(" ".join(f"{k}={v}" for k, v in s.items()))
    top = ", ".join(f"{k} {v}" for k, v in res.failures.most_common(8))
    click.echo(f"expected failures: {top or 'none'}")
    for v in res.violations[:20]:
        click.echo(f"VIOLATION {v}")
    if res.violations:
        raise SystemExit(1)
