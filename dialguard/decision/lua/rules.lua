-- dialguard rules: publish a rules version, atomically with its audit record.
-- Every decision checks the active/shadow versions inside decide.lua, so once
-- this script has run no node decides under the previous version (a node with
-- a stale copy is told so by the script and reloads before deciding).
--
-- KEYS[1]: rules hash {seq, active, shadow, v:<N> = bundle JSON, m:<N> = who/why/when JSON}
-- KEYS[2]: audit stream
-- ARGV: op ('apply'|'activate'|'shadow_off'), mode ('active'|'shadow'),
--       bundle JSON object without its version (apply) or a version (activate),
--       record id, record tail JSON object {"actor":..,"why":..,"at":..,"node":..}
-- Returns the version now in effect for the mode (0 for shadow_off), or an error.

local op, mode, arg, rid, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if mode ~= 'active' and mode ~= 'shadow' then
  return redis.error_reply('mode must be active or shadow')
end

local function record(version, rmode, bundle)
  -- {"version":N,"mode":..., <bundle fields>, <tail fields>}
  local body = '{"version":' .. version .. ',"mode":"' .. rmode .. '"'
  if bundle and #bundle > 2 then body = body .. ',' .. string.sub(bundle, 2, -2) end
  if #tail > 2 then body = body .. ',' .. string.sub(tail, 2, -2) end
  redis.call('XADD', KEYS[2], '*', 't', 'rules', 'id', rid, 'j', body .. '}')
end

if op == 'apply' then
  local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local bundle = '{"version":' .. n .. ',' .. string.sub(arg, 2)
  redis.call('HSET', KEYS[1], 'v:' .. n, bundle, 'm:' .. n, tail, mode, n)
  record(n, mode, arg)
  return n
elseif op == 'activate' then
  local bundle = redis.call('HGET', KEYS[1], 'v:' .. arg)
  if not bundle then return redis.error_reply('no rules version ' .. arg) end
  redis.call('HSET', KEYS[1], mode, arg)
  -- the stored bundle already names its version: drop it from the copy
  local rest = string.gsub(bundle, '^{"version":%d+,', '{', 1)
  record(tonumber(arg), mode, rest)
  return tonumber(arg)
elseif op == 'shadow_off' then
  local old = redis.call('HGET', KEYS[1], 'shadow')
  if not old then return 0 end
  redis.call('HDEL', KEYS[1], 'shadow')
  record(tonumber(old), 'shadow_off', nil)
  return 0
end
return redis.error_reply('unknown op ' .. tostring(op))
