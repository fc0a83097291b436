"""What the coordinator does for metering, metrics and logs, in one place.

The coordinator calls in at a few points: an executor reported its load (metrics), an
executor exited (its metering spool is recovered, so attempts that were running are
billed until its death), a caller asked to kill a runaway invocation (its recovered
record says ``timeout``, not ``lost``), the tick (pool gauges, log budget), and
``MeterRead`` / ``LogsRead`` requests. At start it recovers spools that dead clusters
left behind; at shutdown, those its own killed executors left.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from stratus.config import ClusterConfig
from stratus.protocol import keys
from stratus.protocol import messages as m
from stratus.server import logs, metering
from stratus.server.metrics import Metrics
from stratus.server.scheduler import ExecutorRecord, ExecutorState
from stratus.store.base import Store

log = logging.getLogger("stratus.coordinator")

_MAX_PAGE = 512  # metering batches per MeterPage


class Observer:
    def __init__(self, config: ClusterConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.spools = Path(config.data_dir) / keys.METER_DIR
        self.logs = Path(config.data_dir) / keys.LOGS_DIR
        self.metrics = Metrics()
        self._timed_out: dict[str, set[str]] = {}  # executor -> invocations killed late
        recovered = metering.recover_all(self.spools, store)  # left by dead clusters
        if recovered:
            log.info("recovered %d metering records from earlier runs", recovered)
        logs.prune(self.logs)
        if config.metrics:
            self.metrics.serve(config.metrics)

    def load_reported(self, load: m.ExecutorLoad) -> None:
        if load.metrics:
            self.metrics.add(load.metrics)

    def kill_requested(self, executor_id: str, invocation_id: str) -> None:
        self._timed_out.setdefault(executor_id, set()).add(invocation_id)

    def executor_exited(self, executor_id: str) -> None:
        path = self.spools / keys.spool_name(self.config.cluster_id, executor_id)
        timed_out = frozenset(self._timed_out.pop(executor_id, ()))
        try:
            n = metering.recover(path, self.store, died_ns=time.time_ns(), timed_out=timed_out)
        except Exception:  # the store is away: the spool stays for the next start
            log.exception("recovering the metering spool of %s failed", executor_id)
            return
        if n:
            log.info("executor %s: %d metering records recovered", executor_id, n)
        logs.prune(self.logs)

    def tick(self, executors: list[ExecutorRecord]) -> None:
        ready = [r for r in executors if r.state is ExecutorState.READY]
        starting = sum(1 for r in executors if r.state is ExecutorState.STARTING)
        busy = sum(1 for r in ready if r.inflight)
        self.metrics.set_pool(starting=starting, warm=len(ready), busy=busy)

    def handle(self, request: m.MeterRead | m.LogsRead) -> Any:
        match request:
            case m.MeterRead(rid, after, limit):
                every = self.store.keys(keys.METER)
                names = [k for k in every if k > after][: max(1, min(limit, _MAX_PAGE))]
                entries = self.store.get_many(names)
                batches = [e.value for k in names if (e := entries[k]).value is not None]
                return m.MeterPage(rid, batches, names[-1] if names else "", len(every))
            case m.LogsRead(rid, function, invocation_id, cursor, limit):
                lines, position = logs.read(
                    self.logs,
                    function=function,
                    invocation_id=invocation_id,
                    cursor=cursor,
                    limit=limit,
                )
                return m.LogsPage(rid, lines, position)

    def close(self) -> None:
        """After the executors are gone: recover what those killed left behind."""
        metering.recover_all(self.spools, self.store, self.config.cluster_id)
        self.metrics.close()
