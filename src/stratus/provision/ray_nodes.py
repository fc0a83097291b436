"""One node agent per Ray node, each inside a Ray actor that holds the node's resources.

Theory of operation: the provisioner is a Ray driver. For each alive Ray node whose
resources fit one agent's reservation (``cpus``, ``memory_mb``, ``gpus``), it creates an
actor pinned to that node (``NodeAffinitySchedulingStrategy``, not soft) that reserves
those resources, so Ray's own scheduler and autoscaler see the node as taken. The actor
starts ``python -m stratus.cli node --join ...`` as a child (the key in ``$STRATUS_KEY``)
and stops it when asked; the child dies with the actor's process, and actors that belong
to this driver die with it, so nothing stratus started outlives the provisioner.

``sync()`` reconciles: agents whose node left or whose process exited are replaced, nodes
that joined get one, until ``target`` agents run (None: every node). ``scale(n)`` first
asks Ray's autoscaler for ``n`` agents' worth of resources
(``ray.autoscaler.sdk.request_resources``), so a ``ray up`` or KubeRay cluster grows nodes
for them; later syncs place agents on those nodes as they come. Shrinking stops the
newest agents and lowers the request, so the autoscaler may remove idle nodes.

Ray is imported only here, and only when a provisioner is built: it is an optional
dependency (the ``bench`` extra installs it).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from stratus import _exceptions as exc
from stratus.protocol.messages import Resources
from stratus.provision.agent import STOP_TIMEOUT, AgentInfo, AgentProcess, AgentSpec
from stratus.provision.sizing import NodeShape

log = logging.getLogger("stratus.provision.ray")

START_TIMEOUT = 60.0  # seconds for an actor to be placed and its agent started


class AgentActor:
    """The Ray actor on one node: runs that node's agent. Wrapped with ``ray.remote``."""

    def __init__(self, spec: AgentSpec, key: bytes) -> None:
        self.agent = AgentProcess(spec, key)

    def pid(self) -> int:
        return self.agent.pid

    def exit_status(self) -> int | None:
        return self.agent.exit_status()

    def stop(self, timeout: float) -> int:
        return self.agent.stop(timeout)


@dataclass
class _Placed:
    node: str  # the Ray node id
    actor: Any  # its ray.actor.ActorHandle
    info: AgentInfo


class RayProvisioner:
    """Node agents on a Ray cluster, one per node.

    >>> provisioner = RayProvisioner("tcp://10.0.0.5:7070", key, address="auto", cpus=4)
    >>> provisioner.start()      # an agent on every Ray node with 4 free CPUs
    >>> provisioner.scale(8)     # ask Ray's autoscaler for 8 such nodes' worth; place them
    >>> provisioner.stop()
    """

    def __init__(
        self,
        join: str,
        key: bytes,
        *,
        address: str = "auto",
        cpus: float | None = None,
        memory_mb: int = 0,
        gpus: float | None = None,
        base_dir: str = "/tmp/stratus-ray",
        timeout: float = START_TIMEOUT,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise exc.ConfigurationError(
                "the Ray provisioner needs Ray: pip install 'ray[default]'"
            ) from None
        if (cpus is not None and cpus <= 0) or memory_mb < 0 or (gpus or 0) < 0:
            raise exc.ConfigurationError("an agent reserves positive cpus and no negative memory")
        AgentSpec(join, "check", base_dir)  # a malformed --join fails here, before Ray
        self.ray = ray
        self.join, self.key, self.base_dir, self.timeout = join, key, base_dir, timeout
        self.cpus, self.memory_mb, self.gpus = cpus, memory_mb, gpus
        self.target: int | None = None  # None: every node that fits
        if not ray.is_initialized():
            _probe(address)
            try:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise exc.ConnectionFailed(f"cannot reach a Ray cluster at {address}: {e}") from e
        self._remote_actor = ray.remote(AgentActor)
        self._placed: list[_Placed] = []

    def start(self) -> list[AgentInfo]:
        return self.sync()

    def scale(self, nodes: int) -> list[AgentInfo]:
        if nodes < 0:
            raise exc.ConfigurationError(f"cannot run {nodes} nodes")
        from ray.autoscaler.sdk import request_resources

        alive = self._nodes()  # the first node's shape stands for the nodes Ray would add
        bundle = self._bundle(alive[0][1] if alive else {"CPU": 1.0})
        request_resources(bundles=[bundle] * nodes)
        self.target = nodes
        return self.sync()

    def release(self, node_id: str) -> list[AgentInfo]:
        chosen = [p for p in self._placed if p.info.node_id == node_id]
        self._placed = [p for p in self._placed if p not in chosen]
        self._stop(chosen)
        # Fewer resources asked of Ray's autoscaler, so that it may remove the idle node.
        return self.scale(max(0, (self.target or 0) - len(chosen)))

    def shape(self) -> NodeShape:
        """The first Ray node's share for one agent stands for the nodes Ray would add."""
        alive = self._nodes()
        bundle = self._bundle(alive[0][1] if alive else {"CPU": 1.0})
        cores = max(1, int(bundle["CPU"]))
        node_memory = int(alive[0][1].get("memory", 0) // 2**20) if alive else 0
        memory = self.memory_mb or node_memory
        offer = Resources(1.0, memory // cores, int(bundle.get("GPU", 0)))
        return NodeShape(cores, offer)

    def agents(self) -> list[AgentInfo]:
        return [p.info for p in self._placed]

    def sync(self) -> list[AgentInfo]:
        """Replace lost agents, place new ones up to ``target``, stop the extra ones."""
        alive = dict(self._nodes())
        kept: list[_Placed] = []
        for placed in self._placed:
            status = self._exit_status(placed) if placed.node in alive else -1
            if status is None:
                kept.append(placed)
            else:
                log.warning("agent %s is gone (status %s): replacing it", placed.info, status)
                self.ray.kill(placed.actor)
        self._placed = kept
        taken = {p.node for p in self._placed}
        target = len(alive) if self.target is None else self.target
        free = [n for n, r in alive.items() if n not in taken and self._fits(r)]
        chosen = free[: max(0, target - len(self._placed))]
        self._wait_started([self._place(node, alive[node]) for node in chosen])
        while len(self._placed) > target:
            self._stop([self._placed.pop()])
        return self.agents()

    def stop(self) -> None:
        placed, self._placed = self._placed, []
        self._stop(placed)

    def _nodes(self) -> list[tuple[str, dict[str, float]]]:
        """Alive Ray nodes and their total resources, in a stable order."""
        return sorted(
            (n["NodeID"], dict(n.get("Resources", {}))) for n in self.ray.nodes() if n["Alive"]
        )

    def _bundle(self, resources: dict[str, float]) -> dict[str, float]:
        """What one agent reserves on a node with ``resources``."""
        bundle = {"CPU": self.cpus if self.cpus is not None else resources.get("CPU", 1.0)}
        gpus = self.gpus if self.gpus is not None else resources.get("GPU", 0.0)
        if gpus:
            bundle["GPU"] = gpus
        if self.memory_mb:
            bundle["memory"] = float(self.memory_mb * 2**20)
        return bundle

    def _fits(self, resources: dict[str, float]) -> bool:
        return all(resources.get(k, 0.0) >= v for k, v in self._bundle(resources).items())

    def _place(self, node: str, resources: dict[str, float]) -> _Placed:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        bundle = self._bundle(resources)
        node_id = f"ray-{node[:12]}"
        spec = AgentSpec(
            self.join,
            node_id,
            os.path.join(self.base_dir, node_id),
            cores=max(1, int(bundle["CPU"])),
            memory_mb=self.memory_mb,
            gpus=int(bundle.get("GPU", 0)),
        )
        actor = self._remote_actor.options(
            num_cpus=bundle["CPU"],
            num_gpus=bundle.get("GPU", 0),
            memory=bundle.get("memory"),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
            max_restarts=0,
        ).remote(spec, self.key)
        info = AgentInfo(node_id, f"ray node {node}", 0, offer=bundle)
        return _Placed(node, actor, info)

    def _wait_started(self, new: list[_Placed]) -> None:
        """Wait for the new actors' agents; kill them all past the deadline."""
        if not new:
            return
        try:
            pids = self.ray.get([p.actor.pid.remote() for p in new], timeout=self.timeout)
        except self.ray.exceptions.RayError as e:  # GetTimeoutError too
            for p in new:
                self.ray.kill(p.actor)
            raise exc.NoCapacity(
                f"Ray did not start {len(new)} node agents within {self.timeout} s: {e}"
            ) from e
        for placed, pid in zip(new, pids, strict=True):
            info = placed.info
            placed.info = AgentInfo(info.node_id, info.where, pid, None, info.offer)
            log.info("agent %s on %s, pid %d", info.node_id, info.where, pid)
            self._placed.append(placed)

    def _exit_status(self, placed: _Placed) -> int | None:
        try:
            status: int | None = self.ray.get(placed.actor.exit_status.remote(), timeout=10)
        except self.ray.exceptions.GetTimeoutError:
            return None  # busy node: look again at the next sync
        except self.ray.exceptions.RayError:
            return -1  # the actor (and with it the agent) died
        return status

    def _stop(self, placed: list[_Placed]) -> None:
        """SIGTERM every agent at once, wait for them (with a deadline), kill the actors."""
        stopping = [p.actor.stop.remote(STOP_TIMEOUT) for p in placed]
        try:
            self.ray.get(stopping, timeout=STOP_TIMEOUT + 10)
        except self.ray.exceptions.RayError as e:  # GetTimeoutError too
            log.warning("agents did not all stop cleanly: %s", e)
        for p in placed:
            self.ray.kill(p.actor)


def _probe(address: str, timeout: float = 5.0) -> None:
    """``ConnectionFailed`` now if nothing listens at an explicit ``HOST:PORT`` (or
    ``ray://HOST:PORT``): ``ray.init`` would retry an unreachable GCS for minutes."""
    if address in ("", "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise exc.ConfigurationError(f"a Ray address is auto, HOST:PORT or ray://...: {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise exc.ConnectionFailed(f"no Ray cluster at {address}: {e}") from None
