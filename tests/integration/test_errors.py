"""Every failure reaches the caller as a typed error, and the cluster keeps serving."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import stratus
from helpers import wait_until


def test_remote_error_carries_type_message_traceback_and_exception(app: stratus.App) -> None:
    @app.function
    def fail(ctx: stratus.Context, x: int) -> int:
        raise KeyError(f"missing {x}")

    with pytest.raises(stratus.RemoteError) as info:
        fail.remote(7).result(timeout=10)
    error = info.value
    assert error.remote_type == "builtins.KeyError"
    assert "missing 7" in error.args[0] and "in fail" in error.remote_traceback
    assert isinstance(error.exception, KeyError)
    assert error.function == "fail" and error.invocation_id
    assert isinstance(error, stratus.InvocationError)


def test_sys_exit_in_a_function_is_a_remote_error(app: stratus.App) -> None:
    @app.function
    def leave(ctx: stratus.Context) -> None:
        sys.exit(3)

    with pytest.raises(stratus.RemoteError) as info:
        leave.remote().result(timeout=10)
    assert info.value.remote_type == "builtins.SystemExit"


def test_class_whose_init_fails_reports_the_init_error(app: stratus.App) -> None:
    @app.function
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("no model file")

        def __call__(self, ctx: stratus.Context) -> int:
            return 1

    with pytest.raises(stratus.RemoteError) as info:
        Broken.remote().result(timeout=10)
    assert info.value.remote_type == "builtins.RuntimeError"
    assert "no model file" in str(info.value)


def test_unpicklable_exception_still_reports(app: stratus.App) -> None:
    @app.function
    def fail_oddly(ctx: stratus.Context) -> None:
        class Local(Exception):
            def __reduce__(self) -> object:
                raise TypeError("no pickling")

        raise Local("odd")

    with pytest.raises(stratus.RemoteError) as info:
        fail_oddly.remote().result(timeout=10)
    assert info.value.exception is None and "Local" in info.value.remote_type


def test_unpicklable_argument_fails_at_the_call(app: stratus.App) -> None:
    @app.function
    def take(ctx: stratus.Context, x: object) -> None:
        return None

    with pytest.raises(stratus.SerializationError):
        take.remote(threading.Lock())


def test_unpicklable_result_is_a_serialization_error(app: stratus.App) -> None:
    @app.function
    def give_lock(ctx: stratus.Context) -> object:
        return threading.Lock()

    with pytest.raises(stratus.SerializationError):
        give_lock.remote().result(timeout=10)


def test_payload_limit_on_arguments_and_results(tmp_path: Path) -> None:
    with stratus.connect(data_dir=tmp_path, executors=1, max_payload=1 << 20) as app:

        @app.function
        def blob(ctx: stratus.Context, size: int, data: bytes = b"") -> bytes:
            return b"x" * size

        with pytest.raises(stratus.PayloadTooLarge):
            blob.remote(0, b"y" * (2 << 20))
        with pytest.raises(stratus.PayloadTooLarge):
            blob.remote(2 << 20).result(timeout=10)
        assert len(blob.remote(1000, b"y" * 1000).result(timeout=10)) == 1000


def test_timeout_kills_the_function_and_replaces_its_executor(fresh_app: stratus.App) -> None:
    @fresh_app.function(timeout=0.5, retries=0)
    def spin(ctx: stratus.Context) -> int:
        return os.getpid() if ctx.attempt < 0 else _busy_forever()

    @fresh_app.function
    def pid(ctx: stratus.Context) -> int:
        return os.getpid()

    with pytest.raises(stratus.InvocationTimeout):
        spin.remote().result(timeout=20)
    assert pid.remote().result(timeout=10) in _ready_pids(fresh_app)
    assert wait_until(lambda: _pool_ready(fresh_app, "spin"))  # its pool was refilled


def test_a_finished_calls_alarm_spares_the_next_call(tmp_path: Path) -> None:
    """The executor leaves a finished call's SIGALRM armed (one setitimer per timeout
    period, not two per call): when it rings during a later, longer call, that call
    runs on, and a call past its own timeout is still stopped."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:

        @app.function(timeout=0.3, retries=0)
        def quick(ctx: stratus.Context, seconds: float) -> int:
            time.sleep(seconds)
            return os.getpid()

        @app.function(retries=0)
        def slow(ctx: stratus.Context) -> int:
            time.sleep(1.0)  # the quick call's alarm rings 0.3 s after it began
            return os.getpid()

        first = quick.remote(0).result(timeout=10)
        assert slow.remote().result(timeout=10) == first  # the same executor, still alive
        with pytest.raises(stratus.InvocationTimeout):
            quick.remote(5).result(timeout=20)


def test_timeout_when_the_function_cannot_be_interrupted(fresh_app: stratus.App) -> None:
    """SIGALRM blocked: the caller's deadline passes and the coordinator kills it."""

    @fresh_app.function(timeout=0.3, retries=0)
    def stubborn(ctx: stratus.Context) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)

    # The function sleeps 60 s: only the kill makes InvocationTimeout arrive within 30 s
    # (a hang would be TimeoutError from result()).
    with pytest.raises(stratus.InvocationTimeout):
        stubborn.remote().result(timeout=30)


def test_executor_killed_mid_call_is_retried(fresh_app: stratus.App) -> None:
    @fresh_app.function(retries=2)
    def die_once(ctx: stratus.Context) -> int:
        if ctx.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return ctx.attempt

    assert die_once.remote().result(timeout=20) == 2


def test_executor_killed_mid_call_without_retries_is_executor_lost(
    fresh_app: stratus.App,
) -> None:
    @fresh_app.function(retries=0)
    def die(ctx: stratus.Context) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @fresh_app.function
    def ok(ctx: stratus.Context) -> str:
        return "ok"

    with pytest.raises(stratus.ExecutorLost):
        die.remote().result(timeout=20)
    assert ok.remote().result(timeout=10) == "ok"
    assert wait_until(lambda: _pool_ready(fresh_app, "die"))  # its pool was refilled


def test_executor_killed_from_outside_during_a_call(fresh_app: stratus.App, tmp_path: Path) -> None:
    @fresh_app.function(retries=2)
    def slow_pid(ctx: stratus.Context, marker: str) -> tuple[int, int]:
        if ctx.attempt == 1:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(30)
        return os.getpid(), ctx.attempt

    marker = tmp_path / "running-on"
    busy = slow_pid.remote(str(marker))
    assert wait_until(lambda: marker.exists() and marker.read_text() != "")
    victim = int(marker.read_text())
    os.kill(victim, signal.SIGKILL)
    pid, attempt = busy.result(timeout=30)
    assert attempt == 2 and pid != victim


def test_dag_step_killed_is_retried(fresh_app: stratus.App) -> None:
    @fresh_app.function(retries=2)
    def first(ctx: stratus.Context, x: int) -> int:
        return x + 1

    @fresh_app.function(retries=2)
    def second(ctx: stratus.Context, x: int) -> int:
        if ctx.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 10

    dag = fresh_app.dag("fragile", first >> second)
    assert dag.remote(1).result(timeout=30) == 20


def _busy_forever() -> int:
    while True:
        pass


def _ready_pids(app: stratus.App) -> set[int]:
    return {e.pid for e in app.status().executors if e.state == "ready"}


def _pool_ready(app: stratus.App, function: str) -> bool:
    return any(p.function == function and p.ready >= 1 for p in app.status().pools)
