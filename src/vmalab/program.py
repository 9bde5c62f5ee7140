"""Differential-oracle programs: a versioned JSON format, its parser and an interpreter.

A *program* is a short, deterministic sequence of address-space operations (mmap, madvise,
fork, ...) whose addresses are page numbers relative to an *arena*: a fixed, page-aligned
region at ``ARENA_BASE``. The same program runs on the vmalab model (``run_model``) and on
the real kernel (``vmalab.live.run_live``); both produce an ``Observation`` (plain JSON data)
that ``vmalab.oracle`` compares. The format is documented in ``docs/program-format.md``.

The interpreter (``execute``) is independent of where it runs: it drives a ``Machine``,
which the model side implements over the public ``Process`` API and the live side over
ctypes syscalls. Nothing here touches the running kernel.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from vmalab import uapi
from vmalab.errors import ResourceLimitError, UserInputError

FORMAT = "vmalab-program"
VERSION = 1
PAGE = 4096
ARENA_BASE = 0x200000000000
"""Fixed, 1 GiB-aligned arena address (live-kernel-facts section 2, "Deterministic addresses")."""
DEFAULT_ARENA_PAGES = 256
MAX_ARENA_PAGES = 1 << 16
MAX_FILE_PAGES = 1 << 16
MAX_FILES = 16
MAX_DEPTH = 4
"""Maximum nesting of fork (and repeat) bodies."""
MAX_OPS = 200_000
"""Maximum number of operations after ``repeat`` expansion, fork bodies included."""

PROT_NAMES = {"r": uapi.PROT_READ, "w": uapi.PROT_WRITE, "x": uapi.PROT_EXEC}
MAP_FLAG_NAMES = {
    "shared": uapi.MAP_SHARED,
    "private": uapi.MAP_PRIVATE,
    "droppable": uapi.MAP_DROPPABLE,
    "anonymous": uapi.MAP_ANONYMOUS,
    "populate": uapi.MAP_POPULATE,
    "noreserve": uapi.MAP_NORESERVE,
    "locked": uapi.MAP_LOCKED,
    "growsdown": uapi.MAP_GROWSDOWN,
    "fixed_noreplace": uapi.MAP_FIXED_NOREPLACE,
}
ADVICE_NAMES = {
    "normal": uapi.MADV_NORMAL,
    "random": uapi.MADV_RANDOM,
    "sequential": uapi.MADV_SEQUENTIAL,
    "willneed": uapi.MADV_WILLNEED,
    "dontneed": uapi.MADV_DONTNEED,
    "free": uapi.MADV_FREE,
    "remove": uapi.MADV_REMOVE,
    "dontfork": uapi.MADV_DONTFORK,
    "dofork": uapi.MADV_DOFORK,
    "mergeable": uapi.MADV_MERGEABLE,
    "unmergeable": uapi.MADV_UNMERGEABLE,
    "hugepage": uapi.MADV_HUGEPAGE,
    "nohugepage": uapi.MADV_NOHUGEPAGE,
    "dontdump": uapi.MADV_DONTDUMP,
    "dodump": uapi.MADV_DODUMP,
    "wipeonfork": uapi.MADV_WIPEONFORK,
    "keeponfork": uapi.MADV_KEEPONFORK,
    "cold": uapi.MADV_COLD,
    "pageout": uapi.MADV_PAGEOUT,
    "populate_read": uapi.MADV_POPULATE_READ,
    "populate_write": uapi.MADV_POPULATE_WRITE,
    "dontneed_locked": uapi.MADV_DONTNEED_LOCKED,
    "collapse": uapi.MADV_COLLAPSE,
    "guard_install": uapi.MADV_GUARD_INSTALL,
    "guard_remove": uapi.MADV_GUARD_REMOVE,
}
OPEN_FLAG_NAMES = {
    "rdonly": uapi.O_RDONLY,
    "wronly": uapi.O_WRONLY,
    "rdwr": uapi.O_RDWR,
    "creat": uapi.O_CREAT,
    "trunc": uapi.O_TRUNC,
    "excl": uapi.O_EXCL,
}
FALLOC_NAMES = {"keep_size": uapi.FALLOC_FL_KEEP_SIZE, "punch_hole": uapi.FALLOC_FL_PUNCH_HOLE}
MFD_NAMES = {"allow_sealing": uapi.MFD_ALLOW_SEALING}
PKEY_RIGHT_NAMES = {"disable_access": 1, "disable_write": 2}
MDWE_NAMES = {
    "refuse_exec_gain": uapi.PR_MDWE_REFUSE_EXEC_GAIN,
    "no_inherit": uapi.PR_MDWE_NO_INHERIT,
}
MCL_NAMES = {"current": uapi.MCL_CURRENT, "future": uapi.MCL_FUTURE, "onfault": uapi.MCL_ONFAULT}
SEAL_NAMES = {
    "seal": uapi.F_SEAL_SEAL,
    "shrink": uapi.F_SEAL_SHRINK,
    "grow": uapi.F_SEAL_GROW,
    "write": uapi.F_SEAL_WRITE,
    "future_write": uapi.F_SEAL_FUTURE_WRITE,
}


# --------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class Mmap:
    """``mmap(arena+addr, len, prot, flags|MAP_FIXED, fd, pgoff)``; ``file`` is a file slot."""

    addr: int
    len: int
    prot: str = "rw"
    flags: tuple[str, ...] = ("private", "anonymous")
    file: int | None = None
    pgoff: int = 0
    op: str = "mmap"


@dataclass(frozen=True)
class Munmap:
    """``munmap(arena+addr, len)``."""

    addr: int
    len: int
    op: str = "munmap"


@dataclass(frozen=True)
class Mprotect:
    """``mprotect(arena+addr, len, prot)``."""

    addr: int
    len: int
    prot: str
    op: str = "mprotect"


@dataclass(frozen=True)
class Mremap:
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
    op: str = "mremap"


@dataclass(frozen=True)
class Madvise:
    """``madvise(arena+addr, len, advice)``; ``advice`` is a name from ``ADVICE_NAMES``."""

    addr: int
    len: int
    advice: str
    op: str = "madvise"


@dataclass(frozen=True)
class Mlock:
    """``mlock(arena+addr, len)``, or ``mlock2(..., MLOCK_ONFAULT)`` with ``onfault``."""

    addr: int
    len: int
    onfault: bool = False
    op: str = "mlock"


@dataclass(frozen=True)
class Munlock:
    """``munlock(arena+addr, len)``."""

    addr: int
    len: int
    op: str = "munlock"


@dataclass(frozen=True)
class Mseal:
    """``mseal(arena+addr, len, 0)`` (syscall 462)."""

    addr: int
    len: int
    op: str = "mseal"


@dataclass(frozen=True)
class Mlockall:
    """``mlockall(flags)``; ``flags`` are names from ``MCL_NAMES``."""

    flags: tuple[str, ...] = ("current",)
    op: str = "mlockall"


@dataclass(frozen=True)
class Munlockall:
    """``munlockall()``."""

    op: str = "munlockall"


@dataclass(frozen=True)
class Memlock:
    """``setrlimit(RLIMIT_MEMLOCK, pages * PAGE)`` and, unless ``cap_ipc_lock``, drop
    CAP_IPC_LOCK from the effective capabilities (the runner runs as root)."""

    pages: int
    cap_ipc_lock: bool = False
    op: str = "memlock"


@dataclass(frozen=True)
class Mdwe:
    """``prctl(PR_SET_MDWE, flags)`` then ``prctl(PR_GET_MDWE)``, whose value is the
    result; ``flags`` are names from ``MDWE_NAMES``."""

    flags: tuple[str, ...] = ("refuse_exec_gain",)
    op: str = "mdwe"


@dataclass(frozen=True)
class Mincore:
    """``mincore(arena+addr, len)``; the result is one ``0``/``1`` per page."""

    addr: int
    len: int
    op: str = "mincore"


@dataclass(frozen=True)
class PkeyAlloc:
    """``pkey_alloc(0, rights)``; the result is the key. ``rights``: names from
    ``PKEY_RIGHT_NAMES``."""

    rights: tuple[str, ...] = ()
    op: str = "pkey_alloc"


@dataclass(frozen=True)
class PkeyFree:
    """``pkey_free(key)``."""

    key: int
    op: str = "pkey_free"


@dataclass(frozen=True)
class PkeyMprotect:
    """``pkey_mprotect(arena+addr, len, prot, key)`` (key -1: plain mprotect)."""

    addr: int
    len: int
    prot: str
    key: int
    op: str = "pkey_mprotect"


@dataclass(frozen=True)
class Memfd:
    """``memfd_create(name, flags)`` into file slot ``file``."""

    file: int
    name: str = "vmalab"
    flags: tuple[str, ...] = ()
    op: str = "memfd"


@dataclass(frozen=True)
class Open:
    """``open(DIR/name, flags, 0600)`` into file slot ``file`` (DIR: a private tmpfs dir)."""

    file: int
    name: str
    flags: tuple[str, ...] = ("rdwr", "creat")
    op: str = "open"


@dataclass(frozen=True)
class Seal:
    """``fcntl(fd, F_ADD_SEALS, seals)``; ``seals`` are names from ``SEAL_NAMES``."""

    file: int
    seals: tuple[str, ...]
    op: str = "seal"


@dataclass(frozen=True)
class Close:
    """``close(fd)`` of file slot ``file``; the slot may not be used again until reopened."""

    file: int
    op: str = "close"


@dataclass(frozen=True)
class Ftruncate:
    """``ftruncate(fd, pages * PAGE)``."""

    file: int
    pages: int
    op: str = "ftruncate"


@dataclass(frozen=True)
class Fallocate:
    """``fallocate(fd, mode, offset * PAGE, len * PAGE)``."""

    file: int
    offset: int
    len: int
    mode: tuple[str, ...] = ()
    op: str = "fallocate"


@dataclass(frozen=True)
class Pwrite:
    """``pwrite(fd, bytes([byte]) * (len * PAGE), offset * PAGE)``."""

    file: int
    offset: int
    len: int
    byte: int = 0x5A
    op: str = "pwrite"


@dataclass(frozen=True)
class Pread:
    """``pread(fd, len * PAGE, offset * PAGE)``; reports the length and each page's first byte."""

    file: int
    offset: int
    len: int
    op: str = "pread"


@dataclass(frozen=True)
class Read:
    """A user load of the first byte of each page in [addr, addr+len), stopping at a fault."""

    addr: int
    len: int
    op: str = "read"


@dataclass(frozen=True)
class Write:
    """A user store of ``byte`` to the first byte of each page, stopping at a fault."""

    addr: int
    len: int
    byte: int = 0x5A
    op: str = "write"


@dataclass(frozen=True)
class Fork:
    """``fork()``: the child runs ``child`` to completion (then exits) before the parent goes on."""

    child: tuple[Op, ...] = ()
    op: str = "fork"


@dataclass(frozen=True)
class Exit:
    """``exit()``: must be the last operation of its program; no final state is recorded."""

    op: str = "exit"


@dataclass(frozen=True)
class Slab:
    """Record slab counts (anon_vma, anon_vma_chain, vm_area_struct) at this point."""

    op: str = "slab"


Op = (
    Mmap
    | Munmap
    | Mprotect
    | Mremap
    | Madvise
    | Mlock
    | Munlock
    | Mseal
    | Mlockall
    | Munlockall
    | Memlock
    | Mdwe
    | Mincore
    | PkeyAlloc
    | PkeyFree
    | PkeyMprotect
    | Memfd
    | Open
    | Close
    | Seal
    | Ftruncate
    | Fallocate
    | Pwrite
    | Pread
    | Read
    | Write
    | Fork
    | Exit
    | Slab
)


@dataclass(frozen=True)
class Observe:
    """What to record. ``each``: state (VMAs, pagemap) after every op; ``probe``: a real
    load of every mapped arena page at the end; ``contents``: the byte each probe read."""

    each: bool = True
    probe: bool = True
    contents: bool = True


@dataclass(frozen=True)
class Program:
    """A validated program. ``ops`` has every ``repeat`` already expanded."""

    ops: tuple[Op, ...]
    arena_pages: int = DEFAULT_ARENA_PAGES
    observe: Observe = field(default_factory=Observe)
    comment: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def count_ops(self) -> int:
        """Number of operations including those of fork bodies."""
        return _count(self.ops)

    def to_json(self) -> dict[str, Any]:
        """The program in the on-disk format (``repeat`` is not re-folded)."""
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arena_pages": self.arena_pages}
        if self.comment:
            d["comment"] = self.comment
        if self.observe != Observe():
            d["observe"] = dataclasses.asdict(self.observe)
        d["ops"] = [op_to_json(o) for o in self.ops]
        if self.meta:
            d["meta"] = self.meta
        return d

    def dumps(self) -> str:
        """The program as JSON text, one op per line."""
        d = self.to_json()
        ops = d.pop("ops")
        meta = d.pop("meta", None)
        head = json.dumps(d)[:-1]
        lines = [head + ', "ops": [']
        lines += [
            "  " + json.dumps(o) + ("," if i < len(ops) - 1 else "") for i, o in enumerate(ops)
        ]
        tail = "]"
        if meta is not None:
            tail += ', "meta": ' + json.dumps(meta)
        lines.append(tail + "}")
        return "\n".join(lines) + "\n"


def _count(ops: tuple[Op, ...]) -> int:
    n = 0
    for o in ops:
        n += 1
        if isinstance(o, Fork):
            n += _count(o.child)
    return n


def op_to_json(o: Op) -> dict[str, Any]:
    """One operation in the on-disk format (defaults omitted)."""
    d: dict[str, Any] = {"op": o.op}
    for f in dataclasses.fields(o):
        if f.name == "op":
            continue
        v = getattr(o, f.name)
        if isinstance(o, Fork) and f.name == "child":
            d["child"] = [op_to_json(c) for c in v]
            continue
        if f.default is not dataclasses.MISSING and v == f.default:
            continue
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


# --------------------------------------------------------------------------------------
# Parsing and validation

_OPS: dict[str, type] = {
    "mmap": Mmap,
    "munmap": Munmap,
    "mprotect": Mprotect,
    "mremap": Mremap,
    "madvise": Madvise,
    "mlock": Mlock,
    "munlock": Munlock,
    "mseal": Mseal,
    "memfd": Memfd,
    "mlockall": Mlockall,
    "munlockall": Munlockall,
    "memlock": Memlock,
    "mdwe": Mdwe,
    "mincore": Mincore,
    "pkey_alloc": PkeyAlloc,
    "pkey_free": PkeyFree,
    "pkey_mprotect": PkeyMprotect,
    "open": Open,
    "close": Close,
    "seal": Seal,
    "ftruncate": Ftruncate,
    "fallocate": Fallocate,
    "pwrite": Pwrite,
    "pread": Pread,
    "read": Read,
    "write": Write,
    "fork": Fork,
    "exit": Exit,
    "slab": Slab,
}


class _Ctx:
    """Parser state: source name, arena size, open file slots, op budget."""

    def __init__(self, source: str, arena: int) -> None:
        self.source = source
        self.arena = arena
        self.budget = MAX_OPS

    def err(self, loc: str, msg: str) -> UserInputError:
        loc = loc.lstrip(".")
        return UserInputError(f"{self.source}:{loc}" if loc else self.source, msg)


def _int(
    ctx: _Ctx, d: dict[str, Any], key: str, loc: str, lo: int, hi: int, default: int | None = None
) -> int:
    if key not in d:
        if default is None:
            raise ctx.err(f"{loc}.{key}", "missing")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.err(f"{loc}.{key}", f"expected an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise ctx.err(f"{loc}.{key}", f"{_short(v)} is out of range [{lo}, {hi}]")
    return v


def _bool(ctx: _Ctx, d: dict[str, Any], key: str, loc: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ctx.err(f"{loc}.{key}", f"expected true or false, got {_short(v)}")
    return v


def _names(
    ctx: _Ctx,
    d: dict[str, Any],
    key: str,
    loc: str,
    table: dict[str, int],
    default: tuple[str, ...],
) -> tuple[str, ...]:
    v = d.get(key, list(default))
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ctx.err(f"{loc}.{key}", f"expected a list of names, got {_short(v)}")
    for i, x in enumerate(v):
        if x not in table:
            raise ctx.err(
                f"{loc}.{key}[{i}]", f"unknown name {_short(x)} (one of {', '.join(sorted(table))})"
            )
    if len(set(v)) != len(v):
        raise ctx.err(f"{loc}.{key}", "duplicate names")
    return tuple(v)


def _str(ctx: _Ctx, d: dict[str, Any], key: str, loc: str, default: str | None = None) -> str:
    if key not in d:
        if default is None:
            raise ctx.err(f"{loc}.{key}", "missing")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise ctx.err(f"{loc}.{key}", f"expected a string, got {_short(v)}")
    return v


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _prot(ctx: _Ctx, d: dict[str, Any], loc: str, default: str | None) -> str:
    p = _str(ctx, d, "prot", loc, default)
    if p == "none":
        return ""
    if any(c not in PROT_NAMES for c in p) or len(set(p)) != len(p):
        raise ctx.err(f"{loc}.prot", f"expected 'none' or letters from 'rwx', got {_short(p)}")
    return "".join(c for c in "rwx" if c in p)


def _range(ctx: _Ctx, d: dict[str, Any], loc: str, lkey: str = "len") -> tuple[int, int]:
    a = _int(ctx, d, "addr", loc, 0, ctx.arena - 1)
    n = _int(ctx, d, lkey, loc, 0, ctx.arena)
    if a + n > ctx.arena:
        raise ctx.err(
            f"{loc}.{lkey}", f"range [{a}, {a + n}) leaves the arena of {ctx.arena} pages"
        )
    return a, n


def _slot(ctx: _Ctx, d: dict[str, Any], loc: str, files: set[int], *, new: bool = False) -> int:
    s = _int(ctx, d, "file", loc, 0, MAX_FILES - 1)
    if new and s in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is already open")
    if not new and s not in files:
        raise ctx.err(f"{loc}.file", f"file slot {s} is not open")
    return s


def _allowed(ctx: _Ctx, d: dict[str, Any], loc: str, keys: set[str]) -> None:
    for k in d:
        if not isinstance(k, str) or k not in keys:
            raise ctx.err(f"{loc}.{k}", "unknown field")


def _parse_op(ctx: _Ctx, d: Any, loc: str, files: set[int], depth: int) -> list[Op]:
    if not isinstance(d, dict):
        raise ctx.err(loc, f"expected an object, got {_short(d)}")
    kind = d.get("op")
    if kind == "repeat":
        _allowed(ctx, d, loc, {"op", "count", "stride", "ops"})
        return _parse_repeat(ctx, d, loc, files, depth)
    if not isinstance(kind, str) or kind not in _OPS:
        raise ctx.err(
            f"{loc}.op", f"unknown op {_short(kind)} (one of {', '.join(sorted(_OPS))}, repeat)"
        )
    cls = _OPS[kind]
    _allowed(ctx, d, loc, {f.name for f in dataclasses.fields(cls)})
    ctx.budget -= 1
    if ctx.budget < 0:
        raise ctx.err(loc, f"more than {MAX_OPS} operations")
    o: Op
    if kind == "mmap":
        a, n = _range(ctx, d, loc)
        flags = _names(ctx, d, "flags", loc, MAP_FLAG_NAMES, ("private", "anonymous"))
        if sum(t in flags for t in ("shared", "private", "droppable")) != 1:
            raise ctx.err(
                f"{loc}.flags", "exactly one of 'shared', 'private' and 'droppable' is required"
            )
        anon = "anonymous" in flags
        fslot: int | None = None
        if "file" in d and d["file"] is not None:
            if anon:
                raise ctx.err(f"{loc}.file", "an anonymous mapping takes no file")
            fslot = _slot(ctx, d, loc, files)
        elif not anon:
            raise ctx.err(f"{loc}.file", "a file mapping needs a file slot")
        pgoff = _int(ctx, d, "pgoff", loc, 0, MAX_FILE_PAGES, 0)
        o = Mmap(a, n, _prot(ctx, d, loc, "rw"), flags, fslot, pgoff)
    elif kind == "munmap":
        o = Munmap(*_range(ctx, d, loc))
    elif kind == "mprotect":
        a, n = _range(ctx, d, loc)
        o = Mprotect(a, n, _prot(ctx, d, loc, None))
    elif kind == "mremap":
        a, old = _range(ctx, d, loc, "old_len")
        new = _int(ctx, d, "new_len", loc, 0, ctx.arena)
        maymove = _bool(ctx, d, "maymove", loc, False)
        dontunmap = _bool(ctx, d, "dontunmap", loc, False)
        to: int | None = None
        if d.get("to") is not None:
            to = _int(ctx, d, "to", loc, 0, ctx.arena - 1)
            if to + new > ctx.arena:
                raise ctx.err(f"{loc}.new_len", f"range [{to}, {to + new}) leaves the arena")
        elif a + new > ctx.arena:
            raise ctx.err(f"{loc}.new_len", f"range [{a}, {a + new}) leaves the arena")
        if maymove and to is None:
            raise ctx.err(f"{loc}.to", "maymove needs a destination inside the arena")
        fixed = _bool(ctx, d, "fixed", loc, True)
        if not fixed and not maymove:
            raise ctx.err(f"{loc}.fixed", "'fixed': false needs maymove")
        o = Mremap(a, old, new, maymove, to, dontunmap, fixed)
    elif kind == "madvise":
        a, n = _range(ctx, d, loc)
        adv = _str(ctx, d, "advice", loc)
        if adv not in ADVICE_NAMES:
            raise ctx.err(f"{loc}.advice", f"unknown advice {_short(adv)}")
        o = Madvise(a, n, adv)
    elif kind == "mlock":
        o = Mlock(*_range(ctx, d, loc), _bool(ctx, d, "onfault", loc, False))
    elif kind == "munlock":
        o = Munlock(*_range(ctx, d, loc))
    elif kind == "mseal":
        o = Mseal(*_range(ctx, d, loc))
    elif kind == "mlockall":
        o = Mlockall(_names(ctx, d, "flags", loc, MCL_NAMES, ("current",)))
    elif kind == "munlockall":
        o = Munlockall()
    elif kind == "mdwe":
        o = Mdwe(_names(ctx, d, "flags", loc, MDWE_NAMES, ("refuse_exec_gain",)))
    elif kind == "mincore":
        o = Mincore(*_range(ctx, d, loc))
    elif kind == "pkey_alloc":
        o = PkeyAlloc(_names(ctx, d, "rights", loc, PKEY_RIGHT_NAMES, ()))
    elif kind == "pkey_free":
        o = PkeyFree(_int(ctx, d, "key", loc, -1, 16))
    elif kind == "pkey_mprotect":
        a, n = _range(ctx, d, loc)
        o = PkeyMprotect(a, n, _prot(ctx, d, loc, None), _int(ctx, d, "key", loc, -1, 16))
    elif kind == "memlock":
        o = Memlock(
            _int(ctx, d, "pages", loc, 0, MAX_ARENA_PAGES),
            _bool(ctx, d, "cap_ipc_lock", loc, False),
        )
    elif kind == "seal":
        o = Seal(_slot(ctx, d, loc, files), _names(ctx, d, "seals", loc, SEAL_NAMES, ()))
    elif kind in ("memfd", "open"):
        s = _slot(ctx, d, loc, files, new=True)
        name = _str(ctx, d, "name", loc, "vmalab" if kind == "memfd" else None)
        if (
            not (1 <= len(name) <= 32)
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
            or name in (".", "..")
        ):
            raise ctx.err(f"{loc}.name", "expected 1-32 characters from [A-Za-z0-9._-]")
        if kind == "memfd":
            o = Memfd(s, name, _names(ctx, d, "flags", loc, MFD_NAMES, ()))
        else:
            fl = _names(ctx, d, "flags", loc, OPEN_FLAG_NAMES, ("rdwr", "creat"))
            if sum(x in fl for x in ("rdonly", "wronly", "rdwr")) != 1:
                raise ctx.err(f"{loc}.flags", "exactly one of rdonly, wronly, rdwr is required")
            o = Open(s, name, fl)
        files.add(s)
    elif kind == "close":
        s = _slot(ctx, d, loc, files)
        files.discard(s)
        o = Close(s)
    elif kind == "ftruncate":
        o = Ftruncate(_slot(ctx, d, loc, files), _int(ctx, d, "pages", loc, 0, MAX_FILE_PAGES))
    elif kind in ("fallocate", "pwrite", "pread"):
        s = _slot(ctx, d, loc, files)
        off = _int(ctx, d, "offset", loc, 0, MAX_FILE_PAGES)
        n = _int(ctx, d, "len", loc, 0 if kind != "fallocate" else 1, MAX_FILE_PAGES - off)
        if kind == "fallocate":
            o = Fallocate(s, off, n, _names(ctx, d, "mode", loc, FALLOC_NAMES, ()))
        elif kind == "pwrite":
            o = Pwrite(s, off, n, _int(ctx, d, "byte", loc, 0, 255, 0x5A))
        else:
            o = Pread(s, off, n)
    elif kind == "read":
        o = Read(*_range(ctx, d, loc))
    elif kind == "write":
        a, n = _range(ctx, d, loc)
        o = Write(a, n, _int(ctx, d, "byte", loc, 0, 255, 0x5A))
    elif kind == "fork":
        if depth >= MAX_DEPTH:
            raise ctx.err(loc, f"fork nested deeper than {MAX_DEPTH}")
        body = d.get("child", [])
        o = Fork(_parse_ops(ctx, body, f"{loc}.child", set(files), depth + 1))
    elif kind == "exit":
        o = Exit()
    else:
        o = Slab()
    return [o]


def _parse_repeat(ctx: _Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> list[Op]:
    if depth >= MAX_DEPTH:
        raise ctx.err(loc, f"repeat nested deeper than {MAX_DEPTH}")
    count = _int(ctx, d, "count", loc, 0, MAX_OPS)
    stride = _int(ctx, d, "stride", loc, 0, ctx.arena)
    body = d.get("ops")
    if not isinstance(body, list):
        raise ctx.err(f"{loc}.ops", "expected a list of operations")
    out: list[Op] = []
    for i in range(count):
        if ctx.budget - len(body) < 0:
            raise ctx.err(loc, f"more than {MAX_OPS} operations")
        for j, raw in enumerate(body):
            r = _shift(ctx, raw, i * stride, f"{loc}.ops[{j}]")
            out += _parse_op(ctx, r, f"{loc}.ops[{j}]", files, depth + 1)
    return out


def _shift(ctx: _Ctx, raw: Any, delta: int, loc: str) -> Any:
    """``raw`` with its arena addresses (``addr``, ``to``) moved by ``delta`` pages."""
    if not isinstance(raw, dict) or delta == 0:
        return raw
    r = dict(raw)
    for k in ("addr", "to"):
        v = r.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            r[k] = v + delta
    return r


def _parse_ops(ctx: _Ctx, raw: Any, loc: str, files: set[int], depth: int) -> tuple[Op, ...]:
    if not isinstance(raw, list):
        raise ctx.err(loc, f"expected a list of operations, got {_short(raw)}")
    out: list[Op] = []
    for i, d in enumerate(raw):
        ops = _parse_op(ctx, d, f"{loc}[{i}]", files, depth)
        if out and isinstance(out[-1], Exit):
            raise ctx.err(f"{loc}[{i}]", "nothing may follow 'exit'")
        out += ops
    return tuple(out)


def from_json(data: Any, source: str = "program") -> Program:
    """Validate decoded JSON ``data`` and build a ``Program``.

    Raises ``UserInputError`` whose location is ``SOURCE:ops[3].len`` style.
    """
    if not isinstance(data, dict):
        raise UserInputError(source, "a program is a JSON object")
    ctx = _Ctx(source, DEFAULT_ARENA_PAGES)
    _allowed(
        ctx, data, "", {"format", "version", "arena_pages", "ops", "observe", "comment", "meta"}
    )
    if data.get("format", FORMAT) != FORMAT:
        raise ctx.err("format", f"expected {FORMAT!r}")
    v = data.get("version")
    if v != VERSION or isinstance(v, bool):
        raise ctx.err("version", f"unsupported version {_short(v)} (this is version {VERSION})")
    ctx.arena = _int(ctx, data, "arena_pages", "", 1, MAX_ARENA_PAGES, DEFAULT_ARENA_PAGES)
    obs = data.get("observe", {})
    if not isinstance(obs, dict):
        raise ctx.err("observe", "expected an object")
    _allowed(ctx, obs, "observe", {"each", "probe", "contents"})
    observe = Observe(
        _bool(ctx, obs, "each", "observe", True),
        _bool(ctx, obs, "probe", "observe", True),
        _bool(ctx, obs, "contents", "observe", True),
    )
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        raise ctx.err("comment", "expected a string")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ctx.err("meta", "expected an object")
    if "ops" not in data:
        raise ctx.err("ops", "missing")
    ops = _parse_ops(ctx, data["ops"], "ops", set(), 0)
    return Program(ops, ctx.arena, observe, comment, meta)


def loads(text: str | bytes, source: str = "program") -> Program:
    """Parse program text; every problem (JSON syntax included) is a ``UserInputError``."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserInputError(source, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserInputError(source, f"not valid JSON: {e}") from None
    try:
        return from_json(data, source)
    except RecursionError:
        raise UserInputError(source, "program nested too deeply") from None


def load(path: str) -> Program:
    """Read and parse the program file ``path``."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise UserInputError(path, e.strerror or str(e)) from None
    return loads(text, path)


# --------------------------------------------------------------------------------------
# Observations


def page_char(entry: int) -> str:
    """One pagemap entry as a letter: G guard, A anon (or zero page) present, F file/shmem
    present, S swap, . nothing (live-kernel-facts legend)."""
    if entry & uapi.PM_GUARD_REGION:
        return "G"
    if entry & uapi.PM_PRESENT:
        return "F" if entry & uapi.PM_FILE else "A"
    if entry & uapi.PM_SWAP:
        return "S"
    return "."


@dataclass
class State:
    """Arena state: VMAs as [start, end, sorted VmFlags] in arena pages, and one pagemap
    letter per arena page (blank where no VMA)."""

    vmas: list[list[Any]]
    pages: str

    def to_json(self) -> dict[str, Any]:
        return {"vmas": self.vmas, "pages": self.pages}


@dataclass
class Observation:
    """What one process did. ``results[i]`` belongs to ``ops[i]``: ``{"ret": ...}`` or
    ``{"errno": "ENOMEM"}`` (and ``"fault"``/``"data"`` for accesses, ``"child"`` for fork,
    ``"state"`` with ``observe.each``). ``final``: the state at the end, with ``probe`` (o/S/B
    per page) and ``data`` (two hex digits per page, ``--`` where not read); None after exit.
    ``error``: a runner failure (model exception, refused op), which is a divergence."""

    results: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    slab: list[dict[str, int]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "final": self.final,
            "slab": self.slab,
            "error": self.error,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Observation:
        return Observation(
            list(d.get("results", [])), d.get("final"), list(d.get("slab", [])), d.get("error")
        )


# --------------------------------------------------------------------------------------
# Interpreter


class Machine(Protocol):
    """One process on which a program runs: the model (``ModelMachine``) or the real kernel
    (``vmalab.live.child.LiveMachine``). Addresses are absolute bytes; failures raise
    ``OSError`` with the kernel errno."""

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int: ...
    def munmap(self, addr: int, length: int) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> None: ...
    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int: ...
    def madvise(self, addr: int, length: int, advice: int) -> None: ...
    def mlock(self, addr: int, length: int, onfault: bool) -> None: ...
    def munlock(self, addr: int, length: int) -> None: ...
    def mseal(self, addr: int, length: int) -> None: ...
    def mlockall(self, flags: int) -> None: ...
    def munlockall(self) -> None: ...
    def memlock(self, limit: int, cap_ipc_lock: bool) -> None: ...
    def mdwe(self, flags: int) -> int: ...
    def mincore(self, addr: int, length: int) -> bytes: ...
    def pkey_alloc(self, rights: int) -> int: ...
    def pkey_free(self, key: int) -> None: ...
    def pkey_mprotect(self, addr: int, length: int, prot: int, key: int) -> None: ...
    def add_seals(self, fd: int, seals: int) -> None: ...
    def memfd_create(self, name: str, flags: int) -> int: ...
    def open(self, name: str, flags: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> int: ...
    def pread(self, fd: int, length: int, offset: int) -> bytes: ...
    def load(self, addr: int) -> tuple[str, int]:
        """A one-byte user load: ("ok", byte) or ("SIGSEGV"/"SIGBUS", 0)."""
        ...

    def store(self, addr: int, byte: int) -> str:
        """A one-byte user store: "ok", "SIGSEGV" or "SIGBUS"."""
        ...

    def fork(self, run_child: Callable[[Machine], Observation]) -> Observation: ...
    def exit(self) -> None: ...
    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, frozenset[str]]]: ...
    def pagemap(self, addr: int, npages: int) -> list[int]: ...
    def slab(self) -> dict[str, int]: ...
    def check(self) -> None:
        """Model invariants after an op (no-op on the live kernel)."""
        ...


def _prot_bits(p: str) -> int:
    v = 0
    for c in p:
        v |= PROT_NAMES[c]
    return v


def _bits(names: tuple[str, ...], table: dict[str, int]) -> int:
    v = 0
    for n in names:
        v |= table[n]
    return v


def state_of(m: Machine, prog: Program) -> State:
    """The arena's VMAs and pagemap letters as seen by ``m``."""
    lo, hi = ARENA_BASE, ARENA_BASE + prog.arena_pages * PAGE
    vmas = m.vmas(lo, hi)
    pm = m.pagemap(lo, prog.arena_pages)
    chars = [" "] * prog.arena_pages
    out: list[list[Any]] = []
    for s, e, fl in vmas:
        s0, e0 = (max(s, lo) - lo) // PAGE, (min(e, hi) - lo) // PAGE
        out.append([s0, e0, sorted(fl)])
        for i in range(s0, e0):
            chars[i] = page_char(pm[i])
    return State(out, "".join(chars))


class _Runner:
    """Runs one process's ops on a Machine. Holds the file-slot table (inherited on fork)."""

    def __init__(self, prog: Program, m: Machine, files: dict[int, int]) -> None:
        self.prog = prog
        self.m = m
        self.files = dict(files)

    def a(self, page: int) -> int:
        return ARENA_BASE + page * PAGE

    def rel(self, addr: int) -> int | str:
        """An absolute address as an arena page (or hex when outside the arena)."""
        if ARENA_BASE <= addr < ARENA_BASE + self.prog.arena_pages * PAGE and addr % PAGE == 0:
            return (addr - ARENA_BASE) // PAGE
        return "outside"

    def run(self, ops: tuple[Op, ...]) -> Observation:
        obs = Observation()
        exited = False
        for o in ops:
            try:
                res = self.step(o, obs)
            except OSError as e:
                res = {"errno": errno_mod.errorcode.get(e.errno or 0, str(e.errno))}
            except _Refused as e:
                obs.error = f"refused: {e}"
                return obs
            except ResourceLimitError:
                raise  # vmalab's own budget, not a behaviour of either side
            except MemoryError:
                # The host ran out, not the modelled kernel: never a divergence.
                raise ResourceLimitError(
                    "memory", 0, f"host memory exhausted during {o.op} (MemoryError)"
                ) from None
            except Exception as e:  # a model crash is itself a divergence
                obs.error = f"{type(e).__name__}: {e}"
                return obs
            if isinstance(o, Exit):
                obs.results.append(res)
                exited = True
                break
            try:
                self.m.check()
            except (ResourceLimitError, MemoryError):
                raise
            except Exception as e:
                obs.error = f"after {o.op}: {type(e).__name__}: {e}"
                obs.results.append(res)
                return obs
            if self.prog.observe.each:
                res["state"] = state_of(self.m, self.prog).to_json()
            obs.results.append(res)
        if not exited:
            obs.final = self.final()
        return obs

    def final(self) -> dict[str, Any]:
        st = state_of(self.m, self.prog)
        d: dict[str, Any] = st.to_json()
        if self.prog.observe.probe:
            probe, data = [], []
            for i, c in enumerate(st.pages):
                if c == " ":
                    probe.append(" ")
                    data.append("  ")
                    continue
                sig, b = self.m.load(self.a(i))
                probe.append("o" if sig == "ok" else sig[3])
                data.append(f"{b:02x}" if sig == "ok" else "--")
            d["probe"] = "".join(probe)
            if self.prog.observe.contents:
                d["data"] = "".join(data)
        return d

    def check_range(self, page: int, n: int) -> None:
        if page < 0 or n < 0 or page + n > self.prog.arena_pages:
            raise _Refused(f"[{page}, {page + n}) is outside the arena")

    def fd(self, slot: int) -> int:
        if slot not in self.files:
            raise _Refused(f"file slot {slot} is not open")
        return self.files[slot]

    def step(self, o: Op, obs: Observation) -> dict[str, Any]:
        m = self.m
        if isinstance(o, Mmap):
            self.check_range(o.addr, o.len)
            fl = _bits(o.flags, MAP_FLAG_NAMES)
            if not fl & uapi.MAP_FIXED_NOREPLACE:
                fl |= uapi.MAP_FIXED
            fd = -1 if o.file is None else self.fd(o.file)
            r = m.mmap(self.a(o.addr), o.len * PAGE, _prot_bits(o.prot), fl, fd, o.pgoff * PAGE)
            return {"ret": self.rel(r)}
        if isinstance(o, Munmap):
            self.check_range(o.addr, o.len)
            m.munmap(self.a(o.addr), o.len * PAGE)
        elif isinstance(o, Mprotect):
            self.check_range(o.addr, o.len)
            m.mprotect(self.a(o.addr), o.len * PAGE, _prot_bits(o.prot))
        elif isinstance(o, Mremap):
            self.check_range(o.addr, o.old_len)
            fl = uapi.MREMAP_MAYMOVE if o.maymove else 0
            dest = 0
            if o.to is not None:
                self.check_range(o.to, o.new_len)
                if o.fixed:
                    fl |= uapi.MREMAP_FIXED
                dest = self.a(o.to)
            else:
                if o.maymove:
                    raise _Refused("mremap MAYMOVE without a destination")
                self.check_range(o.addr, o.new_len)
            if o.dontunmap:
                fl |= uapi.MREMAP_DONTUNMAP
            r = m.mremap(self.a(o.addr), o.old_len * PAGE, o.new_len * PAGE, fl, dest)
            return {"ret": self.rel(r)}
        elif isinstance(o, Madvise):
            self.check_range(o.addr, o.len)
            m.madvise(self.a(o.addr), o.len * PAGE, ADVICE_NAMES[o.advice])
        elif isinstance(o, Mlock):
            self.check_range(o.addr, o.len)
            m.mlock(self.a(o.addr), o.len * PAGE, o.onfault)
        elif isinstance(o, Munlock):
            self.check_range(o.addr, o.len)
            m.munlock(self.a(o.addr), o.len * PAGE)
        elif isinstance(o, Mseal):
            self.check_range(o.addr, o.len)
            m.mseal(self.a(o.addr), o.len * PAGE)
        elif isinstance(o, Mlockall):
            m.mlockall(_bits(o.flags, MCL_NAMES))
        elif isinstance(o, Munlockall):
            m.munlockall()
        elif isinstance(o, Memlock):
            m.memlock(o.pages * PAGE, o.cap_ipc_lock)
        elif isinstance(o, Mdwe):
            return {"ret": m.mdwe(_bits(o.flags, MDWE_NAMES))}
        elif isinstance(o, PkeyAlloc):
            return {"ret": m.pkey_alloc(_bits(o.rights, PKEY_RIGHT_NAMES))}
        elif isinstance(o, PkeyFree):
            m.pkey_free(o.key)
        elif isinstance(o, PkeyMprotect):
            self.check_range(o.addr, o.len)
            m.pkey_mprotect(self.a(o.addr), o.len * PAGE, _prot_bits(o.prot), o.key)
        elif isinstance(o, Mincore):
            self.check_range(o.addr, o.len)
            vec = m.mincore(self.a(o.addr), o.len * PAGE)
            return {"ret": "".join(str(b & 1) for b in vec)}
        elif isinstance(o, Memfd):
            self.files[o.file] = m.memfd_create(o.name, _bits(o.flags, MFD_NAMES))
        elif isinstance(o, Open):
            self.files[o.file] = m.open(o.name, _bits(o.flags, OPEN_FLAG_NAMES))
        elif isinstance(o, Seal):
            m.add_seals(self.fd(o.file), _bits(o.seals, SEAL_NAMES))
        elif isinstance(o, Close):
            fd = self.fd(o.file)
            del self.files[o.file]
            m.close(fd)
        elif isinstance(o, Ftruncate):
            m.ftruncate(self.fd(o.file), o.pages * PAGE)
        elif isinstance(o, Fallocate):
            m.fallocate(self.fd(o.file), _bits(o.mode, FALLOC_NAMES), o.offset * PAGE, o.len * PAGE)
        elif isinstance(o, Pwrite):
            return {
                "ret": m.pwrite(self.fd(o.file), bytes([o.byte]) * (o.len * PAGE), o.offset * PAGE)
            }
        elif isinstance(o, Pread):
            got = m.pread(self.fd(o.file), o.len * PAGE, o.offset * PAGE)
            return {
                "ret": len(got),
                "data": "".join(f"{got[i]:02x}" for i in range(0, len(got), PAGE)),
            }
        elif isinstance(o, Read | Write):
            self.check_range(o.addr, o.len)
            data = []
            for i in range(o.addr, o.addr + o.len):
                if isinstance(o, Read):
                    sig, byte = m.load(self.a(i))
                    if sig == "ok":
                        data.append(f"{byte:02x}")
                else:
                    sig = m.store(self.a(i), o.byte)
                if sig != "ok":
                    res: dict[str, Any] = {"ret": sig, "fault": i}
                    if data:
                        res["data"] = "".join(data)
                    return res
            return {"ret": "ok", "data": "".join(data)} if data else {"ret": "ok"}
        elif isinstance(o, Fork):
            child_ops, files, prog = o.child, self.files, self.prog

            def run_child(cm: Machine) -> Observation:
                return _Runner(prog, cm, files).run(child_ops)

            return {"ret": "child", "child": m.fork(run_child).to_json()}
        elif isinstance(o, Exit):
            m.exit()
        elif isinstance(o, Slab):
            obs.slab.append(m.slab())
        return {"ret": 0}


class _Refused(Exception):
    """An op the runner will not execute (outside the arena, unknown file slot)."""


def execute(prog: Program, m: Machine) -> Observation:
    """Run ``prog`` on ``m`` and return what happened (never raises for model failures)."""
    return _Runner(prog, m, {}).run(prog.ops)


def iter_ops(ops: tuple[Op, ...]) -> Iterator[Op]:
    """Every op, fork bodies included, in program order."""
    for o in ops:
        yield o
        if isinstance(o, Fork):
            yield from iter_ops(o.child)


# --------------------------------------------------------------------------------------
# The model side


class ModelMachine:
    """A ``Machine`` over a vmalab ``Process`` (the public contract API only)."""

    def __init__(self, kernel: Any, proc: Any, *, check: bool = True) -> None:
        self.k = kernel
        self.p = proc
        self.do_check = check

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        return int(self.p.mmap(addr, length, prot, flags, fd, offset))

    def munmap(self, addr: int, length: int) -> None:
        self.p.munmap(addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.p.mprotect(addr, length, prot)

    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int:
        return int(self.p.mremap(addr, old, new, flags, new_addr))

    def madvise(self, addr: int, length: int, advice: int) -> None:
        self.p.madvise(addr, length, advice)

    def mlock(self, addr: int, length: int, onfault: bool) -> None:
        if onfault:
            self.p.mlock2(addr, length, uapi.MLOCK_ONFAULT)
        else:
            self.p.mlock(addr, length)

    def add_seals(self, fd: int, seals: int) -> None:
        self.p.add_seals(fd, seals)

    def munlock(self, addr: int, length: int) -> None:
        self.p.munlock(addr, length)

    def mseal(self, addr: int, length: int) -> None:
        self.p.mseal(addr, length, 0)

    def mlockall(self, flags: int) -> None:
        self.p.mlockall(flags)

    def munlockall(self) -> None:
        self.p.munlockall()

    def memlock(self, limit: int, cap_ipc_lock: bool) -> None:
        self.p.rlimit_memlock = limit
        self.p.cap_ipc_lock = cap_ipc_lock

    def mdwe(self, flags: int) -> int:
        self.p.prctl(uapi.PR_SET_MDWE, flags)
        return int(self.p.prctl(uapi.PR_GET_MDWE))

    def mincore(self, addr: int, length: int) -> bytes:
        return bytes(self.p.mincore(addr, length))

    def pkey_alloc(self, rights: int) -> int:
        return int(self.p.pkey_alloc(0, rights))

    def pkey_free(self, key: int) -> None:
        self.p.pkey_free(key)

    def pkey_mprotect(self, addr: int, length: int, prot: int, key: int) -> None:
        self.p.pkey_mprotect(addr, length, prot, key)

    def memfd_create(self, name: str, flags: int) -> int:
        return int(self.p.memfd_create(name, flags))

    def open(self, name: str, flags: int) -> int:
        return int(self.p.open("/" + name, flags, 0o600))

    def close(self, fd: int) -> None:
        self.p.close(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self.p.ftruncate(fd, length)

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        self.p.fallocate(fd, mode, offset, length)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return int(self.p.pwrite(fd, data, offset))

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return bytes(self.p.pread(fd, length, offset))

    def load(self, addr: int) -> tuple[str, int]:
        from vmalab.errors import SegmentationFault

        try:
            return "ok", self.p.read(addr, 1)[0]
        except SegmentationFault as e:
            return e.signal, 0

    def store(self, addr: int, byte: int) -> str:
        from vmalab.errors import SegmentationFault

        try:
            self.p.write(addr, bytes([byte]))
            return "ok"
        except SegmentationFault as e:
            return str(e.signal)

    def fork(self, run_child: Callable[[Machine], Observation]) -> Observation:
        child = ModelMachine(self.k, self.p.fork(), check=self.do_check)
        obs = run_child(child)
        if obs.final is not None or obs.error is not None:
            try:
                child.p.exit()
            except ProcessLookupError:
                pass
        return obs

    def exit(self) -> None:
        self.p.exit()

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, frozenset[str]]]:
        return [
            (v.start, v.end, frozenset(v.flags))
            for v in self.p.vmas()
            if v.end > lo and v.start < hi
        ]

    def pagemap(self, addr: int, npages: int) -> list[int]:
        return [int(x) for x in self.p.pagemap(addr, npages)]

    def slab(self) -> dict[str, int]:
        s = self.k.slab()
        return {k: int(s[k].active) for k in ("anon_vma", "anon_vma_chain", "vm_area_struct")}

    def check(self) -> None:
        if self.do_check:
            self.k.check()


DEFAULT_MODEL_SECONDS = 120.0
"""Wall-time budget of one ``run_model`` unless the caller gives one."""


def run_model(
    prog: Program,
    design: str,
    *,
    check: bool | None = None,
    timeout: float | None = DEFAULT_MODEL_SECONDS,
    budget: Any = None,
) -> Observation:
    """Run ``prog`` on a fresh vmalab ``Kernel(design)``. ``check`` (default: programs of at
    most 1000 ops) runs ``Kernel.check()`` after every op; a failure ends the run with
    ``error`` set. ``budget`` (a ``vmalab.budget.Budget``; default: the default limits with
    ``timeout`` seconds of wall time) bounds the host resources: a breach, or a MemoryError,
    raises ``ResourceLimitError`` rather than being reported as a divergence."""
    from vmalab import Kernel  # the core model; imported late so parsing works without it
    from vmalab.budget import Budget

    if budget is None:
        budget = Budget.from_env(seconds=timeout)
    k = Kernel(design, budget=budget)
    if check is None:
        check = prog.count_ops() <= 1000
    return execute(prog, ModelMachine(k, k.spawn(), check=check))
