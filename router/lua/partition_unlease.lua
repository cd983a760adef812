-- Let go of partitions.
-- KEYS: lease keys, then the nodes zset; ARGV[1]: node id
for i = 1, #KEYS - 1 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('ZREM', KEYS[#KEYS], ARGV[1])
return 1
