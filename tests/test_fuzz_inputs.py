"""Bounded fuzzing of every input format in CI (fuzz/harness.py; docs/hostile-input.md).

Each target gets a few hundred mutated inputs (seeded, so a failure replays), a few
seconds in all. The long runs are ``python fuzz/offline.py TARGET --inputs 100000``.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

import harness  # noqa: E402

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("VMALAB_FUZZ_EXAMPLES", "150"))
_SEEDS = {t: harness.seeds(t) for t in harness.TARGETS}


@pytest.mark.parametrize("target", sorted(harness.TARGETS))
def test_seeds_are_clean(target: str) -> None:
    for data in _SEEDS[target]:
        harness.TARGETS[target](data)


def _fuzz(target: str, seed: int, pick: int) -> None:
    rnd = random.Random(seed)
    corpus = _SEEDS[target]
    src = corpus[pick % len(corpus)]
    structured = target in ("program", "recording") and rnd.random() < 0.8
    data = harness.mutate_structured(src, rnd) if structured else harness.mutate(src, rnd)
    harness.TARGETS[target](data)  # raises harness.Unclean for a traceback


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SETTINGS
@given(st.integers(0, 2**32), st.integers(0, 1000))
def test_fuzz_programs(seed: int, pick: int) -> None:
    _fuzz("program", seed, pick)


@_SETTINGS
@given(st.integers(0, 2**32), st.integers(0, 1000))
def test_fuzz_maps(seed: int, pick: int) -> None:
    _fuzz("maps", seed, pick)


@settings(
    max_examples=max(10, EXAMPLES // 5),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.integers(0, 2**32), st.integers(0, 1000))
def test_fuzz_strace(seed: int, pick: int) -> None:
    _fuzz("strace", seed, pick)


@pytest.mark.skipif(not harness.RECORDINGS, reason="this branch cannot replay recordings yet")
@settings(
    max_examples=max(10, EXAMPLES // 5),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.integers(0, 2**32), st.integers(0, 1000))
def test_fuzz_recordings(seed: int, pick: int) -> None:
    _fuzz("recording", seed, pick)


@_SETTINGS
@given(st.integers(0, 2**32), st.integers(0, 1000))
def test_fuzz_command_lines(seed: int, pick: int) -> None:
    _fuzz("cli", seed, pick)


@pytest.mark.parametrize("target", sorted(harness.TARGETS))
def test_raw_bytes_are_clean(target: str) -> None:
    """Arbitrary bytes, not mutations: binary garbage, huge numbers, deep nesting (for a
    recording, the bytes are its manifest.json)."""
    rnd = random.Random(7)
    blobs = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(200))) for _ in range(40)]
    blobs += [b"[" * 100_000, b"{" * 100_000, b"\x00" * 5000, b"9" * 5000]
    for data in blobs:
        harness.TARGETS[target](data)
