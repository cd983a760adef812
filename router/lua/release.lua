-- Give a claimed entry back to the queue, to be claimed next (public).
-- KEYS: band stream; ARGV: group, agent, id
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XCLAIM', KEYS[1], ARGV[1], '~released', 0, ARGV[3], 'IDLE', 1000000000000, 'JUSTID')
return 1
