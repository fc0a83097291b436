"""An in-memory store for unit tests and the in-process test cluster.

Theory of operation: ``_rows`` maps each key to ``(value or None, version)``; ``_feed``
maps each key's current version to the key, in increasing version order (a rewritten key
is moved to the end), which is the change feed. One lock serializes every operation, so
each is atomic and reads see a consistent state. Nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

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

_ABSENT = Entry(None, 0)
_R = TypeVar("_R")


class MemoryStore(BaseStore):
    """A :class:`~stratus.store.Store` in a dict: same semantics, no durability.

    >>> store = MemoryStore(lambda old, new: (old or b"") + new)
    >>> store.put("a", b"x"), store.merge("a", b"y"), store.get("a")
    (1, 2, Entry(value=b'xy', version=2))
    """

    def __init__(
        self, merge_fn: MergeFn, *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    ) -> None:
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        self._rows: dict[str, tuple[bytes | None, int]] = {}
        self._feed: dict[int, str] = {}
        self._last = 0
        self._closed = False
        self._track()

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        check_key(key)
        with self._lock:
            self._check_open()
            row = self._rows.get(key)
        return _ABSENT if row is None else Entry(*row)

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot."""
        wanted = list(keys)
        for key in wanted:
            check_key(key)
        with self._lock:
            self._check_open()
            rows = {key: self._rows.get(key) for key in wanted}
        return {key: _ABSENT if row is None else Entry(*row) for key, row in rows.items()}

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted."""
        check_prefix(prefix)
        with self._lock:
            self._check_open()
            return sorted(
                key
                for key, (value, _) in self._rows.items()
                if value is not None and key.startswith(prefix)
            )

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none)."""
        check_prefix(prefix)
        with self._lock:
            self._check_open()
            return _MemoryView(self._rows, self._feed).prefix_version(prefix)

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above ``since``, in version order."""
        self._check_limit(limit)
        with self._lock:
            self._check_open()
            page: list[tuple[str, int]] = []
            for version, key in self._feed.items():
                if version > since:
                    page.append((key, version))
                    if len(page) == limit:
                        return Changes(last=version, keys=page)
            return Changes(last=self._last, keys=page)

    def last_version(self) -> int:
        """The last version assigned (0 for a new store)."""
        with self._lock:
            self._check_open()
            return self._last

    # ------------------------------------------------------------------ writes

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        with self._lock:
            self._check_open()
            # The shared logic computes every value before writing the first row, so an
            # exception leaves the dicts untouched: no rollback is needed.
            result, self._last = body(_MemoryView(self._rows, self._feed), self._last)
            return result

    def _abandon(self) -> object | None:
        self._closed = True  # a dict is safe to keep in a child, but one store per process
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def close(self) -> None:
        """Mark the store closed; its data is dropped."""
        with self._lock:
            self._closed = True
            self._rows = {}
            self._feed = {}


class _MemoryView:
    """The dicts of a :class:`MemoryStore` as a :class:`~stratus.store.base.WriteView`."""

    __slots__ = ("_feed", "_rows")

    def __init__(self, rows: dict[str, tuple[bytes | None, int]], feed: dict[int, str]) -> None:
        self._rows = rows
        self._feed = feed

    def read(self, key: str) -> tuple[bytes | None, int]:
        return self._rows.get(key, (None, 0))

    def write(self, key: str, value: bytes | None, version: int) -> None:
        old = self._rows.get(key)
        if old is not None:
            del self._feed[old[1]]
        self._rows[key] = (value, version)
        self._feed[version] = key  # versions only grow: the dict stays in version order

    def remove(self, key: str) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            del self._feed[old[1]]

    def prefix_version(self, prefix: str) -> int:
        return max(
            (version for key, (_, version) in self._rows.items() if key.startswith(prefix)),
            default=0,
        )
