"""Ops on files (slots 0-15): memfd, open, seal, close, ftruncate, fallocate, pwrite, pread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any

from vmalab.program.base import GenRule, GenState, OpBase, const
from vmalab.program.fields import Ctx, Int, Names, OpInput, Slot, Spec, str_field
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


class FileName(Spec):
    """``name``: a file name in the runner's private directory."""

    def read(self, x: OpInput, key: str, default: Any) -> Any:
        name = str_field(x.ctx, x.d, key, x.loc, default)
        if (
            not (1 <= len(name) <= 32)
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
            or name in (".", "..")
        ):
            raise x.ctx.err(f"{x.loc}.{key}", "expected 1-32 characters from [A-Za-z0-9._-]")
        return name


def _file_rule(kind: str, pos: float, make: Callable[[GenState, int], dict[str, Any]]) -> GenRule:
    """A generator entry for an op on an open slot (a random one); a read of the drawn
    range while no slot is open."""

    def gen(g: GenState, depth: int, a: int, n: int) -> dict[str, Any]:
        if not g.files:
            return {"op": "read", "addr": a, "len": n}
        return make(g, g.r.choice(g.files))

    return GenRule(kind, pos, const(1), gen)


def _room(x: OpInput) -> int:
    """The pages of the largest file after ``offset`` (an ``Int`` bound)."""
    return MAX_FILE_PAGES - int(x.got["offset"])


FILE_PAGES = Int(0, MAX_FILE_PAGES)
"""A page offset into a file, or a file size in pages."""


class Memfd(OpBase, op="memfd"):
    """``memfd_create(name, flags)`` into file slot ``file``."""

    file: int = field(metadata=Slot(new=True))
    name: str = field(default="vmalab", metadata=FileName())
    flags: tuple[str, ...] = field(default=(), metadata=Names(MFD_NAMES))

    def run(self, r: Runner, obs: Observation) -> None:
        r.files[self.file] = r.m.memfd_create(self.name, bits(self.flags, MFD_NAMES))


class Open(OpBase, op="open"):
    """``open(DIR/name, flags, 0600)`` into file slot ``file`` (DIR: a private tmpfs dir)."""

    file: int = field(metadata=Slot(new=True))
    name: str = field(metadata=FileName())
    flags: tuple[str, ...] = field(default=("rdwr", "creat"), metadata=Names(OPEN_FLAG_NAMES))

    def check(self, ctx: Ctx, loc: str) -> None:
        if sum(x in self.flags for x in ("rdonly", "wronly", "rdwr")) != 1:
            raise ctx.err(f"{loc}.flags", "exactly one of rdonly, wronly, rdwr is required")

    def run(self, r: Runner, obs: Observation) -> None:
        r.files[self.file] = r.m.open(self.name, bits(self.flags, OPEN_FLAG_NAMES))


class Close(OpBase, op="close"):
    """``close(fd)`` of file slot ``file``; the slot may not be used again until reopened."""

    file: int = field(metadata=Slot(closes=True))

    def run(self, r: Runner, obs: Observation) -> None:
        fd = r.fd(self.file)
        del r.files[self.file]
        r.m.close(fd)


class Seal(OpBase, op="seal"):
    """``fcntl(fd, F_ADD_SEALS, seals)``; ``seals`` are names from ``SEAL_NAMES``."""

    file: int = field(metadata=Slot())
    seals: tuple[str, ...] = field(metadata=Names(SEAL_NAMES))

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.add_seals(r.fd(self.file), bits(self.seals, SEAL_NAMES))

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        seals = g.r.sample(["shrink", "grow", "write", "future_write", "seal"], g.r.randint(1, 2))
        return {"op": "seal", "file": f, "seals": seals}

    gen_rules = (_file_rule("seal", 13, generate),)


class Ftruncate(OpBase, op="ftruncate"):
    """``ftruncate(fd, pages * PAGE)``."""

    file: int = field(metadata=Slot())
    pages: int = field(metadata=FILE_PAGES)

    def run(self, r: Runner, obs: Observation) -> None:
        r.m.ftruncate(r.fd(self.file), self.pages * PAGE)

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        return {"op": "ftruncate", "file": f, "pages": g.r.randrange(0, 64)}

    gen_rules = (_file_rule("ftruncate", 10, generate),)


class Fallocate(OpBase, op="fallocate"):
    """``fallocate(fd, mode, offset * PAGE, len * PAGE)``."""

    file: int = field(metadata=Slot())
    offset: int = field(metadata=FILE_PAGES)
    len: int = field(metadata=Int(1, _room))
    mode: tuple[str, ...] = field(default=(), metadata=Names(FALLOC_NAMES))

    def run(self, r: Runner, obs: Observation) -> None:
        mode = bits(self.mode, FALLOC_NAMES)
        r.m.fallocate(r.fd(self.file), mode, self.offset * PAGE, self.len * PAGE)

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        off = g.r.randrange(0, 48)
        mode = g.r.choice([["punch_hole", "keep_size"], [], ["keep_size"]])
        return {"op": "fallocate", "file": f, "offset": off, "len": g.r.randint(1, 8), "mode": mode}

    gen_rules = (_file_rule("fallocate", 11, generate),)


class Pwrite(OpBase, op="pwrite"):
    """``pwrite(fd, bytes([byte]) * (len * PAGE), offset * PAGE)``."""

    file: int = field(metadata=Slot())
    offset: int = field(metadata=FILE_PAGES)
    len: int = field(metadata=Int(0, _room))
    byte: int = field(default=0x5A, metadata=Int(0, 255))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        data = bytes([self.byte]) * (self.len * PAGE)
        return {"ret": r.m.pwrite(r.fd(self.file), data, self.offset * PAGE)}

    @staticmethod
    def generate(g: GenState, f: int) -> dict[str, Any]:
        off = g.r.randrange(0, 48)
        n = g.r.randint(1, 4)
        return {"op": "pwrite", "file": f, "offset": off, "len": n, "byte": g.r.randrange(1, 256)}

    gen_rules = (_file_rule("pwrite", 12, generate),)


class Pread(OpBase, op="pread"):
    """``pread(fd, len * PAGE, offset * PAGE)``; reports the length and each page's first byte."""

    file: int = field(metadata=Slot())
    offset: int = field(metadata=FILE_PAGES)
    len: int = field(metadata=Int(0, _room))

    def run(self, r: Runner, obs: Observation) -> dict[str, Any]:
        got = r.m.pread(r.fd(self.file), self.len * PAGE, self.offset * PAGE)
        return {"ret": len(got), "data": "".join(f"{got[i]:02x}" for i in range(0, len(got), PAGE))}
