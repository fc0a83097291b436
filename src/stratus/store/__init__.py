"""Durable, versioned key-value storage: one protocol, three backends.

>>> from stratus.store import MemoryStore, Put, Transaction
>>> store = MemoryStore(lambda old, new: new)
>>> seen = store.get("a")                                   # Entry(value=None, version=0)
>>> store.commit(Transaction(reads={"a": seen.version}, writes=[Put("a", b"1")])).ok
True

``MemoryStore`` is for tests, ``SQLiteStore`` and ``LMDBStore`` keep their data in a file
that several processes may share. See ``base`` for the versions and validation model.
"""

from stratus.store.base import (
    DEFAULT_MAX_VALUE_BYTES,
    MAX_KEY_BYTES,
    Changes,
    CommitResult,
    Delete,
    Entry,
    Merge,
    MergeFn,
    Put,
    Store,
    StoreClosed,
    Transaction,
    Write,
)
from stratus.store.lmdb_store import LMDBStore
from stratus.store.memory import MemoryStore
from stratus.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "Changes",
    "CommitResult",
    "Delete",
    "Entry",
    "LMDBStore",
    "MemoryStore",
    "Merge",
    "MergeFn",
    "Put",
    "SQLiteStore",
    "Store",
    "StoreClosed",
    "Transaction",
    "Write",
]
