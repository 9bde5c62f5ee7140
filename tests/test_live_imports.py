"""The live runner's imports, under its launcher's bare ``vmalab`` package.

``vmalab.live._LAUNCH`` puts a bare package object in place of vmalab/__init__.py, so the
runner child imports its modules in its own order, not the one vmalab/__init__.py sets up.
In the compiled (mypyc) build a module can then crash the interpreter at import: mm/shm.py
did (mypyc/mypyc#1209, a dataclass annotation naming a compiled class imported only under
TYPE_CHECKING reads a NULL type pointer), and the runner died of SIGSEGV in every live test
while it imported IPC_RMID from there (live/child.py). These tests need no kernel access.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import vmalab.mm
import vmalab.mm.shm
from vmalab.live import _BARE_PACKAGE, _LAUNCH, _death_note, _src_path

MM_MODULES = sorted(f"vmalab.mm.{m.name}" for m in pkgutil.iter_modules(vmalab.mm.__path__))
COMPILED = vmalab.mm.shm.__file__ is not None and not vmalab.mm.shm.__file__.endswith(".py")

#: mm modules whose compiled build crashes when imported before vmalab.mm.filemap (the
#: fix belongs in the module: a runtime import of the annotated class, or a string
#: annotation); strict, so that the fix makes this test fail until the entry is removed.
CRASH_WHEN_FIRST: dict[str, str] = {}


def _bare(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BARE_PACKAGE + code, _src_path()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_runner_child_imports_no_model_module() -> None:
    # The model's modules are the compiled ones whose import order matters; the child
    # needs only vmalab.program, vmalab.uapi, vmalab.errors and vmalab.live.
    r = _bare(
        "import vmalab.live.child\n"
        "print(' '.join(m for m in sys.modules if m.startswith('vmalab.')))\n"
    )
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert "vmalab.live.child" in names
    allowed = ("vmalab.program", "vmalab.uapi", "vmalab.errors", "vmalab.live")
    assert [n for n in names if not n.startswith(allowed)] == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(COMPILED, reason=CRASH_WHEN_FIRST[n], strict=True))
        if n in CRASH_WHEN_FIRST
        else n
        for n in MM_MODULES
    ],
)
def test_every_mm_module_can_be_imported_first(name: str) -> None:
    r = _bare(f"import {name}\n")
    assert r.returncode == 0, f"{name} imported first: status {r.returncode}\n{r.stderr}"


def test_a_crash_while_the_child_imports_names_the_module(tmp_path: Path) -> None:
    # A stand-in tree whose vmalab/live/child.py dies of SIGSEGV at import, launched as
    # run_live launches the runner: the LiveError's note names the crash and the file.
    live = tmp_path / "vmalab" / "live"
    live.mkdir(parents=True)
    (live / "__init__.py").write_text("")
    (live / "child.py").write_text("import ctypes\n\nctypes.string_at(0)\n")
    r = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == -11
    note = _death_note(r.stderr)
    assert note.startswith("Fatal Python error: Segmentation fault at ")
    assert os.path.join("vmalab", "live", "child.py") + ":3 <module>" in note


def test_the_death_note_of_a_plain_failure_is_its_last_line() -> None:
    assert _death_note("Traceback (most recent call last):\n  ...\nValueError: x\n") == (
        "ValueError: x"
    )
    assert _death_note("") == ""
