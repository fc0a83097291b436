"""An executor's cache of kv entries: a hit costs no round trip and no decoding.

Theory of operation: entries are kept decoded, with their store version. Freshness comes
from the store's change feed (``stratus.store.feed.ChangeFeed``, shared with the
executor's file-system cache): each page of keys written since the last read drops them
from the cache, so the next read fetches the new version. The executor reads the feed
before an invocation when the last read is older than ``max_staleness`` and on a timer
while idle, which bounds how stale an ``eventual`` read can be; on a store with a change
signal (Redis pub/sub) only when the signal says something was written. Stale reads
are never wrong for ``serializable`` invocations: their commit validates every version
read, and a conflict invalidates those keys before the retry.
"""

from __future__ import annotations

from collections import OrderedDict

from stratus.lattice import Lattice, LatticeCodec
from stratus.lattice.encoding import DATA_ONLY
from stratus.store.base import Store
from stratus.store.feed import ChangeFeed


class KVCache:
    """Decoded entries by key, invalidated by the store's change feed. Implements
    ``Reader`` for ``KVTransaction``. ``values`` is the cluster's codec (the default
    reads and writes plain data only); a forged stored value raises ``ForgedValue`` from
    ``read`` and is not cached."""

    def __init__(
        self,
        store: Store,
        *,
        values: LatticeCodec = DATA_ONLY,
        feed: ChangeFeed | None = None,
        capacity: int = 100_000,
        max_staleness: float = 0.02,
        max_quiet: float = 1.0,
        hidden: tuple[str, ...] = (),
        shown: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.values = values
        self.hidden = hidden  # prefixes of keys that listings leave out (the platform's)
        self.shown = shown  # prefixes inside those whose listings show them (tenants' keys)
        self.capacity = capacity
        # Shared with the executor's other caches; a feed of its own otherwise.
        self.feed = feed or ChangeFeed(store, max_staleness=max_staleness, max_quiet=max_quiet)
        self.feed.follow(self)
        self._entries: OrderedDict[str, tuple[int, Lattice | None]] = OrderedDict()
        self._own: dict[str, int] = {}  # key -> version this executor committed and cached
        self.hits = 0
        self.misses = 0
        self.read_bytes = 0  # fetched from the store on misses

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def read(self, key: str) -> tuple[int, Lattice | None]:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            return entry
        self.misses += 1
        stored = self.store.get(key)
        if stored.value is not None:
            self.read_bytes += len(stored.value)
        entry = (stored.version, None if stored.value is None else self.values.decode(stored.value))
        self._entries[key] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def peek(self, key: str, version: int) -> Lattice | None:
        """The cached value of ``key`` if the cache holds exactly ``version`` of it (live)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == version else None

    def counters(self) -> tuple[int, int, int]:
        """Hits, misses and bytes read from the store so far (for the meter)."""
        return self.hits, self.misses, self.read_bytes

    def read_fresh(self, key: str) -> tuple[int, Lattice | None]:
        self._entries.pop(key, None)
        return self.read(key)

    def keys(self, prefix: str) -> list[str]:
        found = self.store.keys(prefix)
        if self.hidden and not (self.shown and prefix.startswith(self.shown)):
            found = [k for k in found if not k.startswith(self.hidden)]
        return found

    def prefix_version(self, prefix: str) -> int:
        return self.store.prefix_version(prefix)

    def invalidate(self, keys: list[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def committed(self, key: str, version: int, value: Lattice | None) -> None:
        """Cache what this executor just committed at ``key`` (``value``: the version it
        read merged with its write), so reading its own write is a hit; the change feed
        will list that version, and it is not taken for someone else's write."""
        self._entries[key] = (version, value)
        self._own[key] = version

    def refresh_if_stale(self) -> None:
        """Read the change feed if a write may have happened that was not dropped yet."""
        self.feed.refresh_if_stale()

    def refresh(self) -> None:
        """Drop every entry written since the feed was last read."""
        self.feed.refresh()

    def changed(self, changes: list[tuple[str, int]]) -> None:
        if self._entries:
            for key, version in changes:
                if self._own.pop(key, None) != version:
                    self._entries.pop(key, None)

    def reset(self) -> None:
        self._entries.clear()
