-- Move a stream entry to the dead-letter stream with its reason.
-- KEYS: source stream, dead-letter stream
-- ARGV: group, entry id, then fields (count, k, v...)
local id = redis.call('XADD', KEYS[2], '*', unpack(argv_fields(3)))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
