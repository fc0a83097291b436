"""A stratus mount whose commits meet real conflicts on demand (for the system tests).

``python tests/system/conflicting_mount.py STORE_PATH MOUNTPOINT CONTROL DEADLINE`` mounts
the volume ``default`` of the SQLite store at STORE_PATH (created if missing). While the
file CONTROL holds a number N > 0, the next commit that writes first rewrites one of the
keys its transaction read (same value, new version), as a concurrent writer would, so the
store rejects it; N goes down by one. Requests re-run conflicts for DEADLINE seconds
(``Backoff(deadline=DEADLINE)``; 0: one run, so N conflicts fail the next N writing
requests with EIO). Serves until unmounted or sent SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stratus.backoff import Backoff
from stratus.fs import FsCache, Volumes
from stratus.fs.fuse import serve
from stratus.kv.open import open_store
from stratus.store.base import CommitResult, Store, Transaction


class Conflicting:
    """``store`` whose next commits (as many as ``control`` says) meet a conflict."""

    def __init__(self, store: Store, control: Path) -> None:
        self._store = store
        self._control = control

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(self, txn: Transaction) -> CommitResult:
        text = self._control.read_text().strip() if self._control.exists() else ""
        if text and int(text) > 0 and txn.reads and txn.writes:
            self._control.write_text(str(int(text) - 1))
            key = next(iter(txn.reads))
            entry = self._store.get(key)
            if entry.value is not None:
                self._store.put(key, entry.value)  # a concurrent writer's new version
        return self._store.commit(txn)


def main(store_path: str, mountpoint: str, control: str, deadline: str) -> None:
    store = open_store(f"sqlite:{store_path}")
    volume = Volumes(store, cache=FsCache(store)).create("default", exist_ok=True)
    volume.store = Conflicting(store, Path(control))  # type: ignore[assignment]
    serve(volume, mountpoint, cache_timeout=0, backoff=Backoff(deadline=float(deadline)))


if __name__ == "__main__":
    main(*sys.argv[1:])
