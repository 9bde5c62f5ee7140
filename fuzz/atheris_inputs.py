"""Coverage-guided fuzzing of vmalab's input readers with atheris (where it installs).

Targets: the strace parser and replay (``strace``), the program format (``program``) and
the maps/smaps dump reader (``maps``). Each input must either be accepted or raise the
reader's located error (TraceSyntaxError / ValueError naming a line, UserInputError); any
other exception is a bug and atheris reports it with the input that caused it.

    pip install atheris
    python fuzz/atheris_inputs.py strace -atheris_runs=200000
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from vmalab.errors import UserInputError
    from vmalab.program import loads
    from vmalab.trace.layout import parse_maps
    from vmalab.trace.replay import replay

_TMP = tempfile.mkdtemp(prefix="vmalab-atheris-")


def _strace(data: bytes) -> None:
    path = os.path.join(_TMP, "t.strace")
    with open(path, "wb") as f:
        f.write(data)
    try:
        replay(path, "sticky")
    except ValueError:  # TraceSyntaxError is a ValueError naming the line
        pass


def _program(data: bytes) -> None:
    try:
        loads(data, "fuzz.json")
    except UserInputError:
        pass


def _maps(data: bytes) -> None:
    try:
        parse_maps(data.decode("utf-8", "replace"), "fuzz.maps")
    except (UserInputError, ValueError):
        pass


TARGETS = {"strace": _strace, "program": _program, "maps": _maps}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [atheris options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
