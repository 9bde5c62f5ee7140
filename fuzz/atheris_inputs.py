"""Coverage-guided fuzzing of vmalab's input readers with atheris (where it installs).

Targets (``fuzz/harness.py``): the program format, run on the model too (``program``), the
strace parser and replay (``strace``), the maps/smaps dump reader applied to a model
process (``maps``) and recording directories (``recording``, where the branch replays
them). Each input must either be accepted or raise the reader's located error; anything
else raises ``harness.Unclean`` and atheris reports it with the input that caused it.

    pip install atheris
    python fuzz/atheris_inputs.py strace -atheris_runs=200000

Without coverage guidance, ``python fuzz/offline.py TARGET --inputs 100000`` mutates the
seed inputs and counts tracebacks, hangs and peak RSS (docs/hostile-input.md).
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports():
    import harness


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in harness.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(harness.TARGETS)}}} [atheris options]")
    target = harness.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
