-- Hold or take leases (an adapter's poller: one daemon polls X at a time).
-- KEYS: lease keys; ARGV: node id, ttl (ms) -> {1 held | 0 held by another, ...}
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
