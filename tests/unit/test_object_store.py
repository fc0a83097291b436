"""``ObjectStore``: chunked objects, their tag, the executor's LRU cache (memory store)."""

from __future__ import annotations

import msgspec
import pytest

import stratus
from stratus.objects import Manifest, ObjectStore, object_name
from stratus.protocol import keys, serialization
from stratus.store import MemoryStore
from stratus.store.base import Store

KEY = b"k" * 32


@pytest.fixture
def store() -> Store:
    return MemoryStore(lambda old, new: new)


def objects(store: Store, **options: int) -> ObjectStore:
    return ObjectStore(store, KEY, chunk_bytes=1000, **options)


def chunk_keys(store: Store) -> list[str]:
    return store.keys(keys.OBJECT_CHUNKS)


@pytest.mark.parametrize(
    "obj", [b"", b"x" * 999, b"y" * 1000, bytes(range(256)) * 40, list(range(3000)), {"a": 1}]
)
def test_an_object_comes_back_as_it_was_put(store: Store, obj: object) -> None:
    ref = objects(store).put(obj)
    assert ref.key.startswith(keys.OBJECTS)
    assert ObjectStore(store, KEY).get(ref) == obj  # another process: no shared cache


def test_the_payload_is_cut_into_chunks_of_the_chunk_size(store: Store) -> None:
    objects(store).put(b"z" * 2500)
    values = [store.get(k).value for k in chunk_keys(store)]
    assert [len(v or b"") for v in values] == [1000, 1000, 500]


def test_a_second_get_reads_no_chunk(store: Store) -> None:
    reader = objects(store)
    ref = reader.put(b"q" * 5000)
    assert reader.get(ref) == b"q" * 5000
    first = reader.statistics()
    assert (first.misses, first.chunk_reads, first.cached_bytes) == (1, 5, 5000)
    store.purge(chunk_keys(store))  # only the manifest is left: a read would fail
    assert reader.get(ref) == b"q" * 5000
    assert reader.statistics().hits == 1 and reader.statistics().chunk_reads == 5


def test_each_get_of_a_pickled_object_is_a_copy_of_its_own(store: Store) -> None:
    reader = objects(store)
    ref = reader.put([1, 2, 3])
    reader.get(ref).append(4)  # a function mutating its argument...
    assert reader.get(ref) == [1, 2, 3]  # ...changes nothing the next call sees


def test_the_cache_is_bounded_in_bytes_least_recently_used_first(store: Store) -> None:
    reader = objects(store, cache_bytes=2500)
    a, b, c = (reader.put(bytes([n]) * 1000) for n in range(3))
    for ref in (a, b, a, c):  # b is the least recently used when c arrives
        reader.get(ref)
    stats = reader.statistics()
    assert (stats.cached_objects, stats.cached_bytes) == (2, 2000)
    reader.get(a)
    assert reader.statistics().hits == 2  # a stayed
    reader.get(b)
    assert reader.statistics().misses == 4  # b was dropped
    too_big = reader.put(b"x" * 3000)
    reader.get(too_big)
    assert reader.statistics().cached_bytes <= 2500  # never cached, nothing else dropped


@pytest.mark.parametrize("damage", ["forged", "truncated", "missing", "extended"])
def test_a_damaged_chunk_is_refused_before_anything_is_loaded(store: Store, damage: str) -> None:
    ref = objects(store).put(list(range(2000)))
    victim = chunk_keys(store)[1]
    good = store.get(victim).value or b""
    if damage == "missing":
        store.delete(victim)
    else:
        bad = {
            "forged": bytes(len(good)),
            "truncated": good[:-1],
            "extended": good + b"\0",
        }[damage]
        store.put(victim, bad)
    with pytest.raises(stratus.ObjectCorrupt, match=r"chunk 1|does not match its tag"):
        objects(store).get(ref)


def test_a_manifest_copied_to_another_name_is_refused(store: Store) -> None:
    ref = objects(store).put(b"a" * 10)
    stored = store.get(ref.key).value or b""
    store.put(keys.object_manifest("copy"), stored)
    with pytest.raises(stratus.ObjectCorrupt, match="tag"):
        objects(store).get(stratus.Ref(keys.object_manifest("copy")))
    store.put(keys.object_manifest("junk"), b"\x93not a manifest")
    with pytest.raises(stratus.ObjectCorrupt, match="malformed"):
        objects(store).get(stratus.Ref(keys.object_manifest("junk")))


def test_an_object_written_with_another_cluster_key_is_refused(store: Store) -> None:
    ref = ObjectStore(store, b"other key", chunk_bytes=1000).put(b"x" * 10)
    with pytest.raises(stratus.ObjectCorrupt):
        objects(store).get(ref)


def test_objects_are_immutable_until_deleted(store: Store) -> None:
    writer = objects(store)
    ref = writer.put(b"one", name="model")
    assert object_name(ref) == "model"
    with pytest.raises(stratus.ObjectExists):
        writer.put(b"two", name="model")
    assert len(chunk_keys(store)) == 1  # the refused put's chunks are gone
    writer.get(ref)
    writer.delete(ref)
    assert chunk_keys(store) == []
    with pytest.raises(stratus.ObjectNotFound):
        writer.get(ref)  # a cached payload does not outlive its manifest
    with pytest.raises(stratus.ObjectNotFound):
        writer.delete(ref)
    assert writer.get(writer.put(b"two", name="model")) == b"two"


def test_bad_input_is_a_typed_error(store: Store) -> None:
    writer = objects(store)
    with pytest.raises(stratus.ConfigurationError, match="not a Ref returned by put"):
        writer.get(stratus.Ref("a-kv-key"))
    with pytest.raises(stratus.ConfigurationError):
        writer.put(b"x", name="")
    with pytest.raises(stratus.SerializationError):
        writer.put(lambda_with_a_lock())
    assert store.keys() == []  # nothing half written


def lambda_with_a_lock() -> object:
    import threading

    return [threading.Lock()]


def test_a_forged_manifest_cannot_make_a_reader_fetch_millions_of_chunks(store: Store) -> None:
    ref = objects(store).put(b"x" * 10)
    forged = Manifest("id", "bytes", 10, 1000, 10**9, b"")
    store.put(ref.key, msgspec.msgpack.encode(forged))
    with pytest.raises(stratus.ObjectCorrupt, match="do not add up"):
        objects(store).get(ref)


def test_payload_too_large_says_how_to_send_it() -> None:
    with pytest.raises(stratus.PayloadTooLarge, match=r"use app\.put\(value\) and pass the Ref"):
        serialization.dumps(((b"x" * 2000,), {}), limit=1000, what="arguments")
    with pytest.raises(stratus.PayloadTooLarge, match=r"ctx\.put\(value\)"):
        serialization.dumps(b"x" * 2000, limit=1000, what="result")


def test_writes_go_in_bounded_commits(store: Store) -> None:
    commits: list[int] = []
    original = store.commit

    def counting(txn):  # type: ignore[no-untyped-def]
        commits.append(len(txn.writes))
        return original(txn)

    store.commit = counting  # type: ignore[method-assign]
    objects(store).put(b"x" * 40_000)  # 40 chunks
    assert commits == [16, 16, 8, 1]  # chunks in batches, then the manifest
