"""Handles a user holds: ``Function`` and ``Dag``, and the ``>>`` graph builder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Union

from stratus._exceptions import ClusterClosed, ConfigurationError, UnsupportedFunction
from stratus.protocol.messages import DagNode, FunctionOptions

if TYPE_CHECKING:
    from stratus.client.client import Client
    from stratus.client.future import Future
    from stratus.client.stream import Stream

Composable = Union["Function", "Graph", list[Any]]


class _Invocable:
    name: str
    _client: Client | None

    def remote(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """Invoke on the cluster; returns at once with a Future."""
        return self._connected().invoke(self.name, args, kwargs)

    def _connected(self) -> Client:
        if self._client is None:
            raise ClusterClosed(
                f"{self.name}: a pickled handle has no connection; "
                "inside a function use ctx.call(handle, ...)"
            )
        return self._client

    def map(self, *iterables: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
        """Like ``Executor.map``: every call is sent first, results come back in order."""
        futures = [self.remote(*args) for args in zip(*iterables, strict=False)]
        return (f.result(timeout=timeout) for f in futures)


class Function(_Invocable):
    """A registered function: ``fn.remote(*args)`` invokes it, ``a >> b`` composes."""

    def __init__(
        self, client: Client | None, name: str, version: int, options: FunctionOptions
    ) -> None:
        self._client = client
        self.name = name
        self.version = version
        self.options = options

    def __repr__(self) -> str:
        return f"<stratus.Function {self.name} v{self.version}>"

    def remote_gen(self, *args: Any, **kwargs: Any) -> Stream:
        """Invoke a generator function; returns at once with a ``Stream`` of its items,
        sent as it yields them (``for x in fn.remote_gen(...)`` or ``async for``). Its
        writes commit when it finishes. ``fn.remote(...)`` returns them as one list.

        A stream is not retried once an item arrived (``StreamInterrupted``)."""
        if self.options.kind not in ("generator", "async_generator"):
            raise UnsupportedFunction(f"{self.name} is not a generator: call remote()")
        return self._connected().stream(self.name, args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (as an argument, or captured by a function) without its connection;
        # inside a function, use it with ``ctx.call(handle, ...)``.
        return (Function, (None, self.name, self.version, self.options))

    def __rshift__(self, other: Composable) -> Graph:
        return Graph.of(self) >> other

    def __rrshift__(self, other: Composable) -> Graph:
        return Graph.of(other) >> self


class Dag(_Invocable):
    """A registered DAG: its sources get the call's arguments, its sink's result returns."""

    def __init__(self, client: Client | None, name: str, nodes: list[DagNode]) -> None:
        self._client = client
        self.name = name
        self.nodes = nodes

    def __repr__(self) -> str:
        return f"<stratus.Dag {self.name}: {' '.join(n.function for n in self.nodes)}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dag, (None, self.name, self.nodes))


class Graph:
    """Functions wired by ``>>``: chains ``a >> b``, fan-out ``a >> [b, c]`` and fan-in
    ``[b, c] >> d``. A node's result is the argument of each node after it; a node with
    several upstream nodes gets their results as arguments, in the order written.

    A function already on the left of ``>>`` is a new step when it appears on the right:
    ``f >> f`` runs ``f`` twice, the second time on the first one's result. Inside a
    list, the same function in several branches is one step (``[a >> c, b >> c]`` joins
    at ``c``), so a cycle can only be written with lists, and is refused.
    """

    def __init__(
        self,
        upstream: dict[str, list[str]],
        tails: list[str],
        functions: dict[str, str] | None = None,
    ) -> None:
        self.upstream = upstream  # node -> its upstream nodes, insertion-ordered
        self.tails = tails  # nodes the next ``>>`` connects from
        # node -> its function; a node is named after its function, "f#2" for a repeat
        self.functions = functions if functions is not None else {n: n for n in upstream}

    @staticmethod
    def of(item: Composable) -> Graph:
        if isinstance(item, Graph):
            return item
        if isinstance(item, Function):
            return Graph({item.name: []}, [item.name])
        if isinstance(item, list | tuple) and item:
            merged = Graph({}, [])
            for part in item:
                graph = Graph.of(part)
                merged.upstream = _merge(merged.upstream, graph.upstream)
                merged.functions = {**merged.functions, **graph.functions}
                merged.tails += [t for t in graph.tails if t not in merged.tails]
            return merged
        raise ConfigurationError(f"cannot put {item!r} in a DAG: use functions, >> and lists")

    def __rshift__(self, other: Composable) -> Graph:
        right = Graph.of(other)._renamed_apart(self)
        upstream = _merge(self.upstream, {})
        for node, ups in right.upstream.items():
            extra = list(self.tails) if not ups else []
            upstream[node] = [*upstream.get(node, []), *ups, *extra]
        return Graph(upstream, right.tails, {**self.functions, **right.functions})

    def __rrshift__(self, other: Composable) -> Graph:
        return Graph.of(other) >> self

    def _renamed_apart(self, left: Graph) -> Graph:
        """This graph with its nodes that ``left`` has too renamed to new steps."""
        taken = set(left.upstream) | set(self.upstream)
        renames: dict[str, str] = {}
        for node in self.upstream:
            if node in left.upstream:
                function, k = self.functions[node], 2
                while f"{function}#{k}" in taken:
                    k += 1
                renames[node] = f"{function}#{k}"
                taken.add(renames[node])
        if not renames:
            return self

        def new(n: str) -> str:
            return renames.get(n, n)

        return Graph(
            {new(n): [new(u) for u in ups] for n, ups in self.upstream.items()},
            [new(t) for t in self.tails],
            {new(n): f for n, f in self.functions.items()},
        )

    def nodes(self) -> list[DagNode]:
        """The nodes in topological order, upstream given as indexes."""
        order: list[str] = []
        placed: set[str] = set()
        pending = dict(self.upstream)
        while pending:
            ready = [n for n, ups in pending.items() if all(u in placed for u in ups)]
            if not ready:
                raise ConfigurationError("the DAG has a cycle")
            for n in ready:
                order.append(n)
                placed.add(n)
                del pending[n]
        index = {n: i for i, n in enumerate(order)}
        return [DagNode(self.functions[n], [index[u] for u in self.upstream[n]]) for n in order]


def _merge(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    merged = {k: list(v) for k, v in a.items()}
    for k, v in b.items():
        merged[k] = [*merged.get(k, []), *(u for u in v if u not in merged.get(k, []))]
    return merged
