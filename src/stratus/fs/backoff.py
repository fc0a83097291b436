"""How long a FUSE request waits before re-running a transaction that conflicted.

Theory of operation: a request whose commit conflicts is run again, after a pause drawn
at random ("full jitter": uniform between 0 and a bound that doubles from ``first`` up to
``cap``), so requests that collided once do not collide again in lockstep and a mount
does not hammer a hot file. It gives up (the request answers ``EIO``) only once
``deadline`` seconds have passed since its first run: a program on the mount waits a
little under contention instead of failing at once, and still fails in bounded time
when the volume stays busy.

    conflicted runs   elapsed              answer
    ---------------   ------------------   --------------------------------------------
    n >= 1            < deadline           pause uniform(0, min(cap, first * 2**(n-1))),
                                           cut to end at the deadline; then run again
    n >= 1            >= deadline          None: give up (ConflictError, then EIO)

No I/O and no clock here: the caller says how long it has been and sleeps itself.
Functions do not use this: an invocation is re-run at once, a bounded number of times
(``SERIALIZABLE_ATTEMPTS``), by its executor.
"""

from __future__ import annotations

import random

import msgspec

_MAX_DOUBLINGS = 30  # the bound stops growing long before; keeps 2**n small


class Backoff(msgspec.Struct, frozen=True):
    """Randomized exponential backoff with a deadline (see the module docstring).

    >>> Backoff().pause(1, 0.0, random.Random(0)) <= 0.002
    True
    """

    first: float = 0.002  # seconds: the bound of the first pause
    cap: float = 0.1  # seconds: the bound stops doubling here
    deadline: float = 1.5  # seconds since the first run: no run starts after this

    def pause(self, conflicts: int, elapsed: float, rng: random.Random) -> float | None:
        """The pause before the next run after ``conflicts`` conflicted runs that took
        ``elapsed`` seconds in all, or None when it is time to give up."""
        if elapsed >= self.deadline:
            return None
        bound = min(self.cap, self.first * 2 ** min(max(conflicts - 1, 0), _MAX_DOUBLINGS))
        return min(rng.uniform(0.0, bound), self.deadline - elapsed)
