"""A clock that only moves when told to, for driving state machines in tests."""

from __future__ import annotations


class FakeClock:
    """Feed ``clock()`` as ``now`` to a state machine's ``handle``; ``advance`` moves it.

    >>> clock = FakeClock()
    >>> clock.advance(1.5)
    >>> clock()
    1.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
