-- Finish a claimed entry: ack and delete (public: agent tools EVALSHA it).
-- KEYS: band stream; ARGV: group, agent, id
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
