"""Exceptions of vmalab's public surface: one family, one meaning each.

=======================  ==========================================================
exception                raised when
=======================  ==========================================================
``KernelError``          a modelled syscall fails: an ``OSError`` whose ``.errno`` is
                         the Linux errno (``kernel_error()`` builds it; every syscall
                         failure is one, so ``except OSError`` and ``e.errno`` work).
                         ``ProcessLookupError`` (ESRCH) for a call on an exited process.
``SegmentationFault``    a user access the kernel answers with SIGSEGV or SIGBUS.
``InvariantError``       ``Kernel.check()`` found the model inconsistent (explicit
                         raises, never ``assert``: it holds under ``python -O``).
``UserInputError``       a bad file, program, trace line or command-line value;
                         ``location`` names where (``FILE:LINE`` for a malformed
                         file: it is the format error too). Exit status 2.
``ResourceLimitError``   one of vmalab's own budgets (``vmalab.budget``) ran out;
                         deliberately not an OSError. Exit status 3.
=======================  ==========================================================

Inside mm/, an allocation that fails (an injected failslab failure or a budget refusal)
raises ``vmalab.mm.slab.AllocFailure``, which each path unwinds and the syscall boundary
(``vmalab.process``) turns into ENOMEM or the pending ``ResourceLimitError``; a fault
raises ``vmalab.mm.fault.FaultError`` until the access turns it into a signal.
"""

from __future__ import annotations

import errno


class SegmentationFault(Exception):
    """A user access that the kernel answers with a signal (SIGSEGV or SIGBUS).

    ``addr`` is the first faulting byte and ``signal`` is ``"SIGSEGV"`` or ``"SIGBUS"``,
    as force_sig_fault() would report them in si_addr and si_signo. ``code`` is the
    si_code where the model knows it ("SEGV_PKUERR" for a protection-key fault), else "".
    """

    def __init__(
        self, addr: int, signal: str = "SIGSEGV", reason: str = "", code: str = ""
    ) -> None:
        self.addr = addr
        self.signal = signal
        self.reason = reason
        self.code = code
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


class KernelError(OSError):
    """A failing modelled syscall: ``.errno`` is the Linux errno (``kernel_error()``)."""


def kernel_error(code: int, what: str = "") -> KernelError:
    """The KernelError (an OSError) a failing syscall raises: ``.errno`` is the Linux
    errno, and the text starts with its name (``ENOMEM: max_map_count``)."""
    name = errno.errorcode.get(code, str(code))
    return KernelError(code, f"{name}: {what}" if what else name)


EXIT_RESOURCE_LIMIT = 3
"""Exit status of a run stopped by a resource budget (1 is a divergence, 2 bad input)."""


class ResourceLimitError(Exception):
    """A run exceeded one of vmalab's own resource budgets (``vmalab.budget.Budget`` for
    the model, the live runner's limits for the real kernel).

    Deliberately *not* an OSError: the budget protects the host running vmalab, it is not
    kernel behaviour, so no program may mistake it for an errno the kernel returned (the
    modelled kernel would often have succeeded). The model state stays consistent
    (``Kernel.check()`` passes): inside the model a breach unwinds like an allocation
    failure, then the syscall boundary raises this instead of ENOMEM. ``resource`` names
    the budget (``pages``, ``stored_bytes``, ``vmas``, ``pgtables``, ``seconds``,
    ``file_bytes``, ``rss``), ``limit`` is its value. The command line prints
    ``vmalab: resource limit: MESSAGE`` and exits with ``EXIT_RESOURCE_LIMIT`` (3).
    """

    exit_code = EXIT_RESOURCE_LIMIT

    def __init__(self, resource: str, limit: float, message: str = "") -> None:
        self.resource = resource
        self.limit = limit
        shown = int(limit) if float(limit).is_integer() else limit
        self.message = message or f"{resource} budget of {shown} exceeded"
        super().__init__(self.message)
