"""Core benchmark: stratus against the floors and its peers for calls, in one run.

Run it with ``make bench-core`` or ``.venv/bin/python bench/core.py`` (``--quick`` for a
short run, ``--tiny`` for a smoke test, ``--no-ray`` / ``--no-dask`` to leave a peer out).
It prints one JSON document on stdout and writes it to ``bench/results/core.json``;
everything else (Ray's and Dask's logs included) goes to stderr.

What is measured (latencies are per call, timed with ``time.perf_counter_ns``):

1. The floors: a plain Python call ``incr(None, x)``; and ``socket.request_reply``, a
   signed request/reply (msgspec + HMAC + pickle, stratus's own frames) over a Unix
   socketpair to a forked server that returns x + 1, both sides spinning briefly as
   stratus does (``bench/transport.py``'s ``SignedEcho``): the least a remote call costs.
2. A stratus synchronous call ``incr.remote(x).result()``, after a warm-up, ``incr`` and
   ``square`` kept warm on every executor (``min_instances``, one executor per core).
3. A stratus DAG ``square(incr(x))`` (``app.dag("pipeline", incr >> square)``): the
   Cloudburst paper's function composition.
4. ``app.kv.put`` then ``app.kv.get`` of 100 bytes from the client (``put_get``).
5. stratus async throughput: N calls issued with ``.remote()``, then every ``.result()``;
   the median of several runs, in calls per second.
6. ``stratus.connect()`` until the cluster is ready (each followed by ``close()``).
7. The idle RSS of the stratus cluster: the coordinator (the child of this process running
   ``python -m stratus._node``) and all its descendants (fork server, executors).
8. Ray (``ray.init(num_cpus=2, include_dashboard=False)``): a task round trip, an actor
   method call, a task chain ``square.remote(incr.remote(x))``, ``ray.get(ray.put(v))`` of
   100 bytes, async task throughput, ``ray.init`` time and the idle RSS of Ray's processes
   (every descendant of this process started by ``ray.init`` or later, outside the stratus
   cluster, plus any process started since whose command line names Ray, in case one was
   re-parented).
9. Dask distributed (``LocalCluster``, 2 worker processes of 1 thread): ``submit(incr,
   x).result()``, the chain ``submit(square, submit(incr, x))``, throughput of
   ``gather(map(incr, ...))``, the cluster's start time and idle RSS.
10. A Lambda-style worker: a process (forked first) that serves requests over a Pipe and
    keeps its state in a private ``redis-server`` (``bench/state.py``'s ``Worker``):
    ``call`` is incr(x) on it; ``chain`` is square(incr(x)) as two calls with the
    intermediate result passed through Redis (SET by the first, GET by the second), as
    functions on a FaaS compose; ``redis_put_get`` is SET then GET of 100 bytes from the
    client through redis-py, the put/get floor of such a store.
11. Ratios peer / stratus, and 12. whether stratus meets its targets.

The machine is small and noisy and round trips are bimodal, so latencies are taken in
rounds that alternate the systems (A B C, C B A, ...) with every cluster up, and the
samples of each kind are pooled; medians and tails are quoted. Throughput runs alternate
too. Each timed block starts after a short pause (and a ``gc.collect()``) so that one
system's background work after a burst weighs less on the next block. The peers' idle
processes still take some CPU, so stratus is also measured alone before they start
(``stratus.solo``); the targets are checked against both. The clients live in this
process and count in no RSS (PSS, which splits shared pages, is given as well). The load
of the machine before and after, and the commit under test, are recorded. A full run
takes about 2-3 min.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

import stratus
from _peers import DaskPeer, import_peer, start_ray
from _procs import (
    PROCESS_INFO,
    descendants,
    memory_report,
    process_table,
    ray_processes,
    stratus_cluster,
    wait_for_no_children,
    wait_for_pools,
)
from _stats import (
    bench_main,
    latency_summary,
    loadavg,
    median,
    ratio,
    results_path,
    run_header,
)
from _timing import Block, latency_rounds, throughput_runs, throughput_summary, time_calls
from state import Worker, redis_server, redis_server_version
from transport import SignedEcho

RESULTS = results_path("core")
RESULT_TIMEOUT = 120.0  # seconds; a benchmark call that takes longer is a failure
VALUE = b"v" * 100  # what the put/get kinds store

TARGETS = {  # name: (key into the stratus results, comparison, bound)
    "sync_p50_us": ("sync_call.p50_us", "<=", 100.0),
    "dag_p50_us": ("dag.p50_us", "<=", 150.0),
    "throughput_calls_per_s": ("throughput.calls_per_s", ">=", 20_000.0),
    "connect_s": ("connect.median_s", "<=", 0.5),
    "idle_rss_mb": ("idle_rss.total_rss_mb", "<=", 150.0),
}


@dataclass(frozen=True)
class Settings:
    floor_calls: int = 100_000
    warmup_calls: int = 200
    solo_rounds: int = 2  # stratus alone, before the peers start
    rounds: int = 10  # latency rounds with every system up, alternating the order
    socket_per_round: int = 1_000
    stratus_sync_per_round: int = 1_000
    stratus_dag_per_round: int = 500
    stratus_put_get_per_round: int = 300
    ray_task_per_round: int = 150
    ray_actor_per_round: int = 150
    ray_chain_per_round: int = 80
    ray_put_get_per_round: int = 150
    dask_submit_per_round: int = 100
    dask_chain_per_round: int = 60
    lambda_call_per_round: int = 500
    lambda_chain_per_round: int = 300
    redis_put_get_per_round: int = 500
    throughput_runs: int = 3
    stratus_throughput_calls: int = 20_000
    ray_throughput_calls: int = 5_000
    dask_throughput_calls: int = 2_000
    connects: int = 5
    settle_s: float = 0.2  # pause before each timed block
    idle_s: float = 1.0


QUICK = Settings(
    floor_calls=20_000,
    warmup_calls=100,
    solo_rounds=1,
    rounds=2,
    throughput_runs=1,
    socket_per_round=500,
    stratus_sync_per_round=500,
    stratus_dag_per_round=250,
    stratus_put_get_per_round=150,
    ray_task_per_round=100,
    ray_actor_per_round=100,
    ray_chain_per_round=50,
    ray_put_get_per_round=100,
    dask_submit_per_round=50,
    dask_chain_per_round=30,
    lambda_call_per_round=200,
    lambda_chain_per_round=100,
    redis_put_get_per_round=200,
    stratus_throughput_calls=5_000,
    ray_throughput_calls=1_000,
    dask_throughput_calls=500,
    connects=3,
)

TINY = replace(  # a smoke test: every code path, no meaningful numbers
    QUICK,
    floor_calls=1_000,
    warmup_calls=10,
    rounds=1,
    throughput_runs=1,
    **{
        field: 10
        for field in asdict(QUICK)
        if field.endswith("_per_round") or field.endswith("_throughput_calls")
    },
    connects=1,
    settle_s=0.0,
    idle_s=0.2,
)


# The functions under test. stratus, Ray and Dask ship them by value (cloudpickle).


def incr(ctx: Any, x: int) -> int:
    return x + 1


def square(ctx: Any, x: int) -> int:
    return x * x


def plain_incr(x: int) -> int:  # for the peers, which pass no context
    return x + 1


def plain_square(x: int) -> int:
    return x * x


class RayCounter:
    def incr(self, x: int) -> int:
        return x + 1


def plus_one(i: int) -> int:  # the result expected of incr(i)
    return i + 1


def plus_one_squared(i: int) -> int:  # ... and of square(incr(i))
    return (i + 1) ** 2


def the_value(i: int) -> bytes:  # ... and of a put then a get
    return VALUE


# The floor.


def measure_floor(n: int) -> dict[str, Any]:
    """A plain call of ``incr``, timed one by one like the remote calls, and in a batch."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        incr(None, i)
        samples[i] = clock() - start
    timer = [0] * n
    for i in range(n):
        start = clock()
        timer[i] = clock() - start
    start = clock()
    for i in range(n):
        incr(None, i)
    batch_ns = clock() - start
    return {
        **latency_summary(samples),
        "timer_overhead_p50_us": latency_summary(timer)["p50_us"],
        "batched_mean_us": round(batch_ns / n / 1000, 4),
    }


# The systems: each has its timed blocks and, where it makes sense, a throughput batch.


class Side:
    blocks: list[Block]

    def batch(self, n: int) -> list[int]:
        raise NotImplementedError

    def warm_up(self, calls: int, batch: int = 1_000) -> None:
        for _kind, call, expect, _n in self.blocks:
            time_calls(call, expect, calls)
        if batch:
            self.batch(batch)


class StratusSide(Side):
    """An embedded stratus cluster with ``incr``, ``square`` and the DAG registered."""

    def __init__(self, data_dir: Path, settings: Settings) -> None:
        self.app = stratus.connect(data_dir=data_dir)
        # Warm on every executor (the default cap: one per core), as the peers' workers
        # are, so that no scale-up falls inside a timed run.
        everywhere = os.cpu_count() or 1
        self.incr = self.app.function(incr, min_instances=everywhere)
        self.square = self.app.function(square, min_instances=everywhere)
        self.dag = self.app.dag("pipeline", self.incr >> self.square)
        wait_for_pools(self.app, [self.incr.name, self.square.name], everywhere)
        self.blocks = [
            ("sync_call", self.sync_call, plus_one, settings.stratus_sync_per_round),
            ("dag", self.dag_call, plus_one_squared, settings.stratus_dag_per_round),
            ("put_get", self.put_get, the_value, settings.stratus_put_get_per_round),
        ]

    def sync_call(self, i: int) -> int:
        return self.incr.remote(i).result(timeout=RESULT_TIMEOUT)

    def dag_call(self, i: int) -> int:
        return self.dag.remote(i).result(timeout=RESULT_TIMEOUT)

    def put_get(self, i: int) -> bytes:
        key = f"put-get/{i % 100}"
        self.app.kv.put(key, VALUE)
        value: bytes = self.app.kv.get(key)
        return value

    def batch(self, n: int) -> list[int]:
        futures = [self.incr.remote(i) for i in range(n)]
        return [f.result(timeout=RESULT_TIMEOUT) for f in futures]

    def executors(self) -> list[dict[str, Any]]:
        """pid and calls served of each executor (as last reported, once a second)."""
        return [{"pid": e.pid, "served": e.served} for e in self.app.status().executors]


class RaySide(Side):
    """A local Ray cluster with the same functions as tasks, and an actor."""

    def __init__(self, ray: ModuleType, settings: Settings) -> None:
        self.ray = ray
        self.init_s = start_ray(ray)
        self.incr = ray.remote(plain_incr)
        self.square = ray.remote(plain_square)
        self.actor = ray.remote(RayCounter).remote()
        self.blocks = [
            ("task_call", self.task_call, plus_one, settings.ray_task_per_round),
            ("actor_call", self.actor_call, plus_one, settings.ray_actor_per_round),
            ("chain", self.chain_call, plus_one_squared, settings.ray_chain_per_round),
            ("put_get", self.put_get, the_value, settings.ray_put_get_per_round),
        ]

    def task_call(self, i: int) -> int:
        return self.ray.get(self.incr.remote(i), timeout=RESULT_TIMEOUT)

    def actor_call(self, i: int) -> int:
        return self.ray.get(self.actor.incr.remote(i), timeout=RESULT_TIMEOUT)

    def chain_call(self, i: int) -> int:
        return self.ray.get(self.square.remote(self.incr.remote(i)), timeout=RESULT_TIMEOUT)

    def put_get(self, i: int) -> bytes:
        value: bytes = self.ray.get(self.ray.put(VALUE), timeout=RESULT_TIMEOUT)
        return value

    def batch(self, n: int) -> list[int]:
        return self.ray.get([self.incr.remote(i) for i in range(n)], timeout=RESULT_TIMEOUT)


class DaskSide(Side):
    """Dask distributed on a LocalCluster: a task, a chain of two tasks, and a batch."""

    def __init__(self, settings: Settings) -> None:
        self.peer = DaskPeer()
        self.blocks = [
            ("submit", self.submit_call, plus_one, settings.dask_submit_per_round),
            ("chain", self.chain_call, plus_one_squared, settings.dask_chain_per_round),
        ]

    def submit_call(self, i: int) -> int:
        result: int = self.peer.submit(plain_incr, i).result(timeout=RESULT_TIMEOUT)
        return result

    def chain_call(self, i: int) -> int:
        first = self.peer.submit(plain_incr, i)
        result: int = self.peer.submit(plain_square, first).result(timeout=RESULT_TIMEOUT)
        return result

    def batch(self, n: int) -> list[int]:
        client = self.peer.client
        futures = client.map(plain_incr, range(n), pure=False)
        results: list[int] = client.gather(futures)
        return results


class LambdaSide(Side):
    """The Lambda-style worker (state in Redis), and redis-py from the client."""

    def __init__(self, worker: Worker, port: int, settings: Settings) -> None:
        self.worker = worker
        self.redis = redis.Redis(host="127.0.0.1", port=port)
        self.blocks = [
            ("call", self.call, plus_one, settings.lambda_call_per_round),
            ("chain", self.chain_call, plus_one_squared, settings.lambda_chain_per_round),
            ("redis_put_get", self.put_get, the_value, settings.redis_put_get_per_round),
        ]

    def call(self, i: int) -> int:
        result: int = self.worker.request("incr", i)
        return result

    def chain_call(self, i: int) -> int:
        key = self.worker.request("incr_store", i)
        result: int = self.worker.request("square_load", key)
        return result

    def put_get(self, i: int) -> bytes:
        key = f"put-get/{i % 100}"
        self.redis.set(key, VALUE)
        value: bytes = self.redis.get(key)
        return value


class SocketSide(Side):
    """The floor of a remote call: a signed request/reply to a forked server."""

    def __init__(self, echo: SignedEcho, settings: Settings) -> None:
        self.blocks = [("request_reply", echo.call, plus_one, settings.socket_per_round)]


def measure_connects(count: int, base: Path) -> dict[str, Any]:
    """``connect()`` to a ready cluster, the first call on it, and ``close()``, each timed."""
    clock = time.perf_counter_ns
    connect_s, first_call_ms, close_s = [], [], []
    for k in range(count):
        start = clock()
        app = stratus.connect(data_dir=base / f"connect-{k}")
        connect_s.append((clock() - start) / 1e9)
        try:
            fn = app.function(incr)
            start = clock()
            fn.remote(1).result(timeout=RESULT_TIMEOUT)
            first_call_ms.append((clock() - start) / 1e6)
        finally:
            start = clock()
            app.close()
            close_s.append((clock() - start) / 1e9)
    return {
        "median_s": round(median(connect_s), 4),
        "runs_s": [round(s, 4) for s in connect_s],
        "first_call_after_connect_median_ms": round(median(first_call_ms), 2),
        "close_median_s": round(median(close_s), 4),
    }


def our_tree() -> set[int]:
    """This process's descendants now (the way to tell which processes a peer started)."""
    return set(descendants(process_table(), os.getpid())) - {os.getpid()}


def progress(message: str) -> None:
    print(f"core.py: {message}", file=sys.stderr, flush=True)


# The run.


def summaries(samples: dict[str, list[int]], system: str) -> dict[str, Any]:
    """``kind: latency summary`` (with its CDF) of every sample list of ``system``."""
    return {
        key.split(".", 1)[1]: latency_summary(values, cdf=True)
        for key, values in samples.items()
        if key.startswith(f"{system}.")
    }


def run(settings: Settings, mode: str, with_ray: bool, with_dask: bool) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header("core", mode, ray=None, dask=None, redis_server=redis_server_version())
    doc |= {"settings": asdict(settings), "process_info": PROCESS_INFO}
    busy = doc["load"]["cpu_busy_pct_before"]
    if busy is not None and busy > 10:
        progress(f"the machine is {busy:.0f}% busy already; expect noise")
    doc["python_call"] = measure_floor(settings.floor_calls)
    ray_module, ray_reason, ray_import_s = None, "skipped with --no-ray", 0.0
    if with_ray:
        ray_module, ray_reason, ray_import_s = import_peer("ray")
        doc["versions"]["ray"] = getattr(ray_module, "__version__", None)
    dask_reason = "skipped with --no-dask"
    if with_dask:
        dask_module, dask_reason, _ = import_peer("distributed")
        doc["versions"]["dask"] = getattr(dask_module, "__version__", None)
        with_dask = dask_module is not None
    for reason in (ray_reason, dask_reason):
        if reason and "skipped" not in reason:
            progress(f"{reason}; left out")

    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-bench-")))
        # Forked first, while this process has no threads: the floor and the worker.
        echo = SignedEcho()
        stack.callback(echo.close)
        (base / "redis").mkdir()
        port, _server = stack.enter_context(redis_server(base / "redis"))
        worker = Worker(port)
        stack.callback(worker.close)
        sides: dict[str, Side] = {
            "socket": SocketSide(echo, settings),
            "lambda": LambdaSide(worker, port, settings),
        }
        progress("connect()")
        connect = measure_connects(settings.connects, base)
        s = StratusSide(base / "main", settings)
        stack.callback(s.app.close)
        s.warm_up(settings.warmup_calls)
        progress("stratus alone")
        solo = latency_rounds({"stratus": s.blocks}, settings.solo_rounds, settings.settle_s)
        calls = {
            "stratus": settings.stratus_throughput_calls,
            "ray": settings.ray_throughput_calls,
            "dask": settings.dask_throughput_calls,
        }
        solo_runs = throughput_runs(
            {"stratus": s.batch}, calls, settings.throughput_runs, settings.settle_s
        )
        sides["stratus"] = s
        before_dask = our_tree()
        if with_dask:
            progress("starting Dask")
            d = DaskSide(settings)
            stack.callback(d.peer.close)
            d.warm_up(settings.warmup_calls, batch=100)
            sides["dask"] = d
        before_ray, ray_began = our_tree(), time.time()
        if ray_module is not None:
            progress("starting Ray")
            r = RaySide(ray_module, settings)
            stack.callback(ray_module.shutdown)
            r.warm_up(settings.warmup_calls)
            sides["ray"] = r
        for side in ("socket", "lambda"):
            sides[side].warm_up(settings.warmup_calls, batch=0)

        # Every system up; they take turns, and the samples are pooled per kind.
        progress(f"{settings.rounds} interleaved rounds of {', '.join(sides)}")
        samples = latency_rounds(
            {name: side.blocks for name, side in sides.items()}, settings.rounds, settings.settle_s
        )
        batches = {n: side.batch for n, side in sides.items() if n in calls}
        runs = throughput_runs(batches, calls, settings.throughput_runs, settings.settle_s)

        # Idle memory of every cluster, at the same moment.
        time.sleep(settings.idle_s)
        table = process_table()
        executors = s.executors()
        coordinator, stratus_pids = stratus_cluster(table, {e["pid"] for e in executors})
        doc["socket"] = summaries(samples, "socket")
        doc["stratus"] = {
            **summaries(samples, "stratus"),
            "throughput": throughput_summary(runs["stratus"], settings.stratus_throughput_calls),
            "connect": connect,
            "idle_rss": {"coordinator_pid": coordinator, **memory_report(table, stratus_pids)},
            "executors": executors,
            "solo": {
                "note": "measured before the peers started, with stratus alone on the machine",
                **summaries(solo, "stratus"),
                "throughput": throughput_summary(
                    solo_runs["stratus"], settings.stratus_throughput_calls
                ),
            },
        }
        doc["lambda"] = summaries(samples, "lambda")
        doc["dask"] = {"reason": dask_reason}
        if "dask" in sides:
            dask_pids = sorted(before_ray - before_dask)  # what LocalCluster started
            doc["dask"] = {
                **summaries(samples, "dask"),
                "throughput": throughput_summary(runs["dask"], settings.dask_throughput_calls),
                "init_s": round(d.peer.init_s, 3),
                "idle_rss": memory_report(table, dask_pids),
            }
        doc["ray"] = None
        doc["ray_reason"] = ray_reason
        if "ray" in sides:
            exclude = before_ray | set(stratus_pids)
            ray_pids, reparented = ray_processes(table, exclude, ray_began)
            doc["ray"] = {
                **summaries(samples, "ray"),
                "throughput": throughput_summary(runs["ray"], settings.ray_throughput_calls),
                "import_s": round(ray_import_s, 3),
                "init_s": round(r.init_s, 3),
                "idle_rss": {"found_only_by_name": reparented, **memory_report(table, ray_pids)},
            }
    # The ExitStack has stopped every peer and the cluster; nothing of ours may be left.
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["load"]["loadavg_end"] = loadavg()
    doc["ratios_ray_over_stratus"] = ratios(doc["stratus"], doc["ray"])
    doc["ratios_over_stratus"] = pair_ratios(doc)
    doc["targets"] = targets(doc["stratus"])
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


# Each pair: (peer section, peer kind, stratus kind).
PAIRS = [
    ("socket", "request_reply", "sync_call"),
    ("ray", "task_call", "sync_call"),
    ("ray", "actor_call", "sync_call"),
    ("dask", "submit", "sync_call"),
    ("lambda", "call", "sync_call"),
    ("ray", "chain", "dag"),
    ("dask", "chain", "dag"),
    ("lambda", "chain", "dag"),
    ("ray", "put_get", "put_get"),
    ("lambda", "redis_put_get", "put_get"),
]


def pair_ratios(doc: dict[str, Any]) -> dict[str, Any]:
    """Peer / stratus for each pair of like kinds, p50 and p99: above 1, stratus is faster."""
    out: dict[str, Any] = {"note": "peer / stratus per pair; above 1 stratus is faster"}
    for section, kind, ours in PAIRS:
        peer = (doc.get(section) or {}).get(kind)
        if peer is None:
            continue
        mine = doc["stratus"][ours]
        out[f"{section}.{kind}/{ours}"] = {
            q: ratio(peer[f"{q}_us"], mine[f"{q}_us"]) for q in ("p50", "p99")
        }
    return out


def ratios(s: dict[str, Any], r: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ray / stratus: above 1 stratus is faster or smaller, except for throughput."""
    if r is None:
        return None
    return {
        "note": "ray / stratus; for throughput, below 1 means stratus does more calls/s",
        "sync_call_p50": ratio(r["task_call"]["p50_us"], s["sync_call"]["p50_us"]),
        "sync_call_p99": ratio(r["task_call"]["p99_us"], s["sync_call"]["p99_us"]),
        "actor_call_p50_vs_sync_call_p50": ratio(
            r["actor_call"]["p50_us"], s["sync_call"]["p50_us"]
        ),
        "chain_vs_dag_p50": ratio(r["chain"]["p50_us"], s["dag"]["p50_us"]),
        "chain_vs_dag_p99": ratio(r["chain"]["p99_us"], s["dag"]["p99_us"]),
        "throughput": ratio(r["throughput"]["calls_per_s"], s["throughput"]["calls_per_s"]),
        "init_vs_connect": ratio(r["init_s"], s["connect"]["median_s"]),
        "idle_rss": ratio(r["idle_rss"]["total_rss_mb"], s["idle_rss"]["total_rss_mb"]),
    }


def targets(s: dict[str, Any]) -> dict[str, Any]:
    """Each target against the main (interleaved) figure, and the solo one where there is."""
    report: dict[str, Any] = {}
    for name, (key, comparison, bound) in TARGETS.items():
        section, field = key.split(".")

        def check(value: float, bound: float = bound, comparison: str = comparison) -> bool:
            return value <= bound if comparison == "<=" else value >= bound

        value = s[section][field]
        report[name] = {"target": f"{comparison} {bound:g}", "value": value, "met": check(value)}
        if section in s["solo"]:
            solo = s["solo"][section][field]
            report[name] |= {"value_solo": solo, "met_solo": check(solo)}
    checks = list(report.values())
    report["all_met"] = all(t["met"] for t in checks)
    report["all_met_solo"] = all(t.get("met_solo", t["met"]) for t in checks)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, peers=True, argv=argv)


if __name__ == "__main__":
    main()
