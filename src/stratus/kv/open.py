"""Opening the store a cluster keeps its state in, from its URL.

``sqlite:PATH`` (the default, under the data directory), ``sqlite:PATH?synchronous=FULL``,
``lmdb:PATH`` (both take ``?lock_timeout=SECONDS``: how long a write waits for another
process's, default 10), ``redis://HOST:PORT/DB`` (``rediss://`` for TLS;
``?namespace=NAME``, default ``stratus``; other options are redis-py's),
``redis-cluster://HOST:PORT[,HOST:PORT...]`` (a Redis Cluster: the nodes to discover it
from; ``rediss-cluster://`` for TLS; ``?namespace=NAME&shards=N&wait_replicas=K`` and
``lock_timeout``, ``wait_timeout`` in seconds, see ``RedisClusterStore``) and
``memory:`` (a process-local store, for tests of one process).
``synchronous=NORMAL`` is the default for SQLite: a commit survives SIGKILL of every
process; only a power loss may take the last commits (never corrupting the file), and a
durable commit costs an fsync (~200 us on these VMs), more than a whole call.
"""

from __future__ import annotations

from typing import Any
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
    if scheme in _CLUSTER_SCHEMES:
        from stratus.store.redis_cluster import RedisClusterStore

        nodes, settings = _cluster(scheme, path, options)
        return RedisClusterStore(nodes[0], merge_encoded, startup_nodes=nodes[1:], **settings)
    return MemoryStore(merge_encoded)


def _parse(url: str) -> tuple[str, str, dict[str, str]]:
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    valid = (
        (scheme in ("sqlite", "lmdb") and path)
        or (scheme in ("redis", "rediss", *_CLUSTER_SCHEMES) and path.startswith("//"))
        or scheme == "memory"
    )
    if not valid:
        raise ConfigurationError(
            f"unknown store {url!r}: use sqlite:PATH, lmdb:PATH, redis://HOST:PORT/DB, "
            "redis-cluster://HOST:PORT[,HOST:PORT...] or memory:"
        )
    if scheme in _CLUSTER_SCHEMES:
        _cluster(scheme, path, options)
    if scheme == "sqlite" and options.get("synchronous", "NORMAL").upper() not in (
        "FULL",
        "NORMAL",
    ):
        raise ConfigurationError(f"synchronous must be FULL or NORMAL in {url!r}")
    if scheme in ("sqlite", "lmdb"):
        _lock_timeout(options)
    return scheme, path, options


_CLUSTER_SCHEMES = ("redis-cluster", "rediss-cluster")
_CLUSTER_OPTIONS = {
    "namespace": str,
    "shards": int,
    "wait_replicas": int,
    "lock_timeout": float,
    "wait_timeout": float,
}


def _cluster(scheme: str, path: str, options: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The node URLs (``redis://`` or ``rediss://``, credentials on each) and the
    ``RedisClusterStore`` settings of a ``redis-cluster://`` URL's path and options."""
    unknown = sorted(set(options) - set(_CLUSTER_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"unknown option {unknown[0]!r} of a redis-cluster store: "
            f"use {', '.join(_CLUSTER_OPTIONS)}"
        )
    settings: dict[str, Any] = {}
    for name, raw in options.items():
        try:
            settings[name] = _CLUSTER_OPTIONS[name](raw)
        except ValueError:
            raise ConfigurationError(
                f"{name} of a redis-cluster store: not a number: {raw!r}"
            ) from None
    if not 1 <= settings.get("shards", 1) <= 1024:
        raise ConfigurationError(f"shards must be between 1 and 1024: {settings['shards']}")
    if settings.get("wait_replicas", 0) < 0:
        raise ConfigurationError(f"wait_replicas must be >= 0: {settings['wait_replicas']}")
    for name in ("lock_timeout", "wait_timeout"):
        if not settings.get(name, 1.0) > 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds")
    where = path[2:].split("/", 1)[0]  # no database: a cluster has only database 0
    credentials, _, hosts = where.rpartition("@")
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"a redis-cluster store names its nodes as HOST:PORT[,HOST:PORT...]: {host!r}"
            )
        login = f"{credentials}@" if credentials else ""
        nodes.append(f"{scheme.removesuffix('-cluster')}://{login}{name}:{port}/0")
    return nodes, settings


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
