"""Properties of programs drawn by the shared op generator (``vmalab.oracle.generate``, the
one ``vmalab fuzz`` uses, built from the op classes' generator rules), on the model only:

* every design keeps ``Kernel.check()`` after every op of every generated program, fork
  children included (``run_model`` checks after each op and reports a failure as
  ``error``);
* eager and sticky (the design of this machine's kernel) give identical observations for
  every generated program: results, errnos, VMAs with their VmFlags (``gu`` aside, which
  eager lacks), pagemap letters, probes and bytes.

Both over fixed seeds (``random_program``, as fuzz draws them) and under hypothesis, which
drives the same generator through ``st.randoms()`` and so shrinks a failing program by
its random choices.

The seeded walks and state machines of test_properties.py pin the findings F1 and F2 to
their own distribution (structured hole fills and merges over a 12-page window), which is
why they keep their own rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmalab import DESIGNS
from vmalab import program as P
from vmalab.oracle import Gen, compare, random_program

SEEDS = range(40)


def _errors(obs: P.Observation, where: str = "ops") -> list[str]:
    """The runner errors of an observation and of its fork children."""
    out = [] if obs.error is None else [f"{where}: {obs.error}"]
    for i, r in enumerate(obs.results):
        child: Any = r.get("child")
        if isinstance(child, dict):
            out += _errors(P.Observation.from_json(child), f"{where}[{i}].child")
    return out


@pytest.mark.parametrize("design", DESIGNS)
def test_generated_programs_keep_the_invariants(design: str) -> None:
    for seed in SEEDS:
        obs = P.run_model(random_program(seed), design, check=True)
        assert _errors(obs) == [], f"seed {seed}"


def test_generated_programs_identical_on_eager_and_sticky() -> None:
    for seed in range(100):
        prog = random_program(seed)
        d = compare(
            prog.ops,
            P.run_model(prog, "sticky"),
            P.run_model(prog, "eager"),
            ignore_flags=frozenset({"gu"}),
        )
        assert d is None, f"seed {seed}: {d.describe()}"


programs = st.randoms(use_true_random=False).map(
    lambda r: P.from_json(Gen(r).program(), "hypothesis")
)
"""Programs of the shared generator, its random choices drawn by hypothesis."""


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_hypothesis_programs_keep_the_invariants_and_agree(prog: P.Program) -> None:
    sticky = P.run_model(prog, "sticky", check=True)
    eager = P.run_model(prog, "eager", check=True)
    assert _errors(sticky) == [] and _errors(eager) == []
    d = compare(prog.ops, sticky, eager, ignore_flags=frozenset({"gu"}))
    assert d is None, d.describe()
