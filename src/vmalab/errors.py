"""Exceptions of vmalab's public surface."""

from __future__ import annotations

import errno


class SegmentationFault(Exception):
    """A user access that the kernel answers with a signal (SIGSEGV or SIGBUS).

    ``addr`` is the first faulting byte and ``signal`` is ``"SIGSEGV"`` or ``"SIGBUS"``,
    as force_sig_fault() would report them in si_addr and si_signo.
    """

    def __init__(self, addr: int, signal: str = "SIGSEGV", reason: str = "") -> None:
        self.addr = addr
        self.signal = signal
        self.reason = reason
        super().__init__(f"{signal} at {addr:#x}" + (f" ({reason})" if reason else ""))


class InvariantError(AssertionError):
    """A violated model invariant, raised by ``Kernel.check()``."""


class UserInputError(Exception):
    """Bad user input (a file, a program, a trace line or a command-line value).

    ``location`` names where the problem is (``FILE:LINE``, ``program.ops[3].len`` …).
    The command line prints ``vmalab: LOCATION: MESSAGE`` and exits with status 2.
    """

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")


def kernel_error(code: int, what: str = "") -> OSError:
    """The OSError a failing syscall raises: ``.errno`` is the Linux errno, and the text
    starts with its name (``ENOMEM: max_map_count``)."""
    name = errno.errorcode.get(code, str(code))
    return OSError(code, f"{name}: {what}" if what else name)
