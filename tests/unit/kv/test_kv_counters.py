"""``incr``: writer ids lent per transaction, totals advanced only by committed increments."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.kv import KVCache, KVTransaction, merge_encoded
from stratus.kv.counters import CounterWriters
from stratus.lattice import Counter, HybridClock, decode
from stratus.store import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(merge_encoded)


def txn(store: MemoryStore, counters: CounterWriters) -> KVTransaction:
    kv = KVTransaction(KVCache(store), HybridClock("x1"))
    kv.counters = counters
    return kv


def commit(kv: KVTransaction, store: MemoryStore) -> None:
    ok = store.commit(kv.transaction(validate=False)).ok
    kv.settle_counters(ok)


def stored(store: MemoryStore, key: str) -> Counter:
    value = store.get(key).value
    assert value is not None
    counter = decode(value)
    assert isinstance(counter, Counter)
    return counter


def test_increments_add_up_within_and_across_transactions(store: MemoryStore) -> None:
    counters = CounterWriters("x1")
    kv = txn(store, counters)
    kv.incr("n")
    kv.incr("n", 4)
    kv.incr("m", -2)
    assert kv.get("n") == 5  # reads see the transaction's own increments
    commit(kv, store)
    for _ in range(3):
        kv = txn(store, counters)
        kv.incr("n")
        commit(kv, store)
    assert stored(store, "n").value == 8 and stored(store, "m").value == -2
    # One writer id did it all: the state does not grow with the invocations.
    assert len(stored(store, "n").positive) == 1


def test_an_uncommitted_increment_counts_nothing_and_leaves_the_id_usable(
    store: MemoryStore,
) -> None:
    counters = CounterWriters("x1")
    kv = txn(store, counters)
    kv.incr("n", 10)
    kv.settle_counters(False)  # say it conflicted, or the function raised
    kv = txn(store, counters)
    kv.incr("n")
    commit(kv, store)
    assert stored(store, "n").value == 1


def test_nested_transactions_get_their_own_ids_so_both_count(store: MemoryStore) -> None:
    counters = CounterWriters("x1")
    outer, inner = txn(store, counters), txn(store, counters)
    outer.incr("n")
    inner.incr("n")  # a nested invocation runs and commits while the outer one is open
    commit(inner, store)
    commit(outer, store)
    assert stored(store, "n").value == 2
    assert len(stored(store, "n").positive) == 2


def test_an_unknown_outcome_retires_the_id(store: MemoryStore) -> None:
    counters = CounterWriters("x1")
    kv = txn(store, counters)
    kv.incr("n")
    store.commit(kv.transaction(validate=False))  # applied, but say the reply was lost
    kv.settle_counters(None)
    kv = txn(store, counters)
    kv.incr("n")  # a new id: building on unknown totals could lose this increment
    commit(kv, store)
    assert stored(store, "n").value == 2


def test_incr_takes_an_int(store: MemoryStore) -> None:
    kv = txn(store, CounterWriters("x1"))
    for bad in (1.5, "1", True):
        with pytest.raises(ConfigurationError, match="int"):
            kv.incr("n", bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="counters"):
        KVTransaction(KVCache(store), HybridClock("x1")).incr("n")
