"""A volume as a FUSE file system: pyfuse3's low-level operations over ``VolumeOps``.

Theory of operation: the kernel speaks in inode numbers, and so does the volume, so they
map one to one (the root is inode 1 on both sides). Every request is its own transaction
(``Volume.attempt``; on a conflict re-run after a randomized pause, other requests being
served meanwhile, for up to ``Backoff.deadline`` seconds), committed before the kernel
gets its reply, so a ``write`` that returned is in the store and another mount or a
function sees it at once; a request answered ``EIO`` wrote nothing. Nothing is buffered
here: ``flush`` and ``fsync`` have nothing left to do.

    request             transaction                         state kept here
    ------------------  ----------------------------------  ------------------------------
    open                none (O_TRUNC: truncate)            file handle -> inode (held)
    create              create                              file handle -> inode (held)
    read / write        at the offset (O_APPEND: at the end) -
    unlink / rename     the same (noting an open target)    maybe-orphaned open inodes
    release             none (a maybe-orphan: reap)         hold and handle dropped
    opendir             readdir: one consistent listing     dir handle -> that listing
    readdir             -                                   served from the listing
    lookup / getattr    from the cache, unvalidated (below) -
    everything else     the VolumeOps call of the same name -

A handle *holds* its inode, so a file unlinked (or renamed over) while open keeps its
data until its last handle is released, as on any POSIX file system. The kernel keeps
attributes and names for ``cache_timeout`` seconds (1 by default): changes made through
this mount update that cache at once; changes made elsewhere (a function, a second mount)
are seen within that time, sizes included; cached file pages are dropped at each ``open``.
Appends go where the volume's file ends, whatever the kernel's cached size says, so
appenders here and elsewhere lose nothing. ``cache_timeout=0`` asks the volume every time.

Errors: an ``OSError`` from the volume is the reply's errno (they are Linux's already).
Anything else (a bug, the store gone, conflicts until the deadline) is logged with its
traceback and answered ``EIO``: a handler never takes the mount down.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import random
import signal
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from stratus._exceptions import ConflictError
from stratus.backoff import Backoff
from stratus.fs.ops import VolumeOps
from stratus.fs.records import ROOT_INO, Attr
from stratus.fs.volume import Volume

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_CACHE_TIMEOUT = 1.0  # seconds the kernel may reuse attributes and names
DEFAULT_BACKOFF = Backoff()  # conflicts re-run for up to 1.5 s before EIO

assert ROOT_INO == pyfuse3.ROOT_INODE  # inode numbers map directly


def _replies(fn: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Turn what ``fn`` raises into a FUSE reply: an errno, or ``EIO`` (logged)."""

    @functools.wraps(fn)
    async def handler(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            if e.errno:
                raise pyfuse3.FUSEError(e.errno) from None
            log.exception("%s: OSError without errno; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


class VolumeFS(pyfuse3.Operations):
    """pyfuse3's ``Operations`` over one :class:`Volume` (see the module docstring)."""

    supports_dot_lookup = False  # "." and ".." are the kernel's; no NFS export

    def __init__(
        self,
        volume: Volume,
        *,
        cache_timeout: float = DEFAULT_CACHE_TIMEOUT,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__()
        self.volume = volume
        self.cache_timeout = cache_timeout
        self.backoff = backoff
        self._rng = random.Random()
        self._files: dict[int, int] = {}  # file handle -> inode
        self._appending: set[int] = set()  # handles opened with O_APPEND
        self._maybe_orphans: set[int] = set()  # open inodes unlinked or renamed over here
        self._listings: dict[int, list[tuple[bytes, Attr]]] = {}  # dir handle -> entries
        self._next_handle = 1

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.ino
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_size = attr.size
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        entry.st_blksize = attr.blksize
        entry.st_blocks = attr.blocks
        entry.entry_timeout = entry.attr_timeout = self.cache_timeout
        return entry

    async def _run(self, fn: Callable[[VolumeOps], _T]) -> _T:
        """``fn(ops)`` in a transaction, re-run after a randomized pause while it conflicts
        (``self.backoff``); ``ConflictError`` (so ``EIO``) once its deadline has passed.
        Other requests are served during the pauses; each run itself never yields."""
        start = time.monotonic()
        conflicts = 0
        while True:
            done = self.volume.attempt(fn)
            if done is not None:
                return done[0]
            conflicts += 1
            elapsed = time.monotonic() - start
            pause = self.backoff.pause(conflicts, elapsed, self._rng)
            if pause is None:
                raise ConflictError(
                    f"volume {self.volume.name}: reads changed in each of {conflicts} runs "
                    f"({elapsed:.2f} s)"
                )
            await trio.sleep(pause)

    async def _peek(self, fn: Callable[[VolumeOps], _T]) -> _T:
        """``fn`` for a read-only metadata request. With the kernel cache on, it reads the
        mount's cache (at most the cache's refresh interval, 20 ms, behind the store;
        this mount's own commits at once) without validating: the kernel keeps the answer
        for ``cache_timeout`` anyway, so a validation round trip would buy nothing. With
        the kernel cache off, a validated transaction like every other request."""
        if not self.cache_timeout:
            return await self._run(fn)
        return fn(self.volume.ops(self.volume.begin()))

    def _handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    # -- attributes -----------------------------------------------------------------------

    @_replies
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(await self._peek(lambda ops: ops.lookup(parent_inode, name)))

    @_replies
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(await self._peek(lambda ops: ops.getattr(inode)))

    @_replies
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changed = await self._run(
            lambda ops: ops.setattr(
                inode,
                mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
                uid=attr.st_uid if fields.update_uid else None,
                gid=attr.st_gid if fields.update_gid else None,
                size=attr.st_size if fields.update_size else None,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            )
        )
        return self._entry(changed)

    @_replies
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self._peek(lambda ops: ops.readlink(inode))

    @_replies
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        fs = await self._peek(lambda ops: ops.statfs())
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = fs.block_size
        data.f_blocks = fs.blocks
        data.f_bfree = data.f_bavail = fs.blocks_free
        data.f_files = fs.files
        data.f_ffree = data.f_favail = fs.files_free
        data.f_namemax = fs.name_max
        return data

    # -- names ----------------------------------------------------------------------------

    @_replies
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):  # volumes hold no devices, FIFOs or sockets
            raise pyfuse3.FUSEError(errno.EPERM)
        return self._entry(
            await self._run(
                lambda ops: ops.create(parent_inode, name, stat.S_IMODE(mode), ctx.uid, ctx.gid)
            )
        )

    @_replies
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(
            await self._run(
                lambda ops: ops.mkdir(parent_inode, name, stat.S_IMODE(mode), ctx.uid, ctx.gid)
            )
        )

    @_replies
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(
            await self._run(lambda ops: ops.symlink(parent_inode, name, target, ctx.uid, ctx.gid))
        )

    @_replies
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(await self._run(lambda ops: ops.link(inode, new_parent_inode, new_name)))

    @_replies
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        def unlinked(ops: VolumeOps) -> None:
            self._note_open_target(ops, parent_inode, name)
            ops.unlink(parent_inode, name)

        await self._run(unlinked)

    @_replies
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._run(lambda ops: ops.rmdir(parent_inode, name))

    @_replies
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & ~pyfuse3.RENAME_NOREPLACE:  # RENAME_EXCHANGE: the volume cannot swap
            raise pyfuse3.FUSEError(errno.EINVAL)
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)

        def renamed(ops: VolumeOps) -> None:
            self._note_open_target(ops, parent_inode_new, name_new)
            ops.rename(parent_inode_old, name_old, parent_inode_new, name_new, noreplace=noreplace)

        await self._run(renamed)

    # -- files ----------------------------------------------------------------------------

    def _handle_on(self, inode: int, flags: int) -> pyfuse3.FileInfo:
        """A new handle on ``inode``, held until it is released. The hold is taken after
        the transaction that found the inode committed: ``VolumeOps.hold`` inside
        the transaction would count twice when a conflict re-runs it (and holds are this
        process's memory, which no other request touches in between)."""
        self.volume.hold(inode)
        handle = self._handle()
        self._files[handle] = inode
        if flags & os.O_APPEND:
            self._appending.add(handle)
        return pyfuse3.FileInfo(fh=handle)

    def _note_open_target(self, ops: VolumeOps, parent: int, name: bytes) -> None:
        """Before an unlink or a rename over ``name``: if it is an open file, its last
        release must ask the volume whether it is still linked (see ``release``)."""
        if not self._files:
            return
        try:
            ino = ops.lookup(parent, name).ino
        except OSError:
            return  # the operation itself reports it
        if self.volume.is_held(ino):
            self._maybe_orphans.add(ino)  # idempotent: a re-run adds it again

    @_replies
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        # The kernel has just looked the inode up; only O_TRUNC changes anything. (An
        # inode deleted elsewhere meanwhile fails its reads with ENOENT.)
        if flags & os.O_TRUNC:  # libfuse asks for atomic O_TRUNC: the kernel sends it here
            await self._run(lambda ops: ops.setattr(inode, size=0))
        return self._handle_on(inode, flags)

    @_replies
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        attr = await self._run(
            lambda ops: ops.create(parent_inode, name, stat.S_IMODE(mode), ctx.uid, ctx.gid)
        )
        return self._handle_on(attr.ino, flags), self._entry(attr)

    @_replies
    async def read(self, fh: int, off: int, size: int) -> bytes:
        inode = self._files[fh]
        return await self._run(lambda ops: ops.read(inode, off, size))

    @_replies
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        inode = self._files[fh]
        if fh in self._appending:
            # At the end as the volume has it, in the same transaction: the kernel's
            # offset comes from its cached size, which misses appends made elsewhere.
            return await self._run(lambda ops: ops.write(inode, ops.getattr(inode).size, buf))
        return await self._run(lambda ops: ops.write(inode, off, buf))

    async def flush(self, fh: int) -> None:
        pass  # every write committed before it returned

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass  # as durable as the store's commits make it (see docs/fuse.md)

    @_replies
    async def release(self, fh: int) -> None:
        inode = self._files.pop(fh)
        self._appending.discard(fh)
        # Only an inode whose last name went through this mount while it was open can be
        # left with no name: holds are this process's, so a removal elsewhere deletes at
        # once. Any other release only drops the hold, with no transaction. The hold is
        # dropped here, once: a re-run of the transaction must not drop it again.
        if self.volume.release(inode) or inode not in self._maybe_orphans:
            return
        await self._run(lambda ops: ops.reap(inode))
        if not self.volume.is_held(inode):
            self._maybe_orphans.discard(inode)

    # -- directories ----------------------------------------------------------------------

    @_replies
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        handle = self._handle()
        self._listings[handle] = await self._run(lambda ops: ops.readdir(inode))
        return handle

    @_replies
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._listings[fh]
        for index in range(start_id, len(entries)):
            name, attr = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._entry(attr), index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        pass  # inodes live in the volume, not here; open files are held by their handles


def serve(
    volume: Volume,
    mountpoint: str,
    *,
    cache_timeout: float = DEFAULT_CACHE_TIMEOUT,
    backoff: Backoff = DEFAULT_BACKOFF,
    ready: Callable[[], None] | None = None,
    debug: bool = False,
) -> None:
    """Mount ``volume`` at ``mountpoint`` (then call ``ready``) and answer requests until
    it is unmounted (``fusermount3 -u``) or this process gets SIGTERM or SIGINT; unmounts
    on the way out."""
    fs = VolumeFS(volume, cache_timeout=cache_timeout, backoff=backoff)
    options = set(pyfuse3.default_options)
    options |= {f"fsname=stratus:{volume.name}", "subtype=stratus"}
    if debug:
        options.add("debug")
    pyfuse3.init(fs, mountpoint, options)
    if ready is not None:
        ready()
    previous = {
        sig: signal.signal(sig, lambda *_: pyfuse3.terminate())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        trio.run(pyfuse3.main)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        pyfuse3.close(unmount=True)
