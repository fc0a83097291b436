"""``async def`` functions on the executor's event loop, and streamed generators.

Real embedded clusters. Nothing here waits on a sleep for its result: concurrency is
shown by recorded start/end intervals that overlap, order and "before it finished" by
a generator that blocks on a key the test writes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import stratus
from helpers import wait_until


def _released(ctx: stratus.Context, key: str, timeout: float = 20.0) -> bool:
    """Block (a sync function) until the test writes ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ctx.kv_now.get(key):
            return True
        time.sleep(0.005)
    return False


async def _released_async(ctx: stratus.Context, key: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ctx.kv_now.get(key):
            return True
        await asyncio.sleep(0.005)
    return False


# ------------------------------------------------------------------ async def


def test_async_calls_run_concurrently_on_one_executor(app: stratus.App) -> None:
    @app.function(max_instances=1)
    async def nap(ctx: stratus.Context, i: int) -> tuple[float, float, str]:
        started = time.monotonic()
        await asyncio.sleep(0.5)
        return started, time.monotonic(), ctx.executor_id

    futures = [nap.remote(i) for i in range(20)]
    results = [f.result(timeout=30) for f in futures]
    assert len({executor for _, _, executor in results}) == 1
    # Every call started before any ended: all twenty were running at once.
    assert max(start for start, _, _ in results) < min(end for _, end, _ in results)


def test_an_executor_runs_at_most_concurrency_tasks_of_a_function(app: stratus.App) -> None:
    @app.function(max_instances=1, concurrency=2)
    async def pair(ctx: stratus.Context, i: int) -> tuple[float, float]:
        started = time.monotonic()
        await asyncio.sleep(0.2)
        return started, time.monotonic()

    spans = [f.result(timeout=30) for f in [pair.remote(i) for i in range(6)]]
    overlapping = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlapping == 2


def test_async_writes_commit_atomically_when_the_coroutine_returns(app: stratus.App) -> None:
    @app.function
    async def transfer(ctx: stratus.Context, tag: str, fail: bool) -> str:
        ctx.kv.put(f"{tag}-a", 1)
        await asyncio.sleep(0)
        ctx.kv_now.put(f"{tag}-started", True)  # visible at once, outside the transaction
        assert await _released_async(ctx, f"{tag}-go")
        ctx.kv.put(f"{tag}-b", 2)
        if fail:
            raise ValueError("no")
        return "done"

    ok = transfer.remote("ok", False)
    assert wait_until(lambda: app.kv.get("ok-started") is True)
    assert app.kv.get("ok-a") is None  # written, not committed: the coroutine still runs
    app.kv.put("ok-go", True)
    assert ok.result(timeout=20) == "done"
    assert (app.kv.get("ok-a"), app.kv.get("ok-b")) == (1, 2)

    failed = transfer.remote("bad", True)
    app.kv.put("bad-go", True)
    with pytest.raises(ValueError, match="no"):
        failed.result(timeout=20)
    assert (app.kv.get("bad-a"), app.kv.get("bad-b")) == (None, None)


def test_a_timed_out_async_call_leaves_the_others_on_its_executor_running(
    app: stratus.App,
) -> None:
    @app.function(max_instances=1, timeout=1.0, retries=0)
    async def sleepy(ctx: stratus.Context, seconds: float) -> str:
        await asyncio.sleep(seconds)
        ctx.kv.put(f"slept-{seconds}", True)
        return ctx.executor_id

    stuck = sleepy.remote(60.0)
    quick = [sleepy.remote(0.1 + i / 100) for i in range(5)]
    executors = {f.result(timeout=20) for f in quick}
    with pytest.raises(stratus.InvocationTimeout):
        stuck.result(timeout=20)
    assert app.kv.get("slept-60.0") is None  # cancelled: nothing committed
    # The executor was not replaced: the calls after the timeout run on it.
    assert {sleepy.remote(0.01).result(timeout=20) for _ in range(3)} == executors
    assert len(executors) == 1


def test_an_async_function_awaits_a_nested_call(app: stratus.App) -> None:
    @app.function
    def double(ctx: stratus.Context, x: int) -> int:
        return 2 * x

    @app.function
    async def outer(ctx: stratus.Context, x: int) -> list[int]:
        return list(await asyncio.gather(*(ctx.call(double, x + i) for i in range(3))))

    assert outer.remote(10).result(timeout=20) == [20, 22, 24]


def test_async_steps_and_generator_steps_run_in_a_dag(app: stratus.App) -> None:
    @app.function
    async def incr_async(ctx: stratus.Context, x: int) -> int:
        await asyncio.sleep(0)
        ctx.kv.put("dag-async-step", x)  # committed at the sink, with the DAG
        return x + 1

    @app.function
    def upto(ctx: stratus.Context, n: int) -> Iterator[int]:
        yield from range(n)

    @app.function
    def total(ctx: stratus.Context, items: list[int]) -> int:
        return sum(items)

    dag = app.dag("async_pipeline", incr_async >> upto >> total)
    assert dag.remote(4).result(timeout=20) == sum(range(5))
    assert app.kv.get("dag-async-step") == 4


def test_async_functions_exchange_messages_without_blocking_their_executor(
    tmp_path: Path,
) -> None:
    """Two async calls on the only executor await each other's messages: a blocking
    recv in either would stop the loop both need."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:
        _exchange_messages(app)


def _exchange_messages(app: stratus.App) -> None:
    @app.function(concurrency=4, timeout=30)
    async def echo(ctx: stratus.Context, partner: str | None) -> Any:
        if partner is None:  # the first: learn who the partner is, then answer it
            partner = await ctx.recv_async(timeout=20)
            ctx.send(partner, "hello " + partner)
            return "sent"
        ctx.send(partner, ctx.invocation_id)
        return await ctx.recv_async(timeout=20)

    @app.function(concurrency=4, timeout=30)
    async def lonely(ctx: stratus.Context) -> str:
        try:
            await ctx.recv_async(timeout=0.2)
        except TimeoutError:
            return "nobody wrote"
        return "unexpected"

    first = echo.remote(None)
    second = echo.remote(first.invocation_id)
    assert first.result(timeout=30) == "sent"
    assert second.result(timeout=30) == f"hello {second.invocation_id}"
    assert lonely.remote().result(timeout=10) == "nobody wrote"


def test_an_async_class_serves_calls(app: stratus.App) -> None:
    @app.function(init_args=(3,))
    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        async def __call__(self, ctx: stratus.Context, x: int) -> int:
            await asyncio.sleep(0)
            return self.factor * x

    assert Scaler.remote(5).result(timeout=20) == 15


def test_an_async_function_that_raises_fails_with_remote_error(app: stratus.App) -> None:
    @app.function
    async def broken(ctx: stratus.Context) -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    with pytest.raises(stratus.RemoteError) as caught:
        broken.remote().result(timeout=20)
    assert isinstance(caught.value, KeyError)
    assert "broken" in caught.value.remote_traceback
    assert "executor.py" not in caught.value.remote_traceback


# ------------------------------------------------------------------ generators


def test_generator_items_arrive_in_order_before_it_finishes(app: stratus.App) -> None:
    @app.function
    def produce(ctx: stratus.Context, tag: str) -> Iterator[int]:
        yield 0
        yield 1
        assert _released(ctx, f"{tag}-go")
        ctx.kv.put(f"{tag}-done", True)
        yield 2

    stream = produce.remote_gen("sync")
    assert (next(stream), next(stream)) == (0, 1)  # while the generator waits for us
    assert app.kv.get("sync-done") is None
    app.kv.put("sync-go", True)
    assert list(stream) == [2]
    assert stream.future.result(timeout=0) == 3
    assert app.kv.get("sync-done") is True  # committed when it finished


def test_async_generator_items_stream_to_an_async_iterator(app: stratus.App) -> None:
    @app.function
    async def produce_async(ctx: stratus.Context, tag: str) -> AsyncIterator[str]:
        yield "a"
        assert await _released_async(ctx, f"{tag}-go")
        ctx.kv.put(f"{tag}-done", True)
        yield "b"

    async def consume() -> list[Any]:
        stream = produce_async.remote_gen("async")
        seen = [await anext(stream)]
        assert app.kv.get("async-done") is None
        app.kv.put("async-go", True)
        seen += [item async for item in stream]
        return seen

    assert asyncio.run(asyncio.wait_for(consume(), 30)) == ["a", "b"]
    assert app.kv.get("async-done") is True


def test_remote_on_a_generator_returns_its_items_as_a_list(app: stratus.App) -> None:
    @app.function
    def squares(ctx: stratus.Context, n: int) -> Iterator[int]:
        yield from (i * i for i in range(n))

    assert squares.remote(4).result(timeout=20) == [0, 1, 4, 9]
    with pytest.raises(stratus.UnsupportedFunction, match="not a generator"):

        @app.function
        def plain(ctx: stratus.Context) -> int:
            return 1

        plain.remote_gen()


def test_a_failing_generator_raises_after_the_items_it_yielded(app: stratus.App) -> None:
    @app.function
    def flaky(ctx: stratus.Context) -> Iterator[int]:
        ctx.kv.put("flaky-wrote", True)
        yield 1
        yield 2
        raise RuntimeError("broke after two")

    seen: list[int] = []
    with pytest.raises(stratus.RemoteError, match="broke after two") as caught:
        for item in flaky.remote_gen():
            seen.append(item)
    assert seen == [1, 2]
    assert isinstance(caught.value, RuntimeError)
    assert app.kv.get("flaky-wrote") is None  # it failed: nothing committed


def test_a_stream_is_not_retried_once_an_item_arrived(fresh_app: stratus.App) -> None:
    app = fresh_app

    @app.function(retries=2)
    def dies(ctx: stratus.Context, after: int) -> Iterator[int]:
        yield from range(after)
        if ctx.attempt == 1:
            os._exit(1)  # the executor dies mid-stream
        yield after

    # Dying before its first item: retried like any call.
    assert list(dies.remote_gen(0)) == [0]
    # After one: a new run would yield it again, so the stream fails instead.
    stream = dies.remote_gen(1)
    assert next(stream) == 0
    with pytest.raises(stratus.StreamInterrupted) as caught:
        next(stream)
    assert caught.value.delivered == 1
