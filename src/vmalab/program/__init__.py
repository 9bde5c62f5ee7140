"""Differential-oracle programs: a versioned JSON format, its parser and an interpreter.

A *program* is a short, deterministic sequence of address-space operations (mmap, madvise,
fork, ...) whose addresses are page numbers relative to an *arena*: a fixed, page-aligned
region at ``ARENA_BASE``. The same program runs on the vmalab model (``run_model``) and on
the real kernel (``vmalab.live.run_live``); both produce an ``Observation`` (plain JSON data)
that ``vmalab.oracle`` compares. The format is documented in ``docs/program-format.md``.

The interpreter (``execute``) is independent of where it runs: it drives a ``Machine``,
which the model side implements over the public ``Process`` API and the live side over
ctypes syscalls. Nothing here touches the running kernel.

The package: ``names`` (constants, name tables), ``fields`` (field validators), ``base``
(the op base class and registry), ``ops/`` (one class per op, by family), ``parse``
(``from_json``/``loads``/``load``), ``core`` (``Program``), ``observe`` (``Observation``,
``State``), ``run`` (``Machine``, the interpreter) and ``model`` (``ModelMachine``,
``run_model``). Everything public is re-exported here.
"""

from __future__ import annotations

from vmalab import uapi
from vmalab.program.base import OPS, GenRule, GenState, OpBase, op_to_json, register
from vmalab.program.core import Program, iter_ops
from vmalab.program.model import DEFAULT_MODEL_SECONDS, ModelMachine, run_model
from vmalab.program.names import (
    ADVICE_NAMES,
    ARENA_BASE,
    DEFAULT_ARENA_PAGES,
    FALLOC_NAMES,
    FORMAT,
    MAP_FLAG_NAMES,
    MAX_ARENA_PAGES,
    MAX_DEPTH,
    MAX_FILE_PAGES,
    MAX_FILES,
    MAX_OPS,
    MCL_NAMES,
    MDWE_NAMES,
    MFD_NAMES,
    OPEN_FLAG_NAMES,
    PAGE,
    PKEY_RIGHT_NAMES,
    PROT_NAMES,
    SEAL_NAMES,
    VERSION,
    bits,
    prot_bits,
)
from vmalab.program.observe import Observation, Observe, State, page_char
from vmalab.program.ops.files import Close, Fallocate, Ftruncate, Memfd, Open, Pread, Pwrite, Seal
from vmalab.program.ops.ipc import (
    Devzero,
    Msync,
    Shmat,
    Shmctl,
    Shmdt,
    Shmget,
    UffdioApi,
    UffdioRegister,
    UffdioUnregister,
    Userfaultfd,
)
from vmalab.program.ops.lock import Memlock, Mlock, Mlockall, Munlock, Munlockall
from vmalab.program.ops.memory import Madvise, Mincore, Mmap, Mprotect, Mremap, Mseal, Munmap
from vmalab.program.ops.process import (
    Exit,
    Fork,
    Mdwe,
    PkeyAlloc,
    PkeyFree,
    PkeyMprotect,
    Read,
    Slab,
    Write,
)
from vmalab.program.parse import from_json, load, loads
from vmalab.program.run import Machine, Refused, Runner, execute, state_of

Op = OpBase
"""Any operation (every op class derives from ``OpBase``)."""
_OPS = OPS  # the registry's name before the program package
_Runner = Runner
_Refused = Refused
_bits = bits
_prot_bits = prot_bits

__all__ = [
    "ADVICE_NAMES",
    "ARENA_BASE",
    "DEFAULT_ARENA_PAGES",
    "DEFAULT_MODEL_SECONDS",
    "FALLOC_NAMES",
    "FORMAT",
    "MAP_FLAG_NAMES",
    "MAX_ARENA_PAGES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_PAGES",
    "MAX_OPS",
    "MCL_NAMES",
    "MDWE_NAMES",
    "MFD_NAMES",
    "OPEN_FLAG_NAMES",
    "OPS",
    "PAGE",
    "PKEY_RIGHT_NAMES",
    "PROT_NAMES",
    "SEAL_NAMES",
    "VERSION",
    "bits",
    "prot_bits",
    "Close",
    "Devzero",
    "Msync",
    "Shmat",
    "Shmctl",
    "Shmdt",
    "Shmget",
    "UffdioApi",
    "UffdioRegister",
    "UffdioUnregister",
    "Userfaultfd",
    "Exit",
    "Fallocate",
    "Fork",
    "Ftruncate",
    "GenRule",
    "GenState",
    "Machine",
    "Madvise",
    "Mdwe",
    "Memfd",
    "Memlock",
    "Mincore",
    "Mlock",
    "Mlockall",
    "Mmap",
    "ModelMachine",
    "Mprotect",
    "Mremap",
    "Munlock",
    "Munlockall",
    "Munmap",
    "Mseal",
    "Observation",
    "Observe",
    "Op",
    "OpBase",
    "Open",
    "PkeyAlloc",
    "PkeyFree",
    "PkeyMprotect",
    "Pread",
    "Program",
    "Pwrite",
    "Read",
    "Refused",
    "Runner",
    "Seal",
    "Slab",
    "State",
    "Write",
    "execute",
    "from_json",
    "iter_ops",
    "load",
    "loads",
    "op_to_json",
    "page_char",
    "register",
    "run_model",
    "state_of",
    "uapi",
]
