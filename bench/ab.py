"""A/B of two checkouts: the trivial call's sync p50 and async throughput, a DAG's p50.

Why: a change's cost per call is a few microseconds, below what one suite run on these
noisy VMs can resolve; alternating two trees in fresh processes, several times, can.

How: ``PYTHONPATH=<checkout>/src .venv/bin/python bench/ab.py LABEL`` prints one line:
the best of 3 rounds of 5,000 async calls, the lowest of 3 rounds' p50 of 1,000 sync
calls and of 500 two-step DAG calls, on an embedded cluster of 2 executors. Run it for
each tree in turn, repeated. On a machine others load, ``chrt -f 10`` before the command
keeps their processes from landing in the timings.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Any

import stratus


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    with stratus.connect(data_dir=tempfile.mkdtemp(), executors=2) as app:

        @app.function
        def noop(ctx: Any, x: int) -> int:
            return x

        @app.function
        def square(ctx: Any, x: int) -> int:
            return x * x

        pipeline = app.dag("pipeline", noop >> square)
        for _ in range(200):
            noop.remote(1).result()
            pipeline.remote(2).result()
        rates, p50s, dag_p50s = [], [], []
        for _ in range(3):
            started = time.perf_counter()
            for future in [noop.remote(i) for i in range(5000)]:
                future.result()
            rates.append(5000 / (time.perf_counter() - started))
            p50s.append(p50_us(noop, 1000))
            dag_p50s.append(p50_us(pipeline, 500))
        print(
            f"{label}: async {max(rates):,.0f}/s, sync p50 {min(p50s):.0f} us, "
            f"dag p50 {min(dag_p50s):.0f} us"
        )


def p50_us(handle: Any, calls: int) -> float:
    """The median of ``calls`` synchronous calls of ``handle``, in microseconds."""
    samples = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        handle.remote(3).result()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


if __name__ == "__main__":
    main()
