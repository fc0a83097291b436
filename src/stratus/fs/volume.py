"""Volumes: named file systems in a store, and transactions on them.

Theory of operation: the registry entry ``fs/volumes/<name>`` holds the volume's id, and
every key of the volume lives under ``fs/v/<id>/``; a deleted name can be reused at once
because a new volume gets a new id. Every transaction on a volume reads its registry
entry, so deleting a volume makes its concurrent transactions conflict, and a re-run
finds it gone (``VolumeNotFound``). Deleting removes the registry entry in one commit,
then the volume's keys in batches (unreachable already: a crash in between leaves only
garbage, never a half-visible volume).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from stratus import backoff
from stratus._exceptions import ConfigurationError, ConflictError, VolumeExists, VolumeNotFound
from stratus.fs import keys as k
from stratus.fs.cache import FsCache, Reader, StoreReader
from stratus.fs.ops import VolumeOps
from stratus.fs.records import ROOT_INO, Inode, VolumeRecord, inode_encoder, volume_decoder
from stratus.fs.transaction import FsTransaction
from stratus.store.base import Delete, Store, Transaction

_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_ATTEMPTS = 5
_DELETE_BATCH = 500
_checked: set[str] = set()  # names already found good (every invocation checks its own)


def check_volume_name(name: str) -> str:
    """``name`` after checking it: 1-64 letters, digits, ``.``, ``_``, ``-``."""
    if type(name) is str and name in _checked:
        return name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"bad volume name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if len(_checked) < 1024:
        _checked.add(name)
    return name


class Volume:
    """One volume of a store: ``transaction()`` and ``run()`` give its ``VolumeOps``.

    >>> with volumes.open("default").transaction() as ops:
    ...     ops.create(ROOT_INO, b"hello", 0o644, 0, 0)
    """

    def __init__(self, store: Store, name: str, record: VolumeRecord, reader: Reader) -> None:
        self.store = store
        self.name = name
        self.id = record.id
        self.keys = k.VolumeKeys(record.id)
        self._record_key = k.volume_record(name)
        self._reader = reader
        self._held: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<Volume {self.name} {self.id}>"

    def ops(self, txn: FsTransaction) -> VolumeOps:
        """This volume's operations inside ``txn`` (which then depends on the volume)."""
        raw = txn.get(self._record_key)
        if raw is None or volume_decoder.decode(raw).id != self.id:
            raise VolumeNotFound(self.name)
        return VolumeOps(self, txn)

    def begin(self) -> FsTransaction:
        """A new transaction reading through this volume's reader (refreshed if a cache)."""
        if isinstance(self._reader, FsCache):
            self._reader.refresh_if_stale()
        return FsTransaction(self._reader)

    @contextmanager
    def transaction(self) -> Iterator[VolumeOps]:
        """One transaction: committed on normal exit (``ConflictError`` if a read changed,
        and then nothing is written), abandoned if the body raises."""
        txn = self.begin()
        yield self.ops(txn)
        if not txn.commit(self.store).ok:
            raise ConflictError(f"volume {self.name}: a read changed before the commit")

    def attempt(self, fn: Callable[[VolumeOps], _T]) -> tuple[_T] | None:
        """One run of ``fn(ops)`` in a transaction: ``(value,)`` once committed, or None
        when the commit conflicted or ``fn`` raised after reading a state that had
        already changed (nothing written either way: run it again). An error from a
        consistent state is raised as it is."""
        txn = self.begin()
        try:
            value = fn(self.ops(txn))
        except Exception:
            if txn.abort(self.store).ok:
                raise
            return None  # it may have failed because of what changed
        return (value,) if txn.commit(self.store).ok else None

    def run(self, fn: Callable[[VolumeOps], _T], *, attempts: int = DEFAULT_ATTEMPTS) -> _T:
        """``fn(ops)`` in a transaction, re-run after a random pause (``backoff.CONFLICT``)
        while :meth:`attempt` conflicts (``ConflictError`` after ``attempts`` runs). An
        error from a consistent state is raised as it is."""
        for run in range(attempts):
            if run:
                backoff.CONFLICT.sleep(run)
            done = self.attempt(fn)
            if done is not None:
                return done[0]
        raise ConflictError(f"volume {self.name}: reads changed in each of {attempts} runs")

    # Holds are per process: an open file of this process keeps an unlinked inode.
    def is_held(self, ino: int) -> bool:
        return ino in self._held

    def hold(self, ino: int) -> None:
        self._held[ino] = self._held.get(ino, 0) + 1

    def release(self, ino: int) -> bool:
        """Drop one hold; True while others remain."""
        count = self._held.get(ino, 0) - 1
        if count > 0:
            self._held[ino] = count
            return True
        self._held.pop(ino, None)
        return False


class Volumes:
    """The volumes of a store: ``create``, ``open``, ``list``, ``delete``.

    >>> volumes = Volumes(store)
    >>> volumes.create("photos")
    <Volume photos ...>
    """

    def __init__(self, store: Store, *, cache: FsCache | None = None) -> None:
        self.store = store
        self.reader: Reader = cache if cache is not None else StoreReader(store)
        self._known: dict[str, tuple[bytes, Volume]] = {}  # name -> (registry entry, volume)

    def open(self, name: str) -> Volume:
        """The volume called ``name``; ``VolumeNotFound`` if there is none. The same
        ``Volume`` object (which holds this process's open-file holds) while it exists."""
        raw = self.reader.read(k.volume_record(check_volume_name(name)))[1]
        if raw is None:
            raise VolumeNotFound(name)
        return self._volume(name, raw)

    def _volume(self, name: str, raw: bytes) -> Volume:
        known = self._known.get(name)
        if known is None or known[0] != raw:
            volume = Volume(self.store, name, volume_decoder.decode(raw), self.reader)
            known = self._known[name] = (raw, volume)
        return known[1]

    def create(self, name: str, *, exist_ok: bool = False) -> Volume:
        """A new empty volume; ``VolumeExists`` if the name is taken (unless ``exist_ok``)."""
        for _ in range(DEFAULT_ATTEMPTS):
            txn = FsTransaction(StoreReader(self.store))
            volume = self.ensure(txn, name)
            if not txn.has_writes and not exist_ok:
                raise VolumeExists(name)
            if txn.commit(self.store).ok:
                return volume
        raise ConflictError(f"volume {name}: created and deleted concurrently, again and again")

    def ensure(self, txn: FsTransaction, name: str, *, create: bool = True) -> Volume:
        """The volume ``name`` as ``txn`` sees it; when it does not exist, created by
        ``txn`` (its registry entry and root directory buffered there), or
        ``VolumeNotFound`` without ``create``."""
        key = k.volume_record(check_volume_name(name))
        raw = txn.get(key)
        if raw is not None:
            return self._volume(name, raw)
        if not create:
            raise VolumeNotFound(name)
        record = VolumeRecord(secrets.token_hex(8), time.time_ns())
        volume = Volume(self.store, name, record, self.reader)
        now = record.created_ns
        root = Inode(stat.S_IFDIR | 0o755, 2, os.getuid(), os.getgid(), 0, now, now, now, ROOT_INO)
        txn.put(key, _record_encoder.encode(record))
        txn.put(volume.keys.inode(ROOT_INO), inode_encoder.encode(root))
        return volume

    def list(self) -> list[str]:
        """The names of the volumes, sorted."""
        return [key[len(k.VOLUMES) :] for key in self.store.keys(k.VOLUMES)]

    def delete(self, name: str) -> None:
        """Delete the volume and everything in it; ``VolumeNotFound`` if there is none."""
        key = k.volume_record(check_volume_name(name))
        entry = self.store.get(key)
        if entry.value is None:
            raise VolumeNotFound(name)
        record = volume_decoder.decode(entry.value)
        result = self.store.commit(Transaction({key: entry.version}, [Delete(key)]))
        if not result.ok:
            raise ConflictError(f"volume {name} changed while being deleted")
        prefix = k.volume_prefix(record.id)
        while doomed := self.store.keys(prefix)[:_DELETE_BATCH]:
            self.store.commit(Transaction({}, [Delete(key) for key in doomed]))


_record_encoder = inode_encoder  # one msgpack encoder serves every record type
