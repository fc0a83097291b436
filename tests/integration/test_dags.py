"""DAGs: chains, fan-out and fan-in, with results passed executor to executor."""

from __future__ import annotations

import os

import pytest

import stratus


@pytest.fixture(scope="module")
def fns(app: stratus.App) -> dict[str, stratus.Function]:
    @app.function
    def incr(ctx: stratus.Context, x: int) -> int:
        return x + 1

    @app.function
    def square(ctx: stratus.Context, x: int) -> int:
        return x * x

    @app.function
    def negate(ctx: stratus.Context, x: int) -> int:
        return -x

    @app.function
    def add(ctx: stratus.Context, a: int, b: int) -> int:
        return a + b

    @app.function
    def where(ctx: stratus.Context, x: object) -> tuple[object, int]:
        return x, os.getpid()

    @app.function
    def explode(ctx: stratus.Context, x: int) -> int:
        raise ValueError(f"bad {x}")

    return {f.name: f for f in (incr, square, negate, add, where, explode)}


def test_chain(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    dag = app.dag("chain", fns["incr"] >> fns["square"])
    assert [dag.remote(x).result(timeout=10) for x in range(5)] == [1, 4, 9, 16, 25]


def test_the_same_function_twice(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    incr, square = fns["incr"], fns["square"]
    assert app.dag("twice", incr >> incr).remote(1).result(timeout=10) == 3
    dag = app.dag("again", square >> incr >> square >> [incr, fns["negate"]] >> fns["add"])
    assert dag.remote(2).result(timeout=10) == ((2 * 2 + 1) ** 2 + 1) - (2 * 2 + 1) ** 2


def test_fan_out_and_fan_in(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    dag = app.dag("diamond", fns["incr"] >> [fns["square"], fns["negate"]] >> fns["add"])
    assert dag.remote(3).result(timeout=10) == 16 - 4


def test_fan_in_of_several_sources(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    dag = app.dag("two-sources", [fns["square"], fns["negate"]] >> fns["add"])
    assert dag.remote(5).result(timeout=10) == 25 - 5


def test_dag_by_name_and_from_a_function(
    app: stratus.App, fns: dict[str, stratus.Function]
) -> None:
    app.dag("named", fns["incr"] >> fns["square"])
    assert app.lookup("named").remote(1).result(timeout=10) == 4

    @app.function
    def via_ctx(ctx: stratus.Context, x: int) -> int:
        return int(ctx.call("named", x).result())

    assert via_ctx.remote(2).result(timeout=10) == 9


def test_many_concurrent_dag_calls(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    dag = app.dag("many", fns["incr"] >> fns["square"] >> fns["where"])
    futures = [dag.remote(i) for i in range(300)]
    results = [f.result(timeout=30) for f in futures]
    assert [value for value, _ in results] == [(i + 1) ** 2 for i in range(300)]


def test_error_in_a_step_reaches_the_caller(
    app: stratus.App, fns: dict[str, stratus.Function]
) -> None:
    dag = app.dag("broken", fns["incr"] >> fns["explode"] >> fns["square"])
    with pytest.raises(stratus.RemoteError) as info:
        dag.remote(1).result(timeout=10)
    assert info.value.remote_type == "builtins.ValueError"
    assert "bad 2" in str(info.value)
    assert isinstance(info.value.exception, ValueError)


def test_a_dag_needs_one_sink(app: stratus.App, fns: dict[str, stratus.Function]) -> None:
    with pytest.raises(stratus.ConfigurationError):
        app.dag("two-sinks", fns["incr"] >> [fns["square"], fns["negate"]])
