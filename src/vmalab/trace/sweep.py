"""Many sources × designs, on local processes or on a Dask cluster.

:func:`sweep` maps :func:`vmalab.trace.run.run_one` over every (source, design)
pair. By default it uses a ``concurrent.futures.ProcessPoolExecutor``; with a scheduler
address it submits the same function to a ``dask.distributed`` cluster. Results come back
in the order of the pairs, so both executors give the same list (apart from ``seconds``).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Sequence
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
        with cf.ProcessPoolExecutor(max_workers=workers or 2) as ex:
            futs = {ex.submit(_run, s): i for i, s in enumerate(specs)}
            return _in_order(
                len(specs), ((futs[f], f.result()) for f in cf.as_completed(futs)), done
            )
    from dask.distributed import Client, as_completed

    # dask.distributed ships no annotations for Client() and as_completed(): call them as
    # what they are to this module, callables returning Any
    make_client: Callable[..., Any] = Client
    arrivals: Callable[..., Any] = as_completed
    own = not isinstance(scheduler, Client)
    try:
        client: Any = make_client(scheduler, timeout=15) if own else scheduler
    except (OSError, ValueError) as e:  # unreachable scheduler, malformed address
        raise ConnectionError(f"cannot reach Dask scheduler {scheduler}: {e}") from None
    try:
        dfuts: list[Any] = client.map(_run, list(specs), pure=False)
        index = {f.key: i for i, f in enumerate(dfuts)}
        arrived = arrivals(dfuts)
        return _in_order(len(specs), ((index[df.key], df.result()) for df in arrived), done)
    finally:
        if own:
            client.close()


def _in_order(
    n: int,
    arrived: Iterable[tuple[int, dict[str, Any]]],
    done: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """The results of ``n`` runs, arriving as (index, result), put back in spec order;
    ``done(count)`` after each arrival; a worker's UserInputError re-raised."""
    out: list[dict[str, Any] | None] = [None] * n
    for count, (i, r) in enumerate(arrived, 1):
        out[i] = _check(r)
        if done is not None:
            done(count)
    return [r for r in out if r is not None]
