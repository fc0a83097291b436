"""A minimal pyfuse3 pass-through file system: the baseline of ``bench/fuse.py``.

``python bench/fuse_passthrough.py SOURCE MOUNTPOINT`` mirrors the directory SOURCE at
MOUNTPOINT until it is unmounted (``fusermount3 -u MOUNTPOINT``) or sent SIGTERM. It
prints ``ready`` on stdout once the mount answers.

Theory of operation: every inode the kernel knows (by lookup, create, mkdir, symlink,
link or readdirplus) is held open here as an ``O_PATH`` descriptor, so later operations
name it by descriptor (``*at`` calls relative to a parent, ``/proc/self/fd/N`` to reopen
or change it) and stay right when directories are renamed under it. FUSE inode numbers
are handed out in order per underlying ``(st_dev, st_ino)``, so hard links share one; a
``forget`` that brings the kernel's lookup count to zero closes the descriptor. Handlers
do their system calls synchronously (one trio task at a time), as a pass-through in C
would per request; errors are the underlying ``OSError``'s errno.

It exists only to measure what FUSE itself costs (kernel round trips, pyfuse3's
dispatch) next to the stratus mount, and to check the tests in ``tests/system`` against
a known-correct FUSE file system; it is not part of the package.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

# renameat2 (for RENAME_NOREPLACE and RENAME_EXCHANGE) has no wrapper in Python's os.
_libc = ctypes.CDLL(None, use_errno=True)
P = ParamSpec("P")
T = TypeVar("T")


def _errno(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """An ``OSError`` becomes the FUSE reply with its errno."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    return wrapper


class Passthrough(pyfuse3.Operations):
    """Mirror ``source`` (see the module's docstring)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        root = os.open(source, os.O_PATH | os.O_DIRECTORY)
        st = os.fstat(root)
        self._fd: dict[int, int] = {pyfuse3.ROOT_INODE: root}  # FUSE inode -> O_PATH fd
        self._lookups: dict[int, int] = {pyfuse3.ROOT_INODE: 1}
        self._ino: dict[tuple[int, int], int] = {(st.st_dev, st.st_ino): pyfuse3.ROOT_INODE}
        self._next_ino = pyfuse3.ROOT_INODE + 1
        self._handles: dict[int, int] = {}  # FUSE fh -> fd (files) or FUSE inode (dirs)
        self._listings: dict[int, list[bytes]] = {}

    # -- inodes ---------------------------------------------------------------------------

    def _proc(self, ino: int) -> str:
        return f"/proc/self/fd/{self._fd[ino]}"

    def _attr(self, ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
            setattr(attr, name, getattr(st, name))
        attr.st_blksize = st.st_blksize
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns = st.st_atime_ns
        attr.st_mtime_ns = st.st_mtime_ns
        attr.st_ctime_ns = st.st_ctime_ns
        attr.entry_timeout = attr.attr_timeout = 1.0
        return attr

    def _remember(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        """Look ``name`` up under ``parent`` and count one kernel reference to it."""
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=self._fd[parent])
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        ino = self._ino.get(key)
        if ino is None:
            ino = self._ino[key] = self._next_ino
            self._next_ino += 1
        if ino in self._fd:
            os.close(fd)
        else:
            self._fd[ino] = fd
        self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return self._attr(ino, st)

    @_errno
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)
        return self._remember(parent_inode, name)

    async def forget(self, inode_list: Any) -> None:
        for ino, count in inode_list:
            left = self._lookups.get(ino, 0) - count
            if left > 0 or ino == pyfuse3.ROOT_INODE:
                self._lookups[ino] = left
                continue
            self._lookups.pop(ino, None)
            fd = self._fd.pop(ino, None)
            if fd is not None:
                st = os.fstat(fd)
                self._ino.pop((st.st_dev, st.st_ino), None)
                os.close(fd)

    @_errno
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode, os.stat(self._fd[inode]))

    @_errno
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self._proc(inode)
        if fields.update_size:
            if fh is not None:
                os.ftruncate(self._handles[fh], attr.st_size)
            else:
                os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            os.chown(path, uid, gid)
        if fields.update_atime or fields.update_mtime:
            st = os.stat(self._fd[inode])
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            os.utime(path, ns=(atime, mtime))
        return await self.getattr(inode, ctx)

    @_errno
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.readlink(b"", dir_fd=self._fd[inode])

    # -- names ----------------------------------------------------------------------------

    @_errno
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        os.mkdir(name, mode, dir_fd=self._fd[parent_inode])
        self._own(parent_inode, name, ctx)
        return self._remember(parent_inode, name)

    @_errno
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        os.symlink(target, name, dir_fd=self._fd[parent_inode])
        self._own(parent_inode, name, ctx)
        return self._remember(parent_inode, name)

    @_errno
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        os.link(self._proc(inode), new_name, dst_dir_fd=self._fd[new_parent_inode])
        return self._remember(new_parent_inode, new_name)

    @_errno
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        os.unlink(name, dir_fd=self._fd[parent_inode])

    @_errno
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        os.rmdir(name, dir_fd=self._fd[parent_inode])

    @_errno
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_dir, new_dir = self._fd[parent_inode_old], self._fd[parent_inode_new]
        if _libc.renameat2(old_dir, name_old, new_dir, name_new, flags) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")

    def _own(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        """New files belong to the caller, as on a local file system."""
        os.chown(name, ctx.uid, ctx.gid, dir_fd=self._fd[parent], follow_symlinks=False)

    # -- files ----------------------------------------------------------------------------

    def _new_handle(self, value: int) -> int:
        fh = max(self._handles, default=0) + 1
        self._handles[fh] = value
        return fh

    @_errno
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        # O_NOFOLLOW was for the caller's path, not for the /proc link to the inode.
        fd = os.open(self._proc(inode), flags & ~(os.O_CREAT | os.O_NOFOLLOW))
        return pyfuse3.FileInfo(fh=self._new_handle(fd))

    @_errno
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fd = os.open(name, flags | os.O_CREAT, mode, dir_fd=self._fd[parent_inode])
        self._own(parent_inode, name, ctx)
        return pyfuse3.FileInfo(fh=self._new_handle(fd)), self._remember(parent_inode, name)

    @_errno
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self._handles[fh], size, off)

    @_errno
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(self._handles[fh], buf, off)

    async def flush(self, fh: int) -> None:
        pass

    @_errno
    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(self._handles[fh])

    @_errno
    async def release(self, fh: int) -> None:
        os.close(self._handles.pop(fh))

    # -- directories ----------------------------------------------------------------------

    @_errno
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = self._new_handle(inode)
        self._listings[fh] = sorted(os.listdir(self._proc(inode).encode()))
        return fh

    @_errno
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        parent = self._handles[fh]
        names = self._listings[fh]
        for index in range(start_id, len(names)):
            try:
                attr = self._remember(parent, names[index])
            except FileNotFoundError:  # removed since opendir
                continue
            if not pyfuse3.readdir_reply(token, names[index], attr, index + 1):
                await self.forget([(attr.st_ino, 1)])
                return

    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)
        self._listings.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    @_errno
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self._fd[pyfuse3.ROOT_INODE])
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(data, name, getattr(st, name))
        for name in ("f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(data, name, getattr(st, name))
        return data


def serve(source: str, mountpoint: str) -> None:
    """Mount ``source`` at ``mountpoint`` and serve until unmounted or SIGTERM."""
    os.umask(0)  # the kernel has applied the caller's umask to every mode already
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "subtype=passthrough"}
    pyfuse3.init(Passthrough(source), mountpoint, options)
    # SIGTERM/SIGINT end the loop; close() then unmounts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: pyfuse3.terminate())
    print("ready", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: fuse_passthrough.py SOURCE MOUNTPOINT")
    serve(sys.argv[1], sys.argv[2])
