"""Recreating an address space from a ``/proc/PID/maps`` or ``smaps`` dump, and the special
mappings (vvar, vvar_vclock, vdso) that both an exec and a dump make.

Split out of :mod:`vmalab.trace.layout` (which re-exports every name here): the exec side
there models fs/binfmt_elf.c:load_elf_binary, this side reads what fs/proc/task_mmu.c
printed and replays it; :func:`map_special` is arch/x86/entry/vdso/vma.c:map_vdso, used by
both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vmalab import uapi
from vmalab.mm.flags import MNEMONIC_TO_FLAG
from vmalab.mm.mm_types import PAGE_SIZE
from vmalab.trace.mapsdiff import MAPS_LINE, SMAPS_FIELD

# Special mappings by name, with the vm_flags Linux 6.18 x86-64 gives them
# (arch/x86/entry/vdso/vma.c: vdso_mapping, vvar_mapping; measured in /proc/self/smaps).
SPECIAL_FLAGS = {
    "[vvar]": MNEMONIC_TO_FLAG["rd"]
    | MNEMONIC_TO_FLAG["mr"]
    | MNEMONIC_TO_FLAG["pf"]
    | MNEMONIC_TO_FLAG["io"]
    | MNEMONIC_TO_FLAG["dd"],
    "[vvar_vclock]": MNEMONIC_TO_FLAG["rd"]
    | MNEMONIC_TO_FLAG["mr"]
    | MNEMONIC_TO_FLAG["pf"]
    | MNEMONIC_TO_FLAG["io"]
    | MNEMONIC_TO_FLAG["dd"],
    "[vdso]": MNEMONIC_TO_FLAG["rd"]
    | MNEMONIC_TO_FLAG["ex"]
    | MNEMONIC_TO_FLAG["mr"]
    | MNEMONIC_TO_FLAG["mw"]
    | MNEMONIC_TO_FLAG["me"],
    "[uprobes]": MNEMONIC_TO_FLAG["ex"] | MNEMONIC_TO_FLAG["me"],
}


FileOpener = Callable[[str, int, int], int]
"""``(path, size_needed, access_mode) -> model fd`` (the replay's model file cache)."""


def map_special(proc: Any, addr: int, length: int, name: str, vm_flags: int | None = None) -> None:
    """A special mapping (vvar, vvar_vclock, vdso) with the kernel's flags for ``name``.

    Models arch/x86/entry/vdso/vma.c:map_vdso → _install_special_mapping; ``vm_flags``
    (from a snapshot's VmFlags) overrides the 6.18 defaults of :data:`SPECIAL_FLAGS`.
    """
    flags = SPECIAL_FLAGS.get(name, MNEMONIC_TO_FLAG["rd"]) if vm_flags is None else vm_flags
    proc.install_special_mapping(addr, length, flags, name)


@dataclass
class DumpVma:
    """One VMA of a maps/smaps dump."""

    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str
    vmflags: frozenset[str] | None = None
    anonymous_kb: int | None = None

    @property
    def prot(self) -> int:
        """The PROT_* bits of the perms column."""
        return (
            (uapi.PROT_READ if self.perms[0] == "r" else 0)
            | (uapi.PROT_WRITE if self.perms[1] == "w" else 0)
            | (uapi.PROT_EXEC if self.perms[2] == "x" else 0)
        )

    @property
    def shared(self) -> bool:
        """Whether the mapping is MAP_SHARED (``s`` in the perms column)."""
        return self.perms[3] == "s"


def parse_maps(text: str | Iterable[str], source: str = "dump") -> list[DumpVma]:
    """Read a ``/proc/PID/maps`` or ``/proc/PID/smaps`` text.

    Raises :class:`vmalab.errors.UserInputError` at ``SOURCE:LINE`` for a line that is
    neither a VMA header nor an smaps field.
    """
    from vmalab.errors import UserInputError

    lines = text.splitlines() if isinstance(text, str) else text
    out: list[DumpVma] = []
    for no, ln in enumerate(lines, 1):
        ln = ln.rstrip("\n")
        if not ln.strip():
            continue
        m = MAPS_LINE.match(ln)
        if m:
            path = m.group("name").strip()
            out.append(
                DumpVma(
                    int(m.group("start"), 16),
                    int(m.group("end"), 16),
                    m.group("perms"),
                    int(m.group("off"), 16),
                    int(m.group("ino")),
                    path,
                )
            )
            continue
        if SMAPS_FIELD.match(ln) and out:
            key, _, val = ln.partition(":")
            if key == "VmFlags":
                out[-1].vmflags = frozenset(val.split())
            elif key == "Anonymous":
                try:
                    out[-1].anonymous_kb = int(val.split()[0])
                except (ValueError, IndexError):
                    raise UserInputError(f"{source}:{no}", "bad Anonymous field") from None
            continue
        raise UserInputError(f"{source}:{no}", f"not a maps or smaps line: {ln[:60]!r}")
    return out


_SPECIAL_NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[uprobes]")
TASK_SIZE = 0x7FFFFFFFF000

# VmFlags that an madvise() call reproduces
_MADV_FLAGS = {
    "dc": uapi.MADV_DONTFORK,
    "wf": uapi.MADV_WIPEONFORK,
    "hg": uapi.MADV_HUGEPAGE,
    "nh": uapi.MADV_NOHUGEPAGE,
    "mg": uapi.MADV_MERGEABLE,
    "dd": uapi.MADV_DONTDUMP,
    "sr": uapi.MADV_SEQUENTIAL,
    "rr": uapi.MADV_RANDOM,
}


def apply_maps_dump(
    proc: Any, vmas: list[DumpVma], open_file: FileOpener, touch: bool = True
) -> list[str]:
    """Give ``proc`` exactly the VMAs of a dump; return notes on what could not be exact.

    Every VMA is mapped MAP_FIXED at its address: file VMAs from the model file of that path
    at their offset, ``[heap]`` and nameless ones anonymous, ``[stack]`` MAP_GROWSDOWN,
    ``[vvar]``/``[vdso]`` as read-only anonymous stand-ins. Two adjacent private VMAs that
    the model would merge were separate in the kernel, most likely because both had been
    written (different anon_vmas): both get written (a read-only or PROT_NONE one is made
    writable for the store and protected again) and the second is moved into place with
    mremap, which keeps them apart. Shared pairs cannot be kept apart this way.
    With smaps the dump says more and is followed instead: a VMA whose ``Anonymous`` is
    non-zero is written once (and only those), one whose VmFlags have ``ac`` but that is not
    writable is mapped writable and then mprotect()ed (VM_ACCOUNT comes from a writable
    private mmap and survives the mprotect), and the VmFlags dc, wf, hg, nh, mg, dd, sr, rr
    and lo are reproduced with madvise or mlock; ``gu`` cannot be (markers are not in the
    dump). With ``touch`` (the replay's default, see :mod:`vmalab.trace.replay`) every
    private writable VMA of a plain maps dump is written once, as the program most likely
    had.
    """
    notes: list[str] = []
    prev: DumpVma | None = None
    for v in vmas:
        if v.start >= TASK_SIZE:
            notes.append(f"{v.path or hex(v.start)} above TASK_SIZE not modelled")
            continue
        length = v.end - v.start
        flags = uapi.MAP_FIXED | (uapi.MAP_SHARED if v.shared else uapi.MAP_PRIVATE)
        is_file = bool(v.path) and not v.path.startswith("[") and v.inode != 0
        if v.path in _SPECIAL_NAMES:
            vmf = None
            if v.vmflags is not None:  # install adds de (and sd) itself
                vmf = 0
                for m in v.vmflags - {"de", "sd"}:
                    vmf |= MNEMONIC_TO_FLAG.get(m, 0)
            map_special(proc, v.start, length, v.path, vmf)
            prev = v
            continue
        smaps = v.vmflags is not None
        # was the VMA written (it has an anon_vma)?
        if smaps:
            written = bool(v.anonymous_kb) and not v.shared
        else:
            written = touch and not v.shared and bool(v.prot & uapi.PROT_WRITE)
        map_prot = v.prot
        if smaps and "ac" in (v.vmflags or ()) and not v.shared:
            map_prot |= uapi.PROT_WRITE  # VM_ACCOUNT comes from a writable private mmap
        if written:
            map_prot |= uapi.PROT_WRITE
        must_split = prev is not None and prev.end == v.start and _would_merge(prev, v)
        if must_split and v.shared:
            notes.append(
                f"{v.start:#x}: adjacent to a compatible shared VMA; the model merges them"
            )
            must_split = False
        target = v.start
        if must_split and prev is not None:
            # both need an anon_vma of their own; this one is written away from its
            # neighbours, given its protection and moved into place (no merge)
            target = _scratch(proc, length)
            if not smaps or not prev.anonymous_kb:
                _give_anon_vma(proc, prev)
                if smaps:
                    notes.append(
                        f"{prev.start:#x}: written to keep it apart from "
                        f"{v.start:#x}; its VmFlags may gain ac"
                    )
            written = True
            map_prot |= uapi.PROT_WRITE
        if is_file:
            fd = open_file(
                _dump_path(v.path),
                v.offset + length,
                uapi.O_RDWR
                if v.shared and ("w" in v.perms or "mw" in (v.vmflags or ()))
                else uapi.O_RDONLY,
            )
            proc.mmap(target, length, map_prot, flags, fd, v.offset)
        else:
            f = flags | uapi.MAP_ANONYMOUS
            if v.path == "[stack]" or "gd" in (v.vmflags or ()):
                f |= uapi.MAP_GROWSDOWN
            if "nr" in (v.vmflags or ()):
                f |= uapi.MAP_NORESERVE
            proc.mmap(target, length, map_prot, f)
            if v.path == "[stack]":
                proc.set_start_stack(v.end - PAGE_SIZE)  # somewhere in the VMA; see the caller
            elif v.path == "[heap]":
                proc.set_brk_base(v.start, v.end)
        if written:
            proc.write(target, b"\0")
        if map_prot != v.prot:
            proc.mprotect(target, length, v.prot)
        if target != v.start:
            proc.mremap(target, length, length, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, v.start)
        if v.vmflags:
            for fl, adv in _MADV_FLAGS.items():
                if fl in v.vmflags:
                    try:
                        proc.madvise(v.start, length, adv)
                    except OSError as e:
                        notes.append(f"{v.start:#x}: VmFlags {fl}: {e}")
            if "lo" in v.vmflags:
                proc.mlock(v.start, length)
            if "gu" in v.vmflags:
                notes.append(f"{v.start:#x}: VmFlags gu (guard markers) not reproducible")
        prev = v
    return notes


def _give_anon_vma(proc: Any, v: DumpVma) -> None:
    """Write one byte of the (private) VMA ``v``, making it writable for that if needed."""
    if v.prot & uapi.PROT_WRITE:
        proc.write(v.start, b"\0")
        return
    length = v.end - v.start
    proc.mprotect(v.start, length, v.prot | uapi.PROT_WRITE)
    proc.write(v.start, b"\0")
    proc.mprotect(v.start, length, v.prot)


def _dump_path(path: str) -> str:
    """The model file for a dump path (``/memfd:x (deleted)`` and such keep their name)."""
    return path


def _would_merge(a: DumpVma, b: DumpVma) -> bool:
    """Whether the model would merge ``b`` into the adjacent ``a`` if both were mapped.

    With smaps, VMAs whose VmFlags differ (other than the merge-ignored ``gu`` and ``sd``)
    stay apart by themselves once their flags are reproduced.
    """
    if a.perms != b.perms:
        return False
    if a.vmflags is not None and b.vmflags is not None:
        ignore = {"gu", "sd"}
        if a.vmflags - ignore != b.vmflags - ignore:
            return False
    a_anon = not a.path or a.inode == 0
    b_anon = not b.path or b.inode == 0
    if a_anon and b_anon:
        return a.path in ("", "[heap]") and b.path in ("", "[heap]")
    if a_anon != b_anon or a.path != b.path:
        return False
    return a.offset + (a.end - a.start) == b.offset


def _scratch(proc: Any, length: int) -> int:
    """A free range of ``length`` bytes with a free page on each side (nothing to merge with)."""
    addr: int = proc.mmap(
        0, length + 2 * PAGE_SIZE, uapi.PROT_NONE, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
    )
    proc.munmap(addr, length + 2 * PAGE_SIZE)
    return addr + PAGE_SIZE
