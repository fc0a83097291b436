"""Metering on a real cluster: totals equal the calls made, also when executors die."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import alive, wait_until
from stratus.client import usage
from stratus.protocol.metering import InvocationRecord


def records(app: stratus.App) -> list[InvocationRecord]:
    return usage.fetch(app._client)


def wait_records(app: stratus.App, count: int, function: str) -> list[InvocationRecord]:
    """The records of ``function`` once there are ``count`` (they are flushed in batches)."""
    found: list[InvocationRecord] = []

    def enough() -> bool:
        found[:] = [r for r in records(app) if r.function == function]
        return len(found) >= count

    assert wait_until(enough, timeout=30), f"{len(found)} records of {function}, not {count}"
    return found


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[stratus.App]:
    """A cluster with one executor: every call lands on the executor we kill."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:
        yield app


def test_totals_equal_the_calls_made(fresh_app: stratus.App) -> None:
    app = fresh_app

    @app.function(memory_mb=256)
    def plain(ctx: stratus.Context, x: int) -> int:
        return x + 1

    @app.function(memory_mb=1024)
    def writer(ctx: stratus.Context, x: int) -> int:
        ctx.kv.put(f"w/{x}", "v" * 100)
        return x

    @app.function(memory_mb=512)
    def sleeper(ctx: stratus.Context, seconds: float) -> None:
        time.sleep(seconds)

    @app.function
    def boom(ctx: stratus.Context) -> None:
        raise ValueError("no")

    for i in range(20):
        assert plain.remote(i).result(timeout=30) == i + 1
    for i in range(5):
        writer.remote(i).result(timeout=30)
    elapsed = []
    for _ in range(3):
        t = time.perf_counter_ns()
        sleeper.remote(0.03).result(timeout=30)
        elapsed.append(time.perf_counter_ns() - t)
    for _ in range(3):
        with pytest.raises(stratus.RemoteError):
            boom.remote().result(timeout=30)
    pipeline = app.dag("pipe", plain >> writer)
    pipeline.remote(1).result(timeout=30)

    plains = wait_records(app, 21, "plain")
    writers = wait_records(app, 6, "writer")
    sleepers = wait_records(app, 3, "sleeper")
    booms = wait_records(app, 3, "boom")
    time.sleep(0.5)  # nothing more may come: a record too many would show now
    everything = records(app)
    assert len(everything) == 21 + 6 + 3 + 3
    assert len({r.identity for r in everything}) == len(everything)

    for r in everything:
        assert r.billed_ms == math.ceil(r.run_ns / 1e6)
        assert r.gb_seconds == pytest.approx(r.billed_ms / 1000 * r.memory_mb / 1024)
        assert r.tenant == "default" and r.retries == 0
    assert {r.memory_mb for r in plains} == {256}
    assert {r.outcome for r in booms} == {"error"}
    assert {r.outcome for r in plains + writers + sleepers} == {"ok"}
    for r, took in zip(sorted(sleepers, key=lambda r: r.started_ns), elapsed, strict=True):
        assert 30_000_000 <= r.run_ns <= took  # ran at least the sleep, within the round trip
        assert r.billed_ms >= 30
    in_dag = [r for r in plains + writers if r.dag == "pipe"]
    assert sorted(r.node for r in in_dag) == [0, 1]
    committed = [r for r in writers if r.kv_writes]
    assert len(committed) == 6 and all(r.kv_write_bytes > 100 for r in committed)
    assert sum(r.cold_start_ns + r.spawn_ns > 0 for r in plains) >= 1  # its pool started

    result = app.usage(period="all")
    for name, made, errors in [
        ("plain", 21, 0),
        ("writer", 6, 0),
        ("sleeper", 3, 0),
        ("boom", 3, 3),
    ]:
        row = result.function(name)
        mine = [r for r in everything if r.function == name]
        assert (row.calls, row.errors) == (made, errors)
        assert row.billed_ms == sum(r.billed_ms for r in mine)
        assert row.gb_seconds == pytest.approx(sum(r.gb_seconds for r in mine))
    assert result.total.calls == 33
    assert result.total.cost == pytest.approx(
        33 * 0.20 / 1e6 + result.total.gb_seconds * 0.0000166667
    )
    assert app.usage("boom").total.calls == 3
    assert app.usage(since=time.time_ns() + 10**9).total.calls == 0
    assert not [k for k in app.kv.keys("") if "meter" in k]  # the platform's keys stay hidden


def test_the_write_counts_of_a_commit_reach_the_record(fresh_app: stratus.App) -> None:
    app = fresh_app

    @app.function(volume="meter-counts")
    def both(ctx: stratus.Context, size: int) -> None:
        ctx.kv.put("counted", "v" * 100)
        ctx.fs.write_bytes("/counted", b"x" * size)

    @app.function(volume="meter-counts")
    def reader(ctx: stratus.Context) -> int:
        return len(ctx.fs.read_bytes("/counted")) + len(ctx.kv.get("counted") or "")

    both.remote(5000).result(timeout=30)
    assert reader.remote().result(timeout=30) == 5100
    (wrote,) = wait_records(app, 1, "both")
    (read,) = wait_records(app, 1, "reader")
    assert (wrote.outcome, wrote.kv_writes) == ("ok", 1) and wrote.kv_write_bytes > 100
    assert wrote.fs_writes > 0 and wrote.fs_write_bytes >= 5000
    assert (read.kv_writes, read.fs_writes, read.fs_write_bytes) == (0, 0, 0)
    assert read.fs_reads > 0 and read.kv_reads == 1


def test_a_call_whose_executor_is_killed_is_billed_until_the_kill(
    solo: stratus.App, tmp_path: Path
) -> None:
    app = solo

    @app.function
    def quick(ctx: stratus.Context) -> int:
        return 1

    @app.function(retries=0, timeout=120, memory_mb=2048)
    def hang(ctx: stratus.Context, path: str) -> None:
        Path(path).write_text(str(os.getpid()))
        time.sleep(60)

    for _ in range(10):
        quick.remote().result(timeout=30)  # records the executor may hold when it dies
    marker = tmp_path / "pid"
    issued = time.time_ns()
    future = hang.remote(str(marker))
    assert wait_until(marker.exists, timeout=30)
    seen = time.time_ns()
    pid = int(marker.read_text())
    assert pid in [e.pid for e in app.status().executors]
    time.sleep(0.05)
    killed = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(stratus.ExecutorLost):
        future.result(timeout=30)

    (lost,) = wait_records(app, 1, "hang")
    found = time.time_ns()
    assert (lost.outcome, lost.invocation_id, lost.memory_mb) == (
        "lost",
        future.invocation_id,
        2048,
    )
    assert killed - seen <= lost.run_ns <= found - issued
    assert lost.gb_seconds == pytest.approx(lost.billed_ms / 1000 * 2)
    assert len(wait_records(app, 10, "quick")) == 10
    row = app.usage(period="all").function("hang")
    assert (row.calls, row.errors, row.lost) == (1, 1, 1)


def test_a_retried_attempt_is_billed_as_well(solo: stratus.App, tmp_path: Path) -> None:
    app = solo

    @app.function(retries=1, timeout=120)
    def once(ctx: stratus.Context, path: str) -> int:
        if ctx.attempt == 1:
            Path(path).write_text(str(os.getpid()))
            time.sleep(60)
        return ctx.attempt

    marker = tmp_path / "pid"
    future = once.remote(str(marker))
    assert wait_until(marker.exists, timeout=30)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert future.result(timeout=60) == 2
    attempts = sorted(wait_records(app, 2, "once"), key=lambda r: r.attempt)
    assert [(r.attempt, r.retries, r.outcome) for r in attempts] == [(1, 0, "lost"), (2, 1, "ok")]
    assert attempts[0].executor_id != attempts[1].executor_id


def test_a_timed_out_call_is_billed_its_timeout(solo: stratus.App) -> None:
    app = solo

    @app.function(retries=0, timeout=0.3)
    def slow(ctx: stratus.Context) -> None:
        time.sleep(10)

    with pytest.raises(stratus.InvocationTimeout):
        slow.remote().result(timeout=30)
    (r,) = wait_records(app, 1, "slow")
    assert r.outcome == "timeout"
    assert 300_000_000 <= r.run_ns < 10_000_000_000
    assert r.billed_ms >= 300


def test_a_metrics_address_that_cannot_be_served_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(stratus.ConnectionFailed, match=r"cannot serve metrics on '127\.0\.0\.1:99"):
        stratus.connect(data_dir=tmp_path / "stratus", metrics="127.0.0.1:99999")


def test_what_a_dead_cluster_was_running_is_billed_at_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "stratus"
    marker = tmp_path / "pid"
    app = stratus.connect(data_dir=data_dir, executors=1)
    try:

        @app.function
        def quick(ctx: stratus.Context) -> int:
            return 1

        @app.function(retries=0)
        def hang(ctx: stratus.Context, path: str) -> None:
            Path(path).write_text(str(os.getpid()))
            time.sleep(60)

        for _ in range(5):
            quick.remote().result(timeout=30)
        future = hang.remote(str(marker))
        assert wait_until(marker.exists, timeout=30)
        executor = int(marker.read_text())
        assert app._cluster is not None
        os.kill(app._cluster.process.pid, signal.SIGKILL)  # the coordinator: all goes down
        with pytest.raises(stratus.StratusError):
            future.result(timeout=30)
        assert wait_until(lambda: not alive(executor), timeout=30)
    finally:
        app.close()

    with stratus.connect(data_dir=data_dir, executors=1) as again:
        (lost,) = wait_records(again, 1, "hang")
        assert (lost.outcome, lost.invocation_id) == ("lost", future.invocation_id)
        assert len(wait_records(again, 5, "quick")) == 5
        assert not list((data_dir / "meter").glob("*.spool"))[1:]  # only the new executor's


def test_a_tenants_calls_are_metered_as_the_tenants(fresh_app: stratus.App) -> None:
    """A function registered as ``acme::f`` is tenant acme's: its records say so, for the
    dashboard's and ``stratus tenant list``'s usage per tenant."""
    mine = fresh_app.function(name="acme::echo")(lambda ctx, x: x)
    ours = fresh_app.function(name="echo")(lambda ctx, x: x)
    assert mine.remote(1).result(timeout=30) == ours.remote(1).result(timeout=30) == 1
    assert [r.tenant for r in wait_records(fresh_app, 1, "acme::echo")] == ["acme"]
    assert [r.tenant for r in wait_records(fresh_app, 1, "echo")] == ["default"]
