"""The dashboard's numbers from metering records, at explicit times: no cluster, no clock."""

from __future__ import annotations

from stratus.gateway.telemetry import Telemetry
from stratus.protocol.metering import InvocationRecord

S = 1_000_000_000
MS = 1_000_000


def record(n: int, at_s: float, run_ms: float, *, fn: str = "f", outcome: str = "ok",
           cold: bool = False, tenant: str = "default") -> InvocationRecord:  # fmt: skip
    return InvocationRecord(
        f"c.{n}", fn, 1, 1, "x1", outcome, int(at_s * S), int(run_ms * MS), 128,  # type: ignore[arg-type]
        tenant=tenant, cold_start_ns=5 * MS if cold else 0,
    )  # fmt: skip


def function(snapshot: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in snapshot["functions"] if f["name"] == name)


def test_rates_latencies_errors_and_cold_starts_over_the_window() -> None:
    t = Telemetry(window_s=10, bucket_s=5)
    t.add([record(i, 1000 + i * 0.1, run_ms=1 + i % 10) for i in range(100)])  # 10 s of calls
    t.add([record(100, 1009.5, 50, outcome="error", cold=True)])
    f = function(t.snapshot(1010 * S), "f")
    assert f["calls_per_s"] == 10.1
    assert f["p50_ms"] == 6.0 and f["p99_ms"] == 10.0
    assert (f["errors"], f["cold_starts"]) == (1, 1)
    later = function(t.snapshot(1030 * S), "f")  # the window moved past every call
    assert (later["calls_per_s"], later["p50_ms"], later["errors"]) == (0.0, None, 0)
    assert later["usage"]["calls"] == 101  # totals stay


def test_a_record_read_twice_counts_once() -> None:
    t = Telemetry()
    t.add([record(1, 1000, 3)])
    t.add([record(1, 1000, 3), record(2, 1000.5, 3)])
    assert function(t.snapshot(1001 * S), "f")["usage"]["calls"] == 2
    assert [r["invocation_id"] for r in t.snapshot(1001 * S)["recent"]] == ["c.2", "c.1"]


def test_history_is_bounded_and_ordered() -> None:
    t = Telemetry(bucket_s=5, history_s=60)
    t.add([record(i, 1000 + i, 1) for i in range(0, 300, 7)])
    series = function(t.snapshot(1300 * S), "f")["series"]
    assert len(series) <= 13
    assert [b["t"] for b in series] == sorted(b["t"] for b in series)


def test_usage_and_cost_per_tenant_and_pools() -> None:
    t = Telemetry(max_functions=2)
    t.add([record(1, 1000, 1000, tenant="a"), record(2, 1000, 1000, fn="g", tenant="b")])
    t.add([record(3, 1001, 1, fn="h", tenant="b")])  # the least recently called goes
    t.pools({"h": 3})
    snap = t.snapshot(1002 * S)
    assert [f["name"] for f in snap["functions"]] == ["g", "h"]
    assert function(snap, "h")["pool"] == 3
    tenants = {x["tenant"]: x for x in snap["tenants"]}
    assert (tenants["a"]["calls"], tenants["b"]["calls"]) == (1, 2)
    assert tenants["a"]["gb_seconds"] == 0.125  # 1 s at 128 MB
    assert tenants["a"]["cost"] > 0
