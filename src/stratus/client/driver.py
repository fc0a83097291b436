"""Who polls a client's sockets: the thread that waits, or else a background pump.

Theory of operation: exactly one thread at a time polls (``polling()``, a re-entrant lock:
an executor's function waiting on a nested call polls again from inside the dispatch of
the loop that runs it). A thread waiting in ``Future.result()`` takes that right itself,
so a synchronous call involves no hand-off between threads. Waiting that does not poll
(callbacks, ``await``, ``concurrent.futures.wait``) *watches* the future, and a thread
that finds another one polling becomes a *blocked waiter*; either starts the background
pump, which polls while anyone is watched or blocked. When a polling thread leaves with
others still waiting, it hands over to the pump.

A *lazy* watch (calls held in the client, which a reply or a push releases) only needs
someone to poll eventually: the pump then polls once, without waiting, whenever no thread
is waiting and none has polled for ``LAZY`` s. So a thread busy in ``Future.result()``
never finds the pump polling and hands over to it for each future, as an eager watch
would make it.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from stratus.transport.reactor import Reactor

LAZY = 0.01  # s without a poll after which the pump polls for lazily watched futures
_TAKE_OVER = 0.001  # s a waiting thread waits for the right to poll before it hands over


class Driver:
    """Drives one reactor for a client. ``tick`` runs under the client's state lock
    before each poll and returns the next deadline to wake for (or None); ``closed``
    says when to stop."""

    def __init__(
        self,
        reactor: Reactor,
        lock: threading.RLock,
        *,
        tick: Callable[[], float | None],
        closed: Callable[[], bool],
        owns_reactor: bool,
        name: str,
    ) -> None:
        self._reactor = reactor
        self._lock = lock
        self._tick = tick
        self._closed = closed
        self._owns_reactor = owns_reactor
        self._name = name
        self._poll_lock = threading.RLock()
        self.condition = threading.Condition()  # shared by all the client's futures
        self._watched: set[Any] = set()
        self._lazy: set[Any] = set()
        self._polled_at = 0.0  # time.monotonic() of the last round of I/O
        self._in_wait = 0  # threads in wait(): they poll, or have the pump poll for them
        self._in_wait_lock = threading.Lock()
        self._blocked_waiters = 0
        # Own lock, not the client's: futures signal it while holding their condition.
        self._pump_wanted = threading.Condition()
        self._pump_thread: threading.Thread | None = None

    @property
    def polled_at(self) -> float:
        """``time.monotonic()`` of the last round of I/O."""
        return self._polled_at

    def polling(self) -> AbstractContextManager[Any]:
        """Hold the right to poll, for a server that drives the loop itself."""
        return self._poll_lock

    def pump_once(self, timeout: float | None) -> None:
        """One round of I/O; the caller holds ``polling()`` but not the client's lock."""
        with self._lock:
            if self._closed() and self._owns_reactor:
                return
            self._polled_at = time.monotonic()
            soonest = self._tick()
            if soonest is not None:
                wait = max(0.0, soonest - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
        self._reactor.run_once(timeout, lock=self._lock)

    def wait(self, future: cf.Future[Any], timeout: float | None) -> None:
        """Drive I/O until ``future`` is done or ``timeout`` passes. Never called with the
        client's lock held, so the thread that polls can always take it."""
        with self._in_wait_lock:
            self._in_wait += 1
        try:
            self._wait(future, timeout)
        finally:
            with self._in_wait_lock:
                self._in_wait -= 1

    def _wait(self, future: cf.Future[Any], timeout: float | None) -> None:
        done = cf.Future.done  # not stratus's Future.done, which polls
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done(future):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            # The pump's lazy round (pump_once(0)) holds the right for microseconds:
            # waiting that long beats handing each reply over between threads.
            if self._poll_lock.acquire(timeout=_TAKE_OVER):
                try:
                    while not done(future) and not self._closed():
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return
                        self.pump_once(remaining)
                    return
                finally:
                    self._poll_lock.release()
                    self._hand_over()
            # Another thread polls; the background pump takes over if it leaves first.
            with self._pump_wanted:
                self._blocked_waiters += 1
            self._start_pump()
            try:
                cf.wait([future], timeout=remaining)
            finally:
                with self._pump_wanted:
                    self._blocked_waiters -= 1

    def poll_nowait(self) -> None:
        if self._poll_lock.acquire(blocking=False):
            try:
                self.pump_once(0)
            finally:
                self._poll_lock.release()
                self._hand_over()

    def watch(self, future: cf.Future[Any], *, lazy: bool = False) -> None:
        """Someone waits for ``future`` without polling: have the pump poll for it (with
        ``lazy``, only while no other thread polls)."""
        if not cf.Future.done(future):
            (self._lazy if lazy else self._watched).add(future)
            self._start_pump()

    def unwatch(self, future: cf.Future[Any]) -> None:
        self._watched.discard(future)
        self._lazy.discard(future)

    def close(self) -> None:
        with self._pump_wanted:
            self._pump_wanted.notify_all()
        if self._owns_reactor:
            with self._poll_lock:
                self._reactor.close()

    def _hand_over(self) -> None:
        if self._watched or self._blocked_waiters:
            with self._pump_wanted:
                self._pump_wanted.notify()

    def _start_pump(self) -> None:
        with self._pump_wanted:
            if self._pump_thread is None:
                self._pump_thread = threading.Thread(
                    target=self._pump_forever, name=f"stratus-pump-{self._name}", daemon=True
                )
                self._pump_thread.start()
            self._pump_wanted.notify()
        self._reactor.wake()

    def _pump_forever(self) -> None:
        while True:
            with self._pump_wanted:
                while not self._closed() and not (
                    self._watched or self._blocked_waiters or self._lazy
                ):
                    self._pump_wanted.wait()
                eager = bool(self._watched or self._blocked_waiters)
                if not eager and not self._closed():
                    idle = time.monotonic() - self._polled_at
                    if idle < LAZY or self._in_wait:  # someone polls: stay out of the way
                        self._pump_wanted.wait(max(LAZY - idle, LAZY / 2))
                        continue
            if self._closed():
                return
            if eager:
                with self._poll_lock:
                    self.pump_once(0.05)
            elif self._poll_lock.acquire(blocking=False):  # else someone polls already
                try:
                    self.pump_once(0)
                finally:
                    self._poll_lock.release()
