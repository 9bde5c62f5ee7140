"""Ops on the address space: mmap, munmap, mprotect, mremap, madvise, mseal, mincore."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab import uapi
from vmalab.program.base import GenRule, GenState, OpBase, RangeOp, const, range_rule
from vmalab.program.fields import (
    Choice,
    Ctx,
    Prot,
    bool_field,
    int_field,
    names_field,
    prot_field,
    range_field,
    slot_field,
)
from vmalab.program.names import ADVICE_NAMES, MAP_FLAG_NAMES, MAX_FILE_PAGES, PAGE, bits, prot_bits
from vmalab.program.run import Refused

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner


HUGE_SHIFT = 26
"""MAP_HUGE_SHIFT (and MFD_HUGE_SHIFT)."""


def huge_pages(log: int) -> int:
    """The 4 KiB pages in a huge page of size ``1 << log`` (0: the default, 2 MiB)."""
    return 1 << ((log or 21) - 12) if log in (0, 21, 30) else 1


class Mmap(OpBase, op="mmap"):
    """``mmap(arena+addr, len, prot, flags|MAP_FIXED, fd, pgoff)``; ``file`` is a file slot.
    ``huge`` (0-63) adds ``MAP_HUGETLB | huge << MAP_HUGE_SHIFT`` (0: the default huge
    page size); the range, rounded up to the huge page size (2 MiB unless ``huge`` is 30),
    must lie in the arena, since the kernel maps (and, MAP_FIXED, unmaps) all of it."""

    addr: int
    len: int
    prot: str = "rw"
    flags: tuple[str, ...] = ("private", "anonymous")
    file: int | None = None
    pgoff: int = 0
    huge: int | None = None
    name_tables = {"flags": MAP_FLAG_NAMES}

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Mmap:
        a, n = range_field(ctx, d, loc)
        flags = names_field(ctx, d, "flags", loc, MAP_FLAG_NAMES, ("private", "anonymous"))
        if sum(t in flags for t in ("shared", "private", "droppable")) != 1:
            raise ctx.err(
                f"{loc}.flags", "exactly one of 'shared', 'private' and 'droppable' is required"
            )
        anon = "anonymous" in flags
        fslot: int | None = None
        if "file" in d and d["file"] is not None:
            if anon:
                raise ctx.err(f"{loc}.file", "an anonymous mapping takes no file")
            fslot = slot_field(ctx, d, loc, files)
        elif not anon:
            raise ctx.err(f"{loc}.file", "a file mapping needs a file slot")
        pgoff = int_field(ctx, d, "pgoff", loc, 0, MAX_FILE_PAGES, 0)
        huge: int | None = None
        if d.get("huge") is not None:
            huge = int_field(ctx, d, "huge", loc, 0, 63)
        return cls(a, n, prot_field(ctx, d, loc, "rw"), flags, fslot, pgoff, huge)

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        fl = bits(self.flags, MAP_FLAG_NAMES)
        if self.huge is None:
            r.check_range(self.addr, self.len)
        else:
            fl |= uapi.MAP_HUGETLB | self.huge << HUGE_SHIFT
            hpages = huge_pages(self.huge)
            r.check_range(self.addr, -(-max(self.len, 1) // hpages) * hpages)
        if not fl & uapi.MAP_FIXED_NOREPLACE:
            fl |= uapi.MAP_FIXED
        fd = -1 if self.file is None else r.fd(self.file)
        got = r.m.mmap(
            r.a(self.addr), self.len * PAGE, prot_bits(self.prot), fl, fd, self.pgoff * PAGE
        )
        return {"ret": r.rel(got)}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Mostly private anonymous; memfd or file mappings when a slot is open."""
        r = g.r
        g.maps.append((a, n))
        d: dict[str, Any] = {"op": "mmap", "addr": a, "len": n, "prot": g.prot()}
        t = r.random()
        if t < 0.7 or not g.files:
            d["flags"] = (
                ["private", "anonymous"]
                if t < 0.55
                else ["droppable", "anonymous"]
                if t < 0.6
                else ["shared", "anonymous"]
            )
        else:
            d["flags"] = [r.choice(["shared", "private"])]
            d["file"] = r.choice(g.files)
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

    @staticmethod
    def generate_beside(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """mmap right before or right after the origin of an earlier move (usually left
        unfaulted), so that moving the range back meets a pgoff-contiguous neighbour."""
        r = g.r
        a, n, _to = r.choice(g.moves)
        k = r.randint(1, 4)
        if r.random() < 0.5 and a > 0:
            k = min(k, a)
            start = a - k
        else:
            start = a + n
            k = min(k, g.arena - start)
            if k <= 0:
                start, k = max(0, a - 1), 1
        g.maps.append((start, k))
        return {"op": "mmap", "addr": start, "len": k, "prot": "rw"}

    gen_rules = (
        GenRule("mmap", 0, const(14), generate),
        # issue 14: beside an earlier move's origin, for the mremap merge class
        GenRule("beside", 14, lambda g, depth: 4 if g.moves else 0, generate_beside),
    )


class Munmap(RangeOp, op="munmap"):
    """``munmap(arena+addr, len)``."""

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.munmap(*r.span(self.addr, self.len))

    gen_rules = (range_rule("munmap", 1, 4),)


class Mprotect(RangeOp, op="mprotect"):
    """``mprotect(arena+addr, len, prot)``."""

    prot: str = field(metadata=Prot())

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.mprotect(*r.span(self.addr, self.len), prot_bits(self.prot))

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        return {"op": "mprotect", "addr": a, "len": n, "prot": g.prot()}

    gen_rules = (GenRule("mprotect", 2, const(6), generate),)


class Mremap(OpBase, op="mremap"):
    """``mremap(arena+addr, old_len, new_len, flags, arena+to)``.

    ``maymove`` without ``to`` is not allowed: the kernel would pick an address outside the
    arena. ``fixed`` (default true) adds MREMAP_FIXED to a ``to``; with ``fixed: false``
    ``to`` is only the hint that MREMAP_DONTUNMAP passes to get_unmapped_area() (and is
    ignored without DONTUNMAP), so the mapping may land outside the arena: the result is
    then ``"outside"``.
    """

    addr: int
    old_len: int
    new_len: int
    maymove: bool = False
    to: int | None = None
    dontunmap: bool = False
    fixed: bool = True

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Mremap:
        a, old = range_field(ctx, d, loc, "old_len")
        new = int_field(ctx, d, "new_len", loc, 0, ctx.arena)
        maymove = bool_field(ctx, d, "maymove", loc, False)
        dontunmap = bool_field(ctx, d, "dontunmap", loc, False)
        to: int | None = None
        if d.get("to") is not None:
            to = int_field(ctx, d, "to", loc, 0, ctx.arena - 1)
            if to + new > ctx.arena:
                raise ctx.err(f"{loc}.new_len", f"range [{to}, {to + new}) leaves the arena")
        elif a + new > ctx.arena:
            raise ctx.err(f"{loc}.new_len", f"range [{a}, {a + new}) leaves the arena")
        if maymove and to is None:
            raise ctx.err(f"{loc}.to", "maymove needs a destination inside the arena")
        fixed = bool_field(ctx, d, "fixed", loc, True)
        if not fixed and not maymove:
            raise ctx.err(f"{loc}.fixed", "'fixed': false needs maymove")
        return cls(a, old, new, maymove, to, dontunmap, fixed)

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        r.check_range(self.addr, self.old_len)
        fl = uapi.MREMAP_MAYMOVE if self.maymove else 0
        dest = 0
        if self.to is not None:
            r.check_range(self.to, self.new_len)
            if self.fixed:
                fl |= uapi.MREMAP_FIXED
            dest = r.a(self.to)
        else:
            if self.maymove:
                raise Refused("mremap MAYMOVE without a destination")
            r.check_range(self.addr, self.new_len)
        if self.dontunmap:
            fl |= uapi.MREMAP_DONTUNMAP
        got = r.m.mremap(r.a(self.addr), self.old_len * PAGE, self.new_len * PAGE, fl, dest)
        return {"ret": r.rel(got)}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Half the time a range that was mapped (so that the move succeeds); 60 % moves,
        some with DONTUNMAP or without MREMAP_FIXED; moves are remembered for ``back``."""
        r = g.r
        if g.maps and r.random() < 0.5:
            a, n = r.choice(g.maps)
        new = r.randint(1, 12)
        d: dict[str, Any] = {"op": "mremap", "addr": a, "old_len": n, "new_len": new}
        if r.random() < 0.6:
            to = r.randrange(g.arena - new + 1)
            d.update(maymove=True, to=to)
            if r.random() < 0.25:
                d["dontunmap"] = True
                d["new_len"] = n
                d["to"] = to = min(to, g.arena - n)
                if r.random() < 0.3:
                    d["fixed"] = False  # DONTUNMAP alone: ``to`` is a hint
            elif r.random() < 0.05:
                d["fixed"] = False  # MAYMOVE alone: moves outside the arena if it must
            if r.random() < 0.5 and d["new_len"] == n:
                g.moves.append((a, n, d["to"]))
            g.maps.append((d["to"], d["new_len"]))
        else:
            d["new_len"] = min(new, g.arena - a)
        return d

    @staticmethod
    def generate_back(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """mremap an earlier move's destination back to its origin (or right beside it),
        with or without MREMAP_DONTUNMAP."""
        r = g.r
        a, n, to = r.choice(g.moves)
        dest = a if r.random() < 0.7 else max(0, min(g.arena - n, a + r.choice([-n, n])))
        d = move_op(to, n, dest)
        if r.random() < 0.35:
            d["dontunmap"] = True
        if r.random() < 0.5:
            g.moves.append((to, n, dest))
        g.maps.append((dest, n))
        return d

    gen_rules = (
        GenRule("mremap", 3, const(6), generate),
        # issue 14: move back beside unfaulted neighbours (the mremap merge class)
        GenRule("back", 15, lambda g, depth: 4 if g.moves else 0, generate_back),
    )


def move_op(addr: int, n: int, to: int) -> dict[str, Any]:
    """The op object of an ``n``-page MREMAP_MAYMOVE|MREMAP_FIXED move from ``addr`` to ``to``."""
    return {"op": "mremap", "addr": addr, "old_len": n, "new_len": n, "maymove": True, "to": to}


ADVICE_WEIGHTS = [
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
"""The generator's advice mix (guard markers first)."""


class Madvise(RangeOp, op="madvise"):
    """``madvise(arena+addr, len, advice)``; ``advice`` is a name from ``ADVICE_NAMES``."""

    advice: str = field(metadata=Choice(ADVICE_NAMES, "unknown advice {}", typed=True))

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.madvise(*r.span(self.addr, self.len), ADVICE_NAMES[self.advice])

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        adv = g.r.choices([x for x, _ in ADVICE_WEIGHTS], [w for _, w in ADVICE_WEIGHTS])[0]
        return {"op": "madvise", "addr": a, "len": n, "advice": adv}

    gen_rules = (GenRule("madvise", 4, const(22), generate),)


class Mseal(RangeOp, op="mseal"):
    """``mseal(arena+addr, len, 0)`` (syscall 462)."""

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.mseal(*r.span(self.addr, self.len))

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Usually a range that was mapped: a seal of nothing tests little."""
        if g.maps and g.r.random() < 0.6:
            a, n = g.r.choice(g.maps)
        return {"op": "mseal", "addr": a, "len": n}

    gen_rules = (GenRule("mseal", 16, const(2), generate),)


class Mincore(RangeOp, op="mincore"):
    """``mincore(arena+addr, len)``; the result is one ``0``/``1`` per page."""

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        vec = r.m.mincore(*r.span(self.addr, self.len))
        return {"ret": "".join(str(b & 1) for b in vec)}

    gen_rules = (range_rule("mincore", 20, 3),)
