-- dialguard event: a per-number fact (opt-out, complaint, consent, DNC) set or
-- cleared together with its audit record, atomically.
-- KEYS[1]: number flags hash, KEYS[2]: campaign DNC set, KEYS[3]: audit stream
-- ARGV: op ('set'|'clear'|'camp_add'|'camp_del'), field, value, payload JSON, event id, kind

local op, field, value, payload, eid, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local changed = 0
if op == 'set' then
  changed = redis.call('HSET', KEYS[1], field, value)
elseif op == 'clear' then
  changed = redis.call('HDEL', KEYS[1], field)
elseif op == 'camp_add' then
  changed = redis.call('SADD', KEYS[2], field)
elseif op == 'camp_del' then
  changed = redis.call('SREM', KEYS[2], field)
else
  return redis.error_reply('unknown op ' .. tostring(op))
end
redis.call('XADD', KEYS[3], '*', 't', 'event', 'id', eid, 'kind', kind, 'j', payload)
return changed
