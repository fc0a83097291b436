"""The store protocol: versioned keys, server-side merges, validated transactions, a feed.

Theory of operation
-------------------
A store maps ``str`` keys to opaque ``bytes``. Every write (put, merge, delete) takes the
next number of ONE store-wide sequence as the key's ``version``, so versions order all
writes of the store and a key's version changes whenever its value does. A delete leaves
a *tombstone* (value ``None``) carrying its version, so a reader that validates what it
saw, and the change feed, both see deletes. Version 0 means "never written".

Optimistic transactions (the ``serializable`` level) read first, then ask the store to
``commit`` a :class:`Transaction`: the versions it read (``reads``), the highest version it
saw under each listed prefix (``prefix_reads``) and its writes. Inside one atomic write
transaction the store checks every read version and prefix version against the current
ones; any difference is a conflict and nothing is written. Otherwise the writes take
consecutive versions, in order, and become visible together. Because a prefix's version is
the maximum over all its keys *including tombstones*, inserting, updating or deleting any
key under it raises it: phantoms are conflicts.

The three backends share this logic (:func:`validate` and :func:`apply_writes`) and differ
only in how they open an atomic write transaction and read/write one row inside it
(:class:`WriteView`), so their semantics are the same by construction. New values are all
computed (merges included) before the first row is written: a ``merge_fn`` that raises
leaves nothing behind, even in the memory backend that has no rollback.

``purge(keys)`` removes keys outright, tombstones included, taking no version: it is for
the platform's own expired records (``records``), whose absence nobody validates; a
purged key reads as never written. The key holding the store's last version is skipped
(the SQLite backend derives the sequence from the highest row), to be purged later.

``changes(since, limit)`` lists keys whose *current* version is above ``since``, in
version order. A key written twice appears once, at its latest version: that is what a
cache needs to invalidate. Its ``last`` is the cursor for the next call.

Stores are safe to share between threads. A store object must not be used in a child
created by ``fork``: there it is marked closed (see :func:`_abandon_after_fork`), so the
child opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, Self, TypeVar

import msgspec

from stratus._exceptions import ConfigurationError, PayloadTooLarge
from stratus._exceptions import StoreClosed as StoreClosed  # defined with the others

MAX_KEY_BYTES = 1024
"""The longest key (and prefix), in bytes of UTF-8."""

DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024
"""The default largest value, in bytes; each store takes ``max_value_bytes=``."""

MergeFn = Callable[[bytes | None, bytes], bytes]
"""``merge_fn(old_value_or_None, value) -> new_value``: how ``merge`` combines values."""

_R = TypeVar("_R")


# --------------------------------------------------------------------------- value types


class Entry(msgspec.Struct, frozen=True, gc=False):
    """A key's value and version: ``Entry(None, 0)`` when absent, ``Entry(None, v)`` when
    deleted at version ``v`` (a tombstone)."""

    value: bytes | None
    version: int


class Put(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Write ``value`` at ``key``."""

    key: str
    value: bytes


class Merge(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Replace the value at ``key`` by ``merge_fn(old_value_or_None, value)``."""

    key: str
    value: bytes


class Delete(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Delete ``key``, leaving a tombstone with a new version."""

    key: str


Write = Put | Merge | Delete
"""One write of a transaction."""


class Transaction(msgspec.Struct, frozen=True):
    """What a transaction read and what it writes, for :meth:`Store.commit`.

    ``reads`` maps each key read to the version seen (0: absent). ``prefix_reads`` maps
    each prefix listed to :meth:`Store.prefix_version` at read time. ``writes`` are
    applied in order.

    >>> Transaction(reads={"a": 3}, writes=[Put("b", b"x")])  # doctest: +SKIP
    """

    reads: Mapping[str, int]
    writes: Sequence[Write]
    prefix_reads: Mapping[str, int] = {}


class CommitResult(msgspec.Struct, frozen=True):
    """The outcome of :meth:`Store.commit`: on success the new version of each key written,
    and for each key merged the version of the value it was merged into (0: none), so a
    cache holding that version knows the new value without reading it; on failure the keys
    and prefixes whose versions had changed (nothing was written)."""

    ok: bool
    versions: dict[str, int] = {}
    conflicts: list[str] = []
    merged_into: dict[str, int] = {}


class Changes(msgspec.Struct, frozen=True):
    """A page of the change feed: ``(key, version)`` pairs in version order.

    ``last`` is the ``since`` of the next call: the version of the last pair when the page
    is full, else the store's last version (nothing more happened up to it). A ``last``
    below the ``since`` asked means the store is not the one the cursor came from.
    """

    last: int
    keys: list[tuple[str, int]]


class ChangeSignal(Protocol):
    """A file descriptor that becomes readable when the store changes, so a cache learns of
    writes without asking (Redis pub/sub). Best effort: while it is ``healthy`` a change
    is signalled within milliseconds; when it breaks, callers go back to polling."""

    healthy: bool

    def fileno(self) -> int:
        """The descriptor to poll for reading."""
        ...

    def drain(self) -> bool:
        """Consume what arrived without blocking: True if the store changed (or the signal
        just broke, so that nothing is missed)."""
        ...

    def close(self) -> None:
        """Stop listening; idempotent."""
        ...


# --------------------------------------------------------------------------- the protocol


class Store(Protocol):
    """The storage interface the platform programs against (memory, SQLite, LMDB, Redis)."""

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        ...

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys (not tombstones) starting with ``prefix``, sorted by code point."""
        ...

    def prefix_version(self, prefix: str) -> int:
        """The highest version of any key under ``prefix``, tombstones included (0: none);
        record it in :attr:`Transaction.prefix_reads` to make phantoms conflicts."""
        ...

    def put(self, key: str, value: bytes) -> int:
        """Write ``value`` at ``key``; returns its new version."""
        ...

    def merge(self, key: str, value: bytes) -> int:
        """Atomically replace the value by ``merge_fn(old_or_None, value)``; new version."""
        ...

    def delete(self, key: str) -> int:
        """Delete ``key``, leaving a tombstone; returns the tombstone's version."""
        ...

    def commit(self, txn: Transaction) -> CommitResult:
        """Validate ``txn``'s reads and apply its writes atomically and durably, or not."""
        ...

    def purge(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` entirely (no tombstone, no new version); how many were. Only for
        keys whose absence nobody validates (see the module docstring)."""
        ...

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above ``since``, in version order, at most
        ``limit`` of them."""
        ...

    def last_version(self) -> int:
        """The last version assigned by the store (0 for a new store)."""
        ...

    def watch(self) -> ChangeSignal | None:
        """A new :class:`ChangeSignal` of this store's writes, or None where polling
        :meth:`changes` is as cheap (the embedded backends)."""
        ...

    def close(self) -> None:
        """Release the store's files and connections; idempotent."""
        ...

    def __enter__(self) -> Self:
        """The store itself; :meth:`close` on exit."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        ...


# --------------------------------------------------------------------------- checks


def check_key(key: str) -> bytes:
    """``key`` in UTF-8, after checking it is a non-empty ``str`` of at most 1 KiB."""
    if not isinstance(key, str):
        raise ConfigurationError(f"store keys are str, not {type(key).__name__}")
    if not key:
        raise ConfigurationError("store keys must not be empty")
    return check_prefix(key)


def check_prefix(prefix: str) -> bytes:
    """``prefix`` in UTF-8, after checking it is a ``str`` of at most 1 KiB (may be empty)."""
    if not isinstance(prefix, str):
        raise ConfigurationError(f"store keys are str, not {type(prefix).__name__}")
    try:
        encoded = prefix.encode()
    except UnicodeEncodeError as exc:
        raise ConfigurationError(f"store key {prefix!r} is not valid Unicode: {exc}") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"store key of {len(encoded)} bytes is longer than {MAX_KEY_BYTES} bytes"
        )
    return encoded


def check_value(value: bytes, limit: int) -> bytes:
    """``value`` as ``bytes`` after checking its size; :class:`PayloadTooLarge` if above."""
    if not isinstance(value, bytes):
        if not isinstance(value, bytearray | memoryview):
            raise TypeError(f"store values are bytes, not {type(value).__name__}")
        value = bytes(value)
    if len(value) > limit:
        raise PayloadTooLarge(
            f"value of {len(value)} bytes is larger than the store's limit of {limit} bytes",
            size=len(value),
            limit=limit,
        )
    return value


def check_write(write: Write, limit: int) -> Write:
    """``write`` after checking its key and value (values copied to ``bytes``)."""
    if isinstance(write, Delete):
        check_key(write.key)
        return write
    if not isinstance(write, Put | Merge):
        raise TypeError(f"transaction writes are Put, Merge or Delete, not {write!r}")
    check_key(write.key)
    value = check_value(write.value, limit)
    return write if value is write.value else type(write)(write.key, value)


def check_transaction(txn: Transaction, limit: int) -> Transaction:
    """``txn`` after checking every key, prefix and value in it."""
    for key in txn.reads:
        check_key(key)
    for prefix in txn.prefix_reads:
        check_prefix(prefix)
    writes = [check_write(write, limit) for write in txn.writes]
    if all(a is b for a, b in zip(writes, txn.writes, strict=True)):
        return txn
    return Transaction(reads=txn.reads, writes=writes, prefix_reads=txn.prefix_reads)


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix``, in code-point
    order (= UTF-8 byte order), or None when there is none (``""``, or only U+10FFFF).

    >>> prefix_end("ab")
    'ac'
    """
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: skip them
        last = 0xE000
    return stripped[:-1] + chr(last)


# --------------------------------------------------------------------------- shared logic


class WriteView(Protocol):
    """A backend's rows as seen from inside one atomic write transaction."""

    def read(self, key: str) -> tuple[bytes | None, int]:
        """``(value, version)`` of ``key``; ``(None, 0)`` when absent."""
        ...

    def write(self, key: str, value: bytes | None, version: int) -> None:
        """Store ``value`` (``None``: tombstone) at ``key`` with ``version``."""
        ...

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included; 0 when none."""
        ...

    def remove(self, key: str) -> None:
        """Remove ``key``'s row (value or tombstone) and its change-feed entry."""
        ...


def validate(view: WriteView, txn: Transaction) -> list[str]:
    """The keys and prefixes of ``txn`` whose versions changed since it read them."""
    conflicts = [key for key, seen in txn.reads.items() if view.read(key)[1] != seen]
    conflicts += [
        prefix for prefix, seen in txn.prefix_reads.items() if view.prefix_version(prefix) != seen
    ]
    return conflicts


def apply_writes(
    view: WriteView, last: int, writes: Sequence[Write], merge_fn: MergeFn, limit: int
) -> tuple[dict[str, int], int, dict[str, int]]:
    """Apply ``writes`` after version ``last``: ``({key: new version}, new last, {merged
    key: version of the stored value it was merged into})``.

    Every write takes the next version. All new values are computed before any row is
    written, so a failing ``merge_fn`` (or an oversized merge result) writes nothing.
    """
    staged: dict[str, tuple[bytes | None, int]] = {}
    merged_into: dict[str, int] = {}
    for write in writes:
        last += 1
        value: bytes | None
        if isinstance(write, Put):
            value = write.value
        elif isinstance(write, Merge):
            if write.key in staged:
                old = staged[write.key][0]
            else:
                old, merged_into[write.key] = view.read(write.key)
            value = merge_fn(old, write.value)
            if not isinstance(value, bytes):
                raise TypeError(f"merge_fn returned {type(value).__name__}, not bytes")
            check_value(value, limit)
        else:
            value = None
        staged[write.key] = (value, last)
    # In version order: a key written twice keeps only its last version.
    for key, (value, version) in sorted(staged.items(), key=lambda item: item[1][1]):
        view.write(key, value, version)
    versions = {key: version for key, (_, version) in staged.items()}
    return versions, last, merged_into


# --------------------------------------------------------------------------- base class

_open_stores: weakref.WeakSet[BaseStore] = weakref.WeakSet()
# Handles abandoned in a forked child: never closed there (closing an inherited SQLite
# connection or LMDB environment would release the parent's locks or reader slots).
_abandoned: list[object] = []


def _abandon_after_fork() -> None:
    for store in list(_open_stores):
        handle = store._abandon()
        if handle is not None:
            _abandoned.append(handle)
    _open_stores.clear()


os.register_at_fork(after_in_child=_abandon_after_fork)


class BaseStore(ABC):
    """The write operations of every backend, in terms of :meth:`_atomic`, plus limits,
    the merge function, closing and the context-manager protocol."""

    def __init__(self, merge_fn: MergeFn, *, max_value_bytes: int) -> None:
        if not callable(merge_fn):
            raise ConfigurationError("merge_fn must be callable: (old or None, value) -> bytes")
        if max_value_bytes <= 0:
            raise ConfigurationError(f"max_value_bytes must be positive, not {max_value_bytes}")
        self.merge_fn = merge_fn
        self.max_value_bytes = max_value_bytes
        self._lock = threading.Lock()

    def _track(self) -> None:
        """Called by a backend once open: in a forked child, the store will be abandoned."""
        _open_stores.add(self)

    @abstractmethod
    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        """Run ``body(view, last_version)`` in one atomic, durable write transaction; it
        returns ``(result, new_last_version)``. An exception rolls everything back."""

    @abstractmethod
    def _abandon(self) -> object | None:
        """Forget the handle (connection, environment) without closing it, and return it:
        called in a forked child, where the parent's handle must not be used."""

    def put(self, key: str, value: bytes) -> int:
        """Write ``value`` at ``key``; returns its new version."""
        return self._write_one(Put(key, value))

    def merge(self, key: str, value: bytes) -> int:
        """Atomically replace the value by ``merge_fn(old_or_None, value)``; new version."""
        return self._write_one(Merge(key, value))

    def delete(self, key: str) -> int:
        """Delete ``key``, leaving a tombstone; returns the tombstone's version."""
        return self._write_one(Delete(key))

    def _write_one(self, write: Write) -> int:
        write = check_write(write, self.max_value_bytes)
        writes = (write,)

        def body(view: WriteView, last: int) -> tuple[int, int]:
            _, last, _ = apply_writes(view, last, writes, self.merge_fn, self.max_value_bytes)
            return last, last

        return self._atomic(body)

    def commit(self, txn: Transaction) -> CommitResult:
        """Validate ``txn``'s reads and apply its writes atomically and durably, or not."""
        txn = check_transaction(txn, self.max_value_bytes)

        def body(view: WriteView, last: int) -> tuple[CommitResult, int]:
            conflicts = validate(view, txn)
            if conflicts:
                return CommitResult(ok=False, conflicts=conflicts), last
            versions, last, merged_into = apply_writes(
                view, last, txn.writes, self.merge_fn, self.max_value_bytes
            )
            return CommitResult(ok=True, versions=versions, merged_into=merged_into), last

        return self._atomic(body)

    def purge(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` entirely (no tombstone, no new version); how many were."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)

        def body(view: WriteView, last: int) -> tuple[int, int]:
            removed = 0
            for key in wanted:
                version = view.read(key)[1]
                if version and version != last:  # the last version stays: it is the sequence
                    view.remove(key)
                    removed += 1
            return removed, last

        return self._atomic(body)

    def watch(self) -> ChangeSignal | None:
        """None: a local store's change feed is cheap enough to poll."""
        return None

    @staticmethod
    def _check_limit(limit: int) -> None:
        if limit < 1:
            raise ConfigurationError(f"changes() needs a limit of at least 1, not {limit}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release the store's files and connections; idempotent."""
