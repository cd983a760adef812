-- File the waiting entries of a band stream that no due set holds yet
-- (queued before schema 2, or added by a tool with a plain XADD): each entry
-- after the group's last delivered id goes into the band's due set, and the
-- group's last delivered id moves to the end (prelude's file_due). Run by
-- every daemon at start; a second run finds nothing to do.
-- KEYS: band stream -> how many entries were filed
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local last
for _, g in ipairs(groups) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  if name == QUEUE_GROUP then last = delivered end
end
if not last then return 0 end
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+')) do
  file_due(KEYS[1], e[1], e[2])
  n = n + 1
end
return n
