"""The Future an invocation returns: a ``concurrent.futures.Future`` that is awaitable.

Waiting drives the connection: ``result()`` reads replies in the calling thread, so a
synchronous call costs no hand-off between threads. Ways of waiting that do not call
``result()`` (callbacks, ``await``, ``concurrent.futures.wait``/``as_completed``) register
the future as *watched*, and the client's background pump then reads for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from stratus.client.driver import Driver

T = TypeVar("T")


class _WatchedList(list[Any]):
    """``Future._waiters``: ``concurrent.futures.wait`` appends here, which starts the pump."""

    def __init__(self, future: Future[Any]) -> None:
        super().__init__()
        self._future = future

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        self._future._driver.watch(self._future)


_NO_CALLBACKS: list[Any] = []  # shared and never appended to; see add_done_callback


class Future(concurrent.futures.Future[T], Generic[T]):
    """The pending result of an invocation.

    >>> fut = square.remote(3)
    >>> fut.result(timeout=5)
    9
    """

    def __init__(self, driver: Driver, invocation_id: str, function: str) -> None:
        # Not ``super().__init__()``: it builds a Condition per future, eight objects the
        # garbage collector tracks; with tens of thousands of calls in flight the
        # collections they trigger cost more than the calls. All futures of a client
        # share one condition instead, which is safe because no method here waits on it.
        self._condition = driver.condition
        self._state = "RUNNING"  # a call on the wire cannot be cancelled
        self._result = None
        self._exception = None
        self._waiters = _WatchedList(self)
        self._done_callbacks = _NO_CALLBACKS
        self._driver = driver
        self.invocation_id = invocation_id
        self.function = function

    def __repr__(self) -> str:
        return f"<stratus.Future {self.function} {self.invocation_id} {self._state.lower()}>"

    def result(self, timeout: float | None = None) -> T:
        """Wait up to ``timeout`` seconds; raise ``TimeoutError`` if still pending."""
        self._driver.wait(self, timeout)
        return super().result(timeout=0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._driver.wait(self, timeout)
        return super().exception(timeout=0)

    def done(self) -> bool:
        if not super().done():
            self._driver.poll_nowait()
        return super().done()

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        with self._condition:
            if self._done_callbacks is _NO_CALLBACKS:
                self._done_callbacks = []
        super().add_done_callback(fn)
        if not super().done():
            self._driver.watch(self)

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self).__await__()
