"""The client core: talks to the coordinator for names and placements, and straight to
executors for calls.

Theory of operation: the client keeps a cache of what the coordinator said (each
function's latest version and options) and one connection per executor. A call is one
frame to an executor and one frame back. The coordinator is asked only on a cache miss;
it pushes ``ExecutorsChanged`` when executors come and go or warm pools change.

Where and when each call goes is decided by ``placement.Placement``, a state machine
without I/O: this shell feeds it what happens (a call submitted, a reply, an executor
lost, the pools changed, time passing) and carries out its instructions (send a call or
a DAG to these executors, hold a call here, send ``Demand``, fail a call
``Overloaded``). Each invocation's own life (replies, retries, its deadline) is
``invocation.Invocation``'s.

Threads: ``_lock`` guards all state and is held only briefly; ``driver`` (``Driver``)
decides which thread polls the sockets: the one waiting in ``Future.result()``, so a
synchronous call involves no other thread, or a background pump.

Reconnecting (a client made with ``reconnect`` > 0: one of a server, never an embedded
cluster's or an executor's): when the coordinator's connection closes, the client does
not fail its calls. A ``reconnect.Redial`` thread dials the coordinator again within the
window (where it was, or, for a client given the store, where the store's coordinator
lease says: a coordinator taken over on another host, ``reconnect.Follow``); meanwhile
calls already sent to live executors go on, calls whose executor went away with the
coordinator are *orphaned* (re-sent as the next attempt without spending a
retry, so they wait in the client), new calls wait the same way, and requests to the
coordinator wait to be sent (those already sent are sent again if they change nothing,
else fail ``ConnectionFailed``: they may have been applied). Once back: a coordinator
with a new cluster id (the server restarted) has none of the old executors, so they are
all orphaned; every known name is resolved again, which warms its pool and releases the
waiting calls, whose invocation records make the re-sent attempts apply once. When the
window ends first, everything pending fails ``ClusterClosed``. Nothing of this runs on
the hot path while connected.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from stratus import _exceptions as exc
from stratus.client import invocation as inv
from stratus.client import placement as pl
from stratus.client import reconnect as rc
from stratus.client.driver import Driver
from stratus.client.future import Future
from stratus.client.pending import DagShape, Pending, ref_keys, start_error
from stratus.client.stream import Stream
from stratus.protocol import errors, serialization
from stratus.protocol import messages as m
from stratus.protocol.framing import FRAME_OVERHEAD, Codec
from stratus.transport import addresses
from stratus.transport.reactor import SPIN, Connection, Reactor, handshake

log = logging.getLogger("stratus.client")

_HANDSHAKE_TIMEOUT = 10.0
_POLL_WHILE_HOLDING = 0.001  # s between two rounds of I/O in a burst of held calls
# Failures after which the executor that reported them exits, to be replaced (not after
# a timeout of an async function: its task is cancelled, the executor stays).
_EXECUTOR_EXITS = frozenset({"InvocationTimeout", "MemoryLimitExceeded"})
# Requests that change nothing, or nothing twice, when the coordinator gets them again:
# sent again after a reconnect. Others in flight then fail (they may have been applied).
_SAFE_AGAIN = (
    m.Resolve,
    m.StatusRequest,
    m.KvRead,
    m.KvList,
    m.MeterRead,
    m.LogsRead,
    m.FetchFunction,
    m.Register,  # one more version of the same code
    m.RegisterDag,
)
_ON_LOOP = frozenset({"async", "async_generator"})  # kinds an executor runs many at once


class Client:
    """A connection to one stratus cluster. Most users get one from ``stratus.connect()``."""

    def __init__(
        self,
        address: str,
        key: bytes,
        *,
        max_payload: int = serialization.DEFAULT_MAX_PAYLOAD,
        reactor: Reactor | None = None,
        client_id: str | None = None,
        nested: bool = False,
        reconnect: float = 0.0,
        locate: Callable[[], str] | None = None,
    ) -> None:
        if not reconnect >= 0:
            raise exc.ConfigurationError(f"reconnect must be >= 0 seconds, not {reconnect!r}")
        self.address = address
        # Where a reconnect dials: this address, then where ``locate`` says (a takeover).
        self._follow = rc.Follow(address, locate)
        self.reconnect = reconnect  # s to find a lost coordinator again; 0: give up at once
        self.client_id = client_id or f"c{os.getpid()}-{secrets.token_hex(4)}"
        self.max_payload = max_payload
        self._codec = Codec(key, m.ToClient, max_frame=max_payload + FRAME_OVERHEAD)
        self._reactor = reactor or Reactor(spin=SPIN)
        self._own_reactor = reactor is None
        self._lock = threading.RLock()
        self._rids = itertools.count(1)
        self._closed = False
        self._close_reason = "the client is closed"
        self._prefer_unix = addresses.is_local(address)
        self._pending: dict[int, Pending] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap, see _check_deadlines
        self._requests: dict[int, cf.Future[Any]] = {}
        self._asked: dict[int, Any] = {}  # the request of each rid in _requests
        self._redial: rc.Redial | None = None  # while the coordinator is away
        self._unsent: dict[int, Any] = {}  # requests to send once it is back
        self._functions: dict[str, m.FunctionInfo] = {}
        self._dags: dict[str, list[m.DagNode]] = {}
        self._executors: dict[str, m.ExecutorAddress] = {}
        self._placed: set[str] = set()  # names (functions, DAGs) whose pools we know
        self._dag_shapes: dict[str, DagShape] = {}
        self._conns: dict[str, Connection] = {}
        # ``nested``: an executor's, for its functions' calls, which are never held.
        self.placement = pl.Placement(self_id=self.client_id, nested=nested)
        # Watched by the background pump while calls are held, so that the reply or push
        # releasing them is read even if nobody waits on a future (one for all).
        self._waiting_watch: cf.Future[None] | None = None
        self.driver = Driver(
            self._reactor,
            self._lock,
            tick=self._check_deadlines,
            closed=lambda: self._closed,
            owns_reactor=self._own_reactor,
            name=self.client_id,
        )
        self.on_lost: Callable[[str], None] | None = None  # called when the cluster is gone
        self._hello = m.Hello(self.client_id, "client")
        self._coordinator, welcome = self._reactor.connect_and_wait(
            address, self._codec, self._hello, timeout=_HANDSHAKE_TIMEOUT
        )
        if not isinstance(welcome, m.Welcome):
            raise exc.ConnectionFailed(f"{address} answered {type(welcome).__name__}, not Welcome")
        self.cluster_id = welcome.node_id
        self._coordinator.peer_id = welcome.node_id
        self._coordinator.on_message = self._on_message
        self._coordinator.on_close = self._on_close

    # ------------------------------------------------------------------ public surface

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def reconnecting(self) -> bool:
        """The coordinator went away and the client is finding it again."""
        return self._redial is not None

    def register(
        self,
        name: str,
        target: Any,
        options: m.FunctionOptions,
        init: tuple[tuple[Any, ...], dict[str, Any]] = ((), {}),
    ) -> int:
        """Register a function or class under ``name`` (a class is built with ``init``);
        return its new version."""
        code = serialization.dumps_code((target, *init), limit=self.max_payload, defined_by=target)
        reply = self.request(lambda rid: m.Register(rid, name, code, options))
        assert isinstance(reply, m.Registered)
        with self._lock:
            self._functions[name] = m.FunctionInfo(name, reply.version, options)
        return reply.version

    def register_dag(self, name: str, nodes: list[m.DagNode]) -> None:
        self.request(lambda rid: m.RegisterDag(rid, name, nodes))
        with self._lock:
            self._dags[name] = nodes

    def delete_dag(self, name: str) -> None:
        self.request(lambda rid: m.DeleteDag(rid, name))
        with self._lock:
            self._dags.pop(name, None)
            self._dag_shapes.pop(name, None)
            self._placed.discard(name)

    def status(self) -> m.StatusReply:
        reply = self.request(lambda rid: m.StatusRequest(rid))
        assert isinstance(reply, m.StatusReply)
        return reply

    def shutdown_cluster(self) -> None:
        self.reconnect = 0.0  # it is going away on purpose: do not wait for it
        self.request(lambda rid: m.ShutdownCluster(rid))

    def invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Invoke a function or a DAG by name."""
        if name not in self._placed:
            self._resolve(name)
        if name in self._dags:
            return self.call_dag(name, args, kwargs)
        return self.call(name, args, kwargs)

    def stream(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Stream:
        """Invoke generator function ``name``, its items streamed as they are yielded."""
        stream = Stream(self.driver)
        self.call(name, args, kwargs, stream=stream)
        return stream

    def call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        stream: Stream | None = None,
    ) -> Future[Any]:
        """Invoke function ``name``; returns at once with a Future."""
        blob = serialization.dumps((args, kwargs), limit=self.max_payload, what="arguments")
        if name not in self._placed:
            self._resolve(name)
        with self._lock:
            self._check_open()
            info = self._functions[name]
            rid = next(self._rids)
            future: Future[Any] = Future(self.driver, f"{self.client_id}.{rid}", name)
            options = info.options
            invocation = inv.Invocation(
                future.invocation_id, name, options.timeout, options.retries
            )
            refs = ref_keys(args, kwargs)
            pending = self._pending[rid] = Pending(future, invocation, blob, info=info, refs=refs)
            if stream is not None:
                stream.future = future
                pending.stream = stream
            self._place(rid, 1, frozenset())
        if (
            self._own_reactor
            and self.placement.waiting()
            and time.monotonic() - self.driver.polled_at >= _POLL_WHILE_HOLDING
        ):
            # A burst of calls is being held: take in the replies that free room now and
            # then, so that the executors work while the caller is still submitting.
            self.driver.poll_nowait()
        return future

    def call_dag(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Invoke DAG ``name``: every source gets ``args``; the sink's result comes back."""
        blob = serialization.dumps((args, kwargs), limit=self.max_payload, what="arguments")
        if name not in self._placed:
            self._resolve(name)
        with self._lock:
            self._check_open()
            shape = self._dag_shapes.get(name)
            if shape is None:
                nodes = self._dags[name]
                infos = [self._functions[n.function] for n in nodes]
                shape = self._dag_shapes[name] = DagShape.of(name, nodes, infos)
            rid = next(self._rids)
            future: Future[Any] = Future(self.driver, f"{self.client_id}.{rid}", name)
            invocation = inv.Invocation(future.invocation_id, name, shape.budget, shape.retries)
            self._pending[rid] = Pending(future, invocation, blob, dag=shape)
            self._place(rid, 1, frozenset())
        return future

    # ------------------------------------------------------------------ placement

    def _place(self, rid: int, attempt: int, avoid: frozenset[str]) -> None:
        """Hand ``attempt`` of invocation ``rid`` to the placement and carry out its
        answer."""
        pending = self._pending.get(rid)
        if pending is None:
            return
        event: pl.Submit | pl.SubmitDag
        if pending.dag is None:
            info = pending.info
            assert info is not None
            options = info.options
            event = pl.Submit(
                rid,
                info.name,
                attempt,
                avoid,
                pending.refs,
                options.concurrency,
                options.max_queued,
                options.kind in _ON_LOOP,
            )
        else:
            event = pl.SubmitDag(rid, pending.dag.steps, attempt, avoid)
        self._carry_out(self.placement.handle(event, time.monotonic()))

    def _carry_out(self, instructions: list[pl.Instruction], *, flush: bool = True) -> None:
        """Carry out the placement's instructions. Without ``flush``, calls are written at
        the end of the reactor's round, several in one system call: for what a reply or
        a push releases, read while the reactor dispatches."""
        for instruction in instructions:
            match instruction:
                case pl.Send(rid, attempt, executor_id):
                    self._send_call(rid, attempt, executor_id, flush)
                case pl.Hold(rid, attempt, cold):
                    self._hold(rid, attempt, cold)
                case pl.SendDemand(function, queued):
                    self._coordinator.send(m.Demand(function, queued))
                case pl.SendDag(rid, attempt, executors):
                    self._send_dag(rid, attempt, executors)
                case pl.Overloaded(rid, _, reason):
                    self._finish(rid, error=exc.Overloaded(reason))
        if self._waiting_watch is not None and not self.placement.waiting():
            self.driver.unwatch(self._waiting_watch)
            self._waiting_watch = None

    def _arm(self, rid: int, invocation: inv.Invocation) -> None:
        if invocation.deadline is not None:
            heapq.heappush(self._deadlines, (invocation.deadline, rid))

    def _reachable(self, executor_id: str) -> Connection | None:
        """Our connection to ``executor_id``; None (and the executor is forgotten) when
        it cannot be reached."""
        target = self._executors.get(executor_id)
        try:
            if target is None:
                raise exc.ExecutorLost(f"executor {executor_id} is gone")
            return self._connection(target)
        except exc.ExecutorLost:
            self._executor_gone(executor_id)
            return None

    def _send_call(self, rid: int, attempt: int, executor_id: str, flush: bool = True) -> None:
        pending = self._pending.get(rid)
        if pending is None:
            return
        conn = self._reachable(executor_id)
        if conn is None:  # nothing was sent, so no attempt is spent: place it again
            self._place(rid, attempt, pending.invocation.avoid)
            return
        info = pending.info
        assert info is not None
        invocation = pending.invocation
        message = m.Call(
            rid,
            invocation.invocation_id,
            info.name,
            info.version,
            pending.blob,
            attempt,
            info.options.timeout,
            self.client_id,
            refs=bool(pending.refs),
            held_ns=time.perf_counter_ns() - pending.held_ns if pending.held_ns else 0,
            cold=pending.cold,
            stream=pending.stream is not None,
        )
        pending.held_ns, pending.cold = 0, False
        invocation.sent(attempt, frozenset((executor_id,)), time.monotonic())
        self._arm(rid, invocation)
        conn.send(message, flush=flush)

    def _hold(self, rid: int, attempt: int, cold: bool) -> None:
        """The call waits in this client for room; its deadline runs meanwhile."""
        pending = self._pending.get(rid)
        if pending is None:
            return
        if pending.dag is None and not pending.held_ns:
            pending.held_ns = time.perf_counter_ns()
            pending.cold = cold
        pending.invocation.sent(attempt, frozenset(), time.monotonic())
        self._arm(rid, pending.invocation)
        if self._waiting_watch is None and self._own_reactor:  # an executor polls anyway
            self._waiting_watch = cf.Future()
            self.driver.watch(self._waiting_watch, lazy=True)

    def _send_dag(self, rid: int, attempt: int, executors: tuple[str, ...]) -> None:
        pending = self._pending.get(rid)
        if pending is None:
            return
        shape = pending.dag
        assert shape is not None
        # Every step's executor gets our connection: the sink answers on it.
        for executor_id in dict.fromkeys(executors):
            if self._reachable(executor_id) is None:
                self._place(rid, attempt, pending.invocation.avoid)
                return
        plan = shape.plan([self._executors[e] for e in executors])
        invocation = pending.invocation
        invocation.sent(attempt, frozenset(executors), time.monotonic())
        self._arm(rid, invocation)
        for i, step in enumerate(plan.nodes):
            if not step.upstream:
                message = m.Call(
                    rid,
                    invocation.invocation_id,
                    step.function,
                    step.version,
                    pending.blob,
                    attempt,
                    step.timeout,
                    self.client_id,
                    plan,
                    i,
                )
                self._conns[step.executor.executor_id].send(message)

    def polling(self) -> AbstractContextManager[Any]:
        """Hold the right to poll, for an executor that drives its loop through this
        client (its ``server.link.Caller``)."""
        return self.driver.polling()

    def pump(self, timeout: float | None) -> None:
        """One round of I/O; call inside ``polling()``."""
        self.driver.pump_once(timeout)

    def request(self, build: Callable[[int], Any], timeout: float = 30.0) -> Any:
        """Send a request to the coordinator and wait for its reply."""
        with self._lock:
            self._check_open()
            rid = next(self._rids)
            waiter: cf.Future[Any] = cf.Future()
            self._requests[rid] = waiter
            message = self._asked[rid] = build(rid)
            if self._redial is not None:
                self._unsent[rid] = message  # sent when the coordinator is back
            else:
                self._coordinator.send(message)
        try:
            self.driver.wait(waiter, timeout)
            if not waiter.done() and self._redial is not None:
                raise exc.ConnectionFailed(
                    f"the coordinator at {self.address} did not come back within {timeout:g} s "
                    f"to answer {type(message).__name__} (the client is still reconnecting)"
                )
            return waiter.result(timeout=0)
        finally:
            with self._lock:
                self._requests.pop(rid, None)
                self._asked.pop(rid, None)
                self._unsent.pop(rid, None)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._fail_all(exc.ClusterClosed("the client was closed"))
            self._closed = True
            if self._redial is not None:
                self._redial.stop()
                self._redial = None
            for conn in [*list(self._conns.values()), self._coordinator]:
                conn.on_close = lambda c: None
                conn.close()
            if self._own_reactor:
                self._reactor.wake()
        self.driver.close()

    # ------------------------------------------------------------------ names

    def _resolve(self, name: str) -> list[m.FunctionInfo]:
        reply = self.request(lambda rid: m.Resolve(rid, name))
        assert isinstance(reply, m.Resolved)  # _resolved applied it as it arrived
        return reply.functions

    def _resolved(self, reply: m.Resolved) -> None:
        """Learn a ``Resolved`` as it is read, in the coordinator's order. Applied later,
        by the thread that asked, it could undo a newer ``ExecutorsChanged`` read in
        between (the pool it starts comes up that fast) and leave calls waiting for a
        push that already came."""
        for info in reply.functions:
            self._functions[info.name] = info
            self._placed.add(info.name)
        for e in reply.executors:
            self._executors[e.executor_id] = e
        if reply.dag is not None:
            self._dags[reply.name] = reply.dag
            self._dag_shapes.pop(reply.name, None)
        self._placed.add(reply.name)
        pools = {info.name: reply.pools.get(info.name, []) for info in reply.functions}
        live = frozenset(e.executor_id for e in reply.executors)
        changed = pl.PoolsChanged(live, pools, complete=False)
        self._carry_out(self.placement.handle(changed, time.monotonic()))

    # ------------------------------------------------------------------ connections

    def _connection(self, target: m.ExecutorAddress) -> Connection:
        conn = self._conns.get(target.executor_id)
        if conn is None or conn.closed:
            self._check_open()  # a message dispatched after close() opens nothing
            address = target.unix if self._prefer_unix or not target.tcp else target.tcp
            try:
                # No wait for Welcome: the stream is ordered, and every reply is signed.
                conn = self._reactor.connect(
                    address, self._codec, m.Hello(self.client_id, "client"), timeout=5.0
                )
            except exc.ConnectionFailed:
                self._executor_gone(target.executor_id)
                raise exc.ExecutorLost(f"cannot reach executor {target.executor_id}") from None
            conn.peer_id = target.executor_id
            conn.on_message = self._on_message
            conn.on_close = self._on_close
            self._conns[target.executor_id] = conn
        return conn

    def _on_close(self, conn: Connection) -> None:
        if conn is self._coordinator:
            if self.reconnect > 0 and not self._closed:
                self._coordinator_lost()
            else:
                self._lose_cluster("the cluster's coordinator went away")
            return
        if self.reconnect > 0 and self._redial is None and not self._coordinator.closed:
            # An executor that dies with its server may be read closed before the
            # coordinator is: look first, so that its calls are orphaned, not failed.
            self._coordinator._on_readable()
        for executor_id, c in list(self._conns.items()):
            if c is conn:
                del self._conns[executor_id]
                self._executor_gone(executor_id)

    def _lose_cluster(self, reason: str) -> None:
        """The cluster is gone for good: fail everything pending with ``reason``."""
        self._close_reason = reason
        self._fail_all(exc.ClusterClosed(reason))
        self._closed = True
        for c in list(self._conns.values()):  # close() will find nothing left to do
            c.on_close = lambda c: None
            c.close()
        if self._own_reactor:
            self._reactor.wake()  # a thread asleep in poll sees its future failed
        if self.on_lost is not None:
            self.on_lost(reason)

    def _executor_gone(self, executor_id: str) -> None:
        self._executors.pop(executor_id, None)
        now = time.monotonic()
        self._carry_out(self.placement.handle(pl.ExecutorLost(executor_id), now))
        # While the coordinator is away, an executor that goes went with it.
        event = inv.ExecutorDied(executor_id) if self._redial is None else inv.Orphaned(executor_id)
        for rid, pending in list(self._pending.items()):
            self._apply(rid, pending.invocation.handle(event, now))

    # ------------------------------------------------------------------ reconnecting

    def _coordinator_lost(self) -> None:
        """Start finding the coordinator again; calls wait (module docstring)."""
        log.warning(
            "%s: the coordinator at %s went away; reconnecting for up to %g s",
            self.client_id,
            self.address,
            self.reconnect,
        )
        for rid in list(self._requests):
            message = self._asked.get(rid)
            if isinstance(message, _SAFE_AGAIN):
                self._unsent[rid] = message
            else:
                waiter = self._requests.pop(rid)
                self._asked.pop(rid, None)
                what = type(message).__name__
                waiter.set_exception(
                    exc.ConnectionFailed(
                        f"the coordinator at {self.address} went away before it answered "
                        f"{what}: it may or may not have been applied"
                    )
                )

        def handshake_at(address: str, timeout: float) -> tuple[Any, Any, list[Any]]:
            return handshake(address, self._codec, self._hello, timeout=timeout)

        self._redial = rc.Redial(
            lambda timeout: self._follow.dial(handshake_at, timeout),
            self.reconnect,
            on_back=self._coordinator_back,
            on_give_up=self._coordinator_gone,
            name=self.client_id,
        )
        self._redial.start()

    def _coordinator_back(self, sock: Any, welcome: Any, rest: list[Any]) -> None:
        """The redial thread got an answer: take the connection and catch up."""
        with self._lock:
            if self._closed or self._redial is None:
                sock.close()
                return
            if not isinstance(welcome, m.Welcome):
                sock.close()
                self._redial = None
                self._lose_cluster(
                    f"{self.address} answered {type(welcome).__name__}, not Welcome, "
                    "when the client reconnected"
                )
                return
            redial, self._redial = self._redial, None
            restarted = welcome.node_id != self.cluster_id
            if self._follow.address != self.address:  # taken over on another host
                log.warning("%s: the coordinator moved to %s", self.client_id, self._follow.address)
                self.address = self._follow.address
                self._prefer_unix = addresses.is_local(self.address)
            log.warning(
                "%s: reconnected to %s after %.2f s (%d tries)%s",
                self.client_id,
                self.address,
                time.monotonic() - redial.started_at,
                redial.tries,
                f"; cluster {self.cluster_id} is now {welcome.node_id}" if restarted else "",
            )
            self.cluster_id = welcome.node_id
            conn = self._reactor.adopt(sock, self._codec, self.address, rest)
            conn.peer_id = welcome.node_id
            conn.on_message = self._on_message
            conn.on_close = self._on_close
            self._coordinator = conn
            if restarted:
                # The old executors went with the old coordinator, and the new ones may
                # reuse their names: orphan every call on them now, before any news (the
                # Demands this sends go to the new coordinator).
                gone = dict.fromkeys([*self._executors, *self._conns])
                self._executors.clear()
                for old in self._conns.values():
                    old.on_close = lambda c: None
                    old.close()
                self._conns.clear()
                self._redial = redial  # so that _executor_gone orphans
                for executor_id in gone:
                    self._executor_gone(executor_id)
                self._redial = None
            unsent, self._unsent = self._unsent, {}
            for message in unsent.values():
                conn.send(message, flush=False)
            for name in sorted(self._placed):
                self._refresh(name)
            conn.flush()
            self._reactor.wake()

    def _refresh(self, name: str) -> None:
        """Resolve ``name`` again without waiting: the reply updates what the client
        knows and releases calls waiting for its pool; a refusal (it is gone) fails
        them."""
        rid = next(self._rids)
        waiter: cf.Future[Any] = cf.Future()
        waiter.add_done_callback(lambda w: self._refresh_failed(name, w))
        self._requests[rid] = waiter
        self._coordinator.send(m.Resolve(rid, name), flush=False)

    def _refresh_failed(self, name: str, waiter: cf.Future[Any]) -> None:
        error = waiter.exception()
        if error is None or self._closed:
            return
        for rid, pending in list(self._pending.items()):
            uses = pending.dag.name == name if pending.dag is not None else None
            if uses or (uses is None and pending.invocation.function == name):
                self._finish(rid, error=error)

    def _coordinator_gone(self, last_error: str) -> None:
        """The window ended without an answer: the cluster is gone."""
        with self._lock:
            if self._closed or self._redial is None:
                return
            redial, self._redial = self._redial, None
            self._unsent.clear()
            self._lose_cluster(
                f"the coordinator at {self.address} went away and did not come back within "
                f"the reconnect window of {redial.window:g} s ({redial.tries} tries; "
                f"last: {last_error})"
            )

    # ------------------------------------------------------------------ incoming messages

    def _on_message(self, conn: Connection, message: Any) -> None:
        match message:
            case m.Welcome():
                pass
            case m.Result(rid, attempt, value):
                self._settle(conn, rid, inv.Replied(attempt, value))
            case m.Failure(rid, attempt, error):
                self._settle(conn, rid, inv.Failed(attempt, error))
            case m.StreamItem(rid, attempt, index, value):
                self._streamed(rid, attempt, index, value)
            case m.ExecutorsChanged(executors, pools):
                self._executors_changed(executors, pools)
            case m.RefHints(homes, complete):
                self.placement.handle(pl.HintsChanged(homes, complete), time.monotonic())
            case m.ExecutorStartFailed(error=error):
                self._start_failed(error)
            case m.RequestFailed(rid, error):
                waiter = self._requests.pop(rid, None)
                if waiter is not None:
                    waiter.set_exception(errors.decode(error, "", ""))
            case m.Resolved(rid):
                self._resolved(message)
                if (waiter := self._requests.pop(rid, None)) is not None:
                    waiter.set_result(message)
            case (
                m.Registered(rid)
                | m.StatusReply(rid)
                | m.ShutdownStarted(rid)
                | m.KvValue(rid)
                | m.KvWritten(rid)
                | m.KvKeys(rid)
                | m.MeterPage(rid)
                | m.LogsPage(rid)
            ):
                waiter = self._requests.pop(rid, None)
                if waiter is not None:
                    waiter.set_result(message)
            case _:
                log.warning("unexpected %s from %r", type(message).__name__, conn)

    def _settle(self, conn: Connection, rid: int, event: inv.Replied | inv.Failed) -> None:
        now = time.monotonic()
        # The room this reply frees goes to held calls, once the executor is known to
        # stay: one that exits after this reply is forgotten first.
        released = self.placement.handle(pl.Settled(rid, event.attempt), now)
        pending = self._pending.get(rid)
        kind = event.error.kind if isinstance(event, inv.Failed) else ""
        exits = kind in _EXECUTOR_EXITS
        if exits and pending is not None and pending.info is not None:
            # A task of an async function timed out: cancelled, its executor stays.
            exits = not (kind == "InvocationTimeout" and pending.info.options.kind in _ON_LOOP)
        if pending is not None:
            self._apply(rid, pending.invocation.handle(event, now))
        if exits:
            self._executor_gone(conn.peer_id)  # it exits after this reply: send no more
        self._carry_out(released, flush=False)

    def _streamed(self, rid: int, attempt: int, index: int, value: bytes) -> None:
        """An item of streamed call ``rid`` arrived: hand it on if it is the next one."""
        pending = self._pending.get(rid)
        if pending is None or pending.stream is None:
            return
        event = inv.Yielded(attempt, index)
        if pending.invocation.handle(event, time.monotonic()) == [inv.Deliver()]:
            try:
                pending.stream.put(serialization.loads(value, what="streamed item"))
            except exc.SerializationError as e:
                self._finish(rid, error=e)

    def _executors_changed(
        self, executors: list[m.ExecutorAddress], pools: dict[str, list[str]]
    ) -> None:
        known = {e.executor_id: e for e in executors}
        gone = set(self._executors) - set(known)
        for executor_id in gone:  # what they said before they left comes first
            if (conn := self._conns.get(executor_id)) is not None:
                self._last_words(conn)
        self._executors = known
        self._placed.update(self._functions)
        self._placed.update(self._dags)
        changed = pl.PoolsChanged(frozenset(known), pools, complete=True)
        released = self.placement.handle(changed, time.monotonic())
        for executor_id in gone:  # their calls are placed again, on the new pools
            self._executor_gone(executor_id)
        self._carry_out(released, flush=False)

    def _last_words(self, conn: Connection) -> None:
        """Handle what an executor that left sent before it left (a timeout or memory
        reply just before it exits): its socket and the coordinator's are not ordered,
        and the news that it left must not turn that reply into ExecutorLost."""
        self._handle_now(conn)  # read, not yet handled
        if not conn.closed:
            conn._on_readable()  # not read yet (an EOF here closes it: nothing was left)
            self._handle_now(conn)

    def _handle_now(self, conn: Connection) -> None:
        """Handle ``conn``'s messages waiting in the reactor's queue ahead of the rest."""
        ready = self._reactor.ready
        theirs = [item for item in ready if item[0] is conn]
        if theirs:
            rest = [item for item in ready if item[0] is not conn]
            ready.clear()
            ready.extend(rest)
            for c, message in theirs:
                self._on_message(c, message)

    def _start_failed(self, error: m.ErrorInfo) -> None:
        """No executor could start: calls held for an empty warm pool (and DAG calls
        parked for one) fail now with the start error, instead of at their deadline."""
        for instruction in self.placement.handle(pl.StartFailed(), time.monotonic()):
            if isinstance(instruction, pl.Unplaceable) and instruction.rid in self._pending:
                pending = self._pending[instruction.rid]
                self._finish(instruction.rid, error=start_error(error, pending))
        self._carry_out([])  # stops watching for pushes if nothing waits any more

    def _apply(self, rid: int, instructions: list[inv.Instruction]) -> None:
        for instruction in instructions:
            match instruction:
                case inv.Complete(value):
                    try:
                        result = serialization.loads(value, what="result")
                    except exc.SerializationError as e:
                        self._finish(rid, error=e)
                    else:
                        self._finish(rid, value=result, error=self._items_lost(rid, result))
                case inv.Reject(error):
                    pending = self._pending[rid]
                    decoded = errors.decode(
                        error, pending.future.invocation_id, pending.invocation.function
                    )
                    if isinstance(decoded, exc.StreamInterrupted):
                        decoded.delivered = pending.invocation.delivered
                    self._finish(rid, error=decoded)
                case inv.Resend(attempt, avoid):
                    self._place(rid, attempt, avoid)
                case inv.Kill(executor_id):
                    invocation_id = self._pending[rid].future.invocation_id
                    self._coordinator.send(m.KillInvocation(executor_id, invocation_id))

    def _items_lost(self, rid: int, count: Any) -> exc.StreamInterrupted | None:
        """For a streamed call that ended after ``count`` items: an error if fewer came
        (an attempt that died after its commit, answered by a retry from its record)."""
        pending = self._pending[rid]
        delivered = pending.invocation.delivered
        if pending.stream is None or count == delivered:
            return None
        return exc.StreamInterrupted(
            f"{pending.invocation.function} yielded {count} items, {delivered} arrived",
            delivered=delivered,
            invocation_id=pending.future.invocation_id,
            function=pending.invocation.function,
        )

    def _finish(self, rid: int, *, value: Any = None, error: BaseException | None = None) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        if self.placement.knows(rid):  # held, parked, or given up while in flight
            self.placement.handle(pl.Forget(rid), time.monotonic())
        self.driver.unwatch(pending.future)
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(value)
        if pending.stream is not None:
            pending.stream.wake()

    def _fail_all(self, error: exc.StratusError) -> None:
        for rid in list(self._pending):
            self._finish(rid, error=error)
        requests, self._requests = self._requests, {}
        self._asked.clear()
        for waiter in requests.values():
            waiter.set_exception(error)

    def _check_open(self) -> None:
        if self._closed:
            raise exc.ClusterClosed(self._close_reason)

    def _check_deadlines(self) -> float | None:
        """Feed ``Tick`` to invocations past their deadline, and to the placement when it
        asked; return when to do it next.

        ``_deadlines`` is a heap of (deadline, rid) with stale entries left in place
        (finished calls, re-sent attempts); it is rebuilt when stale ones dominate.
        """
        heap, now = self._deadlines, time.monotonic()
        while heap and heap[0][0] <= now:
            deadline, rid = heapq.heappop(heap)
            pending = self._pending.get(rid)
            if pending is not None and pending.invocation.deadline == deadline:
                self._apply(rid, pending.invocation.handle(inv.Tick(), now))
        if now >= self.placement.wake_at:  # the reactor writes at the start of its round
            self._carry_out(self.placement.handle(pl.Tick(), now), flush=False)
        if len(heap) > 64 and len(heap) > 2 * len(self._pending):
            heap[:] = [
                (p.invocation.deadline, rid)
                for rid, p in self._pending.items()
                if p.invocation.deadline is not None
            ]
            heapq.heapify(heap)
        soonest = min(heap[0][0] if heap else math.inf, self.placement.wake_at)
        return None if soonest == math.inf else soonest
