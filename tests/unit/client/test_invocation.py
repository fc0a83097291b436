"""The caller-side invocation state machine, row by row of its state table."""

from __future__ import annotations

import pytest

from stratus.client.invocation import (
    DEADLINE_GRACE,
    Complete,
    Deliver,
    ExecutorDied,
    Failed,
    Invocation,
    Kill,
    Orphaned,
    Reject,
    Replied,
    Resend,
    State,
    Tick,
    Yielded,
)
from stratus.protocol.messages import ErrorInfo
from stratus.testing import FakeClock

LOST = ErrorInfo("ExecutorLost", "gone")
TIMED_OUT = ErrorInfo("InvocationTimeout", "too slow")
RAISED = ErrorInfo("RemoteError", "ZeroDivisionError: division by zero")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


def started(
    clock: FakeClock,
    *,
    timeout: float | None = 10.0,
    retries: int = 2,
    executors: frozenset[str] = frozenset({"x1"}),
) -> Invocation:
    """An invocation whose first attempt went out to ``executors``."""
    inv = Invocation("i1", "f", timeout=timeout, retries=retries)
    inv.sent(1, executors, clock())
    return inv


def fail_attempt(inv: Invocation, clock: FakeClock, executor: str) -> list:
    """Fail the current attempt with a retryable error, then send the next to ``executor``."""
    out = inv.handle(Failed(inv.attempt, LOST), clock())
    if inv.state is State.RUNNING:
        inv.sent(inv.attempt + 1, frozenset({executor}), clock())
    return out


# --- replies and failures


def test_reply_of_current_attempt_completes(clock: FakeClock) -> None:
    inv = started(clock)
    assert inv.handle(Replied(1, b"42"), clock()) == [Complete(b"42")]
    assert inv.state is State.DONE


def test_remote_error_is_rejected_without_retry(clock: FakeClock) -> None:
    inv = started(clock, retries=5)
    assert inv.handle(Failed(1, RAISED), clock()) == [Reject(RAISED)]
    assert inv.state is State.FAILED


@pytest.mark.parametrize("error", [LOST, TIMED_OUT], ids=lambda e: e.kind)
def test_retryable_failure_is_resent_avoiding_its_executor(
    clock: FakeClock, error: ErrorInfo
) -> None:
    inv = started(clock)
    assert inv.handle(Failed(1, error), clock()) == [Resend(2, frozenset({"x1"}))]
    assert inv.state is State.RUNNING


def test_retryable_failure_is_rejected_once_retries_are_spent(clock: FakeClock) -> None:
    inv = started(clock, retries=2)
    assert fail_attempt(inv, clock, "x2") == [Resend(2, frozenset({"x1"}))]
    assert fail_attempt(inv, clock, "x3") == [Resend(3, frozenset({"x1", "x2"}))]
    assert fail_attempt(inv, clock, "x4") == [Reject(LOST)]
    assert inv.state is State.FAILED


def test_zero_retries_rejects_the_first_retryable_failure(clock: FakeClock) -> None:
    inv = started(clock, retries=0)
    assert inv.handle(Failed(1, LOST), clock()) == [Reject(LOST)]


def test_each_ended_attempt_is_logged(clock: FakeClock) -> None:
    inv = started(clock, retries=1)
    fail_attempt(inv, clock, "x2")
    fail_attempt(inv, clock, "x3")
    assert inv.log == ("attempt 1: ExecutorLost: gone", "attempt 2: ExecutorLost: gone")


def test_avoid_accumulates_every_failed_executor(clock: FakeClock) -> None:
    inv = started(clock, retries=3)
    fail_attempt(inv, clock, "x2")
    fail_attempt(inv, clock, "x3")
    assert inv.avoid == {"x1", "x2"}


def test_retryable_failure_of_a_dag_avoids_every_executor_of_its_plan(clock: FakeClock) -> None:
    inv = started(clock, executors=frozenset({"x1", "x2"}))
    assert inv.handle(Failed(1, LOST), clock()) == [Resend(2, frozenset({"x1", "x2"}))]


# --- executor deaths


def test_death_of_an_executor_in_the_plan_resends_elsewhere(clock: FakeClock) -> None:
    inv = started(clock, executors=frozenset({"x1", "x2"}))
    assert inv.handle(ExecutorDied("x2"), clock()) == [Resend(2, frozenset({"x2"}))]
    assert inv.avoid == {"x2"}


def test_death_of_an_executor_outside_the_plan_is_ignored(clock: FakeClock) -> None:
    inv = started(clock)
    assert inv.handle(ExecutorDied("x9"), clock()) == []
    assert inv.avoid == set()


def test_death_with_retries_spent_rejects_with_executor_lost(clock: FakeClock) -> None:
    inv = started(clock, retries=0)
    [reject] = inv.handle(ExecutorDied("x1"), clock())
    assert isinstance(reject, Reject)
    assert reject.error.kind == "ExecutorLost"
    assert "applied" in reject.error.message  # it may have been: it says so
    assert inv.state is State.FAILED


def test_a_store_that_could_not_take_the_commit_is_retried_but_a_full_one_is_not(
    clock: FakeClock,
) -> None:
    inv = started(clock)
    stuck = ErrorInfo("StoreUnavailable", "the write lock stayed taken")
    assert inv.handle(Failed(1, stuck), clock()) == [Resend(2, frozenset({"x1"}))]
    inv = started(clock)
    full = ErrorInfo("StoreFull", "the disk is full")
    assert inv.handle(Failed(1, full), clock()) == [Reject(full)]


# --- deadlines


def test_deadline_is_the_timeout_plus_grace(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0)
    assert inv.deadline == clock() + 10.0 + DEADLINE_GRACE


def test_tick_before_the_deadline_does_nothing(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0)
    clock.advance(11)
    assert inv.handle(Tick(), clock()) == []
    assert inv.state is State.RUNNING


def test_tick_at_the_deadline_kills_and_resends(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0)
    clock.advance(10 + DEADLINE_GRACE)
    assert inv.handle(Tick(), clock()) == [Kill("x1"), Resend(2, frozenset({"x1"}))]


def test_tick_after_the_deadline_kills_every_executor_of_the_plan(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0, executors=frozenset({"x2", "x1"}))
    clock.advance(60)
    out = inv.handle(Tick(), clock())
    assert out == [Kill("x1"), Kill("x2"), Resend(2, frozenset({"x1", "x2"}))]


def test_deadline_with_retries_spent_kills_and_rejects_with_timeout(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0, retries=0)
    clock.advance(60)
    kill, reject = inv.handle(Tick(), clock())
    assert kill == Kill("x1")
    assert isinstance(reject, Reject)
    assert reject.error.kind == "InvocationTimeout"
    assert inv.state is State.FAILED


def test_resending_restarts_the_deadline(clock: FakeClock) -> None:
    inv = started(clock, timeout=10.0)
    clock.advance(5)
    fail_attempt(inv, clock, "x2")
    clock.advance(10)  # 15 s after attempt 1, 10 s after attempt 2
    assert inv.handle(Tick(), clock()) == []


def test_no_timeout_never_expires(clock: FakeClock) -> None:
    inv = started(clock, timeout=None)
    clock.advance(1e9)
    assert inv.deadline is None
    assert inv.handle(Tick(), clock()) == []


# --- stale attempts and finished invocations


@pytest.mark.parametrize(
    "event",
    [Replied(1, b"old"), Failed(1, LOST), Failed(1, RAISED)],
    ids=["replied", "failed-retryable", "failed-fatal"],
)
def test_events_of_an_older_attempt_are_ignored(clock: FakeClock, event: object) -> None:
    inv = started(clock)
    fail_attempt(inv, clock, "x2")
    assert inv.handle(event, clock()) == []  # type: ignore[arg-type]
    assert inv.state is State.RUNNING
    assert inv.attempt == 2


def test_death_of_an_executor_of_an_older_attempt_is_ignored(clock: FakeClock) -> None:
    inv = started(clock)
    fail_attempt(inv, clock, "x2")
    assert inv.handle(ExecutorDied("x1"), clock()) == []


def test_death_between_a_resend_and_the_next_send_is_ignored(clock: FakeClock) -> None:
    inv = started(clock)
    inv.handle(Failed(1, LOST), clock())  # Resend(2), not sent yet
    assert inv.handle(ExecutorDied("x1"), clock()) == []


def test_tick_between_a_resend_and_the_next_send_does_not_resend_again(
    clock: FakeClock,
) -> None:
    inv = started(clock, timeout=10.0)
    clock.advance(60)
    inv.handle(Tick(), clock())  # Kill x1, Resend(2), not sent yet
    clock.advance(1)
    assert inv.handle(Tick(), clock()) == []
    assert len(inv.log) == 1


FINAL_EVENTS = [Replied(1, b"v"), Failed(1, LOST), Failed(1, RAISED), ExecutorDied("x1"), Tick()]


@pytest.mark.parametrize("event", FINAL_EVENTS, ids=repr)
def test_nothing_happens_once_done(clock: FakeClock, event: object) -> None:
    inv = started(clock)
    inv.handle(Replied(1, b"v"), clock())
    clock.advance(60)
    assert inv.handle(event, clock()) == []  # type: ignore[arg-type]
    assert inv.state is State.DONE


@pytest.mark.parametrize("event", FINAL_EVENTS, ids=repr)
def test_nothing_happens_once_failed(clock: FakeClock, event: object) -> None:
    inv = started(clock)
    inv.handle(Failed(1, RAISED), clock())
    clock.advance(60)
    assert inv.handle(event, clock()) == []  # type: ignore[arg-type]
    assert inv.state is State.FAILED


# --- orphaned attempts (the coordinator went away with the executor)


def test_an_orphaned_attempt_is_resent_without_spending_a_retry(clock: FakeClock) -> None:
    inv = started(clock, retries=0)
    for attempt in (2, 3):  # a server that restarted twice under the same call
        assert inv.handle(Orphaned("x1"), clock()) == [Resend(attempt, frozenset())]
        assert inv.state is State.RUNNING and inv.deadline is None
        inv.sent(attempt, frozenset({"x1"}), clock())  # a new executor of the same name
    assert inv.handle(Replied(3, b"7"), clock()) == [Complete(b"7")]


def test_orphaning_another_executor_or_a_held_attempt_changes_nothing(clock: FakeClock) -> None:
    inv = started(clock)
    assert inv.handle(Orphaned("x2"), clock()) == []
    held = Invocation("i2", "f", timeout=10.0, retries=0)
    held.sent(1, frozenset(), clock())
    assert held.handle(Orphaned("x1"), clock()) == []
    assert inv.attempt == 1 and held.state is State.RUNNING


def test_streamed_items_are_delivered_once_in_order(clock: FakeClock) -> None:
    inv = started(clock)
    assert inv.handle(Yielded(1, 0), clock()) == [Deliver()]
    assert inv.handle(Yielded(1, 0), clock()) == []  # a duplicate
    assert inv.handle(Yielded(1, 2), clock()) == []  # out of order: not the next one
    assert inv.handle(Yielded(0, 1), clock()) == []  # an older attempt's
    assert inv.handle(Yielded(1, 1), clock()) == [Deliver()]
    assert inv.delivered == 2
    assert inv.handle(Replied(1, b"2"), clock()) == [Complete(b"2")]


def test_a_stream_is_retried_before_its_first_item_but_not_after(clock: FakeClock) -> None:
    fresh = started(clock)
    assert isinstance(fresh.handle(ExecutorDied("x1"), clock())[0], Resend)

    inv = started(clock)
    inv.handle(Yielded(1, 0), clock())
    [reject] = inv.handle(ExecutorDied("x1"), clock())
    assert isinstance(reject, Reject) and reject.error.kind == "StreamInterrupted"
    assert "after 1 items" in reject.error.message
    assert inv.state is State.FAILED


def test_a_stream_whose_function_raised_keeps_the_functions_error(clock: FakeClock) -> None:
    inv = started(clock)
    inv.handle(Yielded(1, 0), clock())
    retryable = ErrorInfo("RemoteError", "OSError: flaky", retry=True)  # retry_on names it
    assert inv.handle(Failed(1, retryable), clock()) == [Reject(retryable)]
