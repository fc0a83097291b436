"""One file-system transaction: reads recorded, writes buffered, committed at once.

Theory of operation: a transaction reads committed state through a ``Reader`` (the
executor's cache, or the store) and records the version of every key it read, absent
keys included (version 0 or a tombstone's), and the prefix version of every directory it
listed. Its writes stay in a buffer (``None``: delete) and its own reads see them. At
the end, :meth:`FsTransaction.transaction` turns both into one store ``Transaction``: the
store validates every recorded version and applies the writes atomically, or writes
nothing and reports a conflict. Because missing names and whole listings are in the read
set, a file created by someone else where we saw none is a conflict too (no phantoms).

    state        event                       next
    ----------   -------------------------   -------------------------------------
    open         get / list / put / delete   open (reads recorded, writes buffered)
    open         commit, reads still hold    committed (writes visible together)
    open         commit, a read changed      conflicted (nothing written; re-run)
    open         exception / crash / drop    aborted (nothing written)
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from stratus.fs.cache import FsCache, Reader
from stratus.store.base import CommitResult, Delete, Put, Store, Transaction, Write


class FsTransaction:
    """The reads and buffered writes of one transaction, shared by every volume it uses."""

    __slots__ = ("_reader", "prefix_reads", "reads", "writes")

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.reads: dict[str, int] = {}
        self.prefix_reads: dict[str, int] = {}
        self.writes: dict[str, bytes | None] = {}

    @property
    def reader(self) -> Reader:
        return self._reader

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` as this transaction sees it (its own writes included)."""
        if key in self.writes:
            return self.writes[key]
        version, value = self._reader.read(key)
        self.reads.setdefault(key, version)
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        missing = []
        for key in keys:
            if key in self.writes:
                found[key] = self.writes[key]
            else:
                missing.append(key)
        if missing:
            for key, (version, value) in self._reader.read_many(missing).items():
                self.reads.setdefault(key, version)
                found[key] = value
        return found

    def list(self, prefix: str) -> list[str]:
        """The live keys under ``prefix`` (own writes included), sorted; the listing is
        part of the read set, so any key added or removed under it is a conflict."""
        version, keys = self._reader.listing(prefix)
        self.prefix_reads.setdefault(prefix, version)
        mine = [k for k in self.writes if k.startswith(prefix)]
        if not mine:
            return keys
        live = set(keys)
        for key in mine:
            if self.writes[key] is None:
                live.discard(key)
            else:
                live.add(key)
        return sorted(live)

    def expect_absent(self, key: str) -> None:
        """Require ``key`` never to have been written (a fresh random inode number):
        no round trip now, and a collision is a conflict at commit."""
        if key not in self.writes:
            self.reads.setdefault(key, 0)

    def put(self, key: str, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: str) -> None:
        self.writes[key] = None

    @property
    def has_writes(self) -> bool:
        return bool(self.writes)

    def store_writes(self) -> builtins.list[Write]:
        return [Put(k, v) if v is not None else Delete(k) for k, v in self.writes.items()]

    def transaction(self) -> Transaction:
        """The store transaction that validates the reads and applies the writes."""
        return Transaction(self.reads, self.store_writes(), self.prefix_reads)

    def validate(self, store: Store) -> CommitResult:
        """Whether every read still holds, without writing (a read-only commit)."""
        current = store.get_many(self.reads)
        conflicts = [k for k, v in self.reads.items() if current[k].version != v]
        conflicts += [p for p, v in self.prefix_reads.items() if store.prefix_version(p) != v]
        return CommitResult(ok=not conflicts, conflicts=conflicts)

    def abort(self, store: Store) -> CommitResult:
        """Write nothing, but say whether the reads still hold (a function that raised
        after reading a state that had changed deserves a re-run, not its error)."""
        result = self.validate(store)
        self.finished(result)
        return result

    def commit(self, store: Store) -> CommitResult:
        """Validate and apply (or only validate, when nothing was written); on success
        the reader, if it is a cache, learns what was written."""
        if not self.writes:
            if not self.reads and not self.prefix_reads:
                return CommitResult(ok=True)
            result = self.validate(store)
        else:
            result = store.commit(self.transaction())
        self.finished(result)
        return result

    def finished(self, result: CommitResult) -> None:
        """Tell the cache the outcome of a commit that carried this transaction."""
        if not isinstance(self._reader, FsCache):
            return
        if result.ok:
            self._reader.committed(self.writes, result.versions)
        else:
            self._reader.invalidate(result.conflicts)
