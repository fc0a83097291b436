"""How an executor reaches the rest of its cluster: its control link to the
coordinator, its connections to peer executors, and the ``Caller`` it makes nested
calls through.

Theory of operation: ``Link`` opens one connection to the coordinator and says
``Hello`` as an ``executor``. On it the executor sends ``ExecutorHello``, its load
reports, ``FetchFunction``, ``StoreStuck`` and ``ExecutorStartFailed``, and reads
``ToExecutorLink``, and nothing else (a client's messages are not decoded here):

    message read                     effect
    -------------------------------  ---------------------------------------------
    Welcome                          none (the coordinator holds the key too)
    FunctionCode, rid 0              ``on_control``: pinned here, warm it up
    FunctionCode / RequestFailed     settles the request ``rid`` (``request``)
    ShutdownExecutor, Unpin          ``on_control``
    ExecutorsChanged                 the live executors: where ``peer`` connects
    (the link closes)                pending requests fail; ``on_lost(reason)``

A DAG step's result and a ``ctx.send`` message go straight to another executor, on a
connection the link opens once per peer with ``Hello`` as an ``executor``; the peer
answers ``Welcome`` and nothing more (it sends replies only to callers).

Nested calls (``ctx.call``) need the client SDK's placement, retries and futures,
which the server never imports: the executor's entry point (``stratus._node``) builds
a ``Caller`` over the executor's reactor and hands it in. Because a function waiting on
a nested call's future polls that reactor through the caller's driver (and so keeps
serving other calls meanwhile), the caller drives the executor's whole loop: one
poller owns the reactor.

The link has no thread and no loop of its own; the executor drives the reactor.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from stratus import _exceptions as exc
from stratus.config import ClusterConfig
from stratus.protocol import errors
from stratus.protocol import messages as m
from stratus.protocol.framing import FRAME_OVERHEAD, Codec
from stratus.transport import addresses
from stratus.transport.reactor import Connection, Reactor

log = logging.getLogger("stratus.executor")

_CONNECT_TIMEOUT = 5.0  # s for a socket to the coordinator or a peer to connect


class Caller(Protocol):
    """Nested calls from running functions, and the driver of the executor's loop.

    Implemented by ``stratus.client.Client`` (built with the executor's reactor); the
    executor only ever polls through ``polling()`` and ``pump()``, so that a function
    waiting on a nested call's future and the executor's own loop share one poller.
    """

    def invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> cf.Future[Any]:
        """Invoke function or DAG ``name``; returns at once with a future."""
        ...

    def polling(self) -> AbstractContextManager[Any]:
        """Hold the right to poll the reactor (re-entrant)."""
        ...

    def pump(self, timeout: float | None) -> None:
        """One round of I/O on the reactor; call inside ``polling()``."""
        ...

    def close(self) -> None:
        """Fail what is in flight and close the caller's connections."""
        ...


# Builds an executor's caller over its reactor; given by the executor's entry point.
CallerFactory = Callable[[Reactor], Caller]


class Link:
    """An executor's control link to its coordinator and its connections to peers.

    ``on_control`` gets ``ShutdownExecutor``, ``Unpin`` and pushed ``FunctionCode``;
    ``on_lost`` is called once when the coordinator link closes.
    """

    def __init__(
        self,
        reactor: Reactor,
        config: ClusterConfig,
        executor_id: str,
        *,
        on_control: Callable[[Any], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.executor_id = executor_id
        self._reactor = reactor
        self._on_control = on_control
        self._on_lost = on_lost
        max_frame = config.max_payload + FRAME_OVERHEAD
        self._codec = Codec(config.key, m.ToExecutorLink, max_frame=max_frame)
        self._peer_codec = Codec(config.key, m.Welcome, max_frame=max_frame)
        self._rids = itertools.count(1)
        self._requests: dict[int, cf.Future[Any]] = {}
        self._executors: dict[str, m.ExecutorAddress] = {}
        self._peers: dict[str, Connection] = {}
        address = config.coordinator_address
        self._prefer_unix = addresses.is_local(address)
        # No wait for Welcome: the stream is ordered and every frame is signed; a wrong
        # key or a dead coordinator closes the link, and the executor exits.
        hello = m.Hello(executor_id, "executor")
        self._coordinator = reactor.connect(address, self._codec, hello, timeout=_CONNECT_TIMEOUT)
        self._coordinator.peer_id = config.cluster_id
        self._coordinator.on_message = self._on_message
        self._coordinator.on_close = self._on_close

    @property
    def closed(self) -> bool:
        return self._coordinator.closed

    def send(self, message: Any) -> None:
        """Send a one-way message to the coordinator (dropped once the link closed)."""
        self._coordinator.send(message)

    def request(self, build: Callable[[int], Any]) -> cf.Future[Any]:
        """Send ``build(rid)`` to the coordinator; the future gets its reply, or the
        error of a ``RequestFailed``, once the executor's loop has read it."""
        if self._coordinator.closed:
            raise exc.ClusterClosed("the executor's link to its coordinator is closed")
        rid = next(self._rids)
        waiter: cf.Future[Any] = cf.Future()
        self._requests[rid] = waiter
        self._coordinator.send(build(rid))
        return waiter

    def peers(self) -> list[m.ExecutorAddress]:
        """The live executors, as last pushed by the coordinator (this one included)."""
        return list(self._executors.values())

    def peer(self, target: m.ExecutorAddress) -> Connection:
        """The connection to executor ``target``, opened on first use; ``ExecutorLost``
        (and the executor forgotten) when it cannot be reached."""
        conn = self._peers.get(target.executor_id)
        if conn is None or conn.closed:
            address = target.unix if self._prefer_unix or not target.tcp else target.tcp
            hello = m.Hello(self.executor_id, "executor")
            try:
                conn = self._reactor.connect(
                    address, self._peer_codec, hello, timeout=_CONNECT_TIMEOUT
                )
            except exc.ConnectionFailed:
                self._executors.pop(target.executor_id, None)
                raise exc.ExecutorLost(f"cannot reach executor {target.executor_id}") from None
            conn.peer_id = target.executor_id
            conn.on_message = _on_peer_message
            conn.on_close = self._on_peer_closed
            self._peers[target.executor_id] = conn
        return conn

    def close(self) -> None:
        """Close the link and the peer connections, without calling ``on_lost``."""
        for conn in [*self._peers.values(), self._coordinator]:
            conn.on_close = _ignore_close
            conn.close()
        self._peers.clear()
        self._fail_requests()

    # ------------------------------------------------------------------ incoming

    def _on_message(self, conn: Connection, message: Any) -> None:
        match message:
            case m.Welcome():
                pass
            case m.FunctionCode(0) | m.ShutdownExecutor() | m.Unpin():
                self._on_control(message)
            case m.FunctionCode(rid):
                if (waiter := self._requests.pop(rid, None)) is not None:
                    waiter.set_result(message)
            case m.RequestFailed(rid, error):
                if (waiter := self._requests.pop(rid, None)) is not None:
                    waiter.set_exception(errors.decode(error))
            case m.ExecutorsChanged(executors):
                self._executors = {e.executor_id: e for e in executors}

    def _on_close(self, conn: Connection) -> None:
        self._fail_requests()
        self._on_lost("its coordinator link closed")

    def _on_peer_closed(self, conn: Connection) -> None:
        if self._peers.get(conn.peer_id) is conn:
            del self._peers[conn.peer_id]

    def _fail_requests(self) -> None:
        requests, self._requests = self._requests, {}
        for waiter in requests.values():
            waiter.set_exception(exc.ClusterClosed("the coordinator link closed"))


def _on_peer_message(conn: Connection, message: Any) -> None:
    pass  # a peer's Welcome: it holds the key too


def _ignore_close(conn: Connection) -> None:
    pass
