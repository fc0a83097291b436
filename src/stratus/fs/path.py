"""``Path``: a ``pathlib``-like path of one volume, inside one transaction.

>>> p = ctx.fs.path("/reports") / "2024.csv"
>>> p.parent.mkdir(parents=True, exist_ok=True)
>>> p.write_text("a,b\\n")
>>> [c.name for c in ctx.fs.path("/reports").iterdir()]
['2024.csv']
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.fs.api import FileSystem, PathArg


class Path(os.PathLike[str]):
    """An absolute path of a volume (relative parts are taken from the root)."""

    __slots__ = ("_fs", "_path")

    def __init__(self, fs: FileSystem, *parts: PathArg) -> None:
        joined = posixpath.join("/", *(os.fsdecode(p) for p in parts)) if parts else "/"
        self._fs = fs
        self._path = posixpath.normpath(joined)
        if self._path.startswith("//"):
            self._path = self._path[1:]

    # ------------------------------------------------------------------ pure parts

    def __fspath__(self) -> str:
        return self._path

    def __str__(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"Path({self._path!r}, volume={self._fs.volume_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other._fs is self._fs and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    def __truediv__(self, other: PathArg) -> Path:
        return Path(self._fs, self._path, other)

    @property
    def name(self) -> str:
        return posixpath.basename(self._path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> Path:
        return Path(self._fs, posixpath.dirname(self._path))

    @property
    def parts(self) -> tuple[str, ...]:
        return ("/", *(p for p in self._path.split("/") if p))

    def with_name(self, name: str) -> Path:
        return self.parent / name

    def with_suffix(self, suffix: str) -> Path:
        return self.parent / (self.stem + suffix)

    # ------------------------------------------------------------------ queries

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return self._fs.stat(self._path, follow_symlinks=follow_symlinks)

    def exists(self) -> bool:
        return self._fs.exists(self._path)

    def is_file(self) -> bool:
        return self._fs.isfile(self._path)

    def is_dir(self) -> bool:
        return self._fs.isdir(self._path)

    def is_symlink(self) -> bool:
        return self._fs.islink(self._path)

    def iterdir(self) -> Iterator[Path]:
        for name in self._fs.listdir(self._path):
            yield self / name

    def glob(self, pattern: str) -> Iterator[Path]:
        """Paths matching ``pattern`` relative to this directory (``*``, ``?``, ``[...]``
        in each part; ``**`` matches any number of directories)."""
        yield from self._glob(pattern.strip("/").split("/"))

    def _glob(self, parts: list[str]) -> Iterator[Path]:
        head, rest = parts[0], parts[1:]
        if head == "**":
            yield from self._glob(rest) if rest else iter([self])
            for child in self.iterdir():
                if child.is_dir() and not child.is_symlink():
                    yield from child._glob(parts)
            return
        if not self.is_dir():
            return
        for name in fnmatch.filter(self._fs.listdir(self._path), head):
            child = self / name
            if not rest:
                yield child
            elif child.is_dir():
                yield from child._glob(rest)

    def readlink(self) -> Path:
        return Path(self._fs, self._fs.readlink(self._path))

    # ------------------------------------------------------------------ content

    def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        return self._fs.open(self._path, mode, buffering, encoding, errors, newline)

    def read_bytes(self) -> bytes:
        return self._fs.read_bytes(self._path)

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        with self.open("r", encoding=encoding, errors=errors) as f:
            text: str = f.read()
            return text

    def write_bytes(self, data: bytes) -> int:
        return self._fs.write_bytes(self._path, data)

    def write_text(
        self,
        data: str,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> int:
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {type(data).__name__}")
        with self.open("w", encoding=encoding, errors=errors, newline=newline) as f:
            return f.write(data)

    def touch(self, exist_ok: bool = True) -> None:
        if self.exists():
            if not exist_ok:
                raise FileExistsError(17, os.strerror(17), self._path)
            self._fs.utime(self._path)
            return
        self._fs.open(self._path, "xb").close()

    # ------------------------------------------------------------------ changes

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if parents:
            self._fs.makedirs(self._path, mode, exist_ok=exist_ok)
            return
        try:
            self._fs.mkdir(self._path, mode)
        except FileExistsError:
            if not exist_ok or not self.is_dir():
                raise

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._fs.remove(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self) -> None:
        self._fs.rmdir(self._path)

    def rename(self, target: PathArg) -> Path:
        target = Path(self._fs, target)
        self._fs.rename(self._path, target._path)
        return target

    replace = rename

    def symlink_to(self, target: PathArg) -> None:
        self._fs.symlink(target, self._path)

    def hardlink_to(self, target: PathArg) -> None:
        self._fs.link(target, self._path)

    def chmod(self, mode: int) -> None:
        self._fs.chmod(self._path, mode)
