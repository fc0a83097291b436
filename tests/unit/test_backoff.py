"""``Backoff``: randomized pauses that double up to a cap and stop at the deadline."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from stratus.backoff import Backoff


def test_the_bound_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first=0.001, cap=0.008, deadline=100.0)
    rng = random.Random(1)
    for conflicts, bound in [(1, 0.001), (2, 0.002), (3, 0.004), (4, 0.008), (9, 0.008)]:
        pauses = [backoff.pause(conflicts, 0.0, rng) for _ in range(200)]
        assert all(p is not None and 0.0 <= p <= bound for p in pauses)
        assert max(p for p in pauses if p is not None) > bound / 2  # reaches up to the bound
        assert len(set(pauses)) > 100  # randomized: requests that collided spread out


def test_no_pause_runs_past_the_deadline_and_then_it_gives_up() -> None:
    backoff = Backoff(first=0.5, cap=1.0, deadline=1.0)
    rng = random.Random(2)
    assert all((backoff.pause(5, 0.9, rng) or 0.0) <= 0.1 + 1e-12 for _ in range(100))
    assert backoff.pause(5, 1.0, rng) is None
    assert backoff.pause(1, 7.0, rng) is None


@given(st.integers(1, 10_000), st.floats(0.0, 3.0), st.integers(0, 2**32))
def test_pauses_stay_within_the_bounds(conflicts: int, elapsed: float, seed: int) -> None:
    backoff = Backoff()
    pause = backoff.pause(conflicts, elapsed, random.Random(seed))
    if elapsed >= backoff.deadline:
        assert pause is None
    else:
        assert pause is not None
        assert 0.0 <= pause <= min(backoff.cap, backoff.deadline - elapsed)


def test_a_run_of_conflicts_ends_near_the_deadline() -> None:
    backoff, rng, elapsed, conflicts = Backoff(), random.Random(3), 0.0, 0
    while (pause := backoff.pause(conflicts + 1, elapsed, rng)) is not None:
        conflicts, elapsed = conflicts + 1, elapsed + pause + 0.001  # 1 ms per run
    assert elapsed >= backoff.deadline
    assert elapsed <= backoff.deadline + 0.001
    assert conflicts > 5  # more runs than a function gets


def test_without_a_deadline_it_never_gives_up_and_stays_under_the_cap() -> None:
    backoff = Backoff(first=0.001, cap=0.004, deadline=None)
    rng = random.Random(4)
    pauses = [backoff.pause(n, 1e9, rng) for n in range(1, 100)]
    assert all(p is not None and 0.0 <= p <= 0.004 for p in pauses)


def test_the_platform_backoffs_keep_their_bounds() -> None:
    from stratus import backoff

    # The numbers each caller used before there was one module.
    assert backoff.CONFLICT.bound(1) == 0.0005 and backoff.CONFLICT.bound(99) == 0.02
    assert backoff.MERGE.bound(1) == 100e-6 and backoff.MERGE.bound(99) == 6.4e-3
    assert backoff.LOCK.bound(99) == 2e-3
    assert backoff.CONFLICT.sleep(1) is True  # no deadline: it always sleeps, briefly
    assert Backoff(deadline=0.0).sleep(1, 0.0) is False
