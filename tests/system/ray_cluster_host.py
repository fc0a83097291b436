"""A Ray cluster of three raylets on this machine, for the Ray provisioner's test.

Run as a script (so that Ray never loads into the test process): starts the head and two
more nodes (one CPU each, each with a resource of its own), prints the GCS address on a
line of its own, and shuts the cluster down when its stdin closes.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from ray.cluster_utils import Cluster

_NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(resources: dict[str, float]) -> dict[str, Any]:
    """A node's options. Its agents' ports are given: with port 0 the raylet waits for
    each agent to write the port it took, and on a loaded 2-core machine the dashboard
    agent's imports outlast that wait (the raylet then aborts)."""
    ports = ("metrics_agent_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    return {**_NODE, "resources": resources, **{name: _free_port() for name in ports}}


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args=_node({"head": 1}))
    try:
        for name in ("r1", "r2"):
            cluster.add_node(**_node({name: 1}))
        cluster.wait_for_nodes(timeout=60)
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes it (or dies)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
