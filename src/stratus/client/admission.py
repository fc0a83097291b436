"""Admission of one call at the door of its function's warm pool. No I/O.

A caller applies it before sending a call (``stratus.client.placement`` decides what
room the pool has): with room the call goes straight to an executor; without, it waits
in the caller, up to ``max_queued``; past that it is turned away (``Overloaded``), never
dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Admit:
    """Run the call now."""


@dataclass(frozen=True)
class Enqueue:
    """Hold the call; it is ``position``-th in line (1 is next)."""

    position: int


@dataclass(frozen=True)
class Reject:
    """Turn the call away: the function is overloaded."""

    reason: str


Admission = Admit | Enqueue | Reject


@dataclass(frozen=True)
class QueuePolicy:
    """Admission of one call: run within capacity, else queue up to ``max_queued``.

    >>> policy = QueuePolicy(max_queued=1)
    >>> policy.decide(in_flight=2, queued=0, capacity=2)
    Enqueue(position=1)
    >>> policy.decide(in_flight=2, queued=1, capacity=2)
    Reject(reason='overloaded: 2 in flight, 1 queued')
    """

    max_queued: int = 100

    def decide(self, in_flight: int, queued: int, capacity: int) -> Admission:
        """``capacity`` is the calls the ready pool can run at once."""
        # Calls already waiting go first: a new call only runs now if nobody is queued.
        if queued == 0 and in_flight < capacity:
            return Admit()
        return self.hold_or_reject(queued, in_flight)

    def hold_or_reject(self, queued: int, in_flight: int | None = None) -> Enqueue | Reject:
        """The pool has no room now: hold the call behind ``queued`` others, or turn it
        away past ``max_queued``.

        >>> QueuePolicy(max_queued=1).hold_or_reject(1)
        Reject(reason='overloaded: 1 queued')
        """
        if queued < self.max_queued:
            return Enqueue(queued + 1)
        busy = f"{in_flight} in flight, " if in_flight is not None else ""
        return Reject(f"overloaded: {busy}{queued} queued")

    @staticmethod
    def capacity(ready: int, target_concurrency: float) -> int:
        """Calls a pool of ``ready`` executors runs at once at its target concurrency."""
        return math.floor(ready * target_concurrency)
