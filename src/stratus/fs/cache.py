"""Where file-system transactions read committed state: the store, or an executor's cache.

Theory of operation: ``FsCache`` keeps raw values (inodes, directory entries, chunks)
with their store versions, and directory listings with their prefix versions, across
transactions. Freshness comes from the store's change feed (``ChangeFeed``, shared with
the executor's ``KVCache``): each page drops every entry older than a version the feed lists
for its key, and
every listing older than a change to one of its entries (what this executor read or
committed at that version or later is current, and stays). A stale entry is never a
wrong answer: transactions record the version they read and the commit validates it, so
a stale read costs a conflict and a re-run, after which the conflicting keys are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

from stratus.fs.keys import ROOT
from stratus.store.base import Store
from stratus.store.feed import ChangeFeed

Read = tuple[int, bytes | None]
"""``(version, value)`` of a key: ``(0, None)`` when never written."""


class Reader(Protocol):
    """Committed state as a transaction sees it."""

    def read(self, key: str) -> Read:
        """The version and value of ``key``."""
        ...

    def read_many(self, keys: Iterable[str]) -> dict[str, Read]:
        """:meth:`read` of several keys."""
        ...

    def listing(self, prefix: str) -> tuple[int, list[str]]:
        """The prefix version of ``prefix`` and its live keys, sorted."""
        ...


class StoreReader:
    """Reads straight from the store (the client's transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self, key: str) -> Read:
        entry = self.store.get(key)
        return entry.version, entry.value

    def read_many(self, keys: Iterable[str]) -> dict[str, Read]:
        return {k: (e.version, e.value) for k, e in self.store.get_many(keys).items()}

    def listing(self, prefix: str) -> tuple[int, list[str]]:
        # Version first: a key added between the two calls then fails validation.
        version = self.store.prefix_version(prefix)
        return version, self.store.keys(prefix)


class FsCache(StoreReader):
    """An executor's cache of file-system keys and listings, kept fresh by the change feed.

    ``capacity`` bounds the number of entries (least recently read dropped first) and
    ``max_bytes`` the bytes of values held.
    """

    def __init__(
        self,
        store: Store,
        *,
        feed: ChangeFeed | None = None,
        capacity: int = 200_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_staleness: float = 0.02,
    ) -> None:
        super().__init__(store)
        self.capacity = capacity
        self.max_bytes = max_bytes
        # Shared with the executor's kv cache; a feed of its own otherwise.
        self.feed = feed or ChangeFeed(store, max_staleness=max_staleness)
        self.feed.follow(self)
        self._entries: OrderedDict[str, Read] = OrderedDict()
        self._listings: dict[str, tuple[int, list[str]]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries) + len(self._listings)

    def read(self, key: str) -> Read:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            return entry
        self.misses += 1
        entry = super().read(key)
        self._keep(key, entry)
        return entry

    def read_many(self, keys: Iterable[str]) -> dict[str, Read]:
        found: dict[str, Read] = {}
        missing = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                missing.append(key)
            else:
                found[key] = entry
        self.hits += len(found)
        if missing:
            self.misses += len(missing)
            for key, entry in super().read_many(missing).items():
                self._keep(key, entry)
                found[key] = entry
        return found

    def listing(self, prefix: str) -> tuple[int, list[str]]:
        cached = self._listings.get(prefix)
        if cached is None:
            cached = self._listings[prefix] = super().listing(prefix)
        return cached[0], list(cached[1])

    def _keep(self, key: str, entry: Read) -> None:
        old = self._entries.pop(key, None)
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])
        self._entries[key] = entry
        if entry[1] is not None:
            self._bytes += len(entry[1])
        while len(self._entries) > self.capacity or self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            if dropped[1] is not None:
                self._bytes -= len(dropped[1])

    def invalidate(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` (values, or listings when a key is a listed prefix)."""
        for key in keys:
            self._drop(key)
            self._listings.pop(key, None)

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])
        # A directory entry changed: so did the listing of its directory.
        self._listings.pop(key[: key.rfind("/") + 1], None)

    def committed(self, writes: Mapping[str, bytes | None], versions: Mapping[str, int]) -> None:
        """Cache what this process just committed, so its next transaction reads it
        without a round trip (the change feed will list these very versions: kept)."""
        for key, value in writes.items():
            self._drop(key)
            version = versions.get(key)
            if version is not None:
                self._keep(key, (version, value))

    def _forget_older(self, key: str, version: int) -> None:
        """``key`` was written at ``version``: drop what was cached before that (what we
        read or committed at that version or later is current)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] < version:
            self._drop(key)
        prefix = key[: key.rfind("/") + 1]
        listing = self._listings.get(prefix)
        if listing is not None and listing[0] < version:
            del self._listings[prefix]

    def refresh_if_stale(self) -> None:
        """Read the change feed if a write may have happened that was not dropped yet."""
        self.feed.refresh_if_stale()

    def refresh(self) -> None:
        """Drop every entry (and listing) older than what was written since the feed was
        last read."""
        self.feed.refresh()

    def changed(self, changes: list[tuple[str, int]]) -> None:
        for key, version in changes:
            if key.startswith(ROOT):
                self._forget_older(key, version)

    def reset(self) -> None:
        self._entries.clear()
        self._listings.clear()
        self._bytes = 0
