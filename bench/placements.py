"""How many executor placements per second the coordinator's scheduler decides, and how
many of its steady events (load reports, heartbeats) it handles per second once full.

The scheduler is the coordinator's only per-node work on the cold path: a pool that grows
asks it for a node (``_node_for``) and an executor. This drives the state machine alone,
with fake nodes that start executors at once, so the figure is the ceiling of the
decisions, not of forking: ``python bench/placements.py [nodes] [cores]``. Then, on the
full cluster, every executor reports its load and every node says it is alive (each does
about once a second), which the scheduler handles like any event: the steady events per
second it can take is the size of cluster one coordinator can keep up with.
"""

from __future__ import annotations

import sys
import time

from stratus.protocol.messages import ExecutorAddress, Resources
from stratus.server import scheduler as sched


def filled(nodes: int, cores: int) -> tuple[sched.Scheduler, list[str], float]:
    """Fill ``nodes`` x ``cores`` executors, one pool of one executor per function, each
    ready as soon as it is spawned; the scheduler, its executors, placements per second."""
    offer = Resources(cpu=1.0, memory_mb=2048, gpus=0)
    s = sched.Scheduler(cores, offer=offer)
    now = 0.0
    for n in range(1, nodes):
        s.handle(sched.NodeJoined(f"n{n}", cores, offer), now)
    placed: list[str] = []
    start = time.perf_counter()
    for f in range(nodes * cores):
        for i in s.handle(sched.SetPool(f"f{f}", 1, resources=Resources(memory_mb=1024)), now):
            if isinstance(i, sched.Spawn):
                address = ExecutorAddress(i.executor_id, f"tcp://10.0.0.1:{len(placed)}")
                s.handle(sched.Ready(address, 1, offer), now)
                placed.append(i.executor_id)
    return s, placed, len(placed) / (time.perf_counter() - start)


def steady_events_per_second(s: sched.Scheduler, executors: list[str], nodes: int) -> float:
    """One round of what a full cluster sends every second: a load report per executor and
    a heartbeat per node; events handled per second."""
    events: list[object] = [sched.LoadReported(e, 0, 1, frozenset()) for e in executors]
    events += [sched.NodeAlive(f"n{n}") for n in range(1, nodes)]
    start = time.perf_counter()
    for event in events:
        s.handle(event, 1.0)  # type: ignore[arg-type]
    return len(events) / (time.perf_counter() - start)


if __name__ == "__main__":
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    cores = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    scheduler, placed, rate = filled(nodes, cores)
    steady = steady_events_per_second(scheduler, placed, nodes)
    print(
        f"{nodes} nodes x {cores} cores: {len(placed)} executors placed, {rate:,.0f}"
        f" placements/s; then {steady:,.0f} steady events/s (it receives ~{len(placed) + nodes}/s)"
    )
