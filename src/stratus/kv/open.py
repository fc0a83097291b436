"""Opening the store a cluster keeps its state in, from its URL.

``sqlite:PATH`` (the default, under the data directory), ``sqlite:PATH?synchronous=FULL``,
``lmdb:PATH`` (both take ``?lock_timeout=SECONDS``: how long a write waits for another
process's, default 10), ``redis://HOST:PORT/DB`` (``rediss://`` for TLS;
``?namespace=NAME``, default ``stratus``; other options are redis-py's) and ``memory:`` (a
process-local store, for tests of one process).
``synchronous=NORMAL`` is the default for SQLite: a commit survives SIGKILL of every
process; only a power loss may take the last commits (never corrupting the file), and a
durable commit costs an fsync (~200 us on these VMs), more than a whole call.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

from stratus._exceptions import ConfigurationError
from stratus.lattice import LatticeCodec
from stratus.lattice.encoding import DATA_ONLY
from stratus.store import LMDBStore, MemoryStore, SQLiteStore
from stratus.store.base import Store
from stratus.store.lock import DEFAULT_LOCK_TIMEOUT


def check_url(url: str) -> None:
    """Raise ``ConfigurationError`` now for a store URL that ``open_store`` would refuse,
    before any process is started with it."""
    _parse(url)


def open_store(url: str, values: LatticeCodec = DATA_ONLY) -> Store:
    """The store named by ``url``, merging kv values with ``values`` (the cluster's codec,
    ``stratus.kv.codec_for(key)``). Without it, merges handle plain-data values only:
    enough for tools that never merge kv values (the file system, volume commands)."""
    merge_encoded = values.merge
    scheme, path, options = _parse(url)
    if scheme == "sqlite":
        synchronous = options.get("synchronous", "NORMAL").upper()
        return SQLiteStore(
            path,
            merge_encoded,
            synchronous=synchronous,  # type: ignore[arg-type]
            lock_timeout=_lock_timeout(options),
        )
    if scheme == "lmdb":
        sync = options.get("sync", "1") != "0"
        return LMDBStore(path, merge_encoded, sync=sync, lock_timeout=_lock_timeout(options))
    if scheme in ("redis", "rediss"):
        from stratus.store.redis_store import RedisStore  # redis-py takes ~160 ms to import

        namespace = options.pop("namespace", "stratus")
        plain = f"{scheme}:{path}" + (f"?{urlencode(options)}" if options else "")
        return RedisStore(plain, merge_encoded, namespace=namespace)
    return MemoryStore(merge_encoded)


def _parse(url: str) -> tuple[str, str, dict[str, str]]:
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    valid = (
        (scheme in ("sqlite", "lmdb") and path)
        or (scheme in ("redis", "rediss") and path.startswith("//"))
        or scheme == "memory"
    )
    if not valid:
        raise ConfigurationError(
            f"unknown store {url!r}: use sqlite:PATH, lmdb:PATH, redis://HOST:PORT/DB or memory:"
        )
    if scheme == "sqlite" and options.get("synchronous", "NORMAL").upper() not in (
        "FULL",
        "NORMAL",
    ):
        raise ConfigurationError(f"synchronous must be FULL or NORMAL in {url!r}")
    if scheme in ("sqlite", "lmdb"):
        _lock_timeout(options)
    return scheme, path, options


def _lock_timeout(options: dict[str, str]) -> float:
    """``lock_timeout=SECONDS`` of an embedded store's URL (positive)."""
    raw = options.get("lock_timeout")
    if raw is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigurationError(f"lock_timeout must be a positive number of seconds: {raw!r}")
    return seconds
