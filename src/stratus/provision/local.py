"""Node agents as processes of this machine: for tests, and for one big machine split
into nodes (each with its own cores and memory). Agents are children of this process
and die with it."""

from __future__ import annotations

import os

from stratus import _exceptions as exc
from stratus.protocol.messages import Resources
from stratus.provision.agent import AgentInfo, AgentProcess, AgentSpec
from stratus.provision.sizing import NodeShape
from stratus.server.node import detect_capacity


class LocalProvisioner:
    """``nodes`` agents named ``<prefix>-1``, ``<prefix>-2``... joining ``join``.

    >>> provisioner = LocalProvisioner("tcp://10.0.0.5:7070", key, "/var/lib/stratus", nodes=2)
    >>> provisioner.start()          # two agents, each with its data dir under the base
    >>> provisioner.scale(3)
    >>> provisioner.stop()
    """

    def __init__(
        self,
        join: str,
        key: bytes,
        base_dir: str,
        *,
        nodes: int = 1,
        cores: int = 0,
        memory_mb: int = 0,
        gpus: int | tuple[str, ...] | None = None,
        advertise: str = "",
        prefix: str = "local",
    ) -> None:
        if nodes < 0:
            raise exc.ConfigurationError(f"cannot run {nodes} nodes")
        self.join, self.key, self.base_dir, self.nodes = join, key, base_dir, nodes
        self.cores, self.memory_mb, self.gpus = cores, memory_mb, gpus
        self.advertise, self.prefix = advertise, prefix
        self._next = 1
        self._running: list[AgentProcess] = []
        self._spec(self.prefix)  # bad options fail here, not in a child

    def start(self) -> list[AgentInfo]:
        return self.scale(self.nodes)

    def scale(self, nodes: int) -> list[AgentInfo]:
        if nodes < 0:
            raise exc.ConfigurationError(f"cannot run {nodes} nodes")
        self._running = [a for a in self._running if a.exit_status() is None]
        while len(self._running) < nodes:
            node_id = f"{self.prefix}-{self._next}"
            self._next += 1  # a node id is never reused: the coordinator may still hold it
            self._running.append(AgentProcess(self._spec(node_id), self.key))
        while len(self._running) > nodes:
            self._running.pop().stop()
        return self.agents()

    def release(self, node_id: str) -> list[AgentInfo]:
        for agent in [a for a in self._running if a.spec.node_id == node_id]:
            self._running.remove(agent)
            agent.stop()
        return self.agents()

    def shape(self) -> NodeShape:
        c = detect_capacity(cores=self.cores, memory_mb=self.memory_mb, gpus=self.gpus)
        return NodeShape(c.cores, Resources(1.0, c.memory_mb // max(1, c.cores), c.gpus))

    def agents(self) -> list[AgentInfo]:
        return [AgentInfo(a.spec.node_id, "local", a.pid, a.exit_status()) for a in self._running]

    def stop(self) -> None:
        for agent in self._running:  # all stop at once, each within its deadline
            agent.terminate()
        while self._running:
            self._running.pop().stop()

    def _spec(self, node_id: str) -> AgentSpec:
        return AgentSpec(
            self.join,
            node_id,
            os.path.join(self.base_dir, node_id),
            cores=self.cores,
            memory_mb=self.memory_mb,
            gpus=self.gpus,
            advertise=self.advertise,
        )
