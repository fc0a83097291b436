"""The warm-pool autoscaler and the admission queue, driven with a fake clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.client.admission import Admit, Enqueue, QueuePolicy, Reject
from stratus.server.pools.autoscaler import (
    Autoscaler,
    Configure,
    Observed,
    PoolChanged,
    ScaleTo,
    Tick,
)
from stratus.testing import FakeClock

TICK = 2.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def configured(
    clock: FakeClock,
    *functions: str,
    min_size: int = 0,
    max_size: int = 100,
    target: float = 10.0,  # one executor carries 10 x 0.7 = 7 calls
    **kwargs: float,
) -> Autoscaler:
    scaler = Autoscaler(**kwargs)  # type: ignore[arg-type]
    for function in functions or ("f",):
        scaler.handle(Configure(function, min_size, max_size, target), clock())
    return scaler


def run(
    scaler: Autoscaler,
    clock: FakeClock,
    seconds: float,
    load: dict[str, int],
    *,
    follow: bool = True,
) -> list[ScaleTo]:
    """Tick for ``seconds`` under ``load`` (calls in flight per function).

    With ``follow`` the pool becomes ready at once at every new target, as a fast shell
    would make it.
    """
    out: list[ScaleTo] = []
    for _ in range(round(seconds / TICK)):
        clock.advance(TICK)
        for function, calls in load.items():
            scaler.handle(Observed(function, calls, 0), clock())
        instructions = scaler.handle(Tick(), clock())
        out += instructions
        if follow:
            for instruction in instructions:
                scaler.handle(PoolChanged(instruction.function, instruction.size, 0), clock())
    return out


def sizes(out: list[ScaleTo], function: str = "f") -> list[int]:
    return [i.size for i in out if i.function == function]


def steady(clock: FakeClock, calls: int = 7, **kwargs: float) -> Autoscaler:
    """A function that carried ``calls`` for a whole stable window (one executor at 7)."""
    scaler = configured(clock, **kwargs)
    run(scaler, clock, 60, {"f": calls})
    return scaler


# --- sizing


def test_steady_load_sizes_the_pool_at_seventy_percent_of_target(clock: FakeClock) -> None:
    scaler = configured(clock)
    out = run(scaler, clock, 60, {"f": 21})  # 21 / (10 x 0.7) = 3
    assert scaler.pools["f"].target == 3
    assert out[-1] == ScaleTo("f", 3, out[-1].reason)


def test_scale_to_is_emitted_only_when_the_target_changes(clock: FakeClock) -> None:
    scaler = steady(clock)
    assert run(scaler, clock, 60, {"f": 7}) == []


def test_a_burst_scales_up_within_the_panic_window(clock: FakeClock) -> None:
    scaler = steady(clock)
    assert scaler.pools["f"].target == 1
    out = run(scaler, clock, 6, {"f": 70})  # wants 10 executors
    assert sizes(out) == sorted(sizes(out))
    assert sizes(out)[-1] == 10
    assert scaler.pools["f"].panicking


def test_unconfigured_functions_get_default_limits(clock: FakeClock) -> None:
    scaler = Autoscaler()
    out = run(scaler, clock, 10, {"g": 140})  # default target 100: 140 / 70 = 2
    assert sizes(out, "g")[-1] == 2


# --- panic


def test_panic_is_entered_when_the_panic_window_wants_twice_the_ready_pool(
    clock: FakeClock,
) -> None:
    scaler = steady(clock, calls=35)
    assert scaler.pools["f"].ready == 5
    run(scaler, clock, 2, {"f": 56})  # panic window (35+35+56)/3 = 42: 6 executors < 2 x 5
    assert not scaler.pools["f"].panicking
    assert scaler.pools["f"].target == 6  # stable window: (29 x 35 + 56) / 30 = 35.7
    run(scaler, clock, 2, {"f": 175})  # (35+56+175)/3 = 88.7: 13 executors >= 2 x 6 ready
    assert scaler.pools["f"].panicking
    assert scaler.pools["f"].target == 13
    assert any(d.reason.startswith("panic:") for d in scaler.history)


def test_panic_is_left_after_a_stable_window_without_panic_conditions(
    clock: FakeClock,
) -> None:
    scaler = steady(clock)
    run(scaler, clock, 6, {"f": 70})
    last_condition = scaler.pools["f"].last_panic_condition
    assert last_condition is not None
    run(scaler, clock, 60 - (clock() - last_condition) - TICK, {"f": 7})
    assert scaler.pools["f"].panicking
    run(scaler, clock, TICK, {"f": 7})
    assert not scaler.pools["f"].panicking
    assert any(d.reason.startswith("left panic") for d in scaler.history)


def test_no_scale_down_while_panicking(clock: FakeClock) -> None:
    scaler = steady(clock)
    run(scaler, clock, 6, {"f": 70})
    assert scaler.pools["f"].target == 10
    out = []
    while scaler.pools["f"].panicking:
        out += run(scaler, clock, TICK, {"f": 7})
    # The only change is the first step down, on the tick that left panic mode.
    assert sizes(out) == [5]


def test_panic_holds_the_pool_even_when_load_vanishes(clock: FakeClock) -> None:
    scaler = steady(clock)
    run(scaler, clock, 6, {"f": 70})
    assert run(scaler, clock, 40, {"f": 0}) == []  # past the grace period, still panicking
    assert scaler.pools["f"].target == 10


# --- rate limits


def test_scale_down_is_limited_to_half_the_pool_per_tick(clock: FakeClock) -> None:
    scaler = steady(clock, calls=70)
    assert scaler.pools["f"].target == 10
    steps = [10, *sizes(run(scaler, clock, 60, {"f": 7}))]
    assert steps[-1] == 1
    assert all(after >= before // 2 for before, after in itertools.pairwise(steps))


def test_scale_down_rate_steps(clock: FakeClock) -> None:
    scaler = configured(clock, max_scale_down_rate=2.0)
    scaler.pools["f"].target = 20
    scaler.pools["f"].ready = 20
    assert sizes(run(scaler, clock, 8, {"f": 1})) == [10, 5, 2, 1]


def test_scale_up_is_limited_by_the_scale_up_rate(clock: FakeClock) -> None:
    scaler = steady(clock, max_scale_up_rate=2.0)
    out = run(scaler, clock, 10, {"f": 700})  # wants 100
    assert sizes(out) == [2, 4, 8, 16, 32]


def test_scale_up_rate_applies_to_the_target_not_the_lagging_pool(clock: FakeClock) -> None:
    scaler = steady(clock, max_scale_up_rate=2.0)
    out = run(scaler, clock, 6, {"f": 700}, follow=False)
    assert sizes(out) == [2, 4, 8]


# --- bounds and scale to zero


def test_min_size_is_kept_without_load(clock: FakeClock) -> None:
    scaler = configured(clock, min_size=2)
    out = run(scaler, clock, 120, {"f": 0})
    assert out == [ScaleTo("f", 2, "min size 2")]


def test_max_size_caps_the_pool(clock: FakeClock) -> None:
    scaler = configured(clock, max_size=3)
    run(scaler, clock, 60, {"f": 700})
    assert scaler.pools["f"].target == 3


def test_scale_to_zero_after_the_grace_period_and_not_before(clock: FakeClock) -> None:
    scaler = steady(clock)
    last_busy = clock()
    out = run(scaler, clock, 28, {"f": 0})
    assert scaler.pools["f"].target == 1 and sizes(out) == []
    out = run(scaler, clock, TICK, {"f": 0})
    assert clock() - last_busy == 30
    assert out == [ScaleTo("f", 0, "scale to zero: no calls for 30 s")]


def test_queued_calls_count_as_busy(clock: FakeClock) -> None:
    scaler = steady(clock)
    for _ in range(30):
        clock.advance(TICK)
        scaler.handle(Observed("f", 0, 1), clock())
        assert scaler.handle(Tick(), clock()) == []


def test_no_scale_to_zero_with_a_min_size(clock: FakeClock) -> None:
    scaler = steady(clock, min_size=1)
    run(scaler, clock, 300, {"f": 0})
    assert scaler.pools["f"].target == 1


def test_a_call_wakes_a_pool_at_zero(clock: FakeClock) -> None:
    scaler = steady(clock)
    run(scaler, clock, 30, {"f": 0})
    assert scaler.pools["f"].target == 0
    assert sizes(run(scaler, clock, TICK, {"f": 1})) == [1]


def test_configure_takes_effect_on_the_next_tick(clock: FakeClock) -> None:
    scaler = steady(clock, calls=70)
    assert scaler.handle(Configure("f", 0, 4, 10.0), clock()) == []
    assert sizes(run(scaler, clock, TICK, {"f": 70})) == [4]


def test_invalid_limits_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        Autoscaler().handle(Configure("f", 3, 2, 10.0), clock())


limits = st.tuples(st.integers(0, 5), st.integers(0, 30), st.sampled_from([1.0, 10.0, 100.0]))
steps = st.lists(
    st.tuples(
        st.sampled_from([0.5, 2.0, 7.0, 40.0]),
        st.integers(0, 500),
        st.integers(0, 500),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(st.tuples(limits, limits), steps)
def test_targets_stay_within_bounds(
    both: tuple[tuple[int, int, float], ...],
    timeline: list[tuple[float, int, int, bool]],
) -> None:
    clock = FakeClock()
    scaler = Autoscaler()
    bounds = {}
    for name, (lo, span, target) in zip("fg", both, strict=True):
        bounds[name] = (lo, lo + span)
        scaler.handle(Configure(name, lo, lo + span, target), clock())
    for advance, f_calls, g_calls, follow in timeline:
        clock.advance(advance)
        scaler.handle(Observed("f", f_calls, 0), clock())
        scaler.handle(Observed("g", 0, g_calls), clock())
        before = {n: p.target for n, p in scaler.pools.items()}
        out = scaler.handle(Tick(), clock())
        for instruction in out:
            assert instruction.size != before[instruction.function]
            if follow:
                scaler.handle(PoolChanged(instruction.function, instruction.size, 0), clock())
        for name, (lo, hi) in bounds.items():
            assert lo <= scaler.pools[name].target <= hi


# --- history


def test_decisions_keep_their_cause_and_stimulus(clock: FakeClock) -> None:
    scaler = configured(clock)
    clock.advance(TICK)
    scaler.handle(Observed("f", 14, 0), clock())
    scaler.handle(Tick(stimulus_id="tick-7"), clock())
    decision = scaler.history[-1]
    assert (decision.function, decision.size, decision.stimulus_id) == ("f", 2, "tick-7")
    assert decision.at == clock()
    assert "panic window" in decision.reason


def test_history_is_bounded(clock: FakeClock) -> None:
    scaler = configured(clock)
    for calls in [0, 700] * 400:
        run(scaler, clock, 40, {"f": calls})
    assert len(scaler.history) == scaler.history.maxlen


# --- admission


def test_calls_within_capacity_are_admitted() -> None:
    assert QueuePolicy().decide(in_flight=3, queued=0, capacity=4) == Admit()


def test_calls_beyond_capacity_queue_up_to_the_bound_then_are_rejected() -> None:
    policy = QueuePolicy(max_queued=2)
    assert policy.decide(in_flight=4, queued=0, capacity=4) == Enqueue(1)
    assert policy.decide(in_flight=4, queued=1, capacity=4) == Enqueue(2)
    rejected = policy.decide(in_flight=4, queued=2, capacity=4)
    assert isinstance(rejected, Reject)
    assert rejected.reason.startswith("overloaded")


def test_a_new_call_does_not_jump_the_queue() -> None:
    assert QueuePolicy().decide(in_flight=1, queued=3, capacity=4) == Enqueue(4)


def test_a_pool_at_zero_queues_every_call() -> None:
    policy = QueuePolicy(max_queued=1)
    assert policy.decide(0, 0, QueuePolicy.capacity(0, 10.0)) == Enqueue(1)
    assert QueuePolicy.capacity(3, 2.5) == 7
