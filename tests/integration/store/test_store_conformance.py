"""The same tests against every store backend: the protocol's semantics, not one engine's.

Each test takes the ``store`` fixture (memory, SQLite, LMDB, Redis; files under
``tmp_path``, Redis in a namespace named after it on the session's private server) or
``opener`` when it must reopen a store. Multi-process tests start workers with the "spawn"
context; they open their own store on the same path (or namespace) and meet at a barrier
before racing. A Hypothesis state machine checks random operation sequences against a
plain-dict model.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import select
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import redis_cluster
import redis_server
from stratus._exceptions import ConfigurationError, ConnectionFailed, PayloadTooLarge
from stratus.kv.open import open_store
from stratus.protocol import keys
from stratus.store import (
    Changes,
    CommitResult,
    Delete,
    Entry,
    LMDBStore,
    MemoryStore,
    Merge,
    MergeFn,
    Put,
    SQLiteStore,
    Store,
    StoreClosed,
    Transaction,
    Write,
    records,
)
from stratus.store.redis_cluster import RedisClusterStore
from stratus.store.redis_store import MergeContention, RedisStore

BACKENDS = ["memory", "sqlite", "lmdb", "redis", "redis-cluster", "redis-cluster-sharded"]
SHARED_BACKENDS = ["sqlite", "lmdb", "redis", "redis-cluster", "redis-cluster-sharded"]
MANY_SEQUENCES = {"redis-cluster-sharded"}
"""Backends without one store-wide sequence: a Redis Cluster store of several shards has a
sequence per shard, so its versions are unique and increase per key but are not
consecutive across keys, and its feed cursor is opaque (docs/store.md). "redis-cluster"
is the same backend with one shard, where the whole single-sequence contract holds."""
CLUSTER_SHARDS = 4  # outlive a store object; shared by processes
LONG = "L" * 600  # longer than LMDB's 511-byte keys: exercises the hashed physical keys


def add_le(old: bytes | None, value: bytes) -> bytes:
    """A counter merge: little-endian integers add up."""
    total = int.from_bytes(old or b"", "little") + int.from_bytes(value, "little")
    return total.to_bytes(8, "little")


def concat(old: bytes | None, value: bytes) -> bytes:
    """An order-revealing merge, to check which old value a merge saw."""
    return (old or b"") + value


def le(n: int) -> bytes:
    return n.to_bytes(8, "little")


def open_backend(
    kind: str,
    path: Path,
    merge_fn: MergeFn = concat,
    *,
    durable: bool = True,
    max_value_bytes: int = 64 * 1024 * 1024,
) -> Store:
    """A store of ``kind`` under ``path`` (a directory); ``durable=False`` skips fsync.
    Redis: the namespace named after ``path`` on the test server (its persistence is off)."""
    if kind == "sqlite":
        return SQLiteStore(
            path / "store.db",
            merge_fn,
            synchronous="FULL" if durable else "NORMAL",
            max_value_bytes=max_value_bytes,
        )
    if kind == "lmdb":
        return LMDBStore(path / "env", merge_fn, sync=durable, max_value_bytes=max_value_bytes)
    if kind == "redis":
        return RedisStore(
            redis_server.url(),
            merge_fn,
            namespace=namespace_of(path),
            max_value_bytes=max_value_bytes,
        )
    if kind.startswith("redis-cluster"):
        return RedisClusterStore(
            redis_cluster.url(),
            merge_fn,
            namespace=namespace_of(path),
            max_value_bytes=max_value_bytes,
            shards=CLUSTER_SHARDS if kind in MANY_SEQUENCES else 1,
        )
    assert kind == "memory"
    return MemoryStore(merge_fn, max_value_bytes=max_value_bytes)


def namespace_of(path: Path) -> str:
    """A Redis namespace of its own for each path: every test gets a fresh store."""
    return "test-" + hashlib.sha256(str(path).encode()).hexdigest()[:20]


Opener = Callable[..., Store]


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (``SHARED_BACKENDS`` with ``parametrize(..., indirect=True)``);
    for Redis, the session's server is started first."""
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    if request.param.startswith("redis-cluster"):
        request.getfixturevalue("redis_cluster_url")
    name: str = request.param
    return name


@pytest.fixture
def opener(kind: str, tmp_path: Path) -> Iterator[Opener]:
    """``opener(**options)`` opens the backend on this test's path; all closed at the end."""
    opened: list[Store] = []

    def open_(merge_fn: MergeFn = concat, **options: Any) -> Store:
        store = open_backend(kind, tmp_path, merge_fn, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


# --------------------------------------------------------------------------- get/put/delete


def test_an_absent_key_has_version_zero(store: Store) -> None:
    assert store.get("nothing") == Entry(None, 0)
    assert store.last_version() == 0
    assert store.changes(0) == Changes(last=0, keys=[])


@pytest.mark.one_sequence
def test_every_write_takes_the_next_version_of_one_sequence(store: Store) -> None:
    assert store.put("a", b"1") == 1
    assert store.put("b", b"2") == 2
    assert store.merge("a", b"x") == 3
    assert store.delete("b") == 4
    assert store.put("a", b"3") == 5
    assert store.last_version() == 5
    assert store.get("a") == Entry(b"3", 5)


def test_an_empty_value_is_not_a_tombstone(store: Store) -> None:
    version = store.put("a", b"")
    assert store.get("a") == Entry(b"", version)
    assert store.keys() == ["a"]


@pytest.mark.one_sequence
def test_delete_leaves_a_tombstone_with_its_version(store: Store) -> None:
    store.put("a", b"1")
    version = store.delete("a")
    assert version == 2
    assert store.get("a") == Entry(None, 2)
    assert store.keys() == []
    assert store.changes(0).keys == [("a", 2)]
    assert store.put("a", b"back") == 3
    assert store.get("a") == Entry(b"back", 3)


@pytest.mark.one_sequence
def test_deleting_an_absent_key_writes_a_tombstone(store: Store) -> None:
    assert store.delete("ghost") == 1
    assert store.get("ghost") == Entry(None, 1)
    assert store.prefix_version("gh") == 1


@pytest.mark.one_sequence
def test_get_many_reads_several_keys(store: Store) -> None:
    store.put("a", b"1")
    store.delete("b")
    many = [f"k{i:04d}" for i in range(1200)]  # more than one SQL chunk
    assert store.get_many(["a", "b", "c", "a"]) == {
        "a": Entry(b"1", 1),
        "b": Entry(None, 2),
        "c": Entry(None, 0),
    }
    assert store.get_many(many) == dict.fromkeys(many, Entry(None, 0))
    assert store.get_many([]) == {}


def test_large_values_round_trip(store: Store) -> None:
    value = os.urandom(3 * 1024 * 1024)
    version = store.put("big", value)
    assert store.get("big") == Entry(value, version)


# --------------------------------------------------------------------------- keys and prefixes


def test_keys_are_sorted_by_code_point_and_exclude_tombstones(store: Store) -> None:
    names = ["b", "a/2", "a/10", "a", "a0", "é", "😀", "a/\U0010ffff", "a/\U0010ffffz", "Z"]
    for name in names:
        store.put(name, b".")
    store.delete("a/2")
    store.delete("never")
    assert store.keys() == sorted(set(names) - {"a/2"})
    assert store.keys("a/") == ["a/10", "a/\U0010ffff", "a/\U0010ffffz"]
    assert store.keys("a/\U0010ffff") == ["a/\U0010ffff", "a/\U0010ffffz"]
    assert store.keys("a") == ["a", "a/10", "a/\U0010ffff", "a/\U0010ffffz", "a0"]
    assert store.keys("q") == []


@pytest.mark.one_sequence
def test_long_keys_sort_and_filter_like_short_ones(store: Store) -> None:
    keys = [LONG + "b", LONG + "a", LONG[:500], LONG + "a" * 300, LONG[:-1] + "M", "L" * 1024]
    for key in keys:
        store.put(key, key[-5:].encode())
    assert store.keys("L") == sorted(keys)
    assert store.keys(LONG) == sorted(k for k in keys if k.startswith(LONG))
    assert store.keys(LONG + "a") == [LONG + "a", LONG + "a" * 300]
    assert store.get(LONG + "a") == Entry(b"LLLLa", 2)
    store.delete(LONG + "a")
    assert store.keys(LONG + "a") == [LONG + "a" * 300]
    assert store.prefix_version(LONG + "a") == 7
    assert store.changes(6).keys == [(LONG + "a", 7)]


@pytest.mark.one_sequence
def test_prefix_version_is_the_highest_version_under_the_prefix(store: Store) -> None:
    assert store.prefix_version("a/") == 0
    store.put("a/1", b"")
    store.put("b", b"")
    store.put("a/2", b"")
    assert store.prefix_version("a/") == 3
    store.delete("a/1")
    assert store.prefix_version("a/") == 4  # tombstones count
    assert store.prefix_version("") == 4
    assert store.prefix_version("b") == 2


# --------------------------------------------------------------------------- merge


@pytest.mark.one_sequence
def test_merge_combines_with_the_old_value_or_none(store: Store) -> None:
    assert store.merge("a", b"x") == 1  # absent: merge_fn(None, b"x")
    store.merge("a", b"y")
    assert store.get("a") == Entry(b"xy", 2)
    store.delete("a")
    store.merge("a", b"z")  # a tombstone merges like an absent key
    assert store.get("a") == Entry(b"z", 4)


@pytest.mark.one_sequence
def test_a_failing_merge_fn_writes_nothing(opener: Opener) -> None:
    def picky(old: bytes | None, value: bytes) -> bytes:
        if value == b"boom":
            raise RuntimeError("no")
        return concat(old, value)

    store = opener(picky)
    store.put("a", b"1")
    with pytest.raises(RuntimeError):
        store.merge("a", b"boom")
    with pytest.raises(RuntimeError):
        store.commit(Transaction(reads={}, writes=[Put("b", b"2"), Merge("a", b"boom")]))
    assert store.get("a") == Entry(b"1", 1)
    assert store.get("b") == Entry(None, 0)
    assert store.last_version() == 1
    # Validation comes first: a conflicting transaction reports it instead of raising.
    txn = Transaction(reads={"a": 0}, writes=[Merge("a", b"boom")])
    assert store.commit(txn) == CommitResult(ok=False, conflicts=["a"])
    assert store.put("c", b"") == 2  # the store is still usable


def test_a_merge_fn_must_return_bytes(opener: Opener) -> None:
    store = opener(lambda old, value: "text")
    with pytest.raises(TypeError):
        store.merge("a", b"x")
    assert store.last_version() == 0


@pytest.mark.one_sequence
def test_merges_from_threads_lose_no_update(opener: Opener) -> None:
    store = opener(add_le, durable=False)

    def work() -> None:
        for _ in range(200):
            store.merge("n", le(1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("n") == Entry(le(800), 800)


# --------------------------------------------------------------------------- commit


@pytest.mark.one_sequence
def test_commit_applies_every_write_with_consecutive_versions(store: Store) -> None:
    store.put("a", b"1")
    result = store.commit(
        Transaction(
            reads={"a": 1, "b": 0},
            writes=[Put("b", b"2"), Merge("a", b"+"), Delete("c"), Put("d", b"4")],
        )
    )
    assert result == CommitResult(
        ok=True, versions={"b": 2, "a": 3, "c": 4, "d": 5}, merged_into={"a": 1}
    )
    assert store.get_many(["a", "b", "c", "d"]) == {
        "a": Entry(b"1+", 3),
        "b": Entry(b"2", 2),
        "c": Entry(None, 4),
        "d": Entry(b"4", 5),
    }
    assert store.last_version() == 5


@pytest.mark.one_sequence
def test_a_key_written_twice_in_a_commit_keeps_its_last_write(store: Store) -> None:
    result = store.commit(
        Transaction(reads={}, writes=[Put("a", b"1"), Merge("a", b"2"), Put("b", b"")])
    )
    assert result.versions == {"a": 2, "b": 3}
    assert store.get("a") == Entry(b"12", 2)
    assert store.last_version() == 3
    assert store.changes(0).keys == [("a", 2), ("b", 3)]


@pytest.mark.one_sequence
def test_a_read_only_commit_validates_without_taking_a_version(store: Store) -> None:
    store.put("a", b"1")
    assert store.commit(Transaction(reads={"a": 1, "b": 0}, writes=[])) == CommitResult(ok=True)
    assert store.last_version() == 1
    assert store.commit(Transaction(reads={"a": 0}, writes=[])).ok is False


@pytest.mark.one_sequence
def test_a_changed_read_is_a_conflict_and_nothing_is_written(store: Store) -> None:
    store.put("a", b"1")
    store.put("a", b"2")
    txn = Transaction(reads={"a": 1}, writes=[Put("b", b"x"), Delete("a"), Merge("c", b"y")])
    assert store.commit(txn) == CommitResult(ok=False, conflicts=["a"])
    assert store.get_many(["a", "b", "c"]) == {
        "a": Entry(b"2", 2),
        "b": Entry(None, 0),
        "c": Entry(None, 0),
    }
    assert store.last_version() == 2
    assert store.changes(0).keys == [("a", 2)]


def test_a_read_absent_key_now_present_is_a_conflict(store: Store) -> None:
    store.put("a", b"1")
    assert store.commit(Transaction(reads={"a": 0}, writes=[Put("x", b"")])).conflicts == ["a"]


@pytest.mark.one_sequence
def test_a_read_key_now_deleted_is_a_conflict(store: Store) -> None:
    store.put("a", b"1")
    store.delete("a")
    assert store.commit(Transaction(reads={"a": 1}, writes=[Put("x", b"")])).conflicts == ["a"]
    assert store.commit(Transaction(reads={"a": 2}, writes=[Put("x", b"")])).ok  # saw the delete


def test_every_conflict_is_reported(store: Store) -> None:
    store.put("a/1", b"")
    store.put("b", b"")
    txn = Transaction(
        reads={"b": 0, "c": 0, "d": 7}, writes=[Put("z", b"")], prefix_reads={"a/": 0, "q": 0}
    )
    assert store.commit(txn) == CommitResult(ok=False, conflicts=["b", "d", "a/"])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.put("dir/new", b""), id="insert"),
        pytest.param(lambda s: s.delete("dir/f"), id="delete"),
        pytest.param(lambda s: s.put("dir/f", b"v2"), id="update"),
        pytest.param(lambda s: s.delete("dir/never-there"), id="delete-absent"),
    ],
)
def test_a_change_under_a_read_prefix_is_a_conflict(
    store: Store, change: Callable[[Store], object]
) -> None:
    store.put("dir/f", b"v1")
    store.put("other", b"")
    seen = store.prefix_version("dir/")
    change(store)
    txn = Transaction(reads={}, writes=[Put("out", b"listed")], prefix_reads={"dir/": seen})
    assert store.commit(txn) == CommitResult(ok=False, conflicts=["dir/"])
    assert store.get("out") == Entry(None, 0)


@pytest.mark.one_sequence
def test_a_change_outside_a_read_prefix_is_no_conflict(store: Store) -> None:
    store.put("dir/f", b"v1")
    seen = store.prefix_version("dir/")
    store.put("dir0", b"")  # sorts right after the prefix, but does not start with it
    store.put("di", b"")
    txn = Transaction(reads={}, writes=[Put("dir/g", b"")], prefix_reads={"dir/": seen})
    assert store.commit(txn) == CommitResult(ok=True, versions={"dir/g": 4})


def test_commit_on_an_empty_prefix_and_store(store: Store) -> None:
    txn = Transaction(reads={"a": 0}, writes=[Put("a", b"1")], prefix_reads={"": 0})
    assert store.commit(txn).ok
    assert store.commit(txn).conflicts == ["a", ""]


# --------------------------------------------------------------------------- change feed


@pytest.mark.one_sequence
def test_changes_lists_current_versions_in_order_with_limit(store: Store) -> None:
    for name in "abcde":
        store.put(name, b"")
    store.put("b", b"again")  # b moves to version 6
    store.delete("d")  # d moves to version 7
    assert store.changes(0) == Changes(
        last=7, keys=[("a", 1), ("c", 3), ("e", 5), ("b", 6), ("d", 7)]
    )
    assert store.changes(0, limit=2) == Changes(last=3, keys=[("a", 1), ("c", 3)])
    assert store.changes(3, limit=2) == Changes(last=6, keys=[("e", 5), ("b", 6)])
    assert store.changes(6, limit=2) == Changes(last=7, keys=[("d", 7)])
    assert store.changes(7, limit=2) == Changes(last=7, keys=[])
    assert store.changes(4) == Changes(last=7, keys=[("e", 5), ("b", 6), ("d", 7)])


@pytest.mark.one_sequence
def test_paging_through_changes_sees_every_key(store: Store) -> None:
    for i in range(50):
        store.put(f"k{i % 20}", b"")
    seen: dict[str, int] = {}
    since = 0
    while True:
        page = store.changes(since, limit=7)
        seen.update(page.keys)
        if not page.keys:
            break
        since = page.last
    assert seen == {f"k{i % 20}": i + 1 for i in range(30, 50)}
    assert since == 50


def test_changes_needs_a_positive_limit(store: Store) -> None:
    with pytest.raises(ConfigurationError):
        store.changes(0, limit=0)


# --------------------------------------------------------------------------- limits and errors


def test_keys_up_to_one_kib_are_accepted(store: Store) -> None:
    store.put("k" * 1024, b"")
    store.put("é" * 512, b"")  # 1024 bytes of UTF-8
    assert len(store.keys()) == 2


@pytest.mark.parametrize("key", ["k" * 1025, "é" * 513, "", "\ud800"])
def test_bad_keys_are_configuration_errors(store: Store, key: str) -> None:
    for operation in (
        lambda: store.put(key, b""),
        lambda: store.merge(key, b""),
        lambda: store.delete(key),
        lambda: store.get(key),
        lambda: store.get_many(["ok", key]),
        lambda: store.commit(Transaction(reads={key: 0}, writes=[])),
        lambda: store.commit(Transaction(reads={}, writes=[Put("ok", b""), Delete(key)])),
    ):
        with pytest.raises(ConfigurationError):
            operation()
    assert store.last_version() == 0


def test_non_str_keys_are_configuration_errors(store: Store) -> None:
    with pytest.raises(ConfigurationError):
        store.put(b"bytes", b"")  # type: ignore[arg-type]


@pytest.mark.one_sequence
def test_values_above_the_limit_are_payload_too_large(opener: Opener) -> None:
    store = opener(max_value_bytes=100)
    store.put("ok", b"x" * 100)
    with pytest.raises(PayloadTooLarge) as caught:
        store.put("a", b"x" * 101)
    assert (caught.value.size, caught.value.limit) == (101, 100)
    with pytest.raises(PayloadTooLarge):
        store.merge("a", b"x" * 101)
    with pytest.raises(PayloadTooLarge):
        store.commit(Transaction(reads={}, writes=[Put("b", b""), Put("a", b"x" * 101)]))
    with pytest.raises(PayloadTooLarge):  # the merged value is too large
        store.merge("ok", b"y")
    assert store.get("ok") == Entry(b"x" * 100, 1)
    assert store.last_version() == 1


def test_the_default_value_limit_is_64_mib(store: Store) -> None:
    with pytest.raises(PayloadTooLarge):
        store.put("a", bytes(64 * 1024 * 1024 + 1))


def test_a_closed_store_refuses_work(opener: Opener) -> None:
    store = opener()
    store.put("a", b"")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.get("a")
    with pytest.raises(StoreClosed):
        store.put("a", b"")


@pytest.mark.one_sequence
def test_a_forked_child_must_open_its_own_store(store: Store) -> None:
    store.put("a", b"1")
    pid = os.fork()
    if pid == 0:  # the child: the inherited store is closed, the parent's is untouched
        try:
            store.get("a")
        except StoreClosed:
            os._exit(0)
        except BaseException:
            os._exit(2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.put("a", b"2") == 2


# --------------------------------------------------------------------------- persistence


@pytest.mark.one_sequence
@pytest.mark.parametrize("kind", SHARED_BACKENDS, indirect=True)
def test_reopening_keeps_the_data_and_the_sequence(kind: str, tmp_path: Path) -> None:
    with open_backend(kind, tmp_path) as store:
        store.put("a", b"1")
        store.delete("b")
        store.commit(Transaction(reads={}, writes=[Put(LONG, b"L"), Merge("a", b"2")]))
    with open_backend(kind, tmp_path) as store:
        assert store.get_many(["a", "b", LONG]) == {
            "a": Entry(b"12", 4),
            "b": Entry(None, 2),
            LONG: Entry(b"L", 3),
        }
        assert store.last_version() == 4
        assert store.put("c", b"") == 5
        assert store.changes(2).keys == [(LONG, 3), ("a", 4), ("c", 5)]


def test_two_sqlite_stores_in_one_process_share_the_file(tmp_path: Path) -> None:
    with (
        SQLiteStore(tmp_path / "s.db", concat) as one,
        SQLiteStore(tmp_path / "s.db", concat) as two,
    ):
        one.put("a", b"1")
        assert two.merge("a", b"2") == 2
        assert one.get("a") == Entry(b"12", 2)


def test_lmdb_allows_one_store_per_path_per_process(tmp_path: Path) -> None:
    with LMDBStore(tmp_path / "env", concat), pytest.raises(ConfigurationError):
        LMDBStore(tmp_path / "env", concat)


def test_redis_namespaces_are_separate_stores(redis_url: str) -> None:
    with (
        RedisStore(redis_url, concat, namespace="ns-one") as one,
        RedisStore(redis_url, concat, namespace="ns-one") as same,
        RedisStore(redis_url, concat, namespace="ns-two") as two,
    ):
        one.put("a", b"1")
        assert same.merge("a", b"2") == 2
        assert two.get("a") == Entry(None, 0)
        assert two.keys() == []
        assert (one.get("a"), two.last_version()) == (Entry(b"12", 2), 0)


def test_a_redis_merge_that_loses_its_race_is_computed_again(redis_url: str) -> None:
    rival = RedisStore(redis_url, concat, namespace="race")
    races = iter([b"r1", b"r2"])

    def racing(old: bytes | None, value: bytes) -> bytes:
        race = next(races, None)
        if race is not None:  # the rival writes first: this merge's result is stale
            rival.put("k", (old or b"") + race)
        return concat(old, value)

    with rival, RedisStore(redis_url, racing, namespace="race", merge_attempts=3) as store:
        store.put("k", b"0")
        assert store.merge("k", b"+") == 4  # computed 3 times, over b"0", b"0r1", b"0r1r2"
        assert store.get("k") == Entry(b"0r1r2+", 4)
        races = iter([b"r"] * 3)
        with pytest.raises(MergeContention) as caught:
            store.commit(Transaction(reads={}, writes=[Put("x", b""), Merge("k", b"!")]))
        assert (caught.value.keys, caught.value.attempts) == (["k"], 3)
        assert store.get_many(["k", "x"]) == {"k": Entry(b"0r1r2+rrr", 7), "x": Entry(None, 0)}


def test_a_redis_store_signals_every_commit_to_its_watchers(redis_url: str) -> None:
    with (
        RedisStore(redis_url, concat, namespace="watched") as store,
        RedisStore(redis_url, concat, namespace="watched") as writer,
    ):
        signal = store.watch()
        assert signal.healthy and not signal.drain()  # nothing written yet
        writer.put("a", b"1")
        assert select.select([signal], [], [], 10.0)[0] == [signal]
        assert signal.drain() and not signal.drain()
        writer.commit(Transaction(reads={"a": 1}, writes=[]))  # validation only: no signal
        writer.merge("a", b"2")
        assert select.select([signal], [], [], 10.0)[0] == [signal]
        assert signal.drain()
        signal.close()
        assert not signal.healthy and not signal.drain()


def test_local_stores_have_no_signal(tmp_path: Path) -> None:
    for kind in ("memory", "sqlite", "lmdb"):
        (tmp_path / kind).mkdir()
        with open_backend(kind, tmp_path / kind) as store:
            assert store.watch() is None  # their change feed is polled


def test_redis_urls_open_redis_stores(redis_url: str) -> None:
    with open_store(redis_url + "?namespace=from-url") as store:
        assert isinstance(store, RedisStore)
        assert (store.namespace, store.put("a", b"")) == ("from-url", 1)
    with open_store(redis_url) as store:
        assert isinstance(store, RedisStore) and store.namespace == "stratus"
    with pytest.raises(ConfigurationError):
        RedisStore(redis_url, concat, namespace="a{b}")


def test_an_unreachable_redis_is_connection_failed() -> None:
    port = redis_server._free_port()
    with pytest.raises(ConnectionFailed):
        RedisStore(f"redis://127.0.0.1:{port}/0", concat)


# --------------------------------------------------------------------------- processes


def _race_merges(kind: str, path: str, barrier: Any, results: Any, count: int) -> None:
    try:
        with open_backend(kind, Path(path), add_le, durable=False) as store:
            barrier.wait(timeout=60)
            versions = [store.merge("n", le(1)) for _ in range(count)]
        results.put(("ok", versions))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _race_commits(kind: str, path: str, barrier: Any, results: Any, count: int) -> None:
    try:
        conflicts = 0
        with open_backend(kind, Path(path), add_le, durable=False) as store:
            barrier.wait(timeout=60)
            for _ in range(count):
                while True:  # optimistic read-modify-write of a counter
                    seen = store.get("n")
                    n = int.from_bytes(seen.value or b"", "little")
                    txn = Transaction(reads={"n": seen.version}, writes=[Put("n", le(n + 1))])
                    if store.commit(txn).ok:
                        break
                    conflicts += 1
        results.put(("ok", conflicts))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _race_open(kind: str, path: str, barrier: Any, results: Any, count: int) -> None:
    try:
        barrier.wait(timeout=60)
        with open_backend(kind, Path(path), add_le) as store:
            results.put(("ok", store.merge("n", le(count))))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _run_two(target: Callable[..., None], kind: str, path: Path, count: int) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=target, args=(kind, str(path), barrier, results, count))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=100) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
        results.close()
        results.join_thread()
    errors = [detail for status, detail in outcomes if status == "error"]
    assert not errors, errors[0]
    assert all(worker.exitcode == 0 for worker in workers)
    return [detail for _, detail in outcomes]


@pytest.mark.one_sequence
@pytest.mark.parametrize("kind", SHARED_BACKENDS, indirect=True)
def test_two_processes_can_create_a_store_at_once(kind: str, tmp_path: Path) -> None:
    assert sorted(_run_two(_race_open, kind, tmp_path, 5)) == [1, 2]
    with open_backend(kind, tmp_path, add_le) as store:
        assert store.get("n") == Entry(le(10), 2)


@pytest.mark.one_sequence
@pytest.mark.parametrize("kind", SHARED_BACKENDS, indirect=True)
def test_merges_from_two_processes_lose_no_update(kind: str, tmp_path: Path) -> None:
    with open_backend(kind, tmp_path, add_le) as store:
        store.put("other", b"")  # version 1: the file exists before the workers start
    versions = _run_two(_race_merges, kind, tmp_path, 2000)
    with open_backend(kind, tmp_path, add_le) as store:
        assert store.get("n") == Entry(le(4000), 4001)
        assert store.last_version() == 4001
    every = versions[0] + versions[1]
    assert sorted(every) == list(range(2, 4002))  # one sequence, no version given twice
    assert all(a < b for a, b in zip(versions[0], versions[0][1:], strict=False))


@pytest.mark.one_sequence
@pytest.mark.parametrize("kind", SHARED_BACKENDS, indirect=True)
def test_optimistic_commits_from_two_processes_are_serializable(kind: str, tmp_path: Path) -> None:
    with open_backend(kind, tmp_path, add_le) as store:
        assert store.last_version() == 0
    _run_two(_race_commits, kind, tmp_path, 300)
    with open_backend(kind, tmp_path, add_le) as store:
        assert store.get("n") == Entry(le(600), 600)


# --------------------------------------------------------------------------- invocation records


def record_commit(key: str, attempt: int, *writes: Write) -> Transaction:
    """What an executor commits: the writes plus the invocation record, if absent."""
    record = records.InvocationRecord.of(attempt, 1_000, b"result").encode()
    return Transaction(reads={key: 0}, writes=[*writes, Put(key, record)])


@pytest.mark.parametrize("merge_fn", [add_le])
def test_an_invocation_record_commits_its_effects_once(opener: Opener, merge_fn: MergeFn) -> None:
    store = opener(merge_fn)
    key = keys.invocation_record("inv-1")
    assert store.commit(record_commit(key, 1, Merge("n", le(1)), Put("f", b"x"))).ok
    # A retry that ran again finds the record: a conflict, and nothing of it is written.
    again = store.commit(record_commit(key, 2, Merge("n", le(1)), Put("f", b"y")))
    assert not again.ok and again.conflicts == [key]
    assert store.get("n").value == le(1) and store.get("f").value == b"x"
    recorded = records.read(store, key)
    assert recorded == records.InvocationRecord(1, 1_000, b"result")
    # Another invocation is another record.
    assert store.commit(record_commit(keys.invocation_record("inv-2"), 1, Merge("n", le(1)))).ok
    assert store.get("n").value == le(2)


def test_records_past_the_retention_are_collected(store: Store) -> None:
    old, new = keys.invocation_record("old"), keys.invocation_record("new", 3)
    store.put(old, records.InvocationRecord(1, 1_000, b"").encode())
    store.put(new, records.InvocationRecord(1, 50_000, None).encode())
    store.put("user", b"kept")
    assert records.expired(store, keys.INVOCATIONS, 60_000, retention=30.0) == [old]
    assert records.collect(store, keys.INVOCATIONS, 60_000, retention=30.0) == 1
    assert records.read(store, old) is None and records.read(store, new) is not None
    assert store.get("user").value == b"kept"


@pytest.mark.one_sequence
def test_purge_removes_keys_and_their_tombstones_without_a_version(store: Store) -> None:
    store.put("a", b"1")
    store.put("b", b"2")
    store.delete("b")  # a tombstone
    store.put("c", b"3")
    store.put("last", b"4")  # holds the last version: kept, it is the sequence
    assert store.purge(["a", "b", "last", "never"]) == 2
    assert store.get("a") == Entry(None, 0) and store.get("b") == Entry(None, 0)
    assert store.get("last") == Entry(b"4", 5) and store.last_version() == 5
    assert store.keys() == ["c", "last"]
    assert store.changes(0).keys == [("c", 4), ("last", 5)]
    assert store.put("a", b"again") == 6  # the sequence goes on
    assert store.purge([]) == 0


def test_a_too_large_result_is_recorded_as_lost() -> None:
    big = b"x" * (records.MAX_RECORDED_RESULT + 1)
    assert records.InvocationRecord.of(1, 5, big).result is None
    assert records.InvocationRecord.of(1, 5, b"ok", b"kv").carried == b"kv"


def _race_invocation(kind: str, path: str, barrier: Any, results: Any, count: int) -> None:
    try:
        applied = 0
        with open_backend(kind, Path(path), add_le, durable=False) as store:
            barrier.wait(timeout=60)
            for i in range(count):  # both processes commit every invocation, as a retry would
                key = keys.invocation_record(f"inv-{i}")
                applied += store.commit(record_commit(key, 1, Merge("n", le(1)))).ok
        results.put(("ok", applied))
    except BaseException:
        results.put(("error", traceback.format_exc()))


@pytest.mark.parametrize("kind", SHARED_BACKENDS, indirect=True)
def test_two_processes_committing_one_invocation_apply_it_once(kind: str, tmp_path: Path) -> None:
    with open_backend(kind, tmp_path, add_le) as store:
        store.put("other", b"")
    applied = _run_two(_race_invocation, kind, tmp_path, 200)
    assert sum(applied) == 200
    with open_backend(kind, tmp_path, add_le) as store:
        assert store.get("n").value == le(200)


# --------------------------------------------------------------------------- model check

KEYS = ["a", "a/b", "a/c", "ab", "b", "é", "😀", "a/\U0010ffff", *(LONG + s for s in "xyzw")]
PREFIXES = ["", "a", "a/", "b", "q", "é", LONG, LONG + "x"]
keys_st = st.one_of(st.sampled_from(KEYS), st.text(alphabet="ab/é", min_size=1, max_size=3))
values_st = st.binary(max_size=6)
writes_st = st.lists(
    st.one_of(
        st.builds(Put, keys_st, values_st),
        st.builds(Merge, keys_st, values_st),
        st.builds(Delete, keys_st),
    ),
    max_size=4,
)
Rows = dict[str, tuple[bytes | None, int]]


class Model:
    """The specification: a dict of (value or None, version) and a counter."""

    def __init__(self) -> None:
        self.rows: Rows = {}
        self.last = 0

    def version(self, key: str, rows: Rows | None = None) -> int:
        return (self.rows if rows is None else rows).get(key, (None, 0))[1]

    def prefix_version(self, prefix: str, rows: Rows | None = None) -> int:
        rows = self.rows if rows is None else rows
        return max((v for k, (_, v) in rows.items() if k.startswith(prefix)), default=0)

    def apply(self, writes: list[Write]) -> tuple[dict[str, int], dict[str, int]]:
        versions: dict[str, int] = {}
        merged_into: dict[str, int] = {}
        for write in writes:
            self.last += 1
            old, old_version = self.rows.get(write.key, (None, 0))
            if isinstance(write, Put):
                self.rows[write.key] = (write.value, self.last)
            elif isinstance(write, Merge):
                if write.key not in versions:
                    merged_into[write.key] = old_version
                self.rows[write.key] = (concat(old, write.value), self.last)
            else:
                self.rows[write.key] = (None, self.last)
            versions[write.key] = self.last
        return versions, merged_into

    def commit(self, txn: Transaction) -> CommitResult:
        conflicts = [k for k, v in txn.reads.items() if self.version(k) != v]
        conflicts += [p for p, v in txn.prefix_reads.items() if self.prefix_version(p) != v]
        if conflicts:
            return CommitResult(ok=False, conflicts=conflicts)
        versions, merged_into = self.apply(list(txn.writes))
        return CommitResult(ok=True, versions=versions, merged_into=merged_into)

    def changes(self, since: int, limit: int) -> Changes:
        ordered = sorted(
            ((k, v) for k, (_, v) in self.rows.items() if v > since), key=lambda p: p[1]
        )
        page = ordered[:limit]
        return Changes(last=page[-1][1] if len(page) == limit else self.last, keys=page)


class StoreMachine(RuleBasedStateMachine):
    """Random operations on a backend and on the model give the same answers."""

    kind = "memory"
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="stratus-store-"))
        self.store = open_backend(self.kind, self.dir, durable=False)
        self.model = Model()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    @rule(key=keys_st, value=values_st)
    def put(self, key: str, value: bytes) -> None:
        assert self.store.put(key, value) == self.model.apply([Put(key, value)])[0][key]

    @rule(key=keys_st, value=values_st)
    def merge(self, key: str, value: bytes) -> None:
        assert self.store.merge(key, value) == self.model.apply([Merge(key, value)])[0][key]

    @rule(key=keys_st)
    def delete(self, key: str) -> None:
        assert self.store.delete(key) == self.model.apply([Delete(key)])[0][key]

    @rule(keys=st.lists(keys_st, max_size=4))
    def get_many(self, keys: list[str]) -> None:
        expected = {k: Entry(*self.model.rows.get(k, (None, 0))) for k in keys}
        assert self.store.get_many(keys) == expected
        for key in keys:
            assert self.store.get(key) == expected[key]

    @rule(prefix=st.one_of(st.sampled_from(PREFIXES), keys_st))
    def list_prefix(self, prefix: str) -> None:
        live = sorted(
            k for k, (v, _) in self.model.rows.items() if v is not None and k.startswith(prefix)
        )
        assert self.store.keys(prefix) == live
        assert self.store.prefix_version(prefix) == self.model.prefix_version(prefix)

    @rule(data=st.data(), limit=st.integers(1, 5))
    def changes(self, data: st.DataObject, limit: int) -> None:
        since = data.draw(st.integers(0, self.model.last + 1))
        assert self.store.changes(since, limit) == self.model.changes(since, limit)

    @rule(target=snapshots)
    def snapshot(self) -> Rows:
        return dict(self.model.rows)

    @rule(
        seen=snapshots,
        reads=st.lists(keys_st, max_size=3),
        prefixes=st.lists(st.sampled_from(PREFIXES), max_size=2),
        writes=writes_st,
    )
    def commit(
        self, seen: Rows, reads: list[str], prefixes: list[str], writes: list[Write]
    ) -> None:
        txn = Transaction(
            reads={k: self.model.version(k, seen) for k in reads},
            writes=writes,
            prefix_reads={p: self.model.prefix_version(p, seen) for p in prefixes},
        )
        assert self.store.commit(txn) == self.model.commit(txn)

    @precondition(lambda self: self.kind != "memory")
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = open_backend(self.kind, self.dir, durable=False)

    @invariant()
    def same_last_version(self) -> None:
        assert self.store.last_version() == self.model.last


@pytest.mark.one_sequence
def test_random_operations_match_the_model(kind: str) -> None:
    machine = type(f"StoreMachine_{kind}", (StoreMachine,), {"kind": kind})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
