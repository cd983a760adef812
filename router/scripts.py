"""Lua scripts: every multi-key update that must be atomic.

Redis 6.2 has no Functions, so atomic steps are EVALSHA scripts. The ones
agent tools may call (claim, ack, release, renew) have their SHA1 published
in the ``{prefix}scripts`` hash; their contracts are in docs/redis-schema.md.

Conventions: flat field lists are passed as ``count, k1, v1, k2, v2...`` in
ARGV so field order in streams and hashes is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# Store one message from an adapter, once per (channel, source id).
# KEYS: dedup key, ingest partition stream
# ARGV: message id, dedup ttl (s), payload
# -> {message id, 0 new | 1 duplicate}
INGEST = """
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 1} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'm', ARGV[3])
return {ARGV[1], 0}
"""

# Find or create the customer owning an identity, and read their profile and
# open conversation in the same step.
# KEYS: identity key, customer hash (for a new id), identities set (new id)
# ARGV: new customer id, now (s), identity string, key prefix
# -> {customer id, created 0/1, customer fields..., '|', conversation fields...}
IDENTIFY = """
local id = redis.call('GET', KEYS[1])
local created = 0
if not id then
  id = ARGV[1]
  created = 1
  redis.call('SET', KEYS[1], id)
  redis.call('HSET', KEYS[2], 'id', id, 'created_at', ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[3])
end
local prefix = ARGV[4]
local out = {id, created}
local c = redis.call('HGETALL', prefix .. 'customer:{' .. id .. '}')
for _, x in ipairs(c) do table.insert(out, x) end
table.insert(out, '|')
local conv = redis.call('HGET', prefix .. 'customer:{' .. id .. '}', 'open_conversation')
if conv then
  local v = redis.call('HGETALL', prefix .. 'conv:{' .. conv .. '}')
  for _, x in ipairs(v) do table.insert(out, x) end
end
return out
"""


# Commit one routed message: queue entry, message, customer, conversation,
# timeline, and the ingest ack, all or nothing. A redelivered ingest entry
# whose message was already committed is only acked (idempotent).
# KEYS: message hash, ingest stream, queue band stream, customer hash,
#       conversation hash, timeline stream
# ARGV: ingest group, ingest entry id, retention (s), new conversation (0/1),
#       then four field lists (count, k, v...): queue entry, message,
#       customer, conversation; then timeline fields list
# -> {0 already routed | 1 routed, queue entry id}
COMMIT_ROUTE = """
local function take(i)
  local n = tonumber(ARGV[i])
  local t = {}
  for j = 1, n * 2 do t[j] = ARGV[i + j] end
  return t, i + n * 2 + 1
end
local done = redis.call('HGET', KEYS[1], 'queue_entry')
if done then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return {0, done}
end
local i = 5
local q, m, c, v, t
q, i = take(i)
m, i = take(i)
c, i = take(i)
v, i = take(i)
t, i = take(i)
local retention = tonumber(ARGV[3])
local qid = redis.call('XADD', KEYS[3], '*', unpack(q))
redis.call('HSET', KEYS[1], 'queue_entry', KEYS[3] .. ' ' .. qid, unpack(m))
redis.call('EXPIRE', KEYS[1], retention)
redis.call('HSET', KEYS[4], unpack(c))
redis.call('HINCRBY', KEYS[4], 'message_count', 1)
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[4], 'conversation_count', 1)
end
redis.call('HSET', KEYS[5], unpack(v))
redis.call('HINCRBY', KEYS[5], 'message_count', 1)
redis.call('EXPIRE', KEYS[5], retention)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', unpack(t))
redis.call('EXPIRE', KEYS[6], retention)
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return {1, qid}
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
            unlease=redis.register_script(UNLEASE),
        )


def flat(fields: dict[str, object]) -> list[object]:
    """``{"a": 1, "b": None}`` -> ``[1, "a", "1"]``: count-prefixed, None dropped."""
    out: list[object] = []
    for k, v in fields.items():
        if v is None:
            continue
        out.append(k)
        out.append(v if isinstance(v, str | bytes | int | float) else str(v))
    return [len(out) // 2, *out]
