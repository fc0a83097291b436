"""``Stream``: the items of a streamed generator call, as its executor yields them.

The client's reader (whichever thread polls) appends items here in order; a consumer
waits for the next one by driving I/O itself (``for``) or by having the background pump
drive it (``async for``), like ``Future``. The call's end is its ``future``: done with the
number of items, or with the error that ends the iteration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.client.driver import Driver
    from stratus.client.future import Future


class Stream(Iterator[Any], AsyncIterator[Any]):
    """What ``fn.remote_gen(...)`` returns: iterate it (``for`` or ``async for``) to get
    the generator's items as they are produced; the iteration raises the call's error
    (``RemoteError``, ``StreamInterrupted``...) after the items yielded before it.

    >>> for line in read_lines.remote_gen("/log.txt"):
    ...     print(line)

    Stopping early does not stop the generator: it runs to its end (and commits), and
    the items nobody reads are dropped with the stream.
    """

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._items: deque[Any] = deque()
        self._arrival: cf.Future[None] | None = None  # what a waiting consumer waits on
        self.future: Future[int]  # set by the client when the call is sent

    def __repr__(self) -> str:
        return f"<stratus.Stream {self.future.function} {self.future.invocation_id}>"

    @property
    def invocation_id(self) -> str:
        return self.future.invocation_id

    # --- the client's side (under its lock, in the polling thread)

    def put(self, item: Any) -> None:
        """An item arrived."""
        self._items.append(item)
        self.wake()

    def wake(self) -> None:
        """An item arrived or the call ended: a waiting consumer goes on."""
        arrival = self._arrival
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    # --- the consumer's side

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        while True:
            arrival = self._next_arrival()
            if arrival is None:
                return self._take()
            self._driver.wait(arrival, None)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        while True:
            arrival = self._next_arrival()
            if arrival is None:
                try:
                    return self._take()
                except StopIteration:
                    raise StopAsyncIteration from None
            self._driver.watch(arrival)
            try:
                await asyncio.wrap_future(arrival)
            finally:
                self._driver.unwatch(arrival)

    def _next_arrival(self) -> cf.Future[None] | None:
        """None when an item or the end is here, else a future the next one completes."""
        if self._items or cf.Future.done(self.future):
            return None
        arrival = self._arrival = cf.Future()
        if self._items or cf.Future.done(self.future):  # arrived meanwhile
            return None
        return arrival

    def _take(self) -> Any:
        if self._items:
            return self._items.popleft()
        self.future.result(timeout=0)  # raises the call's error, if it failed
        raise StopIteration
