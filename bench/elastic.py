"""Elasticity benchmark: cold starts of stratus's warm pools, and what scale to zero frees.

Run it with ``.venv/bin/python bench/elastic.py`` (``--quick`` for a short run). It prints
one JSON document on stdout and writes it to ``bench/results/elastic.json``; progress goes
to stderr.

Set-up: an embedded cluster whose pools empty quickly (fixed keep-alive of 0.3 s, ticks of
0.1 s), so that every round starts from zero executors.

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

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stratus
from _stats import (
    git_revision,
    latency_summary,
    loadavg,
    ratio,
    stdout_to_stderr,
    write_json,
)

RESULTS = Path(__file__).resolve().parent / "results" / "elastic.json"
FAST = stratus.AutoscalingConfig(
    tick=0.1,
    stable_window=2.0,
    panic_window=0.5,
    scale_to_zero_grace=0.2,
    keep_alive="fixed",
    fixed_keep_alive=0.3,
    drain=0.05,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("condition not reached in time")
        time.sleep(0.01)


def at_zero(app: stratus.App) -> bool:
    status = app.status()
    return not status.executors and all(p.target == 0 for p in status.pools)


def cold_rounds(app: stratus.App, fn: Any, name: str, rounds: int) -> dict[str, Any]:
    latency: list[int] = []
    from_decision: list[int] = []
    for i in range(rounds):
        wait_for(lambda: at_zero(app))
        start = time.perf_counter_ns()
        assert fn.remote(i).result(timeout=30) == i + 1
        done, served_at = time.perf_counter_ns(), time.monotonic_ns()
        latency.append(done - start)
        pool = next(p for p in app.status().pools if p.function == name)
        from_decision.append(served_at - int(pool.changed_at * 1e9))
    return {
        "call": latency_summary(latency),
        "decision_to_served": latency_summary(from_decision),
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
    root = cluster.process.pid
    pids = [root, *_descendants(root)]
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def incr(ctx: Any, x: int) -> int:
    return x + 1


def with_numpy(ctx: Any, x: int) -> int:
    import numpy

    return int(numpy.int64(x) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 10 if args.quick else 40
    document: dict[str, Any] = {
        "benchmark": "elastic",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "quick": args.quick,
        "git": git_revision(),
        "loadavg_start": loadavg(),
        "rounds": rounds,
        "target_new_executor_ready_ms": 20,
    }
    with stdout_to_stderr(), tempfile.TemporaryDirectory() as tmp:
        log("cold starts")
        with stratus.connect(data_dir=Path(tmp) / "a", executors=2, autoscaling=FAST) as app:
            fn = app.function(incr)
            fn.remote(0).result(timeout=30)
            cold = cold_rounds(app, fn, "incr", rounds)
            numpy_fn = app.function(preload=["numpy"])(with_numpy)
            wait_for(lambda: at_zero(app))
            start = time.perf_counter_ns()
            numpy_fn.remote(1).result(timeout=60)
            first_numpy = (time.perf_counter_ns() - start) / 1e6
            cold_numpy = cold_rounds(app, numpy_fn, "with_numpy", rounds)
            wait_for(lambda: at_zero(app))
            at_zero_memory = cluster_memory(app)
            warm = [fn.remote(i).result(timeout=30) for i in range(50)]
            assert warm == list(range(1, 51))
            warm_memory = cluster_memory(app)
        log("first call on a running executor")
        keep = stratus.AutoscalingConfig(tick=0.1, keep_alive="fixed", fixed_keep_alive=600.0)
        with stratus.connect(data_dir=Path(tmp) / "b", executors=1, autoscaling=keep) as app:
            anchor = app.function(min_instances=1)(incr)
            anchor.remote(0).result(timeout=30)
            first_call = first_call_rounds(app, rounds)
            warm_samples = []
            for i in range(rounds * 20):
                start = time.perf_counter_ns()
                anchor.remote(i).result(timeout=30)
                warm_samples.append(time.perf_counter_ns() - start)
        log("peers: interpreter starts")
        bare = interpreter_start([sys.executable, "-c", "pass"], rounds)
        imports = interpreter_start(
            [sys.executable, "-c", "import stratus.server.executor"], rounds
        )
    served = cold["decision_to_served"]["p50_us"]
    document.update(
        {
            "cold_start": cold,
            "cold_start_preload_numpy": {
                "first_ever_ms": round(first_numpy, 2),
                "later": cold_numpy,
            },
            "first_call_on_running_executor": first_call,
            "warm_call": latency_summary(warm_samples),
            "peers": {"python_c_pass": bare, "python_import_executor": imports},
            "memory": {"one_warm_executor": warm_memory, "at_zero": at_zero_memory},
            "ratios": {
                "import_floor_over_decision_to_served": ratio(imports["p50_us"], served),
                "decision_to_served_over_target": ratio(served / 1000, 20),
            },
            "loadavg_end": loadavg(),
        }
    )
    print(write_json(RESULTS, document))


if __name__ == "__main__":
    main()
