"""``connect()`` and ``App``: the user's entry point to a cluster."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, overload

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus.client import usage
from stratus.client.client import Client
from stratus.client.embedded import EmbeddedCluster
from stratus.client.fs import ClientFS
from stratus.client.handles import Composable, Dag, Function, Graph
from stratus.client.kv import KV
from stratus.client.reconnect import lease_locator
from stratus.client.registration import check_callable, retry_on_names
from stratus.client.tenant import TenantApp
from stratus.fs.volume import check_volume_name
from stratus.kv.open import check_url, open_store
from stratus.kv.ref import Ref
from stratus.kv.values import codec_for
from stratus.lattice import LatticeCodec
from stratus.objects import ObjectStore
from stratus.protocol.messages import (
    Consistency,
    FunctionOptions,
    LogLine,
    LogsRead,
    Resources,
    StatusReply,
)
from stratus.protocol.metering import InvocationRecord
from stratus.protocol.serialization import DEFAULT_MAX_PAYLOAD

_CONSISTENCY = ("eventual", "causal", "serializable")
_open_apps: weakref.WeakSet[App] = weakref.WeakSet()


class App:
    """A connection to a cluster, and the cluster itself when it is embedded.

    >>> with stratus.connect() as app:
    ...     @app.function
    ...     def square(ctx, x):
    ...         return x * x
    ...     square.remote(3).result()
    9
    """

    def __init__(
        self,
        client: Client,
        cluster: EmbeddedCluster | None = None,
        *,
        store: str = "",
        key: bytes = b"",
    ) -> None:
        self._client = client
        self._cluster = cluster
        self._key = cluster.key if cluster is not None else key
        self._store_url = cluster.config.store_url if cluster is not None else store
        self._fs: ClientFS | None = None
        self._objects: ObjectStore | None = None
        client.on_lost = self._on_lost
        _open_apps.add(self)

    @property
    def address(self) -> str:
        return self._client.address

    @property
    def store_url(self) -> str:
        """The URL of the store the cluster keeps its state in ("" when not known)."""
        return self._store_url

    @property
    def values(self) -> LatticeCodec:
        """How the cluster's kv values are stored: data, or objects sealed with its key
        (for programs that open the store themselves, like the HTTP gateway)."""
        return codec_for(self._key)

    @property
    def kv(self) -> KV:
        """The cluster's kv store: ``get``, ``put``, ``merge``, ``delete``, ``keys``."""
        return KV(self._client)

    @property
    def fs(self) -> ClientFS:
        """The cluster's file system: ``volumes`` and ``transaction(volume=...)``."""
        if self._fs is None:
            self._fs = ClientFS(self._store_url)
        return self._fs

    def put(self, obj: Any, *, key: str | None = None) -> Ref:
        """Store ``obj``, of any size, and return a ``Ref`` to pass to functions instead.

        For values larger than a frame (``max_payload``), or passed to many calls: the
        object is stored in chunks of 1 MiB, each executor reads it once and keeps it in
        its cache, and calls with the Ref go to executors that hold it. ``bytes`` travel
        as they are, other objects pickled. Objects are immutable: ``key`` names one
        (default: a random name), ``ObjectExists`` if it names one already. An object
        lives until ``app.delete(ref)``.

        >>> ref = app.put(b"x" * 200_000_000)
        >>> length.remote(ref).result()
        200000000
        """
        return self._object_store().put(obj, name=key)

    def get(self, ref: Ref) -> Any:
        """The object a ``Ref`` of ``put`` (or of ``ctx.put``) names; ``ObjectNotFound``
        once deleted, ``ObjectCorrupt`` if its chunks were tampered with."""
        return self._object_store().get(ref)

    def delete(self, ref: Ref) -> None:
        """Remove the object a ``Ref`` of ``put`` names; ``ObjectNotFound`` if none.
        Calls that hold the Ref and have not read it yet fail with ``ObjectNotFound``."""
        self._object_store().delete(ref)

    def _object_store(self) -> ObjectStore:
        if self._objects is None:
            if not self._store_url:
                raise exc.ConfigurationError(
                    "app.put needs the cluster's store: connect(address, store=URL)"
                )
            self._objects = ObjectStore(
                open_store(self._store_url, self.values), self._key, cache_bytes=0
            )  # the caller keeps what it gets; executors are the ones that cache
        return self._objects

    @property
    def cluster_id(self) -> str:
        return self._client.cluster_id

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "embedded" if self._cluster else "remote"
        return f"<stratus.App {kind} {self.cluster_id} at {self.address}>"

    def function(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = 300.0,
        retries: int = 2,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        memory_mb: int = 512,
        cpu: float = 1.0,
        gpus: int = 0,
        consistency: Consistency = "eventual",
        init_args: tuple[Any, ...] = (),
        init_kwargs: dict[str, Any] | None = None,
        volume: str = "default",
        min_instances: int = 0,
        max_instances: int = 100,
        concurrency: int = 10_000,
        max_queued: int = 100_000,
        preload: tuple[str, ...] | list[str] = (),
    ) -> Any:
        """Register a function (or a class) so the cluster can run it.

        Use bare (``@app.function``) or with options. A function's first parameter is
        its ``Context``. A class is built once per warm executor with ``init_args`` and
        ``init_kwargs`` (load a model there); its ``__call__(self, ctx, ...)`` serves calls.
        Registering a name again makes a new version; calls in flight finish on the old.
        A function without a ``ctx`` parameter is refused at once with
        ``UnsupportedFunction``. An ``async def`` runs on its executor's event loop, up
        to ``concurrency`` calls at once per executor; a generator (or async generator)
        streams its items to ``fn.remote_gen(...)``, and ``fn.remote(...)`` returns them
        as a list.

        A call whose executor dies or times out is tried again, up to ``retries`` more
        times; so is one whose function raised an exception of a type in ``retry_on``
        (or a subclass): ``retry_on=(IOError,)``. ``ctx.attempt`` counts 1, 2, 3...
        ``ctx.fs`` is the file-system ``volume`` (created on first use).

        Its warm pool holds ``min_instances`` (0: it may scale to zero) to
        ``max_instances`` executors; each is sent at most ``concurrency`` calls at once,
        further calls wait in this client, and past ``max_queued`` waiting calls a call
        fails with ``Overloaded``. ``preload`` names modules a new executor imports
        before it serves. ``memory_mb`` caps what a call may allocate
        (``MemoryLimitExceeded``); ``cpu``, ``gpus`` and ``memory_mb`` must fit what an
        executor offers (``NoCapacity``). See docs/autoscaling.md.
        """
        check_volume_name(volume)
        if consistency not in _CONSISTENCY:
            raise exc.ConfigurationError(f"consistency must be one of {_CONSISTENCY}")
        if retries < 0 or (timeout is not None and timeout <= 0):
            raise exc.ConfigurationError("retries must be >= 0 and timeout > 0")
        if not 0 <= min_instances <= max_instances or concurrency < 1 or max_queued < 0:
            raise exc.ConfigurationError(
                "need 0 <= min_instances <= max_instances, concurrency >= 1, max_queued >= 0"
            )
        if memory_mb < 1 or any(not isinstance(p, str) or not p for p in preload):
            raise exc.ConfigurationError("memory_mb must be >= 1; preload: module names")
        retry_names = retry_on_names(retry_on)

        def register(target: Callable[..., Any]) -> Function:
            is_class = isinstance(target, type)
            if isinstance(target, type) and not any("__call__" in vars(k) for k in target.__mro__):
                raise exc.ConfigurationError(f"class {target!r} must define __call__")
            if not callable(target):
                raise exc.ConfigurationError(f"{target!r} is not a function or a class")
            kind = check_callable(target)
            options = FunctionOptions(
                timeout=timeout,
                retries=retries,
                resources=Resources(cpu=cpu, memory_mb=memory_mb, gpus=gpus),
                consistency=consistency,
                is_class=is_class,
                volume=volume,
                min_instances=min_instances,
                max_instances=max_instances,
                concurrency=concurrency,
                max_queued=max_queued,
                preload=tuple(preload),
                retry_on=retry_names,
                kind=kind,
            )
            fn_name = name if name is not None else getattr(target, "__name__", None)
            if not fn_name or not isinstance(fn_name, str) or len(fn_name) > 256:
                raise exc.ConfigurationError(f"bad function name {fn_name!r}: 1-256 characters")
            init = (tuple(init_args), dict(init_kwargs or {}))
            version = self._client.register(fn_name, target, options, init)
            return Function(self._client, fn_name, version, options)

        return register if fn is None else register(fn)

    def dag(self, name: str, graph: Composable) -> Dag:
        """Register a DAG built with ``>>`` (chains, fan-out with lists, fan-in)."""
        nodes = Graph.of(graph).nodes()
        self._client.register_dag(name, nodes)
        return Dag(self._client, name, nodes)

    def delete_dag(self, name: str) -> None:
        """Remove a DAG (its functions stay registered); ``FunctionNotFound`` if unknown."""
        self._client.delete_dag(name)

    def lookup(self, name: str) -> Function | Dag:
        """A handle for a function or DAG registered by anyone, by name."""
        infos = self._client._resolve(name)
        nodes = self._client._dags.get(name)
        if nodes is not None:
            return Dag(self._client, name, nodes)
        return Function(self._client, name, infos[0].version, infos[0].options)

    def status(self) -> StatusReply:
        """Executors, functions and DAGs of the cluster."""
        return self._client.status()

    def usage(
        self,
        function: str | None = None,
        *,
        since: str | int = 0,
        until: int | None = None,
        period: usage.Period = "day",
        prices: usage.Prices | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> usage.Usage:
        """Metered totals (calls, errors, billed ms, GB-s, cost) per function and period.

        ``since`` is a time in ns or a string (``"2h"``, ``"7d"``, ``"2026-11-27"``);
        ``period`` is ``"day"``, ``"hour"`` or ``"all"``; ``prices`` defaults to AWS
        Lambda's x86 prices. Records reach the store within a fraction of a second of
        each call (see docs/metering.md).

        >>> app.usage("square").function("square").calls
        3
        """
        since_ns = usage.parse_since(since) if isinstance(since, str) else since
        records = usage.fetch(self._client, progress=progress)
        return usage.aggregate(
            records,
            function=function,
            since_ns=since_ns,
            until_ns=until,
            period=period,
            prices=prices,
        )

    def records(self, after: str = "") -> tuple[list[InvocationRecord], str]:
        """Metering records stored after ``after`` (a key this returned; "" from the
        start), and the key to pass next time: to follow the cluster's calls live.

        >>> records, after = app.records()
        >>> more, after = app.records(after)
        """
        return usage.fetch_page(self._client, after)

    def logs(self, function: str, invocation_id: str = "", limit: int = 100) -> list[LogLine]:
        """The last ``limit`` lines ``function``'s invocations (or one of them) printed."""
        page = self._client.request(
            partial(
                LogsRead, function=function, invocation_id=invocation_id, cursor=None, limit=limit
            )
        )
        lines: list[LogLine] = page.lines
        return lines

    def close(self) -> None:
        """Disconnect; an embedded cluster is shut down with its executors."""
        self._client.close()
        if self._fs is not None:
            self._fs.close()
        if self._objects is not None:
            self._objects.store.close()
        if self._cluster is not None:
            self._cluster.close()
        _open_apps.discard(self)

    def _on_lost(self, reason: str) -> None:
        pass


@overload
def connect(address: str, *, token: str, timeout: float = 30.0) -> TenantApp: ...


@overload
def connect(
    address: str | None = None,
    *,
    key: bytes | str | None = None,
    data_dir: str | os.PathLike[str] = ".stratus",
    executors: int = 0,
    store: str = "",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    preload: tuple[str, ...] = (),
    log_level: str = "WARNING",
    timeout: float = 30.0,
    metrics: str = "",
    autoscaling: cfg.AutoscalingConfig | None = None,
    reconnect: float = 60.0,
) -> App: ...


def connect(
    address: str | None = None,
    *,
    token: str | None = None,
    key: bytes | str | None = None,
    data_dir: str | os.PathLike[str] = ".stratus",
    executors: int = 0,
    store: str = "",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    preload: tuple[str, ...] = (),
    log_level: str = "WARNING",
    timeout: float = 30.0,
    metrics: str = "",
    autoscaling: cfg.AutoscalingConfig | None = None,
    reconnect: float = 60.0,
) -> App | TenantApp:
    """Connect to a cluster; with no ``address``, start an embedded one.

    With a ``token``, connect as a tenant to the cluster's HTTP gateway at ``address``
    (``http://host:8080``): a ``TenantApp``, without the cluster key (docs/http.md).

    An embedded cluster runs a coordinator and at most ``executors`` executor processes
    (default: one per core) in the background, started on demand: each function's warm
    pool grows under load and scales to zero when idle, as ``autoscaling`` says. It keeps
    its data under ``data_dir`` and stops on ``close()``, at the end of a ``with`` block,
    at interpreter exit, or when this process dies. Its state lives in ``store``
    (default ``sqlite:<data_dir>/state.db``; also ``lmdb:PATH`` and
    ``redis://host:port/db``). A server started by ``stratus up`` is reached at
    ``tcp://host:port``; its key comes from ``key``, ``$STRATUS_KEY`` (hex),
    ``$STRATUS_KEY_FILE`` or ``<data_dir>/key``; ``store`` there is the server's store
    URL, which ``app.fs`` needs. ``metrics="127.0.0.1:9464"`` has an embedded cluster
    serve Prometheus metrics there (``app.status().metrics`` says where).

    A client of a server reconnects by itself when the server restarts or the network
    drops: for up to ``reconnect`` seconds (0: never) it dials again, and calls not yet
    answered (those in flight on executors that went with the server included) are sent
    again once it is back, with their effects applied once; calls made meanwhile wait,
    within their own timeout. If the server stays away longer, pending calls fail
    ``ClusterClosed``. Given the server's ``store``, a client also follows a coordinator
    that another host took over: it dials the address that the store's coordinator lease
    names (docs/scaling.md). An embedded cluster ends with its coordinator: no reconnecting.
    """
    if token is not None:
        if address is None:
            raise exc.ConfigurationError("a tenant connects to a gateway: give its address")
        return TenantApp(address, token, timeout=timeout)
    if not (isinstance(reconnect, int | float) and reconnect >= 0):
        raise exc.ConfigurationError(f"reconnect must be >= 0 seconds, not {reconnect!r}")
    if address is None:
        if store:
            check_url(store)
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        config = cfg.ClusterConfig(
            cluster_id=cfg.new_cluster_id(),
            key=cfg.new_key(),
            data_dir=str(Path(data_dir).resolve()),
            executors=executors,
            store=store,
            max_payload=max_payload,
            preload=list(preload),
            sys_path=[p for p in sys.path if p],
            log_level=log_level,
            metrics=metrics,
            autoscaling=autoscaling or cfg.AutoscalingConfig(),
        )
        cluster = EmbeddedCluster(config, timeout=timeout)
        try:
            client = Client(cluster.address, cluster.key, max_payload=max_payload)
        except BaseException:
            cluster.close()
            raise
        return App(client, cluster)
    cluster_key = cfg.load_key(key, data_dir)
    locate = lease_locator(store, cluster_key) if store else None  # follows a takeover
    client = Client(
        address, cluster_key, max_payload=max_payload, reconnect=float(reconnect), locate=locate
    )
    return App(client, store=store, key=cluster_key)  # app.fs of a remote cluster opens its store


@atexit.register
def _close_all() -> None:
    for app in list(_open_apps):
        with contextlib.suppress(Exception):
            app.close()
