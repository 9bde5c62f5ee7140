"""SysV shm, msync, /dev/zero and userfaultfd registration (issue 14; docs/coverage.md).

* ``shmget``/``shmat``/``shmdt``/``shmctl``: segments live in **segment slots** 0-15 (the
  ids differ between the model and the kernel, so programs never see them). A segment
  slot is kept in the runner's slot table under ``SEG_BASE + slot`` (file slots are 0-15),
  so that fork children inherit it like a file slot. The live runner runs every program in
  a new IPC namespace and removes (IPC_RMID) every segment it created at the end.
* ``msync``: errnos only (neither side has a backing store to write).
* ``devzero``: ``open("/dev/zero")`` into a file slot; the ordinary ``mmap`` op maps it.
* ``userfaultfd``, ``uffdio_api``, ``uffdio_register``, ``uffdio_unregister``: the
  descriptor is a file slot (``close`` releases it). The live runner always opens it with
  O_NONBLOCK and adds UFFD_FEATURE_SIGBUS to every UFFDIO_API, so that a fault in a
  registered range can never block it; and once a program has used ``userfaultfd``,
  neither side makes a user access to a page of a VMA registered for missing or minor
  faults (``um``/``ui``): the access's result is ``"uffd"`` (``Runner.uffd_blocked``).
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab.program.base import GenRule, GenState, OpBase, RangeOp, const
from vmalab.program.fields import (
    ADDR,
    LEN,
    Choice,
    Ctx,
    Int,
    Names,
    OpInput,
    Slot,
    Spec,
    int_field,
)
from vmalab.program.names import (
    MAX_FILES,
    MS_NAMES,
    PAGE,
    SHMAT_NAMES,
    SHMGET_NAMES,
    UFFD_FEATURE_NAMES,
    UFFD_MODE_NAMES,
    bits,
)
from vmalab.program.run import SEG_BASE, Refused

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner

MAX_SHM_BYTES = 1 << 24
"""Largest ``size`` of a ``shmget`` (16 MiB); larger segments test nothing the model does
differently, and the kernel's ENOMEM/EINVAL limits are measured in tests/."""


class Seg(Spec):
    """``seg``: a segment slot that holds a segment (or, with ``new``, any slot, which the
    op fills)."""

    def __init__(self, *, new: bool = False) -> None:
        self.new = new

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        s = int_field(x.ctx, x.d, key, x.loc, 0, MAX_FILES - 1)
        if not self.new and SEG_BASE + s not in x.files:
            raise x.ctx.err(f"{x.loc}.{key}", f"segment slot {s} holds no segment")
        return s

    def commit(self, files: set[int], value: Any) -> None:
        if self.new:
            files.add(SEG_BASE + value)


BYTE_OFFSET = Int(0, PAGE - 1)
"""A byte offset inside a page."""


def _seg(r: Runner, slot: int) -> int:
    sid = r.files.get(SEG_BASE + slot)
    if sid is None:
        raise Refused(f"segment slot {slot} holds no segment")
    return sid


class Shmget(OpBase, op="shmget"):
    """``shmget(key, size, flags|0600)`` into segment slot ``seg``; key 0 is IPC_PRIVATE."""

    seg: int = field(metadata=Seg(new=True))
    size: int = field(metadata=Int(0, MAX_SHM_BYTES))
    key: int = field(default=0, metadata=Int(0, 0x7FFFFFFF))
    flags: tuple[str, ...] = field(default=("creat",), metadata=Names(SHMGET_NAMES))

    def run(self, r: Runner, obs: Observation) -> None:
        sid = r.m.shmget(self.key, self.size, bits(self.flags, SHMGET_NAMES) | 0o600)
        r.files[SEG_BASE + self.seg] = sid

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """A new segment of 1-8 pages (sometimes not a page multiple), private or by key
        (a later shmget of the same key finds it)."""
        r = g.r
        s = len(g.segs)
        if s >= MAX_FILES:
            return {"op": "read", "addr": a, "len": n}
        pages = r.randint(1, 8)
        size = pages * PAGE - (r.randrange(1, PAGE) if r.random() < 0.2 else 0)
        d: dict[str, Any] = {"op": "shmget", "seg": s, "size": size}
        if r.random() < 0.4:
            d["key"] = r.choice([0x1234, 0x5678])
            old = [p for k, p in g.segs if k == d["key"]]
            if old:
                d["size"] = r.choice([0, size])
                pages = old[0]
                if d["size"] > pages * PAGE:
                    d["size"] = pages * PAGE
                if r.random() < 0.2:
                    d["flags"] = ["creat", "excl"]
        if r.random() < 0.1:
            d["flags"] = ["creat", "noreserve"]
        g.segs.append((d.get("key", 0) or -1 - s, pages))
        return d

    gen_rules = (GenRule("shmget", 31, lambda g, depth: 1.5 if depth == 0 else 0, generate),)


class Shmat(OpBase, op="shmat"):
    """``shmat(id, arena+addr+offset, flags)``; ``offset`` (bytes, 0-4095) makes an
    unaligned address (for SHM_RND). Returns the arena page."""

    seg: int = field(metadata=Seg())
    addr: int = field(metadata=ADDR)
    offset: int = field(default=0, metadata=BYTE_OFFSET)
    flags: tuple[str, ...] = field(default=(), metadata=Names(SHMAT_NAMES))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        r.check_range(self.addr, 1)
        got = r.m.shmat(
            _seg(r, self.seg), r.a(self.addr) + self.offset, bits(self.flags, SHMAT_NAMES)
        )
        return {"ret": r.rel(got)}

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Attach a segment where it fits in the arena; mostly over free space, sometimes
        with SHM_REMAP over a mapping, SHM_RND with an unaligned address, read-only."""
        r = g.r
        if not g.segs:
            return {"op": "read", "addr": a, "len": n}
        s = r.randrange(len(g.segs))
        pages = g.segs[s][1]
        a = r.randrange(max(1, g.arena - pages))
        d: dict[str, Any] = {"op": "shmat", "seg": s, "addr": a}
        fl = []
        t = r.random()
        if t < 0.15:
            fl.append("rdonly")
        elif t < 0.25:
            fl.append("exec")
        if r.random() < 0.3:
            fl.append("remap")
        if r.random() < 0.1:
            fl.append("rnd")
            d["offset"] = r.randrange(1, PAGE)
        if fl:
            d["flags"] = fl
        g.maps.append((a, pages))
        g.attaches.append(a)
        return d

    gen_rules = (GenRule("shmat", 32, lambda g, depth: 3 if g.segs else 0, generate),)


class Shmdt(OpBase, op="shmdt"):
    """``shmdt(arena+addr+offset)``."""

    addr: int = field(metadata=ADDR)
    offset: int = field(default=0, metadata=BYTE_OFFSET)

    def run(self, r: Runner, obs: Observation) -> None:
        r.check_range(self.addr, 1)
        r.m.shmdt(r.a(self.addr) + self.offset)

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        """Usually an earlier attach address (or one page off it: EINVAL)."""
        r = g.r
        if g.attaches and r.random() < 0.8:
            a = r.choice(g.attaches)
            if r.random() < 0.15:
                a = min(g.arena - 1, a + 1)
        return {"op": "shmdt", "addr": a}

    gen_rules = (GenRule("shmdt", 33, lambda g, depth: 1.5 if g.segs else 0, generate),)


class Shmctl(OpBase, op="shmctl"):
    """``shmctl(id, IPC_RMID, NULL)`` (``cmd`` is ``"rmid"``, the only command modelled)."""

    seg: int = field(metadata=Seg())
    cmd: str = field(
        default="rmid", metadata=Choice({"rmid": 0}, "unknown command {} (one of rmid)")
    )

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.shmctl(_seg(r, self.seg), 0)

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        return {"op": "shmctl", "seg": g.r.randrange(len(g.segs))}

    gen_rules = (GenRule("shmctl", 34, lambda g, depth: 0.7 if g.segs else 0, generate),)


class Msync(RangeOp, op="msync"):
    """``msync(arena+addr, len*PAGE + extra, flags)``; ``extra`` (bytes, 0-4095) makes a
    length that is not a page multiple."""

    flags: tuple[str, ...] = field(default=("sync",), metadata=Names(MS_NAMES))
    extra: int = field(default=0, metadata=BYTE_OFFSET)

    def check(self, ctx: Ctx, loc: str) -> None:
        if self.extra and self.addr + self.len >= ctx.arena:
            raise ctx.err(f"{loc}.extra", "the range leaves the arena")

    def run(self, r: Runner, obs: Observation) -> None:
        r.check_range(self.addr, self.len + (1 if self.extra else 0))
        r.m.msync(r.a(self.addr), self.len * PAGE + self.extra, bits(self.flags, MS_NAMES))

    @staticmethod
    def generate(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        r = g.r
        if g.maps and r.random() < 0.6:
            a, n = r.choice(g.maps)
            n = min(n, g.arena - a)
        fl = r.choice([["sync"], ["async"], ["invalidate"], ["sync", "invalidate"], []])
        d: dict[str, Any] = {"op": "msync", "addr": a, "len": n, "flags": fl}
        if r.random() < 0.1:
            d["flags"] = ["sync", "async"]
        if r.random() < 0.1 and a + n < g.arena:
            d["extra"] = r.randrange(1, PAGE)
        return d

    gen_rules = (GenRule("msync", 35, const(1.5), generate),)


class Devzero(OpBase, op="devzero"):
    """``open("/dev/zero", rdwr or rdonly)`` into file slot ``file``."""

    file: int = field(metadata=Slot(new=True))
    mode: str = field(
        default="rw", metadata=Choice({"rw": 2, "r": 0}, "expected 'rw' or 'r', got {}")
    )

    def run(self, r: Runner, obs: Observation) -> None:
        r.files[self.file] = r.m.open_devzero(self.mode == "rw")


class Userfaultfd(OpBase, op="userfaultfd"):
    """``userfaultfd(O_CLOEXEC|O_NONBLOCK)`` (syscall 323) into file slot ``file``."""

    file: int = field(metadata=Slot(new=True))

    def run(self, r: Runner, obs: Observation) -> None:
        r.uffd_used = True
        r.files[self.file] = r.m.userfaultfd()


class UffdioApi(OpBase, op="uffdio_api"):
    """``ioctl(fd, UFFDIO_API, {api: 0xAA, features | UFFD_FEATURE_SIGBUS})`` (the runner
    always adds SIGBUS: a fault in a registered range is a SIGBUS on both sides, never a
    blocked runner); the result is the reply's ``features`` and ``ioctls`` as hex."""

    file: int = field(metadata=Slot())
    features: tuple[str, ...] = field(default=(), metadata=Names(UFFD_FEATURE_NAMES))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        fl = bits(self.features, UFFD_FEATURE_NAMES) | UFFD_FEATURE_NAMES["sigbus"]
        feat, ioctls = r.m.uffdio_api(r.fd(self.file), fl)
        return {"ret": f"{feat:#x} {ioctls:#x}"}


class UffdRangeOp(OpBase):
    """Base of the ops on a range of a userfaultfd: file slot ``file``, arena range
    ``addr``, ``len``."""

    file: int = field(metadata=Slot())
    addr: int = field(metadata=ADDR)
    len: int = field(metadata=LEN)


class UffdioRegister(UffdRangeOp, op="uffdio_register"):
    """``ioctl(fd, UFFDIO_REGISTER, {range, mode})``; the result is the range's ioctls."""

    mode: tuple[str, ...] = field(default=("missing",), metadata=Names(UFFD_MODE_NAMES))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        a, n = r.span(self.addr, self.len)
        got = r.m.uffdio_register(r.fd(self.file), a, n, bits(self.mode, UFFD_MODE_NAMES))
        return {"ret": f"{got:#x}"}


class UffdioUnregister(UffdRangeOp, op="uffdio_unregister"):
    """``ioctl(fd, UFFDIO_UNREGISTER, {range})``."""

    def run(self, r: Runner, obs: Observation) -> None:
        a, n = r.span(self.addr, self.len)
        r.m.uffdio_unregister(r.fd(self.file), a, n)


UFFD_SLOT = 8
"""The file slot the generator opens its userfaultfd in (memfds and files use 0-2; the
generator keeps this slot and ``DEVZERO_SLOT`` out of ``GenState.files``, which the file
ops draw from)."""
DEVZERO_SLOT = 9


def _gen_uffd(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    """Open the generator's userfaultfd (once, in the top process)."""
    g.uffd = True
    return {"op": "userfaultfd", "file": UFFD_SLOT}


def _gen_api(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    r = g.r
    g.uffd_api = True
    d: dict[str, Any] = {"op": "uffdio_api", "file": UFFD_SLOT}
    if r.random() < 0.3:
        d["features"] = r.choice([["sigbus"], ["event_remap"], ["event_unmap", "sigbus"]])
    return d


def _gen_register(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    r = g.r
    if g.maps and r.random() < 0.6:
        a, n = r.choice(g.maps)
        n = min(n, g.arena - a)
    mode = r.choice([["missing"], ["missing"], ["wp"], ["missing", "wp"], ["minor"]])
    return {"op": "uffdio_register", "file": UFFD_SLOT, "addr": a, "len": n, "mode": mode}


def _gen_unregister(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    if g.maps and g.r.random() < 0.3:
        a, n = g.r.choice(g.maps)
        n = min(n, g.arena - a)
    return {"op": "uffdio_unregister", "file": UFFD_SLOT, "addr": a, "len": n}


def _gen_close_uffd(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    """Close the userfaultfd (userfaultfd_release: every registration goes)."""
    g.uffd = False
    g.uffd_api = False
    return {"op": "close", "file": UFFD_SLOT}


def _gen_devzero(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    g.devzero = True
    return {"op": "devzero", "file": DEVZERO_SLOT, "mode": g.r.choice(["rw", "rw", "r"])}


def _gen_mmap_devzero(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    g.maps.append((a, n))
    return {
        "op": "mmap",
        "addr": a,
        "len": n,
        "prot": g.r.choice(["rw", "r"]),
        "flags": [g.r.choice(["private", "private", "shared"])],
        "file": DEVZERO_SLOT,
        "pgoff": g.r.choice([0, 0, a]),
    }


def _gen_mmap_huge(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
    """A MAP_HUGETLB mapping at a 2 MiB-aligned arena page (arenas of at least 512
    pages): mostly NORESERVE (the project's pool is 0: without it, ENOMEM); sometimes a
    length that is not a huge-page multiple (rounded up by the kernel) or the size bits
    of 1 GiB (ENOMEM or, with NORESERVE, a mapping too large for the arena: not drawn)
    or an invalid size (EINVAL)."""
    r = g.r
    base = 512 * r.randrange(g.arena // 512)
    n = r.choice([512, 512, 100, 1])
    d: dict[str, Any] = {"op": "mmap", "addr": base, "len": n, "prot": g.prot()}
    fl = [r.choice(["private", "private", "shared"]), "anonymous"]
    if r.random() < 0.75:
        fl.append("noreserve")
    d["flags"] = fl
    d["huge"] = r.choice([0, 21, 21, 22] + ([30] if "noreserve" not in fl else []))
    if r.random() < 0.1 and base + 1024 <= g.arena:
        # Not 2 MiB aligned: EINVAL. Not in the last 2 MiB of the arena, where the
        # rounded-up range would leave it and the runner would refuse the op instead.
        d["addr"] = base + r.randrange(1, 512)
        d["len"] = 1
    g.maps.append((d["addr"], d["len"]))
    return d


def _uffd_ready(g: GenState, depth: int) -> float:
    return 1.0 if g.uffd else 0


Userfaultfd.gen_rules = (
    GenRule("userfaultfd", 36, lambda g, d: 1.0 if d == 0 and not g.uffd else 0, _gen_uffd),
)
UffdioApi.gen_rules = (
    GenRule(
        "uffdio_api",
        37,
        lambda g, d: (0.2 if g.uffd_api else 4.0) * _uffd_ready(g, d),
        _gen_api,
    ),
)
UffdioRegister.gen_rules = (
    GenRule("uffdio_register", 38, lambda g, d: 4.0 * _uffd_ready(g, d), _gen_register),
    GenRule(
        "close_uffd",
        39,
        lambda g, d: 0.3 if g.uffd and d == 0 else 0,
        _gen_close_uffd,
    ),
)
UffdioUnregister.gen_rules = (GenRule("uffdio_unregister", 40, _uffd_ready, _gen_unregister),)
Devzero.gen_rules = (
    GenRule("devzero", 41, lambda g, d: 0.7 if d == 0 and not g.devzero else 0, _gen_devzero),
    GenRule("mmap_devzero", 42, lambda g, d: 3.0 if g.devzero else 0, _gen_mmap_devzero),
    GenRule("mmap_huge", 43, lambda g, d: 2.0 if g.arena >= 512 else 0, _gen_mmap_huge),
)
