"""Scaling: throughput and latency as concurrent clients grow from 1 to 64.

Run it with ``.venv/bin/python bench/scaling.py`` (``--quick``, ``--tiny``). It prints one
JSON document on stdout and writes it to ``bench/results/scaling.json``.

The clients are **threads** of this one process (a closed loop each: call, wait for the
result, call again), started together at a barrier and stopped at a deadline; each level
of concurrency runs for a fixed time per system. Systems: a stratus synchronous call
``incr.remote(i).result()`` on an embedded cluster of 2 executors (``incr`` kept warm on
both, ``min_instances=2``, so that no level pays a scale-up); a Ray task
``ray.get(incr.remote(i))`` (``ray.init(num_cpus=2)``); a Dask task
``client.submit(incr, i).result()`` on a ``LocalCluster`` of 2 worker processes. Every
result is checked. Throughput is calls completed over the level's wall time; latencies
are per call. At each level the systems take turns (A B C, C B A, ...), so that the noise
of the machine hits them alike. All clients share one client process, as they would in
one application server; its GIL is part of what is measured, for every system alike.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import stratus
from _peers import DaskPeer, import_peer, start_ray
from _procs import wait_for_no_children, wait_for_pools
from _stats import (
    bench_main,
    latency_summary,
    loadavg,
    module_version,
    ratio,
    results_path,
    run_header,
)
from _timing import alternating, settle, time_calls

RESULTS = results_path("scaling")
RESULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Settings:
    clients: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seconds_per_level: float = 2.0
    warmup_calls: int = 100
    settle_s: float = 0.3


QUICK = Settings(clients=(1, 8, 64), seconds_per_level=0.5, warmup_calls=50)
TINY = replace(QUICK, clients=(1, 4), seconds_per_level=0.1, warmup_calls=5, settle_s=0.0)


def incr(ctx: Any, x: int) -> int:
    return x + 1


def plain_incr(x: int) -> int:
    return x + 1


def closed_loop(call: Callable[[int], Any], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads calling ``call`` in a loop for ``seconds``: throughput, latency."""
    clock = time.perf_counter_ns
    barrier = threading.Barrier(clients + 1)
    samples: list[list[int]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    stop_at = [0]

    def client(c: int) -> None:
        mine = samples[c]
        i = c * 10_000_000
        barrier.wait()
        try:
            while clock() < stop_at[0]:
                start = clock()
                value = call(i)
                mine.append(clock() - start)
                if value != i + 1:
                    raise AssertionError(f"call({i}) returned {value!r}")
                i += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    begin = clock()
    stop_at[0] = begin + int(seconds * 1e9)
    barrier.wait()
    for thread in threads:
        thread.join(RESULT_TIMEOUT)
    elapsed = clock() - begin
    if errors:
        raise errors[0]
    pooled = [s for per_client in samples for s in per_client]
    return {
        "clients": clients,
        "calls": len(pooled),
        "calls_per_s": round(len(pooled) / (elapsed / 1e9)),
        **latency_summary(pooled),
    }


def progress(message: str) -> None:
    print(f"scaling.py: {message}", file=sys.stderr, flush=True)


def run(settings: Settings, mode: str, with_ray: bool, with_dask: bool) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header("scaling", mode, ray=module_version("ray"), dask=module_version("distributed"))
    doc["settings"] = asdict(settings)
    doc["clients_are"] = "threads in one client process, closed loop"
    calls: dict[str, Callable[[int], Any]] = {}
    left_out: dict[str, str] = {}
    levels: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-scaling-")))
        app = stratus.connect(data_dir=base / "stratus", executors=2)
        stack.callback(app.close)
        fn = app.function(incr, min_instances=2)  # both executors, as Ray's and Dask's 2
        wait_for_pools(app, [fn.name], 2)
        calls["stratus"] = lambda i: fn.remote(i).result(timeout=RESULT_TIMEOUT)
        if with_dask:
            progress("starting Dask")
            dask = DaskPeer()
            stack.callback(dask.close)
            calls["dask"] = lambda i: dask.submit(plain_incr, i).result(timeout=RESULT_TIMEOUT)
        ray, reason, _ = import_peer("ray") if with_ray else (None, "skipped with --no-ray", 0)
        if ray is not None:
            progress("starting Ray")
            start_ray(ray)
            stack.callback(ray.shutdown)
            task = ray.remote(plain_incr)
            calls["ray"] = lambda i: ray.get(task.remote(i), timeout=RESULT_TIMEOUT)
        elif reason:
            left_out["ray"] = reason
        for call in calls.values():
            time_calls(call, lambda i: i + 1, settings.warmup_calls)
        for k, clients in enumerate(settings.clients):
            for name in alternating(list(calls), k):
                progress(f"{clients} clients: {name}")
                settle(settings.settle_s)
                result = closed_loop(calls[name], clients, settings.seconds_per_level)
                levels.setdefault(name, []).append(result)
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["systems"] = levels
    doc["left_out"] = left_out
    doc["peak"] = {
        name: max(rows, key=lambda row: row["calls_per_s"]) for name, rows in levels.items()
    }
    peak = doc["peak"]["stratus"]["calls_per_s"]
    doc["ratios_over_stratus"] = {
        "note": "peak throughput of the system / stratus's: below 1, stratus does more",
        **{name: ratio(row["calls_per_s"], peak) for name, row in doc["peak"].items()},
    }
    doc["load"]["loadavg_end"] = loadavg()
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, peers=True, argv=argv)


if __name__ == "__main__":
    main()
