-- The start of every script in router/lua/ (router/scripts.py puts it
-- before each one): key names and group names generated from router/keys.py,
-- and the helpers several scripts share. A script builds no key by hand: it
-- gets it from KEYS, from its arguments, or from K here, after setting P.

--@keys

-- The identity key of an identity string "kind:value".
local function identity_key(ident)
  local kind, value = string.match(ident, '^([^:]*):(.*)$')
  return K.identity(kind, value)
end

-- The live profile of a customer id, following merges.
local function live(id)
  for _ = 1, 10 do
    local into = redis.call('HGET', K.customer(id), 'merged_into')
    if not into then return id end
    id = into
  end
  return id
end

-- Merge profile `from` into `into`, keeping everything: identities,
-- channels, conversations (re-pointed), counts added, fields `into` lacks.
local ADDED = {message_count = 1, conversation_count = 1, repeat_contacts = 1}
local function merge(from, into, by, now)
  local fk, ik = K.customer(from), K.customer(into)
  for _, ident in ipairs(redis.call('SMEMBERS', K.customer_identities(from))) do
    redis.call('SET', identity_key(ident), into)
    redis.call('SADD', K.customer_identities(into), ident)
  end
  for _, ch in ipairs(redis.call('SMEMBERS', K.customer_channels(from))) do
    redis.call('SADD', K.customer_channels(into), ch)
  end
  local convs = redis.call('ZRANGE', K.customer_conversations(from), 0, -1, 'WITHSCORES')
  for i = 1, #convs, 2 do
    redis.call('ZADD', K.customer_conversations(into), convs[i + 1], convs[i])
    redis.call('HSET', K.conversation(convs[i]), 'customer_id', into)
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
        return tonumber(redis.call('HGET', K.conversation(c), 'last_activity') or 0)
      end
      if not cur or act(v) > act(cur) then redis.call('HSET', ik, k, v) end
    elseif k ~= 'id' and k ~= 'merged_into' and redis.call('HEXISTS', ik, k) == 0 then
      redis.call('HSET', ik, k, v)
    end
  end
  redis.call('DEL', fk, K.customer_identities(from), K.customer_channels(from),
             K.customer_conversations(from))
  redis.call('HSET', fk, 'merged_into', into, 'merged_at', now)
  redis.call('XADD', K.merges(), '*', 'from', from, 'into', into, 'at', now, 'by', by)
end

-- Whether `agent` holds the claim on `id`: the error string, or nil.
local function owner_error(key, group, id, agent)
  local p = redis.call('XPENDING', key, group, id, id, 1)
  if not p[1] then return 'not claimed (already acked, or never claimed)' end
  if p[1][2] ~= agent then return 'claimed by ' .. p[1][2] .. ', not ' .. agent end
  return nil
end

-- The value of `key` in a flat field list {k1, v1, k2, v2...}, or nil.
local function field(pairs, key)
  for i = 1, #pairs, 2 do if pairs[i] == key then return pairs[i + 1] end end
  return nil
end

-- The queue name of a band stream key ("{p}q:{support}:p2" -> "support").
local function queue_of(stream)
  return string.match(stream, '{([^}]*)}:p%d+$') or ''
end

-- Now, from the server's clock, as Unix seconds with milliseconds.
local function server_now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

-- Append a lifecycle event to the public stream (docs/redis-schema.md),
-- trimmed by age (`events_retention` in meta, s). Needs P set. `fields`:
-- flat {k, v...}; empty values are left out.
local EVENT_FIELDS = {'conversation_id', 'customer_id', 'channel', 'language', 'team',
                      'priority', 'message_id'}
local function emit(kind, at, fields)
  local keep = tonumber(redis.call('HGET', K.meta(), 'events_retention') or '') or 34560000
  local t = redis.call('TIME')
  local cutoff = string.format('%.0f', (tonumber(t[1]) - keep) * 1000)
  local args = {'XADD', K.events(), 'MINID', '~', cutoff, '*', 'type', kind, 'at', at}
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v and v ~= '' then table.insert(args, fields[i]) table.insert(args, v) end
  end
  redis.call(unpack(args))
end

-- An event about a queue entry (flat fields `e`), plus `extra` {k, v...}.
local function entry_event(kind, at, e, extra)
  local f = {}
  for _, k in ipairs(EVENT_FIELDS) do
    table.insert(f, k) table.insert(f, field(e, k) or '')
  end
  for i = 1, #extra do table.insert(f, extra[i]) end
  emit(kind, at, f)
end

-- File a new, unclaimed entry of a band stream for claims in due order: its
-- due time (ms) in the band's due set (docs/redis-schema.md), and the group
-- told it was delivered (plain XREADGROUP '>' hands out nothing: a claim
-- takes an entry by due time with XCLAIM ... FORCE).
local function file_due(stream, id, fields)
  local due = field(fields, 'due_at')
  local score = due and string.format('%.0f', tonumber(due) * 1000) or '+inf'
  redis.call('ZADD', K.queue_due(stream), score, id)
  pcall(redis.call, 'XGROUP', 'SETID', stream, QUEUE_GROUP, '$')
end

-- Move a waiting (unclaimed) work item, entry `id` of band stream `stream`
-- with fields `e`, to band stream `to` (a band of its queue, or of another
-- queue): a new entry with those fields, the due sets, its overflow deadline
-- (kept when keep_overflow, else dropped), the conversation's `item` (ck) and
-- its first message's `queue_entry` follow. -> the new entry id.
local function move_item(ck, stream, id, to, e, keep_overflow)
  if string.sub(queue_of(to), 1, 1) == '~' then
    pcall(redis.call, 'XGROUP', 'CREATE', to, QUEUE_GROUP, '0', 'MKSTREAM')
  end
  local qid = redis.call('XADD', to, '*', unpack(e))
  redis.call('XDEL', stream, id)
  redis.call('ZREM', K.queue_due(stream), id)
  file_due(to, qid, e)
  local old, new = stream .. ' ' .. id, to .. ' ' .. qid
  local at = redis.call('ZSCORE', K.overflow(), old)
  if at then
    redis.call('ZREM', K.overflow(), old)
    if keep_overflow then redis.call('ZADD', K.overflow(), at, new) end
  end
  redis.call('HSET', ck, 'item', new)
  local first = K.message(field(e, 'message_id') or '')
  if redis.call('EXISTS', first) == 1 then redis.call('HSET', first, 'queue_entry', new) end
  return qid
end

-- The SLA watch (docs/redis-schema.md): watch a new work item's
-- first-response target, its due time (s) `due`, for conversation `cid`.
local function file_sla(cid, due)
  if not due or not tonumber(due) then return end
  redis.call('ZADD', K.sla(), string.format('%.0f', tonumber(due) * 1000),
             'first_response ' .. cid)
end

-- A customer message at `now` (s) that follows an agent reply starts a
-- next-response target: the SLA watch computes its due time in business time
-- (router/sla.py) and watches it like a first response.
local function file_next_response(ck, cid, now)
  redis.call('HSET', ck, 'next_response_from', now)
  redis.call('HDEL', ck, 'next_response_due_at', 'breached_next_response')
  redis.call('ZADD', K.sla(), string.format('%.0f', tonumber(now) * 1000),
             'next_response ' .. cid)
end

-- The flat field list `count, k1, v1, k2, v2...` that starts at ARGV[at].
local function argv_fields(at)
  local f = {}
  for j = 1, tonumber(ARGV[at]) * 2 do f[j] = ARGV[at + j] end
  return f
end

