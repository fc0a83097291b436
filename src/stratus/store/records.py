"""Invocation records: what makes an invocation's effects happen exactly once.

Theory of operation
-------------------
An executor may die after its invocation committed and before its reply reached the
caller, who then retries the call (same invocation id, next attempt) on another executor.
Running it again would apply its writes twice. So every commit that writes something also
writes, *in the same store transaction*, a record under the invocation's own key (one per
DAG step that commits), and reads that key at version 0 ("absent"): the record is written
with the effects, or neither is, on every backend, since it is just one more guarded write.

    what happens                              outcome
    ---------------------------------------   --------------------------------------------
    attempt commits, record absent            effects + record written together
    attempt commits, record present           conflict on the record key: nothing written;
      (an earlier attempt got there first)    the attempt answers the recorded result
    retry (attempt > 1) starts, record found  not run at all: it answers the recorded result
    retry starts, no record                   the earlier attempt applied nothing: run it

The record keeps the encoded result (up to ``MAX_RECORDED_RESULT`` bytes; a larger one is
replaced by a marker, and a retry then gets ``ResultLost``: applied, result not kept), the
attempt that committed, when, and for a DAG step that is not the sink the kv state it hands
on. A read-only invocation writes no record: running it twice has no effect.

Records are purged (no tombstone left) once older than a retention window
(:func:`expired`); a window far longer than any retry horizon (see docs/reliability.md)
means no retry can arrive after its record is gone.
"""

from __future__ import annotations

import msgspec

from stratus.store.base import Store

MAX_RECORDED_RESULT = 64 * 1024
"""The largest result (plus carried DAG state) kept in a record, in bytes."""

DEFAULT_RETENTION = 3600.0
"""Seconds a record is kept: far past the default retry horizon, 3 x (300 s + 2 s)."""


class InvocationRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The record of one committed invocation (or committing DAG step).

    ``result`` is the encoded result, or None when it was too large to keep; ``carried``
    the kv state a DAG step hands to the next one (empty otherwise).
    """

    attempt: int
    committed_ms: int
    result: bytes | None
    carried: bytes = b""

    @classmethod
    def of(cls, attempt: int, now_ms: int, result: bytes, carried: bytes = b"") -> InvocationRecord:
        """A record keeping ``result`` and ``carried``, or a lost-result marker if too big."""
        if len(result) + len(carried) > MAX_RECORDED_RESULT:
            return cls(attempt, now_ms, None)
        return cls(attempt, now_ms, result, carried)

    def encode(self) -> bytes:
        return _ENCODER.encode(self)


def decode(data: bytes) -> InvocationRecord:
    """The record stored as ``data`` (``msgspec.DecodeError`` if it is not one)."""
    return _DECODER.decode(data)


def read(store: Store, key: str) -> InvocationRecord | None:
    """The record at ``key`` from the store itself (no cache), or None."""
    entry = store.get(key)
    return None if entry.value is None else decode(entry.value)


def expired(store: Store, prefix: str, now_ms: int, retention: float) -> list[str]:
    """The keys of the records under ``prefix`` committed more than ``retention`` s ago."""
    names = store.keys(prefix)
    cutoff = now_ms - int(retention * 1000)
    old: list[str] = []
    for start in range(0, len(names), 500):
        for key, entry in store.get_many(names[start : start + 500]).items():
            if entry.value is None:
                continue
            try:
                committed = decode(entry.value).committed_ms
            except msgspec.DecodeError:
                committed = 0  # not a record: nothing depends on it
            if committed <= cutoff:
                old.append(key)
    return old


def collect(store: Store, prefix: str, now_ms: int, retention: float) -> int:
    """Remove the expired records under ``prefix`` (no tombstones: the store does not grow
    with the invocations); how many were removed."""
    old = expired(store, prefix, now_ms, retention)
    return sum(store.purge(old[start : start + 500]) for start in range(0, len(old), 500))


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(InvocationRecord)
