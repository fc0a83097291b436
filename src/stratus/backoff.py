"""The one backoff of the platform: how long to wait before trying again.

Theory of operation: whoever lost a race (a conflicted commit, a merge that lost its
optimistic guard, a lock held by another process) waits a pause drawn at random ("full
jitter": uniform between 0 and a bound that doubles from ``first`` up to ``cap``), so
that those who collided once do not collide again in lockstep, then tries again. It gives
up once ``deadline`` seconds have passed since the first try (when it has a deadline;
callers without one bound the number of tries themselves).

    tries lost   elapsed              answer
    ----------   ------------------   --------------------------------------------
    n >= 1       < deadline (or none) pause uniform(0, min(cap, first * 2**(n-1))),
                                      cut to end at the deadline; then try again
    n >= 1       >= deadline          None: give up

No I/O and no clock here: the caller says how long it has been and sleeps itself (or
calls :meth:`Backoff.sleep`). The platform's users, each with its own numbers:

    ``CONFLICT``         an invocation (or ``app.fs.run``, ``Volume.run``) re-run after a
                         conflicted commit
    ``MERGE``            a Redis merge that lost its guard to another writer
    ``LOCK``             a SQLite writer waiting for another process's write lock
    ``STORE_RETRY``      an executor starting while its store is unreachable (Redis down)
    FUSE requests        ``fs.fuse.DEFAULT_BACKOFF``, with a deadline of 1.5 s
"""

from __future__ import annotations

import random
import time

import msgspec

_MAX_DOUBLINGS = 30  # the bound stops growing long before; keeps 2**n small


class Backoff(msgspec.Struct, frozen=True):
    """Randomized exponential backoff, optionally with a deadline (module docstring).

    >>> Backoff().pause(1, 0.0, random.Random(0)) <= 0.002
    True
    """

    first: float = 0.002  # seconds: the bound of the first pause
    cap: float = 0.1  # seconds: the bound stops doubling here
    deadline: float | None = 1.5  # seconds since the first try: none starts after this

    def bound(self, lost: int) -> float:
        """The largest pause after ``lost`` lost tries."""
        doublings = min(max(lost - 1, 0), _MAX_DOUBLINGS)
        return min(self.cap, self.first * float(2**doublings))

    def pause(self, lost: int, elapsed: float, rng: random.Random | None = None) -> float | None:
        """The pause before the next try after ``lost`` lost tries that took ``elapsed``
        seconds in all, or None when it is time to give up."""
        draw = (rng or random).uniform(0.0, self.bound(lost))
        if self.deadline is None:
            return draw
        if elapsed >= self.deadline:
            return None
        return min(draw, self.deadline - elapsed)

    def sleep(self, lost: int, elapsed: float = 0.0) -> bool:
        """Sleep the :meth:`pause`; False (at once) when it is time to give up."""
        pause = self.pause(lost, elapsed)
        if pause is None:
            return False
        time.sleep(pause)
        return True


CONFLICT = Backoff(first=0.0005, cap=0.02, deadline=None)
"""Before re-running a conflicted invocation or file-system transaction: two executors
re-running at once would otherwise collide again and again."""

MERGE = Backoff(first=100e-6, cap=6.4e-3, deadline=None)
"""Before re-reading a key whose optimistic merge lost twice (Redis): without it, six
processes merging into one key as fast as they could starved one another."""

LOCK = Backoff(first=50e-6, cap=2e-3, deadline=None)
"""Between polls of a store's write lock held by another process: short, because a write
holds it for milliseconds; the caller's lock deadline bounds the whole wait."""


STORE_RETRY = Backoff(first=0.05, cap=1.0, deadline=None)
"""Between an executor's tries to open an unreachable store (Redis down): it waits for the
store rather than exiting to be replaced in a crash loop."""
