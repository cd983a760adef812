-- Hold a fair share of the ingest partitions: every routing daemon
-- heartbeats in the nodes sorted set; each holds at most
-- ceil(partitions / live nodes), renews those, lets go of the rest (another
-- node takes them on its next renewal) and takes free ones up to its share.
-- Time is Redis's own (TIME), so hosts' clocks do not matter.
-- A draining node (stopping: ARGV[3] = "drain") keeps what it holds until
-- it has routed what is there, takes nothing new, and leaves the nodes set at
-- once, so the others' shares grow to cover the rest.
-- KEYS: the partitions' lease keys, in partition order, then the nodes zset
-- ARGV[1]: node id; ARGV[2]: ttl (ms); ARGV[3]: "drain" or absent
-- -> per partition: 1 held, 0 not ours, 2 let go now (rebalancing)
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
