"""``VolumeOps``: the inode-level operations of one volume inside one transaction.

Theory of operation: every operation reads inodes, directory entries and chunks through
the transaction (so they join its read set) and buffers what it changes; nothing reaches
the store before the transaction commits. Names are ``bytes``; errors are ``OSError``
with the errno Linux gives. Inode numbers are random 63-bit integers, so creating files
in parallel never contends on a counter; a new number is recorded as "expected absent",
which makes a collision a conflict instead of an overwrite.

Data lives in chunks of ``CHUNK`` bytes. Chunk ``n`` holds the file's bytes from
``n * CHUNK`` on, possibly fewer than ``CHUNK`` (missing bytes, and missing chunks, read
as zeros: holes). No chunk holds bytes past the file's size (truncation trims), so a
write past the end never needs to read the old chunk.

Inodes whose last link goes while they are *held* (an open file) keep their data with
``nlink == 0`` until released, as POSIX keeps an unlinked open file readable.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import time
from typing import TYPE_CHECKING

from stratus.fs.keys import CHUNK, entry_name
from stratus.fs.records import ROOT_INO, Attr, Inode, StatFs, inode_decoder, inode_encoder
from stratus.fs.transaction import FsTransaction

if TYPE_CHECKING:
    from stratus.fs.volume import Volume

NAME_MAX = 255
_MAX_DEPTH = 100_000  # a parent chain longer than this is corrupt (or read mid-change)


def fs_error(code: int, filename: object = None, filename2: object = None) -> OSError:
    """The ``OSError`` subclass Python raises for ``code`` (``FileNotFoundError``...)."""
    if filename2 is not None:
        return OSError(code, os.strerror(code), filename, None, filename2)
    if filename is not None:
        return OSError(code, os.strerror(code), filename)
    return OSError(code, os.strerror(code))


def check_name(name: bytes) -> None:
    """Refuse what cannot be one directory entry's name."""
    if not isinstance(name, bytes):
        raise TypeError(f"names are bytes, not {type(name).__name__}")
    if len(name) > NAME_MAX:
        raise fs_error(errno.ENAMETOOLONG, name)
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise fs_error(errno.EINVAL, name)


class VolumeOps:
    """The operations of the agreed inode-level interface (see ``docs/fs.md``)."""

    __slots__ = ("_inodes", "_keys", "txn", "volume")

    def __init__(self, volume: Volume, txn: FsTransaction) -> None:
        self.volume = volume
        self.txn = txn
        self._keys = volume.keys
        self._inodes: dict[int, Inode] = {}  # decoded in this transaction

    # ------------------------------------------------------------------ records

    def _inode(self, ino: int) -> Inode:
        node = self._inodes.get(ino)
        if node is None:
            raw = self.txn.get(self._keys.inode(ino))
            if raw is None:
                raise fs_error(errno.ENOENT)
            node = self._inodes[ino] = inode_decoder.decode(raw)
        return node

    def _linked(self, ino: int) -> Inode:
        """The inode a directory entry names (missing only when read mid-change)."""
        try:
            return self._inode(ino)
        except FileNotFoundError:
            raise fs_error(errno.EIO, f"inode {ino} of an entry is missing") from None

    def _save(self, ino: int, node: Inode) -> None:
        self._inodes[ino] = node
        self.txn.put(self._keys.inode(ino), inode_encoder.encode(node))

    def _dir(self, ino: int) -> Inode:
        node = self._inode(ino)
        if not node.is_dir:
            raise fs_error(errno.ENOTDIR)
        return node

    def _entry(self, parent: int, name: bytes) -> int | None:
        raw = self.txn.get(self._keys.entry(parent, name))
        return None if raw is None else int.from_bytes(raw, "big")

    def _set_entry(self, parent: int, name: bytes, ino: int) -> None:
        self.txn.put(self._keys.entry(parent, name), ino.to_bytes(8, "big"))

    def _touch(self, ino: int, node: Inode, now: int) -> None:
        node.mtime_ns = node.ctime_ns = now
        self._save(ino, node)

    def _new_ino(self) -> int:
        while True:
            ino = random.getrandbits(63)
            if ino > ROOT_INO and ino not in self._inodes:
                self.txn.expect_absent(self._keys.inode(ino))
                return ino

    def _new(self, parent: int, name: bytes, node: Inode) -> tuple[int, Inode]:
        """Check that ``name`` is free in directory ``parent`` and link a new inode."""
        check_name(name)
        pnode = self._dir(parent)
        if self._entry(parent, name) is not None:
            raise fs_error(errno.EEXIST, name)
        ino = self._new_ino()
        self._save(ino, node)
        self._set_entry(parent, name, ino)
        if node.is_dir:
            pnode.nlink += 1
        self._touch(parent, pnode, node.ctime_ns)
        return ino, pnode

    # ------------------------------------------------------------------ metadata

    def lookup(self, parent: int, name: bytes) -> Attr:
        """The attributes of entry ``name`` of directory ``parent``."""
        self._dir(parent)
        check_name(name)
        ino = self._entry(parent, name)
        if ino is None:
            raise fs_error(errno.ENOENT, name)
        return self._linked(ino).attr(ino)

    def child(self, parent: int, name: bytes) -> Attr | None:
        """What :meth:`lookup` finds, or None, without its checks: for path walks, whose
        ``parent`` is known to be a directory and ``name`` a valid component."""
        ino = self._entry(parent, name)
        return None if ino is None else self._linked(ino).attr(ino)

    def getattr(self, ino: int) -> Attr:
        return self._inode(ino).attr(ino)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Attr:
        """Change attributes; ``size`` truncates or extends with zeros. ctime is updated."""
        node = self._inode(ino)
        now = time.time_ns()
        if size is not None:
            if node.is_dir:
                raise fs_error(errno.EISDIR)
            if not stat.S_ISREG(node.mode):
                raise fs_error(errno.EINVAL)
            if size < 0:
                raise fs_error(errno.EINVAL)
            self._truncate(ino, node, size)
            node.mtime_ns = now
        if mode is not None:
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        node.ctime_ns = now
        self._save(ino, node)
        return node.attr(ino)

    def readdir(self, ino: int) -> list[tuple[bytes, Attr]]:
        """The entries of directory ``ino`` sorted by name, without ``.`` and ``..``."""
        self._dir(ino)
        keys = self.txn.list(self._keys.entries(ino))
        if not keys:
            return []
        entries = self.txn.get_many(keys)
        inos = [int.from_bytes(entries[key] or b"", "big") for key in keys]
        wanted = {self._keys.inode(i): i for i in inos if i not in self._inodes}
        for key, raw in self.txn.get_many(wanted).items():
            if raw is None:
                raise fs_error(errno.EIO, f"inode {wanted[key]} of an entry is missing")
            self._inodes[wanted[key]] = inode_decoder.decode(raw)
        return [
            (entry_name(key), self._inodes[i].attr(i)) for key, i in zip(keys, inos, strict=True)
        ]

    def statfs(self) -> StatFs:
        return StatFs()

    # ------------------------------------------------------------------ namespace

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        """A new empty regular file; ``FileExistsError`` if the name is taken."""
        now = time.time_ns()
        node = Inode(stat.S_IFREG | (mode & 0o7777), 1, uid, gid, 0, now, now, now)
        ino, _ = self._new(parent, name, node)
        return node.attr(ino)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        now = time.time_ns()
        node = Inode(stat.S_IFDIR | (mode & 0o7777), 2, uid, gid, 0, now, now, now, parent)
        ino, _ = self._new(parent, name, node)
        return node.attr(ino)

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Attr:
        if not target or b"\0" in target:
            raise fs_error(errno.ENOENT if not target else errno.EINVAL)
        now = time.time_ns()
        node = Inode(stat.S_IFLNK | 0o777, 1, uid, gid, len(target), now, now, now, 0, target)
        ino, _ = self._new(parent, name, node)
        return node.attr(ino)

    def readlink(self, ino: int) -> bytes:
        node = self._inode(ino)
        if not node.is_link:
            raise fs_error(errno.EINVAL)
        return node.target

    def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        """Another name for ``ino`` (not a directory: ``EPERM``)."""
        node = self._inode(ino)
        if node.is_dir:
            raise fs_error(errno.EPERM)
        check_name(new_name)
        pnode = self._dir(new_parent)
        if self._entry(new_parent, new_name) is not None:
            raise fs_error(errno.EEXIST, new_name)
        now = time.time_ns()
        node.nlink += 1
        node.ctime_ns = now
        self._save(ino, node)
        self._set_entry(new_parent, new_name, ino)
        self._touch(new_parent, pnode, now)
        return node.attr(ino)

    def _child(self, parent: int, name: bytes, *, is_dir: bool) -> tuple[Inode, int, Inode]:
        """Directory ``parent``, and the inode of its entry ``name``, which must be a
        directory (``ENOTDIR``) or must not (``EISDIR``) as ``is_dir`` says."""
        pnode = self._dir(parent)
        check_name(name)
        ino = self._entry(parent, name)
        if ino is None:
            raise fs_error(errno.ENOENT, name)
        node = self._linked(ino)
        if node.is_dir != is_dir:
            raise fs_error(errno.EISDIR if node.is_dir else errno.ENOTDIR, name)
        return pnode, ino, node

    def unlink(self, parent: int, name: bytes) -> None:
        """Remove a name of a non-directory (``EISDIR`` for a directory)."""
        pnode, ino, node = self._child(parent, name, is_dir=False)
        now = time.time_ns()
        self.txn.delete(self._keys.entry(parent, name))
        self._drop_link(ino, node, now)
        self._touch(parent, pnode, now)

    def rmdir(self, parent: int, name: bytes) -> None:
        """Remove an empty directory (``ENOTEMPTY``; ``ENOTDIR`` for a non-directory)."""
        pnode, ino, node = self._child(parent, name, is_dir=True)
        if self.txn.list(self._keys.entries(ino)):
            raise fs_error(errno.ENOTEMPTY, name)
        self.txn.delete(self._keys.entry(parent, name))
        self._destroy(ino, node)
        pnode.nlink -= 1
        self._touch(parent, pnode, time.time_ns())

    def rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        *,
        noreplace: bool = False,
    ) -> None:
        """Move an entry, atomically replacing the target, with Linux's errors in
        Linux's order (``EEXIST``, ``EINVAL``, ``ENOTEMPTY``, ``ENOTDIR``/``EISDIR``)."""
        old_pnode = self._dir(old_parent)
        new_pnode = self._dir(new_parent)
        check_name(old_name)
        check_name(new_name)
        ino = self._entry(old_parent, old_name)
        if ino is None:
            raise fs_error(errno.ENOENT, old_name)
        if old_parent == new_parent and old_name == new_name:
            return
        node = self._linked(ino)
        target = self._entry(new_parent, new_name)
        if target is not None and noreplace:
            raise fs_error(errno.EEXIST, new_name)
        if node.is_dir and self._is_ancestor(ino, new_parent):
            raise fs_error(errno.EINVAL, old_name)
        tnode = None if target is None else self._linked(target)
        if (
            target is not None
            and tnode is not None
            and tnode.is_dir
            and self._is_ancestor(target, old_parent)
        ):
            raise fs_error(errno.ENOTEMPTY, new_name)  # the target holds the source
        if target == ino:
            return  # two names of one inode: POSIX says do nothing
        now = time.time_ns()
        if target is not None and tnode is not None:
            if node.is_dir and not tnode.is_dir:
                raise fs_error(errno.ENOTDIR, new_name)
            if not node.is_dir and tnode.is_dir:
                raise fs_error(errno.EISDIR, new_name)
            if tnode.is_dir:
                if self.txn.list(self._keys.entries(target)):
                    raise fs_error(errno.ENOTEMPTY, new_name)
                self._destroy(target, tnode)
                new_pnode.nlink -= 1
            else:
                self._drop_link(target, tnode, now)
        self.txn.delete(self._keys.entry(old_parent, old_name))
        self._set_entry(new_parent, new_name, ino)
        if node.is_dir and old_parent != new_parent:
            node.parent = new_parent
            old_pnode.nlink -= 1
            new_pnode.nlink += 1
        node.ctime_ns = now
        self._save(ino, node)
        self._touch(old_parent, old_pnode, now)
        if new_parent != old_parent:
            self._touch(new_parent, new_pnode, now)

    def _is_ancestor(self, ancestor: int, ino: int) -> bool:
        """Whether directory ``ancestor`` is ``ino`` or on its path to the root."""
        for _ in range(_MAX_DEPTH):
            if ino == ancestor:
                return True
            if ino == ROOT_INO:
                return False
            ino = self._linked(ino).parent
        raise fs_error(errno.ELOOP, "directory parents form a cycle")

    def _drop_link(self, ino: int, node: Inode, now: int) -> None:
        node.nlink -= 1
        node.ctime_ns = now
        if node.nlink <= 0 and not self.volume.is_held(ino):
            self._destroy(ino, node)
        else:
            self._save(ino, node)

    def _destroy(self, ino: int, node: Inode) -> None:
        for index in range(-(-node.size // CHUNK)):
            self.txn.delete(self._keys.chunk(ino, index))
        self.txn.delete(self._keys.inode(ino))
        self._inodes.pop(ino, None)

    def hold(self, ino: int) -> None:
        """Keep ``ino``'s data while it is open, even if its last name goes."""
        if ino not in self._inodes:
            self._inode(ino)  # ENOENT for an inode that does not exist
        self.volume.hold(ino)

    def release(self, ino: int) -> None:
        """The end of a :meth:`hold`; the last release of an unlinked inode deletes it."""
        if not self.volume.release(ino):
            self.reap(ino)

    def reap(self, ino: int) -> None:
        """Delete ``ino`` if it has no name left and no hold (the end of an unlinked open
        file); nothing otherwise. Unlike :meth:`release` it changes no hold, so a re-run
        of its transaction is harmless."""
        if self.volume.is_held(ino):
            return
        node = self._inodes.get(ino)
        if node is None:
            try:
                node = self._inode(ino)
            except FileNotFoundError:
                return
        if node.nlink <= 0:
            self._destroy(ino, node)

    # ------------------------------------------------------------------ data

    def read(self, ino: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        node = self._inode(ino)
        if node.is_dir:
            raise fs_error(errno.EISDIR)
        end = min(offset + size, node.size)
        if offset < 0 or size < 0:
            raise fs_error(errno.EINVAL)
        if end <= offset:
            return b""
        first, last = offset // CHUNK, (end - 1) // CHUNK
        keys = self._keys
        if first == last:  # the common case: one chunk, one lookup
            data = self.txn.get(keys.chunk(ino, first)) or b""
            start = offset - first * CHUNK
            piece: bytes = data[start : start + end - offset]
            return piece if len(piece) == end - offset else piece.ljust(end - offset, b"\0")
        names = [keys.chunk(ino, i) for i in range(first, last + 1)]
        chunks = self.txn.get_many(names)
        parts = []
        for i, name in zip(range(first, last + 1), names, strict=True):
            lo = max(offset, i * CHUNK) - i * CHUNK
            hi = min(end, (i + 1) * CHUNK) - i * CHUNK
            piece = (chunks[name] or b"")[lo:hi]
            parts.append(piece if len(piece) == hi - lo else piece.ljust(hi - lo, b"\0"))
        return b"".join(parts)

    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset`` (extending the file); returns its length."""
        node = self._inode(ino)
        if node.is_dir:
            raise fs_error(errno.EISDIR)
        if offset < 0:
            raise fs_error(errno.EINVAL)
        view = memoryview(data).cast("B")
        size = len(view)
        if not size:
            return 0
        end = offset + size
        for index in range(offset // CHUNK, (end - 1) // CHUNK + 1):
            base = index * CHUNK
            lo, hi = max(offset, base) - base, min(end, base + CHUNK) - base
            piece = view[base + lo - offset : base + hi - offset]
            key = self._keys.chunk(ino, index)
            if lo == 0 and hi >= min(CHUNK, node.size - base):
                self.txn.put(key, bytes(piece))  # covers all the chunk holds: no read
                continue
            if base >= node.size:  # past the end: the chunk holds nothing, no read
                self.txn.put(key, bytes(lo) + piece)
                continue
            buf = bytearray(self.txn.get(key) or b"")
            if len(buf) < lo:
                buf.extend(bytes(lo - len(buf)))
            buf[lo:hi] = piece
            self.txn.put(key, bytes(buf))
        node.size = max(node.size, end)
        node.mtime_ns = node.ctime_ns = time.time_ns()
        self._save(ino, node)
        return size

    def _truncate(self, ino: int, node: Inode, size: int) -> None:
        old = node.size
        if size < old:
            for index in range(-(-size // CHUNK), -(-old // CHUNK)):
                self.txn.delete(self._keys.chunk(ino, index))
            tail = size % CHUNK
            if tail:
                key = self._keys.chunk(ino, size // CHUNK)
                data = self.txn.get(key)
                if data is not None and len(data) > tail:
                    self.txn.put(key, data[:tail])
        node.size = size
