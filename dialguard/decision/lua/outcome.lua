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
--       in one call about several subjects (debts) starts each one's quiet period,
--       health entry "ms|answered|talk|sip|cause" ('' = none), key prefix,
--       admin record id, wall-clock ms, node
--
-- Caller-ID health (dialguard/callerid_health.py holds the same computation):
-- the outcome joins the log of the caller ID the call presented; the figures
-- of every pack's health settings are computed over it, its rules evaluated,
-- and a rule that triggers cools the caller ID down here, atomically with the
-- outcome: a decision that runs after this script returns no longer picks it.
-- Returns {status, decision id, triggered JSON ('' = none)[, health error]}:
-- status 0 no such call, 1 applied, 2 already reported, 3 another subject's
-- conversation added, 4 applied but the health part failed (the error).

local result, now, movable, conv, abandon, qttl, payload, oid, extra =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local hentry, pfx, admin_id, wall, node = ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]

-- An integer as the text both Redis (a Lua number argument: '%.17g') and Lua ('%.14g')
-- write for it, without sprintf's float path (about 1.5 k instructions a number, and an
-- outcome wrote about 25: a tenth of the script, stop 18); anything else is returned as
-- it is, so that it is written as before.
local floor = math.floor
local function itext(n)
  if n >= 0 and n < 1e14 and n == floor(n) then
    if n < 10 then return string.char(48 + n) end
    if n < 100 then return string.char(48 + floor(n / 10), 48 + n % 10) end
    return string.format('%d', n)
  end
  return n
end

-- The health settings of the rules the outcome reader runs with: {their id, the
-- settings as cjson.decode gives them}, written in by dialguard.decision.scripts.outcome_with
-- (callerid_health.lua_settings; stop 19). The file as it is: none.
local function reader_settings() return {--[[callerid_health.lua_settings]]} end

local function words(s)
  local out = {}
  if s then for w in string.gmatch(s, '%S+') do out[#out + 1] = w end end
  return out
end

-- The penalties hash ('{g}:cidpen': tag -> "<pen>|<until ms>") would keep a field for every
-- caller ID ever used: a lapsed one reads as absent, but stays. It gains a field only where
-- health() writes one a caller ID had not (new, or back after it lapsed or cooled down), and
-- only then, when it holds more than PRUNE_FROM fields, does this run: one HSCAN step (COUNT
-- PRUNE_SCAN) from the cursor kept in the hash (field PRUNE_CURSOR, never a tag: tags are hex)
-- drops the lapsed fields it finds (until not after now, the rules clock: decide.lua reads
-- them as none). Every growth scans about PRUNE_SCAN fields, so a round of the cursor over
-- the hash ends before it has grown by a PRUNE_SCAN-th: the hash holds the live penalties and
-- about a round's worth of lapsed ones, or PRUNE_FROM fields. Up to PRUNE_FROM nothing is
-- scanned: a hash that small may be a listpack (hash-max-listpack-entries), which HSCAN
-- returns whole whatever the COUNT, so every growth would parse all of it.
-- An outcome that adds no field (a caller ID used within its window: nearly all) sends no
-- command more; decide.lua none.
local PRUNE_CURSOR, PRUNE_SCAN, PRUNE_FROM = '#prune', '32', 256
local function prune_penalties(key, nowv)
  local res = redis.call('HSCAN', key, redis.call('HGET', key, PRUNE_CURSOR) or '0', 'COUNT', PRUNE_SCAN)
  local kv, gone = res[2], {}
  for i = 1, #kv, 2 do
    local u = tonumber(string.match(kv[i + 1], '^[^|]*|(%d+)$') or '')
    if u and u <= nowv then gone[#gone + 1] = kv[i] end  -- as decide.lua reads it: none
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  if res[1] == '0' then
    redis.call('HDEL', key, PRUNE_CURSOR)
  else
    redis.call('HSET', key, PRUNE_CURSOR, res[1])
  end
end

local rec = redis.call('HMGET', KEYS[1], 'did', 'rep', 'ak', 'cv', 'ab', 'am', 'lv', 'nk', 'ch', 'hc', 'cp', 'qt')
local did = rec[1]
if not did then
  redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', '', 'res', result, 'j', payload)
  return {0, '', ''}
end
-- The quiet logs' expiry: the retention of the rules that decided the call (its record's
-- 'qt': a campaign's own packs may need longer than the reader's), the reader's if longer.
if rec[12] and tonumber(rec[12]) and tonumber(rec[12]) > tonumber(qttl) then qttl = rec[12] end

-- A quiet log's expiry, never shortened: another campaign's rules may need it for longer
-- (GT; a new key has none, and GT treats that as endless: NX then sets it).
local function keep_for(k)
  if redis.call('PEXPIRE', k, qttl, 'GT') == 0 then redis.call('PEXPIRE', k, qttl, 'NX') end
end

local function extra_conversation()
  if conv == '1' and extra and extra ~= '' and rec[8] and rec[8] ~= '' then
    local k = rec[8] .. ':' .. extra
    redis.call('ZADD', k, now, did)
    keep_for(k)
    return true
  end
  return false
end

if rec[2] == '1' then
  -- already reported: only another subject's conversation may still be added
  if extra_conversation() then
    redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', did, 'res', result, 'j', payload)
    return {3, did, ''}
  end
  return {2, did, ''}
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
      if ttl > 0 then redis.call('PEXPIRE', xk, itext(ttl)) end
    end
  end
end

if rec[7] and rec[7] ~= '' then
  redis.call('ZREM', rec[7], did)
end

if conv == '1' then
  for _, k in ipairs(words(rec[4])) do
    redis.call('ZADD', k, now, did)
    keep_for(k)
  end
end

if abandon == 'ab' and rec[5] and rec[5] ~= '' then
  redis.call('ZADD', rec[5], now, did)
  keep_for(rec[5])
elseif abandon == 'am' and rec[6] and rec[6] ~= '' then
  redis.call('ZADD', rec[6], now, did)
  keep_for(rec[6])
end

redis.call('HSET', KEYS[1], 'rep', '1', 'res', result)
redis.call('XADD', KEYS[2], '*', 't', 'outcome', 'id', oid, 'did', did, 'res', result, 'j', payload)

-- Caller-ID health -----------------------------------------------------------
-- Run under pcall: the outcome above is applied and audited already, and Redis
-- does not roll a script back, so an error here (a command a role lacks, a value
-- of the wrong type, a settings record that does not parse) must not fail the
-- script: the reader would retry, find the call reported and lose the health
-- part silently. It returns status 4 with the error instead; the running figures
-- it may have half written are dropped, so the next outcome recomputes them.
local function health()
  local ch = rec[9]
  if not hentry or hentry == '' or not ch or ch == '' or not pfx or pfx == '' then
    return {1, did, ''}
  end
  local cfgs, hc_id = nil, ''
  if rec[10] and rec[10] ~= '' then
    local hk = pfx .. ':{g}:hcfg:' .. rec[10]
    local mine = reader_settings()
    if mine[1] == rec[10] then
      -- the call's settings are the ones written into this script (the id is a hash of
      -- their JSON): used as they are, not decoded from the record (about 25 k
      -- instructions an outcome), when that record exists, as the GET below would
      if redis.call('EXISTS', hk) == 1 then cfgs = mine[2]; hc_id = rec[10] end
    else
      local raw = redis.call('GET', hk)
      if raw then cfgs = cjson.decode(raw); hc_id = rec[10] end
    end
  end
  cfgs = cfgs or {{p = '', wc = 100, wh = 86400000, ss = 5, sc = {'403', '603', '608'}, qc = {'21'}, r = {}}}

  local ok_key = pfx .. ':{c:' .. ch .. '}:o'
  local h_key = pfx .. ':{c:' .. ch .. '}:h'
  local keep, longest = 1, 0
  for _, c in ipairs(cfgs) do
    if c.wc > keep then keep = c.wc end
    if c.wh > longest then longest = c.wh end
  end
  local log_ttl = itext(longest + 86400000)  -- the health keys' expiry (ms)
  local pushed = redis.call('LPUSH', ok_key, hentry)
  local pool_key = ''
  if rec[11] and rec[11] ~= '' then
    pool_key = pfx .. ':{g}:hp:' .. rec[11]
    redis.call('SADD', pool_key, ch)
    redis.call('PEXPIRE', pool_key, log_ttl)
  end

  -- Running figures. The health hash keeps, besides the figures, 'lg' = "<seq>|
  -- <log length>|<head entry>" (seq: one more at every outcome) and per config
  -- 's:<pack>' = "hcfg id|config #|seq|since|now|calls|answered|short|rejected|
  -- run|oldest ms": the window's figures as of outcome seq. With an entry no
  -- older than the head, `now` not gone back, the same since, config and seq,
  -- and the log as this script left it, the window is the last one plus the new
  -- entry, less its oldest entries while it holds more than wc or its oldest is
  -- not after lo (read one at a time at its tail): a few commands instead of reading and
  -- parsing the whole log. Anything else (a late outcome, a reset, another
  -- writer, an entry that does not parse, a window out of time order)
  -- recomputes from the log below, and the state starts again from there.
  local ENTRY = '^(%d+)|(%d)|(%d*)|(%d*)|(%d*)$'
  local STATE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$'
  local match = string.match
  local hf = {'since', 'lg'}
  for _, c in ipairs(cfgs) do hf[#hf + 1] = 's:' .. (c.p or '') end
  local hv = redis.call('HMGET', h_key, unpack(hf))
  local since_s = hv[1] or ''
  local since = tonumber(since_s ~= '' and since_s or '0') or 0
  local nowv = tonumber(now)
  local seq, len, head = match(hv[2] or '', '^(%d+)|(%d+)|(.+)$')
  local next_seq = (tonumber(seq) or 0) + 1

  local function set_of(list)
    local out = {}
    for _, v in ipairs(list or {}) do out[tostring(v)] = true end
    return out
  end
  local SETS = {}
  for ci, c in ipairs(cfgs) do SETS[ci] = {set_of(c.sc), set_of(c.qc)} end

  local function lo_of(c)
    local lo = nowv - c.wh
    if since > lo then lo = since end
    return lo
  end

  -- an entry's part in config c's figures: answered, short, rejected (0 or 1 each)
  local function share(ans, talk, sip, cause, c, sc, qc)
    if ans == '1' then
      if (tonumber(talk) or 0) < c.ss then return 1, 1, 0 end
      return 1, 0, 0
    end
    if sip ~= '' then return 0, 0, sc[sip] and 1 or 0 end
    if cause ~= '' then return 0, 0, qc[cause] and 1 or 0 end
    return 0, 0, 0
  end

  -- The log's entry at index i, or nil. LRANGE i i, not LINDEX: the roles that run
  -- this script are granted LRANGE (dialguard/redis_acl.py), and a grant added for
  -- it would refuse every outcome, half applied, until an upgrade re-applied the ACL.
  local function entry_at(i)
    local t = itext(i)
    return redis.call('LRANGE', ok_key, t, t)[1]
  end

  -- {ci = {f, lo, oldest ms, state}} from the stored state, or nil when it cannot be proven exact
  local function running()
    if not seq or not nowv or pushed ~= tonumber(len) + 1 then return nil end
    local ms, ans, talk, sip, cause = match(hentry, ENTRY)
    local hms = match(head, '^(%d+)|')
    if not ms or not hms or tonumber(ms) < tonumber(hms) then return nil end
    if entry_at(1) ~= head then return nil end
    local newv = tonumber(ms)
    local out = {}
    for ci, c in ipairs(cfgs) do
      local st = hv[2 + ci]
      if not st then return nil end
      local s_hc, s_ci, s_seq, s_since, s_now, n, a, sh, rj, run, old = match(st, STATE)
      if s_hc ~= hc_id or s_ci ~= tostring(ci) or s_seq ~= seq or s_since ~= since_s then return nil end
      s_now, n, a, sh, rj, run, old = tonumber(s_now), tonumber(n), tonumber(a), tonumber(sh), tonumber(rj),
        tonumber(run), tonumber(old)
      if not (s_now and n and a and sh and rj and run) or s_now > nowv or (n > 0 and not old) then return nil end
      local sc, qc = SETS[ci][1], SETS[ci][2]
      local lo = lo_of(c)
      local xa, xs, xr = share(ans, talk, sip, cause, c, sc, qc)
      a, sh, rj = a + xa, sh + xs, rj + xr
      if xr == 1 then run = run + 1 else run = 0 end
      local cnt = n + 1  -- the window's entries are the log's first cnt now
      if n == 0 then old = newv end
      local tail = nil
      while cnt > 0 do
        if cnt <= c.wc then
          if not old then
            tail = entry_at(cnt - 1)
            old = tail and tonumber(match(tail, '^(%d+)|'))
            if not old then return nil end
          end
          if old > lo then break end
        end
        tail = tail or entry_at(cnt - 1)
        local t, ea, et, es, ec = match(tail or '', ENTRY)
        if not t then return nil end
        xa, xs, xr = share(ea, et, es, ec, c, sc, qc)
        a, sh, rj = a - xa, sh - xs, rj - xr
        cnt, old, tail = cnt - 1, nil, nil
      end
      if run > cnt then run = cnt end
      if a < 0 or sh < 0 or rj < 0 or a > cnt or rj > cnt or sh > a then return nil end
      out[ci] = {{calls = cnt, answered = a, short = sh, rejected = rj, run = run, complaints = 0, optouts = 0},
                 lo, cnt > 0 and old or nil, true}
    end
    return out
  end
  local FIG = running()
  redis.call('LTRIM', ok_key, '0', itext(keep - 1))
  redis.call('PEXPIRE', ok_key, log_ttl)

  -- The whole recomputation (a missing or unusable state).
  local function recompute()
  local log = redis.call('LRANGE', ok_key, '0', itext(keep - 1))
  -- The entries that parse, in parallel arrays (no table an entry); a time stays
  -- its digits (after() compares them as text) and talk seconds are converted
  -- only for answered calls: strtod of the times and a table an entry were a
  -- large share of an entry's cost, which every outcome pays for up to 100 entries.
  local E_ms, E_ans, E_talk, E_sip, E_cause, ne = {}, {}, {}, {}, {}, 0
  local bad_at = #log + 1  -- the first entry (of the log) that does not parse
  for i = 1, #log do
    local ms, ans, talk, sip, cause = match(log[i], ENTRY)
    if ms then
      ne = ne + 1
      E_ms[ne], E_ans[ne], E_talk[ne], E_sip[ne], E_cause[ne] = ms, ans == '1', talk, sip, cause
    elseif bad_at > i then
      bad_at = i
    end
  end

  -- A plain integer as its digits (no leading zero), or nil for any other number.
  local function digits(x)
    if x >= 0 and x < 1e15 and x == math.floor(x) then return string.format('%d', x) end
    return nil
  end

  -- t > lo, exactly, for t the digits of a log time: between plain integers the
  -- longer is larger and equal lengths compare digit by digit; anything else
  -- (a leading zero, lo not a plain integer) as numbers.
  local function after(t, lo, lo_s)
    if lo_s and (#t == 1 or string.byte(t, 1) ~= 48) then
      local a, b = #t, #lo_s
      if a ~= b then return a > b end
      return t > lo_s
    end
    return tonumber(t) > lo
  end

  local function figures(ci, c)
    local sc, qc = SETS[ci][1], SETS[ci][2]
    local lo = lo_of(c)
    local f = {calls = 0, answered = 0, short = 0, rejected = 0, run = 0, complaints = 0, optouts = 0}
    local in_run = true
    local oldest = nil
    local lo_s = digits(lo)
    for i = 1, math.min(ne, c.wc) do
      if not after(E_ms[i], lo, lo_s) then break end
      f.calls = f.calls + 1
      oldest = i
      local rej = false
      if E_ans[i] then
        f.answered = f.answered + 1
        if (tonumber(E_talk[i]) or 0) < c.ss then f.short = f.short + 1 end
      elseif E_sip[i] ~= '' then
        rej = sc[E_sip[i]] == true
      elseif E_cause[i] ~= '' then
        rej = qc[E_cause[i]] == true
      end
      if rej then
        f.rejected = f.rejected + 1
        if in_run then f.run = f.run + 1 end
      else
        in_run = false
      end
    end
    -- a state to run on: the window holds the log's first entries (none before
    -- them failed to parse), newest first in time
    local ok = bad_at > f.calls
    for i = 2, (ok and f.calls or 0) do
      local u = E_ms[i - 1]  -- an older entry after the newer one: out of time order
      if after(E_ms[i], tonumber(u), (#u == 1 or string.byte(u, 1) ~= 48) and u or nil) then ok = false; break end
    end
    return {f, lo, oldest and tonumber(E_ms[oldest]) or nil, ok}
  end
  local out = {}
  for ci, c in ipairs(cfgs) do out[ci] = figures(ci, c) end
  return out
  end
  FIG = FIG or recompute()

  -- complaints / opt-outs attributed to this caller ID by event.lua: in the
  -- window's span (after lo, not before its oldest call)
  local evs = nil
  for _, x in ipairs(FIG) do
    if x[3] then
      if not evs then
        evs = {}
        for _, raw in ipairs(redis.call('LRANGE', pfx .. ':{c:' .. ch .. '}:e', '0', '999')) do
          local ms, k = match(raw, '^(%d+)|([co])$')
          if ms then evs[#evs + 1] = {tonumber(ms), k} end
        end
      end
      local f, lo, oldest = x[1], x[2], x[3]
      for _, e in ipairs(evs) do
        if e[1] > lo and e[1] >= oldest then
          if e[2] == 'c' then f.complaints = f.complaints + 1 else f.optouts = f.optouts + 1 end
        end
      end
    end
  end

  local function rate(a, b) if b > 0 then return a / b end return 0 end

  local triggered = {}
  local until_ms = 0
  local first = nil
  local hset = {}
  for ci, c in ipairs(cfgs) do
    local f = FIG[ci][1]
    if ci == 1 then first = f end
    local tagp = c.p or ''
    hset[#hset + 1] = 'calls:' .. tagp; hset[#hset + 1] = itext(f.calls)
    hset[#hset + 1] = 'ans:' .. tagp; hset[#hset + 1] = itext(f.answered)
    hset[#hset + 1] = 's:' .. tagp
    if FIG[ci][4] then
      hset[#hset + 1] = table.concat({hc_id, itext(ci), itext(next_seq), since_s, now, itext(f.calls),
        itext(f.answered), itext(f.short), itext(f.rejected), itext(f.run),
        FIG[ci][3] and string.format('%d', FIG[ci][3]) or ''}, '|')
    else
      hset[#hset + 1] = ''
    end
    local ar = rate(f.answered, f.calls)
    for _, r in ipairs(c.r or {}) do
      if f.calls > 0 and f.calls >= r.n then
        local value, hit, median = nil, false, nil
        if r.m == 'consecutive_rejections' then value = f.run
        elseif r.m == 'rejection_rate' then value = rate(f.rejected, f.calls)
        elseif r.m == 'short_answer_rate' then value = rate(f.short, f.answered)
        elseif r.m == 'answer_rate_vs_pool' then value = ar
        elseif r.m == 'complaints_per_1000' then value = 1000 * f.complaints / f.calls
        elseif r.m == 'optouts_per_1000' then value = 1000 * f.optouts / f.calls end
        if r.m == 'answer_rate_vs_pool' then
          -- the median can only be above the answer rate / threshold when the rate is under the threshold
          if ar < r.t and pool_key ~= '' then
            local rates = {}
            for _, m in ipairs(redis.call('SMEMBERS', pool_key)) do
              local n, a
              if m == ch then n, a = f.calls, f.answered
              else
                local v = redis.call('HMGET', pfx .. ':{c:' .. m .. '}:h', 'calls:' .. tagp, 'ans:' .. tagp)
                n, a = tonumber(v[1] or '0') or 0, tonumber(v[2] or '0') or 0
              end
              if n > 0 and n >= r.n then rates[#rates + 1] = a / n end
            end
            if #rates >= 2 then
              table.sort(rates)
              local k = #rates
              if k % 2 == 1 then median = rates[(k + 1) / 2] else median = (rates[k / 2] + rates[k / 2 + 1]) / 2 end
              hit = median > 0 and ar < r.t * median
            end
          end
        elseif value ~= nil then
          hit = value >= r.t
        end
        if hit then
          local u = nowv + r.cd
          if u > until_ms then until_ms = u end
          triggered[#triggered + 1] = {pack = tagp, rule = r.id, metric = r.m, threshold = r.t,
            value = value, pool_median = median, cool_down_ms = r.cd, calls = f.calls,
            answered = f.answered, short = f.short, rejected = f.rejected, run = f.run,
            complaints = f.complaints, optouts = f.optouts}
        end
      end
    end
  end

  local pen = 0
  if first then
    pen = rate(first.rejected, first.calls) + 0.5 * rate(first.short, first.answered) + 0.1 * first.run
    if pen > 3 then pen = 3 end
  end
  hset[#hset + 1] = 'pen'; hset[#hset + 1] = string.format('%.3f', pen)
  hset[#hset + 1] = 'at'; hset[#hset + 1] = now
  hset[#hset + 1] = 'lg'; hset[#hset + 1] = itext(next_seq) .. '|' .. itext(math.min(pushed, keep)) .. '|' .. hentry
  redis.call('HSET', h_key, unpack(hset))
  redis.call('PEXPIRE', h_key, log_ttl)
  -- the penalty again in the one hash of every caller ID's (decide.lua reads a pool
  -- window's in one HMGET), with the time it lapses, as h_key would expire
  local pen_key = pfx .. ':{g}:cidpen'
  if redis.call('HSET', pen_key, ch, string.format('%.3f|%d', pen, nowv + longest + 86400000)) == 1
      and redis.call('HLEN', pen_key) > PRUNE_FROM then
    -- the hash grew past PRUNE_FROM: a step of its pruning. One that fails (a cursor that is
    -- not Redis's; a guard user whose ACL lacks HSCAN, not yet updated) leaves the outcome
    -- whole, its cool-down included, and the next step starts the cursor afresh
    if not pcall(prune_penalties, pen_key, nowv) then pcall(redis.call, 'HDEL', pen_key, PRUNE_CURSOR) end
  end

  if #triggered == 0 then
    return {1, did, ''}
  end
  -- Cool down (never shorten one in force), start the figures afresh after it,
  -- say why, and audit it with the figures, as `callerid cooldown` would.
  local cool_key = pfx .. ':{g}:cool'
  local cur = tonumber(redis.call('ZSCORE', cool_key, ch) or '0') or 0
  if until_ms > cur then
    redis.call('ZADD', cool_key, until_ms, ch)
  else
    until_ms = cur
  end
  -- the running figures start afresh too: an empty window from the new since,
  -- when no entry of the log is after it (the head is the newest)
  local reset = {'since', tostring(until_ms), 'pen', '0'}
  local head_ms = tonumber(match(hentry, '^(%d+)|') or '')
  for ci, c in ipairs(cfgs) do
    reset[#reset + 1] = 's:' .. (c.p or '')
    if head_ms and head_ms <= until_ms then
      reset[#reset + 1] = table.concat({hc_id, ci, next_seq, tostring(until_ms), now, 0, 0, 0, 0, 0, ''}, '|')
    else
      reset[#reset + 1] = ''
    end
  end
  redis.call('HSET', h_key, unpack(reset))
  redis.call('HDEL', pen_key, ch)
  local why_j = cjson.encode({at = now, ts = tonumber(wall), ['until'] = until_ms, did = did, triggered = triggered})
  redis.call('HSET', pfx .. ':{g}:coolwhy', ch, why_j)
  local names = {}
  for _, t in ipairs(triggered) do names[#names + 1] = (t.pack ~= '' and (t.pack .. '/') or '') .. t.rule end
  local admin_j = cjson.encode({action = 'callerid_cooldown', actor = 'dialguard-health', target = ch,
    why = 'caller-ID health: ' .. table.concat(names, ', '), at = tonumber(wall), ['until'] = until_ms,
    rules_at = now, did = did, triggered = triggered, node = node})
  redis.call('XADD', KEYS[2], '*', 't', 'admin', 'id', admin_id, 'j', admin_j)
  return {1, did, why_j}
end

local ok, res = pcall(health)
if ok then return res end
local err = type(res) == 'table' and res.err or tostring(res)
if rec[9] and rec[9] ~= '' and pfx and pfx ~= '' then
  pcall(redis.call, 'HDEL', pfx .. ':{c:' .. rec[9] .. '}:h', 'lg')
end
return {4, did, '', err}
