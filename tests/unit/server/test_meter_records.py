"""Metering records, batches, the executor's spool and its recovery, usage totals."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import msgspec
import pytest

from stratus import ConfigurationError
from stratus.client import usage
from stratus.kv.open import open_store
from stratus.protocol import keys
from stratus.protocol import messages as m
from stratus.protocol.metering import (
    DEFAULT_MEMORY_MB,
    InvocationRecord,
    billed_ms,
    encode_batch,
    encode_entry,
    gb_seconds,
    iter_batch,
)
from stratus.server import metering
from stratus.store.base import Merge, Put, Store, Transaction

T0 = int(dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC).timestamp() * 1e9)


def record(
    function: str = "f",
    *,
    invocation: str = "c1.1",
    attempt: int = 1,
    outcome: str = "ok",
    run_ns: int = 1_500_000,
    memory_mb: int = 1024,
    started_ns: int = T0,
) -> InvocationRecord:
    return InvocationRecord(
        invocation,
        function,
        1,
        attempt,
        "x1",
        outcome,
        started_ns,
        run_ns,
        memory_mb,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- billing


@pytest.mark.parametrize(
    ("run_ns", "billed"),
    [(0, 0), (1, 1), (999_999, 1), (1_000_000, 1), (1_000_001, 2), (27_550_000, 28)],
)
def test_billed_duration_rounds_up_to_the_millisecond(run_ns: int, billed: int) -> None:
    assert billed_ms(run_ns) == billed


def test_gb_seconds_follow_lambda() -> None:
    assert gb_seconds(28, 1024) == pytest.approx(0.028)  # Lambda's own example
    assert gb_seconds(1000, 512) == pytest.approx(0.5)
    assert gb_seconds(1000, 0) == pytest.approx(DEFAULT_MEMORY_MB / 1024)
    r = record(run_ns=27_550_000, memory_mb=1024)
    assert (r.billed_ms, r.gb_seconds, r.retries) == (28, pytest.approx(0.028), 0)


# --------------------------------------------------------------------------- batches


def test_a_batch_round_trips_and_a_torn_tail_ends_it() -> None:
    records = [record(invocation=f"c1.{i}", run_ns=i) for i in range(5)]
    data = encode_batch(records)
    assert list(iter_batch(data)) == records
    assert list(iter_batch(data[:-3])) == records[:4]  # the last entry was cut short
    assert list(iter_batch(data + b"\0" * 64)) == records  # zeros after: no entry


def test_records_decode_when_fields_are_appended() -> None:
    """Old records (fewer fields) still decode: new fields take their defaults."""
    full = msgspec.msgpack.encode(record())
    short = msgspec.msgpack.encode(msgspec.msgpack.decode(full)[:9])
    assert msgspec.msgpack.decode(short, type=InvocationRecord) == record()


# --------------------------------------------------------------------------- the spool


def call(invocation: str = "c1.1", function: str = "f", attempt: int = 1) -> m.Call:
    return m.Call(1, invocation, function, 3, b"", attempt, 10.0, "c1")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:{tmp_path / 'state.db'}")
    yield s  # type: ignore[misc]
    s.close()


def die(meter: metering.Meter) -> None:
    """What the death of the executor leaves: the spool as it is, and no lock on it."""
    meter._map.close()
    os.close(meter._fd)


def stored(store: Store) -> list[InvocationRecord]:
    out: list[InvocationRecord] = []
    for key in store.keys(keys.METER):
        out += iter_batch(store.get(key).value or b"")
    return out


def test_records_reach_the_store_on_flush_and_the_spool_goes_on_close(
    tmp_path: Path, store: Store
) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    for i in range(3):
        running = meter.begin(call(f"c1.{i}"), 256)
        meter.end(running, "ok")
    assert stored(store) == []
    meter.flush()
    assert [r.invocation_id for r in stored(store)] == ["c1.0", "c1.1", "c1.2"]
    running = meter.begin(call("c1.3"), 256)
    running.fs_reads, running.fs_write_bytes = 2, 4096  # what the file system reports
    meter.end(running, "error")
    assert meter.path.exists()
    meter.close()
    assert not meter.path.exists()
    last = stored(store)[-1]
    assert (last.invocation_id, last.outcome, last.memory_mb) == ("c1.3", "error", 256)
    assert (last.fs_reads, last.fs_write_bytes) == (2, 4096)
    assert len(store.keys(keys.METER)) == 2  # one batch per flush


def test_a_dead_executors_running_attempts_are_billed_until_its_death(
    tmp_path: Path, store: Store
) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    meter.end(meter.begin(call("c1.done"), 512), "ok")
    outer = meter.begin(call("c1.outer"), 512)
    meter.begin(call("c1.inner", attempt=2), 512)  # nested, running when we "die"
    path = meter.path
    started = outer.start.started_ns
    die(meter)  # nothing else runs
    n = metering.recover(
        path, store, died_ns=started + 7_000_000, timed_out=frozenset({"c1.inner"})
    )
    assert n == 3
    assert not path.exists()
    by_id = {r.invocation_id: r for r in stored(store)}
    assert by_id["c1.done"].outcome == "ok"
    assert by_id["c1.outer"].outcome == "lost"
    assert by_id["c1.outer"].run_ns == 7_000_000
    assert by_id["c1.outer"].billed_ms == 7
    assert (by_id["c1.inner"].outcome, by_id["c1.inner"].attempt) == ("timeout", 2)


def test_a_batch_stored_just_before_death_is_not_billed_twice(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    for i in range(2):
        meter.end(meter.begin(call(f"c1.{i}"), 128), "ok")
    # The flush's store write happened, then the process died before the header moved on.
    meter.settle()
    store.put(keys.meter_batch("cl", "x1", 0), meter._log())
    die(meter)
    assert metering.recover(meter.path, store, died_ns=T0) == 0
    assert sorted(r.invocation_id for r in stored(store)) == ["c1.0", "c1.1"]


def test_a_live_executors_spool_is_left_alone(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    meter.begin(call(), 128)
    assert metering.recover(meter.path, store) == 0
    assert metering.recover_all(meter.path.parent, store) == 0
    assert meter.path.exists()
    meter.close()


def test_the_counts_noted_after_a_commit_reach_the_record(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    running = meter.begin(call("c1.w"), 128)
    writes = [Put("k", b"vvvv"), Merge("s", b"abcdef")]
    assert store.commit(Transaction({}, writes)).ok
    meter.note_writes(running, writes)
    running.fs_writes, running.fs_write_bytes = 2, 4096
    meter.end(running, "ok", kv_reads=3)
    assert stored(store) == []  # not in the invocation's commit: the spool bills it
    meter.flush()
    assert store.keys(keys.METER) == [keys.meter_batch("cl", "x1", 0)]  # no key per call
    (done,) = stored(store)
    assert (done.invocation_id, done.outcome, done.kv_reads) == ("c1.w", "ok", 3)
    assert (done.kv_writes, done.kv_write_bytes) == (2, 10)
    assert (done.fs_writes, done.fs_write_bytes) == (2, 4096)
    assert meter.report()[0].calls == 1
    meter.close()


def test_an_attempt_killed_after_its_commit_is_billed_lost_once(
    tmp_path: Path, store: Store
) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    running = meter.begin(call("c1.w"), 128)
    assert store.commit(Transaction({}, [Put("k", b"v")])).ok
    meter.note_writes(running, [Put("k", b"v")])
    died = running.start.started_ns + 7_000_000
    die(meter)  # committed, but dead before ``end``
    assert metering.recover(meter.path, store, died_ns=died) == 1
    assert metering.recover(meter.path, store, died_ns=died) == 0  # the spool is gone
    assert store.get("k").value == b"v"
    (lost,) = stored(store)  # billed, not twice, and not zero
    assert (lost.invocation_id, lost.attempt, lost.outcome) == ("c1.w", 1, "lost")
    assert lost.run_ns == 7_000_000  # for the time it ran, until the death
    retry = metering.Meter(str(tmp_path), "cl", "x2", store)
    retry.end(retry.begin(call("c1.w", attempt=2), 128), "ok")
    retry.close()
    assert sorted((r.attempt, r.outcome) for r in stored(store)) == [(1, "lost"), (2, "ok")]


def test_a_commit_that_conflicts_notes_no_writes(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    store.put("k", b"new")
    running = meter.begin(call("c1.w"), 128)
    assert not store.commit(Transaction({"k": 0}, [Put("k", b"v")])).ok
    meter.end(running, "conflict", kv_reads=1)
    meter.close()
    (done,) = stored(store)
    assert (done.invocation_id, done.outcome, done.kv_reads, done.kv_writes) == (
        "c1.w",
        "conflict",
        1,
        0,
    )


def test_a_torn_entry_in_the_log_is_not_counted(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    meter.end(meter.begin(call("c1.0"), 128), "ok")
    entry = encode_entry(record(invocation="c1.torn"))
    at = metering._LOG_AT + meter._log_end
    meter._map[at : at + len(entry) // 2] = entry[: len(entry) // 2]  # header not moved
    die(meter)
    metering.recover(meter.path, store, died_ns=T0)
    assert [r.invocation_id for r in stored(store)] == ["c1.0"]


# --------------------------------------------------------------------------- usage


def test_usage_totals_per_function_and_period() -> None:
    hour = 3600 * 10**9
    records = [
        record("f", invocation="a", run_ns=1_200_000, memory_mb=1024),  # 2 ms
        record("f", invocation="b", run_ns=3_000_000, memory_mb=1024, started_ns=T0 + hour),
        record("f", invocation="c", outcome="lost", run_ns=10_000_000, memory_mb=1024),
        record("g", invocation="d", outcome="error", run_ns=1, memory_mb=0),  # 128 MB
        record("g", invocation="d", outcome="error", run_ns=1, memory_mb=0),  # same attempt
    ]
    prices = usage.Prices(per_million_requests=1e6, per_gb_second=10.0)  # easy arithmetic
    result = usage.aggregate(records, period="hour", prices=prices)
    assert [(r.function, r.period, r.calls) for r in result.rows] == [
        ("f", "2026-11-27T03:00", 2),
        ("f", "2026-11-27T04:00", 1),
        ("g", "2026-11-27T03:00", 1),
    ]
    f = result.function("f")
    assert (f.calls, f.errors, f.lost, f.billed_ms) == (3, 1, 1, 15)
    assert f.gb_seconds == pytest.approx(0.015)
    assert f.cost == pytest.approx(3 + 0.15)
    g = result.function("g")
    assert g.gb_seconds == pytest.approx(0.001 * 128 / 1024)
    assert result.total.calls == 4 and result.records == 4
    assert result.total.cost == pytest.approx(f.cost + g.cost)


def test_usage_filters_by_function_and_time() -> None:
    records = [record("f", invocation=str(i), started_ns=T0 + i * 10**9) for i in range(10)]
    records.append(record("g", invocation="g"))
    result = usage.aggregate(records, function="f", since_ns=T0 + 3 * 10**9, period="all")
    assert [(r.function, r.period, r.calls) for r in result.rows] == [("f", "all", 7)]
    assert usage.aggregate(records, until_ns=T0).total.calls == 0
    assert usage.aggregate([]).function("f").calls == 0


def test_default_prices_are_lambdas_x86_prices() -> None:
    prices = usage.Prices()
    assert prices.cost(1_000_000, 0) == pytest.approx(0.20)
    assert prices.cost(0, 1) == pytest.approx(0.0000166667)


def test_parse_since() -> None:
    now = T0
    assert usage.parse_since("90s", now) == now - 90 * 10**9
    assert usage.parse_since("2h", now) == now - 2 * 3600 * 10**9
    assert usage.parse_since("1w", now) == now - 7 * 86400 * 10**9
    assert usage.parse_since("2026-11-27", now) == T0 - 3 * 3600 * 10**9
    assert usage.parse_since("2026-11-27T03:00+01:00", now) == T0 - 3600 * 10**9
    with pytest.raises(ConfigurationError, match="since"):
        usage.parse_since("yesterday", now)


def test_an_attempt_that_timed_out_is_billed_once_as_a_timeout(
    tmp_path: Path, store: Store
) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    meter.abort(meter.begin(call("c1.slow"), 128), "timeout")  # then the executor exits
    die(meter)
    metering.recover(meter.path, store, died_ns=T0)
    assert [(r.invocation_id, r.outcome) for r in stored(store)] == [("c1.slow", "timeout")]


def test_an_attempt_that_ended_just_before_death_keeps_its_outcome_and_time(
    tmp_path: Path, store: Store
) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    running = meter.begin(call("c1.done"), 128)
    meter.end(running, "error")  # its reply may leave now; the record is logged later
    die(meter)
    assert metering.recover(meter.path, store, died_ns=T0 + 10**12) == 1
    (r,) = stored(store)
    assert (r.invocation_id, r.outcome, r.run_ns) == ("c1.done", "error", running.run_ns)


def test_records_are_logged_before_the_next_attempt_begins(tmp_path: Path, store: Store) -> None:
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    meter.end(meter.begin(call("c1.0"), 128), "ok")
    assert meter._log_end == 0  # ended, not yet logged: the reply goes first
    meter.begin(call("c1.1"), 128)  # same stack depth: the slot is freed first
    assert [r.invocation_id for r in iter_batch(meter._log())] == ["c1.0"]
    meter.close()


def test_overlapping_attempts_that_end_out_of_order_keep_their_slots(
    tmp_path: Path, store: Store
) -> None:
    """Async tasks end in any order: a new attempt must not take the slot of one still
    running, or a death would bill that one wrongly (or not at all)."""
    meter = metering.Meter(str(tmp_path), "cl", "x1", store)
    first = meter.begin(call("c1.a"), 128)
    meter.begin(call("c1.b"), 128)  # these run on when the executor dies
    meter.begin(call("c1.c"), 128)
    meter.end(first, "ok")
    meter.begin(call("c1.d"), 128)  # in the slot "a" left
    meter.begin(call("c1.e"), 128)  # not in "b"'s, which still runs
    die(meter)
    metering.recover(meter.path, store, died_ns=T0 + 10**12)
    outcomes = {r.invocation_id: r.outcome for r in stored(store)}
    lost = dict.fromkeys(["c1.b", "c1.c", "c1.d", "c1.e"], "lost")
    assert outcomes == {"c1.a": "ok", **lost}
