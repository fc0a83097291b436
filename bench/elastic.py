"""Elasticity benchmark: cold starts of stratus's warm pools, and what scale to zero frees.

Run it with ``.venv/bin/python bench/elastic.py`` (``--quick`` for a short run, ``--tiny``
for the suite's smoke test, ``--rounds N`` to choose; ``make bench-elastic``). It prints one
JSON document on stdout and writes it to ``bench/results/elastic.json`` (or
``$STRATUS_BENCH_RESULTS``); progress goes to stderr.

Set-up: an embedded cluster whose pools empty quickly (fixed keep-alive and scale-to-zero
grace of 0.1 s, ticks of 0.1 s), so that every round starts from zero executors.

What is measured (``time.perf_counter_ns``; CLOCK_MONOTONIC is one clock for every
process of the machine, so the coordinator's timestamps compare with ours):

1. **cold start**: a function's pool is at zero and no executor runs; one call. Reported:
   the caller's latency (Demand, decision, fork, executor start, hello, push, call, code
   fetched, result), and *decision to served*: from the coordinator's scale-up decision
   (``PoolStatus.changed_at``) to the result in our hands. Each round waits (by
   ``status()``) until the pool and every executor are gone.
2. **cold start with a preloaded module** (``preload=["numpy"]``): the first spawn imports
   numpy in the fork server (once), later spawns inherit it.
3. **first call on a running executor**: the cluster is capped at one executor, kept warm
   by a function with ``min_instances=1``; each round registers a new function and times
   its first call, which pins it on that executor (no fork) and fetches its code there.
4. **warm call** of the same function, for reference.
5. **peers**: a Python interpreter started for nothing (``python -c pass``) and one that
   imports what an executor needs (``import stratus.server.executor``): the floor a cold
   start pays without a pre-imported fork server.
6. **memory**: PSS and RSS of the cluster's processes with one warm executor, and at zero.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

import stratus
from _procs import descendants, memory_report, process_table, wait_for_no_children
from _stats import (
    bench_main,
    check_targets,
    latency_summary,
    loadavg,
    module_version,
    ratio,
    results_path,
    run_header,
    wait_until,
)

RESULTS = results_path("elastic")
TARGETS = {  # name: (path into the document, comparison, bound); "cold" names the report's row
    "cold_start_decision_to_served_p50_ms": ("cold_start.decision_to_served_p50_ms", "<=", 20.0),
}
FAST = stratus.AutoscalingConfig(  # pools empty in a few ticks: each round starts from zero
    tick=0.1,
    stable_window=2.0,
    panic_window=0.5,
    scale_to_zero_grace=0.1,
    keep_alive="fixed",
    fixed_keep_alive=0.1,
    drain=0.05,
)


@dataclass(frozen=True)
class Settings:
    rounds: int = 12  # of each kind: cold starts, numpy cold starts, first calls, interpreters
    warm_calls: int = 600


QUICK = Settings(rounds=6, warm_calls=200)
TINY = Settings(rounds=2, warm_calls=20)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def at_zero(app: stratus.App) -> bool:
    status = app.status()
    return not status.executors and all(p.target == 0 for p in status.pools)


def cold_rounds(app: stratus.App, fn: Any, name: str, rounds: int) -> dict[str, Any]:
    latency: list[int] = []
    from_decision: list[int] = []
    for i in range(rounds):
        wait_until(lambda: at_zero(app))
        start = time.perf_counter_ns()
        assert fn.remote(i).result(timeout=30) == i + 1
        done, served_at = time.perf_counter_ns(), time.time_ns()
        latency.append(done - start)
        pool = next(p for p in app.status().pools if p.function == name)
        from_decision.append(served_at - int(pool.changed_at * 1e9))
    served = latency_summary(from_decision)
    return {
        "call": latency_summary(latency),
        "decision_to_served": served,
        "decision_to_served_p50_ms": round(served["p50_us"] / 1000, 2),
    }


def first_call_rounds(app: stratus.App, rounds: int) -> dict[str, Any]:
    samples: list[int] = []
    for i in range(rounds):

        def fresh(ctx: Any, x: int, i: int = i) -> int:
            return x + i

        handle = app.function(name=f"fresh{i}")(fresh)
        start = time.perf_counter_ns()
        assert handle.remote(1).result(timeout=30) == 1 + i
        samples.append(time.perf_counter_ns() - start)
    return latency_summary(samples)


def interpreter_start(command: list[str], rounds: int) -> dict[str, Any]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        subprocess.run(command, check=True)
        samples.append(time.perf_counter_ns() - start)
    return latency_summary(samples)


def cluster_memory(app: stratus.App) -> dict[str, Any]:
    """RSS and PSS of the coordinator, the fork server and the executors, in MB."""
    cluster = app._cluster
    assert cluster is not None
    table = process_table()
    return memory_report(table, descendants(table, cluster.process.pid))


def incr(ctx: Any, x: int) -> int:
    return x + 1


def with_numpy(ctx: Any, x: int) -> int:
    import numpy

    return int(numpy.int64(x) + 1)


def measure_cold(settings: Settings, data_dir: Path) -> dict[str, Any]:
    """Cold starts, plain and with numpy preloaded; memory with one executor and at zero."""
    rounds = settings.rounds
    with stratus.connect(data_dir=data_dir, executors=2, autoscaling=FAST) as app:
        fn = app.function(incr)
        fn.remote(0).result(timeout=30)
        cold = cold_rounds(app, fn, "incr", rounds)
        numpy_fn = app.function(preload=["numpy"])(with_numpy)
        wait_until(lambda: at_zero(app))
        start = time.perf_counter_ns()
        numpy_fn.remote(1).result(timeout=60)
        first_numpy = (time.perf_counter_ns() - start) / 1e6
        cold_numpy = cold_rounds(app, numpy_fn, "with_numpy", rounds)
        wait_until(lambda: at_zero(app))
        at_zero_memory = cluster_memory(app)
        warm = [fn.remote(i).result(timeout=30) for i in range(50)]
        assert warm == list(range(1, 51))
        warm_memory = cluster_memory(app)
    return {
        "cold_start": cold,
        "cold_start_preload_numpy": {"first_ever_ms": round(first_numpy, 2), "later": cold_numpy},
        "memory": {"one_warm_executor": warm_memory, "at_zero": at_zero_memory},
    }


def measure_running(settings: Settings, data_dir: Path) -> dict[str, Any]:
    """First calls of new functions on an executor kept running, then warm calls."""
    keep = stratus.AutoscalingConfig(tick=0.1, keep_alive="fixed", fixed_keep_alive=600.0)
    with stratus.connect(data_dir=data_dir, executors=1, autoscaling=keep) as app:
        anchor = app.function(min_instances=1)(incr)
        anchor.remote(0).result(timeout=30)
        first_call = first_call_rounds(app, settings.rounds)
        warm_samples = []
        for i in range(settings.warm_calls):
            start = time.perf_counter_ns()
            assert anchor.remote(i).result(timeout=30) == i + 1
            warm_samples.append(time.perf_counter_ns() - start)
    return {
        "first_call_on_running_executor": first_call,
        "warm_call": latency_summary(warm_samples),
    }


def table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows, one at a time (no throughput); ratio is the row's p50 over the
    cold start's (decision to served)."""
    base = doc["cold_start"]["decision_to_served"]
    peers = doc["peers"]
    rows = [
        ("**stratus** new executor: scale-up decision to first call served", base),
        ("stratus cold call, as the caller sees it", doc["cold_start"]["call"]),
        (
            'stratus new executor, `preload=["numpy"]` (after the first)',
            doc["cold_start_preload_numpy"]["later"]["decision_to_served"],
        ),
        (
            "stratus first call of a function on a running executor",
            doc["first_call_on_running_executor"],
        ),
        ("stratus warm call, for reference", doc["warm_call"]),
        ("`python -c pass` (an interpreter for nothing)", peers["python_c_pass"]),
        ("`python -c 'import stratus.server.executor'`", peers["python_import_executor"]),
    ]
    return [
        {
            "system": system,
            "p50_us": summary["p50_us"],
            "p99_us": summary["p99_us"],
            "per_s": None,
            "ratio": ratio(summary["p50_us"], base["p50_us"]),
        }
        for system, summary in rows
    ]


def run(settings: Settings, mode: str) -> dict[str, Any]:
    doc: dict[str, Any] = run_header("elastic", mode, numpy=module_version("numpy"))
    doc["settings"] = asdict(settings)
    doc["autoscaling"] = msgspec.structs.asdict(FAST)
    with tempfile.TemporaryDirectory(prefix="stratus-elastic-bench-") as tmp:
        log(f"elastic: 1/3 cold starts ({settings.rounds} rounds of each kind)")
        doc |= measure_cold(settings, Path(tmp) / "a")
        log("elastic: 2/3 first call on a running executor, warm calls")
        doc |= measure_running(settings, Path(tmp) / "b")
    log("elastic: 3/3 peers: interpreter starts")
    imports = [sys.executable, "-c", "import stratus.server.executor"]
    doc["peers"] = {
        "python_c_pass": interpreter_start([sys.executable, "-c", "pass"], settings.rounds),
        "python_import_executor": interpreter_start(imports, settings.rounds),
    }
    served = doc["cold_start"]["decision_to_served"]["p50_us"]
    doc["ratios"] = {
        "import_floor_over_decision_to_served": ratio(
            doc["peers"]["python_import_executor"]["p50_us"], served
        ),
        "decision_to_served_over_target": ratio(served / 1000, 20),
    }
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["targets"] = check_targets(doc, TARGETS)
    doc["table"] = table(doc)
    doc["load"]["loadavg_end"] = loadavg()
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__ or "", RESULTS, settings, run, tunable=True, argv=argv)


if __name__ == "__main__":
    main()
