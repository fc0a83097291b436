"""Typed wire messages: one tagged union per receiving role.

Every frame on every connection carries exactly one message. Which messages a peer
accepts depends on its role, so there is one union (and one strict decoder) per role:
``ToExecutor`` (callers and peer executors to an executor), ``ToExecutorLink`` (the
coordinator to an executor, on the executor's control link), ``ToCoordinator`` and
``ToClient``. A frame whose body does not decode into the receiver's union is a protocol
error: it is dropped, logged and never unpickled.

Pickled payloads (arguments, results, function code) travel as opaque ``bytes`` fields
and are only unpickled after the frame's signature has been verified.

Requests carry ``rid``, a number chosen by the sender and echoed by the reply.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from stratus.protocol.errors import ErrorInfo as ErrorInfo  # the failures messages carry

Consistency = Literal["eventual", "causal", "serializable"]
#: How an executor runs a function: a plain call; a coroutine on its event loop (many at
#: once); a generator or async generator whose items are streamed (``StreamItem``).
FunctionKind = Literal["plain", "async", "generator", "async_generator"]


class _Msg(msgspec.Struct, array_like=True, frozen=True, tag=True, gc=False):
    """Base of all messages: encoded as a msgpack array whose first item is the tag.

    ``gc=False``: messages hold only scalars, bytes and other messages, so they cannot
    form cycles, and untracked objects keep bursts of calls from triggering collections.
    """


# --------------------------------------------------------------------------- shared parts


class Resources(msgspec.Struct, frozen=True, gc=False):
    """What a function requests, or what an executor offers."""

    cpu: float = 1.0
    memory_mb: int = 512
    gpus: int = 0


class FunctionOptions(msgspec.Struct, frozen=True, gc=False):
    """Options of a registered function; ``resources`` are matched against executors.

    ``min_instances`` to ``preload`` shape its warm pool (docs/autoscaling.md):
    ``min_instances`` .. ``max_instances`` executors; ``concurrency`` calls sent to one
    executor at once (the rest wait in the caller); ``max_queued`` calls waiting in one
    caller before ``Overloaded``; ``preload`` modules imported before a new executor
    says hello. A call whose function raised a type ``retry_on`` names is retried.
    ``kind`` says how executors run it (``async`` ones up to ``concurrency`` at once).
    """

    timeout: float | None = 300.0
    retries: int = 2
    resources: Resources = Resources()
    consistency: Consistency = "eventual"
    is_class: bool = False
    volume: str = "default"  # the file-system volume ctx.fs opens
    min_instances: int = 0
    max_instances: int = 100
    concurrency: int = 10_000
    max_queued: int = 100_000
    preload: tuple[str, ...] = ()
    retry_on: tuple[str, ...] = ()  # exception types (protocol.errors.type_name) retried
    kind: FunctionKind = "plain"


class ExecutorAddress(msgspec.Struct, frozen=True, gc=False):
    """Where an executor listens: an abstract Unix socket, and TCP in server mode."""

    executor_id: str
    unix: str
    tcp: str = ""


class PlanNode(msgspec.Struct, frozen=True, gc=False):
    """One step of a DAG invocation: which function runs where, and where results go."""

    function: str
    version: int
    executor: ExecutorAddress
    timeout: float | None
    upstream: list[int]
    downstream: list[int]


class DagPlan(msgspec.Struct, frozen=True, gc=False):
    """The placement of a whole DAG invocation, chosen by the client, carried by each hop."""

    dag: str
    nodes: list[PlanNode]
    sink: int


class DagNode(msgspec.Struct, frozen=True, gc=False):
    """A registered DAG's node: a function name and the indexes of its upstream nodes."""

    function: str
    upstream: list[int]


class FunctionInfo(msgspec.Struct, frozen=True, gc=False):
    name: str
    version: int
    options: FunctionOptions


class ExecutorStatus(msgspec.Struct, frozen=True, gc=False):
    executor_id: str
    pid: int
    state: str
    inflight: int
    served: int
    loaded: list[str]
    metrics: list[FunctionMetrics] = []  # since the last report
    pinned: list[str] = []  # functions whose warm pools it belongs to
    node: str = ""  # the node it runs on ("0": the coordinator's host)


class FunctionMetrics(msgspec.Struct, frozen=True, gc=False):
    """An executor's counts for one function since its last load report."""

    function: str
    calls: int
    errors: int
    timeouts: int
    cold_starts: int
    buckets: list[int]  # run times per ``metering.LATENCY_BUCKETS`` bound, then +Inf
    seconds: float  # sum of run times


class LogLine(msgspec.Struct, frozen=True, gc=False):
    """One line an invocation printed or logged."""

    time_ns: int
    function: str
    invocation_id: str
    attempt: int
    stream: str  # stdout, stderr, or the level of a ctx.logger record
    text: str


class PoolStatus(msgspec.Struct, frozen=True, gc=False):
    """A function's warm pool: the size wanted, and executors ready or starting in it."""

    function: str
    target: int
    ready: int
    starting: int
    why: str = ""  # the last decision's reason
    changed_at: float = 0.0  # when the size last changed: Unix time (s), 0 never


# --------------------------------------------------------------------------- handshake


class Hello(_Msg, tag="hello", frozen=True):
    """First frame on every connection: who is talking. ``peer_id`` names a client or node."""

    peer_id: str
    role: Literal["client", "executor", "coordinator", "provisioner"]


class Welcome(_Msg, tag="welcome", frozen=True):
    """Reply to ``Hello``: the receiver proves it holds the cluster key too."""

    node_id: str


# --------------------------------------------------------------------------- to executors
# (Call, DagInput, Deliver from callers and peers; the rest on the executor's link)


class Call(_Msg, tag="call", frozen=True):
    """Run one function, or the source step of a DAG (``plan`` and ``node`` set)."""

    rid: int
    invocation_id: str
    function: str
    version: int
    args: bytes
    attempt: int
    timeout: float | None
    reply_to: str
    plan: DagPlan | None = None
    node: int = -1
    refs: bool = False  # some arguments are stratus.Ref: resolve them from the kv cache
    held_ns: int = 0  # how long the caller held it back, waiting for room in the pool
    cold: bool = False  # ... because the pool was empty: the wait was a cold start
    stream: bool = False  # a generator's items go back one by one (StreamItem), then Result


class DagInput(_Msg, tag="dag_input", frozen=True):
    """An upstream step's result travelling executor to executor to the next step."""

    rid: int
    invocation_id: str
    attempt: int
    reply_to: str
    plan: DagPlan
    node: int
    source: int
    value: bytes
    kv: bytes = b""  # the upstream steps' kv reads and writes, committed at the sink


class Deliver(_Msg, tag="deliver", frozen=True):
    """A message from one invocation to another (``ctx.send``), pickled; ``namespace``:
    the sender's (``acme::`` for a tenant's function), which must be the recipient's."""

    recipient: str
    sender: str
    payload: bytes
    namespace: str = ""


class ShutdownExecutor(_Msg, tag="shutdown_executor", frozen=True):
    """The coordinator asks an executor to finish and exit."""


class Unpin(_Msg, tag="unpin", frozen=True):
    """The coordinator took ``functions`` off this executor: drop their code."""

    functions: list[str]


class FunctionCode(_Msg, tag="function_code", frozen=True):
    """The coordinator's reply to ``FetchFunction``: pickled code and options; pushed
    with ``rid`` 0 when the function is pinned on the executor (warm it up)."""

    rid: int
    name: str
    version: int
    code: bytes
    options: FunctionOptions


class RequestFailed(_Msg, tag="request_failed", frozen=True):
    """A request (``rid``) could not be served; ``error`` says why."""

    rid: int
    error: ErrorInfo


# --------------------------------------------------------------------------- to coordinator


class ExecutorHello(_Msg, tag="executor_hello", frozen=True):
    """An executor announces itself after it started listening."""

    address: ExecutorAddress
    pid: int
    resources: Resources


class ExecutorStartFailed(_Msg, tag="executor_start_failed", frozen=True):
    """An executor could not start: sent by the executor (``retrying``: it tries again,
    e.g. its store is unreachable) or by the coordinator when one exited before it was
    ready; pushed by the coordinator to callers, whose calls held for an empty warm
    pool then fail with ``ExecutorStartFailed`` instead of waiting for their deadline."""

    executor_id: str
    error: ErrorInfo
    retrying: bool = False


class FunctionLoad(msgspec.Struct, frozen=True, gc=False):
    """One function's work on one executor: totals since it started, and right now."""

    calls: int  # calls finished
    busy: float  # seconds spent running them
    running: int  # calls on the stack now
    queued: int  # calls read and waiting to run


MAX_CACHED_REPORTED = 64
"""Ref keys an executor lists in one load report at most (the coordinator ignores more)."""


class ExecutorLoad(_Msg, tag="executor_load", frozen=True):
    """Periodic report of an executor's work, for status and scheduling."""

    inflight: int
    served: int
    loaded: list[str]
    metrics: list[FunctionMetrics] = []  # since the last report
    functions: dict[str, FunctionLoad] = {}
    # The Ref keys (``app.put`` objects) it caches, most recently used first, at most
    # ``MAX_CACHED_REPORTED``; None: the same as in its previous report.
    cached: list[str] | None = None


class StoreStuck(_Msg, tag="store_stuck", frozen=True):
    """An executor's write waited past the store's lock deadline: ``holders`` (process ids)
    hold the lock. The coordinator kills those that are its executors."""

    holders: list[int]


class Demand(_Msg, tag="demand", frozen=True):
    """A caller holds ``queued`` calls of ``function`` that its warm pool cannot take."""

    function: str
    queued: int


class Register(_Msg, tag="register", frozen=True):
    rid: int
    name: str
    code: bytes
    options: FunctionOptions


class RegisterDag(_Msg, tag="register_dag", frozen=True):
    rid: int
    name: str
    nodes: list[DagNode]


class DeleteDag(_Msg, tag="delete_dag", frozen=True):
    rid: int
    name: str


class Resolve(_Msg, tag="resolve", frozen=True):
    """Ask where a function (or every function of a DAG) may run, and its latest version."""

    rid: int
    name: str


class FetchFunction(_Msg, tag="fetch_function", frozen=True):
    rid: int
    name: str
    version: int


class KillInvocation(_Msg, tag="kill_invocation", frozen=True):
    """A caller gave up on a runaway invocation: kill its executor and start another."""

    executor_id: str
    invocation_id: str


class StatusRequest(_Msg, tag="status_request", frozen=True):
    rid: int


class ShutdownCluster(_Msg, tag="shutdown_cluster", frozen=True):
    rid: int


class KvRead(_Msg, tag="kv_read", frozen=True):
    """Read ``key`` from outside any function; ``lattice``: the lattice, not its value."""

    rid: int
    key: str
    lattice: bool = False


class KvWrite(_Msg, tag="kv_write", frozen=True):
    """``op`` is put, merge, delete or incr; ``value`` is the pickled value, lattice or
    amount."""

    rid: int
    op: Literal["put", "merge", "delete", "incr"]
    key: str
    value: bytes = b""


class KvList(_Msg, tag="kv_list", frozen=True):
    rid: int
    prefix: str


class MeterRead(_Msg, tag="meter_read", frozen=True):
    """Ask for up to ``limit`` metering batches whose keys come after ``after``."""

    rid: int
    after: str
    limit: int


class LogsRead(_Msg, tag="logs_read", frozen=True):
    """Ask for log lines: the last ``limit`` (``cursor`` None) or those since ``cursor``."""

    rid: int
    function: str
    invocation_id: str
    cursor: dict[str, int] | None
    limit: int


# --------------------------------------------------------------------------- to clients


class Result(_Msg, tag="result", frozen=True):
    rid: int
    attempt: int
    value: bytes


class Failure(_Msg, tag="failure", frozen=True):
    rid: int
    attempt: int
    error: ErrorInfo


class StreamItem(_Msg, tag="stream_item", frozen=True):
    """Item ``index`` (0, 1, ...) a streamed generator call yielded, pickled; its
    ``Result`` (the number of items) or ``Failure`` follows the last one."""

    rid: int
    attempt: int
    index: int
    value: bytes


class Registered(_Msg, tag="registered", frozen=True):
    rid: int
    name: str
    version: int


class Resolved(_Msg, tag="resolved", frozen=True):
    """Where ``name`` may run: for a DAG, ``functions`` lists every node's function."""

    rid: int
    name: str
    functions: list[FunctionInfo]
    dag: list[DagNode] | None
    executors: list[ExecutorAddress]
    pools: dict[str, list[str]] = {}  # function -> ids of the executors it is pinned on


class StatusReply(_Msg, tag="status_reply", frozen=True):
    rid: int
    cluster_id: str
    executors: list[ExecutorStatus]
    functions: list[FunctionInfo]
    dags: list[str]
    metrics: str = ""  # host:port of the Prometheus endpoint, if served
    pools: list[PoolStatus] = []


class ShutdownStarted(_Msg, tag="shutdown_started", frozen=True):
    rid: int


class KvValue(_Msg, tag="kv_value", frozen=True):
    """The pickled value (None when absent) and its store version (0 when absent)."""

    rid: int
    value: bytes
    version: int


class KvWritten(_Msg, tag="kv_written", frozen=True):
    rid: int
    version: int


class KvKeys(_Msg, tag="kv_keys", frozen=True):
    rid: int
    keys: list[str]


class MeterPage(_Msg, tag="meter_page", frozen=True):
    """Metering batches (``metering.iter_batch`` reads them); ``last`` is the key of the
    last one (empty: no more), ``total`` how many batch keys the store holds."""

    rid: int
    batches: list[bytes]
    last: str
    total: int


class LogsPage(_Msg, tag="logs_page", frozen=True):
    rid: int
    lines: list[LogLine]
    cursor: dict[str, int]


class ExecutorsChanged(_Msg, tag="executors_changed", frozen=True):
    """Pushed to clients when executors join or leave or pools change, so placements
    stay current."""

    executors: list[ExecutorAddress]
    pools: dict[str, list[str]] = {}  # function -> ids of the executors it is pinned on


class RefHints(_Msg, tag="ref_hints", frozen=True):
    """Pushed to clients when the Ref keys executors cache change (at most every
    ``server.locality.PUSH_EVERY`` s): ``homes`` maps a key to the executors caching it
    (an empty list: none does any more). ``complete``: every key is listed (a client
    forgets the keys not listed), else only those that changed."""

    homes: dict[str, list[str]]
    complete: bool = False


# --------------------------------------------------------------------------- node agents


class NodeCapacity(msgspec.Struct, frozen=True, gc=False):
    """What a node agent's host offers: executors run one per core; each GPU id goes to
    one executor at a time (``gpu_ids`` empty with ``gpus``: ids 0 .. gpus-1)."""

    cores: int
    memory_mb: int
    gpus: int = 0
    gpu_ids: list[str] = []


class NodeHello(_Msg, tag="node_hello", frozen=True):
    """First frame of a node agent (``stratus node --join``): who it is, which stratus it
    runs (a different version is refused) and what its host offers."""

    node_id: str
    version: str
    capacity: NodeCapacity


class NodeWelcome(_Msg, tag="node_welcome", frozen=True):
    """The coordinator took the node: ``config`` is its ``ClusterConfig`` (JSON, without
    the key), which the node's executors start from (the store, limits, autoscaling)."""

    cluster_id: str
    config: bytes


class NodeRefused(_Msg, tag="node_refused", frozen=True):
    """The coordinator will not take this node, and why; it then closes the link."""

    reason: str


class NodeAlive(_Msg, tag="node_alive", frozen=True):
    """A node agent's heartbeat: a node silent past the coordinator's deadline is lost."""

    executors: int  # its live executors


class CoordinatorAlive(_Msg, tag="coordinator_alive", frozen=True):
    """The coordinator's answer to each ``NodeAlive``: an agent that hears nothing past its
    deadline takes its coordinator for dead, even with the link open (a hung process)."""


class NodeDemandRequest(_Msg, tag="node_demand_request", frozen=True):
    """A provisioner asks what the pools miss and how busy each node is. ``draining``:
    the nodes it means to stop (they take no new executors; any other node takes them
    again); ``grows``: what an executor of a node it can add offers (None: it adds
    none), so that a function only such a node could host waits for one instead of
    failing ``NoCapacity``."""

    rid: int
    draining: list[str] = []
    grows: Resources | None = None


class NodeReport(msgspec.Struct, frozen=True, gc=False):
    """One node: executors alive, calls on them, seconds without any executor."""

    node_id: str
    cap: int
    executors: int
    inflight: int
    idle_for: float
    draining: bool


class Shortfall(msgspec.Struct, frozen=True, gc=False):
    """Executors of ``resources`` that the pools want and the nodes cannot hold."""

    resources: Resources
    executors: int


class NodeDemand(_Msg, tag="node_demand", frozen=True):
    """The answer to ``NodeDemandRequest``."""

    rid: int
    nodes: list[NodeReport]
    shortfall: list[Shortfall]


class KillExecutor(_Msg, tag="kill_executor", frozen=True):
    """Kill one of the node's executors (SIGKILL; its exit is reported as usual)."""

    executor_id: str


# --------------------------------------------------------------------------- fork server


class SpawnExecutor(_Msg, tag="spawn_executor", frozen=True):
    executor_id: str
    preload: list[str] = []  # modules the fork server imports first (kept for later forks)
    gpus: list[str] | None = None  # its CUDA_VISIBLE_DEVICES ([]: none); None: inherited


class ExecutorSpawned(_Msg, tag="executor_spawned", frozen=True):
    executor_id: str
    pid: int


class ExecutorExited(_Msg, tag="executor_exited", frozen=True):
    executor_id: str
    pid: int
    status: int
    error: str = ""  # what the executor raised, if it failed (e.g. while starting)


# What a listener accepts from the peers that connected to it:
ToExecutor = Hello | Call | DagInput | Deliver
ToCoordinator = (
    Hello
    | ExecutorHello
    | ExecutorStartFailed
    | ExecutorLoad
    | StoreStuck
    | Register
    | RegisterDag
    | DeleteDag
    | Resolve
    | FetchFunction
    | KillInvocation
    | Demand
    | StatusRequest
    | ShutdownCluster
    | KvRead
    | KvWrite
    | KvList
    | MeterRead
    | LogsRead
    | NodeHello
    | NodeAlive
    | NodeDemandRequest
    | ExecutorSpawned  # relayed by node agents from their fork servers
    | ExecutorExited
)
# What the coordinator sends an executor on its control link (server/link.py): code,
# control, and the executors it may hand DAG inputs and messages to:
ToExecutorLink = (
    Welcome | FunctionCode | ShutdownExecutor | Unpin | ExecutorsChanged | RequestFailed
)
# What comes back on a connection a client opened (to the coordinator or an executor),
# the nested calls of running functions included:
ToClient = (
    Welcome
    | Result
    | Failure
    | StreamItem
    | Registered
    | Resolved
    | StatusReply
    | ShutdownStarted
    | ExecutorsChanged
    | RefHints
    | ExecutorStartFailed
    | RequestFailed
    | KvValue
    | KvWritten
    | KvKeys
    | MeterPage
    | LogsPage
)
# Between the coordinator and its fork server (a private socket pair):
ToForkServer = SpawnExecutor
FromForkServer = ExecutorSpawned | ExecutorExited
# What a provisioner (``stratus provision --autoscale``) accepts from the coordinator:
ToProvisioner = Welcome | NodeDemand | RequestFailed
# What a node agent accepts from its coordinator:
ToNode = NodeWelcome | NodeRefused | SpawnExecutor | KillExecutor | CoordinatorAlive
