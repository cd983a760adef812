-- Dead-letter replay: put the payload back where it came from, atomically.
-- KEYS: dead-letter stream, target stream; ARGV: dead-letter id, field, payload
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return nil end
return redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
