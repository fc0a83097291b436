"""The Lua scripts of a Redis Cluster store: every read and write of a shard is one of them.

Each script's ``KEYS`` are keys of one shard (one hash slot), all declared, so a script
runs whole on the one node that holds all of them, or is refused before it starts (MOVED,
ASK, TRYAGAIN while its slot migrates): never on a shard split between two nodes.
"""

from __future__ import annotations

from typing import NamedTuple

from redis.cluster import RedisCluster
from redis.commands.core import Script

from stratus.store.redis_store import _PRELUDE

CONFLICT, RETRY, DONE, BLOCKED = 0, 1, 2, 3
"""The first item of a COMMIT or PREPARE reply."""
KEEP_MS = 3_600_000
"""Milliseconds decisions and applied bases are kept: far past any deadline."""

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
COMMIT = (
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
PREPARE = (
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
FINISH = (
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
).replace("KEEP_MS", str(KEEP_MS))

# KEYS decision key; ARGV b'c' | b'a', deadline ms (0: none) -> the decision, or b'' when
# undecided and an abort was asked before the deadline
DECIDE = """#!lua
local decided = redis.call('GET', KEYS[1])
if decided then return decided end
if ARGV[1] == 'a' then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if ms < tonumber(ARGV[2]) then return '' end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', KEEP_MS)
return ARGV[1]
""".replace("KEEP_MS", str(KEEP_MS))

# KEYS txns; ARGV txid -> deadline ms of the prepared transaction, or -1
DEADLINE = """#!lua flags=no-writes
local packed = redis.call('HGET', KEYS[1], ARGV[1])
if not packed then return -1 end
local deadline = cmsgpack.unpack(packed)
return deadline
"""

# KEYS values, feed, locks; ARGV keys -> value, version, lock owner (or false) per key
GET_ROWS = (
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
ADVANCE = (
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
CHANGES = """#!lua flags=no-writes
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
PURGE = """#!lua
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


class Scripts(NamedTuple):
    """The scripts, registered on a client (each runs by its SHA, loaded when missing)."""

    get_rows: Script
    advance: Script
    changes: Script
    commit: Script
    prepare: Script
    finish: Script
    decide: Script
    deadline: Script
    purge: Script

    @classmethod
    def register(cls, client: RedisCluster) -> Scripts:
        sources = (GET_ROWS, ADVANCE, CHANGES, COMMIT, PREPARE, FINISH, DECIDE, DEADLINE, PURGE)
        return cls(*(client.register_script(source) for source in sources))
