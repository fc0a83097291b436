"""Multi-shard transactions and failover of the Redis Cluster store, on a real cluster.

A committer "crashes" in-process: a patched step raises a ``BaseException`` that the
store's cleanup does not catch, so its locks and staged writes stay in Redis exactly as a
killed process would leave them; another store object (another client) then meets them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import redis_cluster
from stratus.store import Entry, Put, Transaction
from stratus.store.redis_cluster import RedisClusterStore


def concat(old: bytes | None, value: bytes) -> bytes:
    return (old or b"") + value


def namespace_of(path: Path) -> str:
    """A namespace of its own for each test."""
    return "rc-" + hashlib.sha256(str(path).encode()).hexdigest()[:20]


class Crash(BaseException):
    """The committer dies here."""


@pytest.fixture
def pair(redis_cluster_url: str, tmp_path: Path) -> Iterator[tuple[RedisClusterStore, ...]]:
    """A committer and a reader on one fresh namespace of 4 shards, short lock deadlines."""
    options = {"namespace": namespace_of(tmp_path), "shards": 4, "lock_timeout": 0.5}
    with (
        RedisClusterStore(redis_cluster_url, concat, **options) as one,
        RedisClusterStore(redis_cluster_url, concat, **options) as two,
    ):
        yield one, two


def on_two_shards(store: RedisClusterStore) -> tuple[str, str]:
    """Two keys on different shards."""
    first = "k0"
    for i in range(1, 100):
        if store.shard_of(f"k{i}") != store.shard_of(first):
            return first, f"k{i}"
    raise AssertionError("no two shards")


def test_a_reader_never_sees_half_a_multi_shard_transaction(
    pair: tuple[RedisClusterStore, ...],
) -> None:
    writer, reader = pair
    a, b = on_two_shards(writer)
    writer.commit(Transaction(reads={}, writes=[Put(a, b"0"), Put(b, b"0")]))
    stop = threading.Event()
    torn: list[dict[str, Entry]] = []

    def read() -> None:
        while not stop.is_set():
            seen = reader.get_many([a, b])
            if seen[a].value != seen[b].value:
                torn.append(seen)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(1, 150):
            value = str(n).encode()
            assert writer.commit(Transaction(reads={}, writes=[Put(a, value), Put(b, value)])).ok
    finally:
        stop.set()
        thread.join(timeout=30)
    assert torn == []
    assert reader.get(a).value == reader.get(b).value == b"149"


def test_a_committer_dead_before_its_decision_is_aborted_by_readers(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)
    committer.put(a, b"old")

    def crash(*args: object) -> bytes:
        raise Crash

    monkeypatch.setattr(committer, "_decide_now", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={a: 1}, writes=[Put(a, b"new"), Put(b, b"new")]))
    # Prepared, undecided: readers see the state before it, never half of it.
    assert reader.get_many([a, b]) == {a: Entry(b"old", reader.get(a).version), b: Entry(None, 0)}
    # A write waits for the deadline (0.5 s), then aborts it and goes through.
    assert reader.put(a, b"other") > 0
    assert reader.get_many([a, b])[b] == Entry(None, 0)
    assert reader.recover() == 0  # nothing left to settle


def test_a_committer_dead_after_its_decision_is_rolled_forward_by_readers(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)

    def crash(*args: object) -> int:
        raise Crash

    monkeypatch.setattr(committer, "_finish_on", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={}, writes=[Put(a, b"1"), Put(b, b"2")]))
    # Committed (the decision is written) but applied nowhere: a reader finishes it.
    seen = reader.get_many([a, b])
    assert (seen[a].value, seen[b].value) == (b"1", b"2")
    assert reader.recover() == 0


def test_recover_settles_abandoned_transactions_past_their_deadline(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)

    def crash(*args: object) -> bytes:
        raise Crash

    monkeypatch.setattr(committer, "_decide_now", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={}, writes=[Put(a, b"x"), Put(b, b"y")]))
    deadline = time.monotonic() + 10
    settled = 0
    while settled < 2 and time.monotonic() < deadline:  # two shards hold it
        settled += reader.recover()
        time.sleep(0.05)
    assert settled == 2
    assert reader.get_many([a, b]) == {a: Entry(None, 0), b: Entry(None, 0)}


def test_acknowledged_puts_survive_a_master_failover(tmp_path: Path) -> None:
    """A cluster of its own (it is failed over): every put acknowledged after WAIT 1 is
    readable once a replica took over its master's slots mid-load."""
    with redis_cluster.serve(tmp_path) as cluster:
        store = RedisClusterStore(
            cluster.url, concat, namespace="failover", shards=6, wait_replicas=1
        )
        acknowledged: dict[str, bytes] = {}
        maybe: dict[str, set[bytes]] = {}  # puts that failed: applied or not
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                key, value = f"k{n % 300}", str(n).encode()
                n += 1
                try:
                    store.put(key, value)
                except Exception:  # not acknowledged: may or may not be there
                    maybe.setdefault(key, set()).add(value)
                    continue
                acknowledged[key] = value
                maybe.pop(key, None)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            while len(acknowledged) < 50:
                time.sleep(0.01)
            cluster.failover(cluster.replicas()[0])
            done = len(acknowledged)
            deadline = time.monotonic() + 30
            while len(acknowledged) < done + 50 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join(timeout=30)
        got = store.get_many(list(acknowledged))
        lost = {
            k: v
            for k, v in acknowledged.items()
            if got[k].value != v and got[k].value not in maybe.get(k, set())
        }
        assert lost == {}
        store.close()
