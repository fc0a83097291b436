"""A store in one SQLite file, shared safely by any number of processes.

Theory of operation
-------------------
Schema::

    kv(key TEXT PRIMARY KEY, value BLOB, version INTEGER NOT NULL)  -- value NULL: tombstone
    kv_version: UNIQUE index on kv(version)                         -- the change feed

The last version given is the highest in ``kv_version`` (tombstones are rows, and a
transaction's last write always keeps the transaction's last version), so no counter row
is written: a commit of one key writes two pages, its row and its index entry.

The database is in WAL mode: readers never block the writer nor each other, and each
read statement (or explicit read transaction) sees one committed snapshot. Every write
(put, merge, delete, commit) is ``BEGIN IMMEDIATE`` ... ``COMMIT``: BEGIN IMMEDIATE takes
the database's single write lock up front, so two processes' read-modify-writes (merge,
validation) are serialized instead of deadlocking on a lock upgrade. Inside, the shared
logic of ``base`` reads the last version, validates and writes rows.

Writers first take an exclusive ``flock`` on ``<path>.writer-lock`` (``lock.WriterLock``).
SQLite alone would be correct, but a writer that finds the database locked sleeps in its
busy handler (1, 2, 5, ... 100 ms) while the holder may take the lock again and again: two
processes merging saw single merges stall for up to 630 ms. The ``flock`` is polled every
2 ms at most, and given up after ``lock_timeout`` seconds (``StoreLockTimeout``, naming the
holder): a stopped holder does not stop every writer forever. ``busy_timeout`` (the same
deadline) still covers other SQLite clients of the file. The lock is released when its
process dies, so a killed writer blocks nobody.

A full disk makes a write fail with :class:`~stratus.StoreFull` (nothing written; reads
keep working); any other failure of SQLite to write, with ``StoreUnavailable``.

Durability: with ``synchronous="FULL"`` the WAL is fsynced at every commit, so a
returned write survives a power loss. With ``"NORMAL"`` the commit reaches the OS but
not the disk: it survives the process being killed (SIGKILL included), and a power loss
may drop the last transactions, never corrupt the file. Text keys compare with SQLite's
BINARY collation, i.e. UTF-8 byte order, which is code-point order like Python's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

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
    prefix_end,
)
from stratus.store.lock import DEFAULT_LOCK_TIMEOUT, WriterLock

_R = TypeVar("_R")
_ABSENT = Entry(None, 0)
_CHUNK = 500  # keys per `IN (...)` query of get_many

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, version INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS kv_version ON kv(version)",
)
_GET = "SELECT value, version FROM kv WHERE key = ?"
_UPSERT = (
    "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
)
_SEQ = "SELECT coalesce(max(version), 0) FROM kv"  # one step down the kv_version index


class SQLiteStore(BaseStore):
    """A :class:`~stratus.store.Store` in the SQLite file ``path`` (created if missing).

    ``synchronous`` is ``"FULL"`` (fsync at every commit) or ``"NORMAL"`` (survives a
    crash of the process, not of the machine). ``lock_timeout`` is how long a write waits
    for another process's write, in seconds, before ``StoreLockTimeout``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        merge_fn: MergeFn,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigurationError(f"synchronous is 'FULL' or 'NORMAL', not {synchronous!r}")
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        self.path = os.fspath(path)
        # Writers queue on this file's flock, polled briefly, where SQLite's busy handler
        # would sleep 1, 2, 5... 100 ms between retries.
        self._writer = WriterLock(self.path + ".writer-lock", lock_timeout)
        try:
            # Under the lock too: two processes creating the file at once would otherwise
            # race on switching it to WAL, which SQLite reports as "database is locked".
            with self._writer.held():
                conn = _connect(self.path, synchronous, lock_timeout)
        except BaseException:
            self._writer.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._track()

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        check_key(key)
        with self._lock:
            row = self._open().execute(_GET, (key,)).fetchone()
        return _ABSENT if row is None else Entry(row[0], row[1])

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        found: dict[str, Entry] = {}
        with self._lock:
            conn = self._open()
            conn.execute("BEGIN")  # one snapshot across the chunks
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT key, value, version FROM kv WHERE key IN ({marks})"
                    for key, value, version in conn.execute(query, chunk):
                        found[key] = Entry(value, version)
            finally:
                conn.execute("COMMIT")
        return {key: found.get(key, _ABSENT) for key in wanted}

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted."""
        check_prefix(prefix)
        where, args = _prefix_range(prefix)
        query = f"SELECT key FROM kv WHERE {where} AND value IS NOT NULL ORDER BY key"
        with self._lock:
            return [row[0] for row in self._open().execute(query, args)]

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none)."""
        check_prefix(prefix)
        with self._lock:
            return _prefix_version(self._open(), prefix)

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above ``since``, in version order."""
        self._check_limit(limit)
        query = "SELECT key, version FROM kv WHERE version > ? ORDER BY version LIMIT ?"
        with self._lock:
            conn = self._open()
            conn.execute("BEGIN")  # the page and the sequence from one snapshot
            try:
                page = [(key, version) for key, version in conn.execute(query, (since, limit))]
                last = conn.execute(_SEQ).fetchone()[0]
            finally:
                conn.execute("COMMIT")
        return Changes(last=page[-1][1] if len(page) == limit else last, keys=page)

    def last_version(self) -> int:
        """The last version assigned (0 for a new store)."""
        with self._lock:
            row = self._open().execute(_SEQ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ writes

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        with self._lock:
            conn = self._open()
            with self._writer.held():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    last = conn.execute(_SEQ).fetchone()[0]
                    result, _ = body(_SQLiteView(conn), last)
                    conn.execute("COMMIT")
                except BaseException as e:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if isinstance(e, sqlite3.OperationalError | sqlite3.DatabaseError):
                        raise _unavailable(self.path, e) from e
                    raise
            return result

    # ------------------------------------------------------------------ lifetime

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed(f"the store {self.path} is closed (or was opened before a fork)")
        return self._conn

    def _abandon(self) -> object | None:
        conn, self._conn = self._conn, None
        return conn

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
                self._writer.close()


class _SQLiteView:
    """An open write transaction as a :class:`~stratus.store.base.WriteView`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def read(self, key: str) -> tuple[bytes | None, int]:
        row = self._conn.execute(_GET, (key,)).fetchone()
        return (None, 0) if row is None else (row[0], row[1])

    def write(self, key: str, value: bytes | None, version: int) -> None:
        self._conn.execute(_UPSERT, (key, value, version))

    def remove(self, key: str) -> None:
        self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def prefix_version(self, prefix: str) -> int:
        return _prefix_version(self._conn, prefix)


def _connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with the schema created."""
    # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ConfigurationError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


_SQLITE_FULL = 13  # the result code of "database or disk is full"


def _unavailable(path: str, error: sqlite3.Error) -> StoreUnavailable:
    """The typed error for a failed write: ``StoreFull`` when the disk is full."""
    code = getattr(error, "sqlite_errorcode", None)
    if code == _SQLITE_FULL or "full" in str(error).lower():
        return StoreFull(f"{path}: the disk is full ({error}); nothing was written")
    return StoreUnavailable(f"{path}: the write failed ({error}); nothing was written")


def _prefix_range(prefix: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause (and its arguments) selecting the keys that start with ``prefix``:
    a range on the primary key, so it uses the index."""
    end = prefix_end(prefix)
    if end is None:
        return "key >= ?", (prefix,)
    return "key >= ? AND key < ?", (prefix, end)


def _prefix_version(conn: sqlite3.Connection, prefix: str) -> int:
    where, args = _prefix_range(prefix)
    row = conn.execute(f"SELECT max(version) FROM kv WHERE {where}", args).fetchone()
    return int(row[0] or 0)
