-- Store messages from adapters, each once per (channel, source id).
-- ARGV[1]: dedup ttl (s)
-- ARGV[2]: JSON [[dedup key or "", stream, message id, payload]...]
-- -> {message id, 0 new | 1 duplicate, ...} (two values per item)
local ttl = ARGV[1]
local out = {}
for _, it in ipairs(cjson.decode(ARGV[2])) do
  local existing = false
  if it[1] ~= '' then
    existing = redis.call('GET', it[1])
    if not existing then redis.call('SET', it[1], it[3], 'EX', ttl) end
  end
  if existing then
    table.insert(out, existing)
    table.insert(out, 1)
  else
    redis.call('XADD', it[2], '*', 'm', it[4])
    table.insert(out, it[3])
    table.insert(out, 0)
  end
end
return out
