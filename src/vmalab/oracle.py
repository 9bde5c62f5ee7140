"""The differential oracle: the same program on the vmalab model and on the running kernel.

* ``diff(program)`` runs both (the model design chosen by ``vmalab.live.detect_design``) and
  returns the first ``Divergence`` in program order: an op's return value or errno, then the
  arena state after that op (VMAs with their VmFlags, pagemap letters), then, for a fork,
  the child's own observation; finally the end state and the per-page access probe.
* ``fuzz(n, seed)`` runs random programs, shrinks every undocumented divergence to a minimal
  program by delta debugging over its ops and saves it as ``tests/regressions/NNN.json``.
* ``slab_compare(n)`` compares the model's anon_vma / anon_vma_chain / vm_area_struct counts
  with ``/proc/slabinfo`` for an allocation-heavy program (issue 8 §5).

Known divergences are listed in ``KNOWN`` and documented in ``docs/divergences.md``: kernel
behaviour the model deliberately does not have, and open model bugs that are tracked by a
regression program. Fuzz counts those by id, and shrinks and saves everything else.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmalab import program as P
from vmalab.errors import ResourceLimitError
from vmalab.program import Observation, Program

# --------------------------------------------------------------------------------------
# Divergences


@dataclass
class Divergence:
    """One difference: where (``ops[3]``, ``ops[2].child[0]``, ``final``), what (``ret``,
    ``errno``, ``vmas``, ``pages``, ``probe``, ``data``, ``error``...), and both values."""

    where: str
    what: str
    kernel: Any
    model: Any
    op: str = ""
    known: str | None = None

    def describe(self) -> str:
        """One line for humans."""
        k = "" if self.known is None else f" [known: {self.known}]"
        op = f" ({self.op})" if self.op else ""
        return (
            f"{self.where}{op}: {self.what} differs: kernel {_fmt(self.kernel)}, "
            f"model {_fmt(self.model)}{k}"
        )

    def signature(self) -> tuple[str, str]:
        """What shrinking must preserve: the kind of difference and the op kind."""
        return (self.what, self.op)

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "what": self.what,
            "op": self.op,
            "kernel": self.kernel,
            "model": self.model,
            "known": self.known,
        }


def _fmt(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 300 else s[:297] + "..."


_RESULT_KEYS = ("ret", "errno", "fault", "data")


def _vmas_differ(k: list[Any], m: list[Any], ignore: frozenset[str]) -> bool:
    def norm(vs: list[Any]) -> list[Any]:
        return [list(v[:2]) + [sorted(set(v[2]) - ignore)] for v in vs]

    return norm(k) != norm(m)


def compare(
    prog_ops: tuple[P.Op, ...],
    kernel: Observation,
    model: Observation,
    where: str = "ops",
    *,
    ignore_flags: frozenset[str] = frozenset(),
) -> Divergence | None:
    """The first difference between two observations of the same ops, or None.
    ``ignore_flags``: VmFlags mnemonics left out of the VMA comparison (e.g. ``gu`` to
    compare a design without VM_MAYBE_GUARD by behaviour only)."""
    for i, o in enumerate(prog_ops):
        loc = f"{where}[{i}]"
        if i >= len(kernel.results) or i >= len(model.results):
            if kernel.error != model.error:
                return Divergence(loc, "error", kernel.error, model.error, o.op)
            if len(kernel.results) != len(model.results):
                return Divergence(loc, "ops run", len(kernel.results), len(model.results), o.op)
            break
        kr, mr = kernel.results[i], model.results[i]
        kv = {k: kr[k] for k in _RESULT_KEYS if k in kr}
        mv = {k: mr[k] for k in _RESULT_KEYS if k in mr}
        if kv != mv:
            what = (
                "errno"
                if "errno" in kv or "errno" in mv
                else ("ret" if kv.get("ret") != mv.get("ret") else "result")
            )
            return Divergence(loc, what, kv, mv, o.op)
        ks, ms = kr.get("state"), mr.get("state")
        if ks is not None and ms is not None:
            if _vmas_differ(ks["vmas"], ms["vmas"], ignore_flags):
                return Divergence(loc, "vmas", ks["vmas"], ms["vmas"], o.op)
            if ks["pages"] != ms["pages"]:
                return Divergence(loc, "pages", ks["pages"], ms["pages"], o.op)
        if isinstance(o, P.Fork):
            kc, mc = kr.get("child"), mr.get("child")
            if kc is not None and mc is not None:
                d = compare(
                    o.child,
                    Observation.from_json(kc),
                    Observation.from_json(mc),
                    f"{loc}.child",
                    ignore_flags=ignore_flags,
                )
                if d is not None:
                    return d
    if kernel.error != model.error:
        return Divergence(f"{where}/end", "error", kernel.error, model.error)
    kf, mf = kernel.final, model.final
    if (kf is None) != (mf is None):
        return Divergence(f"{where}/final", "exited", kf is None, mf is None)
    if kf is not None and mf is not None:
        if _vmas_differ(kf["vmas"], mf["vmas"], ignore_flags):
            return Divergence(f"{where}/final", "vmas", kf["vmas"], mf["vmas"])
        for key in ("pages", "probe", "data"):
            if kf.get(key) != mf.get(key):
                return Divergence(f"{where}/final", key, kf.get(key), mf.get(key))
    return None


# --------------------------------------------------------------------------------------
# Known divergences


@dataclass(frozen=True)
class Known:
    """A documented divergence (docs/divergences.md). ``kind`` is ``"kernel"`` for kernel
    behaviour the model deliberately lacks, ``"model-bug"`` for an open, tracked model bug
    (with a regression program under tests/regressions/) that the lead will fix."""

    id: str
    title: str
    match: Callable[[Program, Divergence], bool]
    kind: str = "kernel"


def _op_at(prog: Program, where: str) -> P.Op | None:
    """The op that ``where`` ("ops[3].child[1]") names, or None for end states."""
    if "/" in where:
        return None
    ops: tuple[P.Op, ...] = prog.ops
    cur: P.Op | None = None
    for part in where.split("."):
        name, _, idx = part.partition("[")
        n = int(idx.rstrip("]"))
        if name == "child":
            assert isinstance(cur, P.Fork)
            ops = cur.child
        cur = ops[n]
    return cur


def _khugepaged_collapse(prog: Program, d: Divergence) -> bool:
    """khugepaged (every 10 s, in the background) collapsed a PTE-mapped range of a
    MADV_HUGEPAGE VMA, filling its holes: pages the model has empty (`.`) are present
    (`A`) on the kernel, and nothing else differs. Only THP-sized programs."""
    if prog.arena_pages < 512 or d.what != "pages":
        return False
    k, m = d.kernel, d.model
    if not isinstance(k, str) or not isinstance(m, str) or len(k) != len(m):
        return False
    diff = [(a, b) for a, b in zip(k, m, strict=True) if a != b]
    return bool(diff) and all(a == "A" and b == "." for a, b in diff)


KNOWN: list[Known] = [
    Known(
        "khugepaged-collapse",
        "khugepaged collapsed a MADV_HUGEPAGE range in the background, filling its holes",
        _khugepaged_collapse,
    ),
]
"""Documented divergences, each explained in docs/divergences.md. Fuzz ignores these and
nothing else. (Fixed model bugs leave this list; their regression programs stay.)"""


def classify(prog: Program, d: Divergence) -> Divergence:
    """Set ``d.known`` to the id of the first documented divergence that explains it."""
    for k in KNOWN:
        try:
            if k.match(prog, d):
                d.known = k.id
                break
        except Exception:
            continue
    return d


# --------------------------------------------------------------------------------------
# diff


@dataclass
class DiffResult:
    """Both observations, the model design used, and the first divergence (None: agree)."""

    design: str
    kernel: Observation
    model: Observation
    divergence: Divergence | None
    seconds: float


def diff(
    prog: Program,
    design: str | None = None,
    *,
    timeout: float = 30.0,
    ignore_flags: frozenset[str] = frozenset(),
    model_timeout: float | None = None,
) -> DiffResult:
    """Run ``prog`` on the kernel and on the model; report the first divergence.

    ``timeout`` bounds the live run (``LiveTimeout``), ``model_timeout`` (default: the
    same) the model run: past it, or past any other budget, ``ResourceLimitError`` is
    raised, never a divergence."""
    from vmalab import live

    t0 = time.monotonic()
    design = design or live.detect_design()
    k = live.run_live(prog, timeout=timeout)
    m = P.run_model(prog, design, timeout=timeout if model_timeout is None else model_timeout)
    d = compare(prog.ops, k, m, ignore_flags=ignore_flags)
    if d is not None:
        classify(prog, d)
    return DiffResult(design, k, m, d, time.monotonic() - t0)


# --------------------------------------------------------------------------------------
# Random programs

_ADVICE_WEIGHTS = [
    ("guard_install", 12),
    ("guard_remove", 6),
    ("dontneed", 5),
    ("wipeonfork", 3),
    ("keeponfork", 1),
    ("dontfork", 2),
    ("dofork", 1),
    ("populate_read", 2),
    ("populate_write", 2),
    ("free", 3),
    ("remove", 1),
    ("dontdump", 1),
    ("normal", 1),
    ("dodump", 1),
    ("cold", 1),
    ("pageout", 1),
    ("willneed", 1),
    ("hugepage", 1),
    ("nohugepage", 1),
    ("random", 1),
    ("sequential", 1),
    ("mergeable", 1),
    ("unmergeable", 1),
]


class _Gen:
    """Random program builder (arena of 48 pages, memfd slot 0 of 64 pages)."""

    def __init__(self, rnd: random.Random, arena: int = 48) -> None:
        self.r = rnd
        self.arena = arena
        self.files: list[int] = []
        # mremap moves made so far, (origin, len, destination): later ops map beside the
        # origin and move the range back, so that the moved VMA (whose pgoff is its
        # origin's) meets a pgoff-contiguous neighbour, faulted or not.
        self.moves: list[tuple[int, int, int]] = []
        self.maps: list[tuple[int, int]] = []  # ranges mmapped so far
        self.memlock = False  # a memlock op dropped CAP_IPC_LOCK
        self.lockall = False  # an mlockall op locked (part of) the runner itself

    def rng(self, maxlen: int = 12) -> tuple[int, int]:
        if self.r.random() < 0.4:  # 4-page grid: more exact adjacency, merges and splits
            a = 4 * self.r.randrange(self.arena // 4)
            n = min(4 * self.r.randint(1, 3), self.arena - a)
            return a, n
        a = self.r.randrange(self.arena)
        n = self.r.randint(1, min(maxlen, self.arena - a))
        return a, n

    def prot(self) -> str:
        return self.r.choice(["rw", "rw", "rw", "r", "none", "rwx", "x"])

    def op(self, depth: int) -> dict[str, Any]:
        r = self.r
        kind = r.choices(
            [
                "mmap",
                "munmap",
                "mprotect",
                "mremap",
                "madvise",
                "mlock",
                "munlock",
                "read",
                "write",
                "fork",
                "ftruncate",
                "fallocate",
                "pwrite",
                "seal",
                "beside",
                "back",
                "mseal",
                "mlockall",
                "munlockall",
                "memlock",
                "mincore",
                "mdwe",
                "pkey",
            ],
            [
                14,
                4,
                6,
                6,
                22,
                1,
                1,
                6,
                8,
                5 if depth < 2 else 0,
                1,
                1,
                1,
                1,
                4 if self.moves else 0,
                4 if self.moves else 0,
                2,
                1,
                1,
                0.5 if depth == 0 else 0,
                3,
                0.5,
                1,
            ],
        )[0]
        a, n = self.rng()
        if kind == "beside":
            return self.map_beside()
        if kind == "back":
            return self.move_back()
        if kind in ("mremap", "write") and self.maps and r.random() < 0.5:
            a, n = r.choice(self.maps)  # a range that was mapped: moves and faults succeed
        if kind == "mmap":
            self.maps.append((a, n))
            d: dict[str, Any] = {"op": "mmap", "addr": a, "len": n, "prot": self.prot()}
            t = r.random()
            if t < 0.7 or not self.files:
                d["flags"] = (
                    ["private", "anonymous"]
                    if t < 0.55
                    else ["droppable", "anonymous"]
                    if t < 0.6
                    else ["shared", "anonymous"]
                )
            else:
                d["flags"] = [r.choice(["shared", "private"])]
                d["file"] = r.choice(self.files)
                d["pgoff"] = r.randrange(0, 40)
            for flag, p in (
                ("populate", 0.08),
                ("fixed_noreplace", 0.04),
                ("noreserve", 0.04),
                ("locked", 0.02),
                ("growsdown", 0.02),
            ):
                if r.random() < p:
                    d["flags"].append(flag)
            return d
        if kind == "munmap":
            return {"op": "munmap", "addr": a, "len": n}
        if kind == "mprotect":
            return {"op": "mprotect", "addr": a, "len": n, "prot": self.prot()}
        if kind == "mremap":
            new = r.randint(1, 12)
            d = {"op": "mremap", "addr": a, "old_len": n, "new_len": new}
            if r.random() < 0.6:
                to = r.randrange(self.arena - new + 1)
                d.update(maymove=True, to=to)
                if r.random() < 0.25:
                    d["dontunmap"] = True
                    d["new_len"] = n
                    d["to"] = to = min(to, self.arena - n)
                    if r.random() < 0.3:
                        d["fixed"] = False  # DONTUNMAP alone: ``to`` is a hint
                elif r.random() < 0.05:
                    d["fixed"] = False  # MAYMOVE alone: moves outside the arena if it must
                if r.random() < 0.5 and d["new_len"] == n:
                    self.moves.append((a, n, d["to"]))
                self.maps.append((d["to"], d["new_len"]))
            else:
                d["new_len"] = min(new, self.arena - a)
            return d
        if kind == "madvise":
            adv = r.choices([x for x, _ in _ADVICE_WEIGHTS], [w for _, w in _ADVICE_WEIGHTS])[0]
            return {"op": "madvise", "addr": a, "len": n, "advice": adv}
        if kind == "mlock" and r.random() < 0.3:
            return {"op": "mlock", "addr": a, "len": n, "onfault": True}
        if kind in ("mlockall", "memlock") and (
            self.memlock if kind == "mlockall" else self.lockall
        ):
            # Never both in one program: under a small RLIMIT_MEMLOCK without the cap the
            # kernel compares the whole runner's total_vm / locked_vm (all of Python's
            # memory once mlockall locked it) with the limit, which the model cannot know.
            kind = "munlockall"
        if kind == "mlockall":
            self.lockall = True
            opts = [
                ["future"],
                ["future", "onfault"],
                ["current"],
                ["current", "onfault"],
                ["current", "future"],
            ]
            return {"op": "mlockall", "flags": r.choice(opts)}
        if kind == "munlockall":
            return {"op": "munlockall"}
        if kind == "memlock":
            self.memlock = True
            return {"op": "memlock", "pages": r.choice([0, 2, 4, 8, 16])}
        if kind == "mdwe":
            return {
                "op": "mdwe",
                "flags": r.choice(
                    [["refuse_exec_gain"], ["refuse_exec_gain", "no_inherit"], [], ["no_inherit"]]
                ),
            }
        if kind == "pkey":
            t = r.random()
            if t < 0.4:
                return {
                    "op": "pkey_alloc",
                    "rights": r.choice([[], ["disable_write"], ["disable_access"]]),
                }
            if t < 0.6:
                return {"op": "pkey_free", "key": r.randint(-1, 2)}
            return {
                "op": "pkey_mprotect",
                "addr": a,
                "len": n,
                "prot": self.prot(),
                "key": r.choice([-1, -1, 0, 1]),
            }
        if kind == "mincore":
            return {"op": "mincore", "addr": a, "len": n}
        if kind == "mseal" and self.maps and r.random() < 0.6:
            a, n = r.choice(self.maps)
        if kind in ("mlock", "munlock", "read", "mseal"):
            return {"op": kind, "addr": a, "len": n}
        if kind == "write":
            return {"op": "write", "addr": a, "len": n, "byte": r.randrange(1, 256)}
        if kind == "fork":
            body = [self.op(depth + 1) for _ in range(r.randint(1, 5))]
            if r.random() < 0.15:
                body.append({"op": "exit"})
            return {"op": "fork", "child": body}
        if not self.files:
            return {"op": "read", "addr": a, "len": n}
        f = r.choice(self.files)
        if kind == "seal":
            seals = r.sample(["shrink", "grow", "write", "future_write", "seal"], r.randint(1, 2))
            return {"op": "seal", "file": f, "seals": seals}
        if kind == "ftruncate":
            return {"op": "ftruncate", "file": f, "pages": r.randrange(0, 64)}
        if kind == "fallocate":
            off = r.randrange(0, 48)
            mode = r.choice([["punch_hole", "keep_size"], [], ["keep_size"]])
            return {
                "op": "fallocate",
                "file": f,
                "offset": off,
                "len": r.randint(1, 8),
                "mode": mode,
            }
        off = r.randrange(0, 48)
        return {
            "op": "pwrite",
            "file": f,
            "offset": off,
            "len": r.randint(1, 4),
            "byte": r.randrange(1, 256),
        }

    def map_beside(self) -> dict[str, Any]:
        """mmap right before or right after the origin of an earlier move (usually left
        unfaulted), so that moving the range back meets a pgoff-contiguous neighbour."""
        r = self.r
        a, n, _to = r.choice(self.moves)
        k = r.randint(1, 4)
        if r.random() < 0.5 and a > 0:
            k = min(k, a)
            start = a - k
        else:
            start = a + n
            k = min(k, self.arena - start)
            if k <= 0:
                start, k = max(0, a - 1), 1
        self.maps.append((start, k))
        return {"op": "mmap", "addr": start, "len": k, "prot": "rw"}

    def move_back(self) -> dict[str, Any]:
        """mremap an earlier move's destination back to its origin (or right beside it),
        with or without MREMAP_DONTUNMAP."""
        r = self.r
        a, n, to = r.choice(self.moves)
        dest = a if r.random() < 0.7 else max(0, min(self.arena - n, a + r.choice([-n, n])))
        d: dict[str, Any] = {
            "op": "mremap",
            "addr": to,
            "old_len": n,
            "new_len": n,
            "maymove": True,
            "to": dest,
        }
        if r.random() < 0.35:
            d["dontunmap"] = True
        if r.random() < 0.5:
            self.moves.append((to, n, dest))
        self.maps.append((dest, n))
        return d

    def move_scenario(self) -> list[dict[str, Any]]:
        """A range moved away and back beside neighbours (the mremap merge class).

        mmap F, fault part of it (or not), move it away (maybe MREMAP_DONTUNMAP), map
        neighbours right before and/or after its origin (faulted or not, maybe forked
        over), then move F back (maybe DONTUNMAP) to the origin: copy_vma() then merges a
        VMA whose pgoff is the origin's with pgoff-contiguous neighbours.
        """
        r = self.r
        n = r.randint(1, 6)
        a = r.randrange(1, self.arena - n - 1)
        to = r.randrange(self.arena - n + 1)
        while a - n < to < a + n:
            to = r.randrange(self.arena - n + 1)
        ops: list[dict[str, Any]] = [{"op": "mmap", "addr": a, "len": n}]
        if r.random() < 0.8:
            k = r.randint(1, n)
            ops.append(
                {
                    "op": "write",
                    "addr": a + r.randrange(n - k + 1),
                    "len": k,
                    "byte": r.randrange(1, 256),
                }
            )
        away: dict[str, Any] = {
            "op": "mremap",
            "addr": a,
            "old_len": n,
            "new_len": n,
            "maymove": True,
            "to": to,
        }
        if r.random() < 0.3:
            away["dontunmap"] = True
        ops.append(away)
        sides = r.choice([("left",), ("right",), ("left", "right")])
        for side in sides:
            k = r.randint(1, min(4, a) if side == "left" else 4)
            start = a - k if side == "left" else a + n
            k = min(k, self.arena - start)
            if k <= 0:
                continue
            if not away.get("dontunmap"):
                ops.append({"op": "mmap", "addr": start, "len": k})
            if r.random() < 0.3:
                ops.append({"op": "write", "addr": start, "len": 1})
        if r.random() < 0.3:
            ops.append({"op": "fork", "child": [self.op(1) for _ in range(r.randint(0, 2))]})
        if away.get("dontunmap"):
            # the origin is still mapped (empty): the move back must go beside it
            ops.append({"op": "munmap", "addr": a, "len": n})
        back: dict[str, Any] = {
            "op": "mremap",
            "addr": to,
            "old_len": n,
            "new_len": n,
            "maymove": True,
            "to": a,
        }
        if r.random() < 0.3:
            back["dontunmap"] = True
            if r.random() < 0.3:
                back["fixed"] = False
        ops.append(back)
        self.maps.append((a, n))
        return ops

    def thp_scenario(self) -> list[dict[str, Any]]:
        """A 2 MiB-aligned MADV_HUGEPAGE region (arena of 1024 pages): THP and huge zero
        page faults, then partial zaps, protection changes, markers and forks."""
        r = self.r
        base = r.choice([0, 512])
        n = r.choice([512, 512, 600]) if base == 0 else 512
        ops: list[dict[str, Any]] = [
            {"op": "mmap", "addr": base, "len": n},
            {
                "op": "madvise",
                "addr": base,
                "len": n,
                "advice": r.choice(["hugepage", "hugepage", "hugepage", "nohugepage"]),
            },
        ]
        for _ in range(r.randint(1, 3)):
            page = base + r.randrange(n)
            ops.append({"op": r.choice(["read", "write"]), "addr": page, "len": 1})
        self.maps.append((base, n))
        return ops

    def program(self) -> dict[str, Any]:
        ops: list[dict[str, Any]] = []
        if self.r.random() < 0.06:
            self.arena = 1024
        if self.r.random() < 0.4:
            self.files.append(0)
            mfd: dict[str, Any] = {"op": "memfd", "file": 0}
            if self.r.random() < 0.5:
                mfd["flags"] = ["allow_sealing"]
            ops += [mfd, {"op": "ftruncate", "file": 0, "pages": 64}]
            if self.r.random() < 0.5:
                ops.append({"op": "pwrite", "file": 0, "offset": 0, "len": 16, "byte": 0x11})
        if self.r.random() < 0.2:
            self.files.append(1)
            ops += [
                {"op": "open", "file": 1, "name": "f1", "flags": ["rdwr", "creat"]},
                {"op": "ftruncate", "file": 1, "pages": self.r.choice([8, 32, 64])},
            ]
            if self.r.random() < 0.5:
                self.files.append(2)
                ops.append({"op": "open", "file": 2, "name": "f1", "flags": ["rdonly"]})
        body = [self.op(0) for _ in range(self.r.randint(3, 16))]
        if self.r.random() < 0.25:
            at = self.r.randint(0, len(body))
            body[at:at] = self.move_scenario()
        if self.arena == 1024:
            body[0:0] = self.thp_scenario()
        ops += body
        return {"format": P.FORMAT, "version": P.VERSION, "arena_pages": self.arena, "ops": ops}


def random_program(seed: int) -> Program:
    """A random valid program, determined by ``seed``."""
    return P.from_json(_Gen(random.Random(seed)).program(), f"random:{seed}")


# --------------------------------------------------------------------------------------
# Shrinking


def _reparse(ops: list[dict[str, Any]], prog: Program) -> Program | None:
    d = prog.to_json()
    d["ops"] = ops
    d.pop("meta", None)
    try:
        return P.from_json(d, "candidate")
    except Exception:
        return None


def _ddmin(items: list[Any], test: Callable[[list[Any]], bool], budget: list[int]) -> list[Any]:
    """Zeller's ddmin: a 1-minimal sublist of ``items`` for which ``test`` holds."""
    n = 2
    while len(items) >= 2 and budget[0] > 0:
        chunk = max(1, len(items) // n)
        subsets = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for i in range(len(subsets)):
            complement = [x for j, s in enumerate(subsets) if j != i for x in s]
            if budget[0] <= 0:
                break
            budget[0] -= 1
            if test(complement):
                items = complement
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    return items


def shrink(prog: Program, still_fails: Callable[[Program], bool], *, budget: int = 200) -> Program:
    """Delta-debug ``prog`` while ``still_fails``: ddmin over its ops, then recursively over
    each fork body (an empty body first), repeated while it makes progress."""
    left = [budget]

    def test(ops: list[dict[str, Any]]) -> bool:
        p = _reparse(ops, prog)
        return p is not None and still_fails(p)

    def shrink_list(
        ops: list[dict[str, Any]], rebuild: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        ops = _ddmin(ops, lambda c: test(rebuild(c)), left)
        for i in range(len(ops)):
            o = ops[i]
            if o.get("op") != "fork" or not o.get("child") or left[0] <= 0:
                continue

            def rebuild_child(
                c: list[dict[str, Any]], i: int = i, ops: list[dict[str, Any]] = ops
            ) -> list[dict[str, Any]]:
                return rebuild(ops[:i] + [{"op": "fork", "child": c}] + ops[i + 1 :])

            left[0] -= 1
            body = [] if test(rebuild_child([])) else shrink_list(o["child"], rebuild_child)
            ops = ops[:i] + [{"op": "fork", "child": body}] + ops[i + 1 :]
        # inline fork bodies whose fork does not matter
        i = 0
        while i < len(ops) and left[0] > 0:
            o = ops[i]
            if o.get("op") == "fork":
                cand = ops[:i] + list(o.get("child", [])) + ops[i + 1 :]
                left[0] -= 1
                if test(rebuild(cand)):
                    ops = cand
                    continue
            i += 1
        return ops

    ops = [P.op_to_json(o) for o in prog.ops]
    for _ in range(3):
        before = json.dumps(ops)
        ops = shrink_list(ops, lambda c: c)
        if json.dumps(ops) == before or left[0] <= 0:
            break
    p = _reparse(ops, prog)
    return p if p is not None else prog


# --------------------------------------------------------------------------------------
# Fuzzing


@dataclass
class FuzzSummary:
    """What a fuzz run did."""

    programs: int = 0
    ops: int = 0
    agreed: int = 0
    divergences: int = 0
    known: dict[str, int] = field(default_factory=dict)
    unknown: list[dict[str, Any]] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    live_errors: int = 0
    resource_limits: int = 0
    seconds: float = 0.0
    design: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _next_regression_path(d: str) -> str:
    os.makedirs(d, exist_ok=True)
    used = {int(f[:3]) for f in os.listdir(d) if f[:3].isdigit() and f.endswith(".json")}
    n = 1
    while n in used:
        n += 1
    return os.path.join(d, f"{n:03d}.json")


def fuzz(
    n: int,
    seed: int,
    *,
    regressions_dir: str | None = "tests/regressions",
    design: str | None = None,
    shrink_budget: int = 120,
    max_saved: int = 20,
    progress: Callable[[int], None] | None = None,
    timeout: float = 30.0,
    ignore_flags: frozenset[str] = frozenset(),
) -> FuzzSummary:
    """Run ``n`` random programs (seeds ``seed``, ``seed+1``, ...) through ``diff``. Every
    undocumented divergence is shrunk and (up to ``max_saved``) written to
    ``regressions_dir``."""
    from vmalab import live

    t0 = time.monotonic()
    design = design or live.detect_design()
    s = FuzzSummary(design=design)
    seen: set[str] = set()
    for i in range(n):
        prog = random_program(seed + i)
        s.programs += 1
        s.ops += prog.count_ops()
        try:
            r = diff(prog, design, timeout=timeout, ignore_flags=ignore_flags)
        except (live.LiveError, ResourceLimitError) as e:
            if isinstance(e, ResourceLimitError):  # LiveResourceLimit included
                s.resource_limits += 1
            else:
                s.live_errors += 1
            if progress:
                progress(i + 1)
            continue
        d = r.divergence
        if d is None:
            s.agreed += 1
        else:
            s.divergences += 1
            if d.known is not None:
                s.known[d.known] = s.known.get(d.known, 0) + 1
            else:
                entry: dict[str, Any] = {"seed": seed + i, "divergence": d.describe()}
                if regressions_dir is not None and len(s.saved) < max_saved:
                    small, sd = _shrink_divergence(
                        prog, d, design, shrink_budget, timeout, ignore_flags
                    )
                    text = json.dumps(small.to_json()["ops"])
                    if text not in seen:
                        seen.add(text)
                        path = save_regression(small, sd, design, seed + i, regressions_dir)
                        s.saved.append(path)
                        entry["saved"] = path
                    entry["shrunk"] = sd.describe()
                s.unknown.append(entry)
        if progress:
            progress(i + 1)
    s.seconds = round(time.monotonic() - t0, 1)
    return s


def _shrink_divergence(
    prog: Program,
    d: Divergence,
    design: str,
    budget: int,
    timeout: float,
    ignore_flags: frozenset[str] = frozenset(),
) -> tuple[Program, Divergence]:
    sig = d.signature()
    last: list[Divergence] = [d]

    def still(p: Program) -> bool:
        try:
            r = diff(p, design, timeout=timeout, ignore_flags=ignore_flags)
        except Exception:
            return False
        if (
            r.divergence is not None
            and r.divergence.known is None
            and r.divergence.signature() == sig
        ):
            last[0] = r.divergence
            return True
        return False

    small = shrink(prog, still, budget=budget)
    if small is not prog:
        still(small)  # refresh the divergence of the final program
    return small, last[0]


def save_regression(
    prog: Program, d: Divergence, design: str, seed: int | None, directory: str
) -> str:
    """Write ``prog`` with what diverged as ``directory/NNN.json``; return its path."""
    path = _next_regression_path(directory)
    meta = {
        "design": design,
        "divergence": d.to_json(),
        "status": "open",
        "found_by": f"fuzz seed {seed}" if seed is not None else "hand-written",
    }
    p = Program(prog.ops, prog.arena_pages, prog.observe, prog.comment or d.describe(), meta)
    with open(path, "w") as f:
        f.write(p.dumps())
    return path


# --------------------------------------------------------------------------------------
# Slab comparison (issue 8 §5)

SLAB_KINDS = ("anon", "shared-anon", "memfd-shared", "memfd-private")


def slab_program(n: int, kind: str = "anon", *, write: bool = True) -> Program:
    """``n`` isolated 2-page VMAs (1-page gaps): slab, fork baseline, mmap, slab, guard install
    on page 0 of each, slab, (write page 1 of each, slab), fork child [slab, exit], slab."""
    if kind not in SLAB_KINDS:
        raise ValueError(f"kind must be one of {SLAB_KINDS}")
    ops: list[dict[str, Any]] = []
    if kind.startswith("memfd"):
        ops += [{"op": "memfd", "file": 0}, {"op": "ftruncate", "file": 0, "pages": 2}]
    m: dict[str, Any] = {"op": "mmap", "addr": 0, "len": 2}
    if kind == "shared-anon":
        m["flags"] = ["shared", "anonymous"]
    elif kind == "memfd-shared":
        m.update(flags=["shared"], file=0)
    elif kind == "memfd-private":
        m.update(flags=["private"], file=0)
    ops += [
        {"op": "slab"},
        {"op": "fork", "child": [{"op": "slab"}, {"op": "exit"}]},
        {"op": "slab"},
        {"op": "repeat", "count": n, "stride": 3, "ops": [m]},
        {"op": "slab"},
        {
            "op": "repeat",
            "count": n,
            "stride": 3,
            "ops": [{"op": "madvise", "addr": 0, "len": 1, "advice": "guard_install"}],
        },
        {"op": "slab"},
    ]
    if write:
        ops += [
            {
                "op": "repeat",
                "count": n,
                "stride": 3,
                "ops": [{"op": "write", "addr": 1, "len": 1}],
            },
            {"op": "slab"},
        ]
    ops += [{"op": "fork", "child": [{"op": "slab"}, {"op": "exit"}]}, {"op": "slab"}]
    return P.from_json(
        {
            "format": P.FORMAT,
            "version": P.VERSION,
            "arena_pages": 3 * n,
            "observe": {"each": False, "probe": False, "contents": False},
            "ops": ops,
        },
        f"slab:{kind}",
    )


def slab_deltas(obs: Observation, prog: Program) -> dict[str, dict[str, int]]:
    """Per-step deltas from a ``slab_program`` observation. ``fork`` is the child's count
    minus the parent's before the fork, with the bare-process fork baseline subtracted."""
    forks = [r for r in obs.results if r.get("ret") == "child"]
    if len(forks) != 2 or any(not r["child"].get("slab") for r in forks):
        raise ValueError("not a slab_program observation")
    s = obs.slab
    base_child = forks[0]["child"]["slab"][0]
    child = forks[1]["child"]["slab"][0]
    has_write = len(s) == 6
    names = ["mmap", "install"] + (["write"] if has_write else [])
    out: dict[str, dict[str, int]] = {}
    keys = list(s[0])
    for j, name in enumerate(names):
        out[name] = {k: s[j + 2][k] - s[j + 1][k] for k in keys}
    before_fork = s[-2]
    out["fork"] = {k: (child[k] - before_fork[k]) - (base_child[k] - s[0][k]) for k in keys}
    out["exit"] = {k: s[-1][k] - before_fork[k] for k in keys}
    out["fork baseline"] = {k: base_child[k] - s[0][k] for k in keys}
    return out


@dataclass
class SlabComparison:
    """Model and kernel slab deltas per step of a ``slab_program``."""

    kind: str
    n: int
    kernel: dict[str, dict[str, int]]
    model: dict[str, dict[str, int]]

    def mismatches(self, tolerance: dict[str, float] | None = None, floor: int = 40) -> list[str]:
        """Steps whose kernel and model deltas differ by more than the tolerance: a fraction
        of ``n`` per cache (default 1% for anon_vma and anon_vma_chain, 10% for
        vm_area_struct, whose per-CPU caching survives ``shrink``; live-kernel-facts 4.5),
        and at least ``floor`` objects (other processes allocate from the same caches, and
        the fork baseline is a separate measurement). A design difference is ~``n``."""
        tol = tolerance or {"anon_vma": 0.01, "anon_vma_chain": 0.01, "vm_area_struct": 0.10}
        bad = []
        for step, kd in self.kernel.items():
            if step in ("fork baseline", "exit"):
                continue
            for cache, t in tol.items():
                kv, mv = kd.get(cache, 0), self.model[step].get(cache, 0)
                if abs(kv - mv) > max(floor, t * self.n):
                    bad.append(f"{step}: {cache} kernel {kv:+d}, model {mv:+d}")
        return bad

    def table(self) -> str:
        """A Markdown table of both sets of deltas."""
        caches = ("anon_vma", "anon_vma_chain", "vm_area_struct")
        lines = [
            f"| {self.kind}, N={self.n} | " + " | ".join(caches) + " |",
            "|---|" + "---|" * len(caches),
        ]
        for step in self.kernel:
            cells = [
                f"{self.kernel[step].get(c, 0):+d} / {self.model[step].get(c, 0):+d}"
                for c in caches
            ]
            lines.append(f"| {step} (kernel / model) | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def slab_compare(
    n: int = 2000,
    kind: str = "anon",
    design: str | None = None,
    *,
    trials: int = 3,
    timeout: float = 120.0,
) -> SlabComparison:
    """Run ``slab_program(n, kind)`` on the model once and on the kernel ``trials`` times;
    the kernel figure of each step and cache is the median over the trials (other processes
    on the machine allocate from the same caches)."""
    from vmalab import live

    design = design or live.detect_design()
    prog = slab_program(n, kind)
    runs = []
    for _ in range(max(1, trials)):
        k = live.run_live(prog, timeout=timeout)
        if k.error:
            raise live.LiveError(k.error)
        runs.append(slab_deltas(k, prog))
    kernel = {
        step: {c: sorted(r[step][c] for r in runs)[len(runs) // 2] for c in runs[0][step]}
        for step in runs[0]
    }
    m = P.run_model(prog, design, check=False)
    if m.error:
        raise RuntimeError(f"model failed on the slab program: {m.error}")
    return SlabComparison(kind, n, kernel, slab_deltas(m, prog))
