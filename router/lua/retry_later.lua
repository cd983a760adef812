-- Outbox: a send failed, retry later.
-- KEYS: outbox stream, delayed zset, delivery hash
-- ARGV: group, entry id, due (ms), payload, attempts, error
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], 'status', 'retrying', 'attempts', ARGV[5], 'last_error', ARGV[6],
           'next_attempt_at', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
