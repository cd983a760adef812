-- Finish a claimed entry: ack and delete (public: agent tools EVALSHA it).
-- KEYS: band stream; ARGV: group, agent, id, [key prefix]
-- With the key prefix: the conversation records `item_acked_at` (when this
-- is its work item) and an `acked` event is appended to {p}events; and the
-- queue's rolling handle time ({p}handle:{QUEUE}, docs/redis-schema.md) takes
-- this work item's claim -> ack time (from the conversation's
-- `item_claimed_at`; none when it was transferred after that claim).
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
P = ARGV[4]
local HANDLE_ALPHA = 0.2  -- weight of the newest handle time in the rolling mean
if P then
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])[1]
  if e then
    local now = server_now()
    local ck = K.conversation(field(e[2], 'conversation_id') or '')
    if redis.call('HGET', ck, 'item') == KEYS[1] .. ' ' .. ARGV[3] then
      redis.call('HSET', ck, 'item_acked_at', now)
      local claimed = tonumber(redis.call('HGET', ck, 'item_claimed_at') or '')
      local moved = tonumber(field(e[2], 'transferred_at') or '')
      if claimed and not (moved and moved > claimed) then
        local took = tonumber(now) - claimed
        if took >= 0 then
          local hk = K.handle_time(queue_of(KEYS[1]))
          local h = redis.call('HMGET', hk, 'mean', 'count')
          local mean, n = tonumber(h[1] or ''), tonumber(h[2] or '') or 0
          if mean then mean = mean + HANDLE_ALPHA * (took - mean) else mean = took end
          redis.call('HSET', hk, 'mean', string.format('%.3f', mean), 'count', n + 1,
                     'last', string.format('%.3f', took), 'updated_at', now)
        end
      end
    end
    entry_event('acked', now, e[2], {'queue', queue_of(KEYS[1]), 'agent', ARGV[2],
      'entry_id', ARGV[3]})
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
