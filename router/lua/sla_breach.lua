-- SLA watch: a work item's response target passed with no agent reply.
-- Acted on exactly once: the member leaves {p}sla in the same step that
-- records the breach, so another daemon, a retry or a restart finds nothing
-- to do. Re-checked here: the member is still due, the conversation's work
-- item is still in its stream (not acknowledged), and no agent replied since
-- it was queued (`last_response_at` >= `queued_at` on the conversation).
-- The breach: `breached_<target>` (time) on the conversation, an
-- `sla_breached` event, and the escalation the caller computed from
-- `routing.on_breach` (only while nobody holds the item: a claimed one stays
-- with its agent, as with a band raise): the item moves to band stream
-- ARGV[5] (a more urgent band, and/or the on_breach queue) with fields ARGV[6].
-- KEYS: the sla zset, the conversation hash
-- ARGV: key prefix, member ("<target> <conversation id>"), now (s),
--       the work item the caller read ("<stream> <entry id>"),
--       destination band stream or "" (no escalation), its entry fields JSON
--       [k, v...], destination queue name, raised priority or ""
--       mode: "" (act), "drop" (no such target configured: forget the member),
--       "schedule" (a next-response target: its due time is computed);
--       for "schedule": the `next_response_from` read, the due time (s);
--       "1" when a first-response target is superseded by a next-response
--       one (the item was queued by a message that follows an agent reply)
-- Target `next_response` counts from `next_response_from` (a customer
-- message after an agent reply) to `next_response_due_at`, not from
-- `queued_at` to the item's `due_at`.
-- -> {1, queue, escalated 1|0} | {0, "gone" | "not due" | "done" | "answered" |
--     "moved" | "unwatched" | "scheduled" | "superseded"}
P = ARGV[1]
local sla, ck, member, now = KEYS[1], KEYS[2], ARGV[2], ARGV[3]
local mode = ARGV[9] or ''
local target = string.match(member, '^(%S+) ') or 'first_response'
local score = redis.call('ZSCORE', sla, member)
if not score then return {0, 'gone'} end
if mode == 'drop' then
  redis.call('ZREM', sla, member)
  return {0, 'unwatched'}
end
if mode == 'schedule' then
  if redis.call('HGET', ck, 'next_response_from') ~= ARGV[10] then return {0, 'moved'} end
  redis.call('HSET', ck, 'next_response_due_at', ARGV[11])
  redis.call('ZADD', sla, string.format('%.0f', tonumber(ARGV[11]) * 1000), member)
  return {0, 'scheduled'}
end
if tonumber(score) > tonumber(now) * 1000 then return {0, 'not due'} end
local it = redis.call('HGET', ck, 'item')
local stream, id
if it then stream, id = string.match(it, '^(%S+) (%S+)$') end
local rows = stream and redis.call('XRANGE', stream, id, id) or {}
if #rows == 0 then
  redis.call('ZREM', sla, member)
  return {0, 'done'}
end
if it ~= ARGV[4] then return {0, 'moved'} end  -- moved meanwhile: the next look acts
local queued = tonumber(redis.call('HGET', ck, 'queued_at') or '') or 0
local next_from = tonumber(redis.call('HGET', ck, 'next_response_from') or '')
local since, due_at = queued, nil
if target == 'next_response' then
  if not next_from then
    redis.call('ZREM', sla, member)
    return {0, 'unwatched'}
  end
  if not redis.call('HGET', ck, 'next_response_due_at') then
    return {0, 'moved'}  -- not scheduled yet: the next look does it
  end
  since, due_at = next_from, redis.call('HGET', ck, 'next_response_due_at')
elseif ARGV[12] == '1' and next_from and next_from >= queued then
  redis.call('ZREM', sla, member)
  return {0, 'superseded'}
end
local replied = tonumber(redis.call('HGET', ck, 'last_response_at') or '') or 0
if replied > 0 and replied >= since then
  redis.call('ZREM', sla, member)
  return {0, 'answered'}
end
redis.call('ZREM', sla, member)
redis.call('HSET', ck, 'breached_' .. target, now)
local e = rows[1][2]
local qname = queue_of(stream)
local extra = {'queue', qname, 'target', target, 'due_at', due_at or field(e, 'due_at') or ''}
local escalated, entry = 0, id
if ARGV[5] ~= '' and ARGV[5] ~= stream
    and not redis.call('XPENDING', stream, QUEUE_GROUP, id, id, 1)[1] then
  local dest = ARGV[7]
  entry = move_item(ck, stream, id, ARGV[5], cjson.decode(ARGV[6]), dest == qname)
  if dest ~= qname then
    redis.call('HSET', ck, 'item_queue', dest)
    if string.sub(dest, 1, 1) ~= '~' then
      redis.call('HSET', ck, 'queue', dest)
      local first = K.message(field(e, 'message_id') or '')
      if redis.call('EXISTS', first) == 1 then redis.call('HSET', first, 'queue', dest) end
    end
    table.insert(extra, 'moved_to') table.insert(extra, dest)
  end
  if ARGV[8] ~= '' then table.insert(extra, 'raised_to') table.insert(extra, ARGV[8]) end
  escalated = 1
end
table.insert(extra, 'entry_id') table.insert(extra, entry)
entry_event('sla_breached', now, e, extra)
return {1, qname, escalated}
