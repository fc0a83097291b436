"""A store in one LMDB environment, shared safely by any number of processes.

Theory of operation
-------------------
The environment (a directory holding ``data.mdb`` and ``lock.mdb``) has three named
sub-databases::

    kv     physical key -> 8-byte big-endian version | 1 flag byte | payload
    feed   8-byte big-endian version -> key (UTF-8): the change feed, in version order
    meta   b"seq" -> 8-byte big-endian last version

The flag byte has ``_TOMBSTONE`` (a deleted key: no value) and ``_LONG_KEY``. LMDB's
keys are at most 511 bytes and ours up to 1 KiB, so a key longer than 511 bytes is stored
under ``first 478 bytes | 0xFF | SHA-256 of the key`` (511 bytes; 0xFF never occurs in
UTF-8, so it cannot collide with a short key) and its payload starts with the 2-byte
length and the bytes of the full key. Prefix scans start at the prefix cut to 478 bytes
and filter on the full key; the few long keys are sorted back into place.

LMDB allows one writer at a time across all processes (a robust mutex in ``lock.mdb``,
recovered when its owner is killed, but waited for forever while its owner is stopped) and
any number of readers on MVCC snapshots. Writers first take the ``flock`` of
``<path>/writer-lock`` with a deadline (``lock.WriterLock``: ``StoreLockTimeout`` after
``lock_timeout`` seconds, naming the holder), so LMDB's mutex is never waited for, and
each write (put, merge, delete, commit) is one write transaction running the shared
logic of ``base``, and each read one read transaction. A committed transaction is
durable when ``sync=True`` (LMDB flushes data pages, then the meta page). A writer
killed after writing its meta page but before publishing it in ``lock.mdb`` leaves the
other processes reading the previous snapshot until the next write transaction recovers
the lock; that transaction (never acknowledged) then appears, whole. Validation runs in
write transactions, so it always sees it. With
``sync=False`` a commit reaches the OS page cache only: it survives the process being
killed, but a power loss may lose recent transactions and, on a filesystem that reorders
writes, damage the file.

LMDB forbids opening one environment twice in a process: one store object per path per
process. ``map_size`` reserves address space (not disk); every process should pass the
same one (the default). A write beyond it, or on a full disk, fails with
:class:`~stratus.StoreFull` (nothing written; reads keep working).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import lmdb

from stratus._exceptions import ConfigurationError, StoreFull, StoreUnavailable
from stratus.store.base import (
    DEFAULT_MAX_VALUE_BYTES,
    BaseStore,
    Changes,
    Entry,
    MergeFn,
    StoreClosed,
    WriteView,
    check_key,
    check_prefix,
)
from stratus.store.lock import DEFAULT_LOCK_TIMEOUT, WriterLock

_R = TypeVar("_R")
_ABSENT = Entry(None, 0)
_HEADER = struct.Struct(">QB")  # version, flags
_VERSION = struct.Struct(">Q")
_KEY_LENGTH = struct.Struct(">H")
_TOMBSTONE = 1
_LONG_KEY = 2
_MAX_PHYSICAL = 511  # LMDB's compiled-in key limit (checked at open)
_CUT = _MAX_PHYSICAL - 1 - 32  # bytes of a long key kept in its physical key
_SEQ_KEY = b"seq"
DEFAULT_MAP_SIZE = 64 * 1024**3
"""Address space reserved for an environment (the file grows only as data is written)."""


class LMDBStore(BaseStore):
    """A :class:`~stratus.store.Store` in the LMDB environment directory ``path``.

    ``sync=True`` makes every returned write durable on disk; ``sync=False`` only against
    a crash of the process. ``map_size`` bounds the database's size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        merge_fn: MergeFn,
        *,
        sync: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = 256,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        self.path = os.fspath(path)
        self._lock_timeout = lock_timeout
        try:
            env = lmdb.open(
                self.path,
                map_size=map_size,
                max_dbs=3,
                max_readers=max_readers,
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except lmdb.Error as exc:
            if "already open in this process" in str(exc):
                raise ConfigurationError(
                    f"{self.path} is already open in this process: LMDB allows one store "
                    "object per environment per process; share it"
                ) from None
            raise
        try:
            if env.max_key_size() < _MAX_PHYSICAL:
                raise ConfigurationError(f"this LMDB build allows keys of {env.max_key_size()}")
            env.reader_check()  # free the reader slots of killed processes
            with env.begin(write=True) as txn:
                self._kv = env.open_db(b"kv", txn=txn)
                self._feed = env.open_db(b"feed", txn=txn)
                self._meta = env.open_db(b"meta", txn=txn)
        except BaseException:
            env.close()
            raise
        self._env: lmdb.Environment | None = env
        self._writer = WriterLock(os.path.join(self.path, "writer-lock"), lock_timeout)
        self._track()

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        physical = _physical(check_key(key))
        with self._open().begin(buffers=True) as txn:
            record = txn.get(physical, db=self._kv)
            if record is None:
                return _ABSENT
            value, version = _decode(record)
        return Entry(value, version)

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot."""
        wanted = {key: _physical(check_key(key)) for key in keys}
        found: dict[str, Entry] = {}
        with self._open().begin(buffers=True) as txn:
            for key, physical in wanted.items():
                record = txn.get(physical, db=self._kv)
                found[key] = _ABSENT if record is None else Entry(*_decode(record))
        return found

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted."""
        wanted = check_prefix(prefix)
        with self._open().begin(buffers=True) as txn:
            found = [key for key, _, dead in _scan(txn.cursor(db=self._kv), wanted) if not dead]
        # Long keys are stored under a hash, out of order: put them back in place.
        return sorted(key.decode() for key in found)

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none)."""
        wanted = check_prefix(prefix)
        with self._open().begin(buffers=True) as txn:
            return _prefix_version(txn.cursor(db=self._kv), wanted)

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above ``since``, in version order."""
        self._check_limit(limit)
        page: list[tuple[str, int]] = []
        with self._open().begin(buffers=True) as txn:
            last = _read_seq(txn, self._meta)
            cursor = txn.cursor(db=self._feed)
            if since < last and cursor.set_range(_VERSION.pack(max(since + 1, 0))):
                for version, key in cursor:
                    page.append((bytes(key).decode(), _VERSION.unpack(version)[0]))
                    if len(page) == limit:
                        return Changes(last=page[-1][1], keys=page)
        return Changes(last=last, keys=page)

    def last_version(self) -> int:
        """The last version assigned (0 for a new store)."""
        with self._open().begin(buffers=True) as txn:
            return _read_seq(txn, self._meta)

    # ------------------------------------------------------------------ writes

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        # The thread lock keeps this process's threads from queueing on LMDB's mutex
        # while holding the GIL; LMDB's mutex orders the processes.
        with self._lock:
            env = self._open()  # before the lock: a closed store has closed its lock file
            with (
                self._writer.held(),
                self._mapped_errors(),
                env.begin(write=True, buffers=True) as txn,
            ):
                last = _read_seq(txn, self._meta)
                result, new_last = body(_LMDBView(txn, self._kv, self._feed), last)
                if new_last != last:
                    txn.put(_SEQ_KEY, _VERSION.pack(new_last), db=self._meta)
        return result

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """LMDB's write errors as the store's: a full map or disk is ``StoreFull``."""
        try:
            yield
        except (lmdb.MapFullError, lmdb.DiskError) as e:
            raise StoreFull(f"{self.path}: full ({e}); nothing was written") from e
        except lmdb.Error as e:
            raise StoreUnavailable(f"{self.path}: the write failed ({e})") from e

    # ------------------------------------------------------------------ lifetime

    def _open(self) -> lmdb.Environment:
        env = self._env
        if env is None:
            raise StoreClosed(f"the store {self.path} is closed (or was opened before a fork)")
        return env

    def _abandon(self) -> object | None:
        env, self._env = self._env, None
        return env

    def close(self) -> None:
        """Close the environment; idempotent."""
        with self._lock:
            env, self._env = self._env, None
            if env is not None:
                env.close()
                self._writer.close()


class _LMDBView:
    """An open write transaction as a :class:`~stratus.store.base.WriteView`."""

    __slots__ = ("_feed", "_kv", "_txn")

    def __init__(
        self, txn: lmdb.Transaction[memoryview], kv: lmdb._Database, feed: lmdb._Database
    ) -> None:
        self._txn = txn
        self._kv = kv
        self._feed = feed

    def read(self, key: str) -> tuple[bytes | None, int]:
        record = self._txn.get(_physical(key.encode()), db=self._kv)
        return (None, 0) if record is None else _decode(record)

    def write(self, key: str, value: bytes | None, version: int) -> None:
        encoded = key.encode()
        physical = _physical(encoded)
        old = self._txn.get(physical, db=self._kv)
        if old is not None:
            # Copy the old version out before writing: the buffer dies with the next write.
            self._txn.delete(bytes(old[:8]), db=self._feed)
        self._txn.put(physical, _encode(encoded, physical, value, version), db=self._kv)
        # Versions only grow and are written in order: append at the end of the feed.
        self._txn.put(_VERSION.pack(version), encoded, db=self._feed, append=True)

    def remove(self, key: str) -> None:
        physical = _physical(key.encode())
        old = self._txn.get(physical, db=self._kv)
        if old is not None:
            self._txn.delete(bytes(old[:8]), db=self._feed)
            self._txn.delete(physical, db=self._kv)

    def prefix_version(self, prefix: str) -> int:
        return _prefix_version(self._txn.cursor(db=self._kv), prefix.encode())


# --------------------------------------------------------------------------- encoding


def _physical(key: bytes) -> bytes:
    """The LMDB key of ``key``: itself when short enough, else cut and hashed."""
    if len(key) <= _MAX_PHYSICAL:
        return key
    return key[:_CUT] + b"\xff" + hashlib.sha256(key).digest()


def _encode(key: bytes, physical: bytes, value: bytes | None, version: int) -> bytes:
    flags = _TOMBSTONE if value is None else 0
    if physical is key:
        return _HEADER.pack(version, flags) + (value or b"")
    return b"".join(
        (_HEADER.pack(version, flags | _LONG_KEY), _KEY_LENGTH.pack(len(key)), key, value or b"")
    )


def _decode(record: bytes | memoryview) -> tuple[bytes | None, int]:
    """``(value or None, version)`` of a record, the value copied out."""
    version, flags = _HEADER.unpack_from(record)
    if flags & _TOMBSTONE:
        return None, version
    start = _HEADER.size
    if flags & _LONG_KEY:
        start += _KEY_LENGTH.size + _KEY_LENGTH.unpack_from(record, start)[0]
    return bytes(record[start:]), version


def _scan(cursor: lmdb.Cursor[memoryview], prefix: bytes) -> Iterable[tuple[bytes, int, bool]]:
    """``(key, version, is_tombstone)`` of every key starting with ``prefix``, in physical
    order (short keys sorted, long ones grouped by their first 478 bytes)."""
    start = prefix[:_CUT]
    if not cursor.set_range(start):
        return
    for physical, record in cursor:
        if physical[: len(start)] != start:
            return
        version, flags = _HEADER.unpack_from(record)
        if flags & _LONG_KEY:
            length = _KEY_LENGTH.unpack_from(record, _HEADER.size)[0]
            offset = _HEADER.size + _KEY_LENGTH.size
            key = bytes(record[offset : offset + length])
        else:
            key = bytes(physical)
        if key.startswith(prefix):
            yield key, version, bool(flags & _TOMBSTONE)


def _prefix_version(cursor: lmdb.Cursor[memoryview], prefix: bytes) -> int:
    return max((version for _, version, _ in _scan(cursor, prefix)), default=0)


def _read_seq(txn: lmdb.Transaction[memoryview], meta: lmdb._Database) -> int:
    raw = txn.get(_SEQ_KEY, db=meta)
    return 0 if raw is None else int(_VERSION.unpack(raw)[0])
