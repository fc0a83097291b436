"""Pool sizing: how many warm executors each function gets, as state machines without I/O.

``autoscaler`` sizes a pool on load (Knative's KPA), ``keepalive`` learns when an idle
function may drop to zero and when to warm it again ("Serverless in the Wild"), and
``elastic`` combines the two into one size per pool, fed by the executors' load reports;
the coordinator drives ``Elastic`` and carries out its ``Resize`` instructions
(docs/autoscaling.md).
"""

from stratus.server.pools.elastic import (
    Configure,
    Demand,
    Elastic,
    Event,
    Load,
    LoadBook,
    PoolChanged,
    Resize,
    Tick,
)

__all__ = [
    "Configure",
    "Demand",
    "Elastic",
    "Event",
    "Load",
    "LoadBook",
    "PoolChanged",
    "Resize",
    "Tick",
]
