"""A generator function's items: each sent to its caller as it is yielded (a streamed
call, ``fn.remote_gen``), or gathered into the list that is its result (``fn.remote``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from stratus.protocol import messages as m
from stratus.protocol import serialization
from stratus.server.attempt import Job


class Items:
    """A generator's items: each sent to the caller as it comes (a streamed call), or
    gathered into the list that is its result."""

    def __init__(self, job: Job, limit: int) -> None:
        self._job = job
        self._limit = limit  # bytes of one streamed item at most
        self._items: list[Any] = []
        self._count = 0

    def collect(self, items: Iterator[Any]) -> Any:
        for item in items:
            self._add(item)
        return self._result()

    async def collect_async(self, items: AsyncIterator[Any]) -> Any:
        async for item in items:
            self._add(item)
        return self._result()

    def _add(self, item: Any) -> None:
        call, conn = self._job.call, self._job.conn
        if not call.stream:
            self._items.append(item)
            return
        value = serialization.dumps(item, limit=self._limit, what="streamed item")
        if conn is not None:
            conn.send(m.StreamItem(call.rid, call.attempt, self._count, value))
        self._count += 1

    def _result(self) -> Any:
        return self._count if self._job.call.stream else self._items
