-- dialguard dnc: add or remove fingerprints in buckets of one DNC list.
-- A bucket is a string of 5-byte records (40-bit fingerprints); membership is
-- an aligned plain find, so no ordering (and no locale) is involved.
-- KEYS[1..n]: buckets, KEYS[n+1]: the list's entry counter
-- ARGV[1]: 'add' | 'remove', ARGV[1+i]: concatenated 5-byte records for KEYS[i]
-- One call takes many buckets: a bulk import makes a few hundred calls per
-- million numbers instead of one per bucket.
local REC = 5
local op = ARGV[1]
if op ~= 'add' and op ~= 'remove' then
  return redis.error_reply('unknown op ' .. tostring(op))
end
local n = #KEYS - 1
if #ARGV ~= n + 1 then
  return redis.error_reply('dnc: ' .. n .. ' buckets but ' .. (#ARGV - 1) .. ' record strings')
end

local function find(s, rec)
  local init = 1
  while true do
    local pos = string.find(s, rec, init, true)
    if not pos then return nil end
    if (pos - 1) % REC == 0 then return pos end
    init = pos + 1
  end
end

local total = 0
for k = 1, n do
  local s = redis.call('GET', KEYS[k]) or ''
  local recs = ARGV[k + 1]
  local changed = 0
  if op == 'add' then
    -- new records are collected and appended once (one copy of the bucket)
    local new, seen = {}, {}
    for i = 1, #recs, REC do
      local r = string.sub(recs, i, i + REC - 1)
      if not seen[r] and not find(s, r) then
        seen[r] = true
        changed = changed + 1
        new[changed] = r
      end
    end
    if changed > 0 then s = s .. table.concat(new) end
  else
    for i = 1, #recs, REC do
      local r = string.sub(recs, i, i + REC - 1)
      local pos = find(s, r)
      if pos then
        s = string.sub(s, 1, pos - 1) .. string.sub(s, pos + REC)
        changed = changed + 1
      end
    end
  end
  if changed > 0 then
    if #s == 0 then redis.call('DEL', KEYS[k]) else redis.call('SET', KEYS[k], s) end
    total = total + changed
  end
end
if total > 0 then
  redis.call('INCRBY', KEYS[n + 1], op == 'add' and total or -total)
end
return total
