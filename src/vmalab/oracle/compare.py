"""Comparing two observations of one program: ``Divergence``, ``compare``, and ``diff``
(the same program on the running kernel and on the model)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vmalab import program as P
from vmalab.oracle.divergence import Divergence
from vmalab.oracle.known import classify
from vmalab.program import Observation, Program

_RESULT_KEYS = ("ret", "errno", "fault", "data")


def _vmas_differ(k: list[Any], m: list[Any], ignore: frozenset[str]) -> bool:
    def norm(vs: list[Any]) -> list[Any]:
        return [list(v[:2]) + [sorted(set(v[2]) - ignore)] for v in vs]

    return norm(k) != norm(m)


def compare(
    prog_ops: tuple[P.Op, ...],
    kernel: Observation,
    model: Observation,
    where: str = "ops",
    *,
    ignore_flags: frozenset[str] = frozenset(),
) -> Divergence | None:
    """The first difference between two observations of the same ops, or None.
    ``ignore_flags``: VmFlags mnemonics left out of the VMA comparison (e.g. ``gu`` to
    compare a design without VM_MAYBE_GUARD by behaviour only)."""
    for i, o in enumerate(prog_ops):
        loc = f"{where}[{i}]"
        if i >= len(kernel.results) or i >= len(model.results):
            if kernel.error != model.error:
                return Divergence(loc, "error", kernel.error, model.error, o.op)
            if len(kernel.results) != len(model.results):
                return Divergence(loc, "ops run", len(kernel.results), len(model.results), o.op)
            break
        kr, mr = kernel.results[i], model.results[i]
        kv = {k: kr[k] for k in _RESULT_KEYS if k in kr}
        mv = {k: mr[k] for k in _RESULT_KEYS if k in mr}
        if kv != mv:
            what = (
                "errno"
                if "errno" in kv or "errno" in mv
                else ("ret" if kv.get("ret") != mv.get("ret") else "result")
            )
            return Divergence(loc, what, kv, mv, o.op)
        ks, ms = kr.get("state"), mr.get("state")
        if ks is not None and ms is not None:
            if _vmas_differ(ks["vmas"], ms["vmas"], ignore_flags):
                return Divergence(loc, "vmas", ks["vmas"], ms["vmas"], o.op)
            if ks["pages"] != ms["pages"]:
                return Divergence(loc, "pages", ks["pages"], ms["pages"], o.op)
            if ks.get("thp", []) != ms.get("thp", []):
                return Divergence(loc, "thp", ks.get("thp", []), ms.get("thp", []), o.op)
        if isinstance(o, P.Fork):
            kc, mc = kr.get("child"), mr.get("child")
            if kc is not None and mc is not None:
                d = compare(
                    o.child,
                    Observation.from_json(kc),
                    Observation.from_json(mc),
                    f"{loc}.child",
                    ignore_flags=ignore_flags,
                )
                if d is not None:
                    return d
    if kernel.error != model.error:
        return Divergence(f"{where}/end", "error", kernel.error, model.error)
    kf, mf = kernel.final, model.final
    if (kf is None) != (mf is None):
        return Divergence(f"{where}/final", "exited", kf is None, mf is None)
    if kf is not None and mf is not None:
        if _vmas_differ(kf["vmas"], mf["vmas"], ignore_flags):
            return Divergence(f"{where}/final", "vmas", kf["vmas"], mf["vmas"])
        for key in ("pages", "probe", "data"):
            if kf.get(key) != mf.get(key):
                return Divergence(f"{where}/final", key, kf.get(key), mf.get(key))
        if kf.get("thp", []) != mf.get("thp", []):
            return Divergence(f"{where}/final", "thp", kf.get("thp", []), mf.get("thp", []))
    return None


@dataclass
class DiffResult:
    """Both observations, the model design used, and the first divergence (None: agree)."""

    design: str
    kernel: Observation
    model: Observation
    divergence: Divergence | None
    seconds: float


def diff(
    prog: Program,
    design: str | None = None,
    *,
    timeout: float = 30.0,
    ignore_flags: frozenset[str] = frozenset(),
    model_timeout: float | None = None,
) -> DiffResult:
    """Run ``prog`` on the kernel and on the model; report the first divergence.

    ``timeout`` bounds the live run (``LiveTimeout``), ``model_timeout`` (default: the
    same) the model run: past it, or past any other budget, ``ResourceLimitError`` is
    raised, never a divergence."""
    from vmalab import live

    t0 = time.monotonic()
    design = design or live.detect_design()
    k = live.run_live(prog, timeout=timeout)
    m = P.run_model(prog, design, timeout=timeout if model_timeout is None else model_timeout)
    d = compare(prog.ops, k, m, ignore_flags=ignore_flags)
    if d is not None:
        classify(prog, d)
    return DiffResult(design, k, m, d, time.monotonic() - t0)
