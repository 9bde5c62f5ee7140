"""Many sources × designs, on local processes or on a Dask cluster.

:func:`sweep` maps :func:`vmalab.trace.run.run_one` over every (source, design)
pair. By default it uses a ``concurrent.futures.ProcessPoolExecutor``; with a scheduler
address it submits the same function to a ``dask.distributed`` cluster. Results come back
in the order of the pairs, so both executors give the same list (apart from ``seconds``).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence
from typing import Any

from vmalab.errors import UserInputError
from vmalab.trace.run import RunSpec, run_one


def specs_for(
    sources: Sequence[str], designs: Sequence[str], guardify: bool = False
) -> list[RunSpec]:
    """Every (source, design) pair as a RunSpec (sources outer, designs inner)."""
    return [RunSpec(s, d, guardify) for s in sources for d in designs]


def _run(spec: RunSpec) -> dict[str, Any]:
    """run_one without a progress hook (picklable entry point for workers).

    A UserInputError comes back as ``{"_user_error": (location, message)}``: the exception
    class does not survive pickling, and the caller re-raises it.
    """
    try:
        return run_one(spec)
    except UserInputError as e:
        return {"_user_error": (e.location, e.message)}


def _check(r: dict[str, Any]) -> dict[str, Any]:
    """Re-raise a worker's UserInputError."""
    if "_user_error" in r:
        raise UserInputError(*r["_user_error"])
    return r


def sweep(
    specs: Sequence[RunSpec],
    *,
    scheduler: str | Any | None = None,
    workers: int | None = None,
    done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every spec; return the results in spec order.

    ``scheduler``: None for local processes (``workers`` of them, default 2), an address
    such as ``tcp://127.0.0.1:8786``, or a ``dask.distributed.Client``/``LocalCluster``.
    ``done(n)`` is called as results arrive (n = how many so far). Exceptions of a run
    (e.g. UserInputError) propagate; a scheduler that cannot be reached raises
    ConnectionError.
    """
    if scheduler is None:
        results: list[dict[str, Any] | None] = [None] * len(specs)
        with cf.ProcessPoolExecutor(max_workers=workers or 2) as ex:
            futs = {ex.submit(_run, s): i for i, s in enumerate(specs)}
            for n, f in enumerate(cf.as_completed(futs), 1):
                results[futs[f]] = _check(f.result())
                if done is not None:
                    done(n)
        return [r for r in results if r is not None]
    from dask.distributed import Client, as_completed

    own = not isinstance(scheduler, Client)
    try:
        client: Any = Client(scheduler, timeout=15) if own else scheduler
    except (OSError, ValueError) as e:  # unreachable scheduler, malformed address
        raise ConnectionError(f"cannot reach Dask scheduler {scheduler}: {e}") from None
    try:
        dfuts: list[Any] = client.map(_run, list(specs), pure=False)
        index = {f.key: i for i, f in enumerate(dfuts)}
        out: list[dict[str, Any] | None] = [None] * len(specs)
        for n, df in enumerate(as_completed(dfuts), 1):
            out[index[df.key]] = _check(df.result())
            if done is not None:
                done(n)
        return [r for r in out if r is not None]
    finally:
        if own:
            client.close()
