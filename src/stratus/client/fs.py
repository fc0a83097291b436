"""``app.fs``: the file system from outside functions, on the cluster's store itself.

The client opens the store the cluster keeps its state in (as the coordinator does for
``app.kv``), so a client transaction validates and commits exactly as an invocation's
does, without a round trip through the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from stratus import backoff
from stratus._exceptions import ConfigurationError, ConflictError
from stratus.fs import FileSystem, FsSession, Volumes
from stratus.fs.session import transaction
from stratus.fs.volume import DEFAULT_ATTEMPTS
from stratus.kv.open import open_store
from stratus.store.base import Store

_T = TypeVar("_T")


class ClientFS:
    """Volumes and transactions of a cluster's file system.

    >>> app.fs.volumes.create("photos")
    >>> with app.fs.transaction(volume="photos") as fs:
    ...     fs.write_bytes("/cat.jpg", data)
    """

    def __init__(self, store_url: str) -> None:
        if not store_url:
            raise ConfigurationError(
                "app.fs opens the cluster's store: pass store= to connect() for a remote cluster"
            )
        if store_url.startswith("memory:"):
            raise ConfigurationError("app.fs needs a shared store, not memory:")
        self._url = store_url
        self._store: Store | None = None
        self._volumes: Volumes | None = None

    @property
    def volumes(self) -> Volumes:
        """``create(name)``, ``list()``, ``delete(name)`` and ``open(name)``."""
        if self._volumes is None:
            self._store = open_store(self._url)
            self._volumes = Volumes(self._store)
        return self._volumes

    @contextmanager
    def transaction(self, volume: str = "default") -> Iterator[FileSystem]:
        """A ``FileSystem`` whose reads and writes commit atomically at the end of the
        block: ``ConflictError`` (nothing written) if what it read changed meanwhile;
        nothing written if the block raises. The volume is created on first use."""
        with transaction(self.volumes, volume) as fs:
            yield fs

    def run(
        self,
        fn: Callable[[FileSystem], _T],
        *,
        volume: str = "default",
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> _T:
        """``fn(fs)`` in a transaction, re-run on conflict after a random pause, up to
        ``attempts`` times (like an invocation is), then ``ConflictError``."""
        volumes = self.volumes
        for run in range(attempts):
            if run:
                backoff.CONFLICT.sleep(run)
            session = FsSession(volumes, volume)
            try:
                value = fn(session.fs)
                session.finish()
            except Exception:
                stale = session.used and not session.txn.abort(volumes.store).ok
                session.abandon()
                if stale:
                    continue  # it failed on a state that had changed: run it again
                raise
            if session.txn.commit(volumes.store).ok:
                return value
        raise ConflictError(f"volume {volume}: reads changed in each of {attempts} runs")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
            self._volumes = None
