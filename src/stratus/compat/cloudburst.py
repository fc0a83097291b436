"""Run programs written for Cloudburst on stratus by changing their imports.

::

    from stratus.compat.cloudburst import CloudburstConnection, CloudburstReference

    cloud = CloudburstConnection("127.0.0.1", "127.0.0.1")   # a `stratus up` server
    square = cloud.register(lambda lib, x: x * x, "square")
    square(3).get()                                          # 9

How the interface maps (``docs/cloudburst.md`` has the full table):

* ``CloudburstConnection(func_addr, ip, tid=0, local=False)`` connects to the stratus
  server at ``func_addr`` (port 7070), or, with ``local=True``, starts an embedded cluster.
* ``register(fn, name)`` registers ``fn(user_lib, *args)``; ``(Class, init_args)`` builds
  ``Class(user_lib, *init_args)`` once per warm executor (at its first call, since the
  library needs a running invocation) and serves ``run(user_lib, *args)``.
* ``register_dag`` / ``call_dag`` keep Cloudburst's argument rules: each function gets its
  own ``arg_map`` arguments first, then the upstream results, a tuple result spread over
  several arguments. ``consistency=MULTI`` runs the DAG under stratus's ``causal`` level,
  ``NORMAL`` under ``eventual`` (LWW).
* The user library: ``get``, ``put``, ``getid`` (this invocation's id), ``send`` and
  ``recv`` (non-blocking, a list of ``(sender, message)``), over ``ctx.kv`` and messages.

Unlike Cloudburst's, futures block without polling the store, errors are exceptions
(``stratus.RemoteError``...), and ``get`` takes a timeout. As in Cloudburst, a function's
``put`` is visible to every other invocation at once (``ctx.kv_now``), so programs that
meet through the store work: a receiver puts its id, a sender polls ``get`` for it. Such
a put stays if the function later fails. Under ``MULTI`` (causal) a DAG's ``put``s and
``get``s instead join its causal transaction, and become visible at its sink.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stratus._exceptions import ConfigurationError, FunctionNotFound
from stratus.client.app import App, connect
from stratus.client.future import Future
from stratus.kv.causal import CausalTransaction
from stratus.kv.ref import Ref
from stratus.server import Context
from stratus.transport.addresses import DEFAULT_PORT

NORMAL = 0
MULTI = 1
_LEVELS = {NORMAL: "eventual", MULTI: "causal"}


class CloudburstReference:
    """An argument naming a kv key; the executor passes the value (``stratus.Ref``)."""

    def __init__(self, key: str, deserialize: bool = True) -> None:
        self.key = key
        self.deserialize = deserialize


class CloudburstFuture:
    """The pending result of a call; ``get()`` blocks for it."""

    def __init__(self, future: Future[Any]) -> None:
        self._future = future
        self.invocation_id = future.invocation_id  # where ``send`` reaches this call

    def get(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)


class CloudburstUserLibrary:
    """The first argument of a Cloudburst function, over the invocation's ``Context``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def get(self, keys: str | list[str]) -> Any:
        """The latest value of each key (fresh from the store, so a poll sees a put that
        another running invocation just made); causal reads under ``MULTI``."""
        read = self._ctx.kv.get if self._causal else self._ctx.kv_now.get
        if isinstance(keys, list):
            return [read(k) for k in keys]
        return read(keys)

    def put(self, key: str, value: Any) -> bool:
        """Write ``key``, visible to everyone at once (in the causal transaction under
        ``MULTI``)."""
        if self._causal:
            self._ctx.kv.put(key, value)
        else:
            self._ctx.kv_now.put(key, value)
        return True

    @property
    def _causal(self) -> bool:
        return isinstance(self._ctx.kv, CausalTransaction)

    def getid(self) -> str:
        return self._ctx.invocation_id

    def send(self, dest: str, data: Any) -> None:
        self._ctx.send(dest, data)

    def recv(self) -> list[tuple[str, Any]]:
        return self._ctx.recv_nowait()


class _Serve:
    """A registered Cloudburst function or class, as a stratus function.

    ``dag_sink`` set: a DAG step. A source step gets the call's ``arg_map``; each step
    passes ``(arg_map, result)`` on, and the sink returns the bare result.
    """

    def __init__(
        self, name: str, target: Any, dag_sink: bool | None = None, dag_source: bool = False
    ) -> None:
        self.name = name
        self.dag_sink = dag_sink
        self.dag_source = dag_source
        if isinstance(target, tuple):
            self.cls, self.init_args, self.fn = target[0], tuple(target[1]), None
        else:
            self.cls, self.init_args, self.fn = None, (), target
        self.instance: Any = None

    def __call__(self, ctx: Context, *args: Any) -> Any:
        lib = CloudburstUserLibrary(ctx)
        if self.dag_sink is not None:
            upstream = [] if self.dag_source else list(args)
            arg_map = args[0] if self.dag_source else args[0][0]
            args = tuple(arg_map.get(self.name, ())) + _spread(upstream)
            value = self._run(lib, args)
            return value if self.dag_sink else (arg_map, value)
        return self._run(lib, args)

    def _run(self, lib: CloudburstUserLibrary, args: tuple[Any, ...]) -> Any:
        args = tuple(Ref(a.key) if isinstance(a, CloudburstReference) else a for a in args)
        if self.fn is not None:
            return self.fn(lib, *args)
        if self.instance is None:  # once per warm executor
            self.instance = self.cls(lib, *self.init_args)
        return self.instance.run(lib, *args)


def _spread(upstream: list[Any]) -> tuple[Any, ...]:
    values: list[Any] = []
    for _, value in upstream:  # each upstream step passed (arg_map, result)
        values.extend(value if isinstance(value, tuple) else (value,))
    return tuple(values)


class CloudburstConnection:
    """A Cloudburst client whose calls run on a stratus cluster; ``options`` go to
    ``stratus.connect`` (say ``data_dir=`` of a local cluster)."""

    def __init__(
        self, func_addr: str, ip: str = "", tid: int = 0, local: bool = False, **options: Any
    ) -> None:
        if local:
            self.app: App = connect(**options)
        else:
            address = func_addr if "://" in func_addr else f"tcp://{func_addr}:{DEFAULT_PORT}"
            self.app = connect(address, **options)
        self._targets: dict[str, Any] = {}

    def register(self, function: Any, name: str) -> Callable[..., CloudburstFuture] | None:
        self._targets[name] = function
        handle = self.app.function(name=name)(_Serve(name, function))

        def call(*args: Any) -> CloudburstFuture:
            return CloudburstFuture(handle.remote(*_refs(args)))

        return call

    def register_dag(
        self, name: str, functions: list[str], connections: list[tuple[str, str]]
    ) -> tuple[bool, str | None]:
        missing = [f for f in functions if f not in self._targets]
        if missing:
            return False, f"unknown functions {missing}: register them first"
        sources = {src for src, _ in connections}
        sinks = [f for f in functions if f not in sources]
        if len(sinks) != 1:
            return False, "a DAG needs exactly one sink"
        upstream: dict[str, list[str]] = {f: [] for f in functions}
        for src, dst in connections:
            upstream[dst].append(src)
        for level in _LEVELS.values():
            handles = {
                f: self.app.function(name=_step(name, level, f), consistency=level)(  # type: ignore[arg-type]
                    _Serve(f, self._targets[f], dag_sink=f == sinks[0], dag_source=not upstream[f])
                )
                for f in functions
            }
            self.app.dag(_dag(name, level), _wire(handles, upstream))
        return True, None

    def call_dag(
        self,
        name: str,
        arg_map: dict[str, Iterable[Any]],
        direct_response: bool = False,
        consistency: int = NORMAL,
        output_key: str | None = None,
        client_id: str | None = None,
    ) -> Any:
        if consistency not in _LEVELS:
            raise ConfigurationError("consistency is NORMAL or MULTI")
        args = {f: list(_refs(tuple(a))) for f, a in arg_map.items()}
        future = self.app.lookup(_dag(name, _LEVELS[consistency])).remote(args)
        if output_key is not None:
            self.app.kv.put(output_key, future.result())
        return future.result() if direct_response else CloudburstFuture(future)

    def exec_func(self, name: str, args: Iterable[Any]) -> CloudburstFuture:
        return CloudburstFuture(self.app.lookup(name).remote(*_refs(tuple(args))))

    def get_object(self, key: str) -> Any:
        return self.app.kv.get(key)

    def put_object(self, key: str, value: Any) -> bool:
        self.app.kv.put(key, value)
        return True

    def delete_dag(self, name: str) -> bool:
        try:
            for level in _LEVELS.values():
                self.app.delete_dag(_dag(name, level))
        except FunctionNotFound:
            return False
        return True

    def list(self, prefix: str | None = None) -> list[str]:
        names = [f.name for f in self.app.status().functions if "#" not in f.name]
        return sorted(n for n in names if prefix is None or n.startswith(prefix))

    def close(self) -> None:
        self.app.close()


def _refs(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(Ref(a.key) if isinstance(a, CloudburstReference) else a for a in args)


def _dag(name: str, level: str) -> str:
    return f"{name}#{level}"


def _step(dag: str, level: str, function: str) -> str:
    return f"{dag}#{level}#{function}"


def _wire(handles: dict[str, Any], upstream: dict[str, list[str]]) -> Any:
    """The stratus graph of the connections: each step after all its upstream steps."""
    built: dict[str, Any] = {}

    def build(f: str) -> Any:
        if f not in built:
            ups = upstream[f]
            if not ups:
                built[f] = handles[f]
            else:
                parts = [build(u) for u in ups]
                built[f] = (parts[0] if len(parts) == 1 else parts) >> handles[f]
        return built[f]

    sink = next(f for f in handles if all(f not in ups for ups in upstream.values()))
    return build(sink)
