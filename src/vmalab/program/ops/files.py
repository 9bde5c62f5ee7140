"""Ops on files (slots 0-15): memfd, open, seal, close, ftruncate, fallocate, pwrite, pread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmalab.program.base import GenRule, GenState, OpBase, const, register
from vmalab.program.fields import Ctx, int_field, names_field, slot_field, str_field
from vmalab.program.names import (
    FALLOC_NAMES,
    MAX_FILE_PAGES,
    MFD_NAMES,
    OPEN_FLAG_NAMES,
    PAGE,
    SEAL_NAMES,
    bits,
)

if TYPE_CHECKING:
    from vmalab.program.observe import Observation
    from vmalab.program.run import Runner


def _file_name(ctx: Ctx, d: dict[str, Any], loc: str, default: str | None) -> str:
    name = str_field(ctx, d, "name", loc, default)
    if (
        not (1 <= len(name) <= 32)
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
        or name in (".", "..")
    ):
        raise ctx.err(f"{loc}.name", "expected 1-32 characters from [A-Za-z0-9._-]")
    return name


def _file_rule(kind: str, pos: float, make: Callable[[GenState, int], dict[str, Any]]) -> GenRule:
    """A generator entry for an op on an open slot (a random one); a read of the drawn
    range while no slot is open."""

    def gen(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        if not g.files:
            return {"op": "read", "addr": a, "len": n}
        return make(g, g.r.choice(g.files))

    return GenRule(kind, pos, const(1), gen)


def _offset_len(
    ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], min_len: int
) -> tuple[int, int, int]:
    s = slot_field(ctx, d, loc, files)
    off = int_field(ctx, d, "offset", loc, 0, MAX_FILE_PAGES)
    n = int_field(ctx, d, "len", loc, min_len, MAX_FILE_PAGES - off)
    return s, off, n


@register
@dataclass(frozen=True)
class Memfd(OpBase):
    """``memfd_create(name, flags)`` into file slot ``file``."""

    file: int
    name: str = "vmalab"
    flags: tuple[str, ...] = ()
    op: str = "memfd"
    name_tables = {"flags": MFD_NAMES}

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Memfd:
        s = slot_field(ctx, d, loc, files, new=True)
        o = cls(
            s, _file_name(ctx, d, loc, "vmalab"), names_field(ctx, d, "flags", loc, MFD_NAMES, ())
        )
        files.add(s)
        return o

    def run(self, r: Runner, obs: Observation) -> None:
        r.files[self.file] = r.m.memfd_create(self.name, bits(self.flags, MFD_NAMES))


@register
@dataclass(frozen=True)
class Open(OpBase):
    """``open(DIR/name, flags, 0600)`` into file slot ``file`` (DIR: a private tmpfs dir)."""

    file: int
    name: str
    flags: tuple[str, ...] = ("rdwr", "creat")
    op: str = "open"
    name_tables = {"flags": OPEN_FLAG_NAMES}

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Open:
        s = slot_field(ctx, d, loc, files, new=True)
        name = _file_name(ctx, d, loc, None)
        fl = names_field(ctx, d, "flags", loc, OPEN_FLAG_NAMES, ("rdwr", "creat"))
        if sum(x in fl for x in ("rdonly", "wronly", "rdwr")) != 1:
            raise ctx.err(f"{loc}.flags", "exactly one of rdonly, wronly, rdwr is required")
        files.add(s)
        return cls(s, name, fl)

    def run(self, r: Runner, obs: Observation) -> None:
        r.files[self.file] = r.m.open(self.name, bits(self.flags, OPEN_FLAG_NAMES))


@register
@dataclass(frozen=True)
class Close(OpBase):
    """``close(fd)`` of file slot ``file``; the slot may not be used again until reopened."""

    file: int
    op: str = "close"

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Close:
        s = slot_field(ctx, d, loc, files)
        files.discard(s)
        return cls(s)

    def run(self, r: Runner, obs: Observation) -> None:
        fd = r.fd(self.file)
        del r.files[self.file]
        r.m.close(fd)


@register
@dataclass(frozen=True)
class Seal(OpBase):
    """``fcntl(fd, F_ADD_SEALS, seals)``; ``seals`` are names from ``SEAL_NAMES``."""

    file: int
    seals: tuple[str, ...]
    op: str = "seal"
    name_tables = {"seals": SEAL_NAMES}

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Seal:
        return cls(
            slot_field(ctx, d, loc, files), names_field(ctx, d, "seals", loc, SEAL_NAMES, ())
        )

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.add_seals(r.fd(self.file), bits(self.seals, SEAL_NAMES))

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        seals = g.r.sample(["shrink", "grow", "write", "future_write", "seal"], g.r.randint(1, 2))
        return {"op": "seal", "file": f, "seals": seals}

    gen_rules = (_file_rule("seal", 13, generate),)


@register
@dataclass(frozen=True)
class Ftruncate(OpBase):
    """``ftruncate(fd, pages * PAGE)``."""

    file: int
    pages: int
    op: str = "ftruncate"

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Ftruncate:
        return cls(
            slot_field(ctx, d, loc, files), int_field(ctx, d, "pages", loc, 0, MAX_FILE_PAGES)
        )

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.ftruncate(r.fd(self.file), self.pages * PAGE)

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        return {"op": "ftruncate", "file": f, "pages": g.r.randrange(0, 64)}

    gen_rules = (_file_rule("ftruncate", 10, generate),)


@register
@dataclass(frozen=True)
class Fallocate(OpBase):
    """``fallocate(fd, mode, offset * PAGE, len * PAGE)``."""

    file: int
    offset: int
    len: int
    mode: tuple[str, ...] = ()
    op: str = "fallocate"
    name_tables = {"mode": FALLOC_NAMES}

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Fallocate:
        s, off, n = _offset_len(ctx, d, loc, files, 1)
        return cls(s, off, n, names_field(ctx, d, "mode", loc, FALLOC_NAMES, ()))

    def run(self, r: Runner, obs: Observation) -> None:
        mode = bits(self.mode, FALLOC_NAMES)
        r.m.fallocate(r.fd(self.file), mode, self.offset * PAGE, self.len * PAGE)

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        off = g.r.randrange(0, 48)
        mode = g.r.choice([["punch_hole", "keep_size"], [], ["keep_size"]])
        return {"op": "fallocate", "file": f, "offset": off, "len": g.r.randint(1, 8), "mode": mode}

    gen_rules = (_file_rule("fallocate", 11, generate),)


@register
@dataclass(frozen=True)
class Pwrite(OpBase):
    """``pwrite(fd, bytes([byte]) * (len * PAGE), offset * PAGE)``."""

    file: int
    offset: int
    len: int
    byte: int = 0x5A
    op: str = "pwrite"

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Pwrite:
        s, off, n = _offset_len(ctx, d, loc, files, 0)
        return cls(s, off, n, int_field(ctx, d, "byte", loc, 0, 255, 0x5A))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        data = bytes([self.byte]) * (self.len * PAGE)
        return {"ret": r.m.pwrite(r.fd(self.file), data, self.offset * PAGE)}

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        off = g.r.randrange(0, 48)
        n = g.r.randint(1, 4)
        return {"op": "pwrite", "file": f, "offset": off, "len": n, "byte": g.r.randrange(1, 256)}

    gen_rules = (_file_rule("pwrite", 12, generate),)


@register
@dataclass(frozen=True)
class Pread(OpBase):
    """``pread(fd, len * PAGE, offset * PAGE)``; reports the length and each page's first byte."""

    file: int
    offset: int
    len: int
    op: str = "pread"

    @classmethod
    def parse(cls, ctx: Ctx, d: dict[str, Any], loc: str, files: set[int], depth: int) -> Pread:
        return cls(*_offset_len(ctx, d, loc, files, 0))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        got = r.m.pread(r.fd(self.file), self.len * PAGE, self.offset * PAGE)
        return {"ret": len(got), "data": "".join(f"{got[i]:02x}" for i in range(0, len(got), PAGE))}
