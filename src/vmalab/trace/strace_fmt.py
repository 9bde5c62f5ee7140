"""strace's value printers: how ``strace -f -X raw -y`` prints an argument or a result.

Flags and prot in hex (``-X raw``), pointers as ``NULL`` or ``0x...``, fds with their
``-y`` path (``3</usr/lib/libc.so.6>``), strings quoted with strace's escapes and its
32-byte ``-s`` limit, and a failed call's ``-1 ENOMEM (Cannot allocate memory)``.
:mod:`vmalab.trace.decode` prints every recorded call with these.
"""

from __future__ import annotations

import errno as _errno
import os

from vmalab.trace import ptrace as pt

STRLEN = 32  # strace's default -s
AT_FDCWD = -100

_RESTART = {
    512: ("ERESTARTSYS", "To be restarted if SA_RESTART is set"),
    513: ("ERESTARTNOINTR", "To be restarted"),
    514: ("ERESTARTNOHAND", "To be restarted if no handler"),
    516: ("ERESTART_RESTARTBLOCK", "Interrupted by signal"),
}


def sint(v: int, bits: int = 64) -> int:
    """Reinterpret an unsigned register value as a signed ``bits``-bit integer."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def hx(v: int) -> str:
    """Flags and prot the way -X raw prints them: ``0`` or ``0x22``."""
    return "0" if v == 0 else hex(v)


def ptr(v: int) -> str:
    """A pointer: ``NULL`` or ``0x7f...``."""
    return "NULL" if v == 0 else hex(v)


def octal(v: int) -> str:
    """A file mode the way strace prints it: ``0644``."""
    return "0" + format(v, "o") if v else "000"


def quote(data: bytes, limit: int | None = STRLEN, *, more: bool = False) -> str:
    """strace's quoted string: C escapes, ``\\ooo`` octal for other bytes, ``...`` if cut."""
    cut = limit is not None and len(data) > limit
    if cut:
        data = data[:limit]
    out = ['"']
    esc = {
        0x22: '\\"',
        0x5C: "\\\\",
        0x0C: "\\f",
        0x0A: "\\n",
        0x0D: "\\r",
        0x09: "\\t",
        0x0B: "\\v",
    }
    n = len(data)
    for i, c in enumerate(data):
        if c in esc:
            out.append(esc[c])
        elif 0x20 <= c <= 0x7E:
            out.append(chr(c))
        elif i + 1 < n and 0x30 <= data[i + 1] <= 0x37:
            out.append("\\" + format(c, "03o"))
        else:
            out.append("\\" + format(c, "o"))
    out.append('"')
    if cut or more:
        out.append("...")
    return "".join(out)


def _path_escape(p: str) -> str:
    """Escape a -y path like strace does (non-printables, and ``<>`` inside the brackets)."""
    if all(0x20 <= ord(c) <= 0x7E and c not in "<>\\" for c in p):
        return p
    b = os.fsencode(p)
    return "".join(
        chr(c) if 0x20 <= c <= 0x7E and chr(c) not in "<>\\" else f"\\x{c:02x}" for c in b
    )


def fd_path(tid: int, fd: int) -> str | None:
    """The -y path of ``fd`` in ``tid`` (readlink /proc/TID/fd/N, or its cwd for AT_FDCWD)."""
    try:
        if fd == AT_FDCWD:
            return os.readlink(f"/proc/{tid}/cwd")
        if fd < 0:
            return None
        return os.readlink(f"/proc/{tid}/fd/{fd}")
    except OSError:
        return None


def fd_text(fd: int, path: str | None) -> str:
    """``3</path>``, ``3</tmp/x>(deleted)`` (strace 6.1's form) or a bare ``3``."""
    if path is None:
        return str(fd)
    if path.endswith(" (deleted)"):
        return f"{fd}<{_path_escape(path[:-10])}>(deleted)"
    return f"{fd}<{_path_escape(path)}>"


def fd_arg(tid: int, v: int) -> str:
    """An fd argument with its -y path."""
    fd = sint(v, 32)
    return fd_text(fd, fd_path(tid, fd))


def path_arg(tid: int, addr: int) -> str:
    """A pathname argument: the quoted string, in full (strace prints paths uncut)."""
    s = pt.read_cstr(tid, addr)
    return ptr(addr) if s is None else quote(s, None)


def str_arg(tid: int, addr: int, limit: int = STRLEN) -> str:
    """A NUL-terminated string argument cut at ``limit`` bytes (``"..."...``)."""
    s = pt.read_cstr(tid, addr, limit + 1)
    return ptr(addr) if s is None else quote(s, limit)


def errtext(rval: int) -> str | None:
    """``-1 ENOMEM (Cannot allocate memory)`` for a failed call; None for a success."""
    if -4096 < rval < 0:
        e = -rval
        if e in _RESTART:
            name, text = _RESTART[e]
            return f"? {name} ({text})"
        name = _errno.errorcode.get(e, f"E{e}")
        return f"-1 {name} ({os.strerror(e)})"
    return None
