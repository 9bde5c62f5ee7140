"""The differential oracle: the same program on the vmalab model and on the running kernel.

* ``diff(program)`` runs both (the model design chosen by ``vmalab.live.detect_design``) and
  returns the first ``Divergence`` in program order: an op's return value or errno, then the
  arena state after that op (VMAs with their VmFlags, pagemap letters), then, for a fork,
  the child's own observation; finally the end state and the per-page access probe.
* ``fuzz(n, seed)`` runs random programs, shrinks every undocumented divergence to a minimal
  program by delta debugging over its ops and saves it as ``tests/regressions/NNN.json``.
* ``slab_compare(n)`` compares the model's anon_vma / anon_vma_chain / vm_area_struct counts
  with ``/proc/slabinfo`` for an allocation-heavy program (issue 8 §5).

Known divergences are listed in ``KNOWN`` and documented in ``docs/divergences.md``: kernel
behaviour the model deliberately does not have, and open model bugs that are tracked by a
regression program. Fuzz counts those by id, and shrinks and saves everything else.

The package: ``divergence`` (``Divergence``), ``compare`` (``compare``, ``diff``),
``known`` (``KNOWN``, ``classify``), ``generate`` (``Gen``, ``random_program``: built from
the op classes' generator rules), ``shrink`` (``ddmin``, ``shrink``), ``fuzz`` (``fuzz``,
``save_regression``) and ``slab`` (``slab_program``, ``slab_deltas``, ``slab_compare``).
Everything public is re-exported here.
"""

from __future__ import annotations

from vmalab.oracle.compare import DiffResult, _vmas_differ, compare, diff
from vmalab.oracle.divergence import Divergence, _fmt
from vmalab.oracle.fuzz import (
    FuzzSummary,
    _next_regression_path,
    _shrink_divergence,
    fuzz,
    save_regression,
)
from vmalab.oracle.generate import Gen, _Gen, random_program, rules
from vmalab.oracle.known import KNOWN, Known, _khugepaged_collapse, _op_at, classify
from vmalab.oracle.shrink import _ddmin, _reparse, ddmin, shrink
from vmalab.oracle.slab import (
    SLAB_KINDS,
    SlabComparison,
    slab_compare,
    slab_deltas,
    slab_program,
)
from vmalab.program.ops.memory import ADVICE_WEIGHTS as _ADVICE_WEIGHTS

__all__ = [
    "KNOWN",
    "SLAB_KINDS",
    "DiffResult",
    "Divergence",
    "FuzzSummary",
    "Gen",
    "Known",
    "SlabComparison",
    "classify",
    "compare",
    "ddmin",
    "diff",
    "fuzz",
    "random_program",
    "rules",
    "save_regression",
    "shrink",
    "slab_compare",
    "slab_deltas",
    "slab_program",
]
_PRIVATE = (
    _ADVICE_WEIGHTS,
    _Gen,
    _ddmin,
    _fmt,
    _khugepaged_collapse,
    _next_regression_path,
    _op_at,
    _reparse,
    _shrink_divergence,
    _vmas_differ,
)
"""Names the single-module oracle had, kept importable from here."""
