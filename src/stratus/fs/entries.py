"""What ``stat`` and ``scandir`` return: ``os.stat_result`` values and ``DirEntry``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from stratus.fs.records import Attr

if TYPE_CHECKING:
    from stratus.fs.api import FileSystem


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
