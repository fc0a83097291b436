"""Exactly-once effects under a crash between commit and reply (docs/reliability.md).

The executors of these clusters run with ``STRATUS_TEST_EXIT_AFTER_COMMIT`` naming a
function: attempt 1 of that function SIGKILLs its executor right after its commit, before
the reply, as a crash there would. The caller retries on another executor, which must find
the invocation's record and answer its result without running it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratus
from stratus.lattice import Counter
from stratus.protocol import keys

DIES = "dies_after_commit"


@pytest.fixture
def crashing_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[stratus.App]:
    monkeypatch.setenv("STRATUS_TEST_EXIT_AFTER_COMMIT", DIES)
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2) as app:
        yield app


def log_lines(app: stratus.App) -> list[str]:
    with app.fs.transaction() as fs:
        return fs.path("/log.txt").read_text().splitlines() if fs.exists("/log.txt") else []


def test_a_crash_after_commit_applies_the_call_once_and_answers_its_result(
    crashing_app: stratus.App,
) -> None:
    app = crashing_app

    def body(ctx: Any, x: int) -> int:
        # A writer per attempt: a second application would count 2.
        writer = f"{ctx.invocation_id}/{ctx.attempt}"
        ctx.kv.merge("calls", Counter().increment(writer))
        ctx.kv.incr("incremented", x)
        with ctx.fs.open("/log.txt", "a") as f:
            f.write(f"{x}\n")
        return x * 10

    fn = app.function(body, name=DIES)
    assert fn.remote(4).result(timeout=60) == 40
    assert log_lines(app) == ["4"]  # the append happened once
    assert app.kv.get("calls") == 1
    assert app.kv.get("incremented") == 4
    # The record of the invocation is the platform's: users do not see it.
    listed = app.kv.keys("")
    assert not [k for k in listed if keys.is_reserved(k)]


def test_a_result_too_large_to_keep_is_a_typed_error_after_the_crash(
    crashing_app: stratus.App,
) -> None:
    app = crashing_app

    def body(ctx: Any) -> bytes:
        with ctx.fs.open("/log.txt", "a") as f:
            f.write("big\n")
        return b"x" * 100_000

    fn = app.function(body, name=DIES)
    with pytest.raises(stratus.ResultLost, match="applied"):
        fn.remote().result(timeout=60)
    assert log_lines(app) == ["big"]


def test_calls_that_do_not_crash_are_unaffected(crashing_app: stratus.App) -> None:
    app = crashing_app

    @app.function
    def append(ctx: Any, x: int) -> int:
        with ctx.fs.open("/log.txt", "a") as f:
            f.write(f"{x}\n")
        return x

    assert [append.remote(i).result(timeout=60) for i in range(3)] == [0, 1, 2]
    assert log_lines(app) == ["0", "1", "2"]


def test_incr_counts_every_call_once_and_the_counter_stays_small(app: stratus.App) -> None:
    @app.function
    def visit(ctx: Any, n: int) -> None:
        ctx.kv.incr("visits", n)

    futures = [visit.remote(1) for _ in range(60)] + [visit.remote(-1) for _ in range(10)]
    for future in futures:
        future.result(timeout=60)
    app.kv.incr("visits", 5)
    app.kv.incr("visits")
    assert app.kv.get("visits") == 56
    counter = app.kv.get_lattice("visits")
    assert isinstance(counter, Counter)
    assert len(counter.positive) <= 4  # one writer per executor (and the coordinator)
    with pytest.raises(stratus.ConfigurationError, match="int"):
        app.kv.incr("visits", 1.5)  # type: ignore[arg-type]


def test_a_dag_whose_sink_dies_after_commit_applies_every_step_once(
    crashing_app: stratus.App,
) -> None:
    app = crashing_app

    @app.function
    def first(ctx: Any, x: int) -> int:
        ctx.kv.incr("steps")  # carried to the sink, committed there
        return x + 1

    def sink(ctx: Any, x: int) -> int:
        ctx.kv.incr("steps")
        with ctx.fs.open("/log.txt", "a") as f:
            f.write(f"{x}\n")
        return x * 2

    pipeline = app.dag("pipeline", first >> app.function(sink, name=DIES))
    assert pipeline.remote(1).result(timeout=60) == 4
    assert app.kv.get("steps") == 2
    assert log_lines(app) == ["2"]
