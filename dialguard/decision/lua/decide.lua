-- dialguard decide: one atomic check-and-reserve (SPEC §2).
--
-- The *what* (which windows, which limits, which bounds) is computed in Python
-- (dialguard/decision/plan.py; its fields: dialguard/decision/schema.py); this
-- script is the *where*: it counts, and records the attempt in every counter
-- only if every counter-based rule passes. Redis runs scripts one at a time, so
-- concurrent decisions can never over-admit.
--
-- KEYS: every key the plan references (by 1-based index).
-- ARGV[1]: the plan, MessagePack (the engine's compiled plans: cmsgpack decodes
-- it in a quarter fewer instructions than cjson) or JSON (build_plan's; it starts
-- with "{", which no MessagePack map does). Anything else, or bytes left over,
-- is an error: the engine then denies (guard_unavailable). All scores/bounds
-- arrive as strings so that Lua never formats a large number (Lua 5.1 would
-- write 1.7e+12).
-- ARGV[2]: the audit record's JSON when the plan has no `audit_record` (the engine's
-- compiled plans: not escaped into the plan, not decoded here).
--
-- Returns {allowed, reasons, details, chosen_caller_id_hash, status, decision_id, lifted[, at]}
--   details: flat list of {check_id, score_ms, candidate} triples for failing
--   count rules: the attempt whose expiry lifts the limit (-1: never); and
--   {'party:<reason>', -1, 0} when that flag was the party's (plan.party_flags_key).
--   status: 0 decided, 1 replayed (same call id, identical request: the
--   earlier answer, its decision id, and `at`, the time it was decided),
--   2 stale rules (nothing written: the node evaluated with another rules or
--   calendar version than the one in effect; it reloads and asks again), 3 refused at the audit
--   backlog ceiling (nothing written, not even the audit record).
--   lifted: the reasons an override lifted (the decision is then an allow).
-- ARGV[3] = 'ro': evaluate only, no command that writes (see below), status 4.
--
-- plan.shadow, when present, is a second plan (shadow rules, same KEYS): evaluated
-- first, read-only, on the same state; its verdict only goes to the audit record.

local function read_plan(a)
  if string.byte(a, 1) == 123 then return cjson.decode(a) end
  local rest, p = cmsgpack.unpack_one(a)
  if rest ~= -1 or type(p) ~= 'table' then error('the plan is not one MessagePack map') end
  return p
end
local plan = read_plan(ARGV[1])
-- a plan without these is not one (an empty map would check nothing and allow)
if type(plan.now) ~= 'string' or type(plan.decision_id) ~= 'string' then
  error('the plan has no now or decision_id')
end
local RO = ARGV[3] == 'ro'  -- the eligibility question: read, never write (below)
local now = plan.now

-- The rules version this node evaluated with must be the one in effect.
if plan.rules_key then
  local v = redis.call('HMGET', KEYS[plan.rules_key], 'active', 'shadow')
  if (v[1] or '') .. '|' .. (v[2] or '') ~= plan.rules_versions then
    return {0, {}, {}, '', 2, plan.decision_id, {}}
  end
end
-- Likewise the calendar version (imported calendar years) it evaluated with.
if plan.calendars_key
    and (redis.call('HGET', KEYS[plan.calendars_key], 'active') or '') ~= plan.calendar_version then
  return {0, {}, {}, '', 2, plan.decision_id, {}}
end

-- Refuse rather than lose audit records when the shipper is far behind.
if plan.audit_key and plan.audit_max and redis.call('XLEN', KEYS[plan.audit_key]) >= plan.audit_max then
  return {0, {'guard_unavailable'}, {}, '', 3, plan.decision_id, {}}
end

-- Idempotency never widens a decision (SPEC §2). The call record keeps, per
-- request fingerprint (plan.request_fp: keyed hash of number, campaign, agent, caller
-- ID as requested, subject, location, party), the answer given to it. Only the
-- identical request gets that answer again, and only when
--   * nothing denied it before Redis this time (plan.pre_reasons: number, hours...);
--   * for a deny: within DENY_REPLAY_MS of it (decision clock);
--   * for an allow: it is still the call's open attempt (no outcome reported,
--     not superseded by a later allowed attempt) and no kill switch is on.
-- Anything else is decided afresh below as a new attempt. A replay is audited
-- too (its own record id, rp = the decision it repeats).
local DENY_REPLAY_MS = 10000
-- whether this request's answer is kept for a replay (not after a pre-Redis deny)
local keeps_answer = plan.call_key and plan.request_fp and #(plan.pre_reasons or {}) == 0
-- the call record's report state as read here: false when it has none (outcome.lua
-- sets 'rep' and 'res' together), so an allow has nothing to delete; nil: not read
local call_rep = nil
if keeps_answer then
  local rec = redis.call('HMGET', KEYS[plan.call_key], 'f:' .. plan.request_fp, 'did', 'rep')
  call_rep = rec[3]
  if rec[1] then
    local r = cjson.decode(rec[1])
    -- a deny is the answer of its moment: repeated within DENY_REPLAY_MS (a
    -- retry of a lost answer), later the same request is a new attempt
    local age = tonumber(now) - tonumber(r.at)
    local ok = r.a == 0 and age >= 0 and age < DENY_REPLAY_MS
    if r.a == 1 and r.did == rec[2] and rec[3] ~= '1' then
      ok = true
      local vals = redis.call('HMGET', KEYS[plan.pause_key], unpack(plan.pause_fields))
      for i = 1, #plan.pause_fields do
        if vals[i] then ok = false end
      end
      if r.ch ~= '' and redis.call('HEXISTS', KEYS[plan.pause_key], 'cid:' .. r.ch) == 1 then ok = false end
    end
    if ok then
      if plan.audit_key then
        redis.call('XADD', KEYS[plan.audit_key], '*', 't', 'decision', 'id', plan.decision_id, 'rp', r.did,
          'allow', r.a, 'r', table.concat(r.r, ','), 'ch', r.ch, 'cs', '', 'rver', plan.rules_version or '',
          'sv', '', 'sa', '', 'sr', '', 'ov', '', 'ovr', table.concat(r.l, ','), 'j', plan.audit_record or ARGV[2])
      end
      return {r.a, r.r, r.d, r.ch, 1, r.did, r.l, tostring(r.at)}
    end
  end
end

-- Reasons an override may lift (SPEC §2: counter and hours reasons only):
-- dialguard.decision.models.LIFTABLE, written into this list by
-- dialguard/decision/scripts.py when it loads the script (not sent in every plan:
-- its 147 bytes were decoded at every call, stop 19). Loaded as the file is: none lifts.
local LIFTABLE_REASONS = {--[[models.LIFTABLE]]}
-- Built at the first question (an allow whose candidates all pass never asks).
local LIFTABLE = nil

local function all_liftable(list)
  if not LIFTABLE then
    LIFTABLE = {}
    for _, r in ipairs(LIFTABLE_REASONS) do LIFTABLE[r] = true end
  end
  for _, r in ipairs(list) do
    if not LIFTABLE[r] then return false end
  end
  return true
end

-- Attempts whose reported outcome a rule may not count sit in <key>:x as
-- "<outcome>|<decision id>"; a rule counts those whose outcome it does not exclude.
local function x_scores(xk, lo, excluded, limit)
  local out = {}
  local r = redis.call('ZRANGEBYSCORE', KEYS[xk], lo, '+inf', 'WITHSCORES')
  for j = 1, #r, 2 do
    local outcome = string.match(r[j], '^([^|]*)|')
    if not excluded[outcome] then
      out[#out + 1] = tonumber(r[j + 1])
      if limit and #out >= limit then break end
    end
  end
  return out
end

-- A caller-ID candidate is CAND_N entries of caller_id.candidates, in the order of
-- schema.CANDIDATE (offsets below); candidate i (1-based) starts at CAND_N * (i - 1) + 1,
-- and i is what details name it by. One flat array, not a map per candidate: decoding
-- eight 5-field maps was about a quarter of the plan's decode (stop 18).
local CAND_N = 4
-- the offsets of schema.CANDIDATE's fields (locals: no table built at every call)
local C_TAG, C_APPROVED, C_ATTEMPTS_KEY, C_LIVE_KEY = 0, 1, 2, 3
-- a caller-ID check's candidate_key: the offset of the log it counts (run_checks
-- keeps it in the check, c.cand_off: once a check, not once a check and candidate)
local function cand_offset(name)
  if name == 'attempts_key' then return C_ATTEMPTS_KEY end
  if name == 'live_key' then return C_LIVE_KEY end
  error('no candidate field ' .. tostring(name))
end

-- A count as the text Lua writes for it ('%.14g'), without sprintf's float path for
-- the small integers counts are (about 2 k instructions each, 21 a decision).
local function count_text(n)
  if n >= 0 and n < 1e14 and n == math.floor(n) then
    if n < 10 then return string.char(48 + n) end
    if n < 100 then return string.char(48 + math.floor(n / 10), 48 + n % 10) end
    return string.format('%d', n)
  end
  return tostring(n)
end

-- The count of check c in its window: over `keys` (KEYS indexes), or over the
-- one key `one` (a caller-ID candidate's: no table built per candidate).
local function count_in(c, keys, one)
  local n = 0
  if one then
    n = redis.call('ZCOUNT', KEYS[one], c.since, '+inf')
  else
    for i = 1, #keys do
      n = n + redis.call('ZCOUNT', KEYS[keys[i]], c.since, '+inf')
    end
  end
  if c.outcome_log then
    if c.uncounted == nil then
      n = n + redis.call('ZCOUNT', KEYS[c.outcome_log], c.since, '+inf')
    else
      n = n + #x_scores(c.outcome_log, c.since, c.uncounted_set)
    end
  end
  return n
end

-- The k-th (0-based) oldest counted score in the window.
local function kth_oldest(c, keys, k)
  local all = {}
  for _, ki in ipairs(keys) do
    local r = redis.call('ZRANGEBYSCORE', KEYS[ki], c.since, '+inf', 'WITHSCORES', 'LIMIT', 0, k + 1)
    for j = 2, #r, 2 do all[#all + 1] = tonumber(r[j]) end
  end
  if c.outcome_log then
    for _, v in ipairs(x_scores(c.outcome_log, c.since, c.uncounted_set or {}, k + 1)) do all[#all + 1] = v end
  end
  table.sort(all)
  return all[k + 1] or -1
end

-- Returns the highest use of a limit (count / limit) over the checks: how
-- close the caller ID is to the carrier's rate limits.
-- cands, ci: the flat candidates and the candidate's number (nil: the number's checks).
local function run_checks(checks, cands, ci, out_reasons, out_details, seen_counts)
  local use = 0
  for j = 1, #checks do
    local c = checks[j]
    local one = nil
    if ci then
      local off = c.cand_off
      if not off then
        off = cand_offset(c.candidate_key)
        c.cand_off = off
      end
      one = cands[CAND_N * (ci - 1) + 1 + off]
    end
    if c.uncounted and not c.uncounted_set then
      c.uncounted_set = {}
      for o in string.gmatch(c.uncounted, '[^,]+') do c.uncounted_set[o] = true end
    end
    local n = count_in(c, c.keys, one)
    seen_counts[#seen_counts + 1] = c.id .. ':' .. count_text(n)
    if c.max > 0 and n / c.max > use then use = n / c.max end
    if n >= c.max then
      out_reasons[#out_reasons + 1] = c.reason
      local score = -1
      if c.max > 0 then score = kth_oldest(c, one and {one} or c.keys, n - c.max) end
      out_details[#out_details + 1] = {c.id, score, ci or 0}
    end
  end
  return use
end

-- One evaluation of a plan: every failing reason, the details to compute
-- next_eligible_at, the caller ID picked, and the first candidate whose
-- failures an override could lift. Writes nothing but expired leases.
local function evaluate(p)
  local reasons, seen, details, seen_counts = {}, {}, {}, {}
  local chosen, chosen_cand, lift_cand = '', nil, nil
  local function deny(code)
    if not seen[code] then
      seen[code] = true
      reasons[#reasons + 1] = code
    end
  end
  for _, code in ipairs(p.pre_reasons or {}) do deny(code) end

  -- Kill switches: all outbound, this campaign, and every caller-ID candidate's
  -- (their fields 'cid:<K>' in the same HMGET; nothing below writes the hash).
  local cpaused = {}
  if p.pause_key then
    local fields, nf = p.pause_fields, #p.pause_fields
    if p.caller_id and #p.caller_id.candidates > 0 then
      fields = {unpack(p.pause_fields)}
      local cands = p.caller_id.candidates
      for i = 1, #cands / CAND_N do fields[nf + i] = 'cid:' .. cands[CAND_N * (i - 1) + 1 + C_TAG] end
    end
    local vals = redis.call('HMGET', KEYS[p.pause_key], unpack(fields))
    for i = 1, nf do
      if vals[i] then deny('paused') end
    end
    for i = nf + 1, #fields do cpaused[i - nf] = vals[i] end
  end

  -- Campaign approval and its date range.
  if p.campaign_key then
    local c = redis.call('HMGET', KEYS[p.campaign_key], 'approved', 'start', 'end')
    if c[1] ~= '1' then
      deny('campaign_not_approved')
    else
      if c[2] and c[2] ~= '' and tonumber(now) < tonumber(c[2]) then deny('campaign_not_approved') end
      if c[3] and c[3] ~= '' and tonumber(now) >= tonumber(c[3]) then deny('campaign_not_approved') end
    end
  end

  -- Per-number flags, and the party's (the person behind the number: opt-out,
  -- complaint and consent recorded for them hold at every one of their numbers).
  if p.flags_key then
    local f = redis.call('HMGET', KEYS[p.flags_key], 'dnc', 'optout', 'complaint', 'consent')
    local pf = {}
    if p.party_flags_key then
      pf = redis.call('HMGET', KEYS[p.party_flags_key], 'optout', 'complaint', 'consent')
    end
    if f[1] then deny('dnc') end
    if p.campaign_dnc_key and redis.call('SISMEMBER', KEYS[p.campaign_dnc_key], p.campaign_tag) == 1 then
      deny('dnc')
    end
    if p.dnc_bucket_keys and not seen['dnc'] then
      -- DNC lists at scale: an aligned plain find of the 5-byte fingerprint
      -- (the global and the campaign's bucket in one MGET)
      local rec = string.gsub(p.dnc_record, '..', function(h) return string.char(tonumber(h, 16)) end)
      local bks = {}
      for i, ki in ipairs(p.dnc_bucket_keys) do bks[i] = KEYS[ki] end
      local buckets = redis.call('MGET', unpack(bks))
      for i = 1, #bks do
        local s = buckets[i]
        if s then
          local init = 1
          while true do
            local pos = string.find(s, rec, init, true)
            if not pos then break end
            if (pos - 1) % 5 == 0 then deny('dnc') break end
            init = pos + 1
          end
        end
      end
    end
    if f[2] or pf[1] then deny('opted_out') end
    if f[3] or pf[2] then deny('complained') end
    -- which of them was the party's: named in details (the decider explains it)
    if pf[1] then details[#details + 1] = {'party:opted_out', -1, 0} end
    if pf[2] then details[#details + 1] = {'party:complained', -1, 0} end
    if p.consent_required == 1 and not f[4] and not pf[3] then deny('no_consent') end
  end

  -- Number and agent counters.
  local rs = {}
  run_checks(p.checks or {}, nil, nil, rs, details, seen_counts)
  for _, r in ipairs(rs) do deny(r) end

  -- Caller ID: check the given one, or pick from the pool the passing one
  -- farthest from its rate limits and healthiest: the lowest score of
  -- (highest count/limit of its rate and concurrency limits) + (health
  -- penalty written by outcome.lua); ties go to the earliest in the offered
  -- order (the engine's round robin), so the pick is deterministic.
  if p.caller_id then
    local cid = p.caller_id
    local first_reasons = nil
    local best_score = nil
    -- every candidate's cooldown in one call (nothing below writes that key):
    -- ZMSCORE instead of a ZSCORE per candidate; their kill switches came with
    -- the pause HMGET above, their health penalties come in one HMGET below
    local cands = cid.candidates
    local ntags, tags = #cands / CAND_N, {}
    for i = 1, ntags do tags[i] = cands[CAND_N * (i - 1) + 1 + C_TAG] end
    local cools, paused, pens = {}, cpaused, nil
    if ntags > 0 and cid.required == 1 then
      cools = redis.call('ZMSCORE', KEYS[cid.cooldown_key], unpack(tags))
    end
    -- a candidate's reasons and details: new tables only after one that failed
    -- (first_reasons keeps those); a passing candidate leaves them empty
    local cr, cd = {}, {}
    -- the leases' lower bound, built once (not once a candidate)
    local after_now = (cid.concurrency and cid.concurrency >= 0) and ('(' .. now) or nil
    for i = 1, ntags do
      local b = CAND_N * (i - 1) + 1
      local tag, live_key = cands[b + C_TAG], cands[b + C_LIVE_KEY]
      if #cr > 0 then cr, cd = {}, {} end
      if cid.required == 1 then
        local ok = cands[b + C_APPROVED] == 1 or redis.call('SISMEMBER', KEYS[cid.approved_key], tag) == 1
        local cool = cools[i]
        if cool and tonumber(cool) > tonumber(now) then ok = false end
        if not ok then cr[#cr + 1] = 'caller_id_not_approved' end
      end
      if paused[i] then cr[#cr + 1] = 'paused' end
      local use = run_checks(cid.checks or {}, cands, i, cr, cd, seen_counts)
      if cid.concurrency and cid.concurrency >= 0 then
        -- leases expire at their score: counted from (now, so expired ones need no
        -- trimming here; they go when the key is written (the chosen one's, below)
        local live = redis.call('ZCOUNT', KEYS[live_key], after_now, '+inf')
        if cid.concurrency > 0 and live / cid.concurrency > use then use = live / cid.concurrency end
        if live >= cid.concurrency then
          cr[#cr + 1] = 'caller_id_concurrency'
          local first = redis.call('ZRANGEBYSCORE', KEYS[live_key], after_now, '+inf',
            'WITHSCORES', 'LIMIT', 0, 1)
          cd[#cd + 1] = {'conc', tonumber(first[2] or -1), i}
        end
      end
      if #cr == 0 then
        local score = use
        if ntags > 1 and cid.penalty_key then
          -- health penalties "<pen>|<until ms>" (outcome.lua), every candidate's in one
          -- HMGET at the first that passes; one past its until counts as none
          if not pens then pens = redis.call('HMGET', KEYS[cid.penalty_key], unpack(tags)) end
          local v = pens[i]
          if v then
            local pen, till = string.match(v, '^([^|]*)|(%d+)$')
            if till and tonumber(till) > tonumber(now) then score = score + (tonumber(pen) or 0) end
          end
        end
        if best_score == nil or score < best_score then
          best_score = score
          chosen = tag
          chosen_cand = i
        end
      end
      if #cr > 0 then
        if not first_reasons then first_reasons = cr end
        if not lift_cand and all_liftable(cr) then lift_cand = i end
        for _, d in ipairs(cd) do details[#details + 1] = d end
      end
    end
    if chosen == '' then
      if first_reasons then
        for _, r in ipairs(first_reasons) do deny(r) end
      else
        deny('caller_id_not_approved')  -- empty pool
      end
    end
  end
  return reasons, details, chosen, chosen_cand, seen_counts, lift_cand
end

-- The shadow verdict, on the state before this attempt is recorded.
local shadow_reasons = nil
if plan.shadow then
  shadow_reasons = evaluate(plan.shadow)
end

local reasons, details, chosen, chosen_cand, seen_counts, lift_cand = evaluate(plan)

-- Read-only (ARGV[3] = 'ro', the eligibility API): the verdict on the live
-- state and nothing else: no attempt recorded, no override consumed, no audit
-- record (an eligibility question is not an attempt). Status 4.
if RO then
  return {(#reasons == 0) and 1 or 0, reasons, details, chosen, 4, plan.decision_id, {}}
end

-- An override grant for this number turns a deny for counter or hours
-- reasons into an allow, once (SPEC §2); the grant is consumed here.
local lifted = {}
local override_id = ''
if #reasons > 0 and plan.override_key and all_liftable(reasons) then
  local g = redis.call('HMGET', KEYS[plan.override_key], 'id', 'camp', 'exp', 'lifts')
  local ok = g[1] and (g[2] == nil or g[2] == '' or g[2] == plan.campaign_tag)
    and (g[3] == nil or g[3] == '' or tonumber(g[3]) > tonumber(now))
  if ok and g[4] and g[4] ~= '' then
    local allow_set = {}
    for r in string.gmatch(g[4], '[^,]+') do allow_set[r] = true end
    for _, r in ipairs(reasons) do
      if not allow_set[r] then ok = false end
    end
  end
  if ok and plan.caller_id and chosen == '' then
    if lift_cand then
      chosen, chosen_cand = plan.caller_id.candidates[CAND_N * (lift_cand - 1) + 1 + C_TAG], lift_cand
    else
      ok = false
    end
  end
  if ok then
    override_id = g[1]
    lifted = reasons
    reasons = {}
    details = {}
    redis.call('DEL', KEYS[plan.override_key])
  end
end

local allowed = (#reasons == 0) and 1 or 0

-- The answer to this request under this call id, for an identical replay
-- (written with the call record below).
local answer = nil
if keeps_answer then
  local d = {}
  for i, item in ipairs(details) do d[i] = {item[1], item[2], item[3]} end
  answer = cjson.encode({did = plan.decision_id, a = allowed, r = reasons, ch = chosen, d = d, l = lifted,
    at = now})
end

-- Keys (KEYS indexes) as the call record keeps a list of them (outcome.lua splits it):
-- joined by spaces. The plan sends the indexes, not the keys' text again (stop 19).
local function keys_text(ix)
  if #ix == 1 then return KEYS[ix[1]] end
  local t = {}
  for i = 1, #ix do t[i] = KEYS[ix[i]] end
  return table.concat(t, ' ')
end

local ca_k, lv_k = nil, nil  -- the chosen candidate's attempt log and leases, when one is
if allowed == 1 then
  -- Record the attempt; trim what no window can see any more so that hot
  -- keys (agents, caller IDs) stay bounded although their TTL is refreshed.
  local wk = plan.write_keys or {}
  for i = 1, #wk do
    local ki = wk[i]
    redis.call('ZADD', KEYS[ki], now, plan.decision_id)
    redis.call('ZREMRANGEBYSCORE', KEYS[ki], '-inf', plan.trim_before)
    redis.call('PEXPIRE', KEYS[ki], plan.ttl_ms)
  end
  -- the logs of lifetime caps: a lifetime never lifts by waiting, so they are
  -- neither trimmed nor expired (PERSIST: one an earlier rules set wrote with a TTL)
  local kk = plan.keep_keys
  if kk then
    for i = 1, #kk do
      redis.call('ZADD', KEYS[kk[i]], now, plan.decision_id)
      redis.call('PERSIST', KEYS[kk[i]])
    end
  end
  if chosen_cand then
    -- the chosen candidate's attempt log and leases (KEYS indexes)
    local cands, b = plan.caller_id.candidates, CAND_N * (chosen_cand - 1) + 1
    ca_k, lv_k = cands[b + C_ATTEMPTS_KEY], cands[b + C_LIVE_KEY]
    redis.call('ZADD', KEYS[ca_k], now, plan.decision_id)
    redis.call('ZREMRANGEBYSCORE', KEYS[ca_k], '-inf', plan.caller_id_trim_before)
    redis.call('PEXPIRE', KEYS[ca_k], plan.caller_id_ttl_ms)
    if plan.caller_id.concurrency and plan.caller_id.concurrency >= 0 then
      -- the ended leases go here, when the key is written (decisions count from (now);
      -- without a concurrency limit nothing counts them: the key's TTL bounds it)
      redis.call('ZREMRANGEBYSCORE', KEYS[lv_k], '-inf', now)
    end
    redis.call('ZADD', KEYS[lv_k], plan.lease_until, plan.decision_id)
    redis.call('PEXPIRE', KEYS[lv_k], plan.caller_id_ttl_ms)
  end
  if chosen ~= '' and plan.last_caller_key then
    -- whom a later complaint or opt-out on this number is about (event.lua):
    -- '{n:<H>}:lc', kept 30 days (a key of the plan, as every key this script touches)
    local hc = (plan.call_record and plan.call_record.health_config) or ''
    redis.call('SET', KEYS[plan.last_caller_key], chosen .. '|' .. hc, 'PX', '2592000000')
    if plan.party_last_caller_key then
      -- and whom a complaint or opt-out of the party is about: '{p:<H>}:lc'
      redis.call('SET', KEYS[plan.party_last_caller_key], chosen .. '|' .. hc, 'PX', '2592000000')
    end
  end
  if plan.call_key then
    -- this attempt is now the call's open one: the previous attempt's report
    -- state goes (outcome.lua applies the next report to this attempt)
    local rec = plan.call_record
    if call_rep ~= false then redis.call('HDEL', KEYS[plan.call_key], 'rep', 'res') end
    local f = {'did', plan.decision_id, 'ch', chosen, 'at', now,
      'ak', keys_text(rec.attempt_keys), 'cv', keys_text(rec.conversation_keys),
      'ab', KEYS[rec.abandon_key] or '', 'am', KEYS[rec.machine_key] or '',
      'nk', rec.number_key,
      'lv', lv_k and KEYS[lv_k] or '',
      'ca', ca_k and KEYS[ca_k] or '',
      'hc', rec.health_config or '', 'cp', rec.campaign_tag or '',
      -- the retention of the rules that decided (outcome.lua: the quiet logs live as long)
      'qt', plan.ttl_ms}
    if answer then
      f[#f + 1] = 'f:' .. plan.request_fp
      f[#f + 1] = answer
    end
    redis.call('HSET', KEYS[plan.call_key], unpack(f))
    redis.call('PEXPIRE', KEYS[plan.call_key], rec.ttl_ms)
  end
end

-- A deny's answer (an allow's went with the call record above).
if answer and allowed ~= 1 then
  redis.call('HSET', KEYS[plan.call_key], 'f:' .. plan.request_fp, answer)
  redis.call('PEXPIRE', KEYS[plan.call_key], plan.call_record.ttl_ms)
end

if plan.audit_key then
  local sa, sr = '', ''
  if shadow_reasons then
    sa = (#shadow_reasons == 0) and '1' or '0'
    sr = table.concat(shadow_reasons, ',')
  end
  redis.call('XADD', KEYS[plan.audit_key], '*', 't', 'decision', 'id', plan.decision_id,
    'allow', (allowed == 1) and '1' or '0', 'r', table.concat(reasons, ','), 'ch', chosen,
    'cs', table.concat(seen_counts, ','),
    'rver', plan.rules_version or '', 'sv', plan.shadow_version or '', 'sa', sa, 'sr', sr,
    'ov', override_id, 'ovr', table.concat(lifted, ','), 'j', plan.audit_record or ARGV[2])
end

return {allowed, reasons, details, chosen, 0, plan.decision_id, lifted}
