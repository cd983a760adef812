-- Claim the most urgent entry of a queue for an agent (public: agent tools
-- EVALSHA it; its contract is in docs/redis-schema.md).
-- KEYS: the band streams to look in, most urgent first
-- ARGV: group, agent, visibility timeout (ms), [key prefix]
-- Per band: first an entry whose claim expired (or was released), then the
-- unclaimed entry due soonest (the band's due set; ties by arrival), taken
-- with XCLAIM ... FORCE. With the key prefix, the agent becomes the owner of the entry's
-- conversation (follow-ups come back to them while they are online), and the
-- reply carries the work item's live `message_count` and `last_message_id`
-- (follow-ups join the entry: docs/redis-schema.md); the conversation records
-- `first_claimed_at` and `item_claimed_at`, and a `claimed` event is appended
-- to {p}events.
-- -> {stream key, entry id, delivery count, field, value, ...} or nil
local group, agent, vis = ARGV[1], ARGV[2], ARGV[3]
P = ARGV[4]
local function own(key, id, fields, out)
  if not P then return end
  local now = server_now()
  local ck = K.conversation(field(fields, 'conversation_id') or '')
  if redis.call('EXISTS', ck) == 1 then
    redis.call('HSET', ck, 'owner', agent, 'owned_at', now)
    redis.call('HSETNX', ck, 'first_claimed_at', now)
    local it = redis.call('HMGET', ck, 'item', 'item_message_count', 'item_last_message_id')
    if it[1] == key .. ' ' .. id then
      redis.call('HSETNX', ck, 'item_claimed_at', now)
      if it[2] then
        table.insert(out, 'message_count') table.insert(out, it[2])
        table.insert(out, 'last_message_id') table.insert(out, it[3])
      end
    end
  end
  entry_event('claimed', now, fields, {'queue', queue_of(key), 'agent', agent,
    'entry_id', id, 'deliveries', tostring(out[3])})
end
-- The member of a due set due soonest; among equal due times the earliest
-- entry id (compared as numbers: "…-10" came after "…-9").
local function soonest(due)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if not first[1] then return nil end
  local best, bms, bseq
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, first[2], first[2], 'LIMIT', 0, 100)) do
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    if ms and (not best or ms < bms or (ms == bms and seq < bseq)) then
      best, bms, bseq = id, ms, seq
    end
  end
  return best or first[1]
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
          own(key, id, e[2], out)
          return out
        end
        redis.call('XACK', key, group, id)
      end
      cursor = r[1]
      if cursor == '0-0' then break end
    end
    local due = K.queue_due(key)
    for _ = 1, 100 do
      local id = soonest(due)
      if not id then break end
      redis.call('ZREM', due, id)
      -- (an entry deleted meanwhile, or already held, is only dropped from the set)
      if not redis.call('XPENDING', key, group, id, id, 1)[1] then
        local e = redis.call('XCLAIM', key, group, agent, 0, id, 'RETRYCOUNT', 1, 'FORCE')[1]
        if e and e[2] then
          local out = {key, id, 1}
          for _, x in ipairs(e[2]) do table.insert(out, x) end
          own(key, id, e[2], out)
          return out
        end
      end
    end
  end
end
return nil
