"""The chaos suite, short: each fault of ``bench/chaos.py`` on a fresh cluster running the
three workloads (counter, bank, file appends), then its invariants.

Real processes throughout (coordinator, fork server, executors, a redis-server with AOF),
faults at seeded random moments. Nothing here asserts a speed: only invariants (no
duplicate, no lost acknowledged effect, a constant bank total, no call past its bound,
the cluster answers after the faults, no process left after close). A run goes on until
its fault struck at least once, so no run passes for want of a fault.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SEED = 7
DURATION = 2.5  # seconds of calls per fault; the whole file takes ~50 s here


@pytest.fixture(scope="module")
def chaos() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import chaos

        yield chaos
    finally:
        sys.path.remove(str(BENCH))


FAULTS = [
    "kill_executor",
    "stop_executor",
    "disk_full",
    "hostile",
    "kill_executor_redis",
    "kill_redis",
    "stop_redis",
    "partition_iptables",
]


@pytest.mark.system
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", FAULTS)
def test_the_invariants_hold_under(chaos: ModuleType, fault: str, tmp_path: Path) -> None:
    assert set(FAULTS) == set(chaos.FAULTS)
    settings = chaos.Settings(seed=SEED, duration=DURATION)
    run: dict[str, Any] = chaos.run_one(fault, settings, tmp_path / "run", SEED)
    if "skipped" in run:
        pytest.skip(run["skipped"])
    assert chaos.violations(run) == [], run
    assert run["episodes"] >= 1
    for workload in run["workloads"].values():
        assert workload["duplicates"] == 0 and workload["lost"] == 0
        assert workload["acknowledged"] > 0  # the cluster served between the faults
    assert run["workloads"]["bank"]["total"] == chaos.ACCOUNTS * chaos.OPENING_BALANCE
    assert run["leftover_processes"] == []


# --- what the chaos runs found (seed 1, `bench/chaos.py --faults kill_redis`), reproduced
# deterministically. Not fixed here: they live in other areas (client/invocation.py, the
# executor's store errors); each test states the behaviour it expects.


@pytest.fixture
def redis_aof(chaos: ModuleType, tmp_path: Path) -> Iterator[Any]:
    server = chaos.Redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.system
@pytest.mark.timeout(120)
def test_a_call_failed_by_a_start_error_after_a_lost_attempt_says_it_may_be_applied(
    tmp_path: Path, redis_aof: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    import stratus

    monkeypatch.setenv("STRATUS_TEST_EXIT_AFTER_COMMIT", "transfer_then_die")
    admin = redis.Redis(port=redis_aof.port)
    admin.ping()  # connected now: it stays so when new connections are refused
    with stratus.connect(data_dir=tmp_path / "s", executors=1, store=redis_aof.url) as app:

        def body(ctx: Any, port: int) -> None:
            ctx.kv.incr("applied")
            # New connections are refused from now on (those open stay): the executor
            # that replaces this one cannot reach the store and fails to start.
            redis.Redis(port=port).config_set("maxclients", 1)

        fn = app.function(body, name="transfer_then_die", retries=2, timeout=30)
        # Attempt 1 commits, then its executor dies before replying (the test hook); the
        # retry waits for a new executor, which cannot start.
        with pytest.raises(stratus.InvocationError) as failed:
            fn.remote(redis_aof.port).result(timeout=60)
        admin.config_set("maxclients", 10000)
        assert app.kv.get("applied") == 1  # it was applied (once) ...
        # ... so the caller must not be told that it did not run.
        assert not isinstance(failed.value, stratus.ExecutorStartFailed), failed.value


@pytest.mark.system
@pytest.mark.timeout(120)
def test_a_store_lost_during_a_read_is_store_unavailable_not_the_functions_error(
    tmp_path: Path, redis_aof: Any
) -> None:
    import stratus

    assert redis_aof.process is not None
    with stratus.connect(data_dir=tmp_path / "s", executors=1, store=redis_aof.url) as app:

        def body(ctx: Any, pid: int) -> Any:
            os.kill(pid, signal.SIGKILL)  # the store goes away mid-call
            return ctx.kv.get("never-cached")

        fn = app.function(body, name="read_while_the_store_dies", retries=0, timeout=30)
        with pytest.raises(stratus.StoreUnavailable):
            fn.remote(redis_aof.process.pid).result(timeout=60)
