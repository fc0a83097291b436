"""Open files: a raw file over ``VolumeOps`` and ``open()`` building the io layers on it.

``open_file`` mirrors what CPython's ``open`` does with a ``FileIO``: the same mode
checks and errors, a ``BufferedReader``/``Writer``/``Random`` over the raw file, and a
``TextIOWrapper`` for text. Buffers are one chunk long, so a sequential write reaches the
store layer one whole chunk at a time.
"""

from __future__ import annotations

import errno
import functools
import io
import sys
from collections.abc import Callable
from typing import IO, Any

from stratus.fs.keys import CHUNK
from stratus.fs.ops import VolumeOps, fs_error

_MODE_CHARS = frozenset("axrwb+t")


class RawFile(io.RawIOBase):
    """An open file of a volume: unbuffered reads and writes at a position.

    It holds its inode while open, so unlinking its name keeps the data readable.
    """

    def __init__(
        self,
        ops: VolumeOps,
        ino: int,
        name: str | bytes,
        mode: str,
        *,
        on_close: Callable[[RawFile], None] | None = None,
    ) -> None:
        super().__init__()
        self._ops = ops
        self.ino = ino
        self.name = name
        self.mode = mode
        self._readable = "r" in mode or "+" in mode
        self._writable = "r" not in mode or "+" in mode
        self._append = "a" in mode
        self._pos = 0
        self._on_close = on_close
        ops.hold(ino)

    def __repr__(self) -> str:
        return f"<stratus.fs.RawFile name={self.name!r} mode={self.mode!r}>"

    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def _check(self, allowed: bool, what: str) -> None:
        self._checkClosed()
        if not allowed:
            raise io.UnsupportedOperation(f"File not open for {what}")

    def readinto(self, buffer: Any) -> int:
        self._check(self._readable, "reading")
        view = memoryview(buffer).cast("B")
        data = self._ops.read(self.ino, self._pos, len(view))
        size = len(data)
        view[:size] = data
        self._pos += size
        return size

    def readall(self) -> bytes:
        self._check(self._readable, "reading")
        data = self._ops.read(self.ino, self._pos, sys.maxsize)  # up to the end
        self._pos += len(data)
        return data

    def write(self, data: Any) -> int:
        self._check(self._writable, "writing")
        if self._append:
            self._pos = self._ops.getattr(self.ino).size
        written = self._ops.write(self.ino, self._pos, data)
        self._pos += written
        return written

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_CUR:
            pos += self._pos
        elif whence == io.SEEK_END:
            pos += self._ops.getattr(self.ino).size
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise fs_error(errno.EINVAL, self.name)
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._check(self._writable, "writing")
        size = self._pos if size is None else size
        self._ops.setattr(self.ino, size=size)
        return size

    def close(self) -> None:
        if not self.closed:
            try:
                self._ops.release(self.ino)
            finally:
                super().close()
                if self._on_close is not None:
                    self._on_close(self)


@functools.lru_cache(maxsize=64)
def check_mode(
    mode: str, buffering: int, encoding: str | None, errors: str | None, newline: str | None
) -> str:
    """The raw mode (``rb``, ``wb``, ``ab+``...) of ``mode``, after CPython's checks."""
    if not isinstance(mode, str):
        raise TypeError(f"invalid mode: {mode!r}")
    chars = set(mode)
    if chars - _MODE_CHARS or len(mode) > len(chars):
        raise ValueError(f"invalid mode: {mode!r}")
    kinds = sum(c in chars for c in "xrwa")
    if "t" in chars and "b" in chars:
        raise ValueError("can't have text and binary mode at once")
    if kinds != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if "b" in chars:
        if encoding is not None:
            raise ValueError("binary mode doesn't take an encoding argument")
        if errors is not None:
            raise ValueError("binary mode doesn't take an errors argument")
        if newline is not None:
            raise ValueError("binary mode doesn't take a newline argument")
    elif buffering == 0:
        raise ValueError("can't have unbuffered text I/O")
    kind = next(c for c in "xrwa" if c in chars)
    return kind + "b" + ("+" if "+" in chars else "")


def wrap(
    raw: RawFile,
    mode: str,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
) -> IO[Any]:
    """The io stack ``open(..., mode)`` returns over ``raw``."""
    line_buffering = buffering == 1 and "b" not in mode
    if buffering == 0:
        return raw  # type: ignore[return-value]
    size = CHUNK if buffering in (-1, 1) else buffering
    buffer: io.BufferedIOBase
    if "+" in mode:
        buffer = io.BufferedRandom(raw, size)
    elif raw.mode[0] == "r":
        buffer = io.BufferedReader(raw, size)
    else:
        buffer = io.BufferedWriter(raw, size)
    if "b" in mode:
        return buffer
    text = io.TextIOWrapper(
        buffer, encoding or "utf-8", errors, newline, line_buffering=line_buffering
    )
    text.mode = mode  # type: ignore[misc]
    return text
