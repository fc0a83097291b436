"""The executor pool and the functions pinned on it: a state machine without I/O.

Theory of operation: executors are generic processes (any of them can run any function);
a function's *warm pool* is the set of executors it is pinned on, and clients send its
calls only there. The coordinator sets each pool's size (``SetPool``, decided by the
autoscaler and the keep-alive policy) and feeds what happens to executors; the
scheduler pins and unpins functions, spawns executors while fewer than ``cap`` are live,
and stops the executors left with no function, so an idle cluster holds no executor.

    executor state   event                          next       instructions
    --------------   ----------------------------   --------   ---------------------------
    (none)           a pool needs an executor       starting   Spawn (below the cap)
    starting         Ready                          ready      Pin (each function), ExecutorsChanged
    starting         StartDelayed (store away)      starting   (its start timeout restarts)
    starting         Tick (no hello in time)        stopping   Kill
    ready            its last function unpinned     draining   Unpin, ExecutorsChanged
    ready, draining  a pool needs an executor       ready      Pin, ExecutorsChanged (no fork)
    draining         Tick (drained, reported idle)  stopping   Retire
    ready            KillRequested                  stopping   Kill, ExecutorsChanged
    any              Exited                         (gone)     ExecutorsChanged; pools refill

A pool that needs one more executor takes, in this order: a draining executor (already
running), one that hosts a function of the same DAG (``colocate``: a DAG's steps then
pass results inside one process), a new one while the cluster has fewer than ``cap``
live executors (calls of different functions then do not wait for each other), else the
live executor without
the function that has the fewest pinned (so under the cap functions share executors,
and a chain of nested calls never waits for an executor that cannot exist). A pool that
shrinks leaves the executor with the fewest functions first, then the least loaded.
A draining executor stays reachable, so calls sent before clients heard of the change
finish; it stops once it has reported being idle. Executors that keep dying are
replaced with a growing delay, so a crash loop does not eat the machine.

Nodes (docs/scaling.md): executors live on nodes, each with its own cap (its cores) and
what each of its executors offers (a core, a share of its memory, its GPUs). The
coordinator's own host is node ``LOCAL``, built from ``cap`` and ``offer``; node agents
join (``NodeJoined``) and leave (``NodeLost``, or silence past ``node_timeout``). A new
executor goes to the node, among those whose offer fits the function's ``resources``
and below their cap, with the fewest live executors for its cap; a pool never takes an
executor whose offer does not fit. A node that is lost takes its executors with it (not
counted as crashes: they did nothing wrong), and the pools refill elsewhere.

    node state       event                          next       instructions
    --------------   ----------------------------   --------   ---------------------------
    (none)           NodeJoined                     joined     (pools may spawn there)
    joined           NodeAlive                      joined     (its deadline moves)
    joined           NodeLost                       (gone)     ExecutorsChanged; pools refill
    joined           Tick (silent past the timeout) (gone)     DropNode, ExecutorsChanged
    joined           DrainNodes (names it)          draining   (no new executor goes there)
    draining         DrainNodes (does not name it)  joined     (pools may spawn there again)

GPUs are partitioned, not shared: a node that reports GPU ids (``NodeJoined.gpu_ids``)
gives each new executor its own set of them, as many as the function it is spawned for
requests and held by no other executor of the node until that executor has exited;
``Spawn.gpus`` is that set (empty for a function without GPUs: the fork server hides
every GPU from it). An executor holding GPUs joins only pools of functions that want
GPUs, so a GPU is not taken by a function that cannot use it. On a node without GPU ids
(node ``LOCAL``) ``Spawn.gpus`` is None and the executors' environment is left alone.

Growing the cluster (docs/autoscaling.md): pools want more executors than the nodes
hold when their targets, summed per resource request, pass the slots of the nodes that
fit it (``shortfall``); nodes without live executors count their idle time
(``usage``). A provisioner reads both (``NodeDemand``), starts nodes, and drains idle
ones (``DrainNodes``) before it stops them.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from stratus.protocol.messages import ExecutorAddress, Resources


class ExecutorState(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"


_LIVE = (ExecutorState.STARTING, ExecutorState.READY, ExecutorState.DRAINING)

LOCAL = "0"  # the node id of the coordinator's own host


@dataclass
class NodeRecord:
    """A host that runs executors: at most ``cap`` live, each offering ``offer``."""

    node_id: str
    cap: int
    offer: Resources
    heard_at: float = 0.0  # when it last said it is alive
    gpu_ids: tuple[str, ...] = ()  # partitioned among its executors; () : none managed
    draining: bool = False  # takes no new executor: it is about to be stopped
    idle_since: float | None = None  # since when it has had no executor; None: it has


@dataclass
class ExecutorRecord:
    executor_id: str
    state: ExecutorState
    since: float
    address: ExecutorAddress | None = None
    node: str = LOCAL
    pid: int = 0
    resources: Resources = Resources()
    inflight: int = 0
    served: int = 0
    loaded: frozenset[str] = frozenset()
    pins: set[str] = field(default_factory=set)
    queued: int = 0
    reported_at: float = -1.0
    gpus: tuple[str, ...] | None = None  # the GPU ids it holds; None: its node has none


# --- events


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Ready:
    address: ExecutorAddress
    pid: int
    resources: Resources


@dataclass(frozen=True)
class StartDelayed:
    """A starting executor is alive but waiting (for its store): not a start timeout."""

    executor_id: str


@dataclass(frozen=True)
class LoadReported:
    executor_id: str
    inflight: int
    served: int
    loaded: frozenset[str]
    queued: int = 0


@dataclass(frozen=True)
class Exited:
    executor_id: str


@dataclass(frozen=True)
class KillRequested:
    executor_id: str
    reason: str


@dataclass(frozen=True)
class SetPool:
    """``function``'s warm pool should hold ``size`` executors (0: scale to zero)."""

    function: str
    size: int
    preload: tuple[str, ...] = ()
    colocate: tuple[str, ...] = ()  # functions sharing a DAG with it
    resources: Resources | None = None  # what each of its executors must offer; None: any


@dataclass(frozen=True)
class NodeJoined:
    node_id: str
    cap: int  # executors at most on it
    offer: Resources  # what each of them offers at most (``gpus``: all of the node's)
    gpu_ids: tuple[str, ...] = ()  # its GPUs, each given to one executor at a time


@dataclass(frozen=True)
class NodeAlive:
    node_id: str


@dataclass(frozen=True)
class NodeLost:
    """A node's link closed: its executors are gone with it."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class DrainNodes:
    """Exactly ``node_ids`` (of those joined) take no new executors: their provisioner
    will stop them once they have none; a node not named any more takes them again."""

    node_ids: frozenset[str]


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Stop:
    pass


Event = (
    Start
    | Ready
    | StartDelayed
    | LoadReported
    | Exited
    | KillRequested
    | SetPool
    | NodeJoined
    | NodeAlive
    | NodeLost
    | DrainNodes
    | Tick
    | Stop
)


# --- instructions


@dataclass(frozen=True)
class Spawn:
    executor_id: str
    preload: tuple[str, ...] = ()
    node: str = LOCAL  # which node's fork server forks it
    gpus: tuple[str, ...] | None = None  # its CUDA_VISIBLE_DEVICES; None: left alone


@dataclass(frozen=True)
class Kill:
    executor_id: str
    reason: str


@dataclass(frozen=True)
class Retire:
    """Ask an idle executor to finish and exit (it has no function left)."""

    executor_id: str


@dataclass(frozen=True)
class Pin:
    """``function`` joined a running executor's pool: it may load the code now."""

    executor_id: str
    function: str


@dataclass(frozen=True)
class Unpin:
    """Tell a running executor that ``function`` left it: it may drop the code."""

    executor_id: str
    function: str


@dataclass(frozen=True)
class ExecutorsChanged:
    executors: tuple[ExecutorAddress, ...]
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class DropNode:
    """A node is lost with ``executors``: close its link and theirs (a partitioned
    executor exits when its link closes)."""

    node_id: str
    reason: str
    executors: tuple[str, ...] = ()


Instruction = Spawn | Kill | Retire | Pin | Unpin | ExecutorsChanged | DropNode


@dataclass(frozen=True)
class NodeUsage:
    """One node as a provisioner sees it: how busy, and for how long it has been idle."""

    node_id: str
    cap: int
    executors: int  # alive (any state until exited)
    inflight: int  # calls running or queued on them, as last reported
    idle_for: float  # seconds without any executor; 0 while it has one
    draining: bool


@dataclass
class Scheduler:
    cap: int  # live executors at most on the local node
    offer: Resources = Resources()  # what each executor of the local node offers
    start_timeout: float = 10.0
    node_timeout: float = 5.0  # a node silent this long is lost
    crash_window: float = 10.0  # deaths within this window count toward back-off
    drain: float = 0.2  # seconds a released executor stays reachable before it stops
    executors: dict[str, ExecutorRecord] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    preloads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    partners: dict[str, tuple[str, ...]] = field(default_factory=dict)
    requests: dict[str, Resources] = field(default_factory=dict)  # per function
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    stopping: bool = False
    _deaths: deque[float] = field(default_factory=deque)
    _respawn_at: float | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _announced: tuple[object, ...] = ((), ())  # what clients were last told
    history: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def __post_init__(self) -> None:
        self.nodes.setdefault(LOCAL, NodeRecord(LOCAL, self.cap, self.offer, idle_since=0.0))

    def handle(self, event: Event, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        match event:
            case Start():
                pass
            case Ready(address, pid, resources):
                rec = self.executors.get(address.executor_id)
                if rec is None or rec.state is not ExecutorState.STARTING:
                    return [Kill(address.executor_id, "unexpected hello")]
                rec.state, rec.since = ExecutorState.READY, now
                if rec.gpus is not None:  # what it holds, not what its node offers
                    resources = msgspec.structs.replace(resources, gpus=len(rec.gpus))
                rec.address, rec.pid, rec.resources = address, pid, resources
                self._note(f"{address.executor_id} ready (pid {pid}) for {sorted(rec.pins)}")
                out += [Pin(address.executor_id, f) for f in sorted(rec.pins)]
            case StartDelayed(executor_id):
                rec = self.executors.get(executor_id)
                if rec is not None and rec.state is ExecutorState.STARTING:
                    rec.since = now  # its start timeout runs from its last sign of life
            case LoadReported(executor_id, inflight, served, loaded, queued):
                rec = self.executors.get(executor_id)
                if rec is not None:
                    rec.inflight, rec.served, rec.loaded = inflight, served, loaded
                    rec.queued, rec.reported_at = queued, now
            case Exited(executor_id):
                rec = self.executors.pop(executor_id, None)
                if rec is None:
                    return []
                self._note(f"{executor_id} exited in state {rec.state.value}")
                if not self.stopping and rec.state is not ExecutorState.STOPPING:
                    self._deaths.append(now)  # not stopped on purpose
            case KillRequested(executor_id, reason):
                rec = self.executors.get(executor_id)
                if rec is not None and rec.state is not ExecutorState.STOPPING:
                    self._stop(rec, now, f"kill: {reason}")
                    out.append(Kill(executor_id, reason))
            case SetPool(function, size, preload, colocate, resources):
                if size > 0:
                    self.targets[function], self.preloads[function] = size, preload
                    self.partners[function] = colocate
                    if resources is not None:
                        self.requests[function] = resources
                else:
                    self.targets.pop(function, None)
                    self.preloads.pop(function, None)
                    self.partners.pop(function, None)
                    self.requests.pop(function, None)
            case NodeJoined(node_id, cap, offer, gpu_ids):
                if node_id not in self.nodes:
                    self.nodes[node_id] = NodeRecord(
                        node_id, cap, offer, now, gpu_ids, idle_since=now
                    )
                    self._note(f"node {node_id} joined: {cap} executors of {offer} {gpu_ids}")
            case DrainNodes(node_ids):
                for each in self.nodes.values():
                    draining = each.node_id in node_ids and each.node_id != LOCAL
                    if draining != each.draining:
                        each.draining = draining
                        self._note(f"node {each.node_id} draining: {draining}")
            case NodeAlive(node_id):
                if (node := self.nodes.get(node_id)) is not None:
                    node.heard_at = now
            case NodeLost(node_id, reason):
                out += self._lose_node(node_id, reason)
            case Tick():
                for node in list(self.nodes.values()):
                    silent = now - node.heard_at
                    if node.node_id != LOCAL and silent > self.node_timeout:
                        out += self._lose_node(node.node_id, f"silent for {silent:.1f} s")
                for rec in list(self.executors.values()):
                    if rec.state is ExecutorState.STARTING and now - rec.since > self.start_timeout:
                        self._stop(rec, now, f"no hello in {self.start_timeout} s")
                        out.append(Kill(rec.executor_id, "did not start in time"))
                    elif rec.state is ExecutorState.DRAINING and self._drained(rec, now):
                        self._stop(rec, now, "drained")
                        out.append(Retire(rec.executor_id))
            case Stop():
                self.stopping = True
                for rec in self.executors.values():
                    if rec.state is not ExecutorState.STOPPING:
                        self._stop(rec, now, "cluster shutting down")
                        out.append(Kill(rec.executor_id, "cluster shutting down"))
        out += self._fill(now)
        out += self._announce()
        self._idle_nodes(now)
        return out

    def place(self, request: Resources, function: str) -> list[ExecutorAddress]:
        """The ready executors of ``function``'s pool able to host ``request``, least
        loaded first."""
        able = [
            rec
            for rec in self.ready()
            if function in rec.pins and rec.address is not None and fits(request, rec.resources)
        ]
        able.sort(key=lambda r: (r.inflight, r.executor_id))
        return [r.address for r in able if r.address is not None]

    def can_ever_host(self, request: Resources) -> bool:
        """Whether an executor of this cluster could host ``request`` once ready."""
        return any(n.cap > 0 and fits(request, n.offer) for n in self.nodes.values())

    def shortfall(self) -> list[tuple[Resources | None, int]]:
        """Executors the pools want beyond what the nodes can hold, per resource request:
        the targets of the functions of one request summed, less the slots of the nodes
        (not draining) that fit it, or, if more, the executors their pools lack now
        (slots taken by functions of other requests); a request no node fits misses its
        whole target."""
        pinned: dict[str, int] = {}
        for rec in self.executors.values():
            if rec.state in _LIVE:
                for function in rec.pins:
                    pinned[function] = pinned.get(function, 0) + 1
        wanted: dict[Resources | None, int] = {}
        lacking: dict[Resources | None, int] = {}
        for function, target in self.targets.items():
            request = self.requests.get(function)
            wanted[request] = wanted.get(request, 0) + target
            lack = max(0, target - pinned.get(function, 0))
            lacking[request] = lacking.get(request, 0) + lack
        missing = []
        for request, want in wanted.items():
            slots = sum(_slots(n, request) for n in self.nodes.values() if not n.draining)
            if (short := max(want - slots, lacking[request])) > 0:
                missing.append((request, short))
        return sorted(missing, key=lambda m: repr(m[0]))

    def usage(self, now: float) -> list[NodeUsage]:
        """Every node, for a provisioner deciding which to stop."""
        executors: dict[str, list[ExecutorRecord]] = {}
        for rec in self.executors.values():
            executors.setdefault(rec.node, []).append(rec)
        return [
            NodeUsage(
                n.node_id,
                n.cap,
                len(executors.get(n.node_id, ())),
                sum(r.inflight + r.queued for r in executors.get(n.node_id, ())),
                0.0 if n.idle_since is None else now - n.idle_since,
                n.draining,
            )
            for n in sorted(self.nodes.values(), key=lambda n: n.node_id)
        ]

    def offers(self) -> list[Resources]:
        """What an executor offers, on each node that may run executors."""
        return [n.offer for n in sorted(self.nodes.values(), key=lambda n: n.node_id) if n.cap]

    def node_of(self, executor_id: str) -> str:
        rec = self.executors.get(executor_id)
        return rec.node if rec is not None else LOCAL

    def ready(self) -> list[ExecutorRecord]:
        return [r for r in self.executors.values() if r.state is ExecutorState.READY]

    def pools(self) -> dict[str, tuple[str, ...]]:
        """Each function's ready executors (ids, sorted)."""
        pools: dict[str, list[str]] = {}
        for rec in sorted(self.ready(), key=lambda r: r.executor_id):
            for function in rec.pins:
                pools.setdefault(function, []).append(rec.executor_id)
        return {f: tuple(ids) for f, ids in sorted(pools.items())}

    def pool_counts(self, function: str) -> tuple[int, int]:
        """``function``'s executors ready and starting."""
        recs = [r for r in self.executors.values() if function in r.pins]
        ready = sum(1 for r in recs if r.state is ExecutorState.READY)
        return ready, sum(1 for r in recs if r.state is ExecutorState.STARTING)

    # ------------------------------------------------------------------ reconciling

    def _fill(self, now: float) -> list[Instruction]:
        """Move pins and executors toward the targets; drain executors left empty."""
        if self.stopping:
            return []
        out: list[Instruction] = []
        live = [r for r in self.executors.values() if r.state in _LIVE]
        for rec in live:  # functions scaled to zero leave every executor
            for function in [f for f in rec.pins if f not in self.targets]:
                out += self._unpin(rec, function)
        # Each function's executors, and the slots of each request, found once per event:
        # looked up per function they made this quadratic (bench/placements.py).
        members: dict[str, list[ExecutorRecord]] = {}
        for rec in live:
            for function in rec.pins:
                members.setdefault(function, []).append(rec)
        slots: dict[Resources | None, int] = {}
        for function in sorted(self.targets):
            request = self.requests.get(function)
            if request not in slots:
                # Draining nodes count: their executors stay until their pools shrink.
                slots[request] = sum(_slots(n, request) for n in self.nodes.values())
            want = min(self.targets[function], slots[request])
            have = members.get(function, [])
            while len(have) > want:
                leaving = min(have, key=_least_needed)
                have.remove(leaving)
                out += self._unpin(leaving, function)
            while len(have) < want:
                host = self._host_for(function, live, now, out)
                if host is None:
                    break
                host.pins.add(function)
                have.append(host)
                if host.state is ExecutorState.DRAINING:
                    host.state, host.since = ExecutorState.READY, now
                    self._note(f"{host.executor_id} back from draining for {function}")
                if host.state is ExecutorState.READY:
                    out.append(Pin(host.executor_id, function))
        for rec in live:
            if rec.state is ExecutorState.READY and not rec.pins:
                rec.state, rec.since = ExecutorState.DRAINING, now
                self._note(f"{rec.executor_id} draining: no function pinned")
        return out

    def _host_for(
        self, function: str, live: list[ExecutorRecord], now: float, out: list[Instruction]
    ) -> ExecutorRecord | None:
        """An executor to add to ``function``'s pool (spawning it if need be), or None."""
        request = self.requests.get(function)
        able = [r for r in live if _suits(request, r)]
        draining = [r for r in able if r.state is ExecutorState.DRAINING]
        if draining:
            return min(draining, key=lambda r: r.executor_id)
        partners = set(self.partners.get(function, ()))
        beside = [r for r in able if function not in r.pins and r.pins & partners]
        if beside:
            return min(beside, key=_least_needed)
        node = self._node_for(request)
        if node is not None and self._may_spawn(now):
            executor_id = f"x{next(self._ids)}"
            rec = ExecutorRecord(
                executor_id, ExecutorState.STARTING, now, node=node.node_id, resources=node.offer
            )
            if node.gpu_ids:  # its own GPUs: as many as the function asks for
                rec.gpus = self._free_gpus(node)[: request.gpus if request else 0]
                rec.resources = msgspec.structs.replace(node.offer, gpus=len(rec.gpus))
            self.executors[executor_id] = rec
            live.append(rec)
            preload = self.preloads.get(function, ())
            self._note(f"spawn {executor_id} on node {node.node_id} for {function} {rec.gpus}")
            out.append(Spawn(executor_id, preload, node.node_id, rec.gpus))
            return rec
        others = [r for r in able if function not in r.pins]
        if not others:
            return None
        return min(others, key=_least_needed)

    def _node_for(self, request: Resources | None) -> NodeRecord | None:
        """The node a new executor for ``request`` goes to: one below its cap whose offer
        fits, with the fewest live executors for its cap (the local node on a tie)."""
        count: dict[str, int] = {}
        for rec in self.executors.values():
            if rec.state in _LIVE:
                count[rec.node] = count.get(rec.node, 0) + 1
        free = [
            n
            for n in self.nodes.values()
            if count.get(n.node_id, 0) < n.cap
            and not n.draining
            and _may_host(request, n.offer)
            and (not n.gpu_ids or request is None or len(self._free_gpus(n)) >= request.gpus)
        ]
        if not free:
            return None
        return min(free, key=lambda n: (count.get(n.node_id, 0) / n.cap, n.node_id))

    def _free_gpus(self, node: NodeRecord) -> tuple[str, ...]:
        """``node``'s GPU ids that no executor holds (one that stops holds them until it
        has exited: its process may still use them)."""
        held = {g for r in self.executors.values() if r.node == node.node_id for g in r.gpus or ()}
        return tuple(g for g in node.gpu_ids if g not in held)

    def _idle_nodes(self, now: float) -> None:
        """Start or stop each node's idle clock."""
        busy = {r.node for r in self.executors.values()}
        for node in self.nodes.values():
            if node.node_id in busy:
                node.idle_since = None
            elif node.idle_since is None:
                node.idle_since = now

    def _lose_node(self, node_id: str, reason: str) -> list[Instruction]:
        if node_id == LOCAL or self.nodes.pop(node_id, None) is None:
            return []
        gone = tuple(sorted(r.executor_id for r in self.executors.values() if r.node == node_id))
        for executor_id in gone:
            del self.executors[executor_id]
        self._note(f"node {node_id} lost ({reason}) with {list(gone)}")
        return [DropNode(node_id, reason, gone)]

    def _may_spawn(self, now: float) -> bool:
        while self._deaths and now - self._deaths[0] > self.crash_window:
            self._deaths.popleft()
        if self._respawn_at is not None and now < self._respawn_at:
            return False
        cap = sum(n.cap for n in self.nodes.values())
        if self._respawn_at is None and len(self._deaths) > 2 * cap:
            # A crash loop: wait before the next spawn, longer the more deaths we saw.
            self._respawn_at = now + min(5.0, 0.1 * len(self._deaths))
            self._note(f"crash loop: next spawn in {self._respawn_at - now:.1f} s")
            return False
        self._respawn_at = None
        return True

    def _unpin(self, rec: ExecutorRecord, function: str) -> list[Instruction]:
        rec.pins.discard(function)
        self._note(f"unpin {function} from {rec.executor_id}")
        return [Unpin(rec.executor_id, function)] if rec.state is ExecutorState.READY else []

    def _drained(self, rec: ExecutorRecord, now: float) -> bool:
        """Draining long enough that clients know, and idle in a report since then."""
        idle = rec.inflight == 0 and rec.queued == 0 and rec.reported_at >= rec.since
        return now - rec.since >= self.drain and idle

    def _stop(self, rec: ExecutorRecord, now: float, why: str) -> None:
        rec.state, rec.since = ExecutorState.STOPPING, now
        rec.pins.clear()
        self._note(f"stop {rec.executor_id}: {why}")

    def _announce(self) -> list[Instruction]:
        """``ExecutorsChanged`` when the reachable executors or the pools changed."""
        reachable = sorted(
            (r for r in self.executors.values() if r.state in _LIVE and r.address is not None),
            key=lambda r: (len(r.executor_id), r.executor_id),
        )
        addresses = tuple(r.address for r in reachable if r.address is not None)
        pools = self.pools()
        view = (addresses, tuple(pools.items()))
        if view == self._announced:
            return []
        self._announced = view
        return [ExecutorsChanged(addresses, pools)]

    def _note(self, line: str) -> None:
        self.history.append(line)


def _least_needed(rec: ExecutorRecord) -> tuple[int, int, str]:
    """Order for sharing and for leaving: fewest functions pinned, then least loaded."""
    return (len(rec.pins), rec.inflight + rec.queued, rec.executor_id)


def _may_host(request: Resources | None, offer: Resources) -> bool:
    return request is None or fits(request, offer)


def _suits(request: Resources | None, rec: ExecutorRecord) -> bool:
    """``rec`` may join the pool of a function of ``request``: it fits, and it holds no
    GPU that the function would leave idle."""
    wants_gpus = request is None or request.gpus > 0
    return _may_host(request, rec.resources) and (wants_gpus or not rec.gpus)


def _slots(node: NodeRecord, request: Resources | None) -> int:
    """Executors of ``request`` that ``node`` can hold at once."""
    if not _may_host(request, node.offer):
        return 0
    if node.gpu_ids and request is not None and request.gpus:
        return min(node.cap, len(node.gpu_ids) // request.gpus)
    return node.cap


def fits(request: Resources, offer: Resources) -> bool:
    """Whether an executor offering ``offer`` can run a function requesting ``request``."""
    return (
        request.cpu <= offer.cpu
        and request.memory_mb <= offer.memory_mb
        and request.gpus <= offer.gpus
    )
