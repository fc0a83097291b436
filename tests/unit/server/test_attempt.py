"""The life of one attempt (server/attempt.py), driven without an executor: a memory
store, real caches, the run driven as the executor drives it (send what the function
returned, throw in what it raised)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratus import _exceptions as exc
from stratus.fs import FsCache, Volumes
from stratus.kv import KVCache, KVTransaction, merge_encoded
from stratus.kv.counters import CounterWriters
from stratus.kv.values import codec_for
from stratus.lattice import HybridClock
from stratus.objects import ObjectStore
from stratus.protocol import errors, keys, serialization
from stratus.protocol import messages as m
from stratus.server import attempt
from stratus.server.attempt import AttemptOutcome, Attempts, Job
from stratus.server.context import Context, ImmediateKV
from stratus.server.metering import Meter
from stratus.store import MemoryStore, records
from stratus.store.feed import ChangeFeed

KEY = b"k" * 32


class Executor:
    """What an executor gives its attempts, over one memory store."""

    def __init__(self, data_dir: Path) -> None:
        self.store = MemoryStore(merge_encoded)
        values = codec_for(KEY)
        feed = ChangeFeed(self.store)
        self.kv_cache = KVCache(self.store, values=values, feed=feed, hidden=keys.PLATFORM)
        clock = HybridClock("e1")
        self.meter = Meter(str(data_dir), "c1", "e1", self.store)
        self.stuck: list[exc.StoreLockTimeout] = []
        self.attempts = Attempts(
            executor_id="e1",
            store=self.store,
            feed=feed,
            kv_cache=self.kv_cache,
            volumes=Volumes(self.store, cache=FsCache(self.store, feed=feed)),
            clock=clock,
            counters=CounterWriters("e1"),
            caller=None,  # type: ignore[arg-type]  # no nested calls here
            post=None,  # type: ignore[arg-type]  # nor mail
            kv_now=ImmediateKV(self.kv_cache, clock),
            objects=ObjectStore(self.store, KEY),
            meter=self.meter,
            max_payload=1 << 20,
            on_store_stuck=self.stuck.append,
            on_out_of_memory=lambda: None,
        )

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        attempt: int = 1,
        consistency: m.Consistency = "serializable",
    ) -> tuple[AttemptOutcome, int]:
        """Drive one attempt of ``fn`` to its outcome; also how many runs it took."""
        call = m.Call(1, "inv-1", "fn", 1, b"", attempt, None, "caller")
        options = m.FunctionOptions(consistency=consistency)
        metered = self.meter.begin(call, 0)
        runs = self.attempts.runs(Job(None, call, fn, options, args, {}, [], 0), metered)
        try:
            ctx, args, kwargs = next(runs)
            while True:
                try:
                    value = fn(ctx, *args, **kwargs)
                except BaseException as e:
                    ctx, args, kwargs = runs.throw(e)
                else:
                    ctx, args, kwargs = runs.send(value)
        except StopIteration as done:
            self.meter.end(metered, "ok")
            return done.value, metered.runs

    def stored(self, key: str) -> Any:
        """``key``'s committed value, as a new invocation reads it (None: absent)."""
        return KVTransaction(self.kv_cache, HybridClock("reader")).get(key, None)


@pytest.fixture
def executor(tmp_path: Path) -> Executor:
    return Executor(tmp_path)


def result(outcome: AttemptOutcome) -> Any:
    value, _ = outcome
    assert isinstance(value, bytes), value
    return serialization.loads(value, what="result")


def test_a_run_commits_its_writes_with_the_invocations_record(executor: Executor) -> None:
    def incr(ctx: Context, x: int) -> int:
        ctx.kv.put("x", x + 1)
        return x + 1

    outcome, runs = executor.run(incr, 1)
    assert (result(outcome), runs) == (2, 1)
    assert executor.stored("x") == 2
    record = records.read(executor.store, keys.invocation_record("inv-1", -1))
    assert record is not None and record.result == outcome[0]


def test_a_conflicting_commit_runs_the_function_again(executor: Executor) -> None:
    seen: list[Any] = []

    def read_then_write(ctx: Context) -> int:
        seen.append(ctx.kv.get("x", 0))
        if len(seen) == 1:  # someone else writes what this run read
            ctx.kv_now.put("x", 10)
        ctx.kv.put("y", 1)
        return len(seen)

    outcome, runs = executor.run(read_then_write)
    assert (result(outcome), runs, seen) == (2, 2, [0, 10])


def test_reads_that_change_in_every_run_end_in_conflict_error(executor: Executor) -> None:
    def always_raced(ctx: Context) -> None:
        ctx.kv_now.put("x", ctx.kv.get("x", 0) + 1)
        ctx.kv.put("y", 1)

    (outcome, _), runs = executor.run(always_raced)
    assert isinstance(outcome, m.ErrorInfo) and outcome.kind == "ConflictError"
    assert runs == attempt.SERIALIZABLE_ATTEMPTS
    assert executor.stored("y") is None  # nothing of the failed runs is visible


def test_a_retry_after_a_committed_attempt_answers_its_recorded_result(
    executor: Executor,
) -> None:
    calls: list[int] = []

    def once(ctx: Context) -> str:
        calls.append(ctx.attempt)
        ctx.kv.put("x", ctx.attempt)
        return f"attempt {ctx.attempt}"

    first, _ = executor.run(once, attempt=1)
    again, _ = executor.run(once, attempt=2)  # as if attempt 1 died before replying
    assert (result(again), calls, executor.stored("x")) == ("attempt 1", [1], 1)
    assert result(first) == "attempt 1"


def test_a_function_that_raises_commits_nothing_and_answers_its_error(
    executor: Executor,
) -> None:
    def fails(ctx: Context) -> None:
        ctx.kv.put("x", 1)
        raise KeyError("missing")

    (outcome, _), runs = executor.run(fails)
    assert isinstance(outcome, m.ErrorInfo) and runs == 1
    with pytest.raises(KeyError):
        raise errors.decode(outcome)
    assert executor.stored("x") is None
    assert records.read(executor.store, keys.invocation_record("inv-1", -1)) is None


def test_a_store_lock_timeout_is_a_typed_error_and_told_to_the_executor(
    executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stuck(txn: Any) -> Any:
        raise exc.StoreLockTimeout("state.db", 5.0, [1234])

    monkeypatch.setattr(executor.store, "commit", stuck)

    def writes(ctx: Context) -> int:
        ctx.kv.put("x", 1)
        return 1

    (outcome, _), _ = executor.run(writes)
    assert isinstance(outcome, m.ErrorInfo) and outcome.kind == "StoreLockTimeout"
    assert [e.holders for e in executor.stuck] == [[1234]]
