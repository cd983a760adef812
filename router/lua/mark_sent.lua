-- Outbox: delivered.
-- KEYS: outbox stream, delivery hash
-- ARGV: group, entry id, then delivery fields (count, k, v...)
redis.call('HSET', KEYS[2], unpack(argv_fields(3)))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
