"""The coordinator: names, placements and the executor pool, off the hot path.

Theory of operation: clients and executors connect and say ``Hello``. Clients register
functions and DAGs and ask where a name may run (``Resolve``); after that they call
executors directly and come back only when the executor set changes, which the
coordinator pushes to every client. Executors, on their control link
(``server/link.py``), say ``ExecutorHello`` when they listen, report load every tick and
fetch code by (name, version); the link hears the executor set too, and the executor's
own ``Client`` (for nested calls) is a client like any other. The pool itself is the
``Scheduler`` state machine; this shell carries out its instructions with the fork
server (spawn) and signals (kill).

Warm pools (docs/autoscaling.md): every ``autoscaling.tick`` the load reports become one
sample per function for ``Elastic`` (the autoscaler and the keep-alive policy), whose
pool sizes go to the scheduler as ``SetPool``. A caller holding calls for an empty pool
sends ``Demand``; that, and ``Resolve``, are decided at once: the cold path.

Nodes (docs/scaling.md): this host is node ``LOCAL`` with its own fork server. A node
agent on another host (``stratus node --join``, server/node.py) connects over TCP and
says ``NodeHello``; a different stratus version, or a store only this host can reach,
is refused with ``NodeRefused``, a wrong key never gets past the first frame's
signature. A node taken gets ``NodeWelcome`` (this cluster's config, without the key)
and the scheduler places executors there; the agent is a remote fork server: it takes
``SpawnExecutor`` and ``KillExecutor`` and relays its fork server's reports. When its
link closes, or it is silent past the scheduler's deadline, its executors are forgotten
(their callers retry elsewhere: exactly-once effects make that safe) and pools refill.

A server (``listen``) proves it holds its store's key and takes the store's coordinator
lease before it serves (``server/takeover.py``), renews it while it runs and stops, with
``exit_status`` 1, when it loses it: a coordinator restarted on another host takes over,
and never two serve one store (docs/scaling.md). Each ``NodeAlive`` is answered with
``CoordinatorAlive``, so agents also see a coordinator that hangs with its link open.

Data locality (docs/scaling.md): executors list in their load reports the Ref keys they
cache; ``RefDirectory`` (server/locality.py) keeps key -> executors and says when to push
``RefHints`` to clients (a snapshot when one connects, then what changed, rate-limited),
so every client, not only the one that put a Ref, sends calls where it is cached.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from typing import Any

import msgspec

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus._version import __version__
from stratus.config import ClusterConfig
from stratus.kv.open import open_store
from stratus.kv.values import codec_for
from stratus.protocol import errors
from stratus.protocol import messages as m
from stratus.protocol.framing import FRAME_OVERHEAD, Codec
from stratus.server import cgroups, forkserver
from stratus.server import locality as loc
from stratus.server import pools as el
from stratus.server import scheduler as sched
from stratus.server.clientkv import ClientKV
from stratus.server.observe import Observer
from stratus.server.registry import Registry
from stratus.server.saved_registry import SavedRegistry
from stratus.server.takeover import LeaseKeeper, check_key
from stratus.transport import addresses as addr
from stratus.transport.reactor import Connection, Reactor

log = logging.getLogger("stratus.coordinator")

_TICK = 0.5
_COLLECT_EVERY = 60.0  # seconds between deletions of expired invocation records
_GROWS_FOR = 30.0  # seconds a provisioner's offer to add nodes holds after its poll


class Coordinator:
    """A cluster's control plane. Build it, then ``run()`` until shutdown.

    ``run_executor`` is what the fork server runs in each executor it forks (see
    ``stratus._node``, which wires executors to the client SDK for nested calls).
    """

    def __init__(self, config: ClusterConfig, *, run_executor: forkserver.RunExecutor) -> None:
        self.config = config
        # What this server and its executors create (the store, spools, logs) is its
        # owner's only; so is what an older version left readable.
        os.umask(0o077)
        cfg.secure_data_dir(config)
        # First, an unusable store stops us before forking. It is closed again before the
        # fork: an LMDB environment may be open once per process, and forked executors
        # would inherit this one.
        open_store(config.store_url).close()
        # Fork the fork server next, while this process has a single thread.
        self._forkserver_pid, forkserver_sock = forkserver.start(config, run_executor)
        self.kv = ClientKV(config.store_url, codec_for(config.key), on_stuck=self._kill_stuck)
        self.reactor = Reactor(limits=config.connections)
        self.reactor.watch_readable(self.kv.fileno(), self._send_kv_replies)
        max_frame = config.max_payload + FRAME_OVERHEAD
        self.codec = Codec(config.key, m.ToCoordinator, max_frame=max_frame)
        fork_codec = Codec(config.key, m.FromForkServer, max_frame=1 << 16)
        self._forkserver = self.reactor.add_connection(forkserver_sock, fork_codec, name="fork")
        self._forkserver.peer_id = "forkserver"
        self._forkserver.on_message = self._on_forkserver
        self._forkserver.on_close = lambda conn: self.stop("the fork server died")
        self.lease: LeaseKeeper | None = None  # a server's claim on its store
        try:
            self.addresses = [self.reactor.listen(config.coordinator_unix, self._accept)]
            if config.listen:
                self.addresses.append(self.reactor.listen(config.listen, self._accept))
            # A server proves it has the store's key and takes the store's lease before it
            # serves, or reads the registry: a coordinator on another host may take over.
            if config.listen:
                check_key(self.kv.store, config.key, config.cluster_id, config.store_url)
                self.lease = LeaseKeeper(
                    self.kv.store,
                    config.key,
                    address=addr.advertised(self.addresses[-1], config.advertise),
                    cluster_id=config.cluster_id,
                    duration=config.lease,
                )
                self.lease.acquire()
            self.observer = Observer(config, self.kv.store)  # metering, metrics, logs
            # A server (``stratus up``) keeps its registry in the store across restarts; an
            # embedded cluster lives as long as its program, which registers its functions.
            self.saved: SavedRegistry | None = None
            self.registry = Registry()
            if config.listen:
                self.saved = SavedRegistry(self.kv.store, config.key)
                self.registry, _ = self.saved.load()
        except exc.StratusError:
            if self.lease is not None:
                self.lease.release()
            _kill(self._forkserver_pid)
            os.waitpid(self._forkserver_pid, 0)
            self.reactor.close()
            raise
        self.scheduler = sched.Scheduler(
            config.pool_size, offer=config.executor_offer, drain=config.autoscaling.drain
        )
        self.elastic = el.Elastic(config.autoscaling)
        self._loads = el.LoadBook()
        self.locality = loc.RefDirectory()
        self._hints_flush_due = False  # a timer will feed the directory Flush
        self._clients: dict[Connection, str] = {}
        self._executor_conns: dict[str, Connection] = {}
        self._pids: dict[str, int] = {}  # executors of this host (node LOCAL)
        self._nodes: dict[str, Connection] = {}  # node agents by node id
        self._on_ready: list[Any] = []
        # Why the last executor could not start, until one does: a caller demanding an
        # empty pool meanwhile hears it at once instead of waiting for its deadline.
        self._start_error: m.ExecutorStartFailed | None = None
        # What a node a polling provisioner can add offers, until its poll is stale.
        self._grows: m.Resources | None = None
        self._grows_until = 0.0
        self.running = True
        self.stop_reason = ""
        self.exit_status = 0  # 1: it stopped because it lost the store's lease

    # ------------------------------------------------------------------ life cycle

    def when_ready(self, callback: Any) -> None:
        """Call ``callback()`` once the coordinator serves (pools start empty)."""
        self._on_ready.append(callback)

    def watch_lifeline(self, fd: int) -> None:
        """Stop when ``fd`` (a pipe from the parent that nobody writes) reaches EOF."""
        self.reactor.watch_fd(fd, lambda: self.stop("the parent process exited"))

    def run(self) -> None:
        self._apply(self.scheduler.handle(sched.Start(), time.monotonic()))
        for versions in self.registry.functions.values():  # reloaded: their pool bounds
            o = versions[-1].options
            configure = el.Configure(versions[-1].name, o.min_instances, o.max_instances)
            self._resize(self.elastic.handle(configure, time.monotonic()))
        if self.lease is not None:
            self.lease.start(self._lease_lost)
        self.reactor.call_later(_TICK, self._tick)
        self.reactor.call_later(_COLLECT_EVERY, self._collect_records)
        self.reactor.call_later(self.config.autoscaling.tick, self._autoscale)
        for callback in self._on_ready:
            callback()
        self._on_ready.clear()
        while self.running:
            self.reactor.run_once(None)
        self._shutdown()

    def stop(self, reason: str, status: int = 0) -> None:
        if self.running:
            log.info("coordinator stopping: %s", reason)
            self.running, self.stop_reason, self.exit_status = False, reason, status

    def _lease_lost(self, reason: str) -> None:
        """From the lease's thread: another coordinator may serve the store now."""
        self.stop(f"it lost the store's lease: {reason}", 1)
        self.reactor.wake()

    def _shutdown(self) -> None:
        self._apply(self.scheduler.handle(sched.Stop(), time.monotonic()))
        self.reactor.flush()
        # Give executors a moment to exit; the fork server's death takes the rest.
        deadline = time.monotonic() + 2.0
        while self._pids and time.monotonic() < deadline and not self._forkserver.closed:
            self.reactor.run_once(0.05)
        for pid in self._pids.values():
            _kill(pid)
        self._stop_forkserver()
        self.observer.close()
        if self.lease is not None:
            self.lease.release()
        self.kv.close()
        self.reactor.close()

    def _stop_forkserver(self) -> None:
        """SIGTERM first: the fork server then kills what executors started (their
        groups); SIGKILL if it does not exit in time. Then sweep the cluster's cgroups,
        in case the fork server could not."""
        pid = self._forkserver_pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    _kill(pid)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
        support = cgroups.detect()
        if support.cgroups:
            with contextlib.suppress(OSError):
                cluster = cgroups.ClusterGroups(self.config.cluster_id, support, pid, create=False)
                cluster.kill_all()

    def _send_kv_replies(self) -> None:
        for conn, reply in self.kv.replies():
            if not conn.closed:
                conn.send(reply)

    def _kill_stuck(self, pids: list[int]) -> bool:
        """Kill those of ``pids`` that are our executors (they held the store's write lock
        past its deadline: stopped, or hung); whether any was. Called on the kv worker, or
        on the loop when an executor reports it (``StoreStuck``)."""
        ours = set(pids) & set(self._pids.copy().values())
        for pid in ours:
            log.warning("killing executor process %d: it held the store's write lock", pid)
            _kill(pid)
        return bool(ours)

    def _collect_records(self) -> None:
        self.kv.collect_records()
        self.reactor.call_later(_COLLECT_EVERY, self._collect_records)

    def _tick(self) -> None:
        self._apply(self.scheduler.handle(sched.Tick(), time.monotonic()))
        self.observer.tick(list(self.scheduler.executors.values()))
        self.reactor.call_later(_TICK, self._tick)

    def _autoscale(self) -> None:
        now = time.monotonic()
        for load in self._loads.loads():
            self.elastic.handle(load, now)
        for name in list(self.elastic.functions):  # a burst is measured against these
            self.elastic.handle(el.PoolChanged(name, *self.scheduler.pool_counts(name)), now)
        self._resize(self.elastic.handle(el.Tick(f"tick {now:.3f}"), now))
        self.reactor.call_later(self.config.autoscaling.tick, self._autoscale)

    def _resize(self, resizes: list[el.Resize]) -> None:
        now = time.monotonic()
        for r in resizes:
            log.info("pool %s -> %d: %s", r.function, r.size, r.reason)
            versions = self.registry.functions.get(r.function)
            preload = versions[-1].options.preload if versions else ()
            partners = {  # co-located with the functions of its DAGs
                n.function
                for dag in self.registry.dags.values()
                if any(n.function == r.function for n in dag)
                for n in dag
            } - {r.function}
            request = versions[-1].options.resources if versions else None
            pool = sched.SetPool(r.function, r.size, preload, tuple(sorted(partners)), request)
            self._apply(self.scheduler.handle(pool, now))

    def _demand(self, function: str, queued: int) -> None:
        now = time.monotonic()
        self.elastic.handle(el.PoolChanged(function, *self.scheduler.pool_counts(function)), now)
        self._resize(self.elastic.handle(el.Demand(function, queued), now))

    # ------------------------------------------------------------------ instructions

    def _apply(self, instructions: list[sched.Instruction]) -> None:
        for instruction in instructions:
            match instruction:
                case sched.Spawn(executor_id, preload, node, gpus):
                    gpu_ids = None if gpus is None else list(gpus)
                    spawn = m.SpawnExecutor(executor_id, list(preload), gpu_ids)
                    if node == sched.LOCAL:
                        self._forkserver.send(spawn)
                    elif (link := self._nodes.get(node)) is not None:
                        link.send(spawn)
                case sched.Retire(executor_id):
                    if (conn := self._executor_conns.get(executor_id)) is not None:
                        conn.send(m.ShutdownExecutor())
                case sched.Pin(executor_id, function):
                    conn = self._executor_conns.get(executor_id)
                    versions = self.registry.functions.get(function)
                    if conn is not None and versions:  # the code before the first call
                        v = versions[-1]
                        conn.send(m.FunctionCode(0, v.name, v.version, v.code, v.options))
                case sched.Unpin(executor_id, function):
                    if (conn := self._executor_conns.get(executor_id)) is not None:
                        conn.send(m.Unpin([function]))
                case sched.Kill(executor_id, reason):
                    log.info("killing executor %s: %s", executor_id, reason)
                    conn = self._executor_conns.get(executor_id)
                    if reason == "cluster shutting down" and conn is not None:
                        conn.send(m.ShutdownExecutor())
                    elif executor_id in self._pids:
                        _kill(self._pids[executor_id])
                    elif (link := self._nodes.get(self.scheduler.node_of(executor_id))) is not None:
                        link.send(m.KillExecutor(executor_id))
                case sched.ExecutorsChanged(executors, pools):
                    lists = {f: list(ids) for f, ids in pools.items()}
                    push = m.ExecutorsChanged(list(executors), lists)
                    # Executors hear it on their links too: where DAG inputs and mail go.
                    for conn in [*self._clients, *self._executor_conns.values()]:
                        conn.send(push, flush=False)
                case sched.DropNode(node_id, reason, executors):
                    log.warning("node %s lost (%s) with executors %s", node_id, reason, executors)
                    if (link := self._nodes.pop(node_id, None)) is not None:
                        link.close()
                    for executor_id in executors:
                        self._loads.forget(executor_id)
                        self._locality(loc.Left(executor_id))
                        if (link := self._executor_conns.pop(executor_id, None)) is not None:
                            link.close()

    def _locality(self, event: loc.Event, *, to: Connection | None = None) -> None:
        """Feed the Ref directory; push the hints it gives (a snapshot to ``to`` only)."""
        for push in self.locality.handle(event, time.monotonic()):
            hints = m.RefHints(push.homes, push.complete)
            for conn in [to] if push.complete and to is not None else list(self._clients):
                conn.send(hints, flush=False)
        if self.locality.wake_at < math.inf and not self._hints_flush_due:
            self._hints_flush_due = True
            delay = max(0.0, self.locality.wake_at - time.monotonic())
            self.reactor.call_later(delay, self._flush_hints)

    def _flush_hints(self) -> None:
        self._hints_flush_due = False
        self._locality(loc.Flush())

    def _on_forkserver(self, conn: Connection, message: Any) -> None:
        match message:
            case m.ExecutorSpawned(executor_id, pid):
                self._pids[executor_id] = pid
            case m.ExecutorExited():
                self._executor_exited(message, sched.LOCAL)

    def _executor_exited(self, message: m.ExecutorExited, node: str) -> None:
        executor_id, pid, status, error = (
            message.executor_id,
            message.pid,
            message.status,
            message.error,
        )
        rec = self.scheduler.executors.get(executor_id)
        if rec is None or rec.node != node:
            return  # not (or no longer) that node's: a lost node's late report
        log.info("executor %s (pid %d, node %s) exited with %d", executor_id, pid, node, status)
        if rec.address is None and not self.scheduler.stopping:
            why = f"executor {executor_id} exited with status {status} before it was ready"
            info = m.ErrorInfo("ExecutorStartFailed", f"{why}: {error}" if error else why)
            self._start_failed(m.ExecutorStartFailed(executor_id, info))
        self._pids.pop(executor_id, None)
        self._executor_conns.pop(executor_id, None)
        if node == sched.LOCAL:  # a node's spools are on its own disk
            self.observer.executor_exited(executor_id)  # bill what it was running
        self._loads.forget(executor_id)
        self._locality(loc.Left(executor_id))
        self._apply(self.scheduler.handle(sched.Exited(executor_id), time.monotonic()))

    # ------------------------------------------------------------------ nodes

    def _node_hello(self, conn: Connection, hello: m.NodeHello) -> None:
        refusal = self._refusal(hello)
        if refusal:
            log.warning("refused node %s: %s", hello.node_id, refusal)
            conn.send(m.NodeRefused(refusal))
            self.reactor.call_later(0.0, conn.close)  # after the refusal is written
            return
        conn.peer_id = hello.node_id
        self._nodes[hello.node_id] = conn
        conn.on_close = self._on_node_closed
        # The node's executors start from our config; the key never travels.
        shared = msgspec.structs.replace(self.config, key=b"", store=self.config.store_url)
        conn.send(m.NodeWelcome(self.config.cluster_id, cfg.encode(shared)))
        c = hello.capacity
        offer = m.Resources(cpu=1.0, memory_mb=c.memory_mb // max(1, c.cores), gpus=c.gpus)
        log.info(
            "node %s joined: %d cores, %d MB, %d GPUs", hello.node_id, c.cores, c.memory_mb, c.gpus
        )
        gpu_ids = tuple(c.gpu_ids) or tuple(str(i) for i in range(c.gpus))
        joined = sched.NodeJoined(hello.node_id, max(0, c.cores), offer, gpu_ids)
        self._apply(self.scheduler.handle(joined, time.monotonic()))

    def _refusal(self, hello: m.NodeHello) -> str:
        """Why ``hello``'s node cannot join, or ""."""
        if hello.version != __version__:
            return f"node {hello.node_id} runs stratus {hello.version}, this cluster {__version__}"
        if hello.node_id == sched.LOCAL or hello.node_id in self._nodes:
            return f"node id {hello.node_id!r} is taken: give each node its own (--node-id)"
        if not self.config.listen:
            return "an embedded cluster takes no nodes: start a server with `stratus up --listen`"
        store = self.config.store_url
        scheme, _, rest = store.partition(":")
        if scheme in ("sqlite", "lmdb", "memory"):
            return (
                f"this cluster's store ({store}) lives on the coordinator's host: nodes need "
                "a store every host reaches (stratus up --store redis://HOST:PORT)"
            )
        host = rest.removeprefix("//").rpartition("@")[2].partition("/")[0].rpartition(":")[0]
        if host.strip("[]") in ("localhost", "::1") or host.startswith("127."):
            return f"this cluster's store ({store}) is on the coordinator's loopback, unreachable"
        return ""

    def _on_node_message(self, conn: Connection, message: Any) -> None:
        now = time.monotonic()
        match message:
            case m.NodeAlive():
                conn.send(m.CoordinatorAlive())  # the agent's own deadline on us
                self._apply(self.scheduler.handle(sched.NodeAlive(conn.peer_id), now))
            case m.ExecutorSpawned():
                pass  # its pid comes with its hello
            case m.ExecutorExited():
                self._executor_exited(message, conn.peer_id)
            case _:
                log.warning("node %s sent %s: ignored", conn.peer_id, type(message).__name__)

    def _on_node_closed(self, conn: Connection) -> None:
        if self._nodes.get(conn.peer_id) is conn:
            lost = sched.NodeLost(conn.peer_id, "its link closed")
            self._apply(self.scheduler.handle(lost, time.monotonic()))

    # ------------------------------------------------------------------ connections

    def _accept(self, sock: Any) -> None:
        conn = self.reactor.add_connection(sock, self.codec, name="peer")
        conn.on_message = self._on_message
        conn.on_close = self._on_close

    def _on_close(self, conn: Connection) -> None:
        self._clients.pop(conn, None)
        for executor_id, c in list(self._executor_conns.items()):
            if c is conn:  # its process exit, reported by the fork server, follows
                del self._executor_conns[executor_id]

    def _on_message(self, conn: Connection, message: Any) -> None:
        if self.lease is not None and not self.lease.serving():
            # Past the lease's deadline (this process was stopped, or the store is away):
            # a successor may serve the store, so we must not answer.
            self._lease_lost(self.lease.lost or "its deadline passed before a renewal")
            return
        if not conn.peer_id and isinstance(message, m.NodeHello):
            conn.on_message = self._on_node_message
            self._node_hello(conn, message)
            return
        if not conn.peer_id and not isinstance(message, m.Hello):
            log.warning("%s before Hello: closing", type(message).__name__)
            conn.close()
            return
        try:
            self._handle(conn, message)
        except exc.StratusError as e:
            conn.send(m.RequestFailed(getattr(message, "rid", 0), errors.encode(e)))

    def _handle(self, conn: Connection, message: Any) -> None:
        now = time.monotonic()
        match message:
            case m.Hello(peer_id, role):
                conn.peer_id = peer_id
                if role == "client":
                    self._clients[conn] = peer_id
                conn.send(m.Welcome(self.config.cluster_id))
                if role == "client":  # where Refs are cached; none: forget older hints
                    self._locality(loc.Snapshot(), to=conn)
            case m.ExecutorHello(address, pid, resources):
                self._start_error = None
                self._executor_conns[address.executor_id] = conn  # its link
                self._apply(self.scheduler.handle(sched.Ready(address, pid, resources), now))
            case m.ExecutorLoad(
                inflight=inflight, served=served, loaded=loaded, functions=functions, cached=cached
            ):
                if cached is not None and conn.peer_id in self._executor_conns:
                    self._locality(loc.Reported(conn.peer_id, tuple(cached)))
                queued = sum(f.queued for f in functions.values())
                event = sched.LoadReported(
                    conn.peer_id, inflight, served, frozenset(loaded), queued
                )
                self._loads.report(conn.peer_id, functions)
                self._apply(self.scheduler.handle(event, now))
                self.observer.load_reported(message)
            case m.ExecutorStartFailed(executor_id, _, retrying):
                self._start_failed(message)
                if retrying:
                    self._apply(self.scheduler.handle(sched.StartDelayed(executor_id), now))
            case m.StoreStuck(holders) if conn.peer_id in self._executor_conns:
                self._kill_stuck(holders)
            case m.Demand(function, queued) if function in self.registry.functions:
                self._demand(function, queued)
                if self._start_error is not None and function not in self.scheduler.pools():
                    conn.send(self._start_error)
            case m.Register(rid, name, code, options):
                entry = self.registry.next_version(name, code, options)
                if self.saved is not None:  # stored before it is acknowledged
                    self.saved.save_function(entry)
                self.registry.add(entry)
                conn.send(m.Registered(rid, name, entry.version))
                configure = el.Configure(name, options.min_instances, options.max_instances)
                self._resize(self.elastic.handle(configure, now))
            case m.RegisterDag(rid, name, nodes):
                self.registry.check_dag(name, nodes)
                if self.saved is not None:
                    self.saved.save_dag(name, nodes)
                self.registry.register_dag(name, nodes)
                conn.send(m.Registered(rid, name, 1))
            case m.DeleteDag(rid, name):
                if name not in self.registry.dags:
                    raise exc.FunctionNotFound(name)
                if self.saved is not None:
                    self.saved.delete_dag(name)
                self.registry.delete_dag(name)
                conn.send(m.Registered(rid, name, 0))
            case m.Resolve(rid, name):
                conn.send(self._resolve(rid, name))
            case m.FetchFunction(rid, name, version):
                entry = self.registry.get(name, version)
                conn.send(m.FunctionCode(rid, name, version, entry.code, entry.options))
            case m.KillInvocation(executor_id, invocation_id):
                reason = f"invocation {invocation_id} ran past its deadline"
                self.observer.kill_requested(executor_id, invocation_id)
                self._apply(self.scheduler.handle(sched.KillRequested(executor_id, reason), now))
            case m.StatusRequest(rid):
                conn.send(self._status(rid))
            case m.NodeDemandRequest(rid, draining, grows):
                conn.send(self._node_demand(rid, draining, grows))
            case m.ShutdownCluster(rid):
                conn.send(m.ShutdownStarted(rid))
                self.stop(f"asked by {conn.peer_id}")
            case m.KvRead() | m.KvWrite() | m.KvList():
                self.kv.submit(conn, message)  # answered off the loop: the store may wait
            case m.MeterRead() | m.LogsRead():
                conn.send(self.observer.handle(message))

    def _start_failed(self, failure: m.ExecutorStartFailed) -> None:
        """Tell every caller: those holding calls for an empty pool fail them."""
        log.warning("%s", failure.error.message)
        self._start_error = failure
        for conn in self._clients:
            conn.send(failure, flush=False)

    def _resolve(self, rid: int, name: str) -> m.Resolved:
        dag = self.registry.dags.get(name)
        names = [node.function for node in dag] if dag is not None else [name]
        infos = [self.registry.latest(n).info() for n in names]
        grows = self._grows if time.monotonic() < self._grows_until else None
        for info in infos:
            request = info.options.resources
            if grows is not None and sched.fits(request, grows):
                continue  # a node the provisioner adds will host it: its calls wait
            if not self.scheduler.can_ever_host(request):
                offers = ", ".join(str(o) for o in self.scheduler.offers())
                raise exc.NoCapacity(
                    f"no executor can host {info.name}: it requests {info.options.resources}, "
                    f"executors offer {offers or 'nothing'}"
                )
        pools = self.scheduler.pools()
        for n in names:  # a resolve comes right before a call: warm an empty pool now
            if n not in pools:
                self._demand(n, 1)
        pools = self.scheduler.pools()
        executors = [r.address for r in self.scheduler.ready() if r.address is not None]
        lists = {n: list(pools.get(n, ())) for n in names}
        return m.Resolved(rid, name, infos, dag, executors, lists)

    def _node_demand(
        self, rid: int, draining: list[str], grows: m.Resources | None
    ) -> m.NodeDemand:
        """A provisioner's poll (docs/autoscaling.md): drain the nodes it will stop, and
        say what the pools miss and how idle each node is."""
        now = time.monotonic()
        self._grows, self._grows_until = grows, now + _GROWS_FOR
        self._apply(self.scheduler.handle(sched.DrainNodes(frozenset(draining)), now))
        nodes = [m.NodeReport(*vars(u).values()) for u in self.scheduler.usage(now)]
        default = m.Resources()
        shortfall = [
            m.Shortfall(request or default, missing)
            for request, missing in self.scheduler.shortfall()
        ]
        return m.NodeDemand(rid, nodes, shortfall)

    def _status(self, rid: int) -> m.StatusReply:
        executors = [
            m.ExecutorStatus(
                r.executor_id,
                r.pid or self._pids.get(r.executor_id, 0),
                r.state.value,
                r.inflight,
                r.served,
                sorted(r.loaded),
                pinned=sorted(r.pins),
                node=r.node,
            )
            for r in sorted(self.scheduler.executors.values(), key=lambda r: r.executor_id)
        ]
        functions = [v[-1].info() for v in self.registry.functions.values()]
        # The state machines run on the monotonic clock; people read wall-clock times.
        to_wall = time.time() - time.monotonic()
        pools = [
            m.PoolStatus(
                name,
                size,
                *self.scheduler.pool_counts(name),
                why,
                changed_at and changed_at + to_wall,
            )
            for name, (size, why, changed_at) in self.elastic.sizes().items()
        ]
        dags = list(self.registry.dags)
        return m.StatusReply(
            rid,
            self.config.cluster_id,
            executors,
            functions,
            dags,
            metrics=self.observer.metrics.address,
            pools=pools,
        )


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
