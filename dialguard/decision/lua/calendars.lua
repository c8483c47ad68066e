-- dialguard calendars: publish a calendar version (the full set of imported
-- calendar years), atomically with its audit record (t=admin). decide.lua
-- compares the version a node evaluated with the one in effect, so once this
-- script has run no node decides under the previous calendars.
--
-- KEYS[1]: calendars hash {seq, active, v:<N> = bundle JSON, m:<N> = who/why/when JSON}
-- KEYS[2]: audit stream
-- ARGV: op ('publish'|'activate'), bundle JSON object without its version
--       (publish) or a version (activate), record id,
--       head JSON object {"action":..,"target":..},
--       tail JSON object {"actor":..,"why":..,"at":..,"node":..}, audit ('1'|'0')
-- Returns the version now active, or an error.

local op, arg, rid, head, tail, audit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local function record(version, bundle)
  if audit ~= '1' then return end
  -- {<head fields>,"version":N,<bundle fields>,<tail fields>}
  local body = string.sub(head, 1, -2) .. ',"version":' .. version
  if #bundle > 2 then body = body .. ',' .. string.sub(bundle, 2, -2) end
  if #tail > 2 then body = body .. ',' .. string.sub(tail, 2, -2) end
  redis.call('XADD', KEYS[2], '*', 't', 'admin', 'id', rid, 'j', body .. '}')
end

if op == 'publish' then
  local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], 'v:' .. n, '{"version":' .. n .. ',' .. string.sub(arg, 2), 'm:' .. n, tail,
    'active', n)
  record(n, arg)
  return n
elseif op == 'activate' then
  local bundle = redis.call('HGET', KEYS[1], 'v:' .. arg)
  if not bundle then return redis.error_reply('no calendar version ' .. arg) end
  redis.call('HSET', KEYS[1], 'active', arg)
  -- the stored bundle already names its version: drop it from the copy
  local rest = string.gsub(bundle, '^{"version":%d+,', '{', 1)
  record(tonumber(arg), rest)
  return tonumber(arg)
end
return redis.error_reply('unknown op ' .. tostring(op))
