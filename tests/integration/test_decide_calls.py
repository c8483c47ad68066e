"""decide.lua with fewer Redis calls a check (issue 21), on the real Redis: the
leases of caller IDs that are only read are no longer trimmed (ZCOUNT from
(now ignores the ended ones; the key written is trimmed), the pool's health
penalties come from one hash (keys.cid_penalties) with the time each lapses,
and a store written before that hash has its penalties copied in once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dialguard.callerid_health import read_health
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.decision.plan import ms

UTC = timezone.utc
AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
X, Y, Z = "+862150000001", "+862150000002", "+862150000003"
OPEN = "pack: open\ndefault_region: CN\n"


def req(i: int) -> DecisionRequest:
    return DecisionRequest(number=f"1380013{i:04d}", campaign="c1", agent="a1", call_id=f"call-{i}")


async def test_ended_leases_are_not_counted_and_go_when_their_key_is_written(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + "max_duration_s: 60\n"
                                            f"caller_id: {{concurrency: 1, pool: ['{X}', '{Y}']}}\n"))
    await e.set_campaign("c1")
    live = {c: e.keys.cid_live(e.keys.cid_tag(c)) for c in (X, Y)}
    first = [await e.decide(req(i), now=AT + timedelta(seconds=i)) for i in range(2)]
    assert [d.allowed for d in first] == [True, True] and {d.caller_id for d in first} == {X, Y}
    busy = await e.decide(req(2), now=AT + timedelta(seconds=5))
    assert busy.reasons == ["caller_id_concurrency"]
    # no report ever comes: each lease ends at its score (max duration + 10 minutes)
    end = AT + timedelta(seconds=1 + 660)
    for c in (X, Y):
        assert await e.live_calls(c, now=end) == 0
    d = await e.decide(req(3), now=end)
    assert d.allowed
    other = Y if d.caller_id == X else X
    # the ended lease of the caller ID picked went when its key was written, the
    # other's is still there (only read) and counts for nothing
    assert [m.decode() for m in await e.redis.zrange(live[d.caller_id], 0, -1)] == [d.decision_id]
    assert await e.redis.zcard(live[other]) == 1
    assert await e.live_calls(other, now=end) == 0 and await e.live_calls(d.caller_id, now=end) == 1
    d2 = await e.decide(req(4), now=end)
    assert d2.allowed and d2.caller_id == other
    assert [m.decode() for m in await e.redis.zrange(live[other], 0, -1)] == [d2.decision_id]
    # both busy again
    assert (await e.decide(req(5), now=end + timedelta(seconds=1))).reasons == ["caller_id_concurrency"]


async def pool_engine(make_engine, rules_file):
    e = await make_engine(rules_file(OPEN + f"caller_id: {{pool: ['{X}', '{Y}', '{Z}']}}\n"))
    await e.set_campaign("c1")
    return e


async def test_the_pick_reads_every_penalty_from_one_hash_until_it_lapses(make_engine, rules_file):
    e = await pool_engine(make_engine, rules_file)
    tag = {c: e.keys.cid_tag(c) for c in (X, Y, Z)}
    later = ms(AT + timedelta(hours=1))
    await e.redis.hset(e.keys.cid_penalties, mapping={tag[X]: f"1.000|{later}", tag[Y]: f"0.500|{later}"})
    # every offered order (the round robin turns): Z, without a penalty
    picks = [(await e.decide(req(i), now=AT)).caller_id for i in range(6)]
    assert picks == [Z] * 6
    # X's lapses (its until is past), Z's is the highest now: X, then Y is never picked
    await e.redis.hset(e.keys.cid_penalties, mapping={tag[X]: f"1.000|{ms(AT)}", tag[Z]: f"0.700|{later}"})
    picks = [(await e.decide(req(10 + i), now=AT + timedelta(seconds=1))).caller_id for i in range(6)]
    assert picks == [X] * 6
    # past the until of every one: the offered order decides (ties), each gets its turn
    picks = [(await e.decide(req(20 + i), now=AT + timedelta(hours=1))).caller_id for i in range(6)]
    assert sorted(picks) == sorted([X, Y, Z] * 2)
    # what `callerid health` shows is what the pick uses
    rows = {r["caller_id"]: r["penalty"] for r in await read_health(e, [X, Y, Z], ms(AT))}
    assert rows == {X: 0.0, Y: 0.5, Z: 0.7}


async def test_outcomes_write_the_penalty_in_the_one_hash_and_a_cool_down_clears_it(make_engine, rules_file):
    e = await make_engine(rules_file(
        OPEN + f"caller_id:\n  pool: ['{X}', '{Y}']\n  health:\n    window_calls: 20\n    window_hours: 24\n"
        "    rules:\n      - {id: run, metric: consecutive_rejections, threshold: 3, cool_down: 1h}\n"))
    await e.set_campaign("c1")
    tx = e.keys.cid_tag(X)
    rejected = Outcome(result="failed", hangup_cause=21, sip_code=403)
    for i in range(1, 4):
        t = AT + timedelta(seconds=i)
        d = await e.decide(DecisionRequest(number=f"1380013{i:04d}", campaign="c1", agent="a1", caller_id=X,
                                           call_id=f"call-{i}"), now=t)
        assert d.allowed and d.caller_id == X
        assert await e.report_outcome(f"call-{i}", rejected, now=t)
        raw = await e.redis.hget(e.keys.cid_penalties, tx)
        health = await e.redis.hget(e.keys.cid_health(tx), "pen")
        if i < 3:
            # rejection rate 1 + a tenth per rejection in the run; it lapses as the health hash expires
            assert raw.decode() == f"{1 + 0.1 * i:.3f}|{ms(t) + 24 * 3_600_000 + 86_400_000}"
            assert float(health) == round(1 + 0.1 * i, 3)
        else:
            # the third rejection in a row cools X down: figures afresh, no penalty
            assert raw is None and float(health) == 0


async def test_penalties_of_a_store_before_the_hash_are_copied_once(make_engine, rules_file):
    e = await pool_engine(make_engine, rules_file)
    # the copy dates a penalty by the rules clock: held at the decisions' time, so that the
    # test does not depend on the date it runs at
    e.settings = e.settings.__class__(**{**e.settings.__dict__, "test_clock": True})
    await e.set_test_clock(AT)
    tag = {c: e.keys.cid_tag(c) for c in (X, Y, Z)}
    # as outcome.lua wrote them before: `pen` of each caller ID's health hash, expiring
    for c in (X, Y):
        await e.redis.hset(e.keys.cid_health(tag[c]), mapping={"pen": "2.000", "calls:": "5"})
        await e.redis.pexpire(e.keys.cid_health(tag[c]), 86_400_000)
    # X's penalty in the hash is newer than its health hash's: it is kept
    far = ms(AT + timedelta(days=3))
    await e.redis.hset(e.keys.cid_penalties, tag[X], f"0.000|{far}")
    picks = [(await e.decide(req(i), now=AT)).caller_id for i in range(3)]
    assert Y not in picks and X in picks and Z in picks
    pen = await e.redis.hgetall(e.keys.cid_penalties)
    assert pen[tag[X].encode()].decode() == f"0.000|{far}"
    value, until = pen[tag[Y].encode()].decode().split("|")
    # it lapses when the health hash would have expired
    assert value == "2.000" and int(until) - ms(AT) <= 86_400_000
    assert int(until) - ms(AT) > 86_400_000 - 600_000
    assert tag[Z].encode() not in pen  # nothing to copy


async def test_the_last_caller_id_keys_are_the_plans(make_engine, rules_file):
    """decide.lua writes '{n:<H>}:lc' and '{p:<Q>}:lc' as keys of the plan (KEYS), and a
    complaint on the number or the party is still attributed to the caller ID."""
    e = await make_engine(rules_file(OPEN + f"caller_id: {{pool: ['{X}']}}\n"))
    await e.set_campaign("c1")
    d = await e.decide(DecisionRequest(number="13800130001", campaign="c1", agent="a1", call_id="p1",
                                       party="acct-1"), now=AT)
    assert d.allowed and d.caller_id == X
    nt, pt = e.keys.number_tag("+8613800130001"), e.keys.party_tag("acct-1")
    for k in (e.keys.last_caller(nt), e.keys.party_last_caller(pt)):
        assert (await e.redis.get(k)).decode().startswith(e.keys.cid_tag(X) + "|")
        assert 0 < await e.redis.pttl(k) <= 2_592_000_000
    await e.complaint("13800130001", now=AT + timedelta(minutes=1))
    events = await e.redis.lrange(e.keys.cid_events(e.keys.cid_tag(X)), 0, -1)
    assert [x.decode() for x in events] == [f"{ms(AT + timedelta(minutes=1))}|c"]
