-- dialguard event: a per-number fact (opt-out, complaint, consent, DNC) set or
-- cleared together with its audit record, atomically.
-- KEYS[1]: number flags hash, KEYS[2]: campaign DNC set, KEYS[3]: audit stream,
-- KEYS[4]: the number's last caller ID ('{n:<H>}:lc', written by decide.lua)
-- ARGV: op ('set'|'clear'|'camp_add'|'camp_del'), field, value, payload JSON, event id, kind,
--       key prefix, now_ms (rules clock), admin record id, wall-clock ms, node
--
-- Caller-ID health (dialguard/callerid_health.py): a new complaint or opt-out
-- is attributed to the caller ID of the last allowed call to the number and
-- joins its event log; its complaints_per_1000 / optouts_per_1000 rules are
-- evaluated over its window (as outcome.lua does) and a rule that triggers
-- cools it down here, audited with the figures.
-- Returns {changed, triggered JSON ('' = none)[, health error]}.

local op, field, value, payload, eid, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local pfx, now, admin_id, wall, node = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
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

-- The caller ID's health part runs under pcall: the fact above is set and
-- audited already (Redis does not roll a script back), so an error here must
-- not fail the script into a retry that finds nothing to change and loses the
-- attribution silently; it returns the error as a third element instead.
local function health()
  -- Only the first complaint (opt-out) of a number counts: it blocks the number.
  local ek = ({complaint = 'c', opt_out = 'o'})[kind]
  if changed ~= 1 or not ek or not KEYS[4] or not pfx or pfx == '' then
    return {changed, ''}
  end
  local last = redis.call('GET', KEYS[4])
  if not last then return {changed, ''} end
  local ch, hc = string.match(last, '^([^|]+)|(.*)$')
  if not ch then return {changed, ''} end

  local DEFAULT = {{p = '', wc = 100, wh = 86400000, r = {}}}
  local cfgs = nil
  if hc ~= '' then
    local raw = redis.call('GET', pfx .. ':{g}:hcfg:' .. hc)
    if raw then cfgs = cjson.decode(raw) end
  end
  cfgs = cfgs or DEFAULT
  local keep, longest = 1, 0
  for _, c in ipairs(cfgs) do
    if c.wc > keep then keep = c.wc end
    if c.wh > longest then longest = c.wh end
  end

  local ev_key = pfx .. ':{c:' .. ch .. '}:e'
  redis.call('LPUSH', ev_key, now .. '|' .. ek)
  redis.call('LTRIM', ev_key, 0, 999)
  redis.call('PEXPIRE', ev_key, longest + 86400000)

  local h_key = pfx .. ':{c:' .. ch .. '}:h'
  local nowv = tonumber(now)
  local since = tonumber(redis.call('HGET', h_key, 'since') or '0') or 0
  local calls_at = {}
  for _, raw in ipairs(redis.call('LRANGE', pfx .. ':{c:' .. ch .. '}:o', 0, keep - 1)) do
    local ms = string.match(raw, '^(%d+)|')
    if ms then calls_at[#calls_at + 1] = tonumber(ms) end
  end
  local evs = {}
  for _, raw in ipairs(redis.call('LRANGE', ev_key, 0, 999)) do
    local ms, k = string.match(raw, '^(%d+)|([co])$')
    if ms then evs[#evs + 1] = {tonumber(ms), k} end
  end

  local triggered = {}
  local until_ms = 0
  for _, c in ipairs(cfgs) do
    local lo = nowv - c.wh
    if since > lo then lo = since end
    local calls, oldest = 0, nil
    for i = 1, math.min(#calls_at, c.wc) do
      if calls_at[i] <= lo then break end
      calls = calls + 1
      oldest = calls_at[i]
    end
    local nc, no = 0, 0
    if oldest then
      for _, e in ipairs(evs) do
        if e[1] > lo and e[1] >= oldest then
          if e[2] == 'c' then nc = nc + 1 else no = no + 1 end
        end
      end
    end
    for _, r in ipairs(c.r or {}) do
      local value = nil
      if r.m == 'complaints_per_1000' then value = 1000 * nc / math.max(calls, 1)
      elseif r.m == 'optouts_per_1000' then value = 1000 * no / math.max(calls, 1) end
      if value ~= nil and calls > 0 and calls >= r.n and value >= r.t then
        local u = nowv + r.cd
        if u > until_ms then until_ms = u end
        triggered[#triggered + 1] = {pack = c.p or '', rule = r.id, metric = r.m, threshold = r.t,
          value = value, calls = calls, complaints = nc, optouts = no, cool_down_ms = r.cd}
      end
    end
  end
  if #triggered == 0 then return {changed, ''} end

  -- Cool down as outcome.lua does (never shorten one in force), figures afresh after it.
  local cool_key = pfx .. ':{g}:cool'
  local cur = tonumber(redis.call('ZSCORE', cool_key, ch) or '0') or 0
  if until_ms > cur then
    redis.call('ZADD', cool_key, until_ms, ch)
  else
    until_ms = cur
  end
  redis.call('HSET', h_key, 'since', tostring(until_ms), 'pen', '0')
  redis.call('PEXPIRE', h_key, longest + 86400000)
  redis.call('HDEL', pfx .. ':{g}:cidpen', ch)  -- its pick penalty too (outcome.lua)
  local why_j = cjson.encode({at = now, ts = tonumber(wall), ['until'] = until_ms, event = eid, triggered = triggered})
  redis.call('HSET', pfx .. ':{g}:coolwhy', ch, why_j)
  local names = {}
  for _, t in ipairs(triggered) do names[#names + 1] = (t.pack ~= '' and (t.pack .. '/') or '') .. t.rule end
  local admin_j = cjson.encode({action = 'callerid_cooldown', actor = 'dialguard-health', target = ch,
    why = 'caller-ID health: ' .. table.concat(names, ', '), at = tonumber(wall), ['until'] = until_ms,
    rules_at = now, event = eid, triggered = triggered, node = node})
  redis.call('XADD', KEYS[3], '*', 't', 'admin', 'id', admin_id, 'j', admin_j)
  return {changed, why_j}
end

local ok, res = pcall(health)
if ok then return res end
return {changed, '', type(res) == 'table' and res.err or tostring(res)}
