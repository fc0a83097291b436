"""The hybrid histogram keep-alive policy, driven with a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.server.pools.keepalive import (
    Finished,
    Instruction,
    Invoked,
    KeepAlivePolicy,
    KeepWarm,
    Phase,
    PreWarm,
    Tick,
    Unload,
)
from stratus.testing import FakeClock

TICK = 2.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


def call(policy: KeepAlivePolicy, clock: FakeClock, duration: float = 1.0) -> list[Instruction]:
    """One call of ``f`` now, lasting ``duration``; what its end asked for."""
    policy.handle(Invoked("f"), clock())
    clock.advance(duration)
    return policy.handle(Finished("f"), clock())


def wait(policy: KeepAlivePolicy, clock: FakeClock, seconds: float) -> list[Instruction]:
    """Tick every 2 s (or less, for the last step) for ``seconds``."""
    out: list[Instruction] = []
    remaining = seconds
    while remaining > 0:
        step = min(TICK, remaining)
        clock.advance(step)
        remaining -= step
        out += policy.handle(Tick(), clock())
    return out


def periodic(policy: KeepAlivePolicy, clock: FakeClock, calls: int, period: float) -> None:
    """``calls`` calls of 1 s, one every ``period`` seconds, ticking in between."""
    for _ in range(calls):
        call(policy, clock)
        wait(policy, clock, period - 1)


# --- a periodic function


def test_a_periodic_function_learns_its_windows(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 11, 300.0)  # idle 299 s, ten times: the bin [240, 300) s
    windows = policy.windows("f")
    assert windows.source == "histogram of 10 idle times"
    assert windows.pre_warm == pytest.approx(240 * 0.9)
    assert windows.pre_warm + windows.keep_alive == pytest.approx(300 * 1.1)


def test_a_periodic_function_is_unloaded_between_calls_and_pre_warmed_before_the_next(
    clock: FakeClock,
) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 11, 300.0)
    end = clock() + 1
    assert call(policy, clock) == [Unload("f")]
    assert wait(policy, clock, 214) == []  # unloaded: the next call is not due yet
    assert policy.functions["f"].phase is Phase.WAITING
    assert wait(policy, clock, 2) == [PreWarm("f", end + 216), KeepWarm("f", end + 330)]
    assert wait(policy, clock, 82) == []  # warm when the call comes at end + 299
    assert policy.functions["f"].phase is Phase.WARM
    assert call(policy, clock) == [Unload("f")]  # and again


def test_a_pre_warmed_function_is_unloaded_past_its_keep_alive(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 11, 300.0)
    end = clock() + 1
    call(policy, clock)
    out = wait(policy, clock, 330)  # the call does not come
    assert out == [PreWarm("f", end + 216), KeepWarm("f", end + 330), Unload("f")]
    assert policy.functions["f"].phase is Phase.UNLOADED


def test_a_missed_pre_warm_is_dropped(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 11, 300.0)
    call(policy, clock)
    clock.advance(1000)  # no tick for a long while
    assert policy.handle(Tick(), clock()) == []
    assert policy.functions["f"].phase is Phase.UNLOADED


def test_windows_work_with_bins_of_seconds(clock: FakeClock) -> None:
    policy = KeepAlivePolicy(bin_width=1.0, hist_range=120.0)
    periodic(policy, clock, 11, 20.0)  # idle 19 s: the bin [19, 20)
    windows = policy.windows("f")
    assert windows.pre_warm == pytest.approx(19 * 0.9)
    assert windows.pre_warm + windows.keep_alive == pytest.approx(20 * 1.1)


# --- fallbacks


def test_an_unknown_function_gets_the_fixed_keep_alive() -> None:
    windows = KeepAlivePolicy().windows("nobody")
    assert (windows.pre_warm, windows.keep_alive) == (0.0, 600.0)


def test_a_thin_histogram_falls_back_to_the_fixed_keep_alive(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 9, 300.0)
    end = clock() + 1
    assert call(policy, clock) == [KeepWarm("f", end + 600)]
    assert policy.windows("f").source == "fixed keep-alive: 9 idle times < 10"
    assert wait(policy, clock, 598) == []
    assert wait(policy, clock, 2) == [Unload("f")]


def test_out_of_range_idle_times_fall_back(clock: FakeClock) -> None:
    policy = KeepAlivePolicy(bin_width=1.0, hist_range=60.0)
    periodic(policy, clock, 6, 10.0)  # five in range
    periodic(policy, clock, 8, 100.0)  # seven beyond the range, counting the gap into it
    windows = policy.windows("f")
    assert windows.source == "fixed keep-alive: 7 of 13 idle times out of range"
    assert windows.pre_warm == 0.0


def test_idle_times_spread_evenly_fall_back(clock: FakeClock) -> None:
    policy = KeepAlivePolicy(bin_width=1.0, hist_range=10.0)
    for gap in range(10):  # one idle time in each bin: CV 0
        call(policy, clock, duration=0.0)
        clock.advance(gap + 0.5)
    call(policy, clock)
    assert policy.windows("f").source.startswith("fixed keep-alive: bin counts CV 0.00")


def test_a_concentrated_histogram_passes_the_cv_rule(clock: FakeClock) -> None:
    policy = KeepAlivePolicy(bin_width=1.0, hist_range=10.0)
    periodic(policy, clock, 11, 5.0)
    assert policy.functions["f"].histogram.coefficient_of_variation() == pytest.approx(3.0)
    assert policy.windows("f").source.startswith("histogram")


# --- calls in flight


def test_a_function_with_calls_in_flight_is_never_unloaded(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    policy.handle(Invoked("f"), clock())
    policy.handle(Invoked("f"), clock())
    assert policy.handle(Finished("f"), clock()) == []  # one still running
    assert wait(policy, clock, 7200) == []
    assert policy.functions["f"].phase is Phase.BUSY
    assert policy.handle(Finished("f"), clock()) == [KeepWarm("f", clock() + 600)]


def test_time_spent_running_is_not_idle_time(clock: FakeClock) -> None:
    policy = KeepAlivePolicy(bin_width=1.0, hist_range=60.0)
    call(policy, clock, duration=1.0)
    clock.advance(5)
    call(policy, clock, duration=30.0)
    clock.advance(7)
    policy.handle(Invoked("f"), clock())
    assert policy.functions["f"].histogram.bins[5] == 1
    assert policy.functions["f"].histogram.bins[7] == 1
    assert policy.functions["f"].histogram.samples == 2


def test_a_call_cancels_a_pending_pre_warm(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    periodic(policy, clock, 11, 300.0)
    call(policy, clock)
    wait(policy, clock, 100)
    policy.handle(Invoked("f"), clock())  # early, while unloaded: a cold start
    assert wait(policy, clock, 600) == []


def test_a_stray_finish_is_ignored(clock: FakeClock) -> None:
    assert KeepAlivePolicy().handle(Finished("f"), clock()) == []


def test_decisions_keep_their_cause_and_stimulus(clock: FakeClock) -> None:
    policy = KeepAlivePolicy()
    policy.handle(Invoked("f"), clock())
    policy.handle(Finished("f", stimulus_id="inv-42"), clock())
    note = policy.history[-1]
    assert (note.function, note.stimulus_id) == ("f", "inv-42")
    assert "fixed keep-alive" in note.what


# --- properties

gaps = st.lists(st.floats(0.0, 400.0), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(gaps)
def test_windows_cover_the_tail_of_idle_times(idle_times: list[float]) -> None:
    clock = FakeClock()
    policy = KeepAlivePolicy(bin_width=10.0, hist_range=300.0)
    for gap in idle_times:
        call(policy, clock, duration=0.0)
        clock.advance(gap)
    call(policy, clock, duration=0.0)
    windows = policy.windows("f")
    assert windows.pre_warm >= 0 and windows.keep_alive > 0
    if windows.source.startswith("histogram"):
        in_range = sorted(g for g in idle_times if g < 300.0)
        head = in_range[math.ceil(0.05 * len(in_range)) - 1]
        tail = in_range[math.ceil(0.99 * len(in_range)) - 1]
        assert windows.pre_warm <= head
        assert windows.pre_warm + windows.keep_alive >= tail * 1.1


events = st.lists(
    st.tuples(st.sampled_from(["invoke", "finish", "tick"]), st.floats(0.0, 500.0)),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events)
def test_never_unloaded_or_pre_warmed_with_calls_in_flight(
    timeline: list[tuple[str, float]],
) -> None:
    clock = FakeClock()
    policy = KeepAlivePolicy(bin_width=5.0, hist_range=300.0, min_samples=3)
    in_flight = 0
    for kind, advance in timeline:
        clock.advance(advance)
        if kind == "invoke":
            in_flight += 1
            assert policy.handle(Invoked("f"), clock()) == []
            continue
        if kind == "finish":
            out = policy.handle(Finished("f"), clock())
            in_flight = max(0, in_flight - 1)
        else:
            out = policy.handle(Tick(), clock())
        if in_flight:
            assert out == []
