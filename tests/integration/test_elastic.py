"""Warm pools on a real embedded cluster: growing under a burst, scaling to zero and back,
and the limits that reach the caller (Overloaded, MemoryLimitExceeded, NoCapacity).

Windows are configured short; every wait is on a condition seen in ``status()``, with a
generous deadline."""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import alive, wait_until

SHORT = stratus.AutoscalingConfig(
    tick=0.1,
    stable_window=1.0,
    panic_window=0.3,
    scale_to_zero_grace=0.3,
    keep_alive="fixed",
    fixed_keep_alive=0.5,
    drain=0.05,
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[stratus.App]:
    with stratus.connect(data_dir=tmp_path / "stratus", executors=4, autoscaling=SHORT) as app:
        yield app


def pool(app: stratus.App, function: str) -> tuple[int, int]:
    """``function``'s pool: (size wanted, executors ready)."""
    for p in app.status().pools:
        if p.function == function:
            return p.target, p.ready
    return 0, 0


def at_zero(app: stratus.App) -> bool:
    status = app.status()
    return not status.executors and all(p.target == 0 for p in status.pools)


def test_a_burst_grows_the_pool_and_it_shrinks_to_zero_afterwards(app: stratus.App) -> None:
    @app.function(max_instances=4)
    def nap(ctx: stratus.Context, x: int) -> int:
        time.sleep(0.05)
        return x

    grew = False
    deadline = time.monotonic() + 60
    while not grew and time.monotonic() < deadline:
        futures = [nap.remote(i) for i in range(16)]
        assert [f.result(timeout=30) for f in futures] == list(range(16))
        grew = pool(app, "nap")[1] >= 2
    assert grew, app.status().pools
    pids = [e.pid for e in app.status().executors]
    assert wait_until(lambda: at_zero(app), timeout=30), app.status()
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=10)  # memory freed
    assert nap.remote(7).result(timeout=30) == 7  # and back from zero


def test_the_first_call_after_scale_to_zero_succeeds_every_time(app: stratus.App) -> None:
    @app.function(retries=0)
    def incr(ctx: stratus.Context, x: int) -> int:
        return x + 1

    for i in range(3):
        assert incr.remote(i).result(timeout=30) == i + 1
        assert wait_until(lambda: at_zero(app), timeout=30), app.status()


def test_min_instances_keep_a_pool_warm_while_idle(app: stratus.App) -> None:
    @app.function(min_instances=2)
    def warm(ctx: stratus.Context) -> int:
        return os.getpid()

    assert wait_until(lambda: pool(app, "warm") == (2, 2), timeout=30)
    time.sleep(1.5)  # three keep-alives and grace periods: min_instances outlast them
    assert pool(app, "warm") == (2, 2)
    assert warm.remote().result(timeout=10) in {e.pid for e in app.status().executors}


def test_a_full_queue_gives_overloaded_and_the_rest_still_run(app: stratus.App) -> None:
    @app.function(max_instances=1, concurrency=1, max_queued=2, retries=0)
    def slow(ctx: stratus.Context, x: int) -> int:
        time.sleep(0.2)
        return x

    futures = [slow.remote(i) for i in range(8)]
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(timeout=30))
        except stratus.Overloaded as e:
            assert "max_queued=2" in str(e)
            outcomes.append("overloaded")
    assert outcomes.count("overloaded") >= 5  # one may run, two may wait: the rest turned away
    assert [o for o in outcomes if o != "overloaded"] == sorted(
        o for o in outcomes if o != "overloaded"
    )
    assert slow.remote(99).result(timeout=30) == 99  # and it keeps serving


def test_memory_limit_stops_the_function_and_its_executor_is_replaced(
    app: stratus.App,
) -> None:
    @app.function(memory_mb=200, retries=0)
    def hog(ctx: stratus.Context, mb: int) -> tuple[int, int]:
        block = bytearray(mb * 2**20)
        return len(block), os.getpid()

    size, first_pid = hog.remote(20).result(timeout=30)
    assert size == 20 * 2**20
    with pytest.raises(stratus.MemoryLimitExceeded) as caught:
        hog.remote(400).result(timeout=30)
    assert caught.value.function == "hog"
    assert wait_until(lambda: not alive(first_pid), timeout=10)  # replaced, not reused
    size, pid = hog.remote(20).result(timeout=30)
    assert size == 20 * 2**20 and pid != first_pid


def test_a_request_no_executor_can_host_is_no_capacity_at_once(app: stratus.App) -> None:
    @app.function(gpus=1)
    def needs_gpu(ctx: stratus.Context) -> int:
        return 1

    @app.function(memory_mb=10_000_000)
    def needs_ram(ctx: stratus.Context) -> int:
        return 1

    @app.function(cpu=512.0)
    def needs_cores(ctx: stratus.Context) -> int:
        return 1

    for fn in (needs_gpu, needs_ram, needs_cores):
        with pytest.raises(stratus.NoCapacity, match="no executor can host"):
            fn.remote().result(timeout=10)

    @app.function
    def fine(ctx: stratus.Context) -> int:
        return 1

    assert fine.remote().result(timeout=30) == 1


def test_preloaded_modules_are_imported_before_the_first_call(app: stratus.App) -> None:
    @app.function(preload=["colorsys"])
    def has_it(ctx: stratus.Context) -> bool:
        return "colorsys" in sys.modules

    @app.function
    def plain(ctx: stratus.Context) -> bool:
        return "wave" in sys.modules

    assert has_it.remote().result(timeout=30) is True
    assert plain.remote().result(timeout=30) is False


def test_calls_from_many_threads_during_scaling_all_complete(app: stratus.App) -> None:
    @app.function(max_instances=4)
    def square(ctx: stratus.Context, x: int) -> int:
        time.sleep(0.01)
        return x * x

    def caller(i: int) -> list[int]:
        return [square.remote(i * 100 + j).result(timeout=30) for j in range(30)]

    with cf.ThreadPoolExecutor(6) as pool_:
        results = list(pool_.map(caller, range(6)))
    assert results == [[(i * 100 + j) ** 2 for j in range(30)] for i in range(6)]
