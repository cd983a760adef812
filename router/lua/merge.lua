-- Merge customer A into B by hand (`router customer merge`).
-- ARGV[1]: now; ARGV[2]: key prefix; ARGV[3]: from id; ARGV[4]: into id; ARGV[5]: by
P = ARGV[2]
local from, into = live(ARGV[3]), live(ARGV[4])
for _, c in ipairs({from, into}) do
  if redis.call('EXISTS', K.customer(c)) == 0 then return redis.error_reply('no customer ' .. c) end
end
if from == into then
  return redis.error_reply(ARGV[3] .. ' and ' .. ARGV[4] .. ' are already one customer')
end
merge(from, into, ARGV[5], ARGV[1])
return into
