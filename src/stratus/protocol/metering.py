"""Metering records: one per invocation attempt, as stored (no I/O).

A record says who ran (invocation, function, version, DAG step, tenant, attempt, where),
how long it waited, warmed up and ran, what it is billed, what it used, and how it
ended. Records are encoded with msgpack as arrays (fields may be appended with
defaults, never reordered) and stored in *batches*: the concatenation of
``<u32 length><record>`` entries, the same bytes an executor's spool holds.

Billing follows AWS Lambda's rules: the run time is rounded *up* to the next
millisecond, and GB-seconds are billed milliseconds / 1000 x requested memory / 1024.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Literal

import msgspec

Outcome = Literal["ok", "error", "timeout", "conflict", "lost"]
"""How an attempt ended: returned; raised (or its result could not be sent); ran past
its timeout; kept conflicting; its executor died (billed up to the crash)."""

DEFAULT_MEMORY_MB = 128
"""Memory billed for a function that requests none (``memory_mb <= 0``): Lambda's minimum."""

TENANT = "default"
"""The tenant of every invocation until tenants exist."""

_LEN = struct.Struct("<I")

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds (seconds) of the run-time histogram buckets; a last one is +Inf."""


class InvocationRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The meter's record of one attempt of one invocation (or DAG step).

    Durations are in nanoseconds; ``started_ns`` is wall-clock (``time.time_ns``).
    ``cold_start_ns`` is fetching and building the code on first use in an executor;
    ``spawn_ns`` is starting the executor itself when the call had to wait for it (0
    until pools start executors on demand). ``kv_read_bytes`` counts bytes fetched from
    the store (cache misses); ``fs_*`` stay 0 until the file system reports them.
    """

    invocation_id: str
    function: str
    version: int
    attempt: int
    executor_id: str
    outcome: Outcome
    started_ns: int
    run_ns: int
    memory_mb: int
    node: int = -1  # the DAG step, -1 for a plain call
    dag: str = ""
    tenant: str = TENANT
    queue_ns: int = 0
    cold_start_ns: int = 0
    spawn_ns: int = 0
    cpu_ns: int = 0
    peak_rss_kb: int = 0
    runs: int = 1  # runs of the function in this attempt (serializable/causal re-runs)
    kv_reads: int = 0
    kv_writes: int = 0
    kv_read_bytes: int = 0
    kv_write_bytes: int = 0
    fs_reads: int = 0
    fs_writes: int = 0
    fs_read_bytes: int = 0
    fs_write_bytes: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def billed_ms(self) -> int:
        """The run time rounded up to the next millisecond."""
        return billed_ms(self.run_ns)

    @property
    def gb_seconds(self) -> float:
        return gb_seconds(self.billed_ms, self.memory_mb)

    @property
    def retries(self) -> int:
        """How many earlier attempts of this invocation there were."""
        return self.attempt - 1

    @property
    def identity(self) -> tuple[str, int, int, str]:
        """What makes a record unique: the same attempt is never billed twice."""
        return (self.invocation_id, self.attempt, self.node, self.executor_id)


def billed_ms(run_ns: int) -> int:
    """``run_ns`` rounded up to whole milliseconds (0 ns bills 0 ms).

    >>> billed_ms(27_550_000)
    28
    """
    return -(-max(run_ns, 0) // 1_000_000)


def gb_seconds(billed: int, memory_mb: int) -> float:
    """GB-seconds of ``billed`` milliseconds at ``memory_mb`` (Lambda: MB / 1024).

    >>> gb_seconds(28, 1024)
    0.028
    """
    memory = memory_mb if memory_mb > 0 else DEFAULT_MEMORY_MB
    return billed / 1000 * memory / 1024


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(InvocationRecord)


def encode_entry(record: InvocationRecord) -> bytes:
    """One batch entry: the record's length, then the record."""
    body = _encoder.encode(record)
    return _LEN.pack(len(body)) + body


def encode_batch(records: list[InvocationRecord]) -> bytes:
    return b"".join(encode_entry(r) for r in records)


def iter_batch(data: bytes | memoryview) -> Iterator[InvocationRecord]:
    """The records of a batch, in order; a torn last entry (a crash while it was written)
    ends the batch."""
    view = memoryview(data)
    at, end = 0, len(view)
    while at + _LEN.size <= end:
        (size,) = _LEN.unpack_from(view, at)
        if size == 0 or at + _LEN.size + size > end:
            return
        try:
            yield _decoder.decode(view[at + _LEN.size : at + _LEN.size + size])
        except msgspec.DecodeError:
            return
        at += _LEN.size + size
