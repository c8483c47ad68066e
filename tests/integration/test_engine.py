"""The engine against a real Redis: every rule, every reason, next_eligible_at."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.decision.plan import ms

UTC = timezone.utc
NUM = "13800138000"  # a Shanghai mobile


def sh(y, mo, d, h, mi=0, s=0):
    """Shanghai wall time -> UTC."""
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC) - timedelta(hours=8)


def req(number=NUM, campaign="c1", agent="a1", **kw):
    return DecisionRequest(number=number, campaign=campaign, agent=agent, **kw)


POOL = "caller_id: {require_approved: true, pool: ['+862150000001', '+862150000002']}\n"
OPEN = "pack: open\ndefault_region: CN\n"


async def cn_engine(make_engine, campaigns=("c1", "c2", "c3", "c4")):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    for c in campaigns:
        await e.set_campaign(c)
    return e


async def test_issue_example_next_eligible_next_morning(make_engine):
    e = await cn_engine(make_engine)
    # Mon 2026-09-28 (a working day): 09:00 and 11:00, asked again at 12:00
    assert (await e.decide(req(campaign="c1"), now=sh(2026, 9, 28, 9))).allowed
    assert (await e.decide(req(campaign="c2"), now=sh(2026, 9, 28, 11))).allowed
    d = await e.decide(req(campaign="c3"), now=sh(2026, 9, 28, 12))
    assert d.decision == "deny" and d.reasons == ["attempt_cap"]
    assert d.next_eligible_at == sh(2026, 9, 29, 9)


async def test_next_eligible_skips_holidays(make_engine):
    e = await cn_engine(make_engine)
    # Wed 2026-09-30: next day is National Day; Oct 1-7 off -> Thu Oct 8 09:00
    assert (await e.decide(req(campaign="c1"), now=sh(2026, 9, 30, 9))).allowed
    assert (await e.decide(req(campaign="c2"), now=sh(2026, 9, 30, 11))).allowed
    d = await e.decide(req(campaign="c3"), now=sh(2026, 9, 30, 12))
    assert d.next_eligible_at == sh(2026, 10, 8, 9)


async def test_rolling_window_edge_is_exact(make_engine):
    e = await cn_engine(make_engine)
    t1 = sh(2026, 11, 23, 10, 0, 0)
    assert (await e.decide(req(campaign="c1"), now=t1)).allowed
    assert (await e.decide(req(campaign="c2"), now=t1 + timedelta(hours=1))).allowed
    # one second before the oldest leaves the window: still capped
    d = await e.decide(req(campaign="c3"), now=t1 + timedelta(hours=24, seconds=-1))
    assert d.reasons == ["attempt_cap"] and d.next_eligible_at == t1 + timedelta(hours=24)
    # exactly W later the oldest no longer counts
    assert (await e.decide(req(campaign="c3"), now=t1 + timedelta(hours=24))).allowed


async def test_campaign_lifetime_cap_never_lifts(make_engine):
    e = await cn_engine(make_engine)
    assert (await e.decide(req(), now=sh(2026, 11, 2, 9))).allowed
    assert (await e.decide(req(), now=sh(2026, 11, 3, 10))).allowed
    d = await e.decide(req(), now=sh(2026, 11, 5, 10))
    assert d.reasons == ["attempt_cap"] and d.next_eligible_at is None


async def test_all_reasons_in_spec_order(make_engine):
    e = await cn_engine(make_engine)
    at = sh(2026, 11, 23, 9)
    assert (await e.decide(req(campaign="c1"), now=at)).allowed
    assert (await e.decide(req(campaign="c2"), now=at + timedelta(minutes=1))).allowed
    await e.dnc_add(NUM)
    await e.complaint(NUM)
    await e.opt_out(NUM)
    await e.pause("campaign", "c3")
    d = await e.decide(req(campaign="c3"), now=sh(2026, 11, 23, 19))
    assert d.reasons == ["paused", "dnc", "opted_out", "complained", "outside_hours", "attempt_cap"]
    assert d.next_eligible_at is None
    assert set(d.explanations) == set(d.reasons)


async def test_dnc_global_and_per_campaign_and_removal(make_engine):
    e = await cn_engine(make_engine)
    at = sh(2026, 11, 23, 10)
    await e.dnc_add(NUM, campaign="c1")
    assert (await e.decide(req(campaign="c1"), now=at)).reasons == ["dnc"]
    assert (await e.decide(req(campaign="c2"), now=at)).allowed
    await e.dnc_remove(NUM, campaign="c1")
    await e.dnc_add(NUM)
    d = await e.decide(req(campaign="c3"), now=at)
    assert d.reasons == ["dnc"] and d.next_eligible_at is None
    await e.dnc_remove(NUM)
    assert (await e.decide(req(campaign="c3"), now=at)).allowed


async def test_consent_required(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "consent_required: true\n"), skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(), now=at)).reasons == ["no_consent"]
    await e.consent(NUM)
    assert (await e.decide(req(), now=at)).allowed
    await e.consent_revoke(NUM)
    assert (await e.decide(req(), now=at)).reasons == ["no_consent"]


async def test_kill_switches(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + POOL))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    await e.pause("all")
    assert (await e.decide(req(), now=at)).reasons == ["paused"]
    await e.resume("all")
    await e.pause("campaign", "c1")
    assert (await e.decide(req(), now=at)).reasons == ["paused"]
    assert "paused" not in (await e.decide(req(campaign="c2"), now=at)).reasons
    await e.resume("campaign", "c1")
    # a paused caller ID is skipped when the guard picks from the pool
    await e.pause("caller_id", "+862150000001")
    d = await e.decide(req(number="13800138001"), now=at)
    assert d.allowed and d.caller_id == "+862150000002"
    await e.pause("caller_id", "+862150000002")
    assert (await e.decide(req(number="13800138002"), now=at)).reasons == ["paused"]


async def test_campaign_approval_and_date_range(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN), skip_caller_id_without_pool=True)
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(campaign="unknown"), now=at)).reasons == ["campaign_not_approved"]
    await e.set_campaign("c1", approved=False)
    assert (await e.decide(req(), now=at)).reasons == ["campaign_not_approved"]
    await e.set_campaign("c1", start=at + timedelta(days=1), end=at + timedelta(days=2))
    assert (await e.decide(req(), now=at)).reasons == ["campaign_not_approved"]
    assert (await e.decide(req(), now=at + timedelta(days=1))).allowed
    assert (await e.decide(req(), now=at + timedelta(days=2))).reasons == ["campaign_not_approved"]


async def test_caller_id_approval_and_cooldown(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "caller_id: {require_approved: true}\n"))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(caller_id="+862150000009"), now=at)).reasons == ["caller_id_not_approved"]
    assert (await e.decide(req(), now=at)).reasons == ["caller_id_not_approved"]  # none given, no pool
    assert (await e.decide(req(caller_id="not a number"), now=at)).reasons == ["caller_id_not_approved"]
    await e.approve_caller_id("+862150000009")
    d = await e.decide(req(caller_id="021 5000 0009"), now=at)
    assert d.allowed and d.caller_id == "+862150000009"
    await e.cooldown_caller_id("+862150000009", until=at + timedelta(hours=1))
    assert (await e.decide(req(number="13800138001", caller_id="+862150000009"), now=at)).reasons == [
        "caller_id_not_approved"]
    assert (await e.decide(req(number="13800138001", caller_id="+862150000009"),
                           now=at + timedelta(hours=1))).allowed


async def test_caller_id_rates_and_pool_rotation(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "caller_id: {require_approved: true, per_minute: 2, per_hour: 3,"
                                            " pool: ['+862150000001']}\n"))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    nums = [f"1380013{i:04d}" for i in range(10)]
    assert (await e.decide(req(number=nums[0]), now=at)).allowed
    assert (await e.decide(req(number=nums[1]), now=at + timedelta(seconds=10))).allowed
    d = await e.decide(req(number=nums[2]), now=at + timedelta(seconds=20))
    assert d.reasons == ["caller_id_rate"] and d.next_eligible_at == at + timedelta(minutes=1)
    assert (await e.decide(req(number=nums[2]), now=at + timedelta(minutes=1))).allowed
    d = await e.decide(req(number=nums[3]), now=at + timedelta(minutes=5))
    assert d.reasons == ["caller_id_rate"] and d.next_eligible_at == at + timedelta(hours=1)


async def test_caller_id_per_day_is_a_site_local_day(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "caller_id: {per_day: 1, pool: ['+862150000001']}\n"))
    await e.set_campaign("c1")
    assert (await e.decide(req(number="13800130001"), now=sh(2026, 11, 23, 23))).allowed
    d = await e.decide(req(number="13800130002"), now=sh(2026, 11, 23, 23, 30))
    assert d.reasons == ["caller_id_rate"] and d.next_eligible_at == sh(2026, 11, 24, 0)


async def test_concurrency_lease_released_by_outcome_or_expiry(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "max_duration_s: 60\n"
                                            "caller_id: {concurrency: 1, pool: ['+862150000001']}\n"))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(number="13800130001", call_id="x1"), now=at)).allowed
    d = await e.decide(req(number="13800130002", call_id="x2"), now=at + timedelta(seconds=5))
    assert d.reasons == ["caller_id_concurrency"]
    # the lease lasts max duration + 10 minutes when no report ever comes
    assert d.next_eligible_at == at + timedelta(seconds=660)
    assert await e.report_outcome("x1", Outcome(result="conversation", talk_s=30), now=at + timedelta(seconds=40))
    assert (await e.decide(req(number="13800130002", call_id="x2"), now=at + timedelta(seconds=41))).allowed
    # x2 never reports: the lease expires on its own
    d = await e.decide(req(number="13800130003", call_id="x3"), now=at + timedelta(seconds=100))
    assert d.reasons == ["caller_id_concurrency"]
    assert (await e.decide(req(number="13800130003", call_id="x3"), now=at + timedelta(seconds=41 + 660))).allowed


async def test_agent_cap_per_local_day(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "agent: {per_day: 3}\n"), skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    for i in range(3):
        assert (await e.decide(req(number=f"1380013100{i}"), now=at)).allowed
    d = await e.decide(req(number="13800131009"), now=at)
    assert d.reasons == ["agent_cap"] and d.next_eligible_at == sh(2026, 11, 24, 0)
    assert (await e.decide(req(number="13800131009", agent="a2"), now=at)).allowed
    assert (await e.decide(req(number="13800131009"), now=sh(2026, 11, 24, 0))).allowed


async def test_min_interval(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "min_interval: 30m\n"), skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(), now=at)).allowed
    d = await e.decide(req(), now=at + timedelta(minutes=29, seconds=59))
    assert d.reasons == ["min_interval"] and d.next_eligible_at == at + timedelta(minutes=30)
    assert (await e.decide(req(), now=at + timedelta(minutes=30))).allowed


async def test_quiet_after_conversation_counts_local_days(make_engine, rules_file):
    e = await make_engine(rules_file(
        "pack: q\ndefault_region: US\nhours: {weekly: {all: ['08:00-21:00']}}\n"
        "quiet_after_conversation: {scope: number_subject, window: {days: 7}}\n"),
        skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    n = "+12025550123"  # America/New_York
    t = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 14:00 EST Monday
    assert (await e.decide(req(number=n, subject="debt-1", call_id="q1"), now=t)).allowed
    # conversation at 20:00 EST Monday = Tuesday 01:00 UTC: Monday is day 1
    assert await e.report_outcome("q1", Outcome(result="conversation", talk_s=90),
                                  now=datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    d = await e.decide(req(number=n, subject="debt-1"), now=datetime(2026, 3, 8, 22, tzinfo=UTC))  # Sun 18:00 EDT
    assert d.reasons == ["post_conversation_quiet"]
    assert d.next_eligible_at == datetime(2026, 3, 9, 12, tzinfo=UTC)  # Mon 08:00 EDT (00:00 is outside hours)
    # another debt is not in quiet
    assert (await e.decide(req(number=n, subject="debt-2"), now=datetime(2026, 3, 8, 22, tzinfo=UTC))).allowed


async def test_abandon_and_amd_quiet(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "quiet_after_abandon: {abandoned: 72h, amd: 24h}\n"),
                          skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(call_id="ab1"), now=at)).allowed
    await e.report_outcome("ab1", Outcome(result="abandoned"), now=at + timedelta(seconds=20))
    d = await e.decide(req(), now=at + timedelta(hours=1))
    assert d.reasons == ["post_abandon_quiet"] and d.next_eligible_at == at + timedelta(hours=72, seconds=20)
    other = "13800138009"
    assert (await e.decide(req(number=other, call_id="am1"), now=at)).allowed
    await e.report_outcome("am1", Outcome(result="amd"), now=at + timedelta(seconds=5))
    d = await e.decide(req(number=other), now=at + timedelta(hours=1))
    assert d.reasons == ["post_abandon_quiet"] and d.next_eligible_at == at + timedelta(hours=24, seconds=5)


async def test_uncounted_outcomes_leave_the_count(make_engine, rules_file):
    e = await make_engine(rules_file(
        OPEN + "caps:\n  - {id: noconn, max: 2, window: {rolling: 24h}, uncounted_outcomes: [busy, failed]}\n"
               "  - {id: all, max: 3, window: {rolling: 24h}}\n"), skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    assert (await e.decide(req(call_id="u1"), now=at)).allowed
    assert await e.report_outcome("u1", Outcome(result="busy"), now=at + timedelta(seconds=5))
    assert not await e.report_outcome("u1", Outcome(result="busy"), now=at + timedelta(seconds=6))  # once
    assert (await e.decide(req(call_id="u2"), now=at + timedelta(minutes=1))).allowed
    await e.report_outcome("u2", Outcome(result="no_answer"), now=at + timedelta(minutes=2))
    assert (await e.decide(req(call_id="u3"), now=at + timedelta(minutes=3))).allowed
    # noconn counts u2 and u3 (busy u1 excluded) -> full; `all` counts 3 -> full
    d = await e.decide(req(call_id="u4"), now=at + timedelta(minutes=4))
    assert d.reasons == ["attempt_cap"]
    assert d.next_eligible_at == at + timedelta(hours=24, minutes=1)  # both lift when u1/u2 leave


async def test_same_call_id_is_idempotent(make_engine):
    e = await cn_engine(make_engine)
    at = sh(2026, 11, 23, 10)
    d1 = await e.decide(req(call_id="dup"), now=at)
    d2 = await e.decide(req(call_id="dup"), now=at + timedelta(seconds=1))
    assert d1.allowed and d2.allowed and d1.decision_id == d2.decision_id
    assert (await e.decide(req(call_id="other"), now=at)).allowed  # only one counted so far
    assert (await e.decide(req(call_id="third"), now=at)).reasons == ["attempt_cap"]


async def test_invalid_numbers_are_denied_and_audited(make_engine):
    e = await cn_engine(make_engine)
    for bad in ("110", "abc", "+19005550123", ""):
        if not bad:
            with pytest.raises(ValueError):
                req(number=bad)
            continue
        d = await e.decide(req(number=bad), now=sh(2026, 11, 23, 10))
        assert d.reasons[0] == "invalid_number" and d.next_eligible_at is None and d.decision == "deny"


async def test_audit_record_in_same_step_and_no_plaintext_anywhere(make_engine):
    e = await cn_engine(make_engine)
    at = sh(2026, 11, 23, 10)
    d = await e.decide(req(call_id="au1", subject="order-9"), now=at)
    await e.report_outcome("au1", Outcome(result="conversation", talk_s=61), now=at + timedelta(minutes=2))
    await e.opt_out(NUM, now=at + timedelta(minutes=3))
    entries = await e.redis.xrange(e.keys.audit)
    entries = [e for e in entries if e[1][b"t"] != b"admin"]  # the campaign's approval
    kinds = [fields[b"t"] for _id, fields in entries]
    assert kinds == [b"decision", b"outcome", b"event"]
    rec = entries[0][1]
    assert rec[b"id"].decode() == d.decision_id and rec[b"allow"] == b"1"
    body = json.loads(rec[b"j"])
    assert body["campaign"] == "c1" and e.sealer.open(body["ne"]) == "+8613800138000"
    # no plaintext number in any key or value of the namespace
    digits = [b"13800138000", b"8613800138000"]
    async for key in e.redis.scan_iter(match=f"{e.keys.prefix}:*"):
        assert not any(dg in key for dg in digits), key
        typ = (await e.redis.type(key)).decode()
        dump = {"hash": e.redis.hgetall, "zset": lambda k: e.redis.zrange(k, 0, -1, withscores=True),
                "set": e.redis.smembers, "stream": e.redis.xrange, "string": e.redis.get}[typ]
        value = repr(await dump(key)).encode()
        assert not any(dg in value for dg in digits), key


async def test_noscript_is_handled(make_engine):
    e = await cn_engine(make_engine)
    await e.redis.script_flush()
    assert (await e.decide(req(), now=sh(2026, 11, 23, 10))).allowed


async def test_strictest_of_two_packs_wins(make_engine, rules_file):
    strict = rules_file("pack: strict\ndefault_region: CN\nhours: {zone: Asia/Shanghai, weekly: {all: ['10:00-12:00']}}\n"
                        "caps:\n  - {id: one, max: 1, window: {rolling: 1h}}\n")
    from dialguard.rules import Policy
    e = await make_engine(Policy(list(Policy.load("cn-default").packs) + list(strict.packs)),
                          skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    await e.set_campaign("c2")
    assert (await e.decide(req(), now=sh(2026, 11, 23, 9, 30))).reasons == ["outside_hours"]
    assert (await e.decide(req(), now=sh(2026, 11, 23, 10))).allowed
    d = await e.decide(req(campaign="c2"), now=sh(2026, 11, 23, 10, 30))
    assert d.reasons == ["attempt_cap"] and d.next_eligible_at == sh(2026, 11, 23, 11)


async def test_campaign_own_rules_and_sealed_caller_id_pool(make_engine, rules_file, tmp_path):
    e = await make_engine(rules_file(OPEN + "caller_id: {require_approved: true}\n"))
    strict = tmp_path / "strict.yaml"
    strict.write_text("pack: strict\ncaps:\n  - {id: one, max: 1, window: {rolling: 1h}}\nmax_duration_s: 30\n")
    at = sh(2026, 11, 23, 10)
    await e.set_campaign("c1")
    await e.set_campaign("c2", rules=f"cn-default,{strict}")
    # no pool anywhere yet
    assert (await e.decide(req(), now=at)).reasons == ["caller_id_not_approved"]
    await e.approve_caller_id("+862150000001", pool=True)            # global pool
    await e.approve_caller_id("+862150000002", campaign="c2")        # c2's own pool
    d = await e.decide(req(number="13800130001"), now=at)
    assert d.allowed and d.caller_id == "+862150000001" and d.max_duration_s == 0
    seen = {(await e.decide(req(number=f"1380013100{i}", campaign="c2"), now=at)).caller_id for i in range(4)}
    assert seen == {"+862150000001", "+862150000002"}
    d = await e.decide(req(number="13800131000", campaign="c2"), now=at + timedelta(minutes=1))
    assert d.reasons == ["attempt_cap"] and d.max_duration_s == 30  # c2's own strict pack applies
    # the pool holds no plaintext number
    raw = await e.redis.hgetall(e.keys.pool(None))
    assert raw and all(b"2150000001" not in v for v in raw.values())
    await e.remove_caller_id("+862150000002", campaign="c2")
    e._ctx_cache.clear()
    assert {(await e.decide(req(number=f"1380013200{i}", campaign="c2"), now=at)).caller_id
            for i in range(3)} == {"+862150000001"}
    with pytest.raises(ValueError):
        await e.set_campaign("c3", rules="no-such-pack")


async def test_large_pool_offers_a_window_and_rotates(make_engine, rules_file):
    pool = [f"+8621500{i:05d}" for i in range(40)]
    e = await make_engine(rules_file(OPEN + "caller_id: {per_hour: 1, pool: [" + ",".join(f"'{c}'" for c in pool) + "]}\n"))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)
    used = set()
    for i in range(40):
        d = await e.decide(req(number=f"138001{i:05d}"), now=at)
        assert d.allowed, (i, d.reasons)
        used.add(d.caller_id)
    assert used == set(pool)  # every caller ID used once (each allows 1 per hour)
    d = await e.decide(req(number="13800199999"), now=at)
    assert d.reasons == ["caller_id_rate"] and d.next_eligible_at == at + timedelta(hours=1)


async def test_pool_windows_survive_context_refreshes(make_engine, rules_file):
    """A context refreshed with the same pool keeps its tuple, so the windows of
    candidates built for it are reused, not built again and left behind (a new
    tuple every CONTEXT_TTL seconds piled up objects the GC's full passes walk);
    a pool that changes drops the old windows."""
    import dataclasses

    pool = [f"+8621500{i:05d}" for i in range(40)]
    e = await make_engine(rules_file(OPEN + "caller_id: {pool: [" + ",".join(f"'{c}'" for c in pool) + "]}\n"))
    await e.set_campaign("c1")
    at = sh(2026, 11, 23, 10)

    def expire():  # as CONTEXT_TTL passing
        e._ctx_cache["c1"] = dataclasses.replace(e._ctx_cache["c1"], expires=0.0)

    first = None
    for i in range(6):
        assert (await e.decide(req(number=f"138002{i:05d}"), now=at)).allowed
        ctx = e._ctx_cache["c1"]
        first = first or ctx.pool
        assert ctx.pool is first  # the same tuple across refreshes
        expire()
    assert len(e._windows) == 1 and len(e._shapes) == 6
    await e.approve_caller_id("+862150099999", pool=True)  # the pool changes
    assert "c1" not in e._ctx_cache  # (this engine's own change: its contexts dropped)
    assert (await e.decide(req(number="13800300000"), now=at)).allowed
    assert e._ctx_cache["c1"].pool is not first and "+862150099999" in e._ctx_cache["c1"].pool
    assert list(e._windows) == [id(e._ctx_cache["c1"].pool)] and len(e._shapes) == 1


async def test_live_calls_follow_the_rules_clock(make_engine, rules_file, settings):
    from dialguard.config import Settings
    e = await make_engine(rules_file(OPEN + "caller_id: {concurrency: 1, pool: ['+862150000001']}\n"),
                          settings=Settings(**{**settings.__dict__, "test_clock": True}))
    await e.set_campaign("c1")
    at = sh(2026, 9, 28, 10)
    await e.set_test_clock(at)
    assert (await e.decide(req(call_id="lc1"))).allowed
    assert await e.live_calls("+862150000001") == 1
    await e.report_outcome("lc1", Outcome(result="no_answer"))
    assert await e.live_calls("+862150000001") == 0


async def test_flags_carry_the_rules_clock_like_their_records(make_engine, rules_file, settings):
    """opt-out, complaint and consent stamp the flag with the event's time (the rules
    clock), the time its audit record carries and `counters rebuild` restores."""
    from dialguard.config import Settings
    e = await make_engine(rules_file(OPEN), settings=Settings(**{**settings.__dict__, "test_clock": True}))
    at = sh(2026, 9, 28, 10)
    await e.set_test_clock(at)
    await e.opt_out(NUM)
    await e.complaint(NUM, now=at + timedelta(minutes=1))
    await e.consent(NUM)
    flags = await e.redis.hgetall(e.keys.flags(e.keys.number_tag("+86" + NUM)))
    assert {k.decode(): int(v) for k, v in flags.items()} == {
        "optout": ms(at), "complaint": ms(at + timedelta(minutes=1)), "consent": ms(at)}
    records = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f.get(b"t") == b"event"]
    assert [r["at"] for r in records] == [ms(at), ms(at + timedelta(minutes=1)), ms(at)]


async def test_the_test_clock_is_off_the_production_path(make_engine, rules_file, settings):
    """Test clock off (production): a decision takes the wall clock and never
    reads the store's test clock (no read, no await: Store.now is not called);
    on, it is read once a decision."""
    import dataclasses

    e = await make_engine(rules_file(OPEN), skip_caller_id_without_pool=True,
                          settings=dataclasses.replace(settings, test_clock=False))
    await e.set_campaign("c1")
    await e.set_test_clock(datetime(2020, 1, 1, tzinfo=UTC))  # a clock that must be ignored
    reads = []

    async def now():
        reads.append(1)
        raise AssertionError("the test clock was read")

    e.now = now
    before = datetime.now(UTC)
    d = await e.decide(req())
    assert d.allowed and not reads
    rec = json.loads((await e.redis.xrange(e.keys.audit))[-1][1][b"j"])
    assert before.timestamp() * 1000 - 1 <= rec["at"] <= datetime.now(UTC).timestamp() * 1000 + 1

    on = await make_engine(rules_file(OPEN), skip_caller_id_without_pool=True,
                           settings=dataclasses.replace(settings, test_clock=True))
    await on.set_campaign("c1")
    at = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)
    await on.set_test_clock(at)
    await on.decide(req(number="13800138001"))
    rec = json.loads((await on.redis.xrange(on.keys.audit))[-1][1][b"j"])
    assert rec["at"] == ms(at)
