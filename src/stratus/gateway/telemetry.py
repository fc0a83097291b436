"""What the dashboard shows, computed from metering records: a state machine without I/O.

Theory of operation: the gateway tails the cluster's metering records (every attempt of
every invocation, ``docs/metering.md``) and feeds them here with ``add``; ``snapshot(now)``
turns what was seen into the page's numbers. Records reach the store within ~250 ms of
their call, so the page lags the cluster by about that much.

- per function, over the last ``window_s``: calls per second, p50/p99 of the run time,
  errors (attempts that did not end ``ok``), cold starts (attempts that built the code);
- per function, a series of ``bucket_s`` buckets over the last ``history_s``: calls,
  errors, p50, and the pool size as last seen (``pools``);
- the last ``recent`` attempts, newest first;
- usage and cost per function and per tenant since the gateway started, priced like
  ``app.usage()``.

Memory is bounded: ``history_s / bucket_s`` buckets per function, ``recent`` records,
and at most ``max_functions`` functions (the least recently called are dropped).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from stratus.client.usage import Prices
from stratus.protocol.metering import InvocationRecord

_NS = 1_000_000_000


@dataclass(slots=True)
class _Bucket:
    start_ns: int
    calls: int = 0
    errors: int = 0
    cold: int = 0
    run_ns: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Function:
    buckets: deque[_Bucket] = field(default_factory=deque)
    pool: int = 0
    calls: int = 0
    errors: int = 0
    gb_seconds: float = 0.0
    billed_ms: int = 0


class Telemetry:
    """Live numbers of a cluster's functions, from its metering records (module doc)."""

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        bucket_s: float = 5.0,
        history_s: float = 300.0,
        recent: int = 50,
        max_functions: int = 500,
        prices: Prices | None = None,
    ) -> None:
        self.window_ns = int(window_s * _NS)
        self.bucket_ns = int(bucket_s * _NS)
        self.history_ns = int(history_s * _NS)
        self.max_functions = max_functions
        self.prices = prices or Prices()
        self._functions: OrderedDict[str, _Function] = OrderedDict()
        self._tenants: dict[str, list[float]] = {}  # tenant -> [calls, gb_seconds]
        self._recent: deque[InvocationRecord] = deque(maxlen=recent)
        self._seen: set[tuple[str, int, int, str]] = set()  # a batch re-read bills once
        self._seen_order: deque[tuple[str, int, int, str]] = deque()

    def add(self, records: list[InvocationRecord]) -> None:
        for r in sorted(records, key=lambda r: r.started_ns):
            if r.identity in self._seen:
                continue
            self._remember(r.identity)
            fn = self._functions.pop(r.function, None) or _Function()
            self._functions[r.function] = fn  # most recently called last
            if len(self._functions) > self.max_functions:
                self._functions.popitem(last=False)
            bucket = self._bucket(fn, r.started_ns)
            failed = r.outcome != "ok"
            if bucket is not None:
                bucket.calls += 1
                bucket.errors += failed
                bucket.cold += r.cold_start_ns > 0
                bucket.run_ns.append(r.run_ns)
            fn.calls += 1
            fn.errors += failed
            fn.gb_seconds += r.gb_seconds
            fn.billed_ms += r.billed_ms
            tenant = self._tenants.setdefault(r.tenant, [0, 0.0])
            tenant[0] += 1
            tenant[1] += r.gb_seconds
            self._recent.appendleft(r)

    def pools(self, sizes: dict[str, int]) -> None:
        """The pool size of each function, as the cluster reports it now."""
        for name, fn in self._functions.items():
            fn.pool = sizes.get(name, 0)
        for name, size in sizes.items():
            if name not in self._functions:
                self._functions[name] = _Function(pool=size)

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        """The page's numbers at ``now_ns`` (wall clock), JSON-ready."""
        functions = []
        for name, fn in self._functions.items():
            self._expire(fn, now_ns)
            window = [
                b for b in fn.buckets if b.start_ns + self.bucket_ns > now_ns - self.window_ns
            ]
            runs = sorted(ns for b in window for ns in b.run_ns)
            calls = sum(b.calls for b in window)
            functions.append(
                {
                    "name": name,
                    "calls_per_s": round(calls / (self.window_ns / _NS), 2),
                    "p50_ms": _ms(_percentile(runs, 50)),
                    "p99_ms": _ms(_percentile(runs, 99)),
                    "errors": sum(b.errors for b in window),
                    "cold_starts": sum(b.cold for b in window),
                    "pool": fn.pool,
                    "series": [
                        {
                            "t": b.start_ns // 1_000_000,
                            "calls": b.calls,
                            "errors": b.errors,
                            "p50_ms": _ms(_percentile(sorted(b.run_ns), 50)),
                        }
                        for b in fn.buckets
                    ],
                    "usage": self._usage(fn.calls, fn.gb_seconds) | {"errors": fn.errors},
                }
            )
        return {
            "now_ms": now_ns // 1_000_000,
            "functions": functions,
            "recent": [_recent(r) for r in self._recent],
            "tenants": [
                {"tenant": t} | self._usage(int(calls), gb_s)
                for t, (calls, gb_s) in sorted(self._tenants.items())
            ],
            "currency": self.prices.currency,
        }

    def _usage(self, calls: int, gb_seconds: float) -> dict[str, Any]:
        cost = self.prices.cost(calls, gb_seconds)
        return {"calls": calls, "gb_seconds": round(gb_seconds, 6), "cost": round(cost, 8)}

    def _bucket(self, fn: _Function, started_ns: int) -> _Bucket | None:
        start = started_ns - started_ns % self.bucket_ns
        if fn.buckets and start < fn.buckets[0].start_ns:
            return None  # older than the history kept: counted in the totals only
        for bucket in reversed(fn.buckets):
            if bucket.start_ns == start:
                return bucket
            if bucket.start_ns < start:
                break
        bucket = _Bucket(start)
        fn.buckets.append(bucket)
        if len(fn.buckets) > 1 and fn.buckets[-2].start_ns > start:  # out of order: sort
            fn.buckets = deque(sorted(fn.buckets, key=lambda b: b.start_ns))
        return bucket

    def _expire(self, fn: _Function, now_ns: int) -> None:
        while fn.buckets and fn.buckets[0].start_ns < now_ns - self.history_ns:
            fn.buckets.popleft()

    def _remember(self, identity: tuple[str, int, int, str]) -> None:
        self._seen.add(identity)
        self._seen_order.append(identity)
        if len(self._seen_order) > 100_000:
            self._seen.discard(self._seen_order.popleft())


def _percentile(ordered: list[int], q: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def _ms(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def _recent(r: InvocationRecord) -> dict[str, Any]:
    return {
        "invocation_id": r.invocation_id,
        "function": r.function,
        "attempt": r.attempt,
        "outcome": r.outcome,
        "started_ms": r.started_ns // 1_000_000,
        "run_ms": _ms(r.run_ns),
        "cold_start_ms": _ms(r.cold_start_ns),
        "executor_id": r.executor_id,
        "tenant": r.tenant,
    }
