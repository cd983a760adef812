-- Finish a claimed entry: ack and delete (public: agent tools EVALSHA it).
-- KEYS: band stream; ARGV: group, agent, id, [key prefix]
-- With the key prefix: the conversation records `item_acked_at` (when this
-- is its work item) and an `acked` event is appended to {p}events.
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
P = ARGV[4]
if P then
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])[1]
  if e then
    local now = server_now()
    local ck = K.conversation(field(e[2], 'conversation_id') or '')
    if redis.call('HGET', ck, 'item') == KEYS[1] .. ' ' .. ARGV[3] then
      redis.call('HSET', ck, 'item_acked_at', now)
    end
    entry_event('acked', now, e[2], {'queue', queue_of(KEYS[1]), 'agent', ARGV[2],
      'entry_id', ARGV[3]})
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
