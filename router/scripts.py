"""Lua scripts: every multi-key update that must be atomic.

Redis 6.2 has no Functions, so atomic steps are EVALSHA scripts. The ones
agent tools may call (claim, ack, release, renew) have their SHA1 published
in the ``{prefix}scripts`` hash; their contracts are in docs/redis-schema.md.

Conventions: flat field lists are passed as ``count, k1, v1, k2, v2...`` in
ARGV so field order in streams and hashes is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# The three hot-path scripts take a whole batch as ONE JSON argument: the
# per-command and per-argument cost of the client (packing, pipelining) was
# the daemon's bottleneck, and one call per batch removes it. Each item is
# still handled on its own inside (one item's error does not stop the rest).
# Keys are computed by the daemon and passed in the JSON, so these scripts
# assume a single Redis (or one shard), not Redis Cluster.

# Store messages from adapters, each once per (channel, source id).
# ARGV[1]: dedup ttl (s); ARGV[2]: JSON [[dedup key or "", stream, message id, payload]...]
# -> {message id, 0 new | 1 duplicate, ...} (two values per item)
INGEST = """
local ttl = ARGV[1]
local out = {}
for _, it in ipairs(cjson.decode(ARGV[2])) do
  local existing = false
  if it[1] ~= '' then
    existing = redis.call('GET', it[1])
    if not existing then redis.call('SET', it[1], it[3], 'EX', ttl) end
  end
  if existing then
    table.insert(out, existing)
    table.insert(out, 1)
  else
    redis.call('XADD', it[2], '*', 'm', it[4])
    table.insert(out, it[3])
    table.insert(out, 0)
  end
end
return out
"""

# Find or create the customer owning each identity, and read their profile
# and open conversation in the same step.
# ARGV[1]: now (s); ARGV[2]: key prefix;
# ARGV[3]: JSON [[identity key, new customer id, identity string]...]
# -> per item {customer id, created 0/1, customer fields..., '|', conversation fields...}
IDENTIFY = """
local now, prefix = ARGV[1], ARGV[2]
local out = {}
for _, it in ipairs(cjson.decode(ARGV[3])) do
  local id = redis.call('GET', it[1])
  local created = 0
  if not id then
    id = it[2]
    created = 1
    redis.call('SET', it[1], id)
    redis.call('HSET', prefix .. 'customer:{' .. id .. '}', 'id', id, 'created_at', now)
    redis.call('SADD', prefix .. 'customer:{' .. id .. '}:identities', it[3])
  end
  local row = {id, created}
  local ckey = prefix .. 'customer:{' .. id .. '}'
  for _, x in ipairs(redis.call('HGETALL', ckey)) do table.insert(row, x) end
  table.insert(row, '|')
  local conv = redis.call('HGET', ckey, 'open_conversation')
  if conv then
    for _, x in ipairs(redis.call('HGETALL', prefix .. 'conv:{' .. conv .. '}')) do
      table.insert(row, x)
    end
  end
  table.insert(out, row)
end
return out
"""

# Commit routed messages. For each: queue entry, message, customer,
# conversation, timeline and the ingest ack, all together. A redelivered
# ingest entry whose message was already committed is only acked
# (idempotent), so no message is ever queued twice.
# Also, per item: when the target has a wait timeout, the queue entry is
# added to the overflow sorted set (score = when it moves on, ms); when the
# decision carries an acknowledgement, it is added to the outbox.
# ARGV[1]: ingest group; ARGV[2]: retention (s); ARGV[3]: overflow zset key;
# ARGV[4]: outbox stream key; ARGV[5]: JSON of items
#   [message key, ingest stream, entry id, queue band stream, customer key,
#    conversation key, timeline key, new conversation 0/1,
#    queue entry [k, v...], message [k, v...], customer [k, v...],
#    conversation [k, v...], timeline entry [k, v...],
#    overflow at (ms) or "", acknowledgement outbox JSON or ""]  (all strings)
# -> per item {1 routed | 0 already routed | -1 error, queue entry or error}
COMMIT_ROUTE = """
local group, retention = ARGV[1], tonumber(ARGV[2])
local overflow, outbox = ARGV[3], ARGV[4]
local acks = {}  -- stream -> ids to XACK + XDEL together at the end
local function ack(stream, id)
  local l = acks[stream]
  if not l then l = {} acks[stream] = l end
  table.insert(l, id)
end
local function commit(it)
  local done = redis.call('HGET', it[1], 'queue_entry')
  if done then
    ack(it[2], it[3])
    return {0, done}
  end
  local qid = redis.call('XADD', it[4], '*', unpack(it[9]))
  redis.call('HSET', it[1], 'queue_entry', it[4] .. ' ' .. qid, unpack(it[10]))
  redis.call('EXPIRE', it[1], retention)
  redis.call('HSET', it[5], unpack(it[11]))
  redis.call('HINCRBY', it[5], 'message_count', 1)
  if it[8] == '1' then redis.call('HINCRBY', it[5], 'conversation_count', 1) end
  redis.call('HSET', it[6], unpack(it[12]))
  redis.call('HINCRBY', it[6], 'message_count', 1)
  redis.call('EXPIRE', it[6], retention)
  redis.call('XADD', it[7], 'MAXLEN', '~', 10000, '*', unpack(it[13]))
  redis.call('EXPIRE', it[7], retention)
  if it[14] ~= '' then redis.call('ZADD', overflow, it[14], it[4] .. ' ' .. qid) end
  if it[15] ~= '' then redis.call('XADD', outbox, '*', 'o', it[15]) end
  ack(it[2], it[3])
  return {1, qid}
end
local out = {}
for _, it in ipairs(cjson.decode(ARGV[5])) do
  local ok, res = pcall(commit, it)
  if ok then table.insert(out, res)
  else table.insert(out, {-1, tostring(res.err or res)}) end
end
for stream, ids in pairs(acks) do
  redis.call('XACK', stream, group, unpack(ids))
  redis.call('XDEL', stream, unpack(ids))
end
return out
"""


# Move a stream entry to the dead-letter stream with its reason.
# KEYS: source stream, dead-letter stream
# ARGV: group, entry id, then fields (count, k, v...)
DEAD_LETTER = """
local n = tonumber(ARGV[3])
local f = {}
for j = 1, n * 2 do f[j] = ARGV[3 + j] end
local id = redis.call('XADD', KEYS[2], '*', unpack(f))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
"""

# Claim the most urgent entry of a queue for an agent.
# KEYS: the queue's band streams, most urgent first
# ARGV: group, agent, visibility timeout (ms)
# Per band: first an entry whose claim expired (or was released), then a new
# one. -> {stream key, entry id, delivery count, field, value, ...} or nil
CLAIM = """
local group, agent, vis = ARGV[1], ARGV[2], ARGV[3]
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local cursor = '0-0'
    for _ = 1, 100 do
      local r = redis.call('XAUTOCLAIM', key, group, agent, vis, cursor, 'COUNT', 1, 'JUSTID')
      local id = r[2][1]
      if id then
        -- XCLAIM (not JUSTID) counts the delivery; an entry deleted while
        -- pending comes back empty and is cleaned out of the pending list.
        local e = redis.call('XCLAIM', key, group, agent, 0, id)[1]
        if e and e[2] then
          local p = redis.call('XPENDING', key, group, id, id, 1)
          local out = {key, id, p[1] and p[1][4] or 1}
          for _, x in ipairs(e[2]) do table.insert(out, x) end
          return out
        end
        redis.call('XACK', key, group, id)
      end
      cursor = r[1]
      if cursor == '0-0' then break end
    end
    local n = redis.call('XREADGROUP', 'GROUP', group, agent, 'COUNT', 1, 'STREAMS', key, '>')
    if n then
      local e = n[1][2][1]
      local out = {key, e[1], 1}
      for _, x in ipairs(e[2]) do table.insert(out, x) end
      return out
    end
  end
end
return nil
"""

# Check that `agent` holds the claim on `id`. Returns the error string or nil.
_OWNER = """
local function owner_error(key, group, id, agent)
  local p = redis.call('XPENDING', key, group, id, id, 1)
  if not p[1] then return 'not claimed (already acked, or never claimed)' end
  if p[1][2] ~= agent then return 'claimed by ' .. p[1][2] .. ', not ' .. agent end
  return nil
end
"""

# Finish an entry: ack and delete. KEYS: band stream; ARGV: group, agent, id
ACK = (
    _OWNER
    + """
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
)

# Give an entry back to the queue, to be claimed next.
# KEYS: band stream; ARGV: group, agent, id
RELEASE = (
    _OWNER
    + """
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XCLAIM', KEYS[1], ARGV[1], '~released', 0, ARGV[3], 'IDLE', 1000000000000, 'JUSTID')
return 1
"""
)

# Keep a claim alive (reset its visibility timer).
# KEYS: band stream; ARGV: group, agent, id
RENEW = (
    _OWNER
    + """
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

# Outbox: a send failed, retry later.
# KEYS: outbox stream, delayed zset, delivery hash
# ARGV: group, entry id, due (ms), payload, attempts, error
RETRY_LATER = """
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], 'status', 'retrying', 'attempts', ARGV[5], 'last_error', ARGV[6],
           'next_attempt_at', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# Outbox: move retries that are due back into the stream.
# KEYS: delayed zset, outbox stream; ARGV: now (ms), max count
PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'o', payload)
  redis.call('ZREM', KEYS[1], payload)
end
return #due
"""

# Outbox: delivered. KEYS: outbox stream, delivery hash
# ARGV: group, entry id, then delivery fields (count, k, v...)
MARK_SENT = """
local n = tonumber(ARGV[3])
local f = {}
for j = 1, n * 2 do f[j] = ARGV[3 + j] end
redis.call('HSET', KEYS[2], unpack(f))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# Dead-letter replay: put the payload back where it came from, atomically.
# KEYS: dead-letter stream, target stream; ARGV: dead-letter id, field, payload
REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return nil end
return redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
"""

# Hold or take the ingest partitions' leases (one daemon routes a partition).
# KEYS: lease keys; ARGV: node id, ttl (ms) -> {1 held | 0 held by another, ...}
LEASE = """
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  elseif not v then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# Give up leases this node holds. KEYS: lease keys; ARGV: node id
UNLEASE = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 1
"""

# Overflow: move a queue entry nobody claimed in time to its next target.
# KEYS: old band stream, new band stream, overflow zset, message hash
# ARGV: group, entry id, overflow member, new entry fields JSON [k, v...],
#       next overflow score (ms) or "", new queue name
# -> {1, new entry id} | {0, "gone" | "claimed"}
OVERFLOW_MOVE = """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {0, 'gone'}
end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p[1] then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {0, 'claimed'}
end
local qid = redis.call('XADD', KEYS[2], '*', unpack(cjson.decode(ARGV[4])))
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], KEYS[2] .. ' ' .. qid) end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'queue_entry', KEYS[2] .. ' ' .. qid, 'queue', ARGV[6])
end
return {1, qid}
"""

# Scripts agent tools may call by SHA (published in the scripts hash).
PUBLIC = {"claim": CLAIM, "ack": ACK, "release": RELEASE, "renew": RENEW}


@dataclass
class Scripts:
    """The scripts registered on one client (redis-py reloads them on NOSCRIPT)."""

    ingest: AsyncScript
    identify: AsyncScript
    commit_route: AsyncScript
    dead_letter: AsyncScript
    claim: AsyncScript
    ack: AsyncScript
    release: AsyncScript
    renew: AsyncScript
    retry_later: AsyncScript
    promote_due: AsyncScript
    mark_sent: AsyncScript
    replay: AsyncScript
    lease: AsyncScript
    overflow_move: AsyncScript
    unlease: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(
            ingest=redis.register_script(INGEST),
            identify=redis.register_script(IDENTIFY),
            commit_route=redis.register_script(COMMIT_ROUTE),
            dead_letter=redis.register_script(DEAD_LETTER),
            claim=redis.register_script(CLAIM),
            ack=redis.register_script(ACK),
            release=redis.register_script(RELEASE),
            renew=redis.register_script(RENEW),
            retry_later=redis.register_script(RETRY_LATER),
            promote_due=redis.register_script(PROMOTE_DUE),
            mark_sent=redis.register_script(MARK_SENT),
            replay=redis.register_script(REPLAY),
            lease=redis.register_script(LEASE),
            overflow_move=redis.register_script(OVERFLOW_MOVE),
            unlease=redis.register_script(UNLEASE),
        )


def pairs(fields: Mapping[str, object]) -> list[str]:
    """``{"a": 1, "b": None}`` -> ``["a", "1"]``: string pairs for Lua, None dropped.

    Values must be strings (cjson turns numbers into Lua numbers, which
    Redis would truncate to integers).
    """
    out: list[str] = []
    for k, v in fields.items():
        if v is not None:
            out += (k, v if v.__class__ is str else str(v))
    return out


def flat(fields: dict[str, object]) -> list[object]:
    """``{"a": 1, "b": None}`` -> ``[1, "a", "1"]``: count-prefixed, None dropped."""
    out: list[object] = []
    for k, v in fields.items():
        if v is None:
            continue
        out.append(k)
        out.append(v if isinstance(v, str | bytes | int | float) else str(v))
    return [len(out) // 2, *out]
