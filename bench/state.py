"""State benchmark: stratus's kv layer inside functions, against a function with Redis.

Run it with ``.venv/bin/python bench/state.py`` (``--quick`` for a short run). It prints
one JSON document on stdout and writes it to ``bench/results/state.json``; progress goes to
stderr. It needs numpy (the ``bench`` extra) and Debian's ``/usr/bin/redis-server``.

Set-up: an embedded cluster (coordinator and 2 executors, the store in SQLite, WAL,
``synchronous=NORMAL``, under a temporary directory), a private ``redis-server`` on a free
loopback port with no persistence, and a "stateless" worker: a process forked before the
cluster starts that answers requests sent over a ``multiprocessing`` Pipe by doing GET, +1
and SET on Redis through redis-py, as a FaaS function with an external database does.

What is measured (latencies with ``time.perf_counter_ns``):

1. ``ctx.kv.get`` inside a function, timed by the function itself: a cache hit (a warm
   key read again and again, N in all) next to a plain dict lookup timed the same way (the
   floor) and the timer's own cost; and a miss (distinct keys, written beforehand with
   ``app.kv.put`` and never read before, one timed get each). Both also as a batched mean.
   The executor's cache counters confirm that hits hit and misses miss.
2. A function reading and writing one key, ``rw.remote(key).result()`` from the client,
   at each consistency level (``eventual``, ``serializable``, ``causal``: separate
   functions and keys), a function that touches no state (the floor), and the stateless
   worker (``redis_rw``; ``redis_noop`` answers without Redis: its transport floor).
   Every call's result is checked against the count of earlier calls on its key; the
   misses are reported as anomalies (lost updates or stale reads).
3. Cloudburst's locality experiment, small: one function sums 10 arrays of 1M float64
   (8 MB each) passed as 10 ``stratus.Ref``. ``warm``: the same keys each call, cached by
   the executor the client routes Refs to. ``cold``: other keys, re-put (untimed) before
   each call so the executor's cache must read them from the store; the versions the
   function read are checked against those the puts returned. ``redis``: the function
   fetches the 10 arrays from Redis (GET and ``numpy.frombuffer``) on every call.
4. Staleness under ``eventual``: a key kept in both executors' caches (readers are called
   two at a time until each executor has returned the current value), then a random pause
   (0-60 ms, so the put falls anywhere in the executors' refresh cycles), ``app.kv.put``
   of a new value and, from its return, readers two at a time until both executors return
   it. The staleness of a trial is when the second executor's first fresh reply arrived
   (an upper bound: it includes that call's round trip).
5. The overhead of ``causal`` and ``serializable`` over ``eventual``, from item 2.

The machine is small and noisy, so items 1-3 run in rounds that alternate their order
(A B C, C B A, ...) and pool the samples of each kind; each timed block starts after a
short pause and a ``gc.collect()``. Medians and p99 are quoted, with the targets and
whether they are met. The load of the machine before and after, the versions and the
commit under test are recorded, and no process of the run may outlive it. A full run
takes about 1 min (8 MB puts dominate), ``--quick`` about 15 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

import stratus
from _stats import (
    bench_main,
    check_targets,
    cpu_busy_pct,
    git_revision,
    latency_summary,
    loadavg,
    median,
    module_version,
    percentile,
    ratio,
    results_path,
)
from _timing import alternating, settle

RESULTS = results_path("state")
RESULT_TIMEOUT = 120.0  # seconds; a benchmark call that takes longer is a failure
REDIS_SERVER = "/usr/bin/redis-server"
EXECUTORS = 2

TARGETS = {  # name: (path into the document, comparison, bound)
    "kv_get_hit_p50_us": ("kv_get.hit.p50_us", "<=", 5.0),
    "rw_eventual_p50_us": ("rw_call.eventual.p50_us", "<=", 120.0),
    "rw_serializable_p50_us": ("rw_call.serializable.p50_us", "<=", 120.0),
    "rw_causal_p50_us": ("rw_call.causal.p50_us", "<=", 120.0),
    "staleness_max_ms": ("staleness.max_ms", "<=", 100.0),
}


@dataclass(frozen=True)
class Settings:
    hit_gets: int = 10_000  # timed cache hits, over all rounds
    miss_keys: int = 2_000  # distinct keys, each read (and missed) once
    get_rounds: int = 4
    warmup_calls: int = 200
    rw_rounds: int = 10
    rw_per_round: int = 500  # calls of each kind per round
    arrays: int = 10
    array_len: int = 1_000_000  # float64: 8 MB per array
    locality_calls: int = 20  # per variant
    staleness_trials: int = 30
    staleness_timeout_s: float = 2.0
    settle_s: float = 0.1  # pause before each timed block


QUICK = Settings(
    miss_keys=1_000,
    get_rounds=2,
    warmup_calls=100,
    rw_rounds=2,
    rw_per_round=200,
    locality_calls=5,
    staleness_trials=10,
)
TINY = replace(  # a smoke test: every code path, no meaningful numbers
    QUICK,
    hit_gets=200,
    miss_keys=20,
    get_rounds=1,
    warmup_calls=5,
    rw_rounds=1,
    rw_per_round=10,
    arrays=2,
    array_len=10_000,
    locality_calls=2,
    staleness_trials=2,
    settle_s=0.0,
)


# The functions under test; stratus ships them by value (cloudpickle).


def nostate(ctx: Any, key: str) -> int:
    return 0


def rw(ctx: Any, key: str) -> int:
    value: int = ctx.kv.get(key, 0)
    ctx.kv.put(key, value + 1)
    return value


def timed_gets(ctx: Any, hit_key: str, miss_keys: list[str], hits: int, misses_first: bool) -> Any:
    """Time ``ctx.kv.get`` here, in the executor: hits, misses, a dict floor, the timer."""
    clock = time.perf_counter_ns
    get = ctx.kv.get
    cache = getattr(ctx.kv, "_reader", None)  # the executor's KVCache: its counters

    def counts() -> tuple[int, int]:
        return (getattr(cache, "hits", -1), getattr(cache, "misses", -1))

    get(hit_key)  # cached from here on, if it was not already
    out: dict[str, Any] = {"pid": os.getpid()}

    def time_hits() -> None:
        before = counts()
        samples = [0] * hits
        for i in range(hits):
            start = clock()
            get(hit_key)
            samples[i] = clock() - start
        start = clock()
        for _ in range(hits):
            get(hit_key)
        out["hit_batch_ns"] = clock() - start
        after = counts()
        out["hit"] = samples
        out["hit_counts"] = [2 * hits, after[0] - before[0], after[1] - before[1]]

    def time_misses() -> None:
        before = counts()
        samples = [0] * len(miss_keys)
        for i, key in enumerate(miss_keys):
            start = clock()
            get(key)
            samples[i] = clock() - start
        after = counts()
        out["miss"] = samples
        out["miss_counts"] = [len(miss_keys), after[0] - before[0], after[1] - before[1]]

    for step in (time_misses, time_hits) if misses_first else (time_hits, time_misses):
        step()
    plain = {hit_key: 1}
    lookup = plain.get
    samples = [0] * hits
    for i in range(hits):
        start = clock()
        lookup(hit_key)
        samples[i] = clock() - start
    out["dict"] = samples
    start = clock()
    for _ in range(hits):
        lookup(hit_key)
    out["dict_batch_ns"] = clock() - start
    timer = [0] * hits
    for i in range(hits):
        start = clock()
        timer[i] = clock() - start
    out["timer"] = timer
    return out


def sum_arrays(ctx: Any, *arrays: Any) -> tuple[float, int, dict[str, int]]:
    """The sum of the arrays its Refs resolved to; its pid, and the versions it read."""
    return float(sum(a.sum() for a in arrays)), os.getpid(), dict(ctx.kv.reads)


class RedisSum:
    """The same sum, the arrays fetched from Redis on every call (one client per executor)."""

    def __init__(self, port: int) -> None:
        import redis as redis_py

        self.redis = redis_py.Redis(host="127.0.0.1", port=port)

    def __call__(self, ctx: Any, keys: list[str]) -> tuple[float, int, dict[str, int]]:
        import numpy

        arrays = [numpy.frombuffer(self.redis.get(key), dtype=numpy.float64) for key in keys]
        return float(sum(a.sum() for a in arrays)), os.getpid(), {}


def read_key(ctx: Any, key: str) -> tuple[int, Any]:
    return os.getpid(), ctx.kv.get(key)


def array_sum(arrays: Sequence[Any]) -> float:  # what sum_arrays returns for these arrays
    return float(sum(a.sum() for a in arrays))


# The stateless baseline: a forked worker, requests over a Pipe, state in Redis.


def redis_worker(conn: Any, port: int) -> None:
    """Serve ``(op, arg)`` requests until ``None`` or EOF: ``rw`` is GET, +1, SET of key
    ``arg``; ``incr`` returns arg + 1 (a trivial function); ``incr_store`` and
    ``square_load`` are the two steps of ``square(incr(x))`` with the intermediate result
    passed through Redis, as functions of a FaaS compose; anything else returns 0."""
    client = redis.Redis(host="127.0.0.1", port=port)
    client.ping()
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            break
        if request is None:
            break
        op, arg = request
        if op == "rw":
            value = int(client.get(arg) or 0)
            client.set(arg, value + 1)
            conn.send(value)
        elif op == "incr":
            conn.send(arg + 1)
        elif op == "incr_store":
            client.set(f"chain/{arg}", arg + 1)
            conn.send(f"chain/{arg}")
        elif op == "square_load":
            conn.send(int(client.get(arg) or 0) ** 2)
        else:
            conn.send(0)
    client.close()


class Worker:
    """The worker process and our end of its Pipe."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("fork")  # before the cluster: no threads yet
        self.conn, child = context.Pipe()
        self.process = context.Process(target=redis_worker, args=(child, port), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(10) or self.conn.recv() != "ready":
            raise RuntimeError("the Redis worker did not start")

    def request(self, op: str, arg: Any) -> Any:
        self.conn.send((op, arg))
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A private redis-server on a free loopback port, no persistence; stopped on exit."""
    for _ in range(3):  # the port may be taken between probing and binding it
        port = free_port()
        command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--dir", str(directory), "--logfile", str(directory / "redis.log")]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            if wait_for_redis(process, port):
                break
        except BaseException:
            stop(process)
            raise
        stop(process)
    else:
        raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}")
    try:
        yield port, process
    finally:
        stop(process)


def wait_for_redis(process: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(redis.RedisError):
            if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                return True
        time.sleep(0.02)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Timing.


def ms_summary(samples_ns: Sequence[int]) -> dict[str, Any]:
    """Median, p99, min and max of samples in nanoseconds, in milliseconds."""
    ordered = sorted(samples_ns)

    def ms(value: float) -> float:
        return round(value / 1e6, 3)

    return {
        "n": len(ordered),
        "median_ms": ms(median(ordered)),
        "p99_ms": ms(percentile(ordered, 99)),
        "min_ms": ms(ordered[0]),
        "max_ms": ms(ordered[-1]),
    }


@dataclass
class RwKind:
    """One kind of read-modify-write call; results are the count of earlier calls."""

    call: Callable[[], Any]
    counted: bool = True  # False: the result is not a count (the no-state floors)
    next_value: int = 0
    anomalies: int = 0

    def timed(self, n: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * n
        for i in range(n):
            start = clock()
            value = self.call()
            samples[i] = clock() - start
            if self.counted:
                if value != self.next_value:
                    self.anomalies += 1
                self.next_value = value + 1
        return samples


# The measurements.


def measure_gets(app: stratus.App, settings: Settings) -> dict[str, Any]:
    """Item 1: hits and misses of ``ctx.kv.get``, timed inside the function."""
    clock = time.perf_counter_ns
    fn = app.function(timed_gets)
    app.kv.put("get/hot", 42)
    per_round = settings.miss_keys // settings.get_rounds
    puts: list[int] = []
    rounds_keys = []
    for r in range(settings.get_rounds):
        keys = [f"get/miss/{r}/{i}" for i in range(per_round)]
        for i, key in enumerate(keys):
            start = clock()
            app.kv.put(key, i)
            puts.append(clock() - start)
        rounds_keys.append(keys)
    fn.remote("get/hot", [], 100, False).result(timeout=RESULT_TIMEOUT)  # code loaded, warm
    pooled: dict[str, list[int]] = defaultdict(list)
    batch = {"hit": 0, "dict": 0}
    counts = {"hit": [0, 0, 0], "miss": [0, 0, 0]}
    pids: Counter[int] = Counter()
    hits = settings.hit_gets // settings.get_rounds
    for r, keys in enumerate(rounds_keys):
        settle(settings.settle_s)
        out = fn.remote("get/hot", keys, hits, r % 2 == 1).result(timeout=RESULT_TIMEOUT)
        pids[out["pid"]] += 1
        for kind in ("hit", "miss", "dict", "timer"):
            pooled[kind] += out[kind]
        batch["hit"] += out["hit_batch_ns"]
        batch["dict"] += out["dict_batch_ns"]
        for kind in ("hit", "miss"):
            counts[kind] = [a + b for a, b in zip(counts[kind], out[f"{kind}_counts"], strict=True)]
    total_hits = hits * settings.get_rounds
    hit, floor = latency_summary(pooled["hit"]), latency_summary(pooled["dict"])
    return {
        "note": "timed inside the function around each ctx.kv.get (timer included) and "
        "as a batched mean; dict_floor: a plain dict.get timed the same way",
        "hit": hit,
        "hit_batched_mean_us": round(batch["hit"] / total_hits / 1000, 4),
        "dict_floor": floor,
        "dict_batched_mean_us": round(batch["dict"] / total_hits / 1000, 4),
        "hit_over_dict_p50": ratio(hit["p50_us"], floor["p50_us"]),
        "hit_over_dict_batched": ratio(batch["hit"], batch["dict"]),
        "timer_overhead_p50_us": latency_summary(pooled["timer"])["p50_us"],
        "miss": latency_summary(pooled["miss"]),
        "cache_counters": {
            "note": "[gets, cache hits, cache misses] counted by the executor's KVCache",
            "hit_phase": counts["hit"],
            "miss_phase": counts["miss"],
        },
        "calls_per_executor_pid": {str(p): n for p, n in pids.items()},
        "client_put_small": {
            "note": "app.kv.put of the miss keys, back to back",
            **latency_summary(puts),
        },
    }


def measure_rw(app: stratus.App, worker: Worker, settings: Settings) -> dict[str, Any]:
    """Item 2: read-modify-write calls end to end, each kind in interleaved rounds."""
    floor = app.function(nostate)
    handles = {
        level: app.function(rw, name=f"rw_{level}", consistency=level)
        for level in ("eventual", "serializable", "causal")
    }

    def remote(fn: Any, key: str) -> Callable[[], Any]:
        return lambda: fn.remote(key).result(timeout=RESULT_TIMEOUT)

    kinds = {
        "nostate": RwKind(remote(floor, "rw/none"), counted=False),
        **{level: RwKind(remote(fn, f"rw/{level}")) for level, fn in handles.items()},
        "redis_rw": RwKind(lambda: worker.request("rw", "rw/redis")),
        "redis_noop": RwKind(lambda: worker.request("noop", "rw/none"), counted=False),
    }
    for kind in kinds.values():
        kind.timed(settings.warmup_calls)
    warmup_anomalies = {name: kind.anomalies for name, kind in kinds.items()}
    samples: dict[str, list[int]] = defaultdict(list)
    names = list(kinds)
    for r in range(settings.rw_rounds):
        for name in alternating(names, r):
            settle(settings.settle_s)
            samples[name] += kinds[name].timed(settings.rw_per_round)
    doc: dict[str, Any] = {
        "note": "client-side latency of one call (fn.remote(key).result(), or a request "
        "to the Redis worker over its Pipe); redis_noop answers without Redis",
        **{name: latency_summary(samples[name]) for name in names},
    }
    doc["anomalies"] = {
        "note": "calls whose result was not the count of earlier calls on the key "
        "(stale read or lost update), timed calls and warm-up together",
        **{n: k.anomalies for n, k in kinds.items() if k.counted},
        "of_which_in_warmup": {n: warmup_anomalies[n] for n, k in kinds.items() if k.counted},
    }
    return doc


def measure_locality(
    app: stratus.App, port: int, settings: Settings, started: float
) -> dict[str, Any]:
    """Item 3: sum 10 arrays passed as Refs, cache warm or cold, or fetched from Redis."""
    clock = time.perf_counter_ns
    rng = np.random.default_rng(0)
    arrays = [rng.random(settings.array_len) for _ in range(settings.arrays)]
    expected = array_sum(arrays)
    warm_keys = [f"arrays/warm/{i}" for i in range(settings.arrays)]
    cold_keys = [f"arrays/cold/{i}" for i in range(settings.arrays)]
    redis_keys = [f"arrays/{i}" for i in range(settings.arrays)]
    with redis.Redis(host="127.0.0.1", port=port) as client:
        for key, array in zip(redis_keys, arrays, strict=True):
            client.set(key, array.tobytes())
    puts: list[int] = []

    def put_all(keys: list[str]) -> dict[str, int]:
        versions = {}
        for key, array in zip(keys, arrays, strict=True):
            start = clock()
            versions[key] = app.kv.put(key, array)
            puts.append(clock() - start)
        return versions

    warm_versions = put_all(warm_keys)
    put_all(cold_keys)
    summed = app.function(sum_arrays)
    from_redis = app.function(RedisSum, name="sum_from_redis", init_args=(port,))
    warm_refs = [stratus.Ref(k) for k in warm_keys]
    cold_refs = [stratus.Ref(k) for k in cold_keys]
    first: dict[str, float] = {}
    for name, call in (
        ("warm", lambda: summed.remote(*warm_refs)),
        ("cold", lambda: summed.remote(*cold_refs)),
        ("redis", lambda: from_redis.remote(redis_keys)),
    ):
        start = clock()
        call().result(timeout=RESULT_TIMEOUT)  # loads the code; caches the Refs
        first[name] = round((clock() - start) / 1e6, 2)

    samples: dict[str, list[int]] = defaultdict(list)
    pids: dict[str, Counter[int]] = defaultdict(Counter)
    problems: Counter[str] = Counter()
    names = ["warm", "cold", "redis"]
    for r in range(settings.locality_calls):
        for name in alternating(names, r):
            wanted = warm_versions
            if name == "cold":
                wanted = put_all(cold_keys)  # untimed; the cache must drop the old versions
            settle(settings.settle_s)
            start = clock()
            if name == "redis":
                future = from_redis.remote(redis_keys)
            else:
                future = summed.remote(*(warm_refs if name == "warm" else cold_refs))
            total, pid, read = future.result(timeout=RESULT_TIMEOUT)
            samples[name].append(clock() - start)
            pids[name][pid] += 1
            if abs(total - expected) > 1e-6 * abs(expected):
                problems[f"{name}_wrong_sum"] += 1
            if name != "redis" and read != wanted:
                problems[f"{name}_versions_not_the_latest"] += 1
        if time.monotonic() - started > settings_budget(settings):
            problems["stopped_early_for_time"] = r + 1
            break
    doc: dict[str, Any] = {
        name: {
            **ms_summary(samples[name]),
            "calls_per_executor_pid": {str(p): n for p, n in pids[name].items()},
        }
        for name in names
    }
    doc |= {
        "note": "ms per call of a function summing the arrays; warm: Refs cached by the "
        "executor; cold: the keys re-put (untimed) before each call; redis: GET + "
        "numpy.frombuffer of each array inside the function",
        "arrays": settings.arrays,
        "array_len": settings.array_len,
        "array_mb": round(arrays[0].nbytes / 2**20, 2),
        "first_call_ms": first,
        "client_put_array": ms_summary(puts),
        "problems": dict(problems),
        "ratios": {
            "cold_over_warm_median": ratio(doc["cold"]["median_ms"], doc["warm"]["median_ms"]),
            "redis_over_warm_median": ratio(doc["redis"]["median_ms"], doc["warm"]["median_ms"]),
            "cold_over_redis_median": ratio(doc["cold"]["median_ms"], doc["redis"]["median_ms"]),
            "cold_over_warm_p99": ratio(doc["cold"]["p99_ms"], doc["warm"]["p99_ms"]),
            "redis_over_warm_p99": ratio(doc["redis"]["p99_ms"], doc["warm"]["p99_ms"]),
        },
    }
    return doc


def settings_budget(settings: Settings) -> float:
    """Seconds after the start past which the locality calls stop early."""
    return 140.0 if settings == Settings() else 30.0


def measure_staleness(app: stratus.App, settings: Settings) -> dict[str, Any]:
    """Item 4: from a put's return until every executor's cache serves the new value."""
    clock = time.perf_counter_ns
    # The caches compared are those of the reader's warm pool: it must span the cluster.
    reader = app.function(read_key, min_instances=EXECUTORS)
    executors: set[int] = set()
    deadline = time.monotonic() + 30.0
    while len(executors) < EXECUTORS and time.monotonic() < deadline:
        pool = [e for e in app.status().executors if "read_key" in e.pinned]
        executors = {e.pid for e in pool if e.state == "ready"}
        time.sleep(0.05)
    key = "stale/key"
    jitter = random.Random(0)
    value = -1
    app.kv.put(key, value)

    def two_reads() -> list[tuple[int, Any, int]]:
        futures = [reader.remote(key) for _ in range(2)]
        return [(*f.result(timeout=RESULT_TIMEOUT), clock()) for f in futures]

    staleness_ns: list[int] = []
    first_ns: list[int] = []
    puts: list[int] = []
    stale_replies: list[int] = []
    failures: Counter[str] = Counter()
    for trial in range(settings.staleness_trials):
        warm: set[int] = set()
        for _ in range(500):  # until both executors hold the current value
            warm |= {pid for pid, seen, _ in two_reads() if seen == value}
            if warm >= executors:
                break
        else:
            failures["not_warmed"] += 1
            continue
        time.sleep(jitter.uniform(0.0, 0.06))
        value = trial
        start = clock()
        app.kv.put(key, value)
        put_done = clock()
        puts.append(put_done - start)
        fresh: dict[int, int] = {}
        stale = 0
        deadline = put_done + int(settings.staleness_timeout_s * 1e9)
        while not fresh.keys() >= executors and clock() < deadline:
            for pid, seen, at in two_reads():
                if seen == value:
                    fresh.setdefault(pid, at - put_done)
                else:
                    stale += 1
        if not fresh.keys() >= executors:
            failures["timed_out"] += 1
            continue
        staleness_ns.append(max(fresh.values()))
        first_ns.append(min(fresh.values()))
        stale_replies.append(stale)
    doc: dict[str, Any] = {
        "note": "ms from app.kv.put's return until the second executor's first reply "
        "with the new value arrived (an upper bound: it includes that call's round trip)",
        "executor_pids": sorted(executors),
        "trials": len(staleness_ns),
    }
    if staleness_ns:
        summary = ms_summary(staleness_ns)
        ordered = sorted(staleness_ns)
        doc |= {
            "p50_ms": round(percentile(ordered, 50) / 1e6, 3),
            "p99_ms": summary["p99_ms"],
            "max_ms": summary["max_ms"],
            "min_ms": summary["min_ms"],
            "first_executor_p50_ms": round(median(first_ns) / 1e6, 3),
            "stale_replies_per_trial_median": median(stale_replies),
            "samples_ms": [round(s / 1e6, 2) for s in staleness_ns],
        }
    doc |= {
        "failures": dict(failures),
        "client_put_small": {
            "note": "app.kv.put after a 0-60 ms pause of the client",
            **latency_summary(puts),
        },
    }
    return doc


# Processes.


def children_of(root: int) -> list[int]:
    """Every live process below ``root``, from /proc (zombies left out)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            parents[int(fields[1])].append(int(entry.name))
    found, stack = [], list(parents[root])
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(parents[pid])
    return sorted(found)


def wait_for_no_children(timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := children_of(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def all_processes_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Those of ``pids`` still alive (not zombies) after up to ``timeout`` seconds."""

    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"

    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# Context of the run.


def redis_server_version() -> str | None:
    try:
        out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()


def progress(message: str) -> None:
    print(f"state.py: {message}", file=sys.stderr, flush=True)


# The run.


def run(settings: Settings, mode: str = "full") -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    started = time.monotonic()
    doc: dict[str, Any] = {
        "benchmark": "state",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": mode == "quick",
        "mode": mode,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
        "versions": {
            "stratus": stratus.__version__,
            "numpy": np.__version__,
            "redis_py": redis.__version__,
            "hiredis": module_version("hiredis"),
            "redis_server": redis_server_version(),
            "sqlite": sqlite3.sqlite_version,
            "git": git_revision(),
        },
        "settings": asdict(settings),
        "cluster": {
            "executors": EXECUTORS,
            "store": "sqlite:<data_dir>/state.db (WAL, synchronous=NORMAL)",
        },
        "load": {"loadavg_start": loadavg(), "cpu_busy_pct_before": cpu_busy_pct(0.5)},
    }
    busy = doc["load"]["cpu_busy_pct_before"]
    if busy is not None and busy > 10:
        progress(f"the machine is {busy:.0f}% busy already; expect noise")
    ours: list[int] = []
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-state-")))
        (base / "redis").mkdir()
        port, server = stack.enter_context(redis_server(base / "redis"))
        worker = Worker(port)  # forked before the cluster's client exists
        stack.callback(worker.close)
        app = stratus.connect(data_dir=base / "stratus", executors=EXECUTORS)
        stack.callback(app.close)
        progress("1/4 kv get, hit and miss")
        doc["kv_get"] = measure_gets(app, settings)
        progress("2/4 read-modify-write calls")
        doc["rw_call"] = measure_rw(app, worker, settings)
        progress("3/4 locality: 10 arrays of 8 MB")
        doc["locality"] = measure_locality(app, port, settings, started)
        progress("4/4 staleness under eventual")
        doc["staleness"] = measure_staleness(app, settings)
        doc["executors"] = [{"pid": e.pid, "served": e.served} for e in app.status().executors]
        ours = children_of(os.getpid())
        doc["processes_during_run"] = {"count": len(ours), "redis_server": server.pid}
    # Closed in reverse: the cluster, the worker, redis-server; then the directory.
    doc["leftover_processes"] = sorted(
        set(wait_for_no_children(15.0)) | set(all_processes_gone(ours, 5.0))
    )
    doc["load"]["loadavg_end"] = loadavg()
    doc["ratios_baseline_over_stratus"] = baseline_ratios(doc["rw_call"])
    doc["consistency_overhead"] = consistency_overhead(doc["rw_call"])
    doc["targets"] = targets(doc)
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def baseline_ratios(rw_call: dict[str, Any]) -> dict[str, Any]:
    """The stateless worker with Redis over each stratus kind: above 1, stratus is faster."""
    redis_rw = rw_call["redis_rw"]
    doc: dict[str, Any] = {"note": "redis_rw / stratus rw; above 1 stratus is faster"}
    for level in ("eventual", "serializable", "causal"):
        for q in ("p50", "p99"):
            doc[f"{level}_{q}"] = ratio(redis_rw[f"{q}_us"], rw_call[level][f"{q}_us"])
    doc["floors_p50"] = ratio(rw_call["redis_noop"]["p50_us"], rw_call["nostate"]["p50_us"])
    return doc


def consistency_overhead(rw_call: dict[str, Any]) -> dict[str, Any]:
    """Item 5: causal and serializable over eventual, and state over no state."""
    eventual, floor = rw_call["eventual"], rw_call["nostate"]
    doc: dict[str, Any] = {"note": "ratios over eventual's rw call; *_us: differences"}
    for level in ("serializable", "causal"):
        for q in ("p50", "p99"):
            doc[f"{level}_{q}"] = ratio(rw_call[level][f"{q}_us"], eventual[f"{q}_us"])
        doc[f"{level}_p50_extra_us"] = round(rw_call[level]["p50_us"] - eventual["p50_us"], 3)
    doc["eventual_over_nostate_p50"] = ratio(eventual["p50_us"], floor["p50_us"])
    doc["eventual_state_p50_extra_us"] = round(eventual["p50_us"] - floor["p50_us"], 3)
    return doc


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    report = check_targets(doc, TARGETS)
    report["all_met"] = all(t["met"] for t in report.values())
    return report


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, argv=argv)


if __name__ == "__main__":
    main()
