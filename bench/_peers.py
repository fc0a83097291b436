"""The peers the benchmarks start the same way: Ray (``ray.init(num_cpus=2)``) and Dask
distributed on a ``LocalCluster`` of 2 worker processes, one thread each (the shape of an
embedded stratus cluster on this 2-core machine). Functions that run on them must be
defined in the benchmark script itself (``__main__``), so that they travel by value."""

from __future__ import annotations

import importlib
import logging
import time
from types import ModuleType
from typing import Any


def import_peer(name: str) -> tuple[ModuleType | None, str | None, float]:
    """The module, or None and why not; and how long the import took, in seconds."""
    start = time.perf_counter_ns()
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        return None, f"{name} is not importable: {error}", 0.0
    return module, None, (time.perf_counter_ns() - start) / 1e9


def start_ray(ray: ModuleType) -> float:
    """Start a local Ray cluster with 2 CPUs and no dashboard; the seconds it took."""
    start = time.perf_counter_ns()
    ray.init(num_cpus=2, include_dashboard=False)
    return (time.perf_counter_ns() - start) / 1e9


class DaskPeer:
    """A Dask ``LocalCluster`` (processes, 2 workers x 1 thread, no dashboard) and its
    ``Client``. Tasks are submitted with ``pure=False`` so equal arguments are not served
    from Dask's result cache."""

    def __init__(self) -> None:
        import distributed

        start = time.perf_counter_ns()
        self.cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = distributed.Client(self.cluster)
        self.init_s = (time.perf_counter_ns() - start) / 1e9
        self.version: str = distributed.__version__

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()
