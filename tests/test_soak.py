"""Soak test (issue 8 §3): random operations over many processes stay consistent.

Runs ``vmalab.soak.run_soak`` for 10^4 operations with ``Kernel.check()`` every 1000
steps and at the end, and a slab leak check after every process has exited; plus a short
run through the ``vmalab soak`` command line.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vmalab import DESIGNS
from vmalab.cli import main
from vmalab.soak import run_soak

SOAK_OPS = 10_000


def test_soak_default_design_no_violations() -> None:
    res = run_soak(SOAK_OPS, seed=7, check_every=1000, processes=8)
    assert res.ops == SOAK_OPS
    assert res.forks > 0 and res.exits > 0
    assert res.checks >= SOAK_OPS // 1000
    assert [str(v) for v in res.violations] == []
    assert all(active == 0 for active in res.slab_active_after_exit.values())


@pytest.mark.parametrize("design", [d for d in DESIGNS if d != "tagged"])
def test_soak_short_every_design(design: str) -> None:
    res = run_soak(1_000, seed=3, check_every=100, processes=4, design=design)
    assert [str(v) for v in res.violations] == []


def test_soak_cli() -> None:
    r = CliRunner().invoke(main, ["soak", "--ops", "300", "--seed", "5", "--check-every",
                                  "100", "--processes", "3"])
    assert r.exit_code == 0, r.output
    assert "ops=300" in r.output and "violations=0" in r.output


def test_soak_cli_bad_design() -> None:
    r = CliRunner().invoke(main, ["soak", "--ops", "10", "--design", "nope"])
    assert r.exit_code == 2
