"""Names of the keys and files the platform itself keeps (no I/O).

Every key stratus writes for its own use starts with ``RESERVED`` so that it never
collides with a user's key; ``app.kv.keys()`` hides them. Build names here, never inline.
"""

from __future__ import annotations

RESERVED = "\x00stratus/"
"""Prefix of the platform's own keys: a NUL byte cannot start a key a user types."""

METER = RESERVED + "meter/"
"""Prefix of metering batches: ``METER + <cluster>/<executor>/<batch, 10 digits>``."""


def meter_batch(cluster_id: str, executor_id: str, batch: int) -> str:
    """The key of one executor's ``batch``-th batch of invocation records.

    Deterministic, so that recovering a batch after a crash rewrites the same key
    instead of billing its records twice.
    """
    return f"{METER}{cluster_id}/{executor_id}/{batch:010d}"


INVOCATIONS = RESERVED + "invocations/"
"""Prefix of the invocation records (``stratus.store.records``): exactly-once effects."""


def invocation_record(invocation_id: str, node: int = -1) -> str:
    """The key of the record of ``invocation_id`` (of its DAG step ``node``; -1: a call)."""
    return f"{INVOCATIONS}{invocation_id}/{node}"


def is_reserved(key: str) -> bool:
    """Whether ``key`` belongs to the platform rather than to a user."""
    return key.startswith(RESERVED)


# Files under the data directory.

METER_DIR = "meter"
"""Directory of the executors' metering spools: ``<cluster>-<executor>.spool``."""

LOGS_DIR = "logs"
"""Directory of the per-invocation logs: ``<cluster>-<executor>.jsonl`` (and ``.1``)."""


def spool_name(cluster_id: str, executor_id: str) -> str:
    return f"{cluster_id}-{executor_id}.spool"


def log_name(cluster_id: str, executor_id: str) -> str:
    return f"{cluster_id}-{executor_id}.jsonl"
