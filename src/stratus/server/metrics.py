"""Prometheus metrics of a cluster, served by the coordinator over HTTP.

Theory of operation: executors count calls, errors, timeouts, cold starts and a histogram
of run times per function, and send the counts accumulated since their last report in
their periodic ``ExecutorLoad`` (no HTTP server, no extra message per call). The
coordinator adds them up here, and sets the pool gauges on its tick. A scrape reads a
snapshot under a lock from prometheus-client's own server thread, which never touches
the coordinator's loop.

    metric                                       type       labels
    ------------------------------------------   --------   ---------
    stratus_calls_total                          counter    function
    stratus_errors_total                         counter    function
    stratus_timeouts_total                       counter    function
    stratus_cold_starts_total                    counter    function
    stratus_invocation_duration_seconds          histogram  function   (run time on the executor)
    stratus_executors                            gauge      state (starting, warm, busy)
    stratus_queue_length                         gauge      -
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from stratus._exceptions import ConfigurationError
from stratus.protocol import messages as m
from stratus.protocol.metering import LATENCY_BUCKETS
from stratus.server.metering import Counts


class Metrics(Collector):
    """The cluster's counters and gauges, and (``serve``) their HTTP endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._functions: dict[str, Counts] = {}
        self._executors = {"starting": 0, "warm": 0, "busy": 0}
        self._queue = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.address = ""
        self._server: Any = None

    def serve(self, address: str) -> str:
        """Serve ``/metrics`` on ``host:port`` (port 0: any free one); the address."""
        host, _, port = address.rpartition(":")
        try:
            self._server, _ = start_http_server(int(port), host or "127.0.0.1", self.registry)
        except (ValueError, OverflowError, OSError) as e:
            raise ConfigurationError(f"cannot serve metrics on {address!r}: {e}") from None
        self.address = f"{host or '127.0.0.1'}:{self._server.server_port}"
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add(self, reported: list[m.FunctionMetrics]) -> None:
        """Add an executor's counts since its last report."""
        with self._lock:
            for r in reported:
                f = self._functions.get(r.function)
                if f is None:
                    f = self._functions[r.function] = Counts()
                f.calls += r.calls
                f.errors += r.errors
                f.timeouts += r.timeouts
                f.cold_starts += r.cold_starts
                f.seconds += r.seconds
                for i, n in enumerate(r.buckets[: len(f.buckets)]):
                    f.buckets[i] += n

    def set_pool(self, *, starting: int, warm: int, busy: int, queued: int = 0) -> None:
        with self._lock:
            self._executors = {"starting": starting, "warm": warm, "busy": busy}
            self._queue = queued

    def collect(self) -> Iterator[Any]:
        with self._lock:
            functions = {name: _copy(f) for name, f in self._functions.items()}
            executors, queue = dict(self._executors), self._queue
        counters = [
            ("calls", "Invocation attempts run", "calls"),
            ("errors", "Attempts that did not return a result", "errors"),
            ("timeouts", "Attempts stopped at their timeout", "timeouts"),
            ("cold_starts", "Calls that started cold (empty pool or code load)", "cold_starts"),
        ]
        for name, doc, attr in counters:
            family = CounterMetricFamily(f"stratus_{name}", doc, labels=["function"])
            for fn, f in sorted(functions.items()):
                family.add_metric([fn], getattr(f, attr))
            yield family
        histogram = HistogramMetricFamily(
            "stratus_invocation_duration_seconds",
            "Run time of invocations on their executor",
            labels=["function"],
        )
        for fn, f in sorted(functions.items()):
            cumulative, buckets = 0, []
            for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], f.buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            histogram.add_metric([fn], buckets, f.seconds)
        yield histogram
        pool = GaugeMetricFamily("stratus_executors", "Executors by state", labels=["state"])
        for state, n in executors.items():
            pool.add_metric([state], n)
        yield pool
        yield GaugeMetricFamily("stratus_queue_length", "Calls waiting to start", value=queue)


def _copy(f: Counts) -> Counts:
    return Counts(f.calls, f.errors, f.timeouts, f.cold_starts, list(f.buckets), f.seconds)
