"""``FileSystem``: the path-level API of one volume inside one transaction (``ctx.fs``).

Paths are ``str``, ``bytes`` or path-like, always taken from the volume's root (there is
no working directory: ``"a/b"`` is ``"/a/b"``). They are resolved component by component
like POSIX does: ``..`` goes to the parent of the directory reached (and stays at the
root, so no path leaves the volume), symbolic links are followed (at most 40 per path;
an absolute target starts again at the volume's root). Errors are the ``OSError``
subclasses ``os`` raises, with Linux's errno. New files get mode ``0o666 & ~0o022``
(directories ``0o777 & ~0o022``): there is no per-process umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, AnyStr, NamedTuple

from stratus.fs.files import RawFile, check_mode, wrap
from stratus.fs.ops import NAME_MAX, VolumeOps, fs_error
from stratus.fs.records import ROOT_INO, Attr

if TYPE_CHECKING:
    from stratus.fs.path import Path

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
UMASK = 0o022
_UID, _GID = os.getuid(), os.getgid()  # new files belong to the executor's user
_MAX_LINKS = 40


class Resolved(NamedTuple):
    """Where a path leads: the directory holding its last name, the name (None for the
    root or a path ending in ``..``), and what is there (None: nothing yet)."""

    parent: int
    name: bytes | None
    attr: Attr | None


def fspath(path: object) -> bytes:
    """``path`` as bytes (``str`` encoded as ``os.fsencode`` does); a clear error for
    anything else or for an embedded NUL, as ``os`` functions raise."""
    if not isinstance(path, str | bytes):
        path = os.fspath(path)  # type: ignore[call-overload]  # TypeError for non-paths
    raw = os.fsencode(path)  # type: ignore[arg-type]
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    return raw


def to_stat(attr: Attr) -> os.stat_result:
    """An ``os.stat_result`` with ``attr``'s fields (``st_dev`` is 0)."""
    ns = (attr.atime_ns, attr.mtime_ns, attr.ctime_ns)
    seconds = tuple(t // 1_000_000_000 for t in ns)
    floats = tuple(t / 1e9 for t in ns)
    fields = (attr.mode, attr.ino, 0, attr.nlink, attr.uid, attr.gid, attr.size)
    return os.stat_result((*fields, *seconds, *floats, *ns, attr.blksize, attr.blocks, 0))


class DirEntry:
    """What ``scandir`` yields, like ``os.DirEntry``."""

    __slots__ = ("_attr", "_fs", "name", "path")

    def __init__(self, fs: FileSystem, name: Any, path: Any, attr: Attr) -> None:
        self._fs = fs
        self._attr = attr
        self.name = name
        self.path = path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"

    def __fspath__(self) -> Any:
        return self.path

    def inode(self) -> int:
        return self._attr.ino

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self._attr.mode)

    def _target_mode(self, follow_symlinks: bool) -> int:
        if follow_symlinks and self.is_symlink():
            try:
                return self._fs.stat(self.path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return 0
        return self._attr.mode

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return stat.S_ISDIR(self._target_mode(follow_symlinks))

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return stat.S_ISREG(self._target_mode(follow_symlinks))

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if follow_symlinks and self.is_symlink():
            return self._fs.stat(self.path)
        return to_stat(self._attr)


class ScandirIterator(Iterator[DirEntry]):
    """The entries of one directory (listed at once); also a context manager."""

    def __init__(self, entries: list[DirEntry]) -> None:
        self._entries = iter(entries)

    def __next__(self) -> DirEntry:
        return next(self._entries)

    def __enter__(self) -> ScandirIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._entries = iter(())


class FileSystem:
    """One volume as seen by one transaction: ``open``, ``stat``, ``listdir``... with the
    names and behaviour of ``open``/``os``/``os.path``.

    >>> with ctx.fs.open("/log.txt", "a") as f:
    ...     f.write("started\\n")
    >>> ctx.fs.listdir("/")
    ['log.txt']
    """

    def __init__(
        self,
        ops: VolumeOps,
        *,
        volumes: Callable[[str], FileSystem] | None = None,
    ) -> None:
        self.ops = ops
        self._volumes = volumes
        self._open: dict[int, IO[Any]] = {}  # id(raw file) -> what open() returned
        self.uid, self.gid = _UID, _GID

    def __repr__(self) -> str:
        return f"<FileSystem volume={self.ops.volume.name!r}>"

    @property
    def volume_name(self) -> str:
        return self.ops.volume.name

    def volume(self, name: str) -> FileSystem:
        """Another volume, in the same transaction (``VolumeNotFound`` if it is missing)."""
        if self._volumes is None:
            raise ValueError("this file system is not part of a multi-volume transaction")
        return self._volumes(name)

    def path(self, *parts: PathArg) -> Path:
        """A ``Path`` of this volume: ``fs.path("/data") / "x.csv"``."""
        from stratus.fs.path import Path

        return Path(self, *parts)

    # ------------------------------------------------------------------ resolution

    def resolve(
        self,
        path: PathArg,
        *,
        follow: bool = True,
        creating: bool = False,
        raw: bytes | None = None,
    ) -> Resolved:
        """Walk ``path`` from the root (``follow``: also follow a final symlink, as a
        trailing slash does too unless ``creating`` a name, where Linux never follows).
        ``raw``: ``path`` already encoded by :func:`fspath`."""
        raw = fspath(path) if raw is None else raw
        if not raw:
            raise fs_error(errno.ENOENT, path)
        trailing = raw.endswith(b"/") or raw.endswith(b"/.") or raw == b"."
        pending = deque(p for p in raw.split(b"/") if p and p != b".")
        stack = [ROOT_INO]
        parent, name = ROOT_INO, None
        links = 0
        ops = self.ops
        while pending:
            part = pending.popleft()
            if part == b"..":
                if len(stack) > 1:
                    stack.pop()
                parent, name = stack[-1], None
                continue
            final = not pending
            if len(part) > NAME_MAX:
                raise fs_error(errno.ENAMETOOLONG, path)
            attr = ops.child(stack[-1], part)  # stack[-1] is always a directory
            if attr is None:
                if final:
                    return Resolved(stack[-1], part, None)
                raise fs_error(errno.ENOENT, path)
            if stat.S_ISLNK(attr.mode) and (not final or follow or (trailing and not creating)):
                links += 1
                if links > _MAX_LINKS:
                    raise fs_error(errno.ELOOP, path)
                target = ops.readlink(attr.ino)
                if target.startswith(b"/"):
                    del stack[1:]
                pending.extendleft(reversed([p for p in target.split(b"/") if p and p != b"."]))
                parent, name = stack[-1], None
                continue
            if final:
                if trailing and not creating and not stat.S_ISDIR(attr.mode):
                    raise fs_error(errno.ENOTDIR, path)
                return Resolved(stack[-1], part, attr)
            if not stat.S_ISDIR(attr.mode):
                raise fs_error(errno.ENOTDIR, path)
            stack.append(attr.ino)
        # The root, or a path ending in "..", or a link to a directory reached so.
        return Resolved(parent if name else stack[-1], None, ops.getattr(stack[-1]))

    def _existing(self, path: PathArg, *, follow: bool = True) -> Attr:
        found = self.resolve(path, follow=follow)
        if found.attr is None:
            raise fs_error(errno.ENOENT, path)
        return found.attr

    def _named(self, path: PathArg) -> Resolved:
        """The directory and name of ``path`` (its final symlink not followed, even with
        a trailing slash), for operations that remove or move names."""
        found = self.resolve(path, follow=False, creating=True)
        if found.name is None:
            root = found.attr is not None and found.attr.ino == ROOT_INO
            raise fs_error(errno.EBUSY if root else errno.EINVAL, path)
        return found

    # ------------------------------------------------------------------ files

    def open(
        self,
        file: PathArg,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """Open a file of the volume, as the built-in ``open`` does (text is UTF-8 by
        default, not the locale's)."""
        raw_mode = check_mode(mode, buffering, encoding, errors, newline)
        raw_path = fspath(file)
        if raw_mode[0] != "r" and raw_path.endswith(b"/"):
            self.resolve(file, follow=False, creating=True, raw=raw_path)  # parents' errors first
            raise fs_error(errno.EISDIR, file)  # O_CREAT with a trailing slash, as Linux
        found = self.resolve(file, follow=raw_mode[0] != "x", raw=raw_path)  # O_EXCL: no follow
        attr = found.attr
        if attr is None:
            if raw_mode[0] == "r":
                raise fs_error(errno.ENOENT, file)
            if found.name is None:
                raise fs_error(errno.EISDIR, file)
            attr = self.ops.create(found.parent, found.name, 0o666 & ~UMASK, self.uid, self.gid)
        elif raw_mode[0] == "x":
            raise fs_error(errno.EEXIST, file)
        elif stat.S_ISDIR(attr.mode):
            raise fs_error(errno.EISDIR, file)
        elif raw_mode[0] == "w" and attr.size:
            self.ops.setattr(attr.ino, size=0)
        name = file if isinstance(file, str | bytes) else os.fspath(file)
        raw = RawFile(self.ops, attr.ino, name, raw_mode, on_close=self._closed)
        try:
            opened = wrap(raw, mode, buffering, encoding, errors, newline)
        except BaseException:
            raw.close()
            raise
        self._open[id(raw)] = opened
        return opened

    def _closed(self, raw: RawFile) -> None:
        self._open.pop(id(raw), None)

    def close_files(self) -> None:
        """Close (and so flush) every file still open: called before the commit."""
        while self._open:
            _, opened = self._open.popitem()
            opened.close()

    def read_bytes(self, path: PathArg) -> bytes:
        with self.open(path, "rb") as f:
            data: bytes = f.read()
            return data

    def write_bytes(self, path: PathArg, data: bytes) -> int:
        with self.open(path, "wb") as f:
            return f.write(data)

    def truncate(self, path: PathArg, length: int) -> None:
        attr = self._existing(path)
        if stat.S_ISDIR(attr.mode):
            raise fs_error(errno.EISDIR, path)
        self.ops.setattr(attr.ino, size=length)

    # ------------------------------------------------------------------ metadata

    def stat(self, path: PathArg, *, follow_symlinks: bool = True) -> os.stat_result:
        return to_stat(self._existing(path, follow=follow_symlinks))

    def lstat(self, path: PathArg) -> os.stat_result:
        return self.stat(path, follow_symlinks=False)

    def _test(self, path: PathArg, test: Callable[[int], bool], follow: bool = True) -> bool:
        try:
            return test(self._existing(path, follow=follow).mode)
        except (OSError, ValueError):
            return False

    def exists(self, path: PathArg) -> bool:
        return self._test(path, lambda mode: True)

    def lexists(self, path: PathArg) -> bool:
        return self._test(path, lambda mode: True, follow=False)

    def isfile(self, path: PathArg) -> bool:
        return self._test(path, stat.S_ISREG)

    def isdir(self, path: PathArg) -> bool:
        return self._test(path, stat.S_ISDIR)

    def islink(self, path: PathArg) -> bool:
        return self._test(path, stat.S_ISLNK, follow=False)

    def getsize(self, path: PathArg) -> int:
        return self.stat(path).st_size

    def chmod(self, path: PathArg, mode: int, *, follow_symlinks: bool = True) -> None:
        self.ops.setattr(self._existing(path, follow=follow_symlinks).ino, mode=mode)

    def chown(self, path: PathArg, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        ino = self._existing(path, follow=follow_symlinks).ino
        self.ops.setattr(ino, uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)

    def utime(
        self,
        path: PathArg,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        """Set access and modification times (now when neither ``times`` nor ``ns``)."""
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        if times is not None:
            ns = (int(times[0] * 1e9), int(times[1] * 1e9))
        elif ns is None:
            now = time.time_ns()
            ns = (now, now)
        ino = self._existing(path, follow=follow_symlinks).ino
        self.ops.setattr(ino, atime_ns=ns[0], mtime_ns=ns[1])

    # ------------------------------------------------------------------ directories

    def listdir(self, path: AnyStr | os.PathLike[AnyStr] = "/") -> list[AnyStr]:  # type: ignore[assignment]
        """The names in a directory (``str``, or ``bytes`` for a ``bytes`` path)."""
        return [entry.name for entry in self.scandir(path)]

    def scandir(self, path: PathArg = "/") -> ScandirIterator:
        attr = self._existing(path)
        if not stat.S_ISDIR(attr.mode):
            raise fs_error(errno.ENOTDIR, path)
        raw = fspath(path)
        as_bytes = isinstance(path, bytes) or isinstance(os.fspath(path), bytes)
        base = raw if raw.endswith(b"/") else raw + b"/"
        entries = []
        for name, child in self.ops.readdir(attr.ino):
            if as_bytes:
                entries.append(DirEntry(self, name, base + name, child))
            else:
                entries.append(DirEntry(self, os.fsdecode(name), os.fsdecode(base + name), child))
        return ScandirIterator(entries)

    def mkdir(self, path: PathArg, mode: int = 0o777) -> None:
        found = self.resolve(path, follow=False, creating=True)
        if found.attr is not None or found.name is None:
            raise fs_error(errno.EEXIST, path)
        self.ops.mkdir(found.parent, found.name, mode & ~UMASK, self.uid, self.gid)

    def makedirs(self, path: PathArg, mode: int = 0o777, exist_ok: bool = False) -> None:
        """``mkdir`` with every missing parent; ``FileExistsError`` unless ``exist_ok``."""
        raw = fspath(path)
        head = raw.rstrip(b"/").rpartition(b"/")[0]
        if head and not self.exists(head):
            with contextlib.suppress(FileExistsError):  # made meanwhile: fine
                self.makedirs(head, mode, exist_ok=True)
        try:
            self.mkdir(path, mode)
        except OSError:
            if not exist_ok or not self.isdir(path):
                raise

    def rmdir(self, path: PathArg) -> None:
        found = self._named(path)
        assert found.name is not None
        self.ops.rmdir(found.parent, found.name)

    def remove(self, path: PathArg) -> None:
        found = self._named(path)
        assert found.name is not None
        if found.attr and fspath(path).endswith(b"/") and not stat.S_ISDIR(found.attr.mode):
            raise fs_error(errno.ENOTDIR, path)
        self.ops.unlink(found.parent, found.name)

    unlink = remove

    def rename(self, src: PathArg, dst: PathArg) -> None:
        """Move ``src`` to ``dst`` atomically, replacing ``dst`` (POSIX ``rename``)."""
        try:
            old, new = self._named(src), self._named(dst)
            assert old.name is not None and new.name is not None
            slashed = fspath(src).endswith(b"/") or fspath(dst).endswith(b"/")
            if slashed and old.attr and not stat.S_ISDIR(old.attr.mode):
                raise fs_error(errno.ENOTDIR)
            self.ops.rename(old.parent, old.name, new.parent, new.name)
        except OSError as e:
            raise fs_error(e.errno or errno.EIO, src, dst) from None

    replace = rename

    def walk(
        self,
        top: PathArg = "/",
        topdown: bool = True,
        onerror: Callable[[OSError], object] | None = None,
        followlinks: bool = False,
    ) -> Iterator[tuple[Any, list[Any], list[Any]]]:
        """``os.walk`` over the volume."""
        try:
            entries = list(self.scandir(top))
        except OSError as error:
            if onerror is not None:
                onerror(error)
            return
        dirs: list[Any] = []
        files: list[Any] = []
        walk_into: list[Any] = []
        for entry in entries:
            is_dir = entry.is_dir()
            (dirs if is_dir else files).append(entry.name)
            if is_dir and (followlinks or not entry.is_symlink()):
                walk_into.append(entry.path)
        if topdown:
            yield top, dirs, files
            raw_top = top if isinstance(top, str | bytes) else os.fspath(top)
            join = os.path.join
            for name in dirs:
                sub = join(raw_top, name)
                if followlinks or not self.islink(sub):
                    yield from self.walk(sub, topdown, onerror, followlinks)
        else:
            for sub in walk_into:
                yield from self.walk(sub, topdown, onerror, followlinks)
            yield top, dirs, files

    # ------------------------------------------------------------------ links

    def symlink(self, src: PathArg, dst: PathArg) -> None:
        """Make ``dst`` a symbolic link to ``src`` (like ``os.symlink``)."""
        parent, name = self._new_name(dst, src)
        self.ops.symlink(parent, name, fspath(src), self.uid, self.gid)

    def readlink(self, path: AnyStr | os.PathLike[AnyStr]) -> AnyStr:
        target = self.ops.readlink(self._existing(path, follow=False).ino)
        as_bytes = isinstance(os.fspath(path), bytes)
        return target if as_bytes else os.fsdecode(target)  # type: ignore[return-value]

    def link(self, src: PathArg, dst: PathArg, *, follow_symlinks: bool = False) -> None:
        """Make ``dst`` a hard link to the file ``src`` (a symlink itself unless
        ``follow_symlinks``, as ``os.link`` does on Linux with ``link(2)``)."""
        attr = self._existing(src, follow=follow_symlinks)
        parent, name = self._new_name(dst, src)
        self.ops.link(attr.ino, parent, name)

    def _new_name(self, path: PathArg, src: PathArg) -> tuple[int, bytes]:
        """Where a new non-directory ``path`` goes: ``EEXIST`` if taken, ``ENOENT`` for a
        trailing slash (which only a directory may have), as Linux does."""
        found = self.resolve(path, follow=False, creating=True)
        if found.attr is not None or found.name is None:
            raise fs_error(errno.EEXIST, src, path)
        if fspath(path).endswith(b"/"):
            raise fs_error(errno.ENOENT, src, path)
        return found.parent, found.name
