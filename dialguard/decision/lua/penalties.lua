-- dialguard penalties: the caller-ID pick penalties of a store written before they
-- had a hash of their own ('pen' of each caller ID's health hash '{c:<K>}:h') copied
-- into the one hash decide.lua reads ('{g}:cidpen': tag -> "<pen>|<until ms>"), where
-- that holds nothing for the caller ID yet (what outcome.lua wrote there is newer).
-- The engine runs it once per caller ID of the pools it loads (Decider._context).
-- KEYS[1]: the penalties hash; KEYS[2..n]: the health hashes; ARGV[1]: now (ms, rules
-- clock); ARGV[2..n]: the caller IDs' tags, in KEYS' order. Returns how many it copied.

local now = tonumber(ARGV[1])
local copied = 0
for i = 2, #KEYS do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    local pen = tonumber(redis.call('HGET', KEYS[i], 'pen') or '')
    if pen and pen > 0 then
      -- it lapses when the health hash would have expired
      local ttl = redis.call('PTTL', KEYS[i])
      if ttl > 0 then
        redis.call('HSET', KEYS[1], ARGV[i], string.format('%.3f|%d', pen, now + ttl))
        copied = copied + 1
      end
    end
  end
end
return copied
