"""The executor's call stack: its nesting limit and its lazily armed timeout alarm."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stratus.protocol import messages as m
from stratus.server.callstack import MAX_NESTED, Active, CallStack


@pytest.fixture(autouse=True)
def no_alarm_left() -> Iterator[None]:
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)  # SIGALRM's default action would end pytest


def _active(deadline: float | None) -> Active:
    metered: Any = None  # the stack never reads it
    return Active(m.Call(1, "c.1", "f", 1, b"", 1, 300.0, "c"), deadline, None, metered)


def test_the_alarm_is_armed_for_the_soonest_deadline_only() -> None:
    stack, now = CallStack(), time.monotonic()
    stack.push(_active(now + 300))
    first = signal.getitimer(signal.ITIMER_REAL)[0]
    stack.push(_active(now + 600))  # later: left alone
    assert signal.getitimer(signal.ITIMER_REAL)[0] <= first
    stack.push(_active(now + 100))  # sooner: armed again
    assert signal.getitimer(signal.ITIMER_REAL)[0] <= 100


def test_an_alarm_for_a_finished_call_rearms_for_what_still_runs() -> None:
    stack, now = CallStack(), time.monotonic()
    stack.push(_active(now + 300))
    stack.push(_active(now + 1))
    stack.pop()  # the soonest finished; its timer stays
    assert stack.expired(now + 2) == []  # it rang for nothing
    assert 250 < signal.getitimer(signal.ITIMER_REAL)[0] <= 300
    late = stack.expired(now + 301)
    assert [a.deadline for a in late] == [now + 300]


def test_the_stack_is_full_at_max_nested() -> None:
    stack = CallStack()
    for _ in range(MAX_NESTED - 1):
        stack.push(_active(None))
    assert not stack.full
    stack.push(_active(None))
    assert stack.full and len(stack) == MAX_NESTED
