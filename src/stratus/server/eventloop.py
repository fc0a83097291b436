"""An asyncio event loop that the executor's reactor steps: where ``async def`` run.

Theory of operation: the executor's own loop is the reactor (``transport/reactor.py``),
tuned for sync calls; an asyncio loop that ran by itself would need a thread of its
own, and the executor's caches and transactions are not shared between threads. So the
asyncio loop never runs on its own: the reactor runs one pass of it (``step``: its
ready callbacks, its due timers, its I/O, then it stops) whenever

- its selector's file descriptor is readable (I/O of the tasks, or a wake-up from
  ``call_soon_threadsafe``, e.g. a nested call's ``Future`` that completed),
- a callback was scheduled (``call_soon``: a task's next step), or a timer is due
  (``call_at``: ``asyncio.sleep``): the loop tells the reactor through ``_wake``.

A sync call never pays for the loop: without tasks nothing is scheduled. A task that
blocks (a sync ``Future.result()`` inside an ``async def``) re-enters the reactor,
which then does not step the loop again until that pass ends (``stepping``): tasks
should ``await`` instead.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, TypeVar, TypeVarTuple

from stratus.transport.reactor import Reactor

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Loop(asyncio.SelectorEventLoop):
    """A selector loop that reports every callback and timer it schedules."""

    def __init__(self, wake: Callable[[float], None]) -> None:
        super().__init__()
        self._report = wake

    def call_soon(
        self,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        self._report(0.0)
        return handle

    def call_at(
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self._report(when)
        return handle


class SteppedLoop:
    """The executor's asyncio loop, run in passes from ``reactor``; see the module
    docstring."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self.loop = _Loop(self._wake)
        self.stepping = False
        self._due = False  # a pass is asked of the reactor's next round
        self._timers: list[float] = []  # loop.time() of timers asked for (some cancelled)
        self._armed = math.inf  # the earliest time a reactor timer will step us
        self._fd = self.loop._selector.fileno()  # type: ignore[attr-defined]
        self._watching = False
        self._skipped = False  # a pass was asked for while one ran: run one after it
        self._watch()

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start ``coroutine`` as a task; it runs at the reactor's next round."""
        return self.loop.create_task(coroutine)

    def step(self) -> None:
        """Run one pass of the loop, unless one is running (re-entered from a task that
        blocks): then the fd stays unwatched until that pass ends, or the reactor would
        spin on it."""
        self._due = False
        if self.stepping or asyncio.events._get_running_loop() is not None:
            self._unwatch()
            self._skipped = True
            return
        self.stepping = True
        try:
            self.loop.stop()  # before run_forever: one pass (I/O, ready callbacks), then stop
            self.loop.run_forever()
        finally:
            self.stepping = False
            self._watch()
        if self._skipped:
            self._skipped = False
            self._wake(0.0)
        now = self.loop.time()
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
        if self._timers and self._timers[0] < self._armed:  # maybe cancelled: harmless
            self._arm(self._timers[0], now)

    def close(self) -> None:
        self._unwatch()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.close()

    def _wake(self, when: float) -> None:
        now = self.loop.time()
        if when <= now:
            if not self._due:
                self._due = True
                # Not run by the reactor's current round of timers (it began before):
                # a task that yields without end cannot starve the sockets.
                self._reactor.call_later(0.0, self.step)
            return
        heapq.heappush(self._timers, when)
        if when < self._armed:
            self._arm(when, now)

    def _arm(self, when: float, now: float) -> None:
        self._armed = when
        self._reactor.call_later(when - now, self._on_timer)

    def _on_timer(self) -> None:
        self._armed = math.inf
        self.step()

    def _watch(self) -> None:
        if not self._watching:
            self._reactor.watch_readable(self._fd, self.step)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._reactor.unwatch(self._fd)
            self._watching = False
