-- dialguard outcome: apply a call's reported outcome atomically.
-- Releases the caller-ID concurrency lease, takes the attempt back out of the
-- counts when the outcome is one a rule may not count (busy, failed, ...),
-- starts quiet periods (conversation, abandoned, answering machine) and
-- appends the outcome to the audit stream. Reporting twice changes nothing.
--
-- KEYS[1]: call record hash, KEYS[2]: audit stream
-- ARGV: result, now_ms, movable(0/1), conversation(0/1), abandon('ab'|'am'|''),
--       quiet_ttl_ms, audit payload JSON, outcome id,
--       extra conversation key suffix ('cv:s:<subject tag>' or ''): a conversation
--       in one call about several subjects (debts) starts each one's quiet period

local result, now, movable, conv, abandon, qttl, payload, oid, extra =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local function words(s)
  local out = {}
  if s then for w in string.gmatch(s, '%S+') do out[#out + 1] = w end end
  return out
end

local rec = redis.call('HMGET', KEYS[1], 'did', 'rep', 'ak', 'cv', 'ab', 'am', 'lv', 'nk')
local did = rec[1]
if not did then
  redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', '', 'res', result, 'j', payload)
  return {0, ''}
end

local function extra_conversation()
  if conv == '1' and extra and extra ~= '' and rec[8] and rec[8] ~= '' then
    local k = rec[8] .. ':' .. extra
    redis.call('ZADD', k, now, did)
    redis.call('PEXPIRE', k, qttl)
    return true
  end
  return false
end

if rec[2] == '1' then
  -- already reported: only another subject's conversation may still be added
  if extra_conversation() then
    redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', did, 'res', result, 'j', payload)
    return {3, did}
  end
  return {2, did}
end
extra_conversation()

if movable == '1' then
  for _, k in ipairs(words(rec[3])) do
    local score = redis.call('ZSCORE', k, did)
    if score then
      local ttl = redis.call('PTTL', k)
      redis.call('ZREM', k, did)
      local xk = k .. ':x'
      redis.call('ZADD', xk, score, result .. '|' .. did)
      if ttl > 0 then redis.call('PEXPIRE', xk, ttl) end
    end
  end
end

if rec[7] and rec[7] ~= '' then
  redis.call('ZREM', rec[7], did)
end

if conv == '1' then
  for _, k in ipairs(words(rec[4])) do
    redis.call('ZADD', k, now, did)
    redis.call('PEXPIRE', k, qttl)
  end
end

if abandon == 'ab' and rec[5] and rec[5] ~= '' then
  redis.call('ZADD', rec[5], now, did)
  redis.call('PEXPIRE', rec[5], qttl)
elseif abandon == 'am' and rec[6] and rec[6] ~= '' then
  redis.call('ZADD', rec[6], now, did)
  redis.call('PEXPIRE', rec[6], qttl)
end

redis.call('HSET', KEYS[1], 'rep', '1', 'res', result)
redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', did, 'res', result, 'j', payload)
return {1, did}
