"""Provisioners: start and stop the node agents of a cluster somewhere (docs/scaling.md).

A node agent (``stratus node --join``, ``server/node.py``) is one host's executors for a
coordinator elsewhere. A provisioner decides where agents run and keeps them running:

- :class:`~stratus.provision.local.LocalProvisioner`: agents as processes of this machine
  (tests, and one big machine split into nodes);
- :class:`~stratus.provision.ray_nodes.RayProvisioner`: one agent per Ray node, each a Ray
  actor holding that node's resources, so ``ray up`` clusters and KubeRay work unchanged.

With ``--autoscale`` a provisioner runs as many agents as the coordinator's pools need
(``demand.NodeScaler``, deciding with ``sizing.NodeSizing``).

Kubernetes needs no provisioner object: ``deploy/kubernetes/`` runs the agents as a
DaemonSet. Every provisioner passes the cluster key to its agents in ``$STRATUS_KEY``,
never on a command line (``/proc/*/cmdline`` is world-readable).
"""

from __future__ import annotations

from typing import Protocol

from stratus.provision.agent import AgentInfo, AgentSpec
from stratus.provision.sizing import NodeShape


class Provisioner(Protocol):
    """Starts, scales and stops node agents for one coordinator."""

    def start(self) -> list[AgentInfo]:
        """Start the agents this provisioner places; returns what runs."""
        ...

    def scale(self, nodes: int) -> list[AgentInfo]:
        """Run ``nodes`` agents: start more or stop the newest; returns what runs."""
        ...

    def release(self, node_id: str) -> list[AgentInfo]:
        """Stop the agent of ``node_id`` (drained first: it has no executor) and run one
        agent fewer; returns what runs."""
        ...

    def shape(self) -> NodeShape:
        """What one agent it adds holds: its executors and what each offers."""
        ...

    def agents(self) -> list[AgentInfo]:
        """What runs now (an agent that exited has its exit status)."""
        ...

    def stop(self) -> None:
        """Stop every agent (their executors die with them); waits, with a deadline."""
        ...


__all__ = ["AgentInfo", "AgentSpec", "NodeShape", "Provisioner"]
