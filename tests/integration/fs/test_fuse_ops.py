"""``VolumeFS``'s handlers called directly (no kernel): the replies, the errno values, the
holds an open file keeps, and ``EIO`` for what the volume did not expect. The same
handlers behind a real mount are tested in ``tests/system``."""

from __future__ import annotations

import errno
import stat
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pyfuse3
import pytest
import trio

from stratus.backoff import Backoff
from stratus.fs import ROOT_INO, Volume, Volumes
from stratus.fs.fuse import VolumeFS
from stratus.kv.values import merge_encoded
from stratus.store import MemoryStore

T = TypeVar("T")
CTX: Any = SimpleNamespace(uid=1000, gid=100, pid=1, umask=0o022)


def call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    async def main() -> T:
        return await fn(*args)

    return trio.run(main)


def fuse_errno(fn: Callable[..., Awaitable[Any]], *args: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        call(fn, *args)
    return info.value.errno


@pytest.fixture
def volume() -> Volume:
    return Volumes(MemoryStore(merge_encoded)).create("v")


@pytest.fixture
def fs(volume: Volume) -> VolumeFS:
    return VolumeFS(volume, cache_timeout=0.5)


def test_create_write_read_and_attributes(fs: VolumeFS) -> None:
    info, entry = call(fs.create, ROOT_INO, b"f", stat.S_IFREG | 0o640, 0, CTX)
    assert (entry.st_uid, entry.st_gid) == (1000, 100)
    assert stat.S_IMODE(entry.st_mode) == 0o640 and stat.S_ISREG(entry.st_mode)
    assert entry.attr_timeout == entry.entry_timeout == 0.5
    assert call(fs.write, info.fh, 0, b"hello") == 5
    assert call(fs.read, info.fh, 1, 100) == b"ello"
    call(fs.release, info.fh)
    looked = call(fs.lookup, ROOT_INO, b"f", CTX)
    assert (looked.st_ino, looked.st_size) == (entry.st_ino, 5)


def test_setattr_passes_only_the_fields_asked(fs: VolumeFS) -> None:
    _, entry = call(fs.create, ROOT_INO, b"f", stat.S_IFREG | 0o644, 0, CTX)
    attr = pyfuse3.EntryAttributes()
    attr.st_mode = stat.S_IFREG | 0o600
    attr.st_uid = 7
    attr.st_mtime_ns = 123
    asked = {"update_mode", "update_mtime"}  # pyfuse3's SetattrFields are read-only
    names = ("mode", "uid", "gid", "size", "atime", "mtime", "ctime")
    fields = SimpleNamespace(**{f"update_{n}": f"update_{n}" in asked for n in names})
    changed = call(fs.setattr, entry.st_ino, attr, fields, None, CTX)
    assert stat.S_IMODE(changed.st_mode) == 0o600
    assert changed.st_mtime_ns == 123
    assert changed.st_uid == 1000  # not asked: unchanged


def test_errno_values_come_through(fs: VolumeFS) -> None:
    call(fs.mkdir, ROOT_INO, b"d", stat.S_IFDIR | 0o755, CTX)
    assert fuse_errno(fs.lookup, ROOT_INO, b"missing", CTX) == errno.ENOENT
    assert fuse_errno(fs.mkdir, ROOT_INO, b"d", 0o755, CTX) == errno.EEXIST
    assert fuse_errno(fs.unlink, ROOT_INO, b"d", CTX) == errno.EISDIR
    assert fuse_errno(fs.lookup, ROOT_INO, b"n" * 256, CTX) == errno.ENAMETOOLONG
    fifo = stat.S_IFIFO | 0o644
    assert fuse_errno(fs.mknod, ROOT_INO, b"fifo", fifo, 0, CTX) == errno.EPERM
    exchange = pyfuse3.RENAME_EXCHANGE
    assert fuse_errno(fs.rename, ROOT_INO, b"d", ROOT_INO, b"e", exchange, CTX) == errno.EINVAL


def test_rename_noreplace(fs: VolumeFS) -> None:
    for name in (b"a", b"b"):
        call(fs.mkdir, ROOT_INO, name, 0o755, CTX)
    noreplace = pyfuse3.RENAME_NOREPLACE
    assert fuse_errno(fs.rename, ROOT_INO, b"a", ROOT_INO, b"b", noreplace, CTX) == errno.EEXIST
    call(fs.rename, ROOT_INO, b"a", ROOT_INO, b"c", noreplace, CTX)
    handle = call(fs.opendir, ROOT_INO, CTX)
    assert [name for name, _ in fs._listings[handle]] == [b"b", b"c"]
    call(fs.releasedir, handle)


def test_an_unlinked_open_file_lives_until_its_last_release(fs: VolumeFS, volume: Volume) -> None:
    info, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    call(fs.write, info.fh, 0, b"data")
    second = call(fs.open, entry.st_ino, 0, CTX)
    call(fs.unlink, ROOT_INO, b"f", CTX)
    assert call(fs.getattr, entry.st_ino, CTX).st_nlink == 0
    call(fs.release, info.fh)
    assert call(fs.read, second.fh, 0, 10) == b"data"  # one handle still holds it
    call(fs.release, second.fh)
    assert not volume.is_held(entry.st_ino)
    assert fuse_errno(fs.getattr, entry.st_ino, CTX) == errno.ENOENT  # deleted at last
    chunks = volume.store.keys(volume.keys.prefix + "c/")
    assert chunks == []


def test_a_file_renamed_over_while_open_keeps_its_data(fs: VolumeFS, volume: Volume) -> None:
    old, old_entry = call(fs.create, ROOT_INO, b"target", 0o644, 0, CTX)
    call(fs.write, old.fh, 0, b"old")
    new, _ = call(fs.create, ROOT_INO, b"tmp", 0o644, 0, CTX)
    call(fs.write, new.fh, 0, b"new")
    call(fs.release, new.fh)
    call(fs.rename, ROOT_INO, b"tmp", ROOT_INO, b"target", 0, CTX)
    assert call(fs.read, old.fh, 0, 10) == b"old"
    call(fs.release, old.fh)
    assert fuse_errno(fs.getattr, old_entry.st_ino, CTX) == errno.ENOENT


def count_runs(volume: Volume) -> list[int]:
    """Count the transactions ``volume.attempt`` runs from now on (in the list's one item)."""
    runs = [0]
    real_attempt = volume.attempt

    def counting_attempt(fn: Any) -> Any:
        runs[0] += 1
        return real_attempt(fn)

    volume.attempt = counting_attempt  # type: ignore[method-assign]
    return runs


def test_closing_a_linked_file_costs_no_transaction(fs: VolumeFS, volume: Volume) -> None:
    info, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    runs = count_runs(volume)
    call(fs.release, info.fh)
    reopened = call(fs.open, entry.st_ino, 0, CTX)
    call(fs.release, reopened.fh)
    assert runs == [0]
    assert not volume.is_held(entry.st_ino)


@pytest.mark.parametrize(("timeout", "validated"), [(0.5, 0), (0.0, 3)])
def test_metadata_reads_are_validated_only_without_the_kernel_cache(
    volume: Volume, timeout: float, validated: int
) -> None:
    fs = VolumeFS(volume, cache_timeout=timeout)
    _, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    runs = count_runs(volume)
    call(fs.lookup, ROOT_INO, b"f", CTX)
    call(fs.getattr, entry.st_ino, CTX)
    call(fs.statfs, CTX)
    assert runs == [validated]
    info = call(fs.open, entry.st_ino, 0, CTX)
    call(fs.read, info.fh, 0, 10)
    assert runs == [validated + 1]  # data reads always are


def test_an_unexpected_exception_is_eio_and_logged(
    fs: VolumeFS, volume: Volume, caplog: pytest.LogCaptureFixture
) -> None:
    _, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    volume.store.put(volume.keys.inode(entry.st_ino), b"\xc1 garbage")
    assert fuse_errno(fs.getattr, entry.st_ino, CTX) == errno.EIO
    assert "getattr failed; answering EIO" in caplog.text
    assert call(fs.getattr, ROOT_INO, CTX).st_ino == ROOT_INO  # the rest still answers


def test_statfs(fs: VolumeFS) -> None:
    data = call(fs.statfs, CTX)
    assert data.f_namemax == 255
    assert data.f_bsize > 0 and data.f_blocks >= data.f_bfree == data.f_bavail


def conflict_while(
    volume: Volume, monkeypatch: pytest.MonkeyPatch, busy: Callable[[], bool]
) -> list[int]:
    """While ``busy()``, every commit that writes file data first meets another writer's
    new version of a key it read (a real conflict); returns the count (one item)."""
    conflicts = [0]
    real_commit = volume.store.commit
    chunks = volume.keys.prefix + "c/"

    def commit(txn: Any) -> Any:
        if busy() and txn.reads and any(w.key.startswith(chunks) for w in txn.writes):
            conflicts[0] += 1
            key = next(iter(txn.reads))
            volume.store.put(key, volume.store.get(key).value or b"")
        return real_commit(txn)

    monkeypatch.setattr(volume.store, "commit", commit)
    return conflicts


def test_other_requests_are_served_while_a_conflicting_one_pauses(
    volume: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = VolumeFS(volume, cache_timeout=0.5, backoff=Backoff(deadline=60.0))
    info, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    done: list[str] = []
    conflicts = conflict_while(volume, monkeypatch, lambda: "mkdir" not in done)

    async def main() -> None:
        async def write() -> None:
            await fs.write(info.fh, 0, b"data")
            done.append("write")

        async def mkdir() -> None:
            while not conflicts[0]:  # once the write has met its first conflict
                await trio.sleep(0.001)
            await fs.mkdir(ROOT_INO, b"d", 0o755, CTX)  # commits: the write's pause let it
            done.append("mkdir")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(mkdir)

    trio.run(main)
    assert done == ["mkdir", "write"]  # the write conflicted until the mkdir was done
    assert conflicts[0] >= 1
    assert call(fs.read, info.fh, 0, 10) == b"data"
    assert call(fs.lookup, ROOT_INO, b"d", CTX).st_ino != entry.st_ino


def test_a_request_conflicting_past_its_deadline_is_eio_and_writes_nothing(
    volume: Volume, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fs = VolumeFS(volume, cache_timeout=0.5, backoff=Backoff(deadline=0.05))
    info, _ = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    busy = [True]
    conflicts = conflict_while(volume, monkeypatch, lambda: busy[0])
    assert fuse_errno(fs.write, info.fh, 0, b"lost") == errno.EIO
    assert conflicts[0] >= 1
    assert "reads changed in each of" in caplog.text
    busy[0] = False
    assert call(fs.read, info.fh, 0, 10) == b""  # nothing of the failed write
    assert call(fs.write, info.fh, 0, b"kept") == 4
    assert call(fs.read, info.fh, 0, 10) == b"kept"


def test_a_handle_opened_while_the_last_release_pauses_keeps_the_file(
    volume: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hold is dropped once, before the transaction: a re-run after a pause in which
    # the inode was opened again must not drop that new handle's hold.
    fs = VolumeFS(volume, cache_timeout=0.5, backoff=Backoff(deadline=60.0))
    info, entry = call(fs.create, ROOT_INO, b"f", 0o644, 0, CTX)
    call(fs.write, info.fh, 0, b"data")
    call(fs.unlink, ROOT_INO, b"f", CTX)  # open and nameless: the last release deletes it
    reopened: list[pyfuse3.FileInfo] = []
    conflicts = conflict_while(volume, monkeypatch, lambda: not reopened)

    async def main() -> None:
        async def reopen() -> None:  # as an open of /proc/self/fd/N does
            while not conflicts[0]:
                await trio.sleep(0.001)
            reopened.append(await fs.open(entry.st_ino, 0, CTX))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.release, info.fh)
            nursery.start_soon(reopen)

    trio.run(main)
    assert volume.is_held(entry.st_ino)
    assert call(fs.read, reopened[0].fh, 0, 10) == b"data"
    call(fs.release, reopened[0].fh)
    assert fuse_errno(fs.getattr, entry.st_ino, CTX) == errno.ENOENT  # deleted at last
