#!/usr/bin/env python3
"""Build a mypyc-compiled copy of vmalab's source tree, for benchmarking only.

Usage (from the repository root)::

    python benchmarks/mypyc_tree.py /tmp/vmalab-mypyc
    python benchmarks/run.py --src /tmp/vmalab-mypyc/src --out /tmp/bench-mypyc

Copies ``src/`` to ``OUT/src`` and compiles with mypyc (``opt_level=3``) the modules that
compile unchanged: ``vmalab/mm/*``, ``vmalab/designs/*`` and ``vmalab/trace/parse.py``.
``process.py``, ``kernel.py`` and ``proc.py`` stay interpreted (``Process`` is created with
``object.__new__``, which mypyc's native classes refuse), and so does
``trace/replay.py`` (it dispatches through the class ``__dict__``, which native classes do
not have: KeyError '_sys_mprotect'). The repository is not touched.
Needs ``mypy`` (which ships mypyc) and a C compiler; takes about a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import glob
from setuptools import setup
from mypyc.build import mypycify

mods = sorted(glob.glob("vmalab/mm/*.py") + glob.glob("vmalab/designs/*.py"))
mods = [m for m in mods if not m.endswith("__init__.py")]
mods += ["vmalab/trace/parse.py"]
setup(name="vmalab-mypyc-bench",
      ext_modules=mypycify(["--ignore-missing-imports"] + mods, opt_level="3"))
"""


def build(out: Path) -> Path:
    """Copy src/ under ``out`` and compile it in place; return the new src directory."""
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (src / "setup_mypyc.py").write_text(SETUP)
    subprocess.run(
        [sys.executable, "setup_mypyc.py", "build_ext", "--inplace"],
        cwd=src,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return src


def main() -> int:
    """Build into the directory named on the command line."""
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = build(Path(sys.argv[1]).resolve())
    print(f"built {src}; run: python benchmarks/run.py --src {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
