-- Outbox: move retries that are due back into the stream.
-- KEYS: delayed zset, outbox stream; ARGV: now (ms), max count
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'o', payload)
  redis.call('ZREM', KEYS[1], payload)
end
return #due
