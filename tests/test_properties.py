"""Random operation sequences: hypothesis state machines and seeded random walks.

* Every design: Kernel.check() after every step, and every slab cache back to 0 at the end.
* Property (a), issue 4 §5: a child forked at any point sees exactly the parent's guard
  markers, except in its VM_WIPEONFORK VMAs (no markers) and VM_DONTCOPY ranges (no VMA).
* Property (b): the same sequence run in lockstep on several designs gives identical
  user-visible behaviour: every call's result or errno, every access's bytes or signal,
  pagemap's PM_GUARD_REGION bits and the per-page mapping attributes (VmFlags except
  ``gu``, backing file and file offset). Raw VMA boundaries are *not* compared: designs.md
  §10 predicts they differ (tagged resets pgoff when moving a guarded unfaulted anonymous
  VMA, eager/sticky do not), so mremap is only generated over ranges that lie inside one
  VMA in every design, which keeps its outcome independent of merge decisions. PM_PRESENT
  is not compared either: whether fork copies PTEs of file pages and zero pages is
  design-dependent by construction (designs.md §10, "fork after every guard was removed").

Findings (docs/findings.md), each pinned by a deterministic minimal case that is
xfail(strict=True) for the offending designs only:

* F1: the tagged design as posted loses guards at fork after a merge absorbs its
  flag-only VMA (the lossy control loses them by construction);
* F2: designs whose anonymous guard install creates no anon_vma (tagged, tagged-fixed,
  lossy) drop VM_ACCOUNT on mprotect(PROT_READ) of a guarded, never-written VMA, unlike
  the kernel, which changes "ac" in smaps and which VMAs merge.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mmtest_util import BASE, P, try_read

import vmalab
from vmalab import Kernel, SegmentationFault, uapi

W = 12  # pages in the window every operation stays in
FILE = "/prop_file"
R, RW, NONE = uapi.PROT_READ, uapi.PROT_READ | uapi.PROT_WRITE, uapi.PROT_NONE
KINDS = ("anon", "anon", "anon", "shanon", "file_shared", "file_private")
ADVICE = (
    uapi.MADV_GUARD_INSTALL,
    uapi.MADV_GUARD_INSTALL,
    uapi.MADV_GUARD_REMOVE,
    uapi.MADV_DONTNEED,
    uapi.MADV_FREE,
    uapi.MADV_WIPEONFORK,
    uapi.MADV_KEEPONFORK,
    uapi.MADV_DONTFORK,
    uapi.MADV_DOFORK,
    uapi.MADV_COLD,
    uapi.MADV_PAGEOUT,
    uapi.MADV_POPULATE_READ,
    uapi.MADV_POPULATE_WRITE,
    uapi.MADV_REMOVE,
)
MAX_PROCS = 5

# Designs expected to keep guards across fork. Corrected variants that the lead adds to
# vmalab.DESIGNS are picked up automatically.
KNOWN_BAD = ("tagged", "lossy")
GOOD = tuple(d for d in vmalab.DESIGNS if d not in KNOWN_BAD)

SETTINGS = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class PropertyViolation(AssertionError):
    """A cross-design property failed (distinct from Kernel.check()'s InvariantError)."""


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise PropertyViolation(msg)


# --- one world = one Kernel and its processes -------------------------------------------
class World:
    def __init__(self, design: str) -> None:
        self.k = Kernel(design)
        p = self.k.spawn()
        fd = p.open(FILE, uapi.O_RDWR | uapi.O_CREAT | uapi.O_TRUNC)
        p.ftruncate(fd, W * P)
        p.close(fd)
        self.procs = [p]

    def proc(self, i: int):
        return self.procs[i % len(self.procs)]


def run(world: World, op: tuple):
    """Apply one operation; return its user-visible outcome."""
    name, pi, *args = op
    p = world.proc(pi)
    try:
        if name == "mmap":
            start, n, kind, prot, aligned_off = args
            addr = BASE + start * P
            off = start * P if aligned_off else 0
            if kind == "anon":
                r = p.mmap(
                    addr, n * P, prot, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
                )
            elif kind == "shanon":
                r = p.mmap(addr, n * P, prot, uapi.MAP_SHARED | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED)
            else:
                fd = p.open(FILE, uapi.O_RDWR)
                share = uapi.MAP_SHARED if kind == "file_shared" else uapi.MAP_PRIVATE
                try:
                    r = p.mmap(addr, n * P, prot, share | uapi.MAP_FIXED, fd, off)
                finally:
                    p.close(fd)
            return ("ok", r)
        if name == "munmap":
            start, n = args
            return ("ok", p.munmap(BASE + start * P, n * P))
        if name == "mprotect":
            start, n, prot = args
            return ("ok", p.mprotect(BASE + start * P, n * P, prot))
        if name == "mremap":
            start, old_n, new_n, dst = args
            if dst is None:
                r = p.mremap(BASE + start * P, old_n * P, new_n * P, 0)
            else:
                r = p.mremap(
                    BASE + start * P,
                    old_n * P,
                    new_n * P,
                    uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED,
                    BASE + dst * P,
                )
            return ("ok", r)
        if name == "madvise":
            start, n, adv = args
            return ("ok", p.madvise(BASE + start * P, n * P, adv))
        if name == "mlock":
            start, n, lock = args
            fn = p.mlock if lock else p.munlock
            return ("ok", fn(BASE + start * P, n * P))
        if name == "read":
            (page,) = args
            return ("ok", p.read(BASE + page * P, 8))
        if name == "write":
            page, byte = args
            return ("ok", p.write(BASE + page * P + 5, bytes([byte]) * 3))
        if name == "fork":
            c = p.fork()
            world.procs.append(c)
            return ("ok", "fork")
        if name == "exit":
            p.exit()
            world.procs.remove(p)
            return ("ok", "exit")
        raise AssertionError(name)
    except OSError as e:
        return ("errno", e.errno)
    except SegmentationFault as e:
        return ("signal", e.signal, e.addr)


def guard_set(proc) -> frozenset[int]:
    ents = proc.pagemap(BASE, W)
    return frozenset(i for i, e in enumerate(ents) if e & uapi.PM_GUARD_REGION)


def vmas_in_window(proc):
    return [v for v in proc.vmas() if v.end > BASE and v.start < BASE + W * P]


def page_view(proc, ignored: frozenset[str] = frozenset({"gu"})) -> tuple:
    """Per-page mapping attributes, independent of where VMA boundaries fall."""
    out: list = [None] * W
    for v in vmas_in_window(proc):
        flags = frozenset(v.flags - ignored)
        file_backed = v.path is not None or "ms" in v.flags
        for addr in range(max(v.start, BASE), min(v.end, BASE + W * P), P):
            idx = (addr - BASE) // P
            off = v.pgoff + (addr - v.start) // P if file_backed else None
            out[idx] = (flags, v.path, off)
    return tuple(out)


def vma_kind(v) -> str:
    if v.path == FILE:
        return "file_shared" if "sh" in v.flags or "ms" in v.flags else "file_private"
    return "shanon" if "ms" in v.flags else "anon"


def vma_prot(v) -> int:
    return (R if "rd" in v.flags else 0) | (uapi.PROT_WRITE if "wr" in v.flags else 0)


def expected_child_guards(parent) -> frozenset[int]:
    g = set(guard_set(parent))
    for v in vmas_in_window(parent):
        if "wf" in v.flags or "dc" in v.flags:
            for addr in range(max(v.start, BASE), min(v.end, BASE + W * P), P):
                g.discard((addr - BASE) // P)
    return frozenset(g)


# --- strategies -------------------------------------------------------------------------
proc_i = st.integers(0, MAX_PROCS - 1)
page = st.integers(0, W - 1)
length = st.integers(1, 4)
prot = st.sampled_from((R, RW, RW, RW, NONE))


def clip(start: int, n: int) -> int:
    return max(1, min(n, W - start))


class OpsMachine(RuleBasedStateMachine):
    """Drives one or more Worlds with identical operations."""

    designs: tuple[str, ...] = ("sticky",)
    fork_property = False
    ignored_flags: frozenset[str] = frozenset({"gu"})

    def __init__(self) -> None:
        super().__init__()
        self.worlds = [World(d) for d in self.designs]
        self.log: list[tuple] = []

    # every operation goes through here
    def do(self, op: tuple):
        self.log.append(op)
        outcomes = [run(w, op) for w in self.worlds]
        for w in self.worlds:
            w.k.check()
        if len(self.worlds) > 1:
            first = outcomes[0]
            for d, o in zip(self.designs[1:], outcomes[1:], strict=True):
                require(o == first, f"{op}: {self.designs[0]} gave {first}, {d} gave {o}")
        return outcomes

    @property
    def nprocs(self) -> int:
        return len(self.worlds[0].procs)

    @rule(
        pi=proc_i,
        start=page,
        n=length,
        kind=st.sampled_from(KINDS),
        prot=prot,
        aligned=st.booleans(),
    )
    def mmap(self, pi, start, n, kind, prot, aligned):
        self.do(("mmap", pi, start, clip(start, n), kind, prot, aligned))

    @rule(pi=proc_i, start=page, n=length)
    def munmap(self, pi, start, n):
        self.do(("munmap", pi, start, clip(start, n)))

    @rule(pi=proc_i, start=page, n=length, prot=prot)
    def mprotect(self, pi, start, n, prot):
        self.do(("mprotect", pi, start, clip(start, n), prot))

    @rule(pi=proc_i, start=page, old_n=length, new_n=length, dst=st.one_of(st.none(), page))
    def mremap(self, pi, start, old_n, new_n, dst):
        old_n = clip(start, old_n)
        base = start if dst is None else dst
        new_n = clip(base, new_n)
        lo, hi = BASE + start * P, BASE + (start + old_n) * P
        for w in self.worlds:  # same outcome in every design: one VMA holds the range
            vs = [v for v in w.proc(pi).vmas() if v.start < hi and v.end > lo]
            if len(self.worlds) > 1 and not (
                len(vs) == 1 and vs[0].start <= lo and vs[0].end >= hi
            ):
                return
        self.do(("mremap", pi, start, old_n, new_n, dst))

    @rule(pi=proc_i, start=page, n=length, adv=st.sampled_from(ADVICE))
    def madvise(self, pi, start, n, adv):
        self.do(("madvise", pi, start, clip(start, n), adv))

    @rule(pi=proc_i, start=page, n=length, lock=st.booleans())
    def mlock(self, pi, start, n, lock):
        self.do(("mlock", pi, start, clip(start, n), lock))

    # Structured operations that make merges likely (allocators fill holes and change
    # whole VMAs): derived from world 0, whose unmapped ranges every design shares.
    def _vmas0(self, pi):
        return vmas_in_window(self.worlds[0].proc(pi))

    @rule(
        pi=proc_i,
        gi=st.integers(0, 7),
        like_left=st.integers(0, 3),
        kind=st.sampled_from(KINDS),
        prot=prot,
    )
    def fill_hole(self, pi, gi, like_left, kind, prot):
        """Map exactly a hole between two VMAs, usually like its left neighbour."""
        vs = self._vmas0(pi)
        holes = [(a, b) for a, b in zip(vs, vs[1:], strict=False) if a.end < b.start]
        if holes:
            left, right = holes[gi % len(holes)]
            if like_left:
                kind, prot = vma_kind(left), vma_prot(left)
            start = (left.end - BASE) // P
            self.do(("mmap", pi, start, (right.start - left.end) // P, kind, prot, True))

    @rule(pi=proc_i, vi=st.integers(0, 7), prot=prot, head=st.booleans())
    def mprotect_vma(self, pi, vi, prot, head):
        vs = self._vmas0(pi)
        if vs:
            v = vs[vi % len(vs)]
            start, n = (v.start - BASE) // P, (v.end - v.start) // P
            if head and n > 1:  # only part of it, so that it can merge with a neighbour
                n = n // 2
            self.do(("mprotect", pi, start, n, prot))

    @rule(pi=proc_i, vi=st.integers(0, 7), off=st.integers(0, 7))
    def guard_in_vma(self, pi, vi, off):
        vs = self._vmas0(pi)
        if vs:
            v = vs[vi % len(vs)]
            pg = (v.start - BASE) // P + off % ((v.end - v.start) // P)
            self.do(("madvise", pi, pg, 1, uapi.MADV_GUARD_INSTALL))

    @rule(pi=proc_i, pg=page)
    def read(self, pi, pg):
        self.do(("read", pi, pg))

    @rule(pi=proc_i, pg=page, byte=st.integers(1, 255))
    def write(self, pi, pg, byte):
        self.do(("write", pi, pg, byte))

    @precondition(lambda self: self.nprocs < MAX_PROCS)
    @rule(pi=proc_i)
    def fork(self, pi):
        parents = [w.proc(pi) for w in self.worlds]
        expected = [expected_child_guards(p) for p in parents]
        self.do(("fork", pi))
        if self.fork_property:
            for w, exp in zip(self.worlds, expected, strict=True):
                child = w.procs[-1]
                got = guard_set(child)
                require(
                    got == exp,
                    f"{w.k.design}: child guards {sorted(got)} != parent's {sorted(exp)}",
                )
                for i in exp:  # and they fault
                    require(not try_read(child, BASE + i * P), f"child reads guard page {i}")

    @precondition(lambda self: self.nprocs > 1)
    @rule(pi=proc_i)
    def exit(self, pi):
        self.do(("exit", pi))

    @invariant()
    def same_view(self):
        if len(self.worlds) < 2:
            return
        for i in range(self.nprocs):
            views = [
                (guard_set(w.procs[i]), page_view(w.procs[i], self.ignored_flags))
                for w in self.worlds
            ]
            for d, v in zip(self.designs[1:], views[1:], strict=True):
                require(v[0] == views[0][0], f"proc {i}: guard pages differ ({d})")
                if v[1] != views[0][1]:
                    pg = next(j for j in range(W) if v[1][j] != views[0][1][j])
                    require(
                        False,
                        f"proc {i}: mapping attributes of page {pg} differ: "
                        f"{self.designs[0]} {views[0][1][pg]}, {d} {v[1][pg]}",
                    )

    def teardown(self):
        for w in self.worlds:
            for p in list(w.procs):
                p.exit()
            w.k.check()
            leftover = {n: s.active for n, s in w.k.slab().items() if s.active}
            assert leftover == {}, f"{w.k.design}: leaked {leftover}"


def machine(designs: tuple[str, ...], fork_property: bool, ignored=("gu",)):
    cls = type(
        "Ops_" + "_".join(designs).replace("-", "_") + ("_a" if fork_property else ""),
        (OpsMachine,),
        {"designs": designs, "fork_property": fork_property, "ignored_flags": frozenset(ignored)},
    )
    return cls


# --- invariants on every design ----------------------------------------------------------
@pytest.mark.parametrize("design", vmalab.DESIGNS)
def test_invariants_random_ops(design):
    M = machine((design,), fork_property=False)
    M.TestCase.settings = SETTINGS
    M.TestCase().runTest()


# --- property (a) ------------------------------------------------------------------------
@pytest.mark.parametrize("design", GOOD)
def test_fork_copies_exactly_the_guards(design):
    M = machine((design,), fork_property=True)
    M.TestCase.settings = SETTINGS
    M.TestCase().runTest()


# --- property (b) ------------------------------------------------------------------------
def test_lockstep_eager_sticky_identical():
    """eager and sticky behave identically for the user (hypothesis)."""
    M = machine(("sticky", "eager"), fork_property=False)
    M.TestCase.settings = SETTINGS
    M.TestCase().runTest()


# --- seeded random walks ------------------------------------------------------------------
# Hypothesis' generation rarely builds the layouts behind F1 (a guarded never-written VMA
# absorbed by a 3-way or mprotect merge, then fork): in 500 examples it never did, while
# uniform random walks over the structured rules hit it about once in 80 runs. These
# deterministic walks (fixed seeds) complement the state machines above with that
# distribution; a failure names its seed and the operations that led to it.
def _pick(rng, seq):
    return seq[rng.randrange(len(seq))]


WALK = [
    (
        3,
        lambda m, r: m.mmap(
            pi=r.randrange(5),
            start=r.randrange(W),
            n=r.randint(1, 4),
            kind=_pick(r, KINDS),
            prot=_pick(r, (R, RW, RW, RW, NONE)),
            aligned=r.random() < 0.8,
        ),
    ),
    (
        3,
        lambda m, r: m.fill_hole(
            pi=r.randrange(5),
            gi=r.randrange(8),
            like_left=r.randrange(4),
            kind=_pick(r, KINDS),
            prot=_pick(r, (R, RW, NONE)),
        ),
    ),
    (3, lambda m, r: m.guard_in_vma(pi=r.randrange(5), vi=r.randrange(8), off=r.randrange(8))),
    (
        3,
        lambda m, r: m.mprotect_vma(
            pi=r.randrange(5),
            vi=r.randrange(8),
            prot=_pick(r, (R, RW, RW, NONE)),
            head=r.random() < 0.5,
        ),
    ),
    (1, lambda m, r: m.munmap(pi=r.randrange(5), start=r.randrange(W), n=r.randint(1, 4))),
    (
        1,
        lambda m, r: m.mprotect(
            pi=r.randrange(5), start=r.randrange(W), n=r.randint(1, 4), prot=_pick(r, (R, RW, NONE))
        ),
    ),
    (
        1,
        lambda m, r: m.mremap(
            pi=r.randrange(5),
            start=r.randrange(W),
            old_n=r.randint(1, 4),
            new_n=r.randint(1, 4),
            dst=None if r.random() < 0.3 else r.randrange(W),
        ),
    ),
    (
        2,
        lambda m, r: m.madvise(
            pi=r.randrange(5), start=r.randrange(W), n=r.randint(1, 4), adv=_pick(r, ADVICE)
        ),
    ),
    (
        1,
        lambda m, r: m.mlock(
            pi=r.randrange(5), start=r.randrange(W), n=r.randint(1, 4), lock=r.random() < 0.5
        ),
    ),
    (2, lambda m, r: m.read(pi=r.randrange(5), pg=r.randrange(W))),
    (2, lambda m, r: m.write(pi=r.randrange(5), pg=r.randrange(W), byte=r.randint(1, 255))),
    (2, lambda m, r: m.fork(pi=r.randrange(5)) if m.nprocs < MAX_PROCS else None),
    (1, lambda m, r: m.exit(pi=r.randrange(5)) if m.nprocs > 1 else None),
]
WALK_OPS = [op for weight, op in WALK for _ in range(weight)]
SEEDS = range(300)


def random_walk(
    designs: tuple[str, ...], fork_property: bool, seeds=SEEDS, steps=25, ignored=("gu",)
):
    M = machine(designs, fork_property, ignored)
    for seed in seeds:
        rng = random.Random(seed)
        m = M()
        try:
            for _ in range(steps):
                _pick(rng, WALK_OPS)(m, rng)
                m.same_view()
        except PropertyViolation as e:
            ops = "\n  ".join(map(repr, m.log))
            raise PropertyViolation(f"seed {seed}: {e}\n  {ops}") from None
        m.teardown()


def _walk_params(bad: dict[str, str], exclude: tuple[str, ...] = ()):
    return [
        pytest.param(
            d,
            marks=[pytest.mark.xfail(strict=True, raises=PropertyViolation, reason=bad[d])]
            if d in bad
            else [],
        )
        for d in vmalab.DESIGNS
        if d not in exclude
    ]


FORK_BAD = {
    "tagged": "FINDING F1 (docs/findings.md): a merge that absorbs a flag-only VMA drops "
    "ANON_VMA_UNFAULTED, so fork loses its guards",
    "lossy": "negative control: guards in VMAs without an anon_vma are lost at fork",
}


@pytest.mark.parametrize("design", _walk_params(FORK_BAD))
def test_fork_property_random_walks(design):
    random_walk((design,), fork_property=True)


LOCKSTEP_BAD = {
    "tagged": "FINDINGS F1 and F2: tagged differs from the kernel (sticky) for the user",
    "tagged-fixed": "FINDING F2: no anon_vma at install, so mprotect read-only drops "
    "VM_ACCOUNT and merges differ from the kernel",
    "lossy": "negative control (F1-like guard loss, F2)",
}


@pytest.mark.parametrize("design", _walk_params(LOCKSTEP_BAD, exclude=("sticky",)))
def test_lockstep_random_walks_against_sticky(design):
    """Property (b): each design in lockstep with sticky (the kernel of this machine)."""
    random_walk(("sticky", design), fork_property=False)


LOCKSTEP_BAD_BUT_AC = {
    "tagged": "FINDING F1: guards lost at fork after a merge (visible as a guard-page "
    "difference in the child)",
    "lossy": "negative control: guards lost at fork",
}


@pytest.mark.parametrize("design", _walk_params(LOCKSTEP_BAD_BUT_AC, exclude=("sticky",)))
def test_lockstep_random_walks_against_sticky_ignoring_ac(design):
    """Property (b) with F2 (the "ac" VmFlag) set aside: what remains must be identical."""
    random_walk(("sticky", design), fork_property=False, ignored=("gu", "ac"))


# --- deterministic minimal cases ----------------------------------------------------------
def _hole_fill(k: Kernel):
    """A plain VMA, a hole, a guarded never-written VMA; fill the hole (3-way merge)."""
    p = k.spawn()
    flags = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
    p.mmap(BASE, P, RW, flags)
    p.mmap(BASE + 2 * P, P, RW, flags)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mmap(BASE + P, P, RW, flags)
    return p


def _mprotect_merge(k: Kernel):
    """A guarded never-written VMA merged into its plain left neighbour by mprotect."""
    p = k.spawn()
    flags = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
    p.mmap(BASE, 3 * P, RW, flags)
    p.mprotect(BASE + 2 * P, P, R)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mprotect(BASE + 2 * P, P, RW)
    return p


def _file_hole_fill(k: Kernel):
    """The same with MAP_SHARED file VMAs at contiguous offsets."""
    p = k.spawn()
    fd = p.open(FILE, uapi.O_RDWR | uapi.O_CREAT)
    p.ftruncate(fd, 4 * P)
    flags = uapi.MAP_SHARED | uapi.MAP_FIXED
    p.mmap(BASE, P, RW, flags, fd, 0)
    p.mmap(BASE + 2 * P, P, RW, flags, fd, 2 * P)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mmap(BASE + P, P, RW, flags, fd, P)
    return p


def _partial_merge(k: Kernel):
    """mprotect the guarded first page of a flagged VMA to match its plain left neighbour:
    the neighbour grows over the marker (designs.md 4.10, second row)."""
    p = k.spawn()
    flags = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
    p.mmap(BASE, 2 * P, RW, flags)
    p.mmap(BASE + 2 * P, 2 * P, R, flags)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mprotect(BASE + 2 * P, P, RW)
    return p


def _mremap_merge(k: Kernel):
    """Move a guarded never-written VMA next to a plain one (copy_vma() merges it when the
    VMA has no anon_vma, because its pgoff is reset to the new address)."""
    p = k.spawn()
    flags = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
    p.mmap(BASE, 2 * P, RW, flags)
    p.mmap(BASE + 10 * P, P, RW, flags)
    p.madvise(BASE + 10 * P, P, uapi.MADV_GUARD_INSTALL)
    p.mremap(BASE + 10 * P, P, P, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, BASE + 2 * P)
    return p


def _lossy_plain(k: Kernel):
    p = k.spawn()
    p.mmap(BASE, 3 * P, RW, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED)
    p.madvise(BASE + 2 * P, P, uapi.MADV_GUARD_INSTALL)
    return p


F1 = pytest.mark.xfail(strict=True, reason="FINDING F1: ANON_VMA_UNFAULTED lost on merge")
LOSSY = pytest.mark.xfail(strict=True, reason="negative control loses unfaulted guards")


def _params(scenario_bad_for):
    out = []
    for d in vmalab.DESIGNS:
        marks = []
        if d == "lossy":
            marks = [LOSSY]
        elif d in scenario_bad_for:
            marks = [F1]
        out.append(pytest.param(d, marks=marks))
    return out


@pytest.mark.parametrize(
    "setup", [_hole_fill, _mprotect_merge, _file_hole_fill, _partial_merge, _mremap_merge]
)
@pytest.mark.parametrize("design", _params(("tagged",)))
def test_fork_after_merge_keeps_guard(design, setup):
    k = Kernel(design)
    p = setup(k)
    k.check()
    assert [i for i, e in enumerate(p.pagemap(BASE, 3)) if e & uapi.PM_GUARD_REGION] == [2]
    if setup is not _mremap_merge or design not in ("eager", "sticky"):
        # the guarded page now lies in a VMA that starts at BASE (a merge happened); eager
        # and sticky gave the moved VMA an anon_vma, so it kept its pgoff and stayed apart
        assert [(v.start, v.end) for v in p.vmas()][0] == (BASE, BASE + 3 * P)
    c = p.fork()
    k.check()
    assert not try_read(c, BASE + 2 * P), "the child can access the parent's guard page"


@pytest.mark.parametrize("design", _params(()))
def test_fork_keeps_guard_in_unfaulted_vma(design):
    k = Kernel(design)
    p = _lossy_plain(k)
    c = p.fork()
    k.check()
    assert not try_read(c, BASE + 2 * P)


F2_BAD = ("tagged", "tagged-fixed", "lossy")
F2 = pytest.mark.xfail(
    strict=True,
    reason="FINDING F2: guarded never-written anonymous VMA "
    "has no anon_vma, so mprotect(PROT_READ) drops VM_ACCOUNT",
)


@pytest.mark.parametrize(
    "design", [pytest.param(d, marks=[F2] if d in F2_BAD else []) for d in vmalab.DESIGNS]
)
def test_mprotect_readonly_guarded_anon_keeps_account(design):
    """Measured on 6.18.44: install gave the VMA an anon_vma, so mprotect(PROT_READ) keeps
    VM_ACCOUNT ("ac") and the VMA does not merge with a read-only neighbour. The unguarded
    control drops "ac" and merges."""
    k = Kernel(design)
    p = k.spawn()
    flags = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED
    p.mmap(BASE + 10 * P, P, RW, flags)  # control
    p.mprotect(BASE + 10 * P, P, R)
    p.mmap(BASE + 11 * P, P, R, flags)
    assert [(v.start, v.end) for v in p.vmas()] == [(BASE + 10 * P, BASE + 12 * P)]
    assert "ac" not in p.vmas()[0].flags
    p.mmap(BASE, P, RW, flags)
    p.madvise(BASE, P, uapi.MADV_GUARD_INSTALL)
    p.mprotect(BASE, P, R)
    p.mmap(BASE + P, P, R, flags)
    k.check()
    vs = p.vmas()
    assert "ac" in vs[0].flags
    assert [(v.start, v.end) for v in vs[:2]] == [(BASE, BASE + P), (BASE + P, BASE + 2 * P)]
