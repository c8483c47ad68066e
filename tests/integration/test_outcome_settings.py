"""outcome.lua with the outcome reader's health settings written in (stop 19:
scripts.outcome_with(callerid_health.lua_settings(policy))): for a call whose record
names those settings it uses them instead of GET + cjson.decode of the settings
record; the same figures, states and cool-downs, key for key."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta

import redis as syncredis

from dialguard import callerid_health as chh
from dialguard.decision import scripts
from dialguard.rules import CallerIdHealth, HealthRule

T0 = 1_795_000_000_000


def _rule(id_: str, metric: str, threshold: float, min_calls: int = 0) -> HealthRule:
    return HealthRule(id=id_, metric=metric, threshold=threshold, min_calls=min_calls,
                      cool_down=timedelta(minutes=7))


class _Rules:
    """What callerid_health reads of a Policy: its packs' health settings."""

    def __init__(self, health):
        self.caller_id_health = health


POLICIES = [
    _Rules([("p1", CallerIdHealth(window_calls=5, window_hours=1, short_answer_s=5, rules=(
        _rule("run", "consecutive_rejections", 3), _rule("sh", "short_answer_rate", 0.65, min_calls=3)))),
        ("odd 'pack'\\é", CallerIdHealth(window_calls=9, window_hours=2, short_answer_s=20,
                                          rejection_sip_codes=(403, 608), rejection_causes=(21, 34),
                                          rules=(_rule("rr", "rejection_rate", 0.35, min_calls=4),)))]),
    _Rules([]),  # the defaults
]

SAME = """
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local mine = {%s}
return (mine[1] == ARGV[1] and same(mine[2], cjson.decode(ARGV[2]))) and 1 or 0
"""


def test_the_settings_written_in_are_what_the_record_decodes_to(settings):
    r = syncredis.Redis.from_url(settings.redis_url)
    for p in POLICIES:
        assert r.eval(SAME % chh.lua_settings(p), 0, chh.config_id(p), chh.config_json(p)) == 1
    # and the comparison sees a difference
    other = json.dumps([dict(json.loads(chh.config_json(POLICIES[0]))[0], ss=6)])
    assert r.eval(SAME % chh.lua_settings(POLICIES[0]), 0, chh.config_id(POLICIES[0]), other) == 0


def _outcome(r, sha, pfx: str, i: int, hc: str, now: int, kind: int) -> list:
    ans, talk, sip, cause = [(True, 30, 200, 16), (True, 2, 200, 16), (False, 0, 403, 21), (False, 0, 486, 17),
                             (False, 0, None, 34), (False, 0, None, None)][kind]
    call = f"{pfx}:call:{i}"
    r.hset(call, mapping={"did": f"d{i}", "ch": f"cid{i % 3}", "hc": hc, "cp": "camp"})
    return r.evalsha(sha, 2, call, f"{pfx}:{{g}}:audit", "failed", str(now), "0", "0", "", "1000", "{}", f"o{i}", "",
                     chh.Entry(now, ans, talk, sip, cause).encode(), pfx, f"a{i}", str(now), "n1")


def _keys(r, pfx: str) -> dict:
    out = {}
    for k in r.scan_iter(match=pfx + ":*", count=1000):
        ty = r.type(k).decode()
        v = {"hash": r.hgetall, "list": lambda x: r.lrange(x, 0, -1), "zset": lambda x: r.zrange(x, 0, -1, True),
             "set": r.smembers, "string": r.get,
             "stream": lambda x: [f for _id, f in r.xrange(x)]}[ty](k)
        out[k.decode()[len(pfx):]] = (ty, repr(v).replace(pfx, "P"), r.pttl(k) > 0)
    return out


def test_the_same_keys_either_way(settings):
    """The same outcomes (rejections that cool caller IDs down, short answers, late ones)
    through outcome.lua as the file is (GET + decode) and with the settings written in:
    the same replies and every key the same."""
    r = syncredis.Redis.from_url(settings.redis_url)
    for p in POLICIES:
        hc = chh.config_id(p)
        runs = []
        for script in (scripts.OUTCOME, scripts.outcome_with(chh.lua_settings(p))):
            pfx = f"dgset:{uuid.uuid4().hex[:10]}"
            r.set(f"{pfx}:{{g}}:hcfg:{hc}", chh.config_json(p))
            sha = r.script_load(script.source)
            rnd = random.Random(7)
            now = T0
            replies = []
            for i in range(120):
                now += rnd.choice([1000, 60_000, 600_000])
                late = rnd.random() < 0.05
                replies.append(_outcome(r, sha, pfx, i, hc, now - (3_600_000 if late else 0), rnd.randrange(6)))
            runs.append(([x[0] for x in replies], _keys(r, pfx)))
        assert runs[0] == runs[1]
        assert all(s == 1 for s in runs[0][0])
        assert any(k.endswith(":coolwhy") for k in runs[0][1]) == bool(p.caller_id_health)


def test_the_settings_record_is_no_longer_decoded_but_still_read(settings):
    """With the settings written in, outcome.lua does not decode the record (one that does
    not parse no longer fails the health part); a record that is gone still leaves the
    defaults, as before (the state names no settings)."""
    r = syncredis.Redis.from_url(settings.redis_url)
    p = POLICIES[0]
    hc = chh.config_id(p)
    written = scripts.outcome_with(chh.lua_settings(p))
    for script, want in ((scripts.OUTCOME, 4), (written, 1)):
        pfx = f"dgset:{uuid.uuid4().hex[:10]}"
        r.set(f"{pfx}:{{g}}:hcfg:{hc}", "not json")
        assert _outcome(r, r.script_load(script.source), pfx, 0, hc, T0, 2)[0] == want
    states = []
    for script in (scripts.OUTCOME, written):
        pfx = f"dgset:{uuid.uuid4().hex[:10]}"
        assert _outcome(r, r.script_load(script.source), pfx, 0, hc, T0, 2)[0] == 1
        states.append(r.hget(f"{pfx}:{{c:cid0}}:h", "s:"))
    assert states[0] == states[1] and states[0].startswith(b"|1|")  # the defaults' pack '', no settings id


def test_the_file_as_it_is_has_no_settings():
    assert "{--[[callerid_health.lua_settings]]}" in scripts.OUTCOME.source
    assert scripts.outcome_with(chh.lua_settings(POLICIES[0])) is scripts.outcome_with(chh.lua_settings(POLICIES[0]))


async def test_the_engine_loads_its_outcome_script_and_its_outcomes_run_it(make_engine, rules_file):
    """Engine.create loads outcome.lua with its rules' settings written in (a first
    outcome needs no NOSCRIPT round trip), and report_outcome runs that script: a
    record of its settings that does not parse is not read."""
    from dialguard.decision.models import DecisionRequest, Outcome

    window = random.Random().randrange(30, 1000)  # settings of this test's own: a script no other test loaded
    policy = rules_file("pack: settings-test\nversion: '1'\ndefault_region: CN\ncaller_id:\n  require_approved: false\n"
                        f"  health:\n    window_calls: {window}\n    window_hours: 24\n    short_answer_s: 5\n"
                        "    rules:\n      - {id: run, metric: consecutive_rejections, threshold: 3, cool_down: 1h}\n")
    e = await make_engine(policy)
    written = scripts.outcome_with(chh.lua_settings(e.policy))
    assert await e.redis.script_exists(written.sha) == [True]
    await e.set_campaign("c1")
    await e.approve_caller_id("+862150001234")  # a presented caller ID is checked under every pack
    d = await e.decide(DecisionRequest(number="13800131234", campaign="c1", agent="a1", caller_id="+862150001234",
                                       call_id="call-s1"))
    assert d.allowed, d
    await e.redis.set(e.keys.health_config(chh.config_id(e.policy)), "{not json")
    assert await e.report_outcome("call-s1", Outcome(result="failed", hangup_cause=21, sip_code=403))
    h = await e.redis.hgetall(e.keys.cid_health(e.keys.cid_tag("+862150001234")))
    assert h[b"calls:settings-test"] == b"1" and h[b"s:settings-test"].startswith(chh.config_id(e.policy).encode())
