"""The inode layer (``VolumeOps``), its transactions and cache, on every store backend."""

from __future__ import annotations

import errno
import hashlib
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import redis_server
from stratus import ConflictError, VolumeExists, VolumeNotFound
from stratus.fs import CHUNK, ROOT_INO, FsCache, Volume, VolumeOps, Volumes
from stratus.kv.values import merge_encoded
from stratus.store import LMDBStore, MemoryStore, SQLiteStore, Store
from stratus.store.redis_store import RedisStore

BACKENDS = ["memory", "sqlite", "lmdb", "redis"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    opened: Store
    if kind == "redis":
        request.getfixturevalue("redis_url")
        namespace = "fs-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
        opened = RedisStore(redis_server.url(), merge_encoded, namespace=namespace)
    elif kind == "sqlite":
        opened = SQLiteStore(tmp_path / "s.db", merge_encoded)
    elif kind == "lmdb":
        opened = LMDBStore(tmp_path / "env", merge_encoded)
    else:
        opened = MemoryStore(merge_encoded)
    with opened:
        yield opened


@pytest.fixture
def volume(store: Store) -> Volume:
    return Volumes(store).create("vol")


def run(volume: Volume, fn: Callable[[VolumeOps], object]) -> object:
    return volume.run(fn)


def errno_of(volume: Volume, fn: Callable[[VolumeOps], object]) -> int | None:
    try:
        volume.run(fn)
    except OSError as e:
        return e.errno
    return None


def test_create_write_read_and_attributes(volume: Volume) -> None:
    with volume.transaction() as ops:
        attr = ops.create(ROOT_INO, b"hello.txt", 0o640, 1000, 1000)
        assert stat.S_ISREG(attr.mode) and stat.S_IMODE(attr.mode) == 0o640
        assert ops.write(attr.ino, 0, b"hello world") == 11
        assert ops.read(attr.ino, 6, 100) == b"world"
        ino = attr.ino
    with volume.transaction() as ops:
        found = ops.lookup(ROOT_INO, b"hello.txt")
        assert found.ino == ino and found.size == 11 and found.nlink == 1
        assert (found.uid, found.gid) == (1000, 1000)
        assert ops.read(ino, 0, 5) == b"hello"
        assert [name for name, _ in ops.readdir(ROOT_INO)] == [b"hello.txt"]
        with pytest.raises(FileExistsError):
            ops.create(ROOT_INO, b"hello.txt", 0o644, 0, 0)
        with pytest.raises(FileNotFoundError):
            ops.lookup(ROOT_INO, b"nope")


def test_chunks_holes_and_truncate(volume: Volume) -> None:
    big = bytes(range(256)) * (3 * CHUNK // 256)  # three chunks
    with volume.transaction() as ops:
        ino = ops.create(ROOT_INO, b"big", 0o644, 0, 0).ino
        ops.write(ino, 0, big)
    keys = volume.keys
    before = {i: volume.store.get(keys.chunk(ino, i)).version for i in range(3)}
    with volume.transaction() as ops:
        ops.write(ino, CHUNK + 10, b"XY")  # a small write rewrites one chunk
    after = {i: volume.store.get(keys.chunk(ino, i)).version for i in range(3)}
    assert [i for i in range(3) if before[i] != after[i]] == [1]
    with volume.transaction() as ops:
        data = ops.read(ino, 0, 4 * CHUNK)
        assert data == big[: CHUNK + 10] + b"XY" + big[CHUNK + 12 :]
        ops.write(ino, 5 * CHUNK + 3, b"end")  # a hole of two chunks and a bit
        assert ops.getattr(ino).size == 5 * CHUNK + 6
        assert ops.read(ino, 3 * CHUNK - 2, CHUNK + 4) == big[-2:] + bytes(CHUNK + 2)
        ops.setattr(ino, size=CHUNK + 11)
        ops.setattr(ino, size=2 * CHUNK)  # extending reads zeros, not the old bytes
        assert ops.read(ino, CHUNK + 10, 4) == b"X\0\0\0"
        assert ops.getattr(ino).blocks == 2 * CHUNK // 512
    assert volume.store.get(keys.chunk(ino, 5)).value is None


def test_directories_and_errors(volume: Volume) -> None:
    with volume.transaction() as ops:
        d = ops.mkdir(ROOT_INO, b"d", 0o755, 0, 0)
        assert stat.S_ISDIR(d.mode) and d.nlink == 2
        assert ops.getattr(ROOT_INO).nlink == 3
        f = ops.create(d.ino, b"f", 0o644, 0, 0)
    assert errno_of(volume, lambda o: o.rmdir(ROOT_INO, b"d")) == errno.ENOTEMPTY
    assert errno_of(volume, lambda o: o.unlink(ROOT_INO, b"d")) == errno.EISDIR
    assert errno_of(volume, lambda o: o.rmdir(d.ino, b"f")) == errno.ENOTDIR
    assert errno_of(volume, lambda o: o.create(f.ino, b"x", 0o644, 0, 0)) == errno.ENOTDIR
    assert errno_of(volume, lambda o: o.lookup(ROOT_INO, b"x" * 256)) == errno.ENAMETOOLONG
    assert errno_of(volume, lambda o: o.link(d.ino, ROOT_INO, b"l")) == errno.EPERM
    assert errno_of(volume, lambda o: o.read(d.ino, 0, 1)) == errno.EISDIR
    assert errno_of(volume, lambda o: o.readlink(f.ino)) == errno.EINVAL
    run(volume, lambda o: o.unlink(d.ino, b"f"))
    run(volume, lambda o: o.rmdir(ROOT_INO, b"d"))
    with volume.transaction() as ops:
        assert ops.readdir(ROOT_INO) == []
        assert ops.getattr(ROOT_INO).nlink == 2
        with pytest.raises(FileNotFoundError):
            ops.getattr(f.ino)


def test_links_symlinks_and_holds(volume: Volume) -> None:
    with volume.transaction() as ops:
        f = ops.create(ROOT_INO, b"a", 0o644, 0, 0)
        ops.write(f.ino, 0, b"data")
        assert ops.link(f.ino, ROOT_INO, b"b").nlink == 2
        s = ops.symlink(ROOT_INO, b"s", b"a", 0, 0)
        assert stat.S_ISLNK(s.mode) and ops.readlink(s.ino) == b"a" and s.size == 1
    with volume.transaction() as ops:
        ops.unlink(ROOT_INO, b"a")
        assert ops.lookup(ROOT_INO, b"b").nlink == 1
        ops.hold(f.ino)
        ops.unlink(ROOT_INO, b"b")
    with volume.transaction() as ops:  # unlinked but held: still readable
        assert ops.getattr(f.ino).nlink == 0 and ops.read(f.ino, 0, 9) == b"data"
        ops.release(f.ino)
    with volume.transaction() as ops, pytest.raises(FileNotFoundError):
        ops.getattr(f.ino)
    assert volume.store.get(volume.keys.chunk(f.ino, 0)).value is None


def test_rename_rules(volume: Volume) -> None:
    with volume.transaction() as ops:
        a = ops.mkdir(ROOT_INO, b"a", 0o755, 0, 0).ino
        sub = ops.mkdir(a, b"sub", 0o755, 0, 0).ino
        ops.create(sub, b"f", 0o644, 0, 0)
        ops.mkdir(ROOT_INO, b"empty", 0o755, 0, 0)
        ops.create(ROOT_INO, b"file", 0o644, 0, 0)
        ops.create(ROOT_INO, b"other", 0o644, 0, 0)

    def rename(*args: object, **kw: bool) -> int | None:
        return errno_of(volume, lambda o: o.rename(*args, **kw))  # type: ignore[arg-type]

    assert rename(ROOT_INO, b"a", sub, b"x") == errno.EINVAL
    assert rename(ROOT_INO, b"a", a, b"x") == errno.EINVAL
    assert rename(sub, b"f", ROOT_INO, b"a") == errno.ENOTEMPTY  # target holds the source
    assert rename(ROOT_INO, b"file", ROOT_INO, b"empty") == errno.EISDIR
    assert rename(ROOT_INO, b"empty", ROOT_INO, b"file") == errno.ENOTDIR
    assert rename(ROOT_INO, b"empty", ROOT_INO, b"a") == errno.ENOTEMPTY
    assert rename(ROOT_INO, b"file", ROOT_INO, b"other", noreplace=True) == errno.EEXIST
    assert rename(ROOT_INO, b"missing", ROOT_INO, b"x") == errno.ENOENT
    assert rename(ROOT_INO, b"file", ROOT_INO, b"other") is None  # replaces
    assert rename(ROOT_INO, b"empty", a, b"moved") is None  # over nothing, into a
    assert rename(a, b"sub", ROOT_INO, b"sub") is None
    with volume.transaction() as ops:
        assert [n for n, _ in ops.readdir(ROOT_INO)] == [b"a", b"other", b"sub"]
        assert ops.getattr(a).nlink == 3  # moved in, sub moved out
        assert ops.lookup(ROOT_INO, b"sub").ino == sub
        assert [n for n, _ in ops.readdir(sub)] == [b"f"]
    assert rename(ROOT_INO, b"sub", a, b"moved") is None  # dir over an empty dir
    with volume.transaction() as ops:
        assert ops.getattr(a).nlink == 3 and ops.getattr(ROOT_INO).nlink == 3


def test_nothing_is_written_when_the_body_raises(volume: Volume) -> None:
    with pytest.raises(RuntimeError), volume.transaction() as ops:
        ops.create(ROOT_INO, b"ghost", 0o644, 0, 0)
        raise RuntimeError
    with volume.transaction() as ops:
        assert ops.readdir(ROOT_INO) == []


def test_a_missing_name_read_then_created_elsewhere_is_a_conflict(volume: Volume) -> None:
    first = volume.begin()
    ops = volume.ops(first)
    with pytest.raises(FileNotFoundError):
        ops.lookup(ROOT_INO, b"x")
    ops.create(ROOT_INO, b"y", 0o644, 0, 0)
    run(volume, lambda o: o.create(ROOT_INO, b"x", 0o644, 0, 0))
    assert not first.commit(volume.store).ok


def test_a_listing_conflicts_with_a_new_entry(volume: Volume) -> None:
    with volume.transaction() as ops:
        d = ops.mkdir(ROOT_INO, b"d", 0o755, 0, 0).ino
    first = volume.begin()
    listing = volume.ops(first).readdir(d)
    assert listing == []
    second = volume.begin()
    volume.ops(second).create(d, b"new", 0o644, 0, 0)
    assert second.commit(volume.store).ok
    volume.ops(first).write(volume.ops(first).create(ROOT_INO, b"n", 0o644, 0, 0).ino, 0, b"1")
    assert not first.commit(volume.store).ok
    with volume.transaction() as ops:
        assert [n for n, _ in ops.readdir(ROOT_INO)] == [b"d"]


def test_run_retries_a_conflict(volume: Volume) -> None:
    with volume.transaction() as ops:
        ino = ops.create(ROOT_INO, b"n", 0o644, 0, 0).ino
        ops.write(ino, 0, b"0")
    interfered = []

    def bump(ops: VolumeOps) -> int:
        value = int(ops.read(ino, 0, 10))
        if not interfered:  # someone else commits between our read and our commit
            interfered.append(1)
            run(volume, lambda o: o.write(ino, 0, b"5"))
        ops.write(ino, 0, str(value + 1).encode())
        return value + 1

    assert volume.run(bump) == 6


def test_conflicts_give_up_after_the_bound(volume: Volume) -> None:
    with volume.transaction() as ops:
        ino = ops.create(ROOT_INO, b"n", 0o644, 0, 0).ino

    def always_interfered(ops: VolumeOps) -> None:
        ops.read(ino, 0, 1)
        run(volume, lambda o: o.write(ino, 0, b"x"))
        ops.write(ino, 0, b"y")

    with pytest.raises(ConflictError):
        volume.run(always_interfered, attempts=3)


def test_the_cache_serves_reads_and_stays_correct(store: Store) -> None:
    cache = FsCache(store, max_staleness=0.0)
    mine = Volumes(store, cache=cache).create("vol")
    other = Volumes(store).open("vol")
    with mine.transaction() as ops:
        ino = ops.create(ROOT_INO, b"f", 0o644, 0, 0).ino
        ops.write(ino, 0, b"one")
    misses = cache.misses
    assert mine.run(lambda o: o.read(o.lookup(ROOT_INO, b"f").ino, 0, 9)) == b"one"
    assert cache.misses == misses  # our own commit was cached
    other.run(lambda o: o.write(ino, 0, b"two"))
    # Stale entries cost a conflict and a re-run (or are refreshed first), never "one".
    assert mine.run(lambda o: o.read(ino, 0, 9)) == b"two"
    other.run(lambda o: o.create(ROOT_INO, b"g", 0o644, 0, 0))
    assert [n for n, _ in mine.run(lambda o: o.readdir(ROOT_INO))] == [b"f", b"g"]


def test_volumes(store: Store) -> None:
    volumes = Volumes(store)
    assert volumes.list() == []
    first = volumes.create("one")
    volumes.create("two")
    with pytest.raises(VolumeExists):
        volumes.create("one")
    assert volumes.create("one", exist_ok=True).id == first.id
    assert volumes.list() == ["one", "two"]
    first.run(lambda o: o.write(o.create(ROOT_INO, b"f", 0o644, 0, 0).ino, 0, b"x"))
    volumes.delete("one")
    assert volumes.list() == ["two"]
    assert store.keys(first.keys.prefix) == []
    with pytest.raises(VolumeNotFound):
        first.run(lambda o: o.getattr(ROOT_INO))
    with pytest.raises(VolumeNotFound):
        volumes.delete("one")
    again = volumes.create("one")
    assert again.id != first.id and again.run(lambda o: o.readdir(ROOT_INO)) == []
    with pytest.raises(ValueError):
        volumes.create("../etc")


def test_the_change_feed_drops_only_what_changed_after_it_was_cached(store: Store) -> None:
    cache = FsCache(store, max_staleness=0.0)
    mine = Volumes(store, cache=cache).create("vol")
    with mine.transaction() as ops:
        a = ops.create(ROOT_INO, b"a", 0o644, 0, 0).ino
        b = ops.create(ROOT_INO, b"b", 0o644, 0, 0).ino
    mine.run(lambda o: (o.readdir(ROOT_INO), o.read(a, 0, 1), o.read(b, 0, 1)))
    cache.refresh()  # lists our own commit: what we cached from it stays
    misses = cache.misses
    mine.run(lambda o: (o.readdir(ROOT_INO), o.getattr(a), o.getattr(b)))
    assert cache.misses == misses
    Volumes(store).open("vol").run(lambda o: o.write(b, 0, b"new"))  # another writer
    cache.refresh()
    assert mine.run(lambda o: o.getattr(a).size) == 0 and cache.misses == misses  # kept
    assert mine.run(lambda o: o.read(b, 0, 9)) == b"new" and cache.misses > misses  # dropped
