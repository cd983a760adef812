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

# Shared by IDENTIFY and MERGE: find a profile (following merges) and merge one
# profile into another, keeping everything: identities, channels,
# conversations (re-pointed), counts added, fields the survivor lacks.
MERGE_FUNCTIONS = """
local NOW, P = ARGV[1], ARGV[2]
local function ckey(id) return P .. 'customer:{' .. id .. '}' end
local function live(id)
  for _ = 1, 10 do
    local into = redis.call('HGET', ckey(id), 'merged_into')
    if not into then return id end
    id = into
  end
  return id
end
local ADDED = {message_count = 1, conversation_count = 1, repeat_contacts = 1}
local function merge(from, into, by)
  local fk, ik = ckey(from), ckey(into)
  for _, ident in ipairs(redis.call('SMEMBERS', fk .. ':identities')) do
    redis.call('SET', P .. 'identity:' .. ident, into)
    redis.call('SADD', ik .. ':identities', ident)
  end
  for _, ch in ipairs(redis.call('SMEMBERS', fk .. ':channels')) do
    redis.call('SADD', ik .. ':channels', ch)
  end
  local convs = redis.call('ZRANGE', fk .. ':conversations', 0, -1, 'WITHSCORES')
  for i = 1, #convs, 2 do
    redis.call('ZADD', ik .. ':conversations', convs[i + 1], convs[i])
    redis.call('HSET', P .. 'conv:{' .. convs[i] .. '}', 'customer_id', into)
  end
  local f = redis.call('HGETALL', fk)
  for i = 1, #f, 2 do
    local k, v = f[i], f[i + 1]
    if ADDED[k] then
      redis.call('HINCRBY', ik, k, v)
    elseif k == 'created_at' or k == 'first_seen' then
      local cur = redis.call('HGET', ik, k)
      if not cur or tonumber(v) < tonumber(cur) then redis.call('HSET', ik, k, v) end
    elseif k == 'last_seen' then
      local cur = redis.call('HGET', ik, k)
      if not cur or tonumber(v) > tonumber(cur) then redis.call('HSET', ik, k, v) end
    elseif k == 'open_conversation' then
      local cur = redis.call('HGET', ik, k)
      local function act(c)
        return tonumber(redis.call('HGET', P .. 'conv:{' .. c .. '}', 'last_activity') or 0)
      end
      if not cur or act(v) > act(cur) then redis.call('HSET', ik, k, v) end
    elseif k ~= 'id' and k ~= 'merged_into' and redis.call('HEXISTS', ik, k) == 0 then
      redis.call('HSET', ik, k, v)
    end
  end
  redis.call('DEL', fk, fk .. ':identities', fk .. ':channels', fk .. ':conversations')
  redis.call('HSET', fk, 'merged_into', into, 'merged_at', NOW)
  redis.call('XADD', P .. 'merges', '*', 'from', from, 'into', into, 'at', NOW, 'by', by)
end
"""


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

# Find the customer behind each message by any of its identities (creating
# one on first contact, merging two when the message ties them together),
# and read the profile, their latest conversation and the conversation the
# message refers to, all in one atomic step.
# ARGV[1]: now (s); ARGV[2]: key prefix;
# ARGV[3]: JSON [[[identity "kind:value"...], new customer id, [thread keys...]]...]
# -> per item {customer id, created 0/1, profiles merged, owner online 0/1,
#              customer fields..., '|', latest conversation fields..., '|',
#              referenced conversation fields...}
IDENTIFY = (
    MERGE_FUNCTIONS
    + """
local out = {}
for _, it in ipairs(cjson.decode(ARGV[3])) do
  local found, seen, mapped = {}, {}, {}
  for _, ident in ipairs(it[1]) do
    local c = redis.call('GET', P .. 'identity:' .. ident)
    if c then
      c = live(c)
      mapped[ident] = c
      if not seen[c] then seen[c] = true; table.insert(found, c) end
    end
  end
  local id, created, merged = nil, 0, 0
  if #found == 0 then
    id, created = it[2], 1
    redis.call('HSET', ckey(id), 'id', id, 'created_at', NOW, 'first_seen', NOW)
  else
    id = found[1]  -- the oldest profile survives a merge
    for i = 2, #found do
      if tonumber(redis.call('HGET', ckey(found[i]), 'created_at') or NOW) <
         tonumber(redis.call('HGET', ckey(id), 'created_at') or NOW) then id = found[i] end
    end
    for _, c in ipairs(found) do
      if c ~= id then merge(c, id, 'message'); merged = merged + 1 end
    end
  end
  for _, ident in ipairs(it[1]) do
    if mapped[ident] ~= id or merged > 0 then
      redis.call('SET', P .. 'identity:' .. ident, id)
      redis.call('SADD', ckey(id) .. ':identities', ident)
    end
  end
  local ck = ckey(id)
  local customer = redis.call('HGETALL', ck)
  local latest, online = {}, 0
  local conv = redis.call('HGET', ck, 'open_conversation')
  if conv then latest = redis.call('HGETALL', P .. 'conv:{' .. conv .. '}') end
  local referenced = {}
  for _, tk in ipairs(it[3]) do
    local rc = redis.call('GET', tk)
    if rc then
      referenced = redis.call('HGETALL', P .. 'conv:{' .. rc .. '}')
      if #referenced > 0 then break end
    end
  end
  for _, c in ipairs({referenced, latest}) do
    for i = 1, #c, 2 do
      if c[i] == 'owner' and redis.call('EXISTS', P .. 'presence:' .. c[i + 1]) == 1 then
        online = 1
      end
    end
    if #c > 0 then break end
  end
  local row = {id, created, merged, online}
  for _, x in ipairs(customer) do table.insert(row, x) end
  table.insert(row, '|')
  for _, x in ipairs(latest) do table.insert(row, x) end
  table.insert(row, '|')
  for _, x in ipairs(referenced) do table.insert(row, x) end
  table.insert(out, row)
end
return out
"""
)

# Merge customer A into B by hand (``router customer merge``).
# ARGV[1]: now; ARGV[2]: prefix; ARGV[3]: from id; ARGV[4]: into id; ARGV[5]: by
MERGE = (
    MERGE_FUNCTIONS
    + """
local from, into = live(ARGV[3]), live(ARGV[4])
for _, c in ipairs({from, into}) do
  if redis.call('EXISTS', ckey(c)) == 0 then return redis.error_reply('no customer ' .. c) end
end
if from == into then
  return redis.error_reply(ARGV[3] .. ' and ' .. ARGV[4] .. ' are already one customer')
end
merge(from, into, ARGV[5])
return into
"""
)


# Commit routed messages. For each: queue entry, message, customer,
# conversation, timeline, thread references and the ingest ack, all
# together. A redelivered ingest entry whose message was already committed
# is only acked (idempotent), so no message is ever queued twice.
# Two messages of one customer routed at once by two workers may both have
# seen no conversation: the second to commit joins the first's instead of
# starting another (and sends no second acknowledgement).
# Also, per item: when the target has a wait timeout, the queue entry is
# added to the overflow sorted set (score = when it moves on, ms); when the
# decision carries an acknowledgement, it is added to the outbox.
# ARGV[1]: ingest group; ARGV[2]: retention (s); ARGV[3]: overflow zset key;
# ARGV[4]: outbox stream key; ARGV[5]: JSON of items; ARGV[6]: now (s);
# ARGV[7]: conversation window (s); ARGV[8]: key prefix
# item: [1 message key, 2 ingest stream, 3 entry id, 4 queue band stream,
#    5 customer key, 6 conversation key, 7 timeline key, 8 new conversation
#    "1"/"0", 9 queue entry [k, v...], 10 message [k, v...], 11 customer
#    [k, v...], 12 conversation [k, v...], 13 timeline entry [k, v...],
#    14 overflow at (ms) or "", 15 acknowledgement outbox JSON or "",
#    16 [thread keys], 17 conversation id, 18 channel, 19 personal queue "1"/"0",
#    20 quiet "1"/"0" (an auto-reply: recorded in its conversation, not queued,
#    not reopening or re-prioritising it)]
#   (all values strings)
# -> per item {1 routed | 0 already routed | -1 error, queue entry or error,
#              conversation id}
COMMIT_ROUTE = """
local group, retention = ARGV[1], tonumber(ARGV[2])
local overflow, outbox = ARGV[3], ARGV[4]
local now, window, P = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local acks = {}  -- stream -> ids to XACK + XDEL together at the end
local function ack(stream, id)
  local l = acks[stream]
  if not l then l = {} acks[stream] = l end
  table.insert(l, id)
end
local function set(pairs, key, value)
  for i = 1, #pairs, 2 do if pairs[i] == key then pairs[i + 1] = value return end end
end
local function without(pairs, drop)
  local out = {}
  for i = 1, #pairs, 2 do
    if not drop[pairs[i]] then table.insert(out, pairs[i]) table.insert(out, pairs[i + 1]) end
  end
  return out
end
local function commit(it)
  local done = redis.call('HGET', it[1], 'queue_entry')
  if done then
    ack(it[2], it[3])
    return {0, done, redis.call('HGET', it[1], 'conversation_id') or ''}
  end
  local cid, ckey, tkey, new, ackmsg = it[17], it[6], it[7], it[8], it[15]
  local conv = it[12]
  if new == '1' then
    local open = redis.call('HGET', it[5], 'open_conversation')
    if open and open ~= cid then
      local la = tonumber(redis.call('HGET', P .. 'conv:{' .. open .. '}', 'last_activity') or 0)
      if now - la <= window then  -- another worker just opened one: join it
        cid, new, ackmsg = open, '0', ''
        ckey, tkey = P .. 'conv:{' .. open .. '}', P .. 'conv:{' .. open .. '}:timeline'
        conv = without(conv, {created_at = true, subject = true})
        set(conv, 'id', open)
        set(it[9], 'conversation_id', open)
        set(it[10], 'conversation_id', open)
        set(it[11], 'open_conversation', open)
      end
    end
  end
  local quiet = it[20] == '1'  -- an auto-reply: recorded, not queued
  local qid = ''
  if quiet then
    redis.call('HSET', it[1], 'queue_entry', 'none', unpack(it[10]))
  else
    if it[19] == '1' then
      pcall(redis.call, 'XGROUP', 'CREATE', it[4], 'agents', '0', 'MKSTREAM')
    end
    qid = redis.call('XADD', it[4], '*', unpack(it[9]))
    redis.call('HSET', it[1], 'queue_entry', it[4] .. ' ' .. qid, unpack(it[10]))
  end
  redis.call('EXPIRE', it[1], retention)
  redis.call('HSET', it[5], unpack(it[11]))
  redis.call('HSETNX', it[5], 'first_seen', ARGV[6])
  redis.call('HINCRBY', it[5], 'message_count', 1)
  for i = 1, #it[9], 2 do
    if it[9][i] == 'repeat' then redis.call('HINCRBY', it[5], 'repeat_contacts', 1) end
  end
  redis.call('SADD', it[5] .. ':channels', it[18])
  if new == '1' then
    redis.call('HINCRBY', it[5], 'conversation_count', 1)
    redis.call('ZADD', it[5] .. ':conversations', ARGV[6], cid)
  elseif not quiet and redis.call('HGET', ckey, 'status') == 'resolved' then
    redis.call('HSET', ckey, 'reopened_at', ARGV[6])
    redis.call('HINCRBY', ckey, 'reopen_count', 1)
  end
  redis.call('HSET', ckey, unpack(conv))
  redis.call('HINCRBY', ckey, 'message_count', 1)
  if not quiet then redis.call('HINCRBY', ckey, 'inbound_since_reply', 1) end
  redis.call('EXPIRE', ckey, retention)
  redis.call('XADD', tkey, 'MAXLEN', '~', 10000, '*', unpack(it[13]))
  redis.call('EXPIRE', tkey, retention)
  if #it[16] > 0 then
    local refs = ckey .. ':refs'
    for _, tk in ipairs(it[16]) do
      redis.call('SET', tk, cid, 'EX', retention)
      redis.call('SADD', refs, tk)
    end
    redis.call('EXPIRE', refs, retention)
  end
  if it[14] ~= '' and not quiet then redis.call('ZADD', overflow, it[14], it[4] .. ' ' .. qid) end
  if ackmsg ~= '' and not quiet then redis.call('XADD', outbox, '*', 'o', ackmsg) end
  ack(it[2], it[3])
  return {1, qid, cid}
end
local out = {}
for _, it in ipairs(cjson.decode(ARGV[5])) do
  local ok, res = pcall(commit, it)
  if ok then table.insert(out, res)
  else table.insert(out, {-1, tostring(res.err or res), ''}) end
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
# KEYS: the band streams to look in, most urgent first
# ARGV: group, agent, visibility timeout (ms), [key prefix]
# Per band: first an entry whose claim expired (or was released), then a new
# one. With the key prefix, the agent becomes the owner of the entry's
# conversation (follow-ups come back to them while they are online).
# -> {stream key, entry id, delivery count, field, value, ...} or nil
CLAIM = """
local group, agent, vis, P = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function own(fields)
  if not P then return end
  for i = 1, #fields, 2 do
    if fields[i] == 'conversation_id' then
      local ck = P .. 'conv:{' .. fields[i + 1] .. '}'
      if redis.call('EXISTS', ck) == 1 then
        local t = redis.call('TIME')
        redis.call('HSET', ck, 'owner', agent, 'owned_at', t[1] .. '.' .. string.sub(t[2], 1, 3))
      end
    end
  end
end
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
          own(e[2])
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
      own(e[2])
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

# Hold or take leases (an adapter's poller: one daemon polls X at a time).
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

# Hold a fair share of the ingest partitions: every routing daemon
# heartbeats in the nodes sorted set; each holds at most
# ceil(partitions / live nodes), renews those, lets go of the rest (another
# node takes them on its next renewal) and takes free ones up to its share.
# Time is Redis's own (TIME), so hosts' clocks do not matter.
# A draining node (stopping: ARGV[3] = "drain") keeps what it holds until
# it has routed what is there, takes nothing new, and leaves the nodes set at
# once, so the others' shares grow to cover the rest.
# KEYS: the partitions' lease keys, in partition order, then the nodes zset
# ARGV[1]: node id; ARGV[2]: ttl (ms); ARGV[3]: "drain" or absent
# -> per partition: 1 held, 0 not ours, 2 let go now (rebalancing)
PARTITION_LEASE = """
local n, nodes = #KEYS - 1, KEYS[#KEYS]
local node, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
local share = n
if ARGV[3] == 'drain' then
  redis.call('ZREM', nodes, node)
else
  redis.call('ZADD', nodes, now + ttl, node)
  share = math.ceil(n / redis.call('ZCARD', nodes))
end
local out, have, free = {}, 0, {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  out[i] = 0
  if v == node then
    if have < share then
      redis.call('PEXPIRE', KEYS[i], ttl)
      out[i], have = 1, have + 1
    else
      redis.call('DEL', KEYS[i])
      out[i] = 2
    end
  elseif not v then
    table.insert(free, i)
  end
end
if ARGV[3] == 'drain' then free = {} end
for _, i in ipairs(free) do
  if have >= share then break end
  redis.call('SET', KEYS[i], node, 'PX', ttl)
  out[i], have = 1, have + 1
end
return out
"""

# Let go of partitions (KEYS: lease keys, then the nodes zset; ARGV[1]: node).
PARTITION_UNLEASE = """
for i = 1, #KEYS - 1 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('ZREM', KEYS[#KEYS], ARGV[1])
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
    merge: AsyncScript
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
    partition_lease: AsyncScript
    partition_unlease: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(
            ingest=redis.register_script(INGEST),
            identify=redis.register_script(IDENTIFY),
            merge=redis.register_script(MERGE),
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
            partition_lease=redis.register_script(PARTITION_LEASE),
            partition_unlease=redis.register_script(PARTITION_UNLEASE),
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
