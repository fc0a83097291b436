"""The path-level API (``FileSystem``, ``Path``, open files) over a memory store."""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator

import pytest

from stratus import ConflictError, VolumeNotFound
from stratus.fs import FileSystem, FsSession, Volumes
from stratus.fs.session import transaction
from stratus.kv.values import merge_encoded
from stratus.store import MemoryStore


@pytest.fixture
def volumes() -> Iterator[Volumes]:
    with MemoryStore(merge_encoded) as store:
        yield Volumes(store)


@pytest.fixture
def fs(volumes: Volumes) -> Iterator[FileSystem]:
    with transaction(volumes) as fs:
        yield fs


def test_open_modes_text_and_binary(fs: FileSystem) -> None:
    with fs.open("/a.txt", "w") as f:
        assert isinstance(f, io.TextIOWrapper) and f.mode == "w"
        f.write("héllo\nworld\n")
    with fs.open("/a.txt") as f:
        assert f.readline() == "héllo\n" and list(f) == ["world\n"]
    with fs.open("/a.txt", "rb") as f:
        assert isinstance(f, io.BufferedReader)
        assert f.read(2) == b"h\xc3" and f.tell() == 2
        f.seek(-6, io.SEEK_END)
        assert f.read() == b"world\n"
    with fs.open("/a.txt", "a") as f:
        f.write("more")
    with fs.open("/a.txt", "r+b") as f:
        assert isinstance(f, io.BufferedRandom)
        f.seek(1)
        f.write(b"E")
        f.truncate(5)
    assert fs.read_bytes("/a.txt") == b"hE\xa9ll"
    with fs.open("/a.txt", "ab+") as f:
        f.write(b"!")
        f.seek(0)
        assert f.read() == b"hE\xa9ll!"
    with pytest.raises(FileExistsError):
        fs.open("/a.txt", "x")
    with fs.open("/new", "xb", buffering=0) as raw:
        assert raw.write(b"raw") == 3
    with fs.open("/a.txt", "w") as f:
        pass
    assert fs.stat("/a.txt").st_size == 0
    with pytest.raises(io.UnsupportedOperation), fs.open("/new", "rb") as f:
        f.write(b"x")
    for bad, error in [
        ("rw", ValueError),
        ("rt b", ValueError),
        ("tb", ValueError),
        ("", ValueError),
    ]:
        with pytest.raises(error):
            fs.open("/a.txt", bad)
    with pytest.raises(ValueError):
        fs.open("/a.txt", "r", buffering=0)
    with pytest.raises(ValueError):
        fs.open("/a.txt", "rb", encoding="utf-8")


def test_errors_have_the_errno_of_os(fs: FileSystem) -> None:
    fs.mkdir("/d")
    fs.write_bytes("/d/f", b"x")
    cases = [
        (lambda: fs.open("/missing"), FileNotFoundError, errno.ENOENT),
        (lambda: fs.open("/d"), IsADirectoryError, errno.EISDIR),
        (lambda: fs.open("/d", "w"), IsADirectoryError, errno.EISDIR),
        (lambda: fs.open("/d/f/g", "w"), NotADirectoryError, errno.ENOTDIR),
        (lambda: fs.mkdir("/d"), FileExistsError, errno.EEXIST),
        (lambda: fs.rmdir("/d"), OSError, errno.ENOTEMPTY),
        (lambda: fs.remove("/d"), IsADirectoryError, errno.EISDIR),
        (lambda: fs.rmdir("/d/f"), NotADirectoryError, errno.ENOTDIR),
        (lambda: fs.listdir("/d/f"), NotADirectoryError, errno.ENOTDIR),
        (lambda: fs.stat("/d/f/"), NotADirectoryError, errno.ENOTDIR),
        (lambda: fs.rename("/d", "/d/sub"), OSError, errno.EINVAL),
        (lambda: fs.mkdir("/x/y"), FileNotFoundError, errno.ENOENT),
        (lambda: fs.stat("/" + "n" * 256), OSError, errno.ENAMETOOLONG),
        (lambda: fs.rmdir("/"), OSError, errno.EBUSY),
    ]
    for call, kind, code in cases:
        with pytest.raises(kind) as caught:
            call()
        assert caught.value.errno == code, call
    with pytest.raises(ValueError, match="null byte"):
        fs.stat("/a\0b")
    with pytest.raises(TypeError):
        fs.stat(3)  # type: ignore[arg-type]


def test_paths_cannot_leave_the_volume(fs: FileSystem) -> None:
    fs.write_bytes("/top", b"1")
    assert fs.read_bytes("/../../top") == b"1"
    assert fs.read_bytes("../top") == b"1"
    assert fs.read_bytes("top") == b"1"
    fs.makedirs("/a/b")
    assert fs.read_bytes("/a/b/../../../top") == b"1"
    fs.symlink("/../../top", "/a/up")  # an absolute target starts at the volume's root
    assert fs.read_bytes("/a/up") == b"1"
    assert fs.listdir(b"/") == [b"a", b"top"]


def test_directories_walk_scandir_links(fs: FileSystem) -> None:
    fs.makedirs("/a/b/c")
    fs.makedirs("/a/b", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("/a/b")
    fs.write_bytes("/a/b/f1", b"1")
    fs.write_bytes("/a/f2", b"22")
    assert list(fs.walk("/a")) == [
        ("/a", ["b"], ["f2"]),
        ("/a/b", ["c"], ["f1"]),
        ("/a/b/c", [], []),
    ]
    assert [t[0] for t in fs.walk("/a", topdown=False)] == ["/a/b/c", "/a/b", "/a"]
    with fs.scandir("/a") as entries:
        found = {e.name: (e.is_dir(), e.is_file(), e.path) for e in entries}
    assert found == {"b": (True, False, "/a/b"), "f2": (False, True, "/a/f2")}
    fs.symlink("b/f1", "/a/link")
    assert fs.readlink("/a/link") == "b/f1" and fs.islink("/a/link")
    assert fs.read_bytes("/a/link") == b"1"
    assert stat.S_ISLNK(fs.lstat("/a/link").st_mode) and fs.stat("/a/link").st_size == 1
    fs.symlink("loop", "/loop")
    with pytest.raises(OSError) as caught:
        fs.stat("/loop")
    assert caught.value.errno == errno.ELOOP
    fs.link("/a/f2", "/hard")
    assert fs.stat("/hard").st_nlink == 2 and fs.stat("/hard").st_ino == fs.stat("/a/f2").st_ino
    fs.replace("/a/b", "/moved")
    assert fs.listdir("/moved") == ["c", "f1"] and not fs.exists("/a/b")
    fs.chmod("/hard", 0o600)
    assert stat.S_IMODE(fs.stat("/a/f2").st_mode) == 0o600
    fs.utime("/hard", ns=(5, 7))
    assert (fs.stat("/hard").st_atime_ns, fs.stat("/hard").st_mtime_ns) == (5, 7)
    fs.remove("/hard")
    assert fs.stat("/a/f2").st_nlink == 1


def test_an_unlinked_open_file_stays_readable(fs: FileSystem) -> None:
    fs.write_bytes("/f", b"data")
    with fs.open("/f", "rb") as f:
        fs.remove("/f")
        assert f.read() == b"data"
    assert not fs.exists("/f")


def test_path_objects(fs: FileSystem) -> None:
    root = fs.path("/")
    p = root / "docs" / "readme.md"
    assert (p.name, p.suffix, p.stem, str(p.parent)) == ("readme.md", ".md", "readme", "/docs")
    assert p.parts == ("/", "docs", "readme.md")
    p.parent.mkdir()
    p.write_text("# hi\n")
    assert p.read_text() == "# hi\n" and p.is_file() and p.parent.is_dir() and p.exists()
    assert [c.name for c in p.parent.iterdir()] == ["readme.md"]
    (root / "docs" / "x.py").touch()
    assert sorted(str(c) for c in root.glob("docs/*.py")) == ["/docs/x.py"]
    assert sorted(str(c) for c in root.glob("**/*.md")) == ["/docs/readme.md"]
    moved = p.rename("/docs/README")
    assert moved.read_bytes() == b"# hi\n" and not p.exists()
    moved.unlink()
    moved.unlink(missing_ok=True)
    (root / "a" / "b").mkdir(parents=True)
    assert (root / "a" / "b").stat().st_nlink == 2
    assert fs.path("/x/../..") == root


def test_transaction_commits_at_the_end_and_not_on_error(volumes: Volumes) -> None:
    with transaction(volumes) as fs:
        f = fs.open("/unclosed", "w")
        f.write("flushed at the commit")
    with pytest.raises(RuntimeError), transaction(volumes) as fs:
        fs.write_bytes("/ghost", b"x")
        raise RuntimeError
    with transaction(volumes) as fs:
        assert fs.listdir("/") == ["unclosed"]
        assert fs.read_bytes("/unclosed") == b"flushed at the commit"


def test_transaction_conflict(volumes: Volumes) -> None:
    with transaction(volumes) as fs:
        fs.write_bytes("/n", b"0")
    with pytest.raises(ConflictError), transaction(volumes) as fs:
        value = int(fs.read_bytes("/n"))
        with transaction(volumes) as other:
            other.write_bytes("/n", b"9")
        fs.write_bytes("/n", str(value + 1).encode())
    with transaction(volumes) as fs:
        assert fs.read_bytes("/n") == b"9"


def test_sessions_span_volumes(volumes: Volumes) -> None:
    volumes.create("other")
    session = FsSession(volumes, "main")
    session.fs.write_bytes("/a", b"main")
    session.volume("other").write_bytes("/b", b"other")
    with pytest.raises(VolumeNotFound):
        session.volume("nope")
    session.finish()
    assert session.txn.commit(volumes.store).ok
    assert volumes.list() == ["main", "other"]
    with transaction(volumes, "other") as fs:
        assert fs.read_bytes("/b") == b"other"
        assert fs.volume("main").read_bytes("/a") == b"main"


def test_os_and_the_api_agree_on_stat_fields(fs: FileSystem) -> None:
    fs.write_bytes("/f", b"x" * 1000)
    st = fs.stat("/f")
    assert isinstance(st, os.stat_result)
    assert st.st_size == 1000 and st.st_blocks == 2 and stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_uid == os.getuid() and st.st_mtime_ns // 10**9 == int(st.st_mtime)


def test_files_left_open_by_a_failed_transaction_hold_nothing(volumes: Volumes) -> None:
    with transaction(volumes) as fs:
        fs.write_bytes("/f", b"data")
    leaked = []
    with pytest.raises(RuntimeError), transaction(volumes) as fs:
        leaked.append(fs.open("/f", "rb"))  # never closed, still referenced
        raise RuntimeError
    assert leaked[0].closed
    with transaction(volumes) as fs:
        fs.remove("/f")
    volume = volumes.open("default")
    inodes = volumes.store.keys(volume.keys.prefix + "i/")
    assert inodes == [volume.keys.inode(1)]  # only the root: the file's inode is gone
    assert volumes.store.keys(volume.keys.prefix + "c/") == []
