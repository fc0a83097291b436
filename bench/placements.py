"""How many executor placements per second the coordinator's scheduler decides.

The scheduler is the coordinator's only per-node work on the cold path: a pool that grows
asks it for a node (``_node_for``) and an executor. This drives the state machine alone,
with fake nodes that start executors at once, so the figure is the ceiling of the
decisions, not of forking: ``python bench/placements.py [nodes] [cores]``.
"""

from __future__ import annotations

import sys
import time

from stratus.protocol.messages import ExecutorAddress, Resources
from stratus.server import scheduler as sched


def placements_per_second(nodes: int, cores: int) -> tuple[int, float]:
    """Fill ``nodes`` x ``cores`` executors, one pool of one executor per function, each
    ready as soon as it is spawned; (executors placed, placements per second)."""
    offer = Resources(cpu=1.0, memory_mb=2048, gpus=0)
    s = sched.Scheduler(cores, offer=offer)
    now = 0.0
    for n in range(1, nodes):
        s.handle(sched.NodeJoined(f"n{n}", cores, offer), now)
    placed = 0
    start = time.perf_counter()
    for f in range(nodes * cores):
        for i in s.handle(sched.SetPool(f"f{f}", 1, resources=Resources(memory_mb=1024)), now):
            if isinstance(i, sched.Spawn):
                address = ExecutorAddress(i.executor_id, f"tcp://10.0.0.1:{placed}")
                s.handle(sched.Ready(address, 1, offer), now)
                placed += 1
    return placed, placed / (time.perf_counter() - start)


if __name__ == "__main__":
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    cores = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    placed, rate = placements_per_second(nodes, cores)
    print(f"{nodes} nodes x {cores} cores: {placed} executors placed, {rate:,.0f} placements/s")
