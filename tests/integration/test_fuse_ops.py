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
    """Count the transactions ``volume.run`` starts from now on (in the list's one item)."""
    runs = [0]
    real_run = volume.run

    def counting_run(fn: Any, **kw: Any) -> Any:
        runs[0] += 1
        return real_run(fn, **kw)

    volume.run = counting_run  # type: ignore[method-assign]
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
