"""POSIX behaviour and Linux errno values, checked the same way on a native directory, on
a pass-through FUSE mount and on a stratus volume mounted with ``stratus mount``.

Each test runs in ``fs_root``, a fresh directory on the file system of its parameter; the
native run is the reference, so an expectation here that Linux does not meet is a bug in
the test, not in the mount.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from fuse_mounts import RENAME_NOREPLACE, renameat2

pytestmark = pytest.mark.system


def raises_errno(code: int, fn: object, *args: object) -> None:
    """``fn(*args)`` fails with exactly ``code``."""
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.errno == code, (errno.errorcode[code], info.value)


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# -- modes, ownership, times ----------------------------------------------------------


def test_modes(fs_root: Path) -> None:
    f = fs_root / "f"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o640)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640 & ~umask
    assert stat.S_ISREG(f.stat().st_mode)
    for mode in (0o600, 0o755, 0o000, 0o4755, 0o1777):
        os.chmod(f, mode)
        assert stat.S_IMODE(f.stat().st_mode) == mode
    d = fs_root / "d"
    d.mkdir(0o700)
    assert stat.S_ISDIR(d.stat().st_mode)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 & ~umask
    os.chmod(d, 0o751)
    assert stat.S_IMODE(d.stat().st_mode) == 0o751


def test_ownership(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"x")
    assert (f.stat().st_uid, f.stat().st_gid) == (os.getuid(), os.getgid())
    os.chown(f, 1234, 5678)
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 5678)
    os.chown(f, -1, 42)  # -1 leaves that id alone
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 42)
    os.chown(f, 7, -1)
    assert (f.stat().st_uid, f.stat().st_gid) == (7, 42)
    d = fs_root / "d"
    d.mkdir()
    os.chown(d, 99, 98)
    assert (d.stat().st_uid, d.stat().st_gid) == (99, 98)


def test_nanosecond_timestamps(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"x")
    atime, mtime = 1_234_567_890_123_456_789, 1_111_111_111_222_333_444
    os.utime(f, ns=(atime, mtime))
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    d = fs_root / "d"
    d.mkdir()
    os.utime(d, ns=(5, 999_999_999))
    assert (d.stat().st_atime_ns, d.stat().st_mtime_ns) == (5, 999_999_999)


def test_writes_and_metadata_changes_move_the_clocks(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"x")
    os.utime(f, ns=(10**9, 10**9))
    ctime = f.stat().st_ctime_ns
    with f.open("ab") as out:
        out.write(b"more")
    st = f.stat()
    assert st.st_mtime_ns > 10**9
    assert st.st_ctime_ns >= ctime
    os.utime(f, ns=(10**9, 10**9))
    before = f.stat().st_ctime_ns
    os.chmod(f, 0o600)
    assert f.stat().st_ctime_ns >= before
    assert f.stat().st_mtime_ns == 10**9  # chmod changes ctime only


def test_creating_a_file_changes_its_directory_mtime(fs_root: Path) -> None:
    d = fs_root / "d"
    d.mkdir()
    os.utime(d, ns=(10**9, 10**9))
    write(d / "f", b"")
    assert d.stat().st_mtime_ns > 10**9
    os.utime(d, ns=(10**9, 10**9))
    (d / "f").unlink()
    assert d.stat().st_mtime_ns > 10**9


# -- sizes ------------------------------------------------------------------------------


def test_truncate_shrinks_and_grows_with_zeros(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"abcdefgh")
    os.truncate(f, 3)
    assert f.read_bytes() == b"abc"
    os.truncate(f, 10)
    assert f.read_bytes() == b"abc" + bytes(7)
    assert f.stat().st_size == 10
    with f.open("r+b") as handle:
        handle.truncate(1)
        handle.seek(0)
        assert handle.read() == b"a"
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert f.stat().st_size == 0


def test_large_and_sparse_writes_read_back(fs_root: Path) -> None:
    f = fs_root / "f"
    data = os.urandom(300_000)  # spans several chunks of any sensible size
    write(f, data)
    assert f.read_bytes() == data
    with f.open("r+b") as handle:
        handle.seek(70_000)
        handle.write(b"Z" * 10)
    expected = data[:70_000] + b"Z" * 10 + data[70_010:]
    assert f.read_bytes() == expected
    with f.open("r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"end")
    assert f.stat().st_size == 1_000_003
    content = f.read_bytes()
    assert content[:300_000] == expected
    assert content[300_000:1_000_000] == bytes(700_000)
    assert content[1_000_000:] == b"end"


def test_append_mode_writes_at_the_end(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"one\n")
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"two\n")
    os.close(fd)
    with f.open("a") as out:
        out.write("three\n")
    assert f.read_bytes() == b"one\ntwo\nthree\n"


# -- rename -----------------------------------------------------------------------------


def test_rename_file_over_file_replaces_it(fs_root: Path) -> None:
    a, b = fs_root / "a", fs_root / "b"
    write(a, b"new")
    write(b, b"old")
    ino = a.stat().st_ino
    os.rename(a, b)
    assert not a.exists()
    assert b.read_bytes() == b"new"
    assert b.stat().st_ino == ino
    assert sorted(os.listdir(fs_root)) == ["b"]


def test_rename_dir_over_empty_dir(fs_root: Path) -> None:
    (fs_root / "src").mkdir()
    write(fs_root / "src" / "inside", b"1")
    (fs_root / "dst").mkdir()
    os.rename(fs_root / "src", fs_root / "dst")
    assert os.listdir(fs_root) == ["dst"]
    assert (fs_root / "dst" / "inside").read_bytes() == b"1"


def test_rename_errors(fs_root: Path) -> None:
    (fs_root / "dir").mkdir()
    (fs_root / "full").mkdir()
    write(fs_root / "full" / "x", b"")
    (fs_root / "empty").mkdir()
    write(fs_root / "file", b"")
    raises_errno(errno.ENOTEMPTY, os.rename, fs_root / "dir", fs_root / "full")
    raises_errno(errno.EISDIR, os.rename, fs_root / "file", fs_root / "empty")
    raises_errno(errno.ENOTDIR, os.rename, fs_root / "dir", fs_root / "file")
    (fs_root / "dir" / "sub").mkdir()
    raises_errno(errno.EINVAL, os.rename, fs_root / "dir", fs_root / "dir" / "sub" / "in")
    raises_errno(errno.EINVAL, os.rename, fs_root / "dir", fs_root / "dir" / "in")
    raises_errno(errno.ENOENT, os.rename, fs_root / "missing", fs_root / "other")
    raises_errno(errno.ENOENT, os.rename, fs_root / "file", fs_root / "missing" / "x")
    raises_errno(errno.ENOTDIR, os.rename, fs_root / "file", fs_root / "file" / "x")
    assert sorted(os.listdir(fs_root)) == ["dir", "empty", "file", "full"]


def test_rename_noreplace(fs_root: Path) -> None:
    write(fs_root / "a", b"a")
    write(fs_root / "b", b"b")
    raises_errno(errno.EEXIST, renameat2, fs_root / "a", fs_root / "b", RENAME_NOREPLACE)
    renameat2(fs_root / "a", fs_root / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(fs_root)) == ["b", "c"]
    assert (fs_root / "c").read_bytes() == b"a"


def test_rename_onto_itself_or_a_hard_link_of_itself_changes_nothing(fs_root: Path) -> None:
    write(fs_root / "a", b"a")
    os.rename(fs_root / "a", fs_root / "a")
    os.link(fs_root / "a", fs_root / "b")
    os.rename(fs_root / "a", fs_root / "b")  # POSIX: same inode, both names stay
    assert sorted(os.listdir(fs_root)) == ["a", "b"]
    assert (fs_root / "a").stat().st_nlink == 2


def test_rename_moves_a_tree_between_directories(fs_root: Path) -> None:
    (fs_root / "a" / "deep" / "er").mkdir(parents=True)
    write(fs_root / "a" / "deep" / "er" / "f", b"leaf")
    (fs_root / "b").mkdir()
    os.rename(fs_root / "a" / "deep", fs_root / "b" / "moved")
    assert (fs_root / "b" / "moved" / "er" / "f").read_bytes() == b"leaf"
    assert os.listdir(fs_root / "a") == []
    assert (fs_root / "a").stat().st_nlink == 2
    assert (fs_root / "b").stat().st_nlink == 3


# -- links ------------------------------------------------------------------------------


def test_hard_links_share_the_inode_and_count(fs_root: Path) -> None:
    a = fs_root / "a"
    write(a, b"shared")
    assert a.stat().st_nlink == 1
    os.link(a, fs_root / "b")
    (fs_root / "sub").mkdir()
    os.link(a, fs_root / "sub" / "c")
    for name in ("a", "b", "sub/c"):
        st = (fs_root / name).stat()
        assert (st.st_nlink, st.st_ino) == (3, a.stat().st_ino)
    with (fs_root / "b").open("ab") as out:
        out.write(b"!")
    assert (fs_root / "sub" / "c").read_bytes() == b"shared!"
    a.unlink()
    assert (fs_root / "b").stat().st_nlink == 2
    assert (fs_root / "b").read_bytes() == b"shared!"
    raises_errno(errno.EEXIST, os.link, fs_root / "b", fs_root / "sub" / "c")
    raises_errno(errno.EPERM, os.link, fs_root / "sub", fs_root / "sub2")
    raises_errno(errno.ENOENT, os.link, fs_root / "missing", fs_root / "x")


def test_directory_link_counts(fs_root: Path) -> None:
    d = fs_root / "d"
    d.mkdir()
    assert d.stat().st_nlink == 2
    (d / "x").mkdir()
    (d / "y").mkdir()
    write(d / "file", b"")
    assert d.stat().st_nlink == 4
    (d / "x").rmdir()
    assert d.stat().st_nlink == 3


def test_symlinks(fs_root: Path) -> None:
    write(fs_root / "target", b"through the link")
    os.symlink("target", fs_root / "link")
    os.symlink("nowhere/at/all", fs_root / "dangling")
    assert os.readlink(fs_root / "link") == "target"
    st = os.lstat(fs_root / "link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    assert stat.S_ISREG((fs_root / "link").stat().st_mode)
    assert (fs_root / "link").read_bytes() == b"through the link"
    assert os.readlink(fs_root / "dangling") == "nowhere/at/all"
    raises_errno(errno.ENOENT, os.stat, fs_root / "dangling")
    raises_errno(errno.EINVAL, os.readlink, fs_root / "target")
    raises_errno(errno.EEXIST, os.symlink, "x", fs_root / "link")
    (fs_root / "dir").mkdir()
    os.symlink("../target", fs_root / "dir" / "up")
    assert (fs_root / "dir" / "up").read_bytes() == b"through the link"
    os.unlink(fs_root / "link")
    assert (fs_root / "target").exists()


# -- errors -----------------------------------------------------------------------------


def test_errno_values(fs_root: Path) -> None:
    (fs_root / "dir").mkdir()
    write(fs_root / "dir" / "inside", b"")
    write(fs_root / "file", b"")
    raises_errno(errno.EISDIR, os.unlink, fs_root / "dir")
    raises_errno(errno.ENOTEMPTY, os.rmdir, fs_root / "dir")
    raises_errno(errno.ENOTDIR, os.rmdir, fs_root / "file")
    raises_errno(errno.ENOENT, os.rmdir, fs_root / "missing")
    raises_errno(errno.ENOENT, os.unlink, fs_root / "missing")
    raises_errno(errno.ENOENT, os.stat, fs_root / "missing")
    raises_errno(errno.ENOENT, os.open, fs_root / "missing", os.O_RDONLY)
    raises_errno(errno.ENOENT, os.open, fs_root / "no" / "file", os.O_CREAT | os.O_WRONLY)
    raises_errno(errno.EEXIST, os.mkdir, fs_root / "dir")
    raises_errno(errno.EEXIST, os.mkdir, fs_root / "file")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    raises_errno(errno.EEXIST, os.open, fs_root / "file", flags)
    raises_errno(errno.ENOTDIR, os.stat, fs_root / "file" / "x")
    raises_errno(errno.ENOTDIR, os.listdir, fs_root / "file")
    raises_errno(errno.ENOTDIR, os.mkdir, fs_root / "file" / "x")
    raises_errno(errno.EISDIR, os.open, fs_root / "dir", os.O_WRONLY)
    raises_errno(errno.ENAMETOOLONG, os.stat, fs_root / ("n" * 256))
    raises_errno(errno.ENAMETOOLONG, os.mkdir, fs_root / ("n" * 256))
    write(fs_root / ("n" * 255), b"longest name")
    assert (fs_root / ("n" * 255)).read_bytes() == b"longest name"
    (fs_root / "dir" / "inside").unlink()
    os.rmdir(fs_root / "dir")
    assert sorted(os.listdir(fs_root)) == ["file", "n" * 255]


def test_statfs(fs_root: Path) -> None:
    st = os.statvfs(fs_root)
    assert st.f_bsize > 0
    assert st.f_frsize > 0
    assert st.f_namemax == 255
    assert 0 <= st.f_bavail <= st.f_bfree <= st.f_blocks
    assert 0 <= st.f_ffree <= st.f_files


# -- open files -------------------------------------------------------------------------


def test_an_unlinked_open_file_stays_readable_and_writable(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"still here")
    with f.open("r+b") as handle:
        f.unlink()
        assert not f.exists()
        assert os.listdir(fs_root) == []
        assert handle.read() == b"still here"
        handle.write(b", and more")
        handle.flush()
        handle.seek(0)
        assert handle.read() == b"still here, and more"
        assert os.fstat(handle.fileno()).st_nlink == 0
    write(f, b"a new file")  # the name is free for a new inode
    assert f.read_bytes() == b"a new file"


def test_a_replaced_open_file_keeps_its_old_content(fs_root: Path) -> None:
    write(fs_root / "f", b"old")
    with (fs_root / "f").open("rb") as handle:
        write(fs_root / "tmp", b"new")
        os.replace(fs_root / "tmp", fs_root / "f")
        assert handle.read() == b"old"
    assert (fs_root / "f").read_bytes() == b"new"


def test_listing_a_large_directory(fs_root: Path) -> None:
    names = {f"entry-{i:04d}-" + "x" * 40 for i in range(600)}  # several readdir batches
    for name in names:
        write(fs_root / name, b"")
    assert set(os.listdir(fs_root)) == names
    with os.scandir(fs_root) as entries:
        assert {e.name for e in entries if e.is_file()} == names


def test_two_descriptors_see_each_others_writes(fs_root: Path) -> None:
    f = fs_root / "f"
    write(f, b"")
    with f.open("r+b", buffering=0) as one, f.open("rb", buffering=0) as two:
        one.write(b"hello")
        assert two.read() == b"hello"
        one.truncate(2)
        two.seek(0)
        assert two.read() == b"he"
