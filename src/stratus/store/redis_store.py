"""A store in a Redis server (7.0 or later), shared by any number of processes and hosts.

Theory of operation
-------------------
A store lives in one *namespace* of a Redis database: five Redis keys, all with the hash
tag ``{namespace}`` so that they share one slot and a Lua script may touch them all
(also on Redis Cluster). This class is the one place that names them::

    {ns}:values   hash         key -> value; a tombstone has no field
    {ns}:feed     sorted set   key scored by its version, tombstones included: each key's
                               version (ZSCORE) and the change feed (ZRANGE BYSCORE)
    {ns}:live     sorted set   live keys, all scored 0: keys(prefix) is a ZRANGE BYLEX
    {ns}:names    sorted set   every key ever written, scored 0: prefix_version's range
    {ns}:seq      string       the last version given (INCRBY)

Redis compares members of equal score by their bytes, and UTF-8 byte order is code-point
order, so a lexicographic range gives the keys under a prefix sorted as the protocol
wants. Versions are scores, which are doubles: exact up to 2**53.

Every write (put, delete, merge, commit) is one call of the commit script, which Redis
runs atomically: no other command runs between its first and last line. Its contract::

    KEYS  values, feed, live, names, seq
    ARGV  n_reads, n_prefixes, n_guards, n_versions,
          n_reads x (key, version seen), n_prefixes x (prefix, prefix version seen),
          n_guards x (key, version seen), then the staged writes, in version order:
          (key, offset, b"p" | b"d", value)   -- offset 1..n_versions; b"d": tombstone
    reply [CONFLICT, i, ...]  1-based indices of the changed reads and prefixes (reads
                              first): nothing written
          [RETRY, value, version, ...]  a guard changed: the current rows of the guards,
                              in order; nothing written
          [DONE, base]        the writes took versions base + offset; seq += n_versions,
                              and the new seq is PUBLISHed on the channel named like
                              the seq key, which ``watch()`` subscribes to

It checks every read and prefix version first, then the guards, and writes nothing
unless all match; writes go last, after every check, and the ``#!lua`` shebang makes
Redis refuse the script before it starts when the server is out of memory, so an error
cannot stop it halfway. A script with no writes only validates.

Merges. The store knows ``merge_fn`` only as an opaque Python callable, which Lua cannot
run, so a merge is an optimistic read-merge-write: read the key's value and version,
compute ``merge_fn`` here, and send the result as a put *guarded* by the version read. If
another writer got there first, the script answers RETRY with the current value, and the
merge is computed again at once; after a second loss it backs off for a random, growing
time (up to 6.4 ms) and reads again, at most ``merge_attempts`` times in all (then
:class:`MergeContention`): without the backoff, six processes merging into one key as
fast as they could starved one another past 100 attempts. The guard is what makes the
merge atomic: a merged value is only ever written over the exact value it was computed
from. A commit's ``Merge`` writes work the same way, with the whole commit as one script
call: :func:`base.apply_writes` runs here against the rows read, which stages the writes
and numbers them 1..n (a key written twice keeps its last write), and the script adds the
base version. A failing ``merge_fn`` (or a too-large result) writes nothing; like the
other backends, the commit then reports its read conflicts if it has any, else raises.
Merging simple lattices (counters, max registers, sets) inside Lua would save the read
round trip and the retries; it is a possible optimisation, not done here.

Reads are one command or one read-only script each, so ``get_many``, ``changes`` and
``prefix_version`` each see one state of the store.

Durability is the server's: Redis acknowledges a write once it is in memory. With the
default snapshots (``save``) a crash loses the writes since the last snapshot; with
``appendonly yes`` and ``appendfsync everysec`` a killed Redis usually loses nothing it
acknowledged (the log reaches the OS every event loop turn, unless a slow fsync makes
Redis postpone it, up to 2 s) and a power loss up to 1-2 s; ``appendfsync always``
fsyncs before every reply. Replication is asynchronous: a failover may lose acknowledged writes.

Connections come from a redis-py pool (threads share the store; each call takes a
connection for its duration). In a child made by ``fork`` the store is closed, as in
``base``: the parent's sockets are neither used nor closed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar, cast

import redis
from redis.commands.core import Script

from stratus import backoff
from stratus._exceptions import (
    ConfigurationError,
    ConnectionFailed,
    MergeContention,
    StoreFull,
    StoreUnavailable,
)
from stratus.store.base import (
    DEFAULT_MAX_VALUE_BYTES,
    BaseStore,
    Changes,
    CommitResult,
    Entry,
    Merge,
    MergeFn,
    StoreClosed,
    Transaction,
    Write,
    WriteView,
    apply_writes,
    check_key,
    check_prefix,
    check_transaction,
    check_write,
)

_R = TypeVar("_R")

DEFAULT_MERGE_ATTEMPTS = 100
"""How many times a merge is tried before :class:`MergeContention`."""

_CONFLICT, _RETRY, _DONE = 0, 1, 2  # the first element of the commit script's reply (as in Lua)


class _Names(NamedTuple):
    """The Redis keys of one namespace (see the module docstring)."""

    values: str
    feed: str
    live: str
    names: str
    seq: str

    @classmethod
    def of(cls, namespace: str) -> _Names:
        tag = "{" + namespace + "}"  # one hash slot for the whole store
        return cls(f"{tag}:values", f"{tag}:feed", f"{tag}:live", f"{tag}:names", f"{tag}:seq")


# --------------------------------------------------------------------------- Lua

_PRELUDE = """
local function version_of(feed, key)
  return tonumber(redis.call('ZSCORE', feed, key) or 0)
end

local function prefix_version(feed, names, prefix)
  if prefix == '' then
    local top = redis.call('ZRANGE', feed, -1, -1, 'WITHSCORES')
    return tonumber(top[2] or 0)
  end
  -- The keys under a prefix are the byte range [prefix, prefix with its last byte + 1).
  -- UTF-8 never contains 0xFF, so that byte can always be incremented.
  local stop = string.sub(prefix, 1, -2) .. string.char(string.byte(prefix, -1) + 1)
  local best = 0
  for _, key in ipairs(redis.call('ZRANGE', names, '[' .. prefix, '(' .. stop, 'BYLEX')) do
    local version = tonumber(redis.call('ZSCORE', feed, key))
    if version > best then best = version end
  end
  return best
end
"""

# KEYS values, feed; ARGV keys -> value1, version1, value2, version2, ...
_GET_ROWS = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + """
local rows = {}
for i, key in ipairs(ARGV) do
  rows[2 * i - 1] = redis.call('HGET', KEYS[1], key)
  rows[2 * i] = version_of(KEYS[2], key)
end
return rows
"""
)

# KEYS feed, names; ARGV prefix -> its version
_PREFIX_VERSION = (
    "#!lua flags=no-writes\n" + _PRELUDE + "return prefix_version(KEYS[1], KEYS[2], ARGV[1])\n"
)

# KEYS feed, seq; ARGV since, limit -> last version, key1, version1, key2, version2, ...
_CHANGES = """#!lua flags=no-writes
local page = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[1], '+inf', 'BYSCORE',
                        'LIMIT', 0, ARGV[2], 'WITHSCORES')
local reply = {tonumber(redis.call('GET', KEYS[2]) or 0)}
for i = 1, #page, 2 do
  reply[#reply + 1] = page[i]
  reply[#reply + 1] = tonumber(page[i + 1])
end
return reply
"""

# The contract is in the module docstring.
_COMMIT = (
    "#!lua\n"
    + _PRELUDE
    + """
local values, feed, live, names, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n_reads, n_prefixes = tonumber(ARGV[1]), tonumber(ARGV[2])
local n_guards, n_versions = tonumber(ARGV[3]), tonumber(ARGV[4])
local at = 5

local conflicts = {0}  -- CONFLICT
for i = 1, n_reads do
  if version_of(feed, ARGV[at]) ~= tonumber(ARGV[at + 1]) then
    conflicts[#conflicts + 1] = i
  end
  at = at + 2
end
for i = 1, n_prefixes do
  if prefix_version(feed, names, ARGV[at]) ~= tonumber(ARGV[at + 1]) then
    conflicts[#conflicts + 1] = n_reads + i
  end
  at = at + 2
end
if #conflicts > 1 then return conflicts end

local guards_at, stale = at, false
for i = 1, n_guards do
  if version_of(feed, ARGV[at]) ~= tonumber(ARGV[at + 1]) then stale = true end
  at = at + 2
end
if stale then
  local rows = {1}  -- RETRY
  for i = guards_at, at - 1, 2 do
    rows[#rows + 1] = redis.call('HGET', values, ARGV[i])
    rows[#rows + 1] = version_of(feed, ARGV[i])
  end
  return rows
end

if n_versions == 0 then return {2, 0} end  -- DONE
local base = redis.call('INCRBY', seq, n_versions) - n_versions
for i = at, #ARGV, 4 do
  local key = ARGV[i]
  if ARGV[i + 2] == 'p' then
    redis.call('HSET', values, key, ARGV[i + 3])
    redis.call('ZADD', live, 0, key)
  else
    redis.call('HDEL', values, key)
    redis.call('ZREM', live, key)
  end
  redis.call('ZADD', names, 0, key)
  redis.call('ZADD', feed, base + tonumber(ARGV[i + 1]), key)
end
redis.call('PUBLISH', seq, base + n_versions)  -- wakes the caches (RedisStore.watch)
return {2, base}  -- DONE
"""
)


# KEYS values, feed, live, names, seq; ARGV keys -> how many were removed. The key at the
# last version stays (base.py: purge), as in the other backends.
_PURGE = """#!lua
local values, feed, live, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local last = tonumber(redis.call('GET', KEYS[5]) or 0)
local removed = 0
for _, key in ipairs(ARGV) do
  local version = redis.call('ZSCORE', feed, key)
  if version and tonumber(version) ~= last then
    redis.call('HDEL', values, key)
    redis.call('ZREM', feed, key)
    redis.call('ZREM', live, key)
    redis.call('ZREM', names, key)
    removed = removed + 1
  end
end
return removed
"""


# --------------------------------------------------------------------------- the store


class RedisStore(BaseStore):
    """A :class:`~stratus.store.Store` in the Redis database at ``url``, under ``namespace``.

    Several stores (in any processes) with the same URL and namespace share one store.
    ``merge_attempts`` bounds the optimistic retries of a merge (:class:`MergeContention`).
    Durability is the Redis server's persistence configuration (see the module docstring).

    >>> store = RedisStore("redis://127.0.0.1:6379/0", concat, namespace="app")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        merge_fn: MergeFn,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        namespace: str = "stratus",
        merge_attempts: int = DEFAULT_MERGE_ATTEMPTS,
    ) -> None:
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        if not isinstance(namespace, str) or not namespace or {"{", "}"} & set(namespace):
            raise ConfigurationError(
                f"a namespace is a non-empty str without braces: {namespace!r}"
            )
        if merge_attempts < 1:
            raise ConfigurationError(f"merge_attempts must be at least 1, not {merge_attempts}")
        self.namespace = namespace
        self.merge_attempts = merge_attempts
        self._names = _Names.of(namespace)
        try:
            pool = redis.ConnectionPool.from_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"not a Redis URL: {exc}") from None
        self.address = _address(pool)
        client = redis.Redis(connection_pool=pool)
        self._get_rows = client.register_script(_GET_ROWS)
        self._prefix_version = client.register_script(_PREFIX_VERSION)
        self._changes = client.register_script(_CHANGES)
        self._commit = client.register_script(_COMMIT)
        self._purge = client.register_script(_PURGE)
        scripts = (self._get_rows, self._prefix_version, self._changes, self._commit, self._purge)
        try:
            for script in scripts:
                client.script_load(script.script)  # also checks the server is there
        except redis.ResponseError as exc:
            pool.disconnect()
            raise ConfigurationError(
                f"{self.address} refused the store's Lua scripts (needs Redis 7.0+): {exc}"
            ) from exc
        except redis.RedisError as exc:
            pool.disconnect()
            raise ConnectionFailed(
                f"cannot reach the Redis store at {self.address}: {exc}"
            ) from exc
        self._client: redis.Redis | None = client
        self._track()

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        check_key(key)
        value, version = self._call(self._get_rows, (self._names.values, self._names.feed), [key])
        return Entry(value, version)

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        return {key: Entry(*row) for key, row in self._read_rows(wanted).items()}

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted."""
        low, high = _lex_range(check_prefix(prefix))
        client = self._open()
        try:
            found = cast(list[bytes], client.zrange(self._names.live, low, high, bylex=True))
        except redis.RedisError as exc:
            self._failed(exc)
        return [key.decode() for key in found]

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none)."""
        check_prefix(prefix)
        keys = (self._names.feed, self._names.names)
        return int(self._call(self._prefix_version, keys, [prefix]))

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above ``since``, in version order."""
        self._check_limit(limit)
        reply = self._call(self._changes, (self._names.feed, self._names.seq), [since, limit])
        page = [
            (key.decode(), version) for key, version in zip(reply[1::2], reply[2::2], strict=True)
        ]
        return Changes(last=page[-1][1] if len(page) == limit else reply[0], keys=page)

    def last_version(self) -> int:
        """The last version assigned (0 for a new store)."""
        client = self._open()
        try:
            seq = client.get(self._names.seq)
        except redis.RedisError as exc:
            self._failed(exc)
        return int(seq or 0)

    def _read_rows(self, keys: Sequence[str]) -> dict[str, tuple[bytes | None, int]]:
        if not keys:
            return {}
        reply = self._call(self._get_rows, (self._names.values, self._names.feed), keys)
        return {key: (reply[2 * i], reply[2 * i + 1]) for i, key in enumerate(keys)}

    # ------------------------------------------------------------------ writes

    def commit(self, txn: Transaction) -> CommitResult:
        """Validate ``txn``'s reads and apply its writes atomically, or not."""
        txn = check_transaction(txn, self.max_value_bytes)
        return self._apply(txn.reads, txn.prefix_reads, txn.writes)

    def _write_one(self, write: Write) -> int:
        write = check_write(write, self.max_value_bytes)
        return self._apply({}, {}, (write,)).versions[write.key]

    def _apply(
        self, reads: Mapping[str, int], prefix_reads: Mapping[str, int], writes: Sequence[Write]
    ) -> CommitResult:
        """One script call (after one read when it merges); more when a merge loses a race."""
        merged = list(dict.fromkeys(write.key for write in writes if isinstance(write, Merge)))
        rows = self._read_rows(merged)
        for attempt in range(self.merge_attempts):
            view = _StagingView(rows)
            try:
                offsets, count, merged_into = apply_writes(
                    view, 0, writes, self.merge_fn, self.max_value_bytes
                )
            except Exception:
                # Nothing is written. As in the other backends, where validation comes
                # first, a conflicting transaction reports its conflicts instead.
                reply = self._run_commit(reads, prefix_reads, view.guards, [], 0)
                if reply[0] == _CONFLICT:
                    return self._conflicts(reads, prefix_reads, reply)
                if reply[0] == _DONE:  # the merge saw the current values: its error stands
                    raise
            else:
                reply = self._run_commit(reads, prefix_reads, view.guards, view.staged, count)
                if reply[0] == _CONFLICT:
                    return self._conflicts(reads, prefix_reads, reply)
                if reply[0] == _DONE:
                    base = reply[1]
                    versions = {key: base + offset for key, offset in offsets.items()}
                    return CommitResult(ok=True, versions=versions, merged_into=merged_into)
            # RETRY: a merged key changed since it was read. Try again at once with the
            # current rows the reply carries; after a second loss, back off for a random,
            # growing time and read again, so that many writers of one key all get through.
            if attempt == 0:
                guards = enumerate(view.guards)
                rows = rows | {key: (reply[2 * i + 1], reply[2 * i + 2]) for i, key in guards}
            else:
                backoff.MERGE.sleep(attempt)
                rows = self._read_rows(merged)
        raise MergeContention(merged, self.merge_attempts)

    def _run_commit(
        self,
        reads: Mapping[str, int],
        prefix_reads: Mapping[str, int],
        guards: Mapping[str, int],
        staged: Sequence[tuple[str, bytes | None, int]],
        count: int,
    ) -> list[Any]:
        args: list[str | bytes | int] = [len(reads), len(prefix_reads), len(guards), count]
        for conditions in (reads, prefix_reads, guards):
            for name, version in conditions.items():
                args += (name, version)
        for key, value, offset in staged:
            args += (key, offset, b"d", b"") if value is None else (key, offset, b"p", value)
        reply: list[Any] = self._call(self._commit, self._names, args)
        return reply

    def purge(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` entirely (no tombstone, no new version); how many were."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if not wanted:
            return 0
        return int(self._call(self._purge, self._names, wanted))

    @staticmethod
    def _conflicts(
        reads: Mapping[str, int], prefix_reads: Mapping[str, int], reply: list[Any]
    ) -> CommitResult:
        names = [*reads, *prefix_reads]
        return CommitResult(ok=False, conflicts=[names[i - 1] for i in reply[1:]])

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        # Redis has no interactive write transaction to run ``body`` in: writes are staged
        # here and applied by the commit script (``commit`` and ``_write_one`` above).
        raise NotImplementedError("RedisStore writes through its commit script")

    # ------------------------------------------------------------------ lifetime

    def _call(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        client = self._open()
        try:
            return script(keys, args, client=client)
        except redis.RedisError as exc:
            self._failed(exc)

    def _failed(self, exc: redis.RedisError) -> NoReturn:
        raise_store_error(exc, f"the Redis store at {self.address}")

    def _open(self) -> redis.Redis:
        client = self._client
        if client is None:
            raise StoreClosed(
                f"the store {self.namespace!r} at {self.address} is closed "
                "(or was opened before a fork)"
            )
        return client

    def _abandon(self) -> object | None:
        client, self._client = self._client, None
        return client

    def watch(self) -> _PubSubSignal:
        """A signal fed by the commit script's PUBLISH: a cache that watches it refreshes
        when something was written instead of polling the feed before each read."""
        return _PubSubSignal(self._open(), self._names.seq)

    def close(self) -> None:
        """Close the store's connections; idempotent."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()


def raise_store_error(exc: redis.RedisError, store: str) -> NoReturn:
    """The store error a failed Redis command means (single Redis and Redis Cluster)."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        # A write cut off here may or may not have been applied: the store is unavailable
        # (the caller retries; an invocation's record makes that safe).
        raise StoreUnavailable(
            f"lost {store} (a write cut off may have been applied): {exc}"
        ) from exc
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
        # maxmemory reached: the script was refused before it started (``#!lua``).
        raise StoreFull(f"{store} is full: {exc}") from exc
    raise exc


class _PubSubSignal:
    """A :class:`~stratus.store.base.ChangeSignal` on a pub/sub connection of its own,
    subscribed to ``channels`` (a Redis Cluster store's: one per shard)."""

    def __init__(self, client: redis.Redis, *channels: str) -> None:
        self.healthy: bool = False
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(*channels)
            # The confirmations (read as None): subscribed from here on. A message among
            # them is a change already, for the first drain.
            early = [self._pubsub.get_message(timeout=1.0) for _ in channels]
            self._early = any(message is not None for message in early)
            connection = self._pubsub.connection
            assert connection is not None
            # redis-py keeps the socket private; polling it is what lets an event loop wait.
            sock = connection._sock
            assert sock is not None
            self._fd: int = sock.fileno()
        except redis.RedisError as exc:
            self._pubsub.close()
            raise ConnectionFailed(f"cannot subscribe to the Redis store: {exc}") from exc
        self.healthy = True

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> bool:
        if not self.healthy:
            return False
        changed, self._early = self._early, False
        try:
            while self._pubsub.get_message(timeout=0.0) is not None:
                changed = True
        except (redis.RedisError, OSError, AttributeError):
            self.close()  # AttributeError: redis-py dropped the connection under us
            return True
        return changed

    def close(self) -> None:
        self.healthy = False
        self._pubsub.close()


class _StagingView:
    """The rows of a commit's merged keys, read beforehand, as a :class:`WriteView` for
    :func:`apply_writes`: it records the version of every row a merge read (the script's
    guards) and collects the writes instead of making them."""

    __slots__ = ("_rows", "guards", "staged")

    def __init__(self, rows: Mapping[str, tuple[bytes | None, int]]) -> None:
        self._rows = rows
        self.guards: dict[str, int] = {}
        self.staged: list[tuple[str, bytes | None, int]] = []

    def read(self, key: str) -> tuple[bytes | None, int]:
        row = self._rows[key]  # apply_writes reads only the keys it merges
        self.guards[key] = row[1]
        return row

    def write(self, key: str, value: bytes | None, version: int) -> None:
        self.staged.append((key, value, version))

    def prefix_version(self, prefix: str) -> int:
        raise AssertionError("apply_writes reads no prefix")  # pragma: no cover

    def remove(self, key: str) -> None:
        raise AssertionError("apply_writes removes nothing")  # pragma: no cover


def _lex_range(prefix: bytes) -> tuple[bytes, bytes]:
    """The ZRANGE BYLEX bounds of the members starting with ``prefix`` (UTF-8, so its
    last byte is below 0xFF and can be incremented)."""
    if not prefix:
        return b"-", b"+"
    return b"[" + prefix, b"(" + prefix[:-1] + bytes([prefix[-1] + 1])


def _address(pool: redis.ConnectionPool) -> str:
    """Where ``pool`` connects, without credentials."""
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
