"""Remote failures as a caller sees them: their types, tracebacks, DAG steps and retries."""

from __future__ import annotations

from pathlib import Path

import pytest

import stratus


def test_a_remote_key_error_is_caught_by_except_key_error(app: stratus.App) -> None:
    @app.function
    def lookup(ctx: stratus.Context, key: str) -> int:
        return {"a": 1}[key]

    with pytest.raises(KeyError) as caught:
        lookup.remote("b").result(timeout=10)
    error = caught.value
    assert isinstance(error, stratus.RemoteError)
    assert error.remote_type == "builtins.KeyError" and error.function == "lookup"
    assert lookup.remote("a").result(timeout=10) == 1


def test_a_user_exception_class_is_caught_by_its_own_type(app: stratus.App) -> None:
    class OutOfStock(Exception):
        def __init__(self, item: str, left: int) -> None:
            super().__init__(item, left)

    @app.function
    def buy(ctx: stratus.Context, item: str) -> None:
        raise OutOfStock(item, 0)

    with pytest.raises(OutOfStock) as caught:
        buy.remote("tea").result(timeout=10)
    assert isinstance(caught.value, stratus.RemoteError)
    assert isinstance(caught.value.exception, OutOfStock)


def test_the_remote_traceback_shows_the_users_file_line_and_source(app: stratus.App) -> None:
    @app.function
    def divide(ctx: stratus.Context, x: int) -> float:
        return x / 0  # the line the traceback must show

    with pytest.raises(ZeroDivisionError) as caught:
        divide.remote(1).result(timeout=10)
    trace = caught.value.remote_traceback  # type: ignore[attr-defined]
    assert "<dynamic-code>" not in trace
    assert f'File "{__file__}"' in trace and "in divide" in trace
    assert "return x / 0  # the line the traceback must show" in trace
    assert "stratus/server/executor.py" not in trace  # the platform's frames are left out


def test_a_failed_dag_step_is_named(app: stratus.App) -> None:
    @app.function
    def parse(ctx: stratus.Context, x: int) -> int:
        return x

    @app.function
    def check(ctx: stratus.Context, x: int) -> int:
        raise ValueError(f"bad {x}")

    @app.function
    def store(ctx: stratus.Context, x: int) -> int:
        return x

    dag = app.dag("checked", parse >> check >> store)
    with pytest.raises(ValueError) as caught:
        dag.remote(3).result(timeout=10)
    error = caught.value
    assert isinstance(error, stratus.RemoteError)
    assert (error.function, error.step, error.step_index) == ("checked", "check", 1)
    assert "DAG step 1: check" in str(error)


def attempts_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_retry_on_retries_named_exceptions_with_attempts_in_sequence(
    app: stratus.App, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"

    @app.function(retries=3, retry_on=(IOError,))
    def flaky(ctx: stratus.Context, path: str) -> int:
        with open(path, "a") as f:  # outside stratus: failed attempts leave it behind
            f.write(f"{ctx.attempt}\n")
        if ctx.attempt < 3:
            raise FileNotFoundError("not yet")  # a subclass of the IOError named
        return ctx.attempt

    assert flaky.remote(str(log)).result(timeout=20) == 3
    assert attempts_in(log) == [1, 2, 3]


def test_retry_on_gives_up_after_the_retries(app: stratus.App, tmp_path: Path) -> None:
    log = tmp_path / "attempts"

    @app.function(retries=2, retry_on=ConnectionError)
    def down(ctx: stratus.Context, path: str) -> None:
        with open(path, "a") as f:
            f.write(f"{ctx.attempt}\n")
        raise ConnectionRefusedError("still down")

    with pytest.raises(ConnectionRefusedError):
        down.remote(str(log)).result(timeout=20)
    assert attempts_in(log) == [1, 2, 3]


def test_exceptions_not_in_retry_on_are_not_retried(app: stratus.App, tmp_path: Path) -> None:
    log = tmp_path / "attempts"

    @app.function(retries=3, retry_on=(IOError,))
    def wrong(ctx: stratus.Context, path: str) -> None:
        with open(path, "a") as f:
            f.write(f"{ctx.attempt}\n")
        raise ValueError("not an I/O error")

    with pytest.raises(ValueError):
        wrong.remote(str(log)).result(timeout=20)
    assert attempts_in(log) == [1]


def test_retry_on_must_name_exception_classes(app: stratus.App) -> None:
    with pytest.raises(stratus.ConfigurationError, match="retry_on"):

        @app.function(retry_on=("IOError",))  # type: ignore[arg-type]
        def f(ctx: stratus.Context) -> None:
            pass


def test_functions_the_platform_cannot_call_are_refused_at_registration(
    app: stratus.App,
) -> None:
    def no_ctx() -> int:
        return 1

    async def async_no_ctx() -> int:
        return 1

    def generator_no_ctx() -> object:
        yield 1

    for target in [no_ctx, async_no_ctx, generator_no_ctx]:
        with pytest.raises(stratus.UnsupportedFunction, match="Context"):
            app.function(target)
    names = {f.name for f in app.status().functions}
    assert not names & {"no_ctx", "async_no_ctx", "generator_no_ctx"}

    @app.function
    def fine(ctx: stratus.Context) -> int:
        return 2

    assert fine.remote().result(timeout=10) == 2
