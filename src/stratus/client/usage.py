"""Usage: totals of the metering records per function and period, priced.

``aggregate`` is pure (records in, a ``Usage`` out); ``fetch`` pulls the records from a
cluster page by page (the coordinator only hands out stored batches, so summing many
records costs it nothing) and reports progress. ``app.usage()`` and ``stratus usage``
both end here.

Prices default to AWS Lambda's public on-demand x86 prices (us-east-1): $0.20 per
million requests and $0.0000166667 per GB-second (https://aws.amazon.com/lambda/pricing/).
Every attempt is a request (a retry is billed again, as on Lambda).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Literal

import msgspec

from stratus._exceptions import ConfigurationError
from stratus.protocol import messages as m
from stratus.protocol.metering import InvocationRecord, iter_batch

if TYPE_CHECKING:
    from stratus.client.client import Client

Period = Literal["all", "day", "hour"]
PRICE_SOURCE = "https://aws.amazon.com/lambda/pricing/ (x86, on demand)"


class Prices(msgspec.Struct, frozen=True):
    """A price table: per request and per GB-second. Defaults: AWS Lambda, x86."""

    per_million_requests: float = 0.20
    per_gb_second: float = 0.0000166667
    currency: str = "USD"
    source: str = PRICE_SOURCE

    def cost(self, calls: int, gb_seconds: float) -> float:
        return calls * self.per_million_requests / 1e6 + gb_seconds * self.per_gb_second


class UsageRow(msgspec.Struct, frozen=True):
    """Totals of one function in one period (``function`` "*" and ``period`` "all" for
    the grand total)."""

    function: str
    period: str
    calls: int
    errors: int  # attempts that did not end "ok" (lost and timed out included)
    lost: int  # attempts whose executor died (billed until its death)
    billed_ms: int
    gb_seconds: float
    cpu_ms: float
    cost: float


class Usage(msgspec.Struct, frozen=True):
    """What ``app.usage()`` returns: rows sorted by function then period, and the total."""

    rows: list[UsageRow]
    total: UsageRow
    prices: Prices
    since_ns: int
    until_ns: int
    records: int

    def function(self, name: str) -> UsageRow:
        """The total of one function over the whole span (zeros if it made no calls)."""
        rows = [r for r in self.rows if r.function == name]
        return _sum(rows, name, "all", self.prices)


def period_of(started_ns: int, period: Period) -> str:
    """The UTC period a record falls in: ``2026-11-27``, ``2026-11-27T03:00`` or ``all``."""
    if period == "all":
        return "all"
    when = dt.datetime.fromtimestamp(started_ns / 1e9, dt.UTC)
    return when.strftime("%Y-%m-%d" if period == "day" else "%Y-%m-%dT%H:00")


def aggregate(
    records: Iterable[InvocationRecord],
    *,
    function: str | None = None,
    since_ns: int = 0,
    until_ns: int | None = None,
    period: Period = "day",
    prices: Prices | None = None,
) -> Usage:
    """Totals per (function, period) of the records started in ``[since_ns, until_ns)``."""
    prices = prices or Prices()
    until = until_ns if until_ns is not None else 2**63 - 1
    cells: dict[tuple[str, str], list[float]] = {}
    seen: set[tuple[str, int, int, str]] = set()
    count = 0
    for r in records:
        if (function and r.function != function) or not since_ns <= r.started_ns < until:
            continue
        if r.identity in seen:  # defensive: one attempt is billed once
            continue
        seen.add(r.identity)
        count += 1
        cell = cells.setdefault((r.function, period_of(r.started_ns, period)), [0] * 6)
        cell[0] += 1
        cell[1] += r.outcome != "ok"
        cell[2] += r.outcome == "lost"
        cell[3] += r.billed_ms
        cell[4] += r.gb_seconds
        cell[5] += r.cpu_ns / 1e6
    rows = [
        UsageRow(
            fn,
            when,
            int(c[0]),
            int(c[1]),
            int(c[2]),
            int(c[3]),
            c[4],
            c[5],
            prices.cost(int(c[0]), c[4]),
        )
        for (fn, when), c in sorted(cells.items())
    ]
    total = _sum(rows, "*", "all", prices)
    return Usage(rows, total, prices, since_ns, until_ns or 0, count)


def _sum(rows: list[UsageRow], function: str, period: str, prices: Prices) -> UsageRow:
    calls = sum(r.calls for r in rows)
    gb_s = sum(r.gb_seconds for r in rows)
    return UsageRow(
        function,
        period,
        calls,
        sum(r.errors for r in rows),
        sum(r.lost for r in rows),
        sum(r.billed_ms for r in rows),
        gb_s,
        sum(r.cpu_ms for r in rows),
        prices.cost(calls, gb_s),
    )


_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now_ns: int | None = None) -> int:
    """``--since``: a span back from now (``90s``, ``15m``, ``2h``, ``7d``, ``1w``) or an
    ISO date or time (``2026-11-27``, ``2026-11-27T03:00``, UTC unless it says); in ns."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    match = _SPAN.match(text.strip())
    if match:
        return now_ns - int(float(match[1]) * _UNIT[match[2]] * 1e9)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"bad --since {text!r}: use a span like 15m, 2h, 7d or a date like 2026-11-27"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


def fetch_page(
    client: Client, after: str = "", limit: int = 256
) -> tuple[list[InvocationRecord], str]:
    """The records of up to ``limit`` batches stored after the batch key ``after``, and
    the key to go on from (``after`` itself when there was nothing new)."""
    reply = client.request(partial(m.MeterRead, after=after, limit=limit))
    assert isinstance(reply, m.MeterPage)
    records = [r for batch in reply.batches for r in iter_batch(batch)]
    return records, reply.last or after


def fetch(
    client: Client, *, progress: Callable[[int, int], None] | None = None, page: int = 256
) -> list[InvocationRecord]:
    """Every metering record the cluster's store holds; ``progress(done, total)`` is
    called after each page of batches."""
    records: list[InvocationRecord] = []
    after, done = "", 0
    while True:
        reply = client.request(partial(m.MeterRead, after=after, limit=page))
        assert isinstance(reply, m.MeterPage)
        for batch in reply.batches:
            records.extend(iter_batch(batch))
        done += len(reply.batches)
        if progress is not None:
            progress(done, reply.total)
        if not reply.last or len(reply.batches) < page:
            return records
        after = reply.last
