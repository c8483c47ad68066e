-- dialguard dnc: add or remove fingerprints in one bucket of a DNC list.
-- A bucket is a string of 5-byte records (40-bit fingerprints); membership is
-- an aligned plain find, so no ordering (and no locale) is involved.
-- KEYS[1]: bucket, KEYS[2]: the list's entry counter
-- ARGV[1]: 'add' | 'remove', ARGV[2]: concatenated 5-byte records
local REC = 5

local function find(s, rec)
  local init = 1
  while true do
    local pos = string.find(s, rec, init, true)
    if not pos then return nil end
    if (pos - 1) % REC == 0 then return pos end
    init = pos + 1
  end
end

local s = redis.call('GET', KEYS[1]) or ''
local recs = ARGV[2]
local changed = 0
if ARGV[1] == 'add' then
  local add = {}
  for i = 1, #recs, REC do
    local r = string.sub(recs, i, i + REC - 1)
    if not find(s, r) then
      s = s .. r
      changed = changed + 1
    end
  end
elseif ARGV[1] == 'remove' then
  for i = 1, #recs, REC do
    local r = string.sub(recs, i, i + REC - 1)
    local pos = find(s, r)
    if pos then
      s = string.sub(s, 1, pos - 1) .. string.sub(s, pos + REC)
      changed = changed + 1
    end
  end
else
  return redis.error_reply('unknown op ' .. tostring(ARGV[1]))
end
if changed > 0 then
  if #s == 0 then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], s) end
  redis.call('INCRBY', KEYS[2], ARGV[1] == 'add' and changed or -changed)
end
return changed
