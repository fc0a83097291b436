"""``ChangeFeed``: one reader of a store's change feed for every cache of a process.

Theory of operation: a cache keeps entries with their store versions and must drop those
that others overwrote. The feed keeps the cursor, reads ``store.changes`` from it and
hands each page to every cache that follows it (``changed``), or tells them to forget
everything when the store under them is not the one the cursor came from (``reset``).
``refresh_if_stale`` reads the feed when the last read is older than ``max_staleness``;
with a store that signals its writes (Redis pub/sub) it reads only when the signal says
something was written, and every ``max_quiet`` seconds in case. An executor's kv and
file-system caches share one feed, so an invocation pays at most one feed read for both.
"""

from __future__ import annotations

import time
from typing import Protocol

from stratus.store.base import ChangeSignal, Store

_PAGE = 1000


class Follower(Protocol):
    """A cache that drops what the feed says was written."""

    def changed(self, changes: list[tuple[str, int]]) -> None:
        """``(key, version)`` of keys written since the last page."""
        ...

    def reset(self) -> None:
        """Forget everything: the feed cannot say what changed."""
        ...


class ChangeFeed:
    """The change feed of ``store``, read for every follower at once."""

    def __init__(self, store: Store, *, max_staleness: float = 0.02, max_quiet: float = 1.0):
        self.store = store
        self.max_staleness = max_staleness
        self.max_quiet = max_quiet
        self.signal: ChangeSignal | None = store.watch()  # before the cursor: nothing missed
        self._cursor = store.last_version()
        self._refreshed = time.monotonic()
        self._followers: list[Follower] = []

    def follow(self, follower: Follower) -> None:
        """Hand ``follower`` every page read from now on."""
        self._followers.append(follower)

    def refresh_if_stale(self) -> None:
        """Read the feed if a write may have happened that the followers have not seen."""
        age = time.monotonic() - self._refreshed
        signal = self.signal
        if signal is not None and signal.healthy:
            if signal.drain() or age >= self.max_quiet:
                self.refresh()
        elif age >= self.max_staleness:
            self.refresh()

    def refresh(self) -> None:
        """Read every change since the cursor and hand it to the followers."""
        while True:
            page = self.store.changes(self._cursor, _PAGE)
            if page.keys:
                for follower in self._followers:
                    follower.changed(page.keys)
            if page.last < self._cursor:  # a different store under us: forget everything
                for follower in self._followers:
                    follower.reset()
            self._cursor = page.last
            if len(page.keys) < _PAGE:
                break
        self._refreshed = time.monotonic()
