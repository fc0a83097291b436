"""Who polls a client's sockets: the thread that waits, or else a background pump.

Theory of operation: exactly one thread at a time polls (``polling()``, a re-entrant lock:
an executor's function waiting on a nested call polls again from inside the dispatch of
the loop that runs it). A thread waiting in ``Future.result()`` takes that right itself,
so a synchronous call involves no hand-off between threads. Waiting that does not poll
(callbacks, ``await``, ``concurrent.futures.wait``) *watches* the future, and a thread
that finds another one polling becomes a *blocked waiter*; either starts the background
pump, which polls while anyone is watched or blocked. When a polling thread leaves with
others still waiting, it hands over to the pump.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from stratus.transport.reactor import Reactor


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
        self._blocked_waiters = 0
        # Own lock, not the client's: futures signal it while holding their condition.
        self._pump_wanted = threading.Condition()
        self._pump_thread: threading.Thread | None = None

    def polling(self) -> AbstractContextManager[Any]:
        """Hold the right to poll, for a server that drives the loop itself."""
        return self._poll_lock

    def pump_once(self, timeout: float | None) -> None:
        """One round of I/O; the caller holds ``polling()`` but not the client's lock."""
        with self._lock:
            if self._closed() and self._owns_reactor:
                return
            soonest = self._tick()
            if soonest is not None:
                wait = max(0.0, soonest - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
        self._reactor.run_once(timeout, lock=self._lock)

    def wait(self, future: cf.Future[Any], timeout: float | None) -> None:
        """Drive I/O until ``future`` is done or ``timeout`` passes. Never called with the
        client's lock held, so the thread that polls can always take it."""
        done = cf.Future.done  # not stratus's Future.done, which polls
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done(future):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._poll_lock.acquire(blocking=False):
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

    def watch(self, future: cf.Future[Any]) -> None:
        """Someone waits for ``future`` without polling: have the pump poll for it."""
        if not cf.Future.done(future):
            self._watched.add(future)
            self._start_pump()

    def unwatch(self, future: cf.Future[Any]) -> None:
        self._watched.discard(future)

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
                while not self._closed() and not (self._watched or self._blocked_waiters):
                    self._pump_wanted.wait()
            if self._closed():
                return
            with self._poll_lock:
                self.pump_once(0.05)
