-- Commit routed messages. For each: queue entry, message, customer,
-- conversation, timeline, thread references and the ingest ack, all
-- together. A redelivered ingest entry whose message was already committed
-- is only acked (idempotent), so no message is ever queued twice.
-- Also, per item: when the target has a wait timeout, the queue entry is
-- added to the overflow sorted set (score = when it moves on, ms); when the
-- decision carries an acknowledgement, it is added to the outbox.
-- ARGV[1]: key prefix; ARGV[2]: now (s); ARGV[3]: conversation window (s);
-- ARGV[4]: message retention (s);
-- ARGV[5]: JSON list of items, each an object with the fields of
--          router.pipeline.CommitItem (its docstring says what each one is)
-- One conversation, one work item: while the conversation's queue entry
-- (`item` on the conversation hash, "<stream> <entry id>") is still in its
-- stream, a customer message joins it instead of making a second entry:
-- `item_message_count` and `item_last_message_id` are updated, its owner
-- keeps it, its due time stays. A more urgent band (rules, repeat contact)
-- moves a waiting (unclaimed) entry to that band of its queue; a claimed one
-- stays with its owner. Priority is never lowered.
-- Events (prelude's emit): `reopened` when a customer message reopens a
-- resolved conversation, `queued` when a new work item is queued; the
-- conversation records `queued_at` (and the new item's claim and ack times
-- start empty), and its first-response due time is filed in {p}sla for the
-- SLA watch (router/sla.py). A redelivered message returns before any of it:
-- no event twice.
-- -> per item {1 routed | 2 joined the live work item | 0 already routed |
--              -1 error, queue entry or error, conversation id}
P = ARGV[1]
local now_s = ARGV[2]
local now, window, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local overflow, outbox = K.overflow(), K.outbox()
local acks = {}  -- stream -> ids to XACK + XDEL together at the end
local function ack(stream, id)
  local l = acks[stream]
  if not l then l = {} acks[stream] = l end
  table.insert(l, id)
end
local function set(pairs, key, value)
  for i = 1, #pairs, 2 do if pairs[i] == key then pairs[i + 1] = value return end end
end
local function without(pairs, drop)
  local out = {}
  for i = 1, #pairs, 2 do
    if not drop[pairs[i]] then table.insert(out, pairs[i]) table.insert(out, pairs[i + 1]) end
  end
  return out
end

-- The threading rule (router/profiles/context.py) once more, at the one
-- moment it is atomic: two messages of one customer routed at once by two
-- workers may both have seen no conversation. The second to commit joins
-- the conversation the first just opened instead of starting another (and
-- sends no second acknowledgement).
local function join_just_opened(item)
  if not item.new_conversation then return end
  local open = redis.call('HGET', K.customer(item.customer_id), 'open_conversation')
  if not open or open == item.conversation_id then return end
  local la = tonumber(redis.call('HGET', K.conversation(open), 'last_activity') or 0)
  if now - la > window then return end
  item.conversation_id, item.new_conversation, item.acknowledgement = open, false, ''
  item.conversation = without(item.conversation, {created_at = true, subject = true})
  set(item.conversation, 'id', open)
  set(item.queue_entry, 'conversation_id', open)
  set(item.message, 'conversation_id', open)
  set(item.customer, 'open_conversation', open)
end

-- The conversation's live work item: its stream and entry id, or nil.
local function live_item(ck)
  local it = redis.call('HGET', ck, 'item')
  if not it then return nil end
  local stream, id = string.match(it, '^(%S+) (%S+)$')
  if stream and #redis.call('XRANGE', stream, id, id) > 0 then return stream, id end
  return nil
end

-- Join `item` (a message) to the live work item (stream, id) of conversation
-- key ck: count it, raise the band if it says so and nobody holds the entry.
-- -> the work item's stream and entry id (moved or not).
local function join_item(item, ck, stream, id)
  local n = redis.call('HINCRBY', ck, 'item_message_count', 1)
  redis.call('HSET', ck, 'item_last_message_id', item.message_id)
  local band = tonumber(string.match(stream, ':p(%d+)$'))
  local qname = redis.call('HGET', ck, 'item_queue')
  if not band or not qname or item.band >= band then return stream, id end
  if redis.call('XPENDING', stream, QUEUE_GROUP, id, id, 1)[1] then return stream, id end
  local e = redis.call('XRANGE', stream, id, id)[1][2]
  set(e, 'priority', field(item.queue_entry, 'priority'))
  local rep = field(item.queue_entry, 'repeat')
  if rep then
    if field(e, 'repeat') then set(e, 'repeat', rep)
    else table.insert(e, 'repeat') table.insert(e, rep) end
  end
  local to = K.queue(qname, item.band)
  return to, move_item(ck, stream, id, to, e, true)
end

local function commit(item)
  local mkey = K.message(item.message_id)
  local done = redis.call('HGET', mkey, 'queue_entry')
  if done then
    ack(item.ingest_stream, item.entry_id)
    return {0, done, redis.call('HGET', mkey, 'conversation_id') or ''}
  end
  join_just_opened(item)
  local cid, quiet = item.conversation_id, item.quiet
  local ck, custk = K.conversation(cid), K.customer(item.customer_id)
  local stream = K.queue(item.queue, item.band)
  local qid = ''
  local joined = false
  -- a customer message that follows an agent reply starts a next-response target
  local follows_reply = not quiet and not item.new_conversation
    and redis.call('HEXISTS', ck, 'last_response_at') == 1
    and (tonumber(redis.call('HGET', ck, 'inbound_since_reply') or '0') or 0) == 0
  local reopening = not quiet and not item.new_conversation
    and redis.call('HGET', ck, 'status') == 'resolved'
  if reopening then
    emit('reopened', now_s, {'conversation_id', cid, 'customer_id', item.customer_id,
      'channel', item.channel, 'language', field(item.queue_entry, 'language') or '',
      'queue', redis.call('HGET', ck, 'queue') or '', 'message_id', item.message_id})
  end
  if not quiet and not item.new_conversation then
    local s, id = live_item(ck)
    if s then stream, qid = join_item(item, ck, s, id) joined = true end
  end
  if quiet then
    redis.call('HSET', mkey, 'queue_entry', 'none', unpack(item.message))
  elseif joined then
    redis.call('HSET', mkey, unpack(item.message))
    redis.call('HSET', mkey, 'queue_entry', stream .. ' ' .. qid, 'joined', '1')
  else
    if item.personal then
      pcall(redis.call, 'XGROUP', 'CREATE', stream, QUEUE_GROUP, '0', 'MKSTREAM')
    end
    qid = redis.call('XADD', stream, '*', unpack(item.queue_entry))
    file_due(stream, qid, item.queue_entry)
    redis.call('HSET', mkey, 'queue_entry', stream .. ' ' .. qid, unpack(item.message))
    redis.call('HSET', ck, 'item', stream .. ' ' .. qid, 'item_queue', item.queue,
               'item_message_count', 1, 'item_last_message_id', item.message_id,
               'queued_at', now_s)
    redis.call('HDEL', ck, 'item_claimed_at', 'item_acked_at', 'breached_first_response')
    file_sla(cid, field(item.queue_entry, 'due_at'))
    entry_event('queued', now_s, item.queue_entry, {'queue', item.queue,
      'agent', field(item.queue_entry, 'agent') or '',
      'due_at', field(item.queue_entry, 'due_at') or ''})
  end
  redis.call('EXPIRE', mkey, retention)
  redis.call('HSET', custk, unpack(item.customer))
  redis.call('HSETNX', custk, 'first_seen', now_s)
  redis.call('HINCRBY', custk, 'message_count', 1)
  for i = 1, #item.queue_entry, 2 do
    if item.queue_entry[i] == 'repeat' then redis.call('HINCRBY', custk, 'repeat_contacts', 1) end
  end
  redis.call('SADD', K.customer_channels(item.customer_id), item.channel)
  if item.new_conversation then
    redis.call('HINCRBY', custk, 'conversation_count', 1)
    redis.call('ZADD', K.customer_conversations(item.customer_id), now_s, cid)
  elseif reopening then
    redis.call('HSET', ck, 'reopened_at', now_s)
    redis.call('HINCRBY', ck, 'reopen_count', 1)
  end
  redis.call('HSET', ck, unpack(item.conversation))
  if joined then  -- the conversation and the message are where its work item is
    local q = redis.call('HGET', ck, 'item_queue')
    if q and string.sub(q, 1, 1) ~= '~' then
      redis.call('HSET', ck, 'queue', q)
      redis.call('HSET', mkey, 'queue', q)
    end
  end
  redis.call('HINCRBY', ck, 'message_count', 1)
  if not quiet then redis.call('HINCRBY', ck, 'inbound_since_reply', 1) end
  if follows_reply then file_next_response(ck, cid, now_s) end
  redis.call('EXPIRE', ck, retention)
  local tk = K.timeline(cid)
  redis.call('XADD', tk, 'MAXLEN', '~', 10000, '*', unpack(item.timeline_entry))
  redis.call('EXPIRE', tk, retention)
  if #item.thread_refs > 0 then
    local refs = K.conversation_refs(cid)
    for _, ref in ipairs(item.thread_refs) do
      local thread = K.thread(item.channel, ref)
      redis.call('SET', thread, cid, 'EX', retention)
      redis.call('SADD', refs, thread)
    end
    redis.call('EXPIRE', refs, retention)
  end
  if item.overflow_at_ms ~= '' and not quiet and not joined then
    redis.call('ZADD', overflow, item.overflow_at_ms, stream .. ' ' .. qid)
  end
  if item.acknowledgement ~= '' and not quiet then
    redis.call('XADD', outbox, '*', 'o', item.acknowledgement)
  end
  ack(item.ingest_stream, item.entry_id)
  return {joined and 2 or 1, qid, cid}
end

local out = {}
for _, item in ipairs(cjson.decode(ARGV[5])) do
  local ok, res = pcall(commit, item)
  if ok then table.insert(out, res)
  else table.insert(out, {-1, tostring(res.err or res), ''}) end
end
for stream, ids in pairs(acks) do
  redis.call('XACK', stream, INGEST_GROUP, unpack(ids))
  redis.call('XDEL', stream, unpack(ids))
end
return out
