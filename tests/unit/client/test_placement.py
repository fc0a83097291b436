"""The caller's placement of calls, driven with a fake clock: no sockets, no processes."""

from __future__ import annotations

import itertools

import pytest

from stratus.client.placement import (
    BUDGET,
    ExecutorLost,
    Forget,
    Hold,
    Overloaded,
    Placement,
    PoolsChanged,
    Send,
    SendDag,
    SendDemand,
    Settled,
    StartFailed,
    Submit,
    SubmitDag,
    Tick,
    Unplaceable,
)
from stratus.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pools(p: Placement, clock: FakeClock, **pools: list[str]) -> list[object]:
    live = frozenset(e for pool in pools.values() for e in pool)
    return list(p.handle(PoolsChanged(live, pools), clock()))


def sends(instructions: list[object]) -> list[tuple[int, str]]:
    return [(i.rid, i.executor_id) for i in instructions if isinstance(i, Send)]


_teaching = itertools.count(10_000)


def measured(p: Placement, clock: FakeClock, function: str, seconds: float) -> None:
    """Teach ``p`` that a call of ``function`` takes ``seconds`` (one call, one reply)."""
    rid = next(_teaching)
    assert sends(p.handle(Submit(rid, function), clock())), "needs an idle executor"
    clock.advance(seconds)
    p.handle(Settled(rid, 1), clock())


def test_a_warm_call_is_one_send_to_the_least_loaded_executor(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    assert p.handle(Submit(1, "f"), clock()) == [Send(1, 1, "e1")]
    assert p.handle(Submit(2, "f"), clock()) == [Send(2, 1, "e2")]
    assert p.in_flight("e1") == p.in_flight("e2") == 1


def test_unmeasured_calls_go_one_per_executor_and_the_rest_wait_in_order(
    clock: FakeClock,
) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    assert sends(p.handle(Submit(1, "f"), clock())) == [(1, "e1")]
    second = p.handle(Submit(2, "f"), clock())
    assert second == [Hold(2, 1, cold=False), SendDemand("f", 1)]
    assert p.handle(Submit(3, "f"), clock()) == [Hold(3, 1, cold=False)]  # Demand throttled
    assert p.held("f") == 2
    clock.advance(1.0)  # a slow call: it stays one at a time
    assert sends(p.handle(Settled(1, 1), clock())) == [(2, "e1")]
    clock.advance(1.0)
    assert sends(p.handle(Settled(2, 1), clock())) == [(3, "e1")]
    assert p.held("f") == 0


def test_held_calls_go_to_the_executors_a_growing_pool_brings(clock: FakeClock) -> None:
    """Issue #11.2: four blocking calls on a pool of one that grows to two."""
    p = Placement()
    pools(p, clock, f=["e1"])
    out = [i for rid in range(1, 5) for i in p.handle(Submit(rid, "f"), clock())]
    assert sends(out) == [(1, "e1")]
    assert SendDemand("f", 1) in out
    clock.advance(0.02)  # the coordinator started an executor for the Demand
    assert sends(pools(p, clock, f=["e1", "e2"])) == [(2, "e2")]
    clock.advance(1.0)
    assert sends(p.handle(Settled(1, 1), clock())) == [(3, "e1")]
    assert sends(p.handle(Settled(2, 1), clock())) == [(4, "e2")]


def test_short_calls_are_pipelined_within_the_budget(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    measured(p, clock, "f", 0.0001)  # 100 us a call: 200 fit in the 20 ms budget
    depth = int(BUDGET / 0.0001)
    out = [i for rid in range(depth + 1) for i in p.handle(Submit(rid, "f"), clock())]
    assert len(sends(out)) == depth
    assert p.held("f") == 1


def test_the_depth_never_exceeds_the_functions_concurrency(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    measured(p, clock, "f", 0.0)
    out = [i for rid in range(5) for i in p.handle(Submit(rid, "f", concurrency=3), clock())]
    assert len(sends(out)) == 3


def test_no_call_is_queued_behind_a_call_running_longer_than_the_budget(
    clock: FakeClock,
) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    measured(p, clock, "f", 0.0001)
    assert sends(p.handle(Submit(1, "f"), clock()))
    clock.advance(2 * BUDGET)  # this one runs long
    assert p.handle(Submit(2, "f"), clock())[0] == Hold(2, 1, cold=False)


def test_a_call_held_too_long_goes_to_the_least_loaded_executor_anyway(
    clock: FakeClock,
) -> None:
    """A held call must not wait for ever on an executor whose running call waits for it
    (ctx.recv): past ``overflow_after`` the pool is taken as full."""
    p = Placement(overflow_after=0.5)
    pools(p, clock, f=["e1", "e2"])
    for rid in (1, 2):
        p.handle(Submit(rid, "f"), clock())
    p.handle(Submit(3, "f"), clock())
    p.handle(Submit(4, "f", concurrency=2), clock())
    assert p.held("f") == 2
    clock.advance(0.3)
    assert not sends(p.handle(Tick(), clock()))
    clock.advance(0.2)
    assert p.wake_at <= clock()
    assert sends(p.handle(Tick(), clock())) == [(3, "e1"), (4, "e2")]
    assert "call 3 of f held 0.5 s: sent to e1 with 1 in flight" in p.history[-2]


def test_overflow_waits_longer_while_the_pool_grows(clock: FakeClock) -> None:
    p = Placement(overflow_after=0.5)
    pools(p, clock, f=["e1"])
    for rid in (1, 2, 3):
        p.handle(Submit(rid, "f"), clock())
    clock.advance(0.4)
    assert sends(pools(p, clock, f=["e1", "e3"])) == [(2, "e3")]
    clock.advance(0.2)  # rid 3 waited 0.6 s, but the pool grew 0.2 s ago
    assert not sends(p.handle(Tick(), clock()))
    clock.advance(0.3)
    assert sends(p.handle(Tick(), clock())) == [(3, "e1")]


def test_overflow_stays_within_concurrency(clock: FakeClock) -> None:
    p = Placement(overflow_after=0.5)
    pools(p, clock, f=["e1"])
    p.handle(Submit(1, "f", concurrency=1), clock())
    p.handle(Submit(2, "f", concurrency=1), clock())
    clock.advance(1.0)
    assert not sends(p.handle(Tick(), clock()))
    assert p.held("f") == 1


def test_past_max_queued_a_call_is_overloaded(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    p.handle(Submit(1, "f", max_queued=1), clock())
    p.handle(Submit(2, "f", max_queued=1), clock())
    [rejected] = p.handle(Submit(3, "f", max_queued=1), clock())
    assert isinstance(rejected, Overloaded) and rejected.rid == 3
    assert "max_queued=1" in rejected.reason
    assert not p.knows(3)


def test_demand_is_repeated_on_ticks_while_calls_wait(clock: FakeClock) -> None:
    p = Placement(demand_every=0.05)
    out = p.handle(Submit(1, "f"), clock())  # scaled to zero: no executor at all
    assert out == [Hold(1, 1, cold=True), SendDemand("f", 1)]
    p.handle(Submit(2, "f"), clock())
    assert p.wake_at == pytest.approx(clock() + 0.05)
    clock.advance(0.05)
    assert p.handle(Tick(), clock()) == [SendDemand("f", 2)]
    clock.advance(0.01)
    assert p.handle(Tick(), clock()) == []  # not due: nothing, and no work
    assert sends(pools(p, clock, f=["e1"])) == [(1, "e1")]


def test_nothing_waits_nothing_wakes(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    p.handle(Submit(1, "f"), clock())
    p.handle(Submit(2, "f"), clock())
    p.handle(Settled(1, 1), clock())
    clock.advance(1.0)
    p.handle(Tick(), clock())
    assert not p.waiting() and p.wake_at == float("inf")


def test_a_call_prefers_the_executor_that_caches_its_refs(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    measured(p, clock, "f", 0.0001)
    p.handle(Submit(1, "f", refs=("k",)), clock())
    home = p.ref_homes["k"]
    p.handle(Submit(2, "f"), clock())  # the other executor is now as busy
    p.handle(Submit(3, "f"), clock())
    assert sends(p.handle(Submit(4, "f", refs=("k",)), clock())) == [(4, home)]


def test_executors_that_failed_the_call_are_taken_last(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    assert sends(p.handle(Submit(1, "f", avoid=frozenset({"e1"})), clock())) == [(1, "e2")]
    # e2 is busy: the avoided e1 is idle, and better than waiting.
    assert sends(p.handle(Submit(2, "f", avoid=frozenset({"e1"})), clock())) == [(2, "e1")]


def test_a_lost_executor_takes_no_more_calls(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    p.handle(Submit(1, "f"), clock())
    p.handle(ExecutorLost("e1"), clock())
    assert p.pool("f") == ("e2",)
    assert p.in_flight("e1") == 0
    assert sends(p.handle(Submit(2, "f"), clock())) == [(2, "e2")]


def test_a_push_without_an_executor_loses_it(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    pools(p, clock, f=["e2"])
    assert p.executors == {"e2"} and p.pool("f") == ("e2",)


def test_a_resolved_reply_adds_pools_and_keeps_the_others(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    p.handle(PoolsChanged(frozenset({"e2"}), {"g": ["e2"]}, complete=False), clock())
    assert p.pool("f") == ("e1",) and p.pool("g") == ("e2",)


def test_a_held_call_sent_again_keeps_its_place(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    for rid in (1, 2, 3):
        p.handle(Submit(rid, "f"), clock())
    # rid 2 timed out while held: its invocation sends attempt 2
    assert p.handle(Submit(2, "f", attempt=2), clock()) == [Hold(2, 2, cold=False)]
    clock.advance(1.0)
    assert p.handle(Settled(1, 1), clock()) == [Send(2, 2, "e1")]


def test_a_forgotten_call_leaves_the_line(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1"])
    for rid in (1, 2, 3):
        p.handle(Submit(rid, "f"), clock())
    p.handle(Forget(2), clock())
    assert p.held("f") == 1
    assert sends(p.handle(Settled(1, 1), clock())) == [(3, "e1")]


def test_an_abandoned_attempt_counts_until_it_settles(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    p.handle(Submit(1, "f"), clock())  # to e1; then its deadline passes
    assert sends(p.handle(Submit(1, "f", attempt=2, avoid=frozenset({"e1"})), clock())) == [
        (1, "e2")
    ]
    assert p.in_flight("e1") == 1  # the executor may still be running attempt 1
    p.handle(Settled(1, 1), clock())  # its late reply
    assert p.in_flight("e1") == 0 and p.in_flight("e2") == 1
    p.handle(Settled(1, 2), clock())
    assert p.in_flight("e2") == 0 and not p.knows(1)


def test_forget_releases_what_an_abandoned_attempt_held(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    p.handle(Submit(1, "f"), clock())
    p.handle(Submit(1, "f", attempt=2), clock())
    p.handle(Forget(1), clock())  # retries spent: the invocation failed
    assert p.in_flight("e1") == p.in_flight("e2") == 0


def test_placing_the_same_attempt_again_moves_its_count(clock: FakeClock) -> None:
    """Sending failed (the executor could not be reached): nothing went out."""
    p = Placement()
    pools(p, clock, f=["e1", "e2"])
    p.handle(Submit(1, "f"), clock())
    p.handle(ExecutorLost("e1"), clock())
    assert sends(p.handle(Submit(1, "f"), clock())) == [(1, "e2")]
    p.handle(Settled(1, 1), clock())
    assert p.in_flight("e2") == 0 and not p.knows(1)


def test_a_dag_step_follows_its_upstream_when_it_can(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, incr=["e1", "e2"], square=["e2"])
    steps = (("incr", -1), ("square", 0))
    assert p.handle(SubmitDag(1, steps), clock()) == [SendDag(1, 1, ("e1", "e2"))]
    assert p.handle(SubmitDag(2, steps), clock()) == [SendDag(2, 1, ("e1", "e2"))]
    assert p.in_flight("e1") == 2 and p.in_flight("e2") == 2  # every step counts
    p.handle(Settled(1, 1), clock())
    assert p.in_flight("e1") == 1 and p.in_flight("e2") == 1


def test_a_dag_with_a_step_scaled_to_zero_is_parked_until_the_push(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, incr=["e1"])
    steps = (("incr", -1), ("square", 0))
    out = p.handle(SubmitDag(1, steps), clock())
    assert out == [SendDemand("square", 1), Hold(1, 1, cold=True)]
    assert p.waiting()
    assert pools(p, clock, incr=["e1"], square=["e1"]) == [SendDag(1, 1, ("e1", "e1"))]
    assert not p.waiting()


def test_nested_calls_are_never_held(clock: FakeClock) -> None:
    """An executor's calls are nested in running functions: holding one could wait for
    the calls that wait for it."""
    p = Placement(self_id="e1", nested=True)
    pools(p, clock, f=["e1", "e2"])
    assert sends(p.handle(Submit(1, "f"), clock())) == [(1, "e2")]  # e1 runs the caller
    assert sends(p.handle(Submit(2, "f"), clock())) == [(2, "e1")]
    assert sends(p.handle(Submit(3, "f"), clock())) == [(3, "e2")]


def test_nested_calls_of_a_one_at_a_time_function_go_out_past_its_room(
    clock: FakeClock,
) -> None:
    """``fib`` calling ``fib`` (concurrency 1) from two executors: each has its one call
    in flight on the other, so no executor has room; a held call would wait for ever
    for calls that wait for it. It goes to the least loaded one, to run re-entrantly."""
    p = Placement(self_id="e1", nested=True)
    pools(p, clock, fib=["e1", "e2"])
    assert sends(p.handle(Submit(1, "fib", concurrency=1), clock())) == [(1, "e2")]
    assert sends(p.handle(Submit(2, "fib", concurrency=1), clock())) == [(2, "e1")]
    assert sends(p.handle(Submit(3, "fib", concurrency=1), clock())) == [(3, "e2")]
    assert not p.waiting()


def test_an_executor_alone_in_a_pool_sends_elsewhere_or_to_itself(clock: FakeClock) -> None:
    p = Placement(self_id="e1", nested=True)
    pools(p, clock, f=["e1"], g=["e2"])
    assert sends(p.handle(Submit(1, "f"), clock())) == [(1, "e2")]
    alone = Placement(self_id="e1")
    pools(alone, clock, f=["e1"])
    assert sends(alone.handle(Submit(1, "f"), clock())) == [(1, "e1")]


def test_a_start_failure_fails_the_calls_waiting_for_an_empty_pool(clock: FakeClock) -> None:
    p = Placement()
    pools(p, clock, warm=["e1"], cold=[])
    assert sends(p.handle(Submit(1, "warm"), clock())) == [(1, "e1")]
    p.handle(Submit(2, "warm"), clock())  # held behind call 1: its pool has an executor
    p.handle(Submit(3, "cold"), clock())  # held for an executor that cannot start
    p.handle(SubmitDag(4, (("cold", -1),)), clock())  # parked likewise
    assert p.handle(StartFailed(), clock()) == [Unplaceable(3, 1), Unplaceable(4, 1)]
    assert not p.knows(3) and not p.knows(4)
    assert p.knows(2) and p.held("warm") == 1  # a running executor will take it
    assert p.handle(StartFailed(), clock()) == []


def test_an_async_functions_calls_overlap_on_one_executor_up_to_its_concurrency(
    clock: FakeClock,
) -> None:
    """Its executor runs them at once: no measurement needed, a long one holds none back."""
    p = Placement()
    pools(p, clock, f=["e1"])
    submits = [Submit(rid, "f", concurrency=3, overlapping=True) for rid in range(1, 6)]
    out = [i for s in submits[:2] for i in p.handle(s, clock())]
    clock.advance(10.0)  # both still running, long past the budget
    out += [i for s in submits[2:] for i in p.handle(s, clock())]
    assert sends(out) == [(1, "e1"), (2, "e1"), (3, "e1")]
    assert p.held("f") == 2
    assert sends(p.handle(Settled(1, 1), clock())) == [(4, "e1")]
