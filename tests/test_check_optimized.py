"""Kernel.check() raises InvariantError explicitly, so it works under ``python -O``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vmalab import InvariantError, Kernel

_PROGRAM = """
import vmalab
k = vmalab.Kernel()
p = k.spawn()
p.mmap(0, 8192, 3, 0x22)
k.check()
k.vm_committed_as += 1
try:
    k.check()
except vmalab.InvariantError as e:
    print("caught:", e)
else:
    print("missed")
"""


def test_check_detects_a_violation_under_python_O() -> None:
    out = subprocess.run(
        [sys.executable, "-O", "-c", _PROGRAM], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("caught: vm_committed_as"), out


def test_check_detects_a_violation() -> None:
    k = Kernel()
    p = k.spawn()
    p.mmap(0, 8192, 3, 0x22)
    k.check()
    k.vm_committed_as += 1
    with pytest.raises(InvariantError, match="vm_committed_as"):
        k.check()
