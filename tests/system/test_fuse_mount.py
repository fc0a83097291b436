"""``stratus mount`` / ``stratus umount`` as real processes: detaching, clear errors, every
request committed on its own, and a broken record answered with EIO while the mount
keeps serving."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import fuse_mounts
from helpers import alive, wait_until
from stratus.fs import ROOT_INO, Volume, Volumes
from stratus.fs.session import transaction
from stratus.kv.open import open_store
from stratus.store.base import Store

pytestmark = pytest.mark.system


def stratus_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*fuse_mounts.STRATUS, *map(str, args)], capture_output=True, text=True, timeout=60
    )


def store_of(data_dir: Path) -> Store:
    return open_store(f"sqlite:{data_dir / 'state.db'}")


def read_file(volume: Volume, name: bytes) -> bytes:
    def read(ops: object) -> bytes:
        attr = ops.lookup(ROOT_INO, name)  # type: ignore[attr-defined]
        return ops.read(attr.ino, 0, attr.size)  # type: ignore[attr-defined,no-any-return]

    return volume.run(read)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A volume ``v`` mounted in the foreground with no kernel cache: (mount, data dir)."""
    data_dir, mnt = tmp_path / "data", tmp_path / "mnt"
    with fuse_mounts.stratus("v", data_dir, mnt, "--cache-timeout", "0"):
        yield mnt, data_dir


def test_mount_detaches_umount_stops_it_and_the_data_stay(tmp_path: Path) -> None:
    data_dir, mnt = tmp_path / "data", tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = stratus_cli("mount", "vol", mnt, "--data-dir", data_dir, "--create")
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(mnt)  # mounted when the command returned
        match = re.search(r"pid (\d+)", done.stdout)
        assert match, done.stdout
        pid = int(match.group(1))
        (mnt / "kept.txt").write_text("across mounts\n")
        done = stratus_cli("umount", mnt)
        assert done.returncode == 0, done.stderr
        assert not os.path.ismount(mnt)
        assert wait_until(lambda: not alive(pid), timeout=30)
        # Remounted (no --create: it exists now), the file is there.
        done = stratus_cli("mount", "vol", mnt, "--data-dir", data_dir)
        assert done.returncode == 0, done.stderr
        assert (mnt / "kept.txt").read_text() == "across mounts\n"
    finally:
        fuse_mounts.unmount(mnt)


def test_mount_errors_are_clear(tmp_path: Path) -> None:
    data_dir, mnt = tmp_path / "data", tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        (("mount", "missing", mnt, "--data-dir", data_dir), "no volume named 'missing'"),
        (("mount", "v", tmp_path / "nowhere", "--data-dir", data_dir), "does not exist"),
        (("mount", "v", "--data-dir", data_dir, mnt, "--store", "bogus:x"), "unknown store"),
        (("mount", "bad/name", mnt, "--data-dir", data_dir, "--create"), "bad volume name"),
        (("umount", mnt), "is not mounted"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases.append((("mount", "v", tmp_path / "full", "--data-dir", data_dir), "is not empty"))
    (tmp_path / "file").write_text("")
    cases.append((("mount", "v", tmp_path / "file", "--data-dir", data_dir), "not a directory"))
    for args, message in cases:
        done = stratus_cli(*args)
        assert done.returncode != 0, args
        assert message in done.stderr, (args, done.stderr)
    assert not os.path.ismount(mnt)


def test_mounting_twice_is_refused(mounted: tuple[Path, Path]) -> None:
    mnt, data_dir = mounted
    done = stratus_cli("mount", "v", mnt, "--data-dir", data_dir)
    assert done.returncode != 0
    assert "already a mount point" in done.stderr
    assert os.listdir(mnt) == []  # the first mount still answers


def test_each_request_commits_on_its_own(mounted: tuple[Path, Path]) -> None:
    mnt, data_dir = mounted
    volume = Volumes(store_of(data_dir)).open("v")
    fd = os.open(mnt / "log", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"first ")
        assert read_file(volume, b"log") == b"first "  # committed before write() returned
        os.write(fd, b"second")
        assert read_file(volume, b"log") == b"first second"
    finally:
        os.close(fd)
    # And what others commit is what the mount reads (no kernel cache in this fixture).
    volume.run(lambda ops: ops.write(ops.lookup(ROOT_INO, b"log").ino, 0, b"FIRST"))
    assert (mnt / "log").read_bytes() == b"FIRST second"
    volume.run(lambda ops: ops.mkdir(ROOT_INO, b"made-elsewhere", 0o755, 0, 0))
    assert sorted(os.listdir(mnt)) == ["log", "made-elsewhere"]


def test_an_unexpected_error_is_eio_and_the_mount_survives(mounted: tuple[Path, Path]) -> None:
    mnt, data_dir = mounted
    (mnt / "broken").write_bytes(b"soon unreadable")
    (mnt / "fine").write_bytes(b"still fine")
    store = store_of(data_dir)
    volume = Volumes(store).open("v")
    ino = volume.run(lambda ops: ops.lookup(ROOT_INO, b"broken")).ino
    store.put(volume.keys.inode(ino), b"\xc1 not an inode record")  # corrupt it
    with pytest.raises(OSError) as info:
        (mnt / "broken").read_bytes()
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:
        os.stat(mnt / "broken")
    assert info.value.errno == errno.EIO
    assert (mnt / "fine").read_bytes() == b"still fine"
    (mnt / "d").mkdir()
    (mnt / "d" / "after").write_text("the mount still serves")
    assert os.listdir(mnt / "d") == ["after"]
    assert (mnt / "d" / "after").read_text() == "the mount still serves"


def test_sigterm_unmounts_and_exits(tmp_path: Path) -> None:
    data_dir, mnt = tmp_path / "data", tmp_path / "mnt"
    with fuse_mounts.stratus("v", data_dir, mnt) as process:
        (mnt / "f").write_text("committed")
        process.terminate()
        assert process.wait(timeout=30) == 0
        assert not os.path.ismount(mnt)
    assert read_file(Volumes(store_of(data_dir)).open("v"), b"f") == b"committed"


def test_the_path_api_and_the_mount_see_each_others_work(mounted: tuple[Path, Path]) -> None:
    mnt, data_dir = mounted
    (mnt / "from-mount").mkdir()
    (mnt / "from-mount" / "note.txt").write_text("written by a program\n")
    volumes = Volumes(store_of(data_dir))
    with transaction(volumes, "v") as fs:  # one transaction, as an invocation is
        assert fs.listdir("/from-mount") == ["note.txt"]
        with fs.open("/from-mount/note.txt") as f:
            assert f.read() == "written by a program\n"
        fs.makedirs("/reports/2026")
        with fs.open("/reports/2026/q1.csv", "w") as f:
            f.write("a,b\n1,2\n")
        fs.rename("/from-mount/note.txt", "/reports/note.txt")
    assert (mnt / "reports" / "2026" / "q1.csv").read_text() == "a,b\n1,2\n"
    assert sorted(os.listdir(mnt / "reports")) == ["2026", "note.txt"]
    assert os.listdir(mnt / "from-mount") == []


def test_appends_land_at_the_volumes_end_despite_the_kernel_cache(tmp_path: Path) -> None:
    data_dir, mnt = tmp_path / "data", tmp_path / "mnt"
    with fuse_mounts.stratus("v", data_dir, mnt, "--cache-timeout", "600"):
        (mnt / "log").write_bytes(b"mount 1\n")
        assert (mnt / "log").stat().st_size == 8  # the kernel caches this size
        volume = Volumes(store_of(data_dir)).open("v")
        volume.run(lambda ops: ops.write(ops.lookup(ROOT_INO, b"log").ino, 8, b"elsewhere\n"))
        with open(mnt / "log", "ab") as f:
            f.write(b"mount 2\n")
        assert read_file(volume, b"log") == b"mount 1\nelsewhere\nmount 2\n"
