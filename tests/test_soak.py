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
    r = CliRunner().invoke(
        main, ["soak", "--ops", "300", "--seed", "5", "--check-every", "100", "--processes", "3"]
    )
    assert r.exit_code == 0, r.output
    assert "ops=300" in r.output and "violations=0" in r.output


def test_soak_cli_bad_design() -> None:
    r = CliRunner().invoke(main, ["soak", "--ops", "10", "--design", "nope"])
    assert r.exit_code == 2


def test_soak_reports_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing Kernel.check() is reported as a violation and ends the run."""
    import vmalab
    from vmalab import InvariantError

    def broken(self: object) -> None:
        raise InvariantError("injected")

    monkeypatch.setattr(vmalab.Kernel, "check", broken)
    res = run_soak(2_000, seed=1, check_every=500, processes=3)
    assert res.ops == 500
    assert len(res.violations) == 1 and "injected" in res.violations[0].message


def test_soak_reports_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Active slab objects after every process exited are reported as a leak."""
    import vmalab

    real = vmalab.Kernel.slab

    def leaky(self: vmalab.Kernel) -> dict[str, object]:
        stats = dict(real(self))
        stats["vm_area_struct"] = type("S", (), {"active": 1})()
        return stats

    monkeypatch.setattr(vmalab.Kernel, "slab", leaky)
    res = run_soak(300, seed=1, check_every=100, processes=2)
    assert [v.op for v in res.violations] == ["leak"]
