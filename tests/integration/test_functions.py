"""Functions on a real embedded cluster: calls, futures, versions, classes, nesting."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib
import os
import threading
import time
from pathlib import Path

import pytest

import stratus


def test_call_returns_the_result(app: stratus.App) -> None:
    @app.function
    def incr(ctx: stratus.Context, x: int) -> int:
        return x + 1

    assert incr.remote(41).result(timeout=10) == 42


def test_keyword_arguments_and_context(app: stratus.App) -> None:
    @app.function
    def describe(ctx: stratus.Context, a: int, *, b: int = 0) -> tuple[str, str, int]:
        return ctx.invocation_id, ctx.function, a + b

    first = describe.remote(1, b=2).result(timeout=10)
    second = describe.remote(1).result(timeout=10)
    assert first[1:] == ("describe", 3) and second[2] == 1
    assert first[0] != second[0]


def test_future_is_a_concurrent_future(app: stratus.App) -> None:
    @app.function
    def echo(ctx: stratus.Context, x: object) -> object:
        return x

    future = echo.remote("hi")
    assert isinstance(future, cf.Future)
    assert future.result(timeout=10) == "hi" and future.done() and not future.cancel()


def test_map_keeps_order(app: stratus.App) -> None:
    @app.function
    def square(ctx: stratus.Context, x: int) -> int:
        return x * x

    assert list(square.map(range(200), timeout=10)) == [x * x for x in range(200)]


def test_future_is_awaitable(app: stratus.App) -> None:
    @app.function
    def double(ctx: stratus.Context, x: int) -> int:
        return 2 * x

    async def main() -> list[int]:
        return list(await asyncio.gather(*(double.remote(i) for i in range(20))))

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [2 * i for i in range(20)]


def test_callbacks_and_wait_complete_without_result(app: stratus.App) -> None:
    @app.function
    def slow_echo(ctx: stratus.Context, x: int) -> int:
        time.sleep(0.05)
        return x

    called = threading.Event()
    future = slow_echo.remote(1)
    future.add_done_callback(lambda f: called.set())
    assert called.wait(10)
    futures = [slow_echo.remote(i) for i in range(4)]
    done, pending = cf.wait(futures, timeout=10)
    assert not pending and {f.result() for f in done} == {0, 1, 2, 3}
    assert sorted(f.result() for f in cf.as_completed([slow_echo.remote(9)], timeout=10)) == [9]


def test_result_timeout_raises_timeout_error(app: stratus.App) -> None:
    @app.function
    def nap(ctx: stratus.Context, seconds: float) -> str:
        time.sleep(seconds)
        return "awake"

    future = nap.remote(1.0)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    assert future.result(timeout=10) == "awake"


def test_calls_from_many_threads(app: stratus.App) -> None:
    @app.function
    def ident(ctx: stratus.Context, x: int) -> int:
        return x

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ident.remote(i).result(timeout=10), range(400)))
    assert results == list(range(400))


def test_reregistering_makes_a_new_version_and_inflight_calls_finish_on_the_old(
    app: stratus.App,
) -> None:
    @app.function(name="versioned")
    def old(ctx: stratus.Context, seconds: float) -> str:
        time.sleep(seconds)
        return "old"

    in_flight = old.remote(0.3)

    @app.function(name="versioned")
    def new(ctx: stratus.Context, seconds: float) -> str:
        return "new"

    assert (old.version, new.version) == (1, 2)
    assert new.remote(0).result(timeout=10) == "new"
    assert in_flight.result(timeout=10) == "old"
    assert app.lookup("versioned").remote(0).result(timeout=10) == "new"


def test_class_is_built_once_per_warm_executor(app: stratus.App) -> None:
    @app.function(init_args=(10,))
    class Model:
        def __init__(self, offset: int) -> None:
            self.offset = offset
            self.built_at = time.monotonic_ns()

        def __call__(self, ctx: stratus.Context, x: int) -> tuple[int, int, int]:
            return os.getpid(), self.built_at, x + self.offset

    results = [Model.remote(i).result(timeout=10) for i in range(50)]
    assert [r[2] for r in results] == [i + 10 for i in range(50)]
    builds = {}
    for pid, built_at, _ in results:
        builds.setdefault(pid, set()).add(built_at)
    assert all(len(b) == 1 for b in builds.values())


def test_nested_calls_do_not_deadlock_when_every_executor_is_busy(app: stratus.App) -> None:
    @app.function(timeout=30)
    def fib(ctx: stratus.Context, n: int) -> int:
        if n < 2:
            return n
        return int(ctx.call("fib", n - 1).result()) + int(ctx.call("fib", n - 2).result())

    # Far more nested waits than executors: each waiting executor keeps serving.
    futures = [fib.remote(10) for _ in range(4)]
    assert [f.result(timeout=60) for f in futures] == [55] * 4


def test_nested_calls_run_hundreds_deep(fresh_app: stratus.App) -> None:
    """The demo's fib: both calls made before either is awaited, so two executors each
    run hundreds of nested invocations re-entrantly (past Python's default 1,000 frames,
    which used to lose a call and hang it until its deadline)."""

    @fresh_app.function(timeout=60)
    def fib(ctx: stratus.Context, n: int) -> int:
        if n < 2:
            return n
        left, right = ctx.call("fib", n - 1), ctx.call("fib", n - 2)
        return int(left.result()) + int(right.result())

    assert fib.remote(15).result(timeout=120) == 610


def test_a_nested_recursion_without_end_is_a_recursion_error(fresh_app: stratus.App) -> None:
    @fresh_app.function(timeout=60, retries=0)
    def down(ctx: stratus.Context, n: int) -> int:
        return int(ctx.call("down", n + 1).result())

    with pytest.raises(RecursionError, match="nested 2000 deep"):
        down.remote(0).result(timeout=120)
    assert fresh_app.function(name="after")(lambda ctx: 1).remote().result(timeout=30) == 1


def test_handles_travel_as_arguments(app: stratus.App) -> None:
    @app.function
    def triple(ctx: stratus.Context, x: int) -> int:
        return 3 * x

    @app.function
    def apply(ctx: stratus.Context, fn: stratus.Function, x: int) -> int:
        return int(ctx.call(fn, x).result())

    assert apply.remote(triple, 5).result(timeout=10) == 15


def test_unknown_function_is_function_not_found(app: stratus.App) -> None:
    with pytest.raises(stratus.FunctionNotFound):
        app.lookup("no-such-function")

    @app.function
    def call_missing(ctx: stratus.Context) -> object:
        return ctx.call("no-such-function").result()

    with pytest.raises(stratus.RemoteError) as info:
        call_missing.remote().result(timeout=10)
    assert info.value.remote_type.endswith("FunctionNotFound")


def test_options_are_stored_and_validated(app: stratus.App) -> None:
    @app.function(memory_mb=256, cpu=0.5, gpus=0, consistency="causal", timeout=5, retries=1)
    def configured(ctx: stratus.Context) -> int:
        return 1

    names = {f.name: f for f in app.status().functions}
    options = names["configured"].options
    assert (options.resources.memory_mb, options.resources.cpu, options.consistency) == (
        256,
        0.5,
        "causal",
    )
    assert (options.timeout, options.retries) == (5, 1)
    with pytest.raises(stratus.ConfigurationError):
        app.function(consistency="strong")
    with pytest.raises(stratus.ConfigurationError):
        app.function(name="not-callable")(42)
    with pytest.raises(stratus.ConfigurationError):
        app.function(name="")(lambda ctx: 1)
    with pytest.raises(stratus.ConfigurationError):
        app.function(timeout=0)


def test_function_no_executor_can_host_is_no_capacity(app: stratus.App) -> None:
    @app.function(gpus=1)
    def needs_gpu(ctx: stratus.Context) -> int:
        return 1

    with pytest.raises(stratus.NoCapacity):
        needs_gpu.remote().result(timeout=10)


def test_code_from_a_user_module_ships_by_value_and_edits_make_new_versions(
    app: stratus.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "user_module_for_stratus.py"
    module.write_text("def answer(ctx):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # not on the executors' path
    import user_module_for_stratus as user

    first = app.function(user.answer)
    module.write_text("def answer(ctx):\n    return 2\n")
    importlib.reload(user)
    second = app.function(user.answer)
    assert (first.version, second.version) == (1, 2)
    assert second.remote().result(timeout=10) == 2
