"""The causal level over a memory store: writes carry their past, reads form a cut."""

from __future__ import annotations

import pytest

from stratus.kv import KVCache, codec_for
from stratus.kv.causal import CausalRetry, CausalTransaction
from stratus.lattice import CausalValue, GSet, HybridClock
from stratus.store import MemoryStore

# Causal versions hold lattices (GSet) and tuples: objects sealed with a cluster key.
VALUES = codec_for(b"test cluster key")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(VALUES.merge)


def txn(cache: KVCache, node: str, **kw: object) -> CausalTransaction:
    return CausalTransaction(cache, HybridClock(node), node, **kw)  # type: ignore[arg-type]


def commit(t: CausalTransaction, store: MemoryStore) -> None:
    assert store.commit(t.transaction(validate=False)).ok


def test_a_write_depends_on_what_its_writer_read(store: MemoryStore) -> None:
    cache = KVCache(store, values=VALUES)
    poster = txn(cache, "x1")
    poster.put("post", "hello")
    commit(poster, store)
    replier = txn(KVCache(store, values=VALUES), "x2")
    assert replier.get("post") == "hello"
    replier.put("reply", "hi back")
    commit(replier, store)
    stored = txn(KVCache(store, values=VALUES), "x3").get_lattice("reply")
    assert isinstance(stored, CausalValue)
    assert set(stored.dependencies) == {"post"}


def test_a_stale_cache_is_bypassed_for_a_dependency(store: MemoryStore) -> None:
    reader_cache = KVCache(store, values=VALUES, max_staleness=3600)
    assert txn(reader_cache, "r").get("post") is None  # the reader caches "no post"
    poster = txn(KVCache(store, values=VALUES), "x1")
    poster.put("post", "hello")
    commit(poster, store)
    replier = txn(KVCache(store, values=VALUES), "x2")
    replier.get("post")
    replier.put("reply", "hi back")
    commit(replier, store)
    reader = txn(reader_cache, "r")
    assert reader.get("reply") == "hi back"
    assert reader.get("post") == "hello"  # eventual would return the cached None


def test_reading_a_dependency_older_than_already_returned_asks_for_a_rerun(
    store: MemoryStore,
) -> None:
    reader_cache = KVCache(store, values=VALUES, max_staleness=3600)
    first = txn(KVCache(store, values=VALUES), "x1")
    first.put("post", "v1")
    commit(first, store)
    reader = txn(reader_cache, "r")
    assert reader.get("post") == "v1"
    second = txn(KVCache(store, values=VALUES), "x1")
    second.get("post")
    second.put("post", "v2")
    commit(second, store)
    replier = txn(KVCache(store, values=VALUES), "x2")
    assert replier.get("post") == "v2"
    replier.put("reply", "on v2")
    commit(replier, store)
    with pytest.raises(CausalRetry) as retry:
        reader.get("reply")  # depends on post v2, but this reader already returned v1
    rerun = txn(reader_cache, "r", required=retry.value.required)
    assert rerun.get("post") == "v2"
    assert rerun.get("reply") == "on v2"


def test_concurrent_writes_are_siblings_and_lattices_merge(store: MemoryStore) -> None:
    a, b = txn(KVCache(store, values=VALUES), "a"), txn(KVCache(store, values=VALUES), "b")
    a.put("k", "from a")
    b.put("k", "from b")
    commit(a, store)
    commit(b, store)
    assert sorted(txn(KVCache(store, values=VALUES), "c").get("k")) == ["from a", "from b"]
    a, b = txn(KVCache(store, values=VALUES), "a"), txn(KVCache(store, values=VALUES), "b")
    a.merge("s", GSet(frozenset({1})))
    b.merge("s", GSet(frozenset({2})))
    commit(a, store)
    commit(b, store)
    assert txn(KVCache(store, values=VALUES), "c").get("s") == frozenset({1, 2})


def test_a_later_write_supersedes_the_siblings_it_read(store: MemoryStore) -> None:
    a, b = txn(KVCache(store, values=VALUES), "a"), txn(KVCache(store, values=VALUES), "b")
    a.put("k", 1)
    b.put("k", 2)
    commit(a, store)
    commit(b, store)
    c = txn(KVCache(store, values=VALUES), "c")
    c.get("k")
    c.put("k", 3)
    commit(c, store)
    assert txn(KVCache(store, values=VALUES), "d").get("k") == 3


def test_causal_state_travels_between_dag_steps(store: MemoryStore) -> None:
    first = txn(KVCache(store, values=VALUES), "x1")
    first.put("post", "hello")
    commit(first, store)
    step = txn(KVCache(store, values=VALUES), "x2")
    step.get("post")
    step.put("draft", 1)
    nxt = txn(KVCache(store, values=VALUES), "x3")
    nxt.absorb(step.export())
    assert set(nxt.seen) == {"post", "draft"} and nxt.get("draft") == 1


def test_other_levels_read_a_causal_value_as_causal_readers_do(store: MemoryStore) -> None:
    from stratus.kv import KVTransaction

    writer = txn(KVCache(store, values=VALUES), "x1")
    writer.put("k", "written causally")
    commit(writer, store)
    plain = KVTransaction(KVCache(store, values=VALUES), HybridClock("e"))
    assert plain.get("k") == "written causally"


def test_merges_under_causal_keep_what_was_merged_before(store: MemoryStore) -> None:
    for n in (1, 2, 3):
        merger = txn(KVCache(store, values=VALUES), f"x{n}")
        merger.merge("tags", GSet(frozenset({n})))
        commit(merger, store)
    assert txn(KVCache(store, values=VALUES), "r").get("tags") == frozenset({1, 2, 3})


def test_a_reader_sees_all_of_an_invocations_writes_or_none(store: MemoryStore) -> None:
    reader_cache = KVCache(store, values=VALUES, max_staleness=3600)
    assert txn(reader_cache, "r").get("post/1") is None  # cached as absent, and stays so
    writer = txn(KVCache(store, values=VALUES), "x1")
    writer.put("post/1", "hello")
    writer.put("feed/1", "post/1")  # written together: neither without the other
    commit(writer, store)
    reader = txn(reader_cache, "r")
    assert reader.get("feed/1") == "post/1"
    assert reader.get("post/1") == "hello"  # the stale cached absence is bypassed
    # Read in the other order, the stale "no post" comes first: the re-run sees both.
    stale_cache = KVCache(store, values=VALUES, max_staleness=3600)
    stale_cache.invalidate(["post/1"])
    stale_cache.committed("post/1", 0, None)  # a cache that missed the write
    reader = txn(stale_cache, "r")
    assert reader.get("post/1") is None
    with pytest.raises(CausalRetry) as retry:
        reader.get("feed/1")
    rerun = txn(stale_cache, "r", required=retry.value.required)
    assert (rerun.get("post/1"), rerun.get("feed/1")) == ("hello", "post/1")


def test_dependencies_are_transitive_through_superseded_versions(store: MemoryStore) -> None:
    reader_cache = KVCache(store, values=VALUES, max_staleness=3600)
    assert txn(reader_cache, "r").get("post/1") is None  # cached absent, and stays so
    for n, node in ((1, "x1"), (2, "x2")):
        writer = txn(KVCache(store, values=VALUES), node)
        feed = writer.get("feed") or frozenset()
        writer.put(f"post/{n}", n)
        writer.merge("feed", GSet(frozenset(feed) | {n}))
        commit(writer, store)
    # The feed's last version was written after reading the first, which depends on
    # post/1: a reader of the last version must see post/1 too.
    reader = txn(reader_cache, "r")
    assert reader.get("feed") == frozenset({1, 2})
    assert reader.get("post/1") == 1
