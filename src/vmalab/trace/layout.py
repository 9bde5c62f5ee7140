"""Initial address spaces for trace replay: execve from ELF headers, or a maps/smaps dump.

Two ways to give a replayed process the mappings it had before the traced syscalls:

* :func:`load_elf_binary` models fs/binfmt_elf.c:load_elf_binary() from the program
  headers of the binary (read with pyelftools) and of its PT_INTERP: the PT_LOAD segments,
  the bss, the stack (setup_arg_pages), vvar/vdso (arch_setup_additional_pages) and the brk
  base. strace does not show where the kernel put the binary, the interpreter or the stack,
  so the load addresses come from hints found in the trace (see
  :class:`ExecHints`), or from fixed no-ASLR-like defaults.
* :func:`apply_maps_dump` recreates exactly the VMAs of a ``/proc/PID/maps`` or
  ``/proc/PID/smaps`` text (it lives in :mod:`vmalab.trace.maps_dump`, re-exported here).

Approximations, written down where they are made:

* vvar, vvar_vclock and vdso are special mappings (``Process.install_special_mapping``,
  mm/vma.c:_install_special_mapping) with the VmFlags Linux 6.18 x86-64 gives them
  (``rd mr pf io de dd`` for the two vvars, ``rd ex mr mw me de`` for the vDSO), 4 + 2 + 2
  pages; the pages behind them are not modelled. ``[vsyscall]`` lies above TASK_SIZE and
  is not modelled.
* Files are created in the model's filesystem on first use, at least as large as the
  mapping needs (and as the real file, when the replay may read host files).
* Host files (ELF headers of a binary that is not in a recording) are read only when the
  replay is asked to (``host_files``), and then only regular files, opened
  O_NONBLOCK|O_NOFOLLOW after realpath(), read-only, the first :data:`HOST_READ_CAP` bytes.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from vmalab import uapi
from vmalab.mm.mm_types import PAGE_SIZE

# The maps-dump side lives in trace/maps_dump.py; its names stay importable from here.
from vmalab.trace.maps_dump import SPECIAL_FLAGS as SPECIAL_FLAGS
from vmalab.trace.maps_dump import TASK_SIZE as TASK_SIZE
from vmalab.trace.maps_dump import DumpVma as DumpVma
from vmalab.trace.maps_dump import FileOpener as FileOpener
from vmalab.trace.maps_dump import apply_maps_dump as apply_maps_dump
from vmalab.trace.maps_dump import map_special as map_special
from vmalab.trace.maps_dump import parse_maps as parse_maps

STACK_TOP = 0x7FFFFFFFF000
"""Top of the replayed stack when the trace gives no hint (x86-64 TASK_SIZE, no ASLR)."""
STACK_SIZE = 0x21000
"""Initial [stack] VMA size seen on Linux 6.18 (132 KiB: 128 KiB + the argument page)."""
MMAP_BASE = 0x7FFFF7FFF000
"""mm->mmap_base used when no hint places the interpreter (no-ASLR value)."""
ELF_ET_DYN_BASE = 0x555555554000
"""Load address of a PIE binary when no hint places it (x86-64, no ASLR)."""
VVAR_PAGES, VCLOCK_PAGES, VDSO_PAGES = 4, 2, 2
HOST_READ_CAP = 64 << 20
"""At most this many bytes of a host file are read (ELF program headers, script lines)."""


def open_host_file(path: str) -> Any:
    """Open a host file for reading as the replay may: a regular file, no FIFO or device.

    /proc, /sys and /dev paths are refused; realpath() first (binaries are reached through
    symlinks), then O_NONBLOCK|O_NOFOLLOW so that a FIFO or a swapped-in symlink cannot
    block or redirect the read. Raises OSError.
    """
    import stat as _stat

    if path.startswith(("/proc/", "/sys/", "/dev/")):
        # /proc/self/exe and friends would name this process, not the traced one
        raise OSError(errno.EPERM, f"{path}: a /proc, /sys or /dev path is not read")
    real = os.path.realpath(path)
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{real} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def page_down(x: int) -> int:
    """Round down to a page boundary."""
    return x & ~(PAGE_SIZE - 1)


def page_up(x: int) -> int:
    """Round up to a page boundary."""
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass
class Segment:
    """One PT_LOAD program header (addresses relative to the load bias)."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    prot: int


@dataclass
class ElfImage:
    """What load_elf_binary() needs from an ELF file: type, PT_LOADs, PT_INTERP, relro."""

    path: str
    is_dyn: bool
    segments: list[Segment]
    interp: str | None
    relro: tuple[int, int] | None  # (page_down(vaddr), length as glibc mprotects it)
    exec_stack: bool
    size: int

    @property
    def span(self) -> int:
        """total_mapping_size(): from the first segment's page to the last one's end."""
        lo = page_down(self.segments[0].vaddr)
        hi = max(page_up(s.vaddr + s.memsz) for s in self.segments)
        return hi - lo


def read_elf(path: str) -> ElfImage | None:
    """Read the program headers of an ELF file with pyelftools; None if it is not one."""
    try:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
    except ImportError:  # pragma: no cover - pyelftools is a dependency
        return None
    try:
        with open_host_file(path) as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            segs: list[Segment] = []
            interp = None
            relro = None
            exec_stack = False
            for ph in elf.iter_segments():
                t = ph["p_type"]
                if t == "PT_LOAD":
                    fl = ph["p_flags"]
                    prot = (
                        (uapi.PROT_READ if fl & 4 else 0)
                        | (uapi.PROT_WRITE if fl & 2 else 0)
                        | (uapi.PROT_EXEC if fl & 1 else 0)
                    )
                    segs.append(
                        Segment(ph["p_vaddr"], ph["p_memsz"], ph["p_filesz"], ph["p_offset"], prot)
                    )
                elif t == "PT_INTERP":
                    interp = ph.get_interp_name()  # type: ignore[attr-defined]
                elif t == "PT_GNU_RELRO":
                    start = page_down(ph["p_vaddr"])
                    end = page_down(ph["p_vaddr"] + ph["p_memsz"])
                    if end > start:
                        relro = (start, end - start)
                elif t == "PT_GNU_STACK":
                    exec_stack = bool(ph["p_flags"] & 1)
            if not segs:
                return None
            return ElfImage(
                path,
                elf["e_type"] == "ET_DYN",
                segs,
                interp,
                relro,
                exec_stack,
                os.fstat(f.fileno()).st_size,
            )
    except (OSError, ELFError, ValueError, KeyError, AttributeError):
        return None


@dataclass
class ExecHints:
    """Facts about one execve found by looking ahead in the trace.

    ``brk`` is the first ``brk(NULL)`` result (mm->start_brk); ``mprotects`` are early
    ``mprotect(addr, len, PROT_READ)`` calls at addresses no traced mmap returned (relro
    candidates of the binary and the interpreter); ``mapped`` are the ranges traced mmaps
    returned, which the binary and interpreter cannot overlap; ``cwd`` is the first
    ``AT_FDCWD`` that -y printed with its path (``-100</dir>``): the process's cwd.
    """

    brk: int | None = None
    cwd: str | None = None
    mprotects: list[tuple[int, int]] = field(default_factory=list)
    mapped: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ExecLayout:
    """How a replayed execve built its address space (reported by the replay)."""

    pid: int | None
    lineno: int
    path: str
    method: str  # "elf", "snapshot", "maps-dump", "none"
    exe_base: int | None = None
    interp_base: int | None = None
    placed_by: str = ""
    notes: list[str] = field(default_factory=list)


def _find_base(img: ElfImage, hints: ExecHints, taken: set[int]) -> int | None:
    """Infer a load bias from an early relro mprotect whose length matches ``img``."""
    if img.relro is None:
        return None
    rstart, rlen = img.relro
    for i, (addr, length) in enumerate(hints.mprotects):
        if i in taken or length != rlen:
            continue
        base = addr - rstart
        if base < 0 or base % PAGE_SIZE:
            continue
        lo, hi = (
            base + page_down(img.segments[0].vaddr),
            base + page_down(img.segments[0].vaddr) + img.span,
        )
        if any(a < hi and lo < b for a, b in hints.mapped):
            continue
        taken.add(i)
        return base
    return None


def resolve_exec_path(path: str, depth: int = 0) -> tuple[str, ElfImage | None, list[str]]:
    """Follow ``#!`` interpreters (fs/binfmt_script.c) to the ELF the kernel will load."""
    notes: list[str] = []
    real = os.path.realpath(path)
    img = read_elf(real)
    if img is not None or depth > 3:
        return real, img, notes
    try:
        with open_host_file(real) as f:
            head = f.read(256)
    except OSError:
        return real, None, [f"{path} is not on this machine"]
    if head.startswith(b"#!"):
        interp = head[2:].split(b"\n", 1)[0].strip().split()
        if interp:
            notes.append(f"{path} is a script for {interp[0].decode(errors='replace')}")
            r, i, n = resolve_exec_path(interp[0].decode(errors="replace"), depth + 1)
            return r, i, notes + n
    return real, None, notes + [f"{path} is neither ELF nor a script"]


def load_elf_binary(
    proc: Any, pid: int | None, lineno: int, path: str, hints: ExecHints, open_file: FileOpener
) -> ExecLayout:
    """Build the initial mappings of ``execve(path)``. Models fs/binfmt_elf.c:load_elf_binary.

    Order as in the kernel: setup_arg_pages() (the stack, written: argv/envp are copied),
    elf_load() of each PT_LOAD of the binary (file mappings, the bss tail zeroed by
    padzero(), which writes, and the anonymous rest of the bss), load_elf_interp() for
    PT_INTERP (placed top-down under mmap_base), then arch_setup_additional_pages() (vvar,
    vvar_vclock and vdso just below the interpreter). Returns how it was placed; an
    unavailable binary gives an empty address space and method ``"none"``.
    """
    real, img, notes = resolve_exec_path(path)
    lay = ExecLayout(pid, lineno, real, "none", notes=notes)
    if img is None:
        lay.notes.append("binary not at hand: empty address space")
        return lay
    interp_img = None
    if img.interp:
        interp_img = read_elf(os.path.realpath(img.interp))
        if interp_img is None:
            lay.notes.append(f"interpreter {img.interp} not at hand")
    taken: set[int] = set()
    placed = []
    # binary
    if img.is_dyn:
        base = _find_base(img, hints, taken)
        if base is None:
            base = ELF_ET_DYN_BASE
            placed.append("binary at the no-ASLR ELF_ET_DYN_BASE")
        else:
            placed.append("binary from its relro mprotect")
    else:
        base = 0
        placed.append("binary at its fixed ET_EXEC addresses")
    ibase = None
    if interp_img is not None:
        ibase = _find_base(interp_img, hints, taken)
        if ibase is None:
            ibase = page_down(MMAP_BASE - interp_img.span) - page_down(interp_img.segments[0].vaddr)
            placed.append("interpreter under the no-ASLR mmap_base")
        else:
            placed.append("interpreter from its relro mprotect")
    lay.method = "elf"
    lay.exe_base, lay.interp_base = base, ibase
    lay.placed_by = "; ".join(placed)
    # setup_arg_pages(): the stack
    stack_prot = uapi.PROT_READ | uapi.PROT_WRITE | (uapi.PROT_EXEC if img.exec_stack else 0)
    stack_lo = STACK_TOP - STACK_SIZE
    proc.mmap(
        stack_lo,
        STACK_SIZE,
        stack_prot,
        uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS | uapi.MAP_FIXED | uapi.MAP_GROWSDOWN,
    )
    proc.write(STACK_TOP - PAGE_SIZE, b"\0" * 64)  # copy_strings(): argv and envp
    proc.set_start_stack(STACK_TOP - PAGE_SIZE)  # create_elf_tables(): mm->start_stack
    _elf_load(proc, img, base, open_file)
    if interp_img is not None and ibase is not None:
        _elf_load(proc, interp_img, ibase, open_file)
        top = ibase + page_down(interp_img.segments[0].vaddr)
    else:
        top = MMAP_BASE
    # arch_setup_additional_pages() -> map_vdso(): vvar, vvar_vclock, vdso (approximated)
    vdso = top - VDSO_PAGES * PAGE_SIZE
    vclock = vdso - VCLOCK_PAGES * PAGE_SIZE
    vvar = vclock - VVAR_PAGES * PAGE_SIZE
    map_special(proc, vvar, VVAR_PAGES * PAGE_SIZE, "[vvar]")
    map_special(proc, vclock, VCLOCK_PAGES * PAGE_SIZE, "[vvar_vclock]")
    map_special(proc, vdso, VDSO_PAGES * PAGE_SIZE, "[vdso]")
    return lay


def _elf_load(proc: Any, img: ElfImage, bias: int, open_file: FileOpener) -> None:
    """Map the PT_LOAD segments of ``img`` at ``bias``. Models binfmt_elf.c:elf_load()."""
    fd = open_file(img.path, img.size, uapi.O_RDONLY)
    for s in img.segments:
        start = bias + page_down(s.vaddr)
        file_end = bias + s.vaddr + s.filesz
        mem_end = bias + s.vaddr + s.memsz
        flags = uapi.MAP_PRIVATE | uapi.MAP_FIXED
        if s.filesz:
            ln = page_up(file_end) - start
            proc.mmap(start, ln, s.prot, flags, fd, page_down(s.offset))
        if s.memsz > s.filesz:
            if s.filesz and file_end % PAGE_SIZE and s.prot & uapi.PROT_WRITE:
                proc.write(file_end, b"\0" * (PAGE_SIZE - file_end % PAGE_SIZE))  # padzero()
            anon_lo = page_up(file_end) if s.filesz else start
            if page_up(mem_end) > anon_lo:
                proc.mmap(anon_lo, page_up(mem_end) - anon_lo, s.prot, flags | uapi.MAP_ANONYMOUS)
