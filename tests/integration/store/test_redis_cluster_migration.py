"""Slot migration mid-commit on a real Redis Cluster: nothing acknowledged lost, nothing
applied twice, nothing half visible, no intent left behind.

Threads commit serializable read-modify-write transactions, each on two keys of two
shards (two-phase commit), appending a token of its own to both values. Meanwhile the
test moves the hash slot of every shard to another master the way ``redis-cli --cluster
reshard`` does (``SETSLOT IMPORTING/MIGRATING``, ``MIGRATE ... KEYS`` one key at a time,
``SETSLOT NODE``), so that a shard's keys are split between two nodes while commits run:
its scripts meet ASK and TRYAGAIN. Afterwards each token is in both values of its pair
once if its commit was acknowledged, in neither if it reported a conflict, and in both or
neither if it raised (a typed ``StoreUnavailable``); a reader never saw the two values of
a pair differ; and no shard holds a lock or a prepared transaction.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import redis_cluster
from stratus._exceptions import StoreUnavailable
from stratus.store import Put, Transaction
from stratus.store.redis_cluster import RedisClusterStore

SHARDS = 4
THREADS = 3


def concat(old: bytes | None, value: bytes) -> bytes:
    return (old or b"") + value


@dataclass
class Outcomes:
    """What the committers were told, token by token."""

    acknowledged: set[bytes] = field(default_factory=set)
    refused: set[bytes] = field(default_factory=set)  # a conflict: not applied
    failed: set[bytes] = field(default_factory=set)  # raised: applied whole or not at all
    errors: list[BaseException] = field(default_factory=list)  # untyped: a bug
    torn: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pairs_across_shards(store: RedisClusterStore) -> list[tuple[str, str]]:
    """A pair of keys per thread, on two different shards each, together on every shard."""
    by_shard: dict[int, list[str]] = {}
    for i in range(1000):
        by_shard.setdefault(store.shard_of(f"k{i}"), []).append(f"k{i}")
    return [(by_shard[t % SHARDS][t], by_shard[(t + 1) % SHARDS][t]) for t in range(THREADS)]


class Committers(redis_cluster.Workload):
    """``THREADS`` threads committing token appends to their pair; one thread reading
    every pair, checking that the two values of a pair are the same."""

    def __init__(self, store: RedisClusterStore, pairs: list[tuple[str, str]]) -> None:
        committers = (functools.partial(self._commit, t) for t in range(len(pairs)))
        super().__init__(*committers, self._read)
        self.store = store
        self.pairs = pairs
        self.seen = Outcomes()

    def _commit(self, thread: int) -> None:
        a, b = self.pairs[thread]
        seen = self.seen
        for n in range(1_000_000):
            if self.stopping.is_set():
                return
            token = f"<{thread}.{n}>".encode()
            try:
                rows = self.store.get_many([a, b])
                txn = Transaction(
                    reads={a: rows[a].version, b: rows[b].version},
                    writes=[
                        Put(a, concat(rows[a].value, token)),
                        Put(b, concat(rows[b].value, token)),
                    ],
                )
                result = self.store.commit(txn)
            except StoreUnavailable:
                with seen.lock:
                    seen.failed.add(token)
                continue
            except Exception as exc:  # not a typed store error
                with seen.lock:
                    seen.errors.append(exc)
                    seen.failed.add(token)
                continue
            with seen.lock:
                (seen.acknowledged if result.ok else seen.refused).add(token)

    def _read(self) -> None:
        keys = [key for pair in self.pairs for key in pair]
        while not self.stopping.is_set():
            try:
                rows = self.store.get_many(keys)
            except StoreUnavailable:
                continue
            except Exception as exc:
                with self.seen.lock:
                    self.seen.errors.append(exc)
                continue
            for a, b in self.pairs:
                if rows[a].value != rows[b].value:
                    with self.seen.lock:
                        self.seen.torn.append((rows[a].value, rows[b].value))

    def acks(self) -> int:
        return len(self.seen.acknowledged)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[redis_cluster.Cluster]:
    """A cluster of its own: its slots are moved."""
    with redis_cluster.serve(tmp_path) as cluster:
        yield cluster


def wait_no_intents(store: RedisClusterStore, timeout: float = 30.0) -> None:
    """Recover until no shard holds a lock or a prepared transaction."""
    client = store._link.open()
    deadline = time.monotonic() + timeout
    while True:
        store.recover()
        left = {
            index: (client.hlen(shard.txns), client.hlen(shard.locks), client.hlen(shard.plocks))
            for index, shard in enumerate(store._layout.keys)
        }
        if not any(any(counts) for counts in left.values()):
            return
        assert time.monotonic() < deadline, f"intents left behind: {left}"
        time.sleep(0.05)


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_commits_across_a_slot_migration_apply_once_and_whole(
    cluster: redis_cluster.Cluster, wait_replicas: int
) -> None:
    options = {"shards": SHARDS, "lock_timeout": 2.0, "wait_replicas": wait_replicas}
    with RedisClusterStore(cluster.url, concat, namespace="moving", **options) as store:
        pairs = pairs_across_shards(store)
        client = store._link.open()
        slots = [client.keyslot(shard.tag) for shard in store._layout.keys]
        moved_to: dict[int, int] = {}
        with Committers(store, pairs) as committers:
            committers.wait_acks(50)
            for _ in range(2):  # every shard's slot moves twice, among live commits
                for slot in slots:
                    masters = cluster.masters()
                    source = cluster.master_of(slot)
                    target = masters[(masters.index(source) + 1) % len(masters)]
                    assert cluster.migrate_slot(slot, target) > 0
                    moved_to[slot] = target
                    committers.wait_acks(10)
        seen = committers.seen
        assert seen.torn == []
        assert {slot: cluster.master_of(slot) for slot in slots} == moved_to
        wait_no_intents(store)
        rows = store.get_many([key for pair in pairs for key in pair])
        for thread, (a, b) in enumerate(pairs):
            assert rows[a].value == rows[b].value, "half a transaction applied"
            tokens = (rows[a].value or b"").replace(b">", b">\n").split()
            mine = {
                t
                for t in seen.acknowledged | seen.refused | seen.failed
                if t.startswith(f"<{thread}.".encode())
            }
            assert len(tokens) == len(set(tokens)), "a commit applied twice"
            assert {t for t in seen.acknowledged if t in mine} <= set(tokens), (
                "an acknowledged commit lost"
            )
            assert not set(tokens) & seen.refused, "a refused commit applied"
            assert set(tokens) <= mine
        assert {f"{type(exc).__name__}: {exc}" for exc in seen.errors} == set(), "an untyped error"
