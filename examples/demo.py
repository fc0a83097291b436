"""The demo of ``make demo``: an embedded cluster, functions, DAGs, a class, shared state
and files.

Run with ``make demo`` (or ``.venv/bin/python examples/demo.py``).
"""

from __future__ import annotations

import statistics
import time

import stratus


def main() -> None:
    started = time.perf_counter()
    with stratus.connect() as app:
        ready = time.perf_counter() - started
        print(f"embedded cluster {app.cluster_id} ready in {ready * 1000:.0f} ms")

        @app.function
        def incr(ctx: stratus.Context, x: int) -> int:
            return x + 1

        @app.function
        def square(ctx: stratus.Context, x: int) -> int:
            return x * x

        @app.function
        def add(ctx: stratus.Context, a: int, b: int) -> int:
            return a + b

        @app.function(timeout=10)
        def fib(ctx: stratus.Context, n: int) -> int:
            """Nested calls: each waits on the cluster without blocking an executor."""
            if n < 2:
                return n
            left, right = ctx.call("fib", n - 1), ctx.call("fib", n - 2)
            return int(left.result()) + int(right.result())

        @app.function(init_args=(3,))
        class Scaler:
            """A class: built once per warm executor (load a model here)."""

            def __init__(self, factor: int) -> None:
                self.factor = factor

            def __call__(self, ctx: stratus.Context, x: int) -> int:
                return x * self.factor

        @app.function(consistency="serializable")
        def visit(ctx: stratus.Context, page: str) -> int:
            """Shared state: read and write the kv store; committed when it returns."""
            count = int(ctx.kv.get(f"visits/{page}", 0)) + 1
            ctx.kv.put(f"visits/{page}", count)
            return count

        @app.function
        def hit(ctx: stratus.Context, page: str) -> None:
            """A shared counter: applied once when the call commits, even if it is retried."""
            ctx.kv.incr(f"hits/{page}")

        @app.function
        def journal(ctx: stratus.Context, line: str) -> int:
            """Files: every invocation is one transaction, committed when it returns."""
            with ctx.fs.open("/journal.txt", "a") as f:
                f.write(line + "\n")
            return ctx.fs.stat("/journal.txt").st_size

        print("incr(41)              =", incr.remote(41).result())
        pipeline = app.dag("pipeline", incr >> square)
        print("square(incr(3))       =", pipeline.remote(3).result())
        diamond = app.dag("diamond", incr >> [square, Scaler] >> add)
        print("square(4) + 3*4       =", diamond.remote(3).result())
        print("fib(12) nested calls  =", fib.remote(12).result())
        print("map(square, 0..9)     =", list(square.map(range(10))))

        for _ in range(5):
            visit.remote("home").result()
        visits = app.kv.get("visits/home")
        print("visits/home           =", visits, "(kept in .stratus across runs)")
        for future in [hit.remote("home") for _ in range(100)]:
            future.result()  # a hundred concurrent increments: none lost, none twice
        print("hits/home (incr)      =", app.kv.get("hits/home"), "(100 more each run)")
        for future in [journal.remote(f"entry {i}") for i in range(10)]:
            future.result()  # ten concurrent appends: none lost
        with app.fs.transaction() as fs:
            lines = fs.open("/journal.txt").read().splitlines()
        print("/journal.txt          =", len(lines), "lines (10 more each run, none lost)")
        try:
            app.function(name="broken")(lambda ctx: 1 / 0).remote().result()
        except stratus.RemoteError as e:
            print("a remote error        =", e.remote_type, "-", e.args[0])

        for _ in range(300):  # warm up
            incr.remote(1).result()
        calls = [_timed(lambda: incr.remote(1).result()) for _ in range(2000)]
        dags = [_timed(lambda: pipeline.remote(1).result()) for _ in range(2000)]
        print(f"sync call latency     p50 {_p(calls, 50):.0f} us   p99 {_p(calls, 99):.0f} us")
        print(f"DAG latency           p50 {_p(dags, 50):.0f} us   p99 {_p(dags, 99):.0f} us")
        n = 20_000
        t = time.perf_counter()
        futures = [incr.remote(i) for i in range(n)]
        assert [f.result() for f in futures] == [i + 1 for i in range(n)]
        print(f"async throughput      {n / (time.perf_counter() - t):,.0f} calls/s")


def _timed(fn: object) -> float:
    t = time.perf_counter_ns()
    fn()  # type: ignore[operator]
    return (time.perf_counter_ns() - t) / 1000


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if q < 100 else max(samples)


if __name__ == "__main__":
    main()
