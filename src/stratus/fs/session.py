"""``FsSession``: the file systems of one invocation or one client transaction.

Every volume it opens shares one ``FsTransaction``, so an invocation's file-system
reads and writes, across volumes, commit in one store transaction (the executor merges
it with the invocation's kv transaction). Its default volume is created on first use,
inside the same transaction; other volumes must exist. A tenant's session names volumes
in the tenant's namespace: every name it is given gets ``prefix`` (``keys.tenant_volume``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stratus._exceptions import ConflictError
from stratus.fs.api import FileSystem
from stratus.fs.ops import VolumeOps
from stratus.fs.transaction import FsTransaction
from stratus.fs.volume import Volumes, check_volume_name


class FsSession:
    """``session.fs`` is the default volume's ``FileSystem``; ``session.volume(name)``
    another one, all in ``session.txn``."""

    def __init__(self, volumes: Volumes, default: str = "default", *, prefix: str = "") -> None:
        self._volumes = volumes
        self._prefix = prefix
        self.default = self._stored_name(default)
        self.txn = FsTransaction(volumes.reader)
        self._open: dict[str, FileSystem] = {}

    @property
    def fs(self) -> FileSystem:
        """The default volume (created by this transaction if it does not exist)."""
        return self._open.get(self.default) or self._open_volume(self.default, create=True)

    def volume(self, name: str) -> FileSystem:
        """An existing volume, in this transaction; ``VolumeNotFound`` if there is none."""
        name = self._stored_name(name) if self._prefix else name
        return self._open.get(name) or self._open_volume(name, create=name == self.default)

    def _stored_name(self, name: str) -> str:
        """The name of the volume ``name`` in the store: checked alone (so that a tenant's
        name cannot climb out of its prefix), then with the prefix (so that it fits)."""
        check_volume_name(name)
        return check_volume_name(self._prefix + name) if self._prefix else name

    def _open_volume(self, name: str, *, create: bool) -> FileSystem:
        volume = self._volumes.ensure(self.txn, name, create=create)  # read in self.txn
        fs = self._open[name] = FileSystem(VolumeOps(volume, self.txn), volumes=self.volume)
        return fs

    @property
    def used(self) -> bool:
        """Whether anything was read or written (else there is nothing to commit)."""
        return bool(self._open)

    def finish(self) -> None:
        """Close every file still open, so what their buffers hold is written."""
        for fs in self._open.values():
            fs.close_files()

    def abandon(self) -> None:
        """Close every file still open of a transaction that will not commit (their
        holds are per process and must not outlive it)."""
        for fs in self._open.values():
            fs.abandon_files()


@contextmanager
def transaction(volumes: Volumes, volume: str = "default") -> Iterator[FileSystem]:
    """A ``FileSystem`` of ``volume`` whose changes commit together at the end of the
    ``with`` block (``ConflictError`` if something it read changed meanwhile; nothing is
    written if the block raises)."""
    session = FsSession(volumes, volume)
    try:
        yield session.fs
        session.finish()
    except BaseException:
        session.abandon()
        raise
    if not session.txn.commit(volumes.store).ok:
        raise ConflictError(f"volume {volume}: a read changed before the commit")
