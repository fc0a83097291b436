"""What the client keeps of each invocation in flight (``Pending``) and of each DAG it
calls (``DagShape``, derived once per resolution), and the errors made from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stratus import _exceptions as exc
from stratus.client import invocation as inv
from stratus.client.future import Future
from stratus.client.stream import Stream
from stratus.kv.ref import Ref
from stratus.protocol import messages as m


class Pending:
    """An invocation in flight: its future, its state machine and what to send again."""

    __slots__ = (
        "blob",
        "cold",
        "dag",
        "future",
        "held_ns",
        "info",
        "invocation",
        "refs",
        "stream",
    )

    def __init__(
        self,
        future: Future[Any],
        invocation: inv.Invocation,
        blob: bytes,
        info: m.FunctionInfo | None = None,
        dag: DagShape | None = None,
        refs: tuple[str, ...] = (),
    ) -> None:
        self.future = future
        self.refs = refs  # keys of the Ref arguments: the call prefers where they are cached
        self.invocation = invocation
        self.blob = blob  # the pickled arguments
        self.info = info  # for a function call
        self.dag = dag  # for a DAG call
        self.held_ns = 0  # perf_counter_ns when it began to wait in this client, if it did
        self.cold = False  # it waited for its function's pool to start from nothing
        self.stream: Stream | None = None  # where a streamed call's items go


@dataclass(frozen=True)
class DagShape:
    """A DAG as the client sends it, derived once per resolution."""

    name: str
    nodes: list[m.DagNode]
    infos: list[m.FunctionInfo]
    downstream: list[list[int]]
    sink: int
    budget: float | None  # total timeout of the steps
    retries: int
    steps: tuple[tuple[str, int], ...]  # for placement: (function, first upstream or -1)

    @staticmethod
    def of(name: str, nodes: list[m.DagNode], infos: list[m.FunctionInfo]) -> DagShape:
        downstream: list[list[int]] = [[] for _ in nodes]
        for i, node in enumerate(nodes):
            for u in node.upstream:
                downstream[u].append(i)
        timeouts = [i.options.timeout for i in infos]
        budget = None if None in timeouts else sum(t for t in timeouts if t is not None)
        sink = next(i for i, d in enumerate(downstream) if not d)
        steps = tuple((n.function, n.upstream[0] if n.upstream else -1) for n in nodes)
        retries = min(i.options.retries for i in infos)
        return DagShape(name, nodes, infos, downstream, sink, budget, retries, steps)

    def plan(self, targets: list[m.ExecutorAddress]) -> m.DagPlan:
        """The plan a call of this DAG carries: each step with its executor."""
        nodes = zip(self.nodes, self.infos, targets, self.downstream, strict=True)
        return m.DagPlan(
            self.name,
            [
                m.PlanNode(info.name, info.version, to, info.options.timeout, node.upstream, down)
                for node, info, to, down in nodes
            ],
            self.sink,
        )


def ref_keys(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The keys of the ``Ref`` arguments of a call."""
    keys = [a.key for a in args if isinstance(a, Ref)]
    keys += [v.key for v in kwargs.values() if isinstance(v, Ref)]
    return tuple(keys)


def start_error(error: m.ErrorInfo, pending: Pending) -> exc.InvocationError:
    """The error of a call that waits for an executor none can start: ``ExecutorStartFailed``
    (nothing ran) for a first attempt; for a retry, ``ExecutorLost``, since the attempt
    before it may have been applied (it may have died between its commit and its reply)."""
    invocation = pending.invocation
    if invocation.attempt > 1:
        return exc.ExecutorLost(
            f"{invocation.function}: attempt {invocation.attempt - 1} was lost and may have "
            f"been applied; no executor could start to retry it: {error.message}",
            invocation_id=invocation.invocation_id,
            function=invocation.function,
        )
    return exc.ExecutorStartFailed(
        f"no executor could start for {invocation.function}: {error.message}",
        invocation_id=invocation.invocation_id,
        function=invocation.function,
    )
