-- Overflow: move a queue entry nobody claimed in time to its next target
-- (from its band's due set to the new band's too).
-- KEYS: old band stream, new band stream, overflow zset, message hash,
--       conversation hash (its `item` follows the entry)
-- ARGV: group, entry id, overflow member, new entry fields JSON [k, v...],
--       next overflow score (ms) or "", new queue name, key prefix
-- An `overflowed` event (queue = the new one, from_queue) goes to {p}events.
-- -> {1, new entry id} | {0, "gone" | "claimed"}
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {0, 'gone'}
end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p[1] then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {0, 'claimed'}
end
local fields = cjson.decode(ARGV[4])
local qid = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', K.queue_due(KEYS[1]), ARGV[2])
file_due(KEYS[2], qid, fields)
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], KEYS[2] .. ' ' .. qid) end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'queue_entry', KEYS[2] .. ' ' .. qid, 'queue', ARGV[6])
end
if KEYS[5] and redis.call('HGET', KEYS[5], 'item') == KEYS[1] .. ' ' .. ARGV[2] then
  redis.call('HSET', KEYS[5], 'item', KEYS[2] .. ' ' .. qid, 'item_queue', ARGV[6])
end
P = ARGV[7]
if P then
  entry_event('overflowed', server_now(), fields, {'queue', ARGV[6],
    'from_queue', queue_of(KEYS[1]), 'entry_id', qid})
end
return {1, qid}
