-- Give a claimed entry back to the queue, to be claimed next (public).
-- KEYS: band stream; ARGV: group, agent, id, [key prefix]
-- With the key prefix, a `released` event is appended to {p}events.
local err = owner_error(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('XCLAIM', KEYS[1], ARGV[1], '~released', 0, ARGV[3], 'IDLE', 1000000000000, 'JUSTID')
P = ARGV[4]
if P then
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])[1]
  if e then
    entry_event('released', server_now(), e[2], {'queue', queue_of(KEYS[1]),
      'agent', ARGV[2], 'entry_id', ARGV[3]})
  end
end
return 1
