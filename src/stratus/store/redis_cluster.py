"""A store on a Redis Cluster: the namespace split into shards, two-phase commit across them.

Theory of operation
-------------------
Redis Cluster refuses a script whose keys lie in different hash slots, and one slot (one
store-wide sequence) would put every write on one master. So a namespace is split into
``shards`` *shards*; shard ``i`` is the single-slot layout of ``redis_store`` under the
hash tag ``{ns/i}``, with its own sequence, change feed and three more keys::

    {ns/i}:values :feed :live :names :seq   as in redis_store (feed scores are versions)
    {ns/i}:locks     hash   key -> id of the prepared transaction that locked it
    {ns/i}:plocks    hash   "<txid>\\n<prefix>" -> prefix: prefixes read by a prepared one
    {ns/i}:txns      hash   txid -> its prepared writes on this shard (cmsgpack)
    {ns/i}:applied:<txid>   the base version a committed transaction took here (1 h)
    {ns/c}:decision:<txid>  b"c" or b"a": the decision, on the coordinator shard c (1 h)

A key's shard is ``crc32(key) % shards``, except the keys of one file-system volume
(``fs/v/<id>/...``), which all live on the shard of the volume prefix: a file-system
transaction touches one volume, so it is single-shard. A key's version is ``seq * shards +
shard``, with ``seq`` from its shard's sequence: unique in the store and increasing per key,
but consecutive only within a shard (the weaker guarantee; see docs/store.md).

Commits::

    participants = shards of the reads, writes and prefixes (a prefix that is not inside
                   one volume spans every shard)
    one shard      the COMMIT script on it: validate, then write (one round trip)
    several        PREPARE on each (validate, lock the keys read and written and the
                   prefixes read, stage the writes; deadline now + lock_timeout)
                   -> any refusal: decide b"a", ABORT the prepared ones, report
                   -> DECIDE b"c" on the coordinator shard (SET if absent): the commit point
                   -> FINISH on each: take versions, write, unlock (idempotent)

A cross-shard prefix's version is the highest version under it on any shard, read after
raising every shard's sequence to the highest sequence of all (the ADVANCE script): every
later write under the prefix then takes a higher version, so at commit each shard checks
locally that its own prefix version is not above the one read.

Readers never see half a transaction: a transaction's writes are invisible (staged) until
FINISH on that shard, and a reader (or writer) that meets a lock looks at the decision:
committed -> it FINISHes that shard itself (roll forward) and reads again; aborted, or
undecided past the deadline (then it DECIDEs b"a" itself, which a late committer then
loses) -> it unlocks; undecided within the deadline -> a read takes the old value (the
transaction has not committed: the read is ordered before it) and a write waits. A
``get_many`` across shards reads every shard again and returns only when nothing changed
between the two rounds. ``recover()`` finishes or aborts every prepared transaction past
its deadline (a crashed committer's); readers do it for the keys they meet.

With ``wait_replicas`` K > 0, every script that writes goes to its slot's master in one
pipeline followed by ``WAIT K`` on the same connection (:meth:`RedisClusterStore._write`),
so prepares, decisions and finishes are on K replicas before anyone relies on them: a
failover cannot take back a decision that a commit reported. Commits PUBLISH on their
shard's channel; :meth:`RedisClusterStore.watch` listens to every shard's on one node.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script

from stratus import backoff
from stratus._exceptions import (
    ConfigurationError,
    ConnectionFailed,
    MergeContention,
    StoreLockTimeout,
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
from stratus.store.redis_store import (
    _PRELUDE,
    _lex_range,
    _PubSubSignal,
    _StagingView,
    raise_store_error,
)

_R = TypeVar("_R")

DEFAULT_SHARDS = 8
"""Shards of a namespace; fixed for its lifetime (the key-to-shard map depends on it)."""

DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a prepared transaction's locks last before anyone may abort it."""

_CURSOR_BITS = 64  # each shard's sequence in the change-feed cursor
_CONFLICT, _RETRY, _DONE, _BLOCKED = 0, 1, 2, 3
_KEEP_MS = 3_600_000  # decisions and applied bases: far past any deadline
# A write refused by these did not run: try again once the slots' masters are known.
_UNSETTLED = (
    redis.exceptions.AskError,  # and MovedError
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
)
# Between tries of a write refused while its slot moves (a failover takes seconds).
_RESETTLE = backoff.Backoff(first=0.01, cap=0.2, deadline=None)


class _Shard(NamedTuple):
    """The Redis keys of one shard (see the module docstring)."""

    values: str
    feed: str
    live: str
    names: str
    seq: str
    locks: str
    plocks: str
    txns: str

    @classmethod
    def of(cls, namespace: str, index: int) -> _Shard:
        tag = "{" + f"{namespace}/{index}" + "}"
        names = ("values", "feed", "live", "names", "seq", "locks", "plocks", "txns")
        return cls(*(f"{tag}:{name}" for name in names))

    @property
    def tag(self) -> str:
        return self.values.rsplit(":", 1)[0]


# --------------------------------------------------------------------------- Lua

_LOCKS = """
local function blocker(locks, plocks, txid, key, writing)
  local owner = redis.call('HGET', locks, key)
  if owner and owner ~= txid then return owner end
  if writing then
    local held = redis.call('HGETALL', plocks)
    for j = 1, #held, 2 do
      local p = held[j + 1]
      local who = string.sub(held[j], 1, #held[j] - #p - 1)
      if who ~= txid and string.sub(key, 1, #p) == p then return who end
    end
  end
  return nil
end

local function prefix_blocker(locks, txid, prefix)
  local held = redis.call('HGETALL', locks)
  for j = 1, #held, 2 do
    if held[j + 1] ~= txid and string.sub(held[j], 1, #prefix) == prefix then
      return held[j + 1]
    end
  end
  return nil
end

-- ARGV from `at`: n_reads, n_prefixes, n_guards, n_versions, reads (key, version),
-- prefixes (prefix, version, b'e' exact | b'm' at most), guards (key, version),
-- writes (key, offset, b'p' | b'd', value). Returns reply-or-nil, then the offsets.
local function check(K, txid, at)
  local values, feed, names, locks, plocks = K[1], K[2], K[4], K[6], K[7]
  local n_reads, n_prefixes = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local n_guards = tonumber(ARGV[at + 2])
  at = at + 4
  local reads_at, prefixes_at = at, at + 2 * n_reads
  local guards_at = prefixes_at + 3 * n_prefixes
  local writes_at = guards_at + 2 * n_guards
  local blocked = {3}  -- BLOCKED
  for i = reads_at, prefixes_at - 1, 2 do
    local who = blocker(locks, plocks, txid, ARGV[i], false)
    if who then blocked[#blocked + 1] = who end
  end
  for i = prefixes_at, guards_at - 1, 3 do
    local who = prefix_blocker(locks, txid, ARGV[i])
    if who then blocked[#blocked + 1] = who end
  end
  for i = writes_at, #ARGV, 4 do
    local who = blocker(locks, plocks, txid, ARGV[i], true)
    if who then blocked[#blocked + 1] = who end
  end
  if #blocked > 1 then return blocked, writes_at end
  local conflicts = {0}  -- CONFLICT
  local index = 0
  for i = reads_at, prefixes_at - 1, 2 do
    index = index + 1
    if version_of(feed, ARGV[i]) ~= tonumber(ARGV[i + 1]) then
      conflicts[#conflicts + 1] = index
    end
  end
  for i = prefixes_at, guards_at - 1, 3 do
    index = index + 1
    local now, seen = prefix_version(feed, names, ARGV[i]), tonumber(ARGV[i + 1])
    if (ARGV[i + 2] == 'e' and now ~= seen) or now > seen then
      conflicts[#conflicts + 1] = index
    end
  end
  if #conflicts > 1 then return conflicts, writes_at end
  local stale = false
  for i = guards_at, writes_at - 1, 2 do
    if version_of(feed, ARGV[i]) ~= tonumber(ARGV[i + 1]) then stale = true end
  end
  if stale then
    local rows = {1}  -- RETRY
    for i = guards_at, writes_at - 1, 2 do
      rows[#rows + 1] = redis.call('HGET', values, ARGV[i])
      rows[#rows + 1] = version_of(feed, ARGV[i])
    end
    return rows, writes_at
  end
  return nil, writes_at
end

-- writes: flat (key, offset, kind, value); versions are (base + offset) * S + shard.
local function write_rows(K, writes, n_versions, S, shard)
  local values, feed, live, names, seq = K[1], K[2], K[3], K[4], K[5]
  if n_versions == 0 then return 0 end
  local base = redis.call('INCRBY', seq, n_versions) - n_versions
  for i = 1, #writes, 4 do
    local key = writes[i]
    if writes[i + 2] == 'p' then
      redis.call('HSET', values, key, writes[i + 3])
      redis.call('ZADD', live, 0, key)
    else
      redis.call('HDEL', values, key)
      redis.call('ZREM', live, key)
    end
    redis.call('ZADD', names, 0, key)
    redis.call('ZADD', feed, (base + tonumber(writes[i + 1])) * S + shard, key)
  end
  redis.call('PUBLISH', seq, base + n_versions)
  return base
end
"""

# KEYS shard keys; ARGV S, shard, then the check arguments -> CONFLICT | RETRY | BLOCKED |
# {DONE, base}
_COMMIT = (
    "#!lua\n"
    + _PRELUDE
    + _LOCKS
    + """
local reply, writes_at = check(KEYS, '', 3)
if reply then return reply end
local writes = {}
for i = writes_at, #ARGV do writes[#writes + 1] = ARGV[i] end
local n_versions = tonumber(ARGV[6])
return {2, write_rows(KEYS, writes, n_versions, tonumber(ARGV[1]), tonumber(ARGV[2]))}
"""
)

# KEYS shard keys; ARGV txid, lock ms, then the check arguments -> CONFLICT | RETRY |
# BLOCKED | {DONE, 0}: locked and staged
_PREPARE = (
    "#!lua\n"
    + _PRELUDE
    + _LOCKS
    + """
local txid = ARGV[1]
local reply, writes_at = check(KEYS, txid, 3)
if reply then return reply end
local n_reads, n_prefixes = tonumber(ARGV[3]), tonumber(ARGV[4])
local locked, prefixes, writes = {}, {}, {}
for i = 7, 6 + 2 * n_reads, 2 do locked[#locked + 1] = ARGV[i] end
for i = 7 + 2 * n_reads, 6 + 2 * n_reads + 3 * n_prefixes, 3 do
  prefixes[#prefixes + 1] = ARGV[i]
end
for i = writes_at, #ARGV, 4 do locked[#locked + 1] = ARGV[i] end
for i = writes_at, #ARGV do writes[#writes + 1] = ARGV[i] end
for _, key in ipairs(locked) do redis.call('HSET', KEYS[6], key, txid) end
for _, p in ipairs(prefixes) do redis.call('HSET', KEYS[7], txid .. '\\n' .. p, p) end
local now = redis.call('TIME')
local deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
deadline = deadline + tonumber(ARGV[2])
redis.call('HSET', KEYS[8], txid,
           cmsgpack.pack(deadline, tonumber(ARGV[6]), locked, prefixes, writes))
return {2, 0}
"""
)

# KEYS shard keys + applied key; ARGV txid, b'c' | b'a', S, shard -> the base version
# taken here (committed), or -1 (aborted / nothing prepared and nothing applied)
_FINISH = (
    "#!lua\n"
    + _LOCKS
    + """
local txid = ARGV[1]
local packed = redis.call('HGET', KEYS[8], txid)
if not packed then return tonumber(redis.call('GET', KEYS[9]) or -1) end
local _, n_versions, locked, prefixes, writes = cmsgpack.unpack(packed)
local base = -1
if ARGV[2] == 'c' then
  base = write_rows(KEYS, writes, n_versions, tonumber(ARGV[3]), tonumber(ARGV[4]))
  redis.call('SET', KEYS[9], base, 'PX', KEEP_MS)
end
for _, key in ipairs(locked) do
  if redis.call('HGET', KEYS[6], key) == txid then redis.call('HDEL', KEYS[6], key) end
end
for _, p in ipairs(prefixes) do redis.call('HDEL', KEYS[7], txid .. '\\n' .. p) end
redis.call('HDEL', KEYS[8], txid)
return base
"""
).replace("KEEP_MS", str(_KEEP_MS))

# KEYS decision key; ARGV b'c' | b'a', deadline ms (0: none) -> the decision, or b'' when
# undecided and an abort was asked before the deadline
_DECIDE = """#!lua
local decided = redis.call('GET', KEYS[1])
if decided then return decided end
if ARGV[1] == 'a' then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if ms < tonumber(ARGV[2]) then return '' end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', KEEP_MS)
return ARGV[1]
""".replace("KEEP_MS", str(_KEEP_MS))

# KEYS txns; ARGV txid -> deadline ms of the prepared transaction, or -1
_DEADLINE = """#!lua flags=no-writes
local packed = redis.call('HGET', KEYS[1], ARGV[1])
if not packed then return -1 end
local deadline = cmsgpack.unpack(packed)
return deadline
"""

# KEYS values, feed, locks; ARGV keys -> value, version, lock owner (or false) per key
_GET_ROWS = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + """
local rows = {}
for i, key in ipairs(ARGV) do
  rows[3 * i - 2] = redis.call('HGET', KEYS[1], key)
  rows[3 * i - 1] = version_of(KEYS[2], key)
  rows[3 * i] = redis.call('HGET', KEYS[3], key)
end
return rows
"""
)

# KEYS feed, names, seq, locks; ARGV prefix, sequence floor -> version under the prefix on
# this shard, its sequence, then the owners of locks under it. Raises the sequence first.
_ADVANCE = (
    "#!lua\n"
    + _PRELUDE
    + """
local floor = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[3]) or 0) < floor then redis.call('SET', KEYS[3], floor) end
local reply = {prefix_version(KEYS[1], KEYS[2], ARGV[1]),
               tonumber(redis.call('GET', KEYS[3]) or 0)}
local held = redis.call('HGETALL', KEYS[4])
for j = 1, #held, 2 do
  if string.sub(held[j], 1, #ARGV[1]) == ARGV[1] then reply[#reply + 1] = held[j + 1] end
end
return reply
"""
)

# KEYS feed, seq; ARGV since, limit -> this shard's seq, key1, version1, ...
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

# KEYS values, feed, live, names; ARGV last, keys -> how many were removed. The key at
# version ``last`` stays (-1: none; see RedisClusterStore.purge).
_PURGE = """#!lua
local removed = 0
local last = tonumber(ARGV[1])
for i = 2, #ARGV do
  local key = ARGV[i]
  local version = redis.call('ZSCORE', KEYS[2], key)
  if version and tonumber(version) ~= last then
    redis.call('HDEL', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[3], key)
    redis.call('ZREM', KEYS[4], key)
    removed = removed + 1
  end
end
return removed
"""


# --------------------------------------------------------------------------- the store


class RedisClusterStore(BaseStore):
    """A :class:`~stratus.store.Store` on the Redis Cluster at ``url`` (any node), under
    ``namespace``, split into ``shards`` shards (fixed for the namespace's lifetime).

    ``startup_nodes`` are URLs of more nodes to discover the cluster from, should the one
    at ``url`` be down. ``wait_replicas`` > 0 makes every write wait (``WAIT``, up to
    ``wait_timeout`` s) until that many replicas have it, so a failover keeps it;
    ``lock_timeout`` is how long a prepared multi-shard transaction may hold its locks
    before others abort it. ``stratus.kv.open`` opens one from a ``redis-cluster://`` URL.

    >>> store = RedisClusterStore("redis://127.0.0.1:7000", concat)  # doctest: +SKIP
    """

    one_sequence = False
    """Versions are unique and increase per key, but are not consecutive across keys."""

    def __init__(
        self,
        url: str,
        merge_fn: MergeFn,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        namespace: str = "stratus",
        shards: int = DEFAULT_SHARDS,
        merge_attempts: int = 100,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        startup_nodes: Sequence[str] = (),
    ) -> None:
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        if not isinstance(namespace, str) or not namespace or {"{", "}"} & set(namespace):
            raise ConfigurationError(
                f"a namespace is a non-empty str without braces: {namespace!r}"
            )
        if not 1 <= shards <= 1024:
            raise ConfigurationError(f"shards must be between 1 and 1024, not {shards}")
        if merge_attempts < 1 or lock_timeout <= 0 or wait_replicas < 0:
            raise ConfigurationError("merge_attempts and lock_timeout must be positive")
        self.namespace = namespace
        self.shards = shards
        self.merge_attempts = merge_attempts
        self.lock_timeout = lock_timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._shards = [_Shard.of(namespace, i) for i in range(shards)]
        self.address = url.split("@")[-1]
        try:
            client = RedisCluster.from_url(url, startup_nodes=[_node(u) for u in startup_nodes])
        except ValueError as exc:
            raise ConfigurationError(f"not a Redis URL: {exc}") from None
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot reach the Redis Cluster at {url}: {exc}") from exc
        scripts = [_GET_ROWS, _ADVANCE, _CHANGES, _COMMIT, _PREPARE, _FINISH, _DECIDE]
        (
            self._get_rows,
            self._advance,
            self._changes,
            self._commit,
            self._prepare,
            self._finish,
            self._decide,
        ) = [client.register_script(source) for source in scripts]
        self._deadline = client.register_script(_DEADLINE)
        self._purge = client.register_script(_PURGE)
        self._client: RedisCluster | None = client
        self._ids = itertools.count()
        self._track()

    # ------------------------------------------------------------------ placement

    def shard_of(self, key: str) -> int:
        """The shard of ``key``: a volume's keys share the shard of the volume prefix."""
        if key.startswith("fs/v/"):
            end = key.find("/", 5)
            if end != -1:
                key = key[: end + 1]
        return zlib.crc32(key.encode()) % self.shards

    def _prefix_shard(self, prefix: str) -> int | None:
        """The one shard holding every key under ``prefix``, or None (all of them)."""
        if self.shards == 1:
            return 0
        if prefix.startswith("fs/v/") and prefix.find("/", 5) != -1:
            return self.shard_of(prefix)
        return None

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        check_key(key)
        return self.get_many([key])[key]

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot (two rounds across shards)."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if not wanted:
            return {}
        by_shard = self._group(wanted)
        rows = self._read_resolved(by_shard)
        while len(by_shard) > 1:
            again = self._read_resolved(by_shard)
            if {k: v[1] for k, v in again.items()} == {k: v[1] for k, v in rows.items()}:
                break
            rows = again
        return {key: Entry(*rows[key]) for key in wanted}

    def _group(self, keys: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(self.shard_of(key), []).append(key)
        return groups

    def _read_resolved(self, by_shard: Mapping[int, list[str]]) -> dict[str, tuple[Any, int]]:
        """Each shard's rows, after rolling forward any committed transaction met there."""
        rows: dict[str, tuple[Any, int]] = {}
        for index, keys in by_shard.items():
            shard = self._shards[index]
            while True:
                reply = self._call(self._get_rows, (shard.values, shard.feed, shard.locks), keys)
                owners = {reply[3 * i + 2].decode() for i in range(len(keys)) if reply[3 * i + 2]}
                # An undecided transaction's writes are not visible yet: read the old rows.
                if not any([self._resolve(index, txid) for txid in owners]):
                    break
            for i, key in enumerate(keys):
                rows[key] = (reply[3 * i], int(reply[3 * i + 1]))
        return rows

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted (not one snapshot across shards)."""
        low, high = _lex_range(check_prefix(prefix))
        client = self._open()
        one = self._prefix_shard(prefix)
        found: list[bytes] = []
        for index in range(self.shards) if one is None else (one,):
            try:
                found += cast(
                    list[bytes], client.zrange(self._shards[index].live, low, high, bylex=True)
                )
            except redis.RedisError as exc:
                self._failed(exc)
        return sorted(key.decode() for key in found)

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none); across shards,
        read after raising every shard's sequence past it (see the module docstring)."""
        check_prefix(prefix)
        one = self._prefix_shard(prefix)
        indexes = list(range(self.shards)) if one is None else [one]
        floor = 0 if one is not None else max(self._seqs())
        while True:
            best, top, waited = 0, 0, False
            for index in indexes:
                shard = self._shards[index]
                keys = (shard.feed, shard.names, shard.seq, shard.locks)
                reply = self._write(self._advance, keys, [prefix, floor])
                best, top = max(best, int(reply[0])), max(top, int(reply[1]))
                for txid in {owner.decode() for owner in reply[2:]}:
                    waited |= self._resolve(index, txid)
            # Every shard must have been raised past the highest sequence seen, or a later
            # write on a shard read early could take a version below ``best``.
            if not waited and (one is not None or top <= floor):
                return best
            floor = max(floor, top)

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above the cursor ``since``, in version order.

        The cursor (``Changes.last``, :meth:`last_version`) holds every shard's sequence;
        a version is not a cursor here: pass 0 or a ``last`` this store returned.
        """
        self._check_limit(limit)
        cursors = _decode_cursor(since, self.shards)
        pages: list[tuple[int, list[tuple[str, int]], int]] = []
        for index, shard in enumerate(self._shards):
            after = cursors[index] * self.shards + index
            reply = self._call(self._changes, (shard.feed, shard.seq), [after, limit])
            page = [(k.decode(), int(v)) for k, v in zip(reply[1::2], reply[2::2], strict=True)]
            pages.append((int(reply[0]), page, index))
        merged = sorted((item for _, page, _ in pages for item in page), key=lambda kv: kv[1])
        taken = merged[:limit]
        top = taken[-1][1] if len(taken) == limit else None
        new: list[int] = []
        went_back = False
        for seq, page, index in pages:
            went_back |= seq < cursors[index]
            listed = [v for _, v in page if top is None or v <= top]
            if len(listed) == len(page) and len(page) < limit:
                new.append(seq)  # everything of this shard up to its sequence was listed
            else:
                new.append(listed[-1] // self.shards if listed else cursors[index])
        if went_back:  # another store under the cursor: a ``last`` below ``since`` says so
            last = _encode_cursor(new)
            return Changes(last=last if last < since else 0, keys=taken)
        return Changes(last=_encode_cursor(new), keys=taken)

    def last_version(self) -> int:
        """The change-feed cursor of the store's current state (every shard's sequence)."""
        return _encode_cursor(self._seqs())

    def _seqs(self) -> list[int]:
        client = self._open()
        try:
            values = [client.get(shard.seq) for shard in self._shards]
        except redis.RedisError as exc:
            self._failed(exc)
        return [int(value or 0) for value in values]

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
        merged = list(dict.fromkeys(write.key for write in writes if isinstance(write, Merge)))
        rows: dict[str, tuple[Any, int]] = (
            self._read_resolved(self._group(merged)) if merged else {}
        )
        for attempt in range(self.merge_attempts):
            view = _StagingView(rows)
            try:
                _, count, merged_into = apply_writes(
                    view, 0, writes, self.merge_fn, self.max_value_bytes
                )
            except Exception:
                outcome = self._run(reads, prefix_reads, view.guards, [], 0)
                if isinstance(outcome, CommitResult):
                    if not outcome.ok:
                        return outcome
                    raise  # the merge saw the current values: its error stands
            else:
                outcome = self._run(reads, prefix_reads, view.guards, view.staged, count)
                if isinstance(outcome, CommitResult):
                    if not outcome.ok:
                        return outcome
                    versions = outcome.versions
                    return CommitResult(ok=True, versions=versions, merged_into=merged_into)
            # A merged key changed since it was read: compute the merge again.
            if attempt > 0:
                backoff.MERGE.sleep(attempt)
            rows = self._read_resolved(self._group(merged))
        raise MergeContention(merged, self.merge_attempts)

    def _run(
        self,
        reads: Mapping[str, int],
        prefix_reads: Mapping[str, int],
        guards: Mapping[str, int],
        staged: Sequence[tuple[str, bytes | None, int]],
        count: int,
    ) -> CommitResult | None:
        """Validate and write, on one shard or by two-phase commit: the result (versions of
        the written keys), or None when a guard changed (nothing written)."""
        parts: dict[int, _Part] = {}

        def part(index: int) -> _Part:
            return parts.setdefault(index, _Part())

        names = [*reads, *prefix_reads]
        for i, (key, version) in enumerate(reads.items()):
            part(self.shard_of(key)).reads.append((key, version, i))
        for i, (prefix, version) in enumerate(prefix_reads.items(), len(reads)):
            one = self._prefix_shard(prefix)
            for index in range(self.shards) if one is None else (one,):
                mode = b"e" if one is not None else b"m"
                part(index).prefixes.append((prefix, version, mode, i))
        for key, version in guards.items():
            part(self.shard_of(key)).guards.append((key, version))
        for key, value, offset in staged:  # in version order
            target = part(self.shard_of(key))
            target.writes.append((key, offset, value))
            target.n_versions = offset
        if not parts:
            return CommitResult(ok=True)
        if len(parts) == 1:  # the versions as in one sequence: a key written twice skips one
            return self._commit_one(names, *next(iter(parts.items())))
        for each in parts.values():  # consecutive on each shard
            each.writes = [(key, i, value) for i, (key, _, value) in enumerate(each.writes, 1)]
            each.n_versions = len(each.writes)
        return self._commit_many(names, parts)

    def _commit_one(self, names: list[str], index: int, part: _Part) -> CommitResult | None:
        shard = self._shards[index]
        started = time.monotonic()
        while True:
            reply = self._write(self._commit, shard, [self.shards, index, *part.args()])
            if reply[0] != _BLOCKED:
                break
            self._wait_for({txid.decode() for txid in reply[1:]}, index, started)
        if reply[0] == _CONFLICT:
            return part.conflicts(names, reply)
        if reply[0] == _RETRY:
            return None
        base = int(reply[1])
        return CommitResult(ok=True, versions=part.versions(base, self.shards, index))

    def _commit_many(self, names: list[str], parts: Mapping[int, _Part]) -> CommitResult | None:
        coordinator = min(parts)
        txid = f"{coordinator}.{os.getpid()}.{next(self._ids)}.{os.urandom(6).hex()}"
        prepared: list[int] = []
        refusal: list[Any] | None = None
        started = time.monotonic()
        lock_ms = int(self.lock_timeout * 1000)
        try:
            for index in sorted(parts):  # a fixed order: two committers do not deadlock
                shard = self._shards[index]
                while True:
                    args = [txid, lock_ms, *parts[index].args()]
                    reply = self._write(self._prepare, shard, args)
                    if reply[0] != _BLOCKED:
                        break
                    self._wait_for({t.decode() for t in reply[1:]}, index, started)
                if reply[0] != _DONE:
                    refusal = reply
                    break
                prepared.append(index)
            decision = b"a" if refusal is not None else b"c"
            decision = self._decide_now(txid, decision)
        except BaseException:
            # Cut off: abort now if not decided yet (else a reader will); a commit decided
            # before the failure (its WAIT failed, say) is finished as committed, since
            # the decision record is what readers roll forward to.
            if prepared:
                try:
                    decided = self._decide_now(txid, b"a")
                    for index in prepared:
                        self._finish_on(index, txid, decided)
                except Exception:
                    pass
            raise
        versions: dict[str, int] = {}
        for index in prepared:
            base = self._finish_on(index, txid, decision)
            if decision == b"c":
                versions |= parts[index].versions(base, self.shards, index)
        if decision == b"c":
            return CommitResult(ok=True, versions=versions)
        if refusal is None or refusal[0] == _RETRY:
            return None  # a guard changed (or a reader aborted us: try again)
        return self._all_conflicts(names, parts)

    def _all_conflicts(self, names: list[str], parts: Mapping[int, _Part]) -> CommitResult:
        """Every conflict of an aborted transaction, from a validation-only pass per shard."""
        found: set[str] = set()
        for index, part in parts.items():
            check = _Part()
            check.reads, check.prefixes = part.reads, part.prefixes
            args = [self.shards, index, *check.args()]
            reply = self._call(self._commit, self._shards[index], args)
            if reply[0] == _CONFLICT:
                found.update(check.conflicts(names, reply).conflicts)
        return CommitResult(ok=False, conflicts=[name for name in names if name in found])

    def _decide_now(self, txid: str, decision: bytes) -> bytes:
        coordinator = int(txid.split(".", 1)[0])
        key = f"{self._shards[coordinator].tag}:decision:{txid}"
        if decision == b"c":
            # The commit point: a reader may have aborted us first (past the deadline).
            decided: bytes = self._write(self._decide, (key,), [b"c", 0])
            return decided
        decided = self._write(self._decide, (key,), [b"a", 0])
        return decided

    def _finish_on(self, index: int, txid: str, decision: bytes) -> int:
        shard = self._shards[index]
        keys = (*shard, f"{shard.tag}:applied:{txid}")
        return int(self._write(self._finish, keys, [txid, decision, self.shards, index]))

    def _resolve(self, index: int, txid: str) -> bool:
        """Settle what can be settled of the prepared ``txid`` met on shard ``index``:
        finish it there if decided, abort it if past its deadline. True if something
        changed (read again); False if it is still undecided within its deadline."""
        coordinator = int(txid.split(".", 1)[0])
        key = f"{self._shards[coordinator].tag}:decision:{txid}"
        deadline = int(self._call(self._deadline, (self._shards[index].txns,), [txid]))
        if deadline < 0:
            return True  # finished meanwhile
        decided: bytes = self._write(self._decide, (key,), [b"a", deadline])
        if not decided:
            return False
        self._finish_on(index, txid, decided)
        return True

    def _wait_for(self, owners: set[str], index: int, started: float) -> None:
        """Wait for the transactions holding locks a write needs: settle each, or back off
        (a blocked write waits at most two lock timeouts, then StoreLockTimeout)."""
        settled = [self._resolve(index, txid) for txid in owners]
        if all(settled):
            return
        elapsed = time.monotonic() - started
        if elapsed > 2 * self.lock_timeout:
            raise StoreLockTimeout(self._shards[index].locks, self.lock_timeout, [])
        time.sleep(backoff.LOCK.pause(int(elapsed * 1000) + 1, elapsed) or 0.001)

    def recover(self) -> int:
        """Finish or abort every prepared transaction past its deadline (a crashed
        committer's); how many were settled. Readers do this for the keys they meet."""
        client = self._open()
        settled = 0
        for index, shard in enumerate(self._shards):
            try:
                txids = [txid.decode() for txid in cast(list[bytes], client.hkeys(shard.txns))]
            except redis.RedisError as exc:
                self._failed(exc)
            settled += sum(self._resolve(index, txid) for txid in txids)
        return settled

    def purge(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` entirely (no tombstone, no new version); how many were."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if not wanted:
            return 0
        # With one shard, its sequence is the store's: the key at its last version stays,
        # as in the other backends. With several there is no store-wide last version.
        last = self._seqs()[0] if self.shards == 1 else -1
        removed = 0
        for index, group in self._group(wanted).items():
            shard = self._shards[index]
            keys = (shard.values, shard.feed, shard.live, shard.names)
            removed += int(self._write(self._purge, keys, [last, *group]))
        return removed

    def _write(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script that writes. With ``wait_replicas``, WAIT follows it on the same
        connection to the master of its slot (one pipeline), so that WAIT covers this very
        write: on another pooled connection it would wait for that connection's writes."""
        if not self.wait_replicas:
            return self._call(script, keys, args)
        client = self._open()
        started = time.monotonic()
        for attempt in itertools.count(1):
            try:
                slot = client.keyslot(keys[0])  # type: ignore[no-untyped-call]
                node = client.nodes_manager.get_node_from_slot(slot)
                master = client.get_redis_connection(node)
                pipe = master.pipeline(transaction=False)
                # EVALSHA itself: a Script would ask SCRIPT EXISTS first, a round trip more.
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                wait = ("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
                pipe.execute_command(*wait)  # type: ignore[no-untyped-call]
                reply, acked = pipe.execute()
                break
            except redis.exceptions.NoScriptError as exc:
                if attempt > 3:
                    self._failed(exc)
                try:  # a master new since (a failover), or flushed: the script did not run
                    master.script_load(script.script)
                except redis.RedisError as exc:
                    self._failed(exc)
            except _UNSETTLED as exc:
                # The slot moved or the cluster is failing over: the script did not run.
                self._refresh(client)
                if time.monotonic() - started > self.lock_timeout:
                    raise StoreUnavailable(
                        f"the Redis Cluster at {self.address} did not settle: {exc}"
                    ) from exc
                _RESETTLE.sleep(attempt)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._refresh(client)  # the script may have run: not ours to repeat
                self._failed(exc)
            except redis.RedisError as exc:
                self._failed(exc)
        if int(acked) < self.wait_replicas:
            raise StoreUnavailable(
                f"only {acked} of {self.wait_replicas} replicas acknowledged a write of "
                f"{self.address}: it may be lost in a failover"
            )
        return reply

    @staticmethod
    def _refresh(client: RedisCluster) -> None:
        """Learn the slots' masters again (after a failover); if the cluster is still
        settling, a later call tries again."""
        with contextlib.suppress(redis.RedisError):
            client.nodes_manager.initialize()

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        raise NotImplementedError("RedisClusterStore writes through its scripts")

    # ------------------------------------------------------------------ lifetime

    def _call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self._open()
        try:
            return script(keys, args, client=client)
        except redis.RedisError as exc:
            self._failed(exc)

    def _failed(self, exc: redis.RedisError) -> NoReturn:
        raise_store_error(exc, f"the Redis Cluster at {self.address}")

    def _open(self) -> RedisCluster:
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
        """A signal fed by the commit scripts' PUBLISH on each shard's channel: a cache
        that watches it refreshes when something was written instead of polling the feed.

        One connection, to one node, subscribed to every shard's channel: Redis Cluster
        broadcasts PUBLISH to every node. If that node goes, the signal breaks and the
        cache polls again."""
        client = self._open()
        try:
            default = client.get_default_node()  # type: ignore[no-untyped-call]
            node = client.get_redis_connection(default)
        except redis.RedisError as exc:
            self._failed(exc)
        return _PubSubSignal(node, *(shard.seq for shard in self._shards))

    def close(self) -> None:
        """Close the store's connections; idempotent."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _Part:
    """What one shard checks and writes of a transaction."""

    __slots__ = ("guards", "n_versions", "prefixes", "reads", "writes")

    def __init__(self) -> None:
        self.reads: list[tuple[str, int, int]] = []  # key, version, index in the conflicts
        self.prefixes: list[tuple[str, int, bytes, int]] = []
        self.guards: list[tuple[str, int]] = []
        self.writes: list[tuple[str, int, bytes | None]] = []  # key, offset here, value
        self.n_versions = 0  # versions taken on this shard: the highest offset

    def args(self) -> list[Any]:
        args: list[Any] = [len(self.reads), len(self.prefixes), len(self.guards)]
        args.append(self.n_versions)
        for key, version, _ in self.reads:
            args += (key, version)
        for prefix, version, mode, _ in self.prefixes:
            args += (prefix, version, mode)
        for key, version in self.guards:
            args += (key, version)
        for key, offset, value in self.writes:
            args += (key, offset, b"d", b"") if value is None else (key, offset, b"p", value)
        return args

    def conflicts(self, names: list[str], reply: list[Any]) -> CommitResult:
        """The conflicts of a CONFLICT reply, named (in the transaction's order)."""
        indexes = [index for *_, index in self.reads] + [index for *_, index in self.prefixes]
        return CommitResult(ok=False, conflicts=[names[indexes[i - 1]] for i in reply[1:]])

    def versions(self, base: int, shards: int, index: int) -> dict[str, int]:
        return {key: (base + offset) * shards + index for key, offset, _ in self.writes}


def _node(url: str) -> ClusterNode:
    """The cluster node of a ``redis://HOST:PORT`` URL (credentials come from ``url``)."""
    parsed = urlsplit(url)
    if parsed.hostname is None or parsed.port is None:
        raise ValueError(f"no HOST:PORT in {url!r}")
    return ClusterNode(parsed.hostname, parsed.port)  # type: ignore[no-untyped-call]


def _encode_cursor(seqs: Sequence[int]) -> int:
    return sum(seq << (_CURSOR_BITS * i) for i, seq in enumerate(seqs))


def _decode_cursor(cursor: int, shards: int) -> list[int]:
    mask = (1 << _CURSOR_BITS) - 1
    return [(cursor >> (_CURSOR_BITS * i)) & mask for i in range(shards)]
