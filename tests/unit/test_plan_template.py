"""Compiled plans (Engine._plan_compiled) equal the build_plan ones, field for field.

The reference is plan_built below: build_plan's dict, JSON-encoded, with the
audit record as json.dumps of a dict (the engine writes it as text,
dialguard/decision/record.py). Over generated requests (every shipped pack alone and
combined, valid and invalid numbers of several countries, subjects, call ids,
caller IDs given or picked from pools with duplicates, odd campaign, agent and
prefix text, times across a year and DST changes, audit and rules versions on
and off, shadow rules of another policy or none) the compiled plan must give the
same KEYS, the same decoded ARGV[1] (MessagePack against build_plan's JSON)
(the audit record moved to ARGV[2], byte for byte what _encode wrote), the
same check metadata and candidates.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import msgpack
import pytest

import dialguard.decision.decider as decider_mod
from dialguard.config import Settings
from dialguard.decision.models import DecisionRequest, sort_reasons
from dialguard.decision.plan import build_plan, ms
from dialguard.engine import Engine, _Context, new_id
from dialguard.decision.decider import party_hash
from dialguard.numbers import keyed_hash, parse_number
from dialguard.rules import Policy
from dialguard.timerules import time_reasons

_encode = json.JSONEncoder(separators=(",", ":")).encode


def plan_built(eng: Engine, req: DecisionRequest, ctx: _Context, info, did: str, now: datetime,
               number_tag: str, pre: list[str], candidates: list, check_cid: bool, est=()):
    """The plan through build_plan, as the engine would send it (shadow rules included)."""
    policy = ctx.policy
    payload = None
    if eng.audit:
        payload = _encode({
            "did": did, "at": ms(now), "ts": int(decider_mod.time.time() * 1000), "n": number_tag,
            "ne": eng.sealer.seal(info.e164) if info.e164 else None,
            "campaign": req.campaign, "agent": req.agent, "subject": req.subject,
            "call_id": req.call_id, "pre": pre,
            "cid_req": eng.sealer.seal(req.caller_id) if req.caller_id else None,
            **({"est": sorted(est)} if est else {}),
            # the stated location and the party (hashed), when given
            **({"region": req.region} if req.region is not None else {}),
            **({"postal": req.postal_code} if req.postal_code is not None else {}),
            **({"party": party_hash(eng.settings.hash_secret, req.party)} if req.party is not None else {}),
            "rules": policy.name, "rv": policy.version_hash, "node": eng.settings.node,
            "cal": int(ctx.cver) if ctx.cver else None,
        })
    shadow = None
    if ctx.shadow is not None:
        spre = [r for r in pre if r not in ("outside_hours", "holiday", "unknown_timezone")]
        if info.valid:
            spre += time_reasons(ctx.shadow, info.timezones, now, ctx.cals)[0]
        shadow = (ctx.shadow, ctx.sver, sort_reasons(spre))
    return build_plan(
        policy=policy, keys=eng.keys, info=info, number_tag=number_tag, campaign=req.campaign, agent=req.agent,
        subject=req.subject, decision_id=did, now=now, candidates=candidates, check_caller_id=check_cid,
        site_timezone=eng.settings.site_timezone, call_id=req.call_id, pre_reasons=list(pre),
        audit_payload=payload, audit_max=eng.settings.audit_backlog_max if eng.audit else None,
        request_fp=eng._fingerprint(req, info) or None,
        versions=(ctx.rvs, ctx.rver) if eng.versioned else None, calendar_version=ctx.cver, shadow=shadow,
        party_tag=eng.keys.party_tag(req.party) if req.party is not None and info.valid else None,
        retention_ms=eng._retention_ms)

PACKS = ["cn-default", "cn-carrier", "us-tcpa", "us-regf", "us-fl-ftsa", "uk-ofcom"]
POLICIES = [[p] for p in PACKS] + [["cn-default", "cn-carrier"], ["us-tcpa", "us-regf", "us-fl-ftsa"],
                                   ["uk-ofcom", "us-regf"], ["cn-default", "us-regf"],
                                   ["us-tcpa", "us-ok", "us-la", "us-ms"], ["us-md", "us-wa", "us-tx", "us-al"]]
ODD = ["c1", "spring sale", 'q"uote', "br{ace}s", "uni-码", "back\\slash", "tab\there", "{x}"]


def numbers(rnd: random.Random) -> str:
    return rnd.choice([
        lambda: f"+86138{rnd.randrange(10**8):08d}",
        lambda: f"138 {rnd.randrange(10**4):04d} {rnd.randrange(10**4):04d}",
        lambda: f"+8610{rnd.randrange(10**8):08d}",
        lambda: f"+1 202 555 {rnd.randrange(10**4):04d}",
        lambda: f"+1{rnd.randrange(2, 10)}{rnd.randrange(10**9):09d}",
        lambda: f"+4420{rnd.randrange(10**8):08d}",
        lambda: f"+447{rnd.randrange(10**9):09d}",
        lambda: "+19005551234",  # premium
        lambda: "110",
        lambda: "not a number",
        lambda: f"+{rnd.randrange(10**12)}",
    ])()


class _Clock:
    """time for the decider with a fixed wall clock (the audit record's ts)."""

    def __init__(self, real):
        self._real = real

    def time(self):
        return 1_790_000_000.123

    def __getattr__(self, name):
        return getattr(self._real, name)


class _Sealer:
    def seal(self, text):  # deterministic, and with characters JSON escapes
        return "S/" + text + '"\\'


@pytest.fixture
def fixed_time(monkeypatch):
    monkeypatch.setattr(decider_mod, "time", _Clock(decider_mod.time))


_loaded: dict[tuple, Policy] = {}


def load_policy(refs: list[str]) -> Policy:
    """Policy.load, once per set of packs for the module: parsing the packs' YAML
    was most of this test's time (2,900 loads); the plans compared are built the
    same way from whichever Policy object (engines share one in production too)."""
    key = tuple(refs)
    if key not in _loaded:
        _loaded[key] = Policy.load(refs)
    return _loaded[key]


@pytest.mark.parametrize("seed", range(8))
def test_compiled_plan_equals_build_plan(seed, fixed_time):
    rnd = random.Random(seed)
    # "\x00": the keys cannot be formatted as one joined string (PlanTemplate.fill)
    prefix = rnd.choice(["dg", "dgtest:abc", 'p{x}"q', "пре", "p\x00q"])
    base = Settings()
    for _ in range(250):
        refs = rnd.choice(POLICIES)
        policy = load_policy(refs)
        settings = replace(base, site_timezone=rnd.choice(["Asia/Shanghai", "America/New_York", "Europe/London"]),
                           node=rnd.choice(["vm", 'n"1', "节点"]), audit_backlog_max=rnd.choice([0, 1000]))
        eng = Engine(None, settings, policy, prefix=prefix, audit=rnd.random() < 0.8,
                     versioned=rnd.random() < 0.7, skip_caller_id_without_pool=rnd.random() < 0.5)
        eng.sealer = _Sealer()
        pool = tuple(rnd.choice(["+8613800138000", "+8613800138001", "+12025550100", "+442071838750"])
                     for _ in range(rnd.choice([0, 0, 1, 3, 9])))  # duplicates on purpose
        shadow = load_policy(rnd.choice(POLICIES)) if rnd.random() < 0.4 else None
        ctx = _Context(1e18, policy, pool, rnd.choice(["|", "3|", "3|4"]), rnd.choice(["", "3"]), shadow,
                       rnd.choice(["4", 'v"5']) if shadow else "", rnd.choice(["", "2", "17"]))
        req = DecisionRequest(
            number=numbers(rnd), campaign=rnd.choice(ODD), agent=rnd.choice(ODD + ["a1", "a2"]),
            caller_id=rnd.choice([None, None, "+8613800138000", "+12025550100", "bad"]),
            subject=rnd.choice([None, None, "debt-17", 'sub"j']),
            call_id=rnd.choice([None, "1712.33", "ch{1}", 'c"id', "c\x00id"]),
            region=rnd.choice([None, None, "US-FL", "CN-GD"]), postal_code=rnd.choice([None, None, "33101"]),
            party=rnd.choice([None, None, "acct-9", 'p"1']))
        now = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rnd.randrange(366 * 86400))
        info = parse_number(req.number, eng.default_region)
        did = new_id()
        reasons, why = [], {}
        if not info.valid:
            tag = keyed_hash(settings.hash_secret, "raw:" + req.number)
            reasons.append("invalid_number")
        else:
            tag = eng.keys.number_tag(info.e164)
            reasons += time_reasons(policy, info.timezones, now)[0]
        cands, check_cid = eng._candidates(req, policy, pool, reasons, why)
        pre = sort_reasons(reasons)
        est = rnd.choice([(), (), ("CN",), ("CN", "US-LA")])  # calendars estimated (unknown_year)
        ptag = eng.keys.party_tag(req.party) if req.party is not None and info.valid else None
        fast = eng._plan_compiled(req, ctx, info, did, now, tag, pre, cands, check_cid, est, party_tag=ptag)
        slow = plan_built(eng, req, ctx, info, did, now, tag, pre, cands, check_cid, est)
        assert fast.keys == slow.keys
        body = json.loads(slow.args()[0])
        payload = body.pop("audit_record", None)
        assert isinstance(fast.args()[0], bytes) and fast.args()[0][:1] != b"{"  # MessagePack, not JSON
        assert msgpack.unpackb(fast.args()[0]) == body
        if eng.audit:
            assert fast.args()[1] == payload  # byte for byte
        else:
            assert payload is None and len(fast.args()) == 1
        assert fast.checks == slow.checks
        assert fast.candidates == slow.candidates


def test_template_is_reused_per_shape(fixed_time):
    eng = Engine(None, Settings(), Policy.load("cn-default"), prefix="dg", skip_caller_id_without_pool=True)
    ctx = _Context(1e18, eng.policy, (), "|", "", None, "")
    now = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)
    for n in ("+8613812345678", "+8613912345678"):
        req = DecisionRequest(number=n, campaign="c", agent="a")
        info = parse_number(n, "CN")
        eng._plan_compiled(req, ctx, info, new_id(), now, eng.keys.number_tag(info.e164), [], [], False)
    assert len(eng._templates) == 1


def test_shadow_plan_is_compiled(fixed_time):
    """With shadow rules the compiled plan carries them (`shadow`, `shadow_version`) and is reused per shape."""
    eng = Engine(None, Settings(), Policy.load("cn-default"), prefix="dg", skip_caller_id_without_pool=True)
    ctx = _Context(1e18, eng.policy, (), "3|4", "3", Policy.load("cn-carrier"), "4")
    now = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)
    for n in ("+8613812345678", "+8613912345678"):
        req = DecisionRequest(number=n, campaign="c", agent="a")
        info = parse_number(n, "CN")
        plan, _why = eng._plan(req, ctx, info, new_id(), now)
        body = msgpack.unpackb(plan.args()[0])
        assert body["shadow_version"] == "4" and body["shadow"]["checks"] and "audit_key" not in body["shadow"]
    assert len(eng._templates) == 1


@pytest.mark.parametrize("did, now", [
    ("d-1", datetime(2026, 11, 23, 2, tzinfo=timezone.utc)),  # a decision id of another length
    ("é" * 28, datetime(2026, 11, 23, 2, tzinfo=timezone.utc)),  # not ASCII
    (None, datetime(2000, 6, 5, 2, tzinfo=timezone.utc)),  # 12-digit ms
    (None, datetime(2287, 1, 5, 2, tzinfo=timezone.utc)),  # 14-digit ms
])
def test_values_the_compiled_plan_has_no_room_for_get_build_plans_json(did, now, fixed_time):
    """Every string header of the compiled plan is written for fixed lengths: a
    request whose values differ is refused by fill (PlanFieldError), and the
    engine sends build_plan's JSON plan instead, the same plan."""
    from dialguard.decision.plan import PlanFieldError

    eng = Engine(None, Settings(), Policy.load("cn-default"), prefix="dg", skip_caller_id_without_pool=True)
    eng.sealer = _Sealer()
    ctx = _Context(1e18, eng.policy, (), "|", "", None, "")
    n = "+8613812345678"
    info = parse_number(n, "CN")
    tag = eng.keys.number_tag(info.e164)
    req = DecisionRequest(number=n, campaign="c", agent="a", call_id="call-1")
    did = did or new_id()
    plan = eng._plan_compiled(req, ctx, info, did, now, tag, [], [], False)
    assert isinstance(plan.args()[0], str) and plan.args()[0][:1] == "{"
    slow = plan_built(eng, req, ctx, info, did, now, tag, [], [], False)
    assert plan.keys == slow.keys
    got, want = json.loads(plan.args()[0]), json.loads(slow.args()[0])
    got.pop("audit_record"), want.pop("audit_record")  # (their wall-clock ts may differ)
    assert got == want
    tpl = next(iter(eng._templates.values()))
    with pytest.raises(PlanFieldError):
        tpl.fill(now=now, decision_id=did, pre=[], tag=tag, agent_hash="a" * 16, sub_hash="b" * 16, cand_tags=[],
                 call_id="call-1", payload=None, request_fp="c" * 32)
    # and the usual values fit
    keys, argv = tpl.fill(now=datetime(2026, 11, 23, 2, tzinfo=timezone.utc), decision_id=new_id(), pre=["dnc"],
                          tag=tag, agent_hash="a" * 16, sub_hash="b" * 16, cand_tags=[], call_id="call-1",
                          payload=None, request_fp="c" * 32)
    assert msgpack.unpackb(argv[0])["pre_reasons"] == ["dnc"]
