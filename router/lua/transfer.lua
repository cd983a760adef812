-- Transfer a conversation's live work item to another queue, or straight to
-- an agent's own queue (public: agent tools EVALSHA it; its contract is in
-- docs/redis-schema.md, "Transfer").
-- KEYS: the conversation hash
-- ARGV: target queue (one of {p}queues), agent ('' = the queue itself; else
--       the entry goes to the agent's own queue `~AGENT`, with `fallback_queue`
--       = the target queue), note ('' = none), who transfers ('' = unknown),
--       key prefix
-- The entry keeps its fields, band and `due_at` (new entry id; `queued_at`
-- kept); any claim on it is released (the new entry is unclaimed, filed in
-- its band's due set); its overflow deadline is dropped. The conversation's
-- `item`, `item_queue` and `queue` follow, and so does its first message's
-- `queue_entry`. The timeline gets an entry `direction=event
-- type=transferred` (with the note), {p}events a `transferred` event (the
-- note's length, not its text).
-- -> {new stream, new entry id, from queue} | error "no live work item ...",
--    "unknown queue ...", "already in queue ...", "no conversation ..."
local ck, target, agent, note, by = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
P = ARGV[5] or ''
if redis.call('EXISTS', ck) == 0 then
  return redis.error_reply('no conversation ' .. ck .. ' (or it has expired)')
end
if redis.call('HEXISTS', K.queues(), target) == 0 then
  local known = redis.call('HKEYS', K.queues())
  table.sort(known)
  return redis.error_reply('unknown queue ' .. target .. '; known queues: '
    .. table.concat(known, ', '))
end
local it = redis.call('HGET', ck, 'item')
local stream, id
if it then stream, id = string.match(it, '^(%S+) (%S+)$') end
local e = stream and redis.call('XRANGE', stream, id, id)[1]
if not e then
  return redis.error_reply('no live work item: nothing of this conversation waits in a queue'
    .. ' (acknowledged already, or never queued)')
end
local from = queue_of(stream)
local to_queue = target
if agent ~= '' then to_queue = '~' .. agent end
if to_queue == from then
  return redis.error_reply('already in queue ' .. from)
end
local now = server_now()
local band = string.match(stream, ':p(%d+)$')
local to = K.queue(to_queue, tonumber(band))
pcall(redis.call, 'XGROUP', 'CREATE', to, QUEUE_GROUP, '0', 'MKSTREAM')
-- the entry's fields, without a former owner's sticky fields or transfer marks
local DROP = {agent = true, fallback_queue = true, transferred_from = true,
              transferred_at = true}
local fields = {}
for i = 1, #e[2], 2 do
  if not DROP[e[2][i]] then
    table.insert(fields, e[2][i]) table.insert(fields, e[2][i + 1])
  end
end
table.insert(fields, 'transferred_from') table.insert(fields, from)
table.insert(fields, 'transferred_at') table.insert(fields, now)
if agent ~= '' then
  table.insert(fields, 'agent') table.insert(fields, agent)
  table.insert(fields, 'fallback_queue') table.insert(fields, target)
end
local qid = redis.call('XADD', to, '*', unpack(fields))
-- release any claim, then take the old entry out of its stream and due set
redis.call('XACK', stream, QUEUE_GROUP, id)
redis.call('XDEL', stream, id)
redis.call('ZREM', K.queue_due(stream), id)
redis.call('ZREM', K.overflow(), stream .. ' ' .. id)
file_due(to, qid, fields)
local new = to .. ' ' .. qid
redis.call('HSET', ck, 'item', new, 'item_queue', to_queue, 'queue', to_queue)
local first = K.message(field(fields, 'message_id') or '')
if redis.call('EXISTS', first) == 1 then
  redis.call('HSET', first, 'queue_entry', new, 'queue', to_queue)
end
local conv_id = field(fields, 'conversation_id') or redis.call('HGET', ck, 'id') or ''
local tl = {'XADD', K.timeline(conv_id), 'MAXLEN', '~', 10000, '*', 'direction', 'event',
            'type', 'transferred', 'at', now, 'from_queue', from, 'queue', to_queue}
if agent ~= '' then table.insert(tl, 'agent') table.insert(tl, agent) end
if by ~= '' then table.insert(tl, 'by') table.insert(tl, by) end
if note ~= '' then table.insert(tl, 'note') table.insert(tl, note) end
redis.call(unpack(tl))
entry_event('transferred', now, fields, {'queue', to_queue, 'from_queue', from,
  'agent', agent, 'by', by, 'entry_id', qid, 'due_at', field(fields, 'due_at') or '',
  'note_length', tostring(#note)})
return {to, qid, from}
