"""The kv layer over a memory store: transactions buffer, read their own writes and
commit atomically; the cache hits without the store and follows the change feed."""

from __future__ import annotations

import pytest

from stratus.kv import KVCache, KVTransaction, merge_encoded
from stratus.lattice import Counter, GSet, HybridClock, LatticeTypeError, decode, encode
from stratus.store import MemoryStore, Merge, Put


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(merge_encoded)


def txn(store: MemoryStore, node: str = "x1") -> KVTransaction:
    return KVTransaction(KVCache(store), HybridClock(node))


def commit(t: KVTransaction, store: MemoryStore, *, validate: bool = False) -> bool:
    return store.commit(t.transaction(validate=validate)).ok


def test_plain_values_round_trip(store: MemoryStore) -> None:
    t = txn(store)
    t.put("k", {"a": [1, 2]})
    assert t.get("k") == {"a": [1, 2]}
    assert commit(t, store)
    assert txn(store).get("k") == {"a": [1, 2]}


def test_reads_see_own_writes_before_commit_and_others_do_not(store: MemoryStore) -> None:
    t = txn(store)
    t.put("k", 1)
    t.merge("s", GSet(frozenset({"a"})))
    assert (t.get("k"), t.get("s")) == (1, frozenset({"a"}))
    assert txn(store).get("k", "absent") == "absent"


def test_merge_on_stored_value_and_in_buffer(store: MemoryStore) -> None:
    store.put("s", encode(GSet(frozenset({"a"}))))
    t = txn(store)
    t.merge("s", GSet(frozenset({"b"})))
    t.merge("s", GSet(frozenset({"c"})))
    assert t.get("s") == frozenset("abc")
    assert t.writes() == [Merge("s", encode(GSet(frozenset("bc"))))]
    assert commit(t, store)
    assert txn(store).get("s") == frozenset("abc")


def test_delete_then_merge_is_a_put(store: MemoryStore) -> None:
    store.put("s", encode(GSet(frozenset({"old"}))))
    t = txn(store)
    t.delete("s")
    assert t.get("s") is None and "s" not in t
    t.merge("s", GSet(frozenset({"new"})))
    assert t.writes() == [Put("s", encode(GSet(frozenset({"new"}))))]


def test_keys_include_buffered_writes_and_hide_deletes(store: MemoryStore) -> None:
    for key in ("u/1", "u/2", "v/1"):
        store.put(key, encode(GSet(frozenset())))
    t = txn(store)
    t.delete("u/1")
    t.put("u/3", 3)
    assert t.keys("u/") == ["u/2", "u/3"]


def test_counter_increments_from_two_writers(store: MemoryStore) -> None:
    for writer in ("x1", "x2"):
        t = txn(store, writer)
        t.merge("n", Counter.delta(writer, 2))
        assert commit(t, store)
    assert txn(store).get("n") == 4


def test_later_plain_write_wins_whatever_the_commit_order(store: MemoryStore) -> None:
    early, late = txn(store, "a"), txn(store, "b")
    early.put("k", "early")
    late.put("k", "late")  # stamped after "early" by the hybrid clock
    assert commit(late, store) and commit(early, store)
    assert txn(store).get("k") == "late"


def test_merging_different_lattices_fails_the_commit(store: MemoryStore) -> None:
    store.put("n", encode(Counter.delta("x1", 1)))
    t = txn(store)
    t.merge("n", GSet(frozenset({"oops"})))
    with pytest.raises(LatticeTypeError):
        commit(t, store)
    assert txn(store).get("n") == 1


def test_serializable_commit_fails_when_a_read_changed(store: MemoryStore) -> None:
    store.put("balance", encode(Counter.delta("x0", 10)))
    t = txn(store)
    t.get("balance")
    t.put("seen", True)
    store.merge("balance", encode(Counter.delta("x9", 1)))  # a concurrent writer
    assert not commit(t, store, validate=True)
    assert txn(store).get("seen") is None
    assert commit(t, store, validate=False)  # eventual: writes only, no validation


def test_serializable_commit_catches_phantoms_under_a_listed_prefix(store: MemoryStore) -> None:
    t = txn(store)
    assert t.keys("acct/") == []
    t.put("total", 0)
    store.put("acct/1", encode(Counter.delta("x0", 5)))
    assert not commit(t, store, validate=True)


def test_cache_hits_skip_the_store_and_follow_the_change_feed(store: MemoryStore) -> None:
    cache = KVCache(store, max_staleness=0)
    store.put("k", encode(Counter.delta("x0", 1)))
    assert cache.read("k")[1] == Counter.delta("x0", 1)
    assert cache.read("k")[1] == Counter.delta("x0", 1)
    assert (cache.hits, cache.misses) == (1, 1)
    store.merge("k", encode(Counter.delta("x1", 1)))
    assert cache.read("k")[1].value == 1  # stale until refreshed
    cache.refresh_if_stale()
    assert cache.read("k")[1].value == 2


def test_a_committed_merge_stays_cached_only_when_no_other_write_came_between(
    store: MemoryStore,
) -> None:
    cache, clock = KVCache(store), HybridClock("x1")
    store.put("k", encode(Counter.delta("x0", 1)))

    def merge_one() -> None:
        t = KVTransaction(cache, clock)
        t.get("k")
        t.merge("k", Counter.delta("x1", 1))
        t.remember_commit(cache, store.commit(t.transaction(validate=False)))

    merge_one()  # merged into the version the cache holds: the result is known
    assert "k" in cache and cache.read("k")[1] == decode(store.get("k").value)
    store.merge("k", encode(Counter.delta("x2", 5)))  # unseen by the cache
    merge_one()  # merged into a version the cache never saw: dropped, not guessed
    assert "k" not in cache
    assert cache.read("k")[1] == decode(store.get("k").value)


def test_cache_capacity_evicts_oldest(store: MemoryStore) -> None:
    cache = KVCache(store, capacity=2)
    for key in ("a", "b", "c"):
        cache.read(key)
    assert "a" not in cache and len(cache) == 2


def test_a_write_after_reading_wins_over_the_value_read_even_from_a_faster_clock(
    store: MemoryStore,
) -> None:
    from stratus.lattice import LWWRegister, Timestamp

    future = Timestamp(2**40, 7, "zz")  # a writer whose clock runs far ahead
    store.put("k", encode(LWWRegister(future, "theirs")))
    t = txn(store, "a")
    assert t.get("k") == "theirs"
    t.put("k", "ours")
    assert commit(t, store)
    assert txn(store).get("k") == "ours"
