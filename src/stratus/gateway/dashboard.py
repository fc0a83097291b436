"""The live dashboard (``/ui``): the page, its data, and the stream that keeps it current.

The gateway tails the cluster's metering records once a second (``app.records``) and its
pool sizes (``app.status``), feeds them to ``Telemetry``, and pushes the snapshot to every
open page as a server-sent event. The page asks for a token and sends it in the
``Authorization`` header of its requests (it reads the event stream with ``fetch``, not
``EventSource``, which cannot send headers): no token ever appears in a URL or a log.
Polling starts with the first page opened, so an unwatched gateway costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from stratus.client.app import App
from stratus.gateway.telemetry import Telemetry

POLL_S = 1.0
"""How often the dashboard asks the cluster for new records and pool sizes."""

MAX_SUBSCRIBERS = 100
"""Open pages at most; one more gets 429 (each costs a queue and a connection)."""


class Dashboard:
    def __init__(self, app: App) -> None:
        self.app = app
        self.telemetry = Telemetry()
        self._after = ""
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._page = resources.files("stratus.gateway").joinpath("ui.html").read_text()

    # ------------------------------------------------------------------ polling

    def poll_once(self) -> None:
        """New records and pool sizes (blocking: run in a thread)."""
        while True:
            records, after = self.app.records(self._after)
            self.telemetry.add(records)
            if after == self._after or not records:
                self._after = after
                break
            self._after = after
        status = self.app.status()
        self.telemetry.pools({p.function: p.ready + p.starting for p in status.pools})

    def snapshot(self) -> dict[str, Any]:
        return self.telemetry.snapshot(time.time_ns())

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a cluster that blips: next round
                await run_in_threadpool(self.poll_once)
                event = f"data: {json.dumps(self.snapshot())}\n\n"
                for queue in list(self._subscribers):
                    if queue.full():  # a page that stopped reading: drop its oldest
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                    queue.put_nowait(event)
            await asyncio.sleep(POLL_S)

    def _ensure_polling(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ routes

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers={"Cache-Control": "no-store"})

    async def data(self, request: Request) -> Response:
        self._ensure_polling()
        await run_in_threadpool(self.poll_once)
        return JSONResponse(self.snapshot())

    async def events(self, request: Request) -> Response:
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            return JSONResponse(
                {"error": {"type": "Overloaded", "message": "too many open dashboards"}},
                status_code=429,
            )
        self._ensure_polling()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=4)
        self._subscribers.add(queue)
        queue.put_nowait(f"data: {json.dumps(self.snapshot())}\n\n")

        async def stream() -> AsyncIterator[str]:
            try:
                while True:
                    yield await queue.get()
            finally:
                self._subscribers.discard(queue)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def logs(self, request: Request, function: str) -> Response:
        invocation = request.query_params.get("invocation", "")
        lines = await run_in_threadpool(self.app.logs, function, invocation, 200)
        return JSONResponse(
            {
                "lines": [
                    {"time_ms": line.time_ns // 1_000_000, "invocation_id": line.invocation_id,
                     "attempt": line.attempt, "stream": line.stream, "text": line.text}
                    for line in lines
                ]
            }
        )  # fmt: skip
