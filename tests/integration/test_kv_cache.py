"""An executor's kv cache on a real Redis (and Redis Cluster): kept fresh by the store's
pub/sub signal."""

from __future__ import annotations

import select

from stratus.kv import KVCache
from stratus.kv.open import open_store
from stratus.lattice import LWWRegister, Timestamp, decode, encode


def register(value: str, ms: int) -> bytes:
    return encode(LWWRegister(Timestamp(ms, 0, "test"), value))


def test_a_redis_backed_cache_learns_of_writes_from_the_signal_alone(redis_url: str) -> None:
    url = f"{redis_url.rstrip('/')}?namespace=cache-signal"
    with open_store(url) as store, open_store(url) as writer:
        writer.put("k", register("old", 1))
        # Polling alone would keep the stale entry for an hour: only the signal can help.
        cache = KVCache(store, max_staleness=3600, max_quiet=3600)
        assert cache.feed.signal is not None and cache.read("k")[1] == decode(writer.get("k").value)
        cache.refresh_if_stale()
        assert "k" in cache  # nothing was written: the entry stays
        writer.put("k", register("new", 2))
        assert select.select([cache.feed.signal], [], [], 10.0)[0] == [cache.feed.signal]
        cache.refresh_if_stale()
        assert "k" not in cache
        value = cache.read("k")[1]
        assert isinstance(value, LWWRegister) and value.value == "new"


def test_a_redis_cluster_backed_cache_learns_of_writes_on_any_shard(
    redis_cluster_url: str,
) -> None:
    host_port = redis_cluster_url.removeprefix("redis://").split("/")[0]
    url = f"redis-cluster://{host_port}?namespace=cache-signal&shards=4"
    keys = [f"k{i}" for i in range(12)]
    with open_store(url) as store, open_store(url) as writer:
        for key in keys:
            writer.put(key, register("old", 1))
        cache = KVCache(store, max_staleness=3600, max_quiet=3600)
        assert cache.feed.signal is not None
        for key in keys:
            cache.read(key)
        for key in keys:  # keys of every shard
            writer.put(key, register("new", 2))
            assert select.select([cache.feed.signal], [], [], 10.0)[0] == [cache.feed.signal]
            cache.refresh_if_stale()
            assert key not in cache
            value = cache.read(key)[1]
            assert isinstance(value, LWWRegister) and value.value == "new"
