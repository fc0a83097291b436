"""The executor: a process that runs invocations, one at a time, on warm code.

Theory of operation: an executor listens on its own socket, says hello to the
coordinator on its control link (``link.Link``), then serves ``Call`` and ``DagInput``
frames in arrival order. Code is fetched from the coordinator once per (function,
version) and kept, with class instances built once. A DAG step sends its result to the
next step's executor, or, at the sink, to the caller. Nested calls go through the
``Caller`` the entry point gave us (the client SDK, which the server never imports); a
function that waits for one re-enters the loop, so the executor keeps serving while it
waits: invocations nest on its stack (``callstack.py``: how deep, and their timeouts).
Whatever the platform's code raises while running a call, the call is answered.

``async def`` functions (and async generators) run as tasks on ``self.loop``, an asyncio
loop the reactor steps (``eventloop.SteppedLoop``): up to the function's ``concurrency``
at once, each with its own transactions, committed when its coroutine returns; the rest
wait in ``_waiting``. Plain and async calls share one path for running and committing:
``Attempts.runs`` (``server/attempt.py``: the life of one attempt, its conflict re-runs,
its one kv+fs+record transaction), a generator that yields each run of the function to
its driver (``_invoke`` calls it, ``_invoke_async`` awaits it) and commits what it
returned.
Generators' items go back one by one on a streamed call (``_Items``).

A function past its ``timeout`` is stopped by SIGALRM: its caller is told
``InvocationTimeout`` and the executor exits, to be replaced by a clean one. A task
past its timeout is cancelled instead, and the executor stays. The executor exits too
when its coordinator connection closes or its parent dies.

``memory_mb`` caps the executor's data segment (RLIMIT_DATA: heap and private anonymous
memory, where Python's objects live) while the function's calls run: an allocation
past it raises MemoryError inside the function, the caller gets
``MemoryLimitExceeded`` and the executor exits, to be replaced by a clean one. Where the
machine has a memory cgroup for us (``cgroups``), the executor's group is capped at
``memory_mb`` too, which also counts shared memory, page cache and the processes the
function started; reaching it stops the group, the fork server signals ``OVER_MEMORY``
and the handler reports ``MemoryLimitExceeded`` like a timeout, then exits.

Load reports (per function: calls and busy seconds so far, calls running and queued)
go to the coordinator every half tick while idle, and at most that often when a call
starts or ends, for the autoscaler (docs/autoscaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stratus import _exceptions as exc
from stratus import backoff
from stratus.config import ClusterConfig
from stratus.fs import FsCache, Volumes
from stratus.kv import KVCache, KVTransaction
from stratus.kv.counters import CounterWriters
from stratus.kv.open import open_store
from stratus.kv.values import codec_for
from stratus.lattice import HybridClock, LatticeCodec
from stratus.objects import ObjectStore
from stratus.protocol import errors, keys, serialization
from stratus.protocol import messages as m
from stratus.protocol.framing import FRAME_OVERHEAD, Codec
from stratus.protocol.metering import Outcome
from stratus.server import callstack, cgroups
from stratus.server.attempt import AttemptOutcome, Attempts, Job
from stratus.server.callstack import Active, CallStack
from stratus.server.context import ImmediateKV
from stratus.server.eventloop import SteppedLoop
from stratus.server.items import Items
from stratus.server.link import CallerFactory, Link
from stratus.server.logs import InvocationLogs
from stratus.server.mail import PostOffice, namespace
from stratus.server.metering import Meter, Running
from stratus.store.base import Store
from stratus.store.feed import ChangeFeed
from stratus.transport import addresses
from stratus.transport.reactor import SPIN, Connection, Reactor

log = logging.getLogger("stratus.executor")

_LOAD_REPORT_INTERVAL = 1.0
_METER_FLUSH_INTERVAL = 0.25  # metering records reach the store at least this often
_CACHE_REFRESH_INTERVAL = 0.05  # while idle: bounds how stale a cached entry can be
_DRAIN_ON_EXIT = 0.05  # a retired executor serves calls already read for at most this
_STALE_AFTER = 300.0  # partial DAG inputs and undeliverable replies are dropped after this
# Replies of functions that usually run quicker than this are batched into one write
# with the replies of the calls read in the same round; slower ones flush first.
_BATCH_BELOW = 0.0002
_FETCH_TIMEOUT = 30.0  # s for the coordinator to send a function's code
_ON_LOOP = frozenset({"async", "async_generator"})  # function kinds run as asyncio tasks
# The call of the task running now, for its log lines (a task sees its own value).
_TASK_CALL: contextvars.ContextVar[m.Call | None] = contextvars.ContextVar(
    "stratus_task_call", default=None
)


@dataclass
class _FanIn:
    created: float
    values: dict[int, bytes] = field(default_factory=dict)
    kv: dict[int, bytes] = field(default_factory=dict)  # upstream kv state, by step


class Executor:
    """One executor process. ``caller`` builds, over the executor's reactor, what nested
    calls go through (``link.Caller``); ``run()`` serves until shut down."""

    def __init__(
        self,
        config: ClusterConfig,
        executor_id: str,
        *,
        caller: CallerFactory,
        cgroup: cgroups.ExecutorGroup | None = None,
    ) -> None:
        self.config = config
        self.executor_id = executor_id
        self.cgroup = cgroup  # the group the fork server put us in (None: a session)
        self.reactor = Reactor(spin=SPIN, limits=config.connections)
        self.codec = Codec(config.key, m.ToExecutor, max_frame=config.max_payload + FRAME_OVERHEAD)
        self.unix = self.reactor.listen(config.executor_unix(executor_id), self._accept)
        self.tcp = ""
        if config.listen:
            host = config.listen.rpartition(":")[0]
            bound = self.reactor.listen(f"{host}:0", self._accept)
            self.tcp = addresses.advertised(bound, config.advertise)  # not 0.0.0.0
        self.link = Link(
            self.reactor,
            config,
            executor_id,
            on_control=self._on_control,
            on_lost=self._on_coordinator_lost,
        )
        self.caller = caller(self.reactor)  # also drives the loop: see server/link.py
        values = codec_for(config.key)  # user objects in the store carry the cluster's seal
        self.store = self._open_store(values)
        self.feed = ChangeFeed(self.store)  # one feed read refreshes both caches
        self.kv_cache = KVCache(
            self.store,
            values=values,
            feed=self.feed,
            hidden=keys.PLATFORM,
            shown=(keys.TENANT_DATA,),  # a tenant's ctx.kv lists its own keys there
        )
        self.fs_cache = FsCache(self.store, feed=self.feed)
        self.volumes = Volumes(self.store, cache=self.fs_cache)
        self.objects = ObjectStore(self.store, config.key)  # app.put's objects, cached
        self.meter = Meter(config.data_dir, config.cluster_id, executor_id, self.store)
        self.meter.cache = self.kv_cache
        self.logs = InvocationLogs(config.data_dir, config.cluster_id, executor_id, self._current)
        self._arrived: dict[int, int] = {}  # id(deferred call) -> when it arrived, ns
        self.clock = HybridClock(executor_id)
        self.kv_now = ImmediateKV(self.kv_cache, self.clock)  # ctx.kv_now
        self.counters = CounterWriters(executor_id)  # writer ids of ctx.kv.incr
        self.post = PostOffice(self.link, self.caller, executor_id, config.max_payload)
        self.attempts = Attempts(  # running a call and committing its effects
            executor_id=executor_id,
            store=self.store,
            feed=self.feed,
            kv_cache=self.kv_cache,
            volumes=self.volumes,
            clock=self.clock,
            counters=self.counters,
            caller=self.caller,
            post=self.post,
            kv_now=self.kv_now,
            objects=self.objects,
            meter=self.meter,
            max_payload=config.max_payload,
            on_store_stuck=self._on_store_stuck,
            on_out_of_memory=self._on_out_of_memory,
        )
        self._code: dict[tuple[str, int], tuple[Any, m.FunctionOptions]] = {}
        self._callers: dict[str, Connection] = {}  # client id -> its connection to us
        self._undelivered: dict[str, list[tuple[float, Any]]] = {}
        self._fanin: dict[tuple[str, int, int], _FanIn] = {}
        self._stack = CallStack()
        self.loop = SteppedLoop(self.reactor)  # where async def functions run
        self._tasks: dict[str, list[Active]] = {}  # per function, its running tasks
        self._waiting: dict[str, deque[tuple[Job, bool, int]]] = {}  # past its concurrency
        self._task_concurrency: dict[str, int] = {}  # of each async function seen
        # While code is being fetched, calls that arrive wait here instead of re-entering.
        self._deferred: deque[tuple[Connection, Any]] | None = None
        self._cost: dict[tuple[str, int], float] = {}  # moving average of run time, seconds
        self.served = 0
        self.running = True
        self._calls: dict[str, int] = {}  # per function, for load reports
        self._busy: dict[str, float] = {}  # seconds spent running each function
        self._cached_reported: list[str] = []  # Ref keys in the last load report
        self._report_every = min(_LOAD_REPORT_INTERVAL, config.autoscaling.tick / 2)
        self._report_due = 0.0  # perf_counter time after which a call start or end reports
        self._memory_mb = 0  # the RLIMIT_DATA in force, 0: none
        self._over_memory = False  # a call hit its memory limit: exit after replying

    # ------------------------------------------------------------------ life cycle

    def _open_store(self, values: LatticeCodec) -> Store:
        """The store, waiting out an unreachable one (Redis down): retried with back-off,
        each failure told to the coordinator (its callers then fail fast), instead of
        exiting to be replaced in a crash loop."""
        for attempt in itertools.count(1):
            try:
                return open_store(self.config.store_url, values)
            except exc.ConnectionFailed as e:
                message = f"executor {self.executor_id} cannot reach its store: {e}"
                log.warning("%s (attempt %d, retrying)", message, attempt)
                error = m.ErrorInfo("ConnectionFailed", f"{message} (attempt {attempt})")
                self.link.send(m.ExecutorStartFailed(self.executor_id, error, True))
                backoff.STORE_RETRY.sleep(attempt)
        raise AssertionError("unreachable")

    def run(self) -> None:
        callstack.deepen()
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(cgroups.OVER_MEMORY, self._on_over_memory)
        # On a node agent's host no abstract socket reaches us from the coordinator's:
        # every peer dials our TCP address.
        local = self.tcp if self.config.coordinator else self.unix
        address = m.ExecutorAddress(self.executor_id, local, self.tcp)
        if self.cgroup is not None:
            self.cgroup.entered()  # in its group before it serves (see cgroups.enter_soon)
        self.link.send(m.ExecutorHello(address, os.getpid(), self.config.executor_offer))
        self.reactor.call_later(self._report_every, self._report_load)
        self.reactor.call_later(_CACHE_REFRESH_INTERVAL, self._refresh_cache)
        if self.feed.signal is not None:
            self.reactor.watch_readable(self.feed.signal.fileno(), self._on_store_signal)
        self.reactor.call_later(_METER_FLUSH_INTERVAL, self._flush_meter)
        self.logs.install()
        with self.caller.polling():
            while self.running:
                self.caller.pump(None)
                self.meter.settle()  # after the replies left: off the callers' wait
            # Retired: serve what callers sent before they heard we left the pools.
            deadline = time.monotonic() + _DRAIN_ON_EXIT
            self.caller.pump(0)
            while time.monotonic() < deadline and self.reactor.ready:
                self.caller.pump(0.005)
            # Async tasks still running end (or time out) first; those without a
            # timeout are abandoned (their callers retry them: nothing was committed).
            tasks = [r for running in self._tasks.values() for r in running]
            until = max((r.deadline or 0.0 for r in tasks), default=0.0)
            while self._tasks and time.monotonic() < until:
                self.caller.pump(0.05)
        self.reactor.flush()
        self.loop.close()
        self.meter.close()
        self.logs.close()
        self.store.close()

    def _on_control(self, message: Any) -> None:
        if isinstance(message, m.ShutdownExecutor):
            self.running = False
        elif isinstance(message, m.FunctionCode):
            # Pinned: load now so the first call finds the code (and the instance) ready.
            if (message.name, message.version) not in self._code:
                # If it fails, the first call loads it again and reports the error.
                with contextlib.suppress(exc.StratusError, _InitFailed):
                    self._install(message)
        elif isinstance(message, m.Unpin):
            # Out of these pools: drop the code (and class instances) unless running.
            running = {r.call.function for r in self._stack} | set(self._tasks)
            for key in [k for k in self._code if k[0] in message.functions]:
                if key[0] not in running:
                    del self._code[key]
        else:
            log.warning("executor %s: unexpected %s", self.executor_id, type(message).__name__)

    def _on_coordinator_lost(self, reason: str) -> None:
        log.info("executor %s exits: %s", self.executor_id, reason)
        os._exit(0)

    def _report_load(self) -> None:
        self._send_load()
        self._drop_stale(time.monotonic())
        self.post.drop_unclaimed(time.monotonic())
        self.reactor.call_later(self._report_every, self._report_load)

    def _send_load(self) -> None:
        self._report_due = time.perf_counter() + self._report_every
        running: dict[str, int] = {}
        for r in self._stack:
            running[r.call.function] = running.get(r.call.function, 0) + 1
        # An async function's tasks count in executors' worth: ``concurrency`` of them
        # fill one, so the autoscaler grows its pool only when its executors are full.
        for name, tasks in self._tasks.items():
            full = self._task_concurrency.get(name, 1)
            running[name] = running.get(name, 0) + -(-len(tasks) // full)
        queued: dict[str, int] = {n: len(w) for n, w in self._waiting.items()}
        for _, message in self.reactor.ready:
            if isinstance(message, m.Call):
                queued[message.function] = queued.get(message.function, 0) + 1
        names = set(self._calls) | set(running) | set(queued)
        functions = {
            n: m.FunctionLoad(
                self._calls.get(n, 0), self._busy.get(n, 0.0), running.get(n, 0), queued.get(n, 0)
            )
            for n in names
        }
        loaded = sorted({name for name, _ in self._code})
        inflight = len(self._stack) + sum(len(t) for t in self._tasks.values())
        # The Ref keys it caches, for the coordinator's locality hints: only when changed.
        cached = self.objects.cached_refs(m.MAX_CACHED_REPORTED)
        changed = None if cached == self._cached_reported else cached
        self._cached_reported = cached
        meter = self.meter.report()
        load = m.ExecutorLoad(inflight, self.served, loaded, meter, functions, changed)
        self.link.send(load)

    def _flush_meter(self) -> None:
        try:
            self.meter.flush()
        except exc.StratusError as e:  # the store is away: the spool keeps the records
            log.warning("executor %s: metering flush failed: %s", self.executor_id, e)
        self.reactor.call_later(_METER_FLUSH_INTERVAL, self._flush_meter)

    def _current(self) -> m.Call | None:
        task_call = _TASK_CALL.get()
        if task_call is not None:
            return task_call
        top = self._stack.top
        return top.call if top is not None else None

    def _refresh_cache(self) -> None:
        if len(self.kv_cache) or len(self.fs_cache):
            self.feed.refresh_if_stale()
        self.reactor.call_later(_CACHE_REFRESH_INTERVAL, self._refresh_cache)

    def _on_store_signal(self) -> None:
        signal = self.feed.signal
        assert signal is not None
        self.feed.refresh_if_stale()
        if not signal.healthy:
            log.warning("executor %s: store change signal lost, polling", self.executor_id)
            self.reactor.unwatch(signal.fileno())

    def _drop_stale(self, now: float) -> None:
        for key, fanin in list(self._fanin.items()):
            if now - fanin.created > _STALE_AFTER:
                del self._fanin[key]
        for caller, queued in list(self._undelivered.items()):
            queued[:] = [(t, msg) for t, msg in queued if now - t <= _STALE_AFTER]
            if not queued:
                del self._undelivered[caller]

    # ------------------------------------------------------------------ incoming frames

    def _accept(self, sock: Any) -> None:
        conn = self.reactor.add_connection(sock, self.codec, name="caller")
        conn.on_message = self._on_message
        conn.on_close = self._on_caller_closed

    def _on_caller_closed(self, conn: Connection) -> None:
        if self._callers.get(conn.peer_id) is conn:
            del self._callers[conn.peer_id]

    def _on_message(self, conn: Connection, message: Any) -> None:
        if self._deferred is not None and isinstance(message, m.Call | m.DagInput):
            self._deferred.append((conn, message))  # wait for the code being fetched
            self._arrived.setdefault(id(message), time.perf_counter_ns())
            return
        match message:
            case m.Call() if conn.peer_id:
                arrived = self._arrived.pop(id(message), 0) if self._arrived else 0
                self._run_call(conn, message, arrived or time.perf_counter_ns())
            case m.DagInput() if conn.peer_id:
                self._arrived.pop(id(message), None)
                self._on_dag_input(message)
            case m.Deliver() if conn.peer_id:
                self.post.deliver(message)
            case m.Hello(peer_id, "executor"):  # a peer's link: DAG inputs and mail only
                conn.peer_id = peer_id
                conn.send(m.Welcome(self.executor_id), flush=False)
            case m.Hello(peer_id):  # a caller: replies to its calls and DAGs go here
                conn.peer_id = peer_id
                self._callers[peer_id] = conn
                conn.send(m.Welcome(self.executor_id), flush=False)
                for _, queued in self._undelivered.pop(peer_id, []):
                    conn.send(queued, flush=False)
            case _:
                log.warning("executor %s: %s before Hello, closing", self.executor_id, message)
                conn.close()

    def _on_dag_input(self, message: m.DagInput) -> None:
        key = (message.invocation_id, message.attempt, message.node)
        fanin = self._fanin.setdefault(key, _FanIn(time.monotonic()))
        fanin.values[message.source] = message.value
        if message.kv:
            fanin.kv[message.source] = message.kv
        node = message.plan.nodes[message.node]
        if len(fanin.values) < len(node.upstream):
            return
        del self._fanin[key]
        try:
            args = tuple(serialization.loads(fanin.values[u]) for u in node.upstream)
        except exc.SerializationError as e:
            self._reply_dag(message.rid, message.attempt, message.reply_to, errors.encode(e))
            return
        call = m.Call(
            message.rid,
            message.invocation_id,
            node.function,
            node.version,
            b"",
            message.attempt,
            node.timeout,
            message.reply_to,
            message.plan,
            message.node,
        )
        self._run(None, call, args, {}, [fanin.kv[u] for u in node.upstream if u in fanin.kv])

    # ------------------------------------------------------------------ running code

    def _run_call(self, conn: Connection, call: m.Call, arrived: int) -> None:
        try:
            args, kwargs = serialization.loads(call.args, what="arguments")
        except exc.SerializationError as e:
            self._reply(conn, call, errors.encode(e))
            return
        self._run(conn, call, args, kwargs, arrived=arrived)

    def _run(
        self,
        conn: Connection | None,
        call: m.Call,
        args: Any,
        kwargs: Any,
        upstream_kv: list[bytes] | None = None,
        arrived: int = 0,
    ) -> None:
        """Run one invocation (or DAG step) and send its result where it must go; an
        ``async def`` (or async generator) starts as a task on the event loop."""
        key = (call.function, call.version)
        cold = key not in self._code
        loading = time.perf_counter_ns()
        try:
            target, options = self._load(call.function, call.version)
        except exc.StratusError as e:
            self._reply(conn, call, errors.encode(e))
            return
        except _InitFailed as e:
            self._reply(conn, call, self._failed(e, None))
            return
        job = Job(conn, call, target, options, args, kwargs, upstream_kv or [], arrived)
        if options.kind in _ON_LOOP:
            self._start_task(job, cold, loading)
            return
        if self._stack.full:
            limit = self.config.max_payload
            self._reply(conn, call, callstack.too_deep(call, self.executor_id, limit))
            return
        if self._cost.get(key, 1.0) > _BATCH_BELOW:
            self.reactor.flush()  # this may run long: don't hold earlier replies back
        started, metered, caller = self._begin(job, cold, loading)
        deadline = None if call.timeout is None else time.monotonic() + call.timeout
        self._stack.push(Active(call, deadline, caller, metered))
        if started >= self._report_due:  # the autoscaler should see a long call running
            self._send_load()
        self.post.begin(
            call.invocation_id, namespace(call.function)
        )  # mail that came before is kept
        try:
            outcome, kv = self._invoke(job, metered)
        except Exception as e:  # the platform's code failed, not the function: answer it
            log.exception("executor %s: running %s failed", self.executor_id, call.function)
            outcome = m.ErrorInfo("StratusError", f"the executor failed running it: {e!r}")
            kv = KVTransaction(self.kv_cache, self.clock)
        except BaseException:
            self.meter.end(metered, "error")
            raise
        finally:
            self.logs.end_invocation()
            self.post.end(call.invocation_id)
            self._stack.pop()
        self._complete(job, started, metered, outcome, kv)

    def _begin(
        self, job: Job, cold: bool, loading: int
    ) -> tuple[float, Running, Connection | None]:
        """Start metering ``job``: when it started, its meter, and where a timeout of it
        is reported."""
        call, arrived = job.call, job.arrived
        started = time.perf_counter()
        metered = self.meter.begin(
            call,
            job.options.resources.memory_mb,
            queue_ns=(loading - arrived if arrived else 0) + (0 if call.cold else call.held_ns),
            cold_start_ns=time.perf_counter_ns() - loading if cold else 0,
            spawn_ns=call.held_ns if call.cold else 0,  # its pool started from nothing
        )
        if job.options.resources.memory_mb != self._memory_mb:
            self._limit_memory(job.options.resources.memory_mb)
        caller = job.conn if call.plan is None else self._callers.get(call.reply_to)
        return started, metered, caller

    def _complete(
        self,
        job: Job,
        started: float,
        metered: Running,
        outcome: bytes | m.ErrorInfo,
        kv: KVTransaction,
    ) -> None:
        """Account for a finished invocation and send its result where it must go."""
        call, conn, key = job.call, job.conn, (job.call.function, job.call.version)
        self.meter.end(metered, _outcome(outcome), kv_reads=len(kv.reads))
        ended = time.perf_counter()
        self._cost[key] = 0.8 * self._cost.get(key, 0.0) + 0.2 * (ended - started)
        self.served += 1
        name = call.function
        self._calls[name] = self._calls.get(name, 0) + 1
        took = ended - started
        if job.options.kind in _ON_LOOP:  # overlapping tasks: see _send_load
            took /= job.options.concurrency
        self._busy[name] = self._busy.get(name, 0.0) + took
        if isinstance(outcome, bytes) and call.plan is not None and call.node != call.plan.sink:
            self._forward(call, outcome, kv.export())
        else:
            self._reply(conn, call, outcome)
        if self._over_memory:  # the heap may be left in any state: a fresh executor follows
            self.reactor.flush()
            self.meter.close()  # its record is stored now, not recovered as lost
            os._exit(4)
        if ended >= self._report_due:
            self._send_load()

    def _start_task(self, job: Job, cold: bool, loading: int) -> None:
        """Start ``job`` (an ``async def``) as a task, or queue it while its function
        has ``concurrency`` tasks running here."""
        name = job.call.function
        self._task_concurrency[name] = job.options.concurrency
        tasks = self._tasks.setdefault(name, [])
        if len(tasks) >= job.options.concurrency:
            self._waiting.setdefault(name, deque()).append((job, cold, loading))
            return
        started, metered, caller = self._begin(job, cold, loading)
        # Not on the stack, so no SIGALRM: its timeout cancels the task.
        deadline = None if job.call.timeout is None else time.monotonic() + job.call.timeout
        running = Active(job.call, deadline, caller, metered)
        tasks.append(running)
        if started >= self._report_due:
            self._send_load()
        self.post.begin(job.call.invocation_id, namespace(job.call.function))
        self.loop.spawn(self._run_task(job, running, started))

    async def _run_task(self, job: Job, running: Active, started: float) -> None:
        """An async invocation, from start to reply, within its timeout."""
        call = job.call
        _TASK_CALL.set(call)
        outcome: bytes | m.ErrorInfo
        try:
            timeout = asyncio.timeout(call.timeout)
            try:
                async with timeout:
                    outcome, kv = await self._invoke_async(job, running.metered)
            except TimeoutError:
                if not timeout.expired():
                    raise
                outcome, kv = (
                    running.timeout_reply().error,
                    KVTransaction(self.kv_cache, self.clock),
                )
        except BaseException:
            self.meter.end(running.metered, "error")
            raise
        finally:
            self.logs.end_invocation()
            self.post.end(call.invocation_id)
            tasks = self._tasks[call.function]
            tasks.remove(running)
            if not tasks:
                del self._tasks[call.function]
        self._complete(job, started, running.metered, outcome, kv)
        self.reactor.flush()
        self.meter.settle()
        waiting = self._waiting.get(call.function)
        if waiting:
            next_job, cold, loading = waiting.popleft()
            if not waiting:
                del self._waiting[call.function]
            self._start_task(next_job, cold, loading)

    def _invoke(self, job: Job, metered: Running) -> AttemptOutcome:
        """Run a plain function or generator through its attempt (``Attempts.runs``)."""
        attempts = self.attempts.runs(job, metered)
        target, generates = job.target, job.options.kind == "generator"
        try:
            ctx, args, kwargs = next(attempts)
            while True:
                try:
                    if generates:
                        value = Items(job, self.config.max_payload).collect(
                            target(ctx, *args, **kwargs)
                        )
                    else:
                        value = target(ctx, *args, **kwargs)
                except BaseException as e:
                    ctx, args, kwargs = attempts.throw(_user_frames(e))
                else:
                    ctx, args, kwargs = attempts.send(value)
        except StopIteration as done:
            outcome: AttemptOutcome = done.value
            return outcome

    async def _invoke_async(self, job: Job, metered: Running) -> AttemptOutcome:
        """Run an ``async def`` or async generator through its attempt (``Attempts.runs``);
        a cancellation of this task (its timeout) abandons the attempt."""
        attempts = self.attempts.runs(job, metered)
        target, generates = job.target, job.options.kind == "async_generator"
        try:
            ctx, args, kwargs = next(attempts)
            while True:
                try:
                    if generates:
                        value = await Items(job, self.config.max_payload).collect_async(
                            target(ctx, *args, **kwargs)
                        )
                    else:
                        value = await target(ctx, *args, **kwargs)
                except asyncio.CancelledError as e:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # ours: its timeout
                    ctx, args, kwargs = attempts.throw(_user_frames(e))
                except BaseException as e:
                    ctx, args, kwargs = attempts.throw(_user_frames(e))
                else:
                    ctx, args, kwargs = attempts.send(value)
        except StopIteration as done:
            outcome: AttemptOutcome = done.value
            return outcome
        finally:
            attempts.close()  # cancelled: its transactions are dropped

    def _on_store_stuck(self, error: exc.StoreLockTimeout) -> None:
        self.link.send(m.StoreStuck(error.holders))  # the coordinator kills stuck executors

    def _on_out_of_memory(self) -> None:
        self._over_memory = True
        self._limit_memory(0)  # room to build the reply; we exit after it

    def _load(self, name: str, version: int) -> tuple[Any, m.FunctionOptions]:
        loaded = self._code.get((name, version))
        if loaded is None:
            outer, self._deferred = self._deferred, deque()
            try:
                reply = self._fetch(name, version)
            finally:
                deferred, self._deferred = self._deferred, outer
                self.reactor.ready.extendleft(reversed(deferred))
            loaded = self._install(reply)
        return loaded

    def _fetch(self, name: str, version: int) -> m.FunctionCode:
        """The code of ``name`` ``version``, asked of the coordinator; the loop runs
        while it comes (calls that arrive meanwhile are deferred by ``_load``)."""
        waiter = self.link.request(lambda rid: m.FetchFunction(rid, name, version))
        deadline = time.monotonic() + _FETCH_TIMEOUT
        with self.caller.polling():
            while not waiter.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise exc.ConnectionFailed(
                        f"the coordinator sent no code for {name} v{version} "
                        f"within {_FETCH_TIMEOUT} s"
                    )
                self.caller.pump(remaining)
        reply = waiter.result()
        assert isinstance(reply, m.FunctionCode)
        return reply

    def _install(self, code: m.FunctionCode) -> tuple[Any, m.FunctionOptions]:
        fn, init_args, init_kwargs = serialization.loads(code.code, what="function code")
        if code.options.is_class:
            try:
                fn = fn(*init_args, **init_kwargs)
            except Exception as e:
                raise _InitFailed(e) from e
        loaded = self._code[(code.name, code.version)] = (fn, code.options)
        return loaded

    def _forward(self, call: m.Call, value: bytes, kv: bytes) -> None:
        assert call.plan is not None
        step = call.plan.nodes[call.node]
        for d in step.downstream:
            message = m.DagInput(
                call.rid,
                call.invocation_id,
                call.attempt,
                call.reply_to,
                call.plan,
                d,
                call.node,
                value,
                kv,
            )
            if call.plan.nodes[d].executor.executor_id == self.executor_id:
                self._on_dag_input(message)  # next step is ours: no socket needed
                continue
            try:
                self.link.peer(call.plan.nodes[d].executor).send(message)
            except exc.StratusError as e:
                lost = m.ErrorInfo("ExecutorLost", f"next DAG step unreachable: {e}")
                self._reply_dag(call.rid, call.attempt, call.reply_to, lost)

    def _failed(self, error: BaseException, options: m.FunctionOptions | None) -> m.ErrorInfo:
        """The reply to a call whose function (or class constructor) raised ``error``."""
        if isinstance(error, _InitFailed) and error.__cause__ is not None:
            error = error.__cause__
        return errors.encode_remote(
            error,
            limit=self.config.max_payload,
            retry_on=options.retry_on if options is not None else (),
            skip_frames=1,  # the executor's own frame that called the user's code
        )

    def _reply(self, conn: Connection | None, call: m.Call, outcome: bytes | m.ErrorInfo) -> None:
        if call.plan is not None:
            if isinstance(outcome, m.ErrorInfo):  # the caller learns which step failed
                outcome = errors.in_step(outcome, call.function, call.node)
            self._reply_dag(call.rid, call.attempt, call.reply_to, outcome)
        elif conn is not None:
            conn.send(_reply_message(call.rid, call.attempt, outcome), flush=False)

    def _reply_dag(self, rid: int, attempt: int, caller: str, outcome: bytes | m.ErrorInfo) -> None:
        message = _reply_message(rid, attempt, outcome)
        conn = self._callers.get(caller)
        if conn is not None:
            conn.send(message, flush=False)
        else:  # the caller's Hello is still on its way
            self._undelivered.setdefault(caller, []).append((time.monotonic(), message))

    def _limit_memory(self, memory_mb: int) -> None:
        """Cap the data segment at ``memory_mb`` (0: no cap; see the module docstring)."""
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = memory_mb * 2**20 if memory_mb else hard  # 0: lift it
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        if self.cgroup is not None:
            self.cgroup.limit_memory(memory_mb)
        self._memory_mb = memory_mb

    # ------------------------------------------------------------------ timeouts

    def _on_alarm(self, signum: int, frame: Any) -> None:
        expired = self._stack.expired(time.monotonic())
        if not expired:  # armed for a call that has finished
            return
        for active in expired:
            self.meter.abort(active.metered, "timeout")
            active.last_words(active.timeout_reply())
        # Whatever the function was doing is abandoned; a fresh executor replaces us.
        os._exit(3)

    def _on_over_memory(self, signum: int, frame: Any) -> None:
        """Our group reached its memory limit (sent by the fork server, which raised the
        limit a little so that this reply can be built): report it and exit."""
        for active in self._stack:
            self.meter.abort(active.metered, "error")
            used = f"{active.call.function} used over {self._memory_mb} MB"
            active.last_words(active.failure("MemoryLimitExceeded", used))
        os._exit(4)


def _user_frames(error: BaseException) -> BaseException:
    """``error`` with the executor's own frames above the user's code left out of its
    traceback (the generator it is thrown into adds its frame, which ``_failed`` skips)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next:
        tb = tb.tb_next
    return error.with_traceback(tb)


class _InitFailed(Exception):
    """A class's constructor raised while warming it up."""


def _outcome(outcome: bytes | m.ErrorInfo) -> Outcome:
    if isinstance(outcome, bytes):
        return "ok"
    return _OUTCOMES.get(outcome.kind, "error")


_OUTCOMES: dict[str, Outcome] = {"ConflictError": "conflict", "InvocationTimeout": "timeout"}


def _reply_message(rid: int, attempt: int, outcome: bytes | m.ErrorInfo) -> Any:
    if isinstance(outcome, bytes):
        return m.Result(rid, attempt, outcome)
    return m.Failure(rid, attempt, outcome)
