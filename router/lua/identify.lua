-- Find the customer behind each message by any of its identities (creating
-- one on first contact, merging two when the message ties them together),
-- and read the profile, their latest conversation and the conversation the
-- message refers to, all in one atomic step.
-- ARGV[1]: now (s); ARGV[2]: key prefix;
-- ARGV[3]: JSON [[[identity "kind:value"...], new customer id, [thread keys...]]...]
-- -> per item {customer id, created 0/1, profiles merged, owner online 0/1,
--              customer fields..., '|', latest conversation fields..., '|',
--              referenced conversation fields...}
local now = ARGV[1]
P = ARGV[2]
local out = {}
for _, it in ipairs(cjson.decode(ARGV[3])) do
  local found, seen, mapped = {}, {}, {}
  for _, ident in ipairs(it[1]) do
    local c = redis.call('GET', identity_key(ident))
    if c then
      c = live(c)
      mapped[ident] = c
      if not seen[c] then seen[c] = true; table.insert(found, c) end
    end
  end
  local id, created, merged = nil, 0, 0
  if #found == 0 then
    id, created = it[2], 1
    redis.call('HSET', K.customer(id), 'id', id, 'created_at', now, 'first_seen', now)
  else
    id = found[1]  -- the oldest profile survives a merge
    for i = 2, #found do
      if tonumber(redis.call('HGET', K.customer(found[i]), 'created_at') or now) <
         tonumber(redis.call('HGET', K.customer(id), 'created_at') or now) then id = found[i] end
    end
    for _, c in ipairs(found) do
      if c ~= id then merge(c, id, 'message', now); merged = merged + 1 end
    end
  end
  for _, ident in ipairs(it[1]) do
    if mapped[ident] ~= id or merged > 0 then
      redis.call('SET', identity_key(ident), id)
      redis.call('SADD', K.customer_identities(id), ident)
    end
  end
  local ck = K.customer(id)
  local customer = redis.call('HGETALL', ck)
  local latest, online = {}, 0
  local conv = redis.call('HGET', ck, 'open_conversation')
  if conv then latest = redis.call('HGETALL', K.conversation(conv)) end
  local referenced = {}
  for _, tk in ipairs(it[3]) do
    local rc = redis.call('GET', tk)
    if rc then
      referenced = redis.call('HGETALL', K.conversation(rc))
      if #referenced > 0 then break end
    end
  end
  for _, c in ipairs({referenced, latest}) do
    for i = 1, #c, 2 do
      if c[i] == 'owner' and redis.call('EXISTS', K.presence(c[i + 1])) == 1 then
        online = 1
      end
    end
    if #c > 0 then break end
  end
  local row = {id, created, merged, online}
  for _, x in ipairs(customer) do table.insert(row, x) end
  table.insert(row, '|')
  for _, x in ipairs(latest) do table.insert(row, x) end
  table.insert(row, '|')
  for _, x in ipairs(referenced) do table.insert(row, x) end
  table.insert(out, row)
end
return out
