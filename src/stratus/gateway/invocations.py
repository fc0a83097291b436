"""Asynchronous invocations (``?async=1``): the futures a caller polls by id.

Bounded twice: at most ``capacity`` invocations are remembered (a new one past that is
refused with 429, nothing of it run), and a finished one is forgotten ``keep_s`` seconds
after it finished, whether or not anyone polled it. Each belongs to the tenant that made
it (None: the operator): another caller asking for it gets the 404 of an unknown id.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from stratus.client.future import Future
from stratus.gateway.errors import HTTPProblem


class Invocations:
    def __init__(self, *, capacity: int = 10_000, keep_s: float = 600.0) -> None:
        self._capacity = capacity
        self._keep_s = keep_s
        self._futures: OrderedDict[str, Future[Any]] = OrderedDict()
        self._finished_at: dict[str, float] = {}
        self._tenants: dict[str, str | None] = {}

    def add(self, future: Future[Any], tenant: str | None = None) -> str:
        self._expire()
        self._futures[future.invocation_id] = future
        self._tenants[future.invocation_id] = tenant
        future.add_done_callback(self._note_finished)
        return future.invocation_id

    def check_room(self) -> None:
        """Raise 429 before a call is made that could not be remembered."""
        self._expire()
        if len(self._futures) >= self._capacity:
            raise HTTPProblem(
                429, "Overloaded", f"{self._capacity} asynchronous invocations are pending"
            )

    def get(self, invocation_id: str, tenant: str | None = None) -> Future[Any]:
        """The invocation ``invocation_id`` made by ``tenant`` (None: the operator,
        who may ask for anyone's)."""
        self._expire()
        future = self._futures.get(invocation_id)
        if future is None or tenant not in (None, self._tenants.get(invocation_id)):
            raise HTTPProblem(404, "InvocationNotFound", f"no invocation {invocation_id!r}")
        return future

    def _note_finished(self, future: Any) -> None:
        self._finished_at[future.invocation_id] = time.monotonic()

    def _expire(self) -> None:
        horizon = time.monotonic() - self._keep_s
        for invocation_id, at in list(self._finished_at.items()):
            if at < horizon:
                del self._finished_at[invocation_id]
                self._futures.pop(invocation_id, None)
                self._tenants.pop(invocation_id, None)
