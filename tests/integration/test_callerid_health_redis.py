"""Caller-ID health on the real Redis: outcome.lua computes the figures, cools a
caller ID down atomically with the outcome that triggered it, audits and
explains it; decide.lua's pool pick weighs rate-limit use and health."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dialguard.callerid_health import Entry, figures, primary, read_health
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.decision.plan import ms
from dialguard.simulate import Scenario, run_scenario

UTC = timezone.utc
AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
POOL = ["+862150000001", "+862150000002", "+862150000003"]


def pack(rules: str, extra: str = "", pool: bool = True) -> str:
    return ("pack: health-test\nversion: '1'\ndefault_region: CN\ncaller_id:\n  require_approved: true\n"
            + (f"  pool: {json.dumps(POOL)}\n" if pool else "") + extra
            + "  health:\n    window_calls: 20\n    window_hours: 24\n    short_answer_s: 5\n"
            + "    rules:\n" + rules)


RUN3 = "      - {id: run, metric: consecutive_rejections, threshold: 3, cool_down: 24h}\n"
REJECTED = Outcome(result="failed", hangup_cause=21, sip_code=403)
BUSY = Outcome(result="busy", hangup_cause=17, sip_code=486)
ANSWERED = Outcome(result="conversation", talk_s=60, hangup_cause=16)


def req(i: int, caller_id: str | None = None, campaign: str = "c1") -> DecisionRequest:
    return DecisionRequest(number=f"1380013{i:04d}", campaign=campaign, agent="a1", caller_id=caller_id,
                           call_id=f"call-{i}")


async def engine_with(make_engine, rules_file, text: str):
    e = await make_engine(rules_file(text))
    await e.set_campaign("c1")
    for c in POOL:
        await e.approve_caller_id(c)
    return e


async def test_rejection_run_cools_down_with_the_outcome_audited_and_explained(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(RUN3, pool=False))
    x = POOL[0]
    for i in range(3):
        d = await e.decide(req(i, caller_id=x), now=AT)
        assert d.allowed and d.caller_id == x
        matched = await e.report_outcome(f"call-{i}", REJECTED, now=AT + timedelta(seconds=i))
        assert matched
        cooling = await e.redis.zscore(e.keys.cid_cooldown, e.keys.cid_tag(x))
        # the third rejection in a row, and not before, cools the caller ID down for 24 h from the outcome
        assert (cooling is not None) == (i == 2)
    assert int(cooling) == ms(AT + timedelta(seconds=2) + timedelta(hours=24))
    # an agent presenting it explicitly is checked, and denied, not given another number
    d = await e.decide(req(10, caller_id=x), now=AT + timedelta(minutes=1))
    assert d.reasons == ["caller_id_not_approved"] and d.caller_id is None
    assert (await e.decide(req(11, caller_id=x), now=AT + timedelta(seconds=2, hours=24))).allowed

    # why, with the figures, for `callerid list` / `callerid health`
    (row,) = await read_health(e, [x], ms(AT + timedelta(minutes=1)))
    assert row["cooldown_until"] == int(cooling) and row["cooldown_reason"] == "run (consecutive_rejections)"
    why = json.loads(await e.redis.hget(e.keys.cid_cool_why, e.keys.cid_tag(x)))
    (t,) = why["triggered"]
    assert (t["rule"], t["metric"], t["value"], t["threshold"], t["run"], t["calls"]) == \
        ("run", "consecutive_rejections", 3, 3, 3, 3)
    # audited as a cool-down (shipped to PostgreSQL as an admin action, restored by audit rebuild)
    admin = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    (cool,) = [a for a in admin if a["action"] == "callerid_cooldown"]
    assert cool["target"] == e.keys.cid_tag(x) and cool["until"] == int(cooling)
    assert cool["actor"] == "dialguard-health" and "run" in cool["why"] and cool["triggered"][0]["run"] == 3
    # the outcome record carries the SIP code too
    outcomes = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"outcome"]
    assert {(o["cause"], o["sip"]) for o in outcomes} == {(21, 403)}


async def test_busy_callees_never_cool_a_number_down(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(RUN3, pool=False))
    for i in range(6):
        assert (await e.decide(req(i, caller_id=POOL[0]), now=AT)).allowed
        await e.report_outcome(f"call-{i}", BUSY if i % 2 else Outcome(result="busy", hangup_cause=17), now=AT)
    assert await e.redis.zscore(e.keys.cid_cooldown, e.keys.cid_tag(POOL[0])) is None
    (row,) = await read_health(e, [POOL[0]], ms(AT))
    assert row["figures"]["calls"] == 6 and row["figures"]["rejected"] == 0


async def test_lua_and_python_figures_agree(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(
        "      - {id: never, metric: consecutive_rejections, threshold: 1000, cool_down: 1h}\n", pool=False))
    x = POOL[1]
    seq = [ANSWERED, REJECTED, Outcome(result="answered", talk_s=2), BUSY, REJECTED, REJECTED,
           Outcome(result="conversation", talk_s=4), Outcome(result="failed", hangup_cause=21)]
    for i, o in enumerate(seq):
        assert (await e.decide(req(i, caller_id=x), now=AT)).allowed
        await e.report_outcome(f"call-{i}", o, now=AT + timedelta(seconds=i))
    tag = e.keys.cid_tag(x)
    raw = await e.redis.lrange(e.keys.cid_outcomes(tag), 0, -1)
    f = figures([Entry.decode(r) for r in raw], ms(AT + timedelta(seconds=7)), primary(e.policy))
    assert (f.calls, f.answered, f.short, f.rejected, f.run) == (8, 3, 2, 4, 1)
    h = {k.decode(): v.decode() for k, v in (await e.redis.hgetall(e.keys.cid_health(tag))).items()}
    assert int(h["calls:health-test"]) == f.calls and int(h["ans:health-test"]) == f.answered
    from dialguard.callerid_health import penalty
    assert float(h["pen"]) == penalty(f)


async def test_answer_rate_far_under_the_pool_median_cools_down(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(
        "      - {id: pool, metric: answer_rate_vs_pool, threshold: 0.5, min_calls: 4, cool_down: 12h}\n",
        pool=False))
    i = 0
    # two caller IDs answer 3 calls in 4, the third 1 in 4 (0.25 < 0.5 x 0.75)
    for cid, answered in ((POOL[0], 3), (POOL[1], 3), (POOL[2], 1)):
        for k in range(4):
            assert (await e.decide(req(i, caller_id=cid), now=AT)).allowed
            await e.report_outcome(f"call-{i}", ANSWERED if k < answered else BUSY, now=AT)
            i += 1
    tags = [e.keys.cid_tag(c) for c in POOL]
    cool = await e.redis.zmscore(e.keys.cid_cooldown, tags)
    assert cool[:2] == [None, None] and int(cool[2]) == ms(AT + timedelta(hours=12))
    t = json.loads(await e.redis.hget(e.keys.cid_cool_why, tags[2]))["triggered"][0]
    assert t["pool_median"] == 0.75 and t["value"] == 0.25


async def test_pool_pick_prefers_healthy_and_unloaded_caller_ids(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(
        "      - {id: run, metric: consecutive_rejections, threshold: 5, cool_down: 24h}\n",
        extra="  per_hour: 100\n"))
    # spread: with no outcomes yet, 9 picks go 3 to each caller ID (lowest use first)
    picks = [(await e.decide(req(i), now=AT)).caller_id for i in range(9)]
    assert sorted(picks.count(c) for c in POOL) == [3, 3, 3]
    # the caller ID with rejections gets fewer calls while it is not cooled down
    bad = picks[0]
    for i, c in enumerate(picks):
        await e.report_outcome(f"call-{i}", REJECTED if c == bad else ANSWERED, now=AT)
    later = [(await e.decide(req(100 + i), now=AT)).caller_id for i in range(12)]
    assert later.count(bad) < min(later.count(c) for c in POOL if c != bad), later
    assert await e.redis.zscore(e.keys.cid_cooldown, e.keys.cid_tag(bad)) is None


async def test_cool_down_is_atomic_with_the_outcome_under_concurrent_decisions(make_engine, rules_file, settings):
    """Decisions race the outcome that cools the caller ID down: every decision
    that picked it was decided before the cool-down (audit stream order), and
    none that started after the outcome returned picked it."""
    e = await engine_with(make_engine, rules_file, pack(
        "      - {id: run, metric: consecutive_rejections, threshold: 1, cool_down: 24h}\n"))
    x = POOL[0]
    tag = e.keys.cid_tag(x)
    assert (await e.decide(req(0, caller_id=x), now=AT)).allowed
    returned: list[float] = []
    results: list[tuple[float, str | None]] = []

    async def decider(worker: int):
        for k in range(40):
            t0 = time.monotonic()
            d = await e.decide(req(1000 + worker * 100 + k), now=AT)
            results.append((t0, d.caller_id if d.allowed else None))

    async def reporter():
        await asyncio.sleep(0.02)
        await e.report_outcome("call-0", REJECTED, now=AT)
        returned.append(time.monotonic())

    await asyncio.gather(reporter(), *(decider(w) for w in range(8)))
    (done,) = returned
    after = [c for t0, c in results if t0 > done]
    before = [c for t0, c in results if t0 <= done]
    assert after and x not in after, "a decision started after the outcome returned picked the cooled caller ID"
    assert x in before, "the race never happened: no decision picked it before the outcome"
    # the stream order is the order Redis ran the scripts: no pick of x after the cool-down record
    seen_cool = False
    for _, f in await e.redis.xrange(e.keys.audit):
        if f[b"t"] == b"admin" and json.loads(f[b"j"])["action"] == "callerid_cooldown":
            seen_cool = True
        elif f[b"t"] == b"decision" and seen_cool:
            assert f[b"ch"].decode() != tag
    assert seen_cool


async def test_replay_with_sip_codes_gives_the_same_cool_down(settings, tmp_path: Path):
    rules = tmp_path / "health.yaml"
    rules.write_text(pack(RUN3, pool=False))
    x, y = POOL[0], POOL[1]
    events = []
    t = AT
    for i in range(3):
        events.append({"at": t.isoformat(), "attempt": {"number": f"1380013{i:04d}", "campaign": "c1",
                                                        "caller_id": x}})
        t += timedelta(seconds=1)
        events.append({"at": t.isoformat(), "outcome": {"number": f"1380013{i:04d}", "result": "failed",
                                                        "hangup_cause": 21, "sip_code": 403}})
    # a busy callee on y (486 / 17) is not a rejection
    for i in range(3, 6):
        events.append({"at": t.isoformat(), "attempt": {"number": f"1380013{i:04d}", "campaign": "c1",
                                                        "caller_id": y}})
        events.append({"at": t.isoformat(), "outcome": {"number": f"1380013{i:04d}", "result": "busy",
                                                        "hangup_cause": 17, "sip_code": 486}})
    events.append({"at": t.isoformat(), "attempt": {"number": "13800139999", "campaign": "c1", "caller_id": x}})
    events.append({"at": t.isoformat(), "attempt": {"number": "13800139998", "campaign": "c1", "caller_id": y}})
    sc = Scenario.model_validate({"rules": str(rules), "default_region": "CN", "events": events})
    from dialguard.rules import Policy

    lines: list[str] = []
    out = await run_scenario(sc, Policy.load(str(rules)), settings, emit=lines.append)
    assert [o["decision"] for o in out] == ["allow"] * 6 + ["deny", "allow"]
    assert out[6]["reasons"] == ["caller_id_not_approved"]
    assert set(json.loads(lines[0])) == {"i", "at", "number", "decision", "reasons", "next_eligible_at"}


def _snapshot(r, prefix: str, now_ms: int) -> dict:
    """Every key of the namespace but configuration and the audit stream (leases that ended ignored)."""
    skip = (":{g}:audit", ":{g}:camp:", ":{g}:pause", ":{g}:cids", ":{g}:cool", ":{g}:pool", ":{g}:clock")
    out = {}
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        if any(c in key for c in skip):
            continue
        typ = r.type(key)
        v = {"zset": lambda: {m: s for m, s in r.zrange(key, 0, -1, withscores=True)
                              if not key.endswith(":live") or s > now_ms},
             # the answers a call record keeps for identical replays (f:<request hash>) are not rebuilt
             # nor the running figures a caller ID's health hash keeps (lg, s:<pack>): a cache
             # outcome.lua proves before using it, rebuilt from the log at the first outcome
             "hash": lambda: {f: x for f, x in r.hgetall(key).items() if not f.startswith("f:")
                              and not (key.endswith("}:h") and (f == "lg" or f.startswith("s:")))},
             "set": lambda: r.smembers(key),
             "list": lambda: r.lrange(key, 0, -1), "string": lambda: r.get(key)}[typ]()
        if v:
            out[key[len(prefix):]] = (v, r.pttl(key))
    return out


async def test_counters_rebuild_brings_caller_id_health_back(make_engine, rules_file, audit_db):
    """Redis loses its data after carrier rejections, short answers and a
    health cool-down: the health state rebuilt from the audit is the one Redis
    had, and the following decisions (pool picks weighed by health) are the same."""
    import random

    import psycopg
    import redis as syncredis

    from dialguard.audit.rebuild import rebuild
    from dialguard.audit.shipper import Shipper
    from dialguard.simulate import _drop_namespace

    policy = rules_file(pack(
        "      - {id: run, metric: consecutive_rejections, threshold: 3, cool_down: 2h}\n"
        "      - {id: pool, metric: answer_rate_vs_pool, threshold: 0.5, min_calls: 6, cool_down: 1h}\n"
        "      - {id: complaints, metric: complaints_per_1000, threshold: 150, min_calls: 2, cool_down: 1h}\n",
        extra="  per_hour: 30\n"))
    rnd = random.Random(7)
    ops = []
    t = AT
    outcomes = [REJECTED, BUSY, ANSWERED, Outcome(result="answered", talk_s=2), Outcome(result="no_answer")]
    for i in range(90):
        t += timedelta(seconds=rnd.randint(5, 90))
        ops.append(("decide", t, i))
        ops.append(("outcome", t + timedelta(seconds=3), i, rnd.choices(outcomes, [4, 1, 3, 2, 1])[0]))
        if rnd.random() < 0.25:  # complaints and opt-outs, attributed to the caller ID that called
            ops.append((rnd.choice(["complaint", "opt_out"]), t + timedelta(seconds=4), i))
    ops.sort(key=lambda o: o[1])

    async def run(e, op):
        if op[0] == "decide":
            d = await e.decide(req(op[2]), now=op[1])
            return (d.decision, d.reasons, d.caller_id)
        if op[0] in ("complaint", "opt_out"):
            return await getattr(e, op[0])(f"1380013{op[2]:04d}", now=op[1])
        return await e.report_outcome(f"call-{op[2]}", op[3], now=op[1])

    engines = []
    for _ in range(2):
        e = await make_engine(policy)
        await e.set_campaign("c1")
        for c in POOL:
            await e.approve_caller_id(c)
        engines.append(e)
    a, b = engines
    expected = [await run(a, op) for op in ops]
    cut = len(ops) * 2 // 3
    admin = [json.loads(f[b"j"]) for _, f in await a.redis.xrange(a.keys.audit) if f[b"t"] == b"admin"]
    by_event = [x for x in admin if x["action"] == "callerid_cooldown" and x.get("event")]
    assert by_event and by_event[0]["triggered"][0]["metric"] == "complaints_per_1000"
    cut_at = ops[cut - 1][1]
    assert any(int(x["rules_at"]) <= ms(cut_at) for x in by_event), "no complaint cool-down before the data loss"
    got = [await run(b, op) for op in ops[:cut]]
    assert got == expected[:cut]
    assert await b.redis.zcard(b.keys.cid_cooldown) > 0, "no health cool-down before the data loss"
    for _ in range(2):
        sh = Shipper(b.settings, prefix=b.keys.prefix, dsn=audit_db, block_ms=50)
        try:
            await asyncio.to_thread(sh.run, True)
        finally:
            sh.close()
        if _ == 0:
            r = syncredis.Redis.from_url(b.settings.redis_url, decode_responses=True)
            now = ops[cut - 1][1]
            before = _snapshot(r, b.keys.prefix, ms(now))
            assert any(k.endswith("}:o") for k in before) and any(":{g}:hp:" in k for k in before)
            assert any(k.endswith("}:e") for k in before) and any(k.endswith("}:lc") for k in before)
            await _drop_namespace(b.redis, b.keys.prefix)
            await b.set_campaign("c1")
            for c in POOL:
                await b.approve_caller_id(c)
    with psycopg.connect(audit_db) as conn:
        await asyncio.to_thread(rebuild, conn, r, b.settings, prefix=b.keys.prefix, policy=policy, now=now)
    after = _snapshot(r, b.keys.prefix, ms(now))
    assert set(before) == set(after), [(k, before.get(k), after.get(k)) for k in set(before) ^ set(after)]
    for k in before:
        assert before[k][0] == after[k][0], k
        assert abs(before[k][1] - after[k][1]) <= 30_000 or before[k][1] == after[k][1] == -1, k
    got += [await run(b, op) for op in ops[cut:]]
    assert got == expected


async def test_metrics_show_health_per_caller_id(make_engine, rules_file):
    from dialguard import metrics

    e = await engine_with(make_engine, rules_file, pack(RUN3, pool=False))
    await e.approve_caller_id(POOL[0], pool=True)
    await e.approve_caller_id(POOL[1], pool=True)
    await e.set_test_clock(AT)
    settings = e.settings.__class__(**{**e.settings.__dict__, "test_clock": True})
    e.settings = settings
    for i, o in enumerate([ANSWERED, REJECTED, REJECTED, REJECTED]):
        assert (await e.decide(req(i, caller_id=POOL[0]), now=AT)).allowed
        await e.report_outcome(f"call-{i}", o, now=AT)
    assert await metrics.refresh_from_engine(e)

    def value(gauge, cid):
        return gauge.labels(cid)._value.get()

    assert value(metrics.CID_CALLS, POOL[0]) == 4
    assert value(metrics.CID_REJECTION_RUN, POOL[0]) == 3
    assert value(metrics.CID_REJECTION_RATE, POOL[0]) == 0.75
    assert value(metrics.CID_ANSWER_RATE, POOL[0]) == 0.25
    assert value(metrics.CID_COOLING, POOL[0]) == 1
    assert value(metrics.CID_COOLING, POOL[1]) == 0 and value(metrics.CID_CALLS, POOL[1]) == 0
    assert metrics.HEALTH_COOLDOWNS.labels(rule="health-test/run")._value.get() >= 1


async def test_metrics_refresh_computes_caller_id_health_a_chunk_at_a_time(make_engine, rules_file, monkeypatch):
    """The refresh runs on the FastAGI server's event loop: a big pool's figures are computed
    HEALTH_CHUNK caller IDs at a time, the loop free in between (checks are not held up
    for the whole pool), and every caller ID still gets its gauges."""
    from dialguard import callerid_health, metrics

    e = await engine_with(make_engine, rules_file, pack(RUN3, pool=False))
    pool = [f"+86105800{i:04d}" for i in range(3 * metrics.HEALTH_CHUNK + 1)]
    for c in pool:
        await e.approve_caller_id(c, pool=True)
    asked: list[int] = []
    real = callerid_health.read_health

    async def counted(engine, caller_ids, now_ms):
        asked.append(len(caller_ids))
        return await real(engine, caller_ids, now_ms)

    monkeypatch.setattr(callerid_health, "read_health", counted)
    turns = 0
    done = False

    async def ticker():
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    t = asyncio.create_task(ticker())
    assert await metrics.refresh_from_engine(e)
    done = True
    await t
    assert sum(asked) == len(pool) and max(asked) <= metrics.HEALTH_CHUNK and len(asked) == 4, asked
    assert turns >= len(asked)  # the loop ran between the chunks
    assert all(metrics.CID_CALLS.labels(c)._value.get() == 0 for c in pool)


# -- complaints and opt-outs per 1,000 calls (attributed by the number's last allowed call) ----------
COMPLAINTS = ("      - {id: complaints, metric: complaints_per_1000, threshold: 300, min_calls: 5, cool_down: 24h}\n"
              "      - {id: optouts, metric: optouts_per_1000, threshold: 600, min_calls: 5, cool_down: 6h}\n")


async def _calls(e, caller_id: str, numbers: range, at: datetime = AT):
    for i in numbers:
        d = await e.decide(req(i, caller_id=caller_id), now=at)
        assert d.allowed and d.caller_id == caller_id
        assert await e.report_outcome(f"call-{i}", ANSWERED, now=at + timedelta(seconds=1))


async def test_complaints_cool_down_the_caller_id_that_called_not_the_others(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(COMPLAINTS, pool=False))
    a, b = POOL[0], POOL[1]
    ta, tb = e.keys.cid_tag(a), e.keys.cid_tag(b)
    await _calls(e, a, range(0, 5))
    await _calls(e, b, range(5, 10))
    # the number remembers whom it was called by, as hashes only (no plaintext number)
    lc = await e.redis.get(e.keys.last_caller(e.keys.number_tag("+8613800130000")))
    # (whole numbers: a hash's hex may hold any three digits by chance)
    assert lc.split(b"|")[0].decode() == ta and b"13800130000" not in lc and b"2150000001" not in lc
    assert 0 < await e.redis.pttl(e.keys.last_caller(e.keys.number_tag("+8613800130000"))) <= 30 * 86_400_000

    t1 = AT + timedelta(minutes=5)
    assert await e.complaint("13800130000", now=t1)
    ra, rb = await read_health(e, [a, b], ms(t1))
    assert ra["figures"]["complaints"] == 1 and ra["figures"]["complaints_per_1000"] == 200
    assert rb["figures"]["complaints"] == 0 and rb["figures"]["complaints_per_1000"] == 0
    assert await e.redis.zscore(e.keys.cid_cooldown, ta) is None  # 200 < 300
    # a second complaint on the same number is no new complaint
    assert not await e.complaint("13800130000", now=t1 + timedelta(seconds=1))
    assert (await read_health(e, [a], ms(t1)))[0]["figures"]["complaints"] == 1

    # the second complainant called by A: 400 per 1,000 >= 300 -> A cools down for 24 h, with the event
    t2 = t1 + timedelta(minutes=1)
    assert await e.complaint("13800130001", now=t2)
    cool = await e.redis.zmscore(e.keys.cid_cooldown, [ta, tb])
    assert int(cool[0]) == ms(t2 + timedelta(hours=24)) and cool[1] is None
    why = json.loads(await e.redis.hget(e.keys.cid_cool_why, ta))
    (t,) = why["triggered"]
    assert (t["rule"], t["metric"], t["value"], t["calls"], t["complaints"]) == \
        ("complaints", "complaints_per_1000", 400, 5, 2)
    admin = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    (rec,) = [x for x in admin if x["action"] == "callerid_cooldown"]
    assert rec["target"] == ta and rec["until"] == int(cool[0]) and rec["actor"] == "dialguard-health"
    assert rec["triggered"][0]["complaints"] == 2
    # Python reads the same figures the script judged (the Lua/Python agreement)
    raw = await e.redis.lrange(e.keys.cid_outcomes(ta), 0, -1)
    evs = await e.redis.lrange(e.keys.cid_events(ta), 0, -1)
    from dialguard.callerid_health import Event
    f = figures([Entry.decode(r) for r in raw], ms(t2), primary(e.policy), events=[Event.decode(x) for x in evs])
    assert (f.calls, f.complaints, f.complaints_per_1000) == (t["calls"], t["complaints"], t["value"])
    (row,) = await read_health(e, [a], ms(t2))
    assert row["cooldown_reason"] == "complaints (complaints_per_1000)"

    # the next decision no longer takes A; B goes on
    assert (await e.decide(req(20, caller_id=a), now=t2)).reasons == ["caller_id_not_approved"]
    assert (await e.decide(req(21, caller_id=b), now=t2)).allowed


async def test_optouts_count_apart_and_an_outcome_reaching_min_calls_triggers(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(COMPLAINTS, pool=False))
    a = POOL[2]
    ta = e.keys.cid_tag(a)
    await _calls(e, a, range(0, 4))
    t1 = AT + timedelta(minutes=1)
    for i in range(3):  # 3 opt-outs over 4 calls: under min_calls, nothing yet
        assert await e.opt_out(f"1380013{i:04d}", now=t1)
    (row,) = await read_health(e, [a], ms(t1))
    assert (row["figures"]["optouts"], row["figures"]["complaints"]) == (3, 0)
    assert row["figures"]["optouts_per_1000"] == 750 and row["cooldown_until"] is None
    # the fifth call's outcome (outcome.lua): 3 / 5 = 600 per 1,000 >= 600 -> 6 h
    t2 = t1 + timedelta(minutes=1)
    await _calls(e, a, range(4, 5), at=t2)
    cool = await e.redis.zscore(e.keys.cid_cooldown, ta)
    assert int(cool) == ms(t2 + timedelta(seconds=1) + timedelta(hours=6))
    (t,) = json.loads(await e.redis.hget(e.keys.cid_cool_why, ta))["triggered"]
    assert (t["rule"], t["value"], t["optouts"], t["calls"]) == ("optouts", 600, 3, 5)


async def test_complaint_without_a_call_from_the_guard_is_attributed_to_nobody(make_engine, rules_file):
    e = await engine_with(make_engine, rules_file, pack(COMPLAINTS, pool=False))
    assert await e.complaint("13900000000", now=AT)
    assert [k async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:{{c:*}}:e")] == []


async def test_replay_with_complaints_gives_the_same_cool_down(settings, tmp_path: Path):
    rules = tmp_path / "health.yaml"
    rules.write_text(pack(COMPLAINTS, pool=False))
    a, b = POOL[0], POOL[1]
    events = []
    t = AT
    for i, cid in enumerate([a] * 5 + [b] * 5):
        n = f"1380013{i:04d}"
        events.append({"at": t.isoformat(), "attempt": {"number": n, "campaign": "c1", "caller_id": cid}})
        t += timedelta(seconds=1)
        events.append({"at": t.isoformat(), "outcome": {"number": n, "result": "conversation", "talk_s": 60}})
    for i in (0, 1, 5):  # two complaints on numbers A called, one on a number B called
        t += timedelta(seconds=1)
        events.append({"at": t.isoformat(), "complaint": {"number": f"1380013{i:04d}"}})
    events.append({"at": t.isoformat(), "attempt": {"number": "13800139999", "campaign": "c1", "caller_id": a}})
    events.append({"at": t.isoformat(), "attempt": {"number": "13800139998", "campaign": "c1", "caller_id": b}})
    sc = Scenario.model_validate({"rules": str(rules), "default_region": "CN", "events": events})
    from dialguard.rules import Policy

    out = await run_scenario(sc, Policy.load(str(rules)), settings)
    assert [o["decision"] for o in out] == ["allow"] * 10 + ["deny", "allow"]
    assert out[10]["reasons"] == ["caller_id_not_approved"]
    # the same scenario replayed again decides the same
    again = await run_scenario(sc, Policy.load(str(rules)), settings)
    assert [(o["decision"], o["reasons"]) for o in again] == [(o["decision"], o["reasons"]) for o in out]


async def test_lua_and_python_figures_agree_at_the_window_bound_and_on_odd_entries(make_engine, rules_file):
    """outcome.lua compares a log time with the window's bound as text (no
    strtod an entry): the same figures as Python's over a log with times of
    other lengths, one with a leading zero, entries out of order, one exactly at
    the bound and one an ms past it, and unparsable ones (skipped by both)."""
    import re

    e = await engine_with(make_engine, rules_file, pack(
        "      - {id: never, metric: consecutive_rejections, threshold: 1000, cool_down: 1h}\n", pool=False))
    x = POOL[1]
    tag = e.keys.cid_tag(x)
    t = ms(AT)
    lo = t - 24 * 3_600_000
    for bound in (lo + 1, lo):  # the oldest entry counted or not
        key = e.keys.cid_outcomes(tag)
        await e.redis.delete(key)
        old = [f"{t - 1000}|1|3||16", f"0{t - 2000}|0||403|21", "garbage", f"{t - 500}|0|||21",
               f"{t - 90_000}|1|60|200|16", "1|2|3", f"{bound}|0||603|21", f"{lo - 5}|1|1||16",
               "999999999999|1|9||16"]
        await e.redis.rpush(key, *old)  # newest first, as LPUSH leaves them
        i = 100 + bound - lo
        assert (await e.decide(req(i, caller_id=x), now=AT)).allowed
        await e.report_outcome(f"call-{i}", REJECTED, now=AT)
        raw = [r.decode() for r in await e.redis.lrange(key, 0, -1)]
        ok = [Entry.decode(r) for r in raw if re.fullmatch(r"\d+\|\d\|\d*\|\d*\|\d*", r)]
        f = figures(ok, t, primary(e.policy))
        h = {k.decode(): v.decode() for k, v in (await e.redis.hgetall(e.keys.cid_health(tag))).items()}
        assert (int(h["calls:health-test"]), int(h["ans:health-test"])) == (f.calls, f.answered)
        from dialguard.callerid_health import penalty
        assert float(h["pen"]) == round(penalty(f), 3)
        assert f.calls == (6 if bound == lo + 1 else 5)  # the head (this outcome) and those before the bound


async def test_a_failing_health_part_keeps_the_outcome_and_says_so(make_engine, rules_file):
    """outcome.lua's health part failing in Redis (here: a settings record that does
    not parse, of other settings than the reader's: since stop 19 the reader's own are
    written into its script, not decoded; then a key of the wrong type after the log was written) does not fail
    the script: the outcome stays applied and audited once, the caller knows it
    matched, the error is logged and counted, and the next outcomes recompute the
    figures from the log (the running state half written is dropped)."""
    from dialguard import callerid_health, metrics

    e = await engine_with(make_engine, rules_file, pack(RUN3, pool=False))
    x = POOL[0]
    tag = e.keys.cid_tag(x)
    errors = metrics.REGISTRY.get_sample_value("dialguard_callerid_health_errors_total") or 0.0
    cfg_key = e.keys.health_config(callerid_health.config_id(e.policy))
    for i in range(5):
        assert (await e.decide(req(i, caller_id=x), now=AT)).allowed
    good = await e.redis.get(cfg_key)
    assert good

    # 1. the call's settings (other than the reader's) do not parse: nothing of the health part written
    await e.redis.hset(e.keys.call("call-0"), "hc", "other")
    await e.redis.set(e.keys.health_config("other"), "{not json")
    assert await e.report_outcome("call-0", REJECTED, now=AT)
    assert metrics.REGISTRY.get_sample_value("dialguard_callerid_health_errors_total") == errors + 1
    assert not await e.report_outcome("call-0", REJECTED, now=AT)  # reported once: no retry applies it twice
    assert await e.redis.llen(e.keys.cid_outcomes(tag)) == 0
    outcomes = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"outcome"]
    assert [o["call_id"] for o in outcomes].count("call-0") == 1  # audited once

    # 2. a failure after the log was written: the running state is dropped
    assert await e.report_outcome("call-1", REJECTED, now=AT + timedelta(seconds=1))
    assert (await e.redis.hget(e.keys.cid_health(tag), "lg")) is not None
    pool_key = e.keys.g("hp:broken")
    await e.redis.hset(e.keys.call("call-2"), "cp", "broken")
    await e.redis.set(pool_key, "a string, not a set")
    assert await e.report_outcome("call-2", REJECTED, now=AT + timedelta(seconds=2))
    assert metrics.REGISTRY.get_sample_value("dialguard_callerid_health_errors_total") == errors + 2
    assert await e.redis.llen(e.keys.cid_outcomes(tag)) == 2  # its entry is in the log
    assert (await e.redis.hget(e.keys.cid_health(tag), "lg")) is None
    assert await e.redis.zscore(e.keys.cid_cooldown, tag) is None
    # the next outcome recomputes from the log: its 3 rejections in a row cool the caller ID down
    assert await e.report_outcome("call-3", REJECTED, now=AT + timedelta(seconds=3))
    assert await e.redis.zscore(e.keys.cid_cooldown, tag) is not None
    raw = await e.redis.lrange(e.keys.cid_outcomes(tag), 0, -1)
    assert len(raw) == 3


async def test_a_failing_health_part_keeps_the_complaint_and_says_so(make_engine, rules_file):
    """event.lua likewise: a complaint whose caller-ID health part fails in Redis (its
    event log a key of the wrong type) still blocks the number and is audited; the
    call returns normally and the error is logged and counted."""
    from dialguard import metrics

    e = await engine_with(make_engine, rules_file, pack(COMPLAINTS, pool=False))
    a = POOL[0]
    ta = e.keys.cid_tag(a)
    await _calls(e, a, range(0, 5))
    errors = metrics.REGISTRY.get_sample_value("dialguard_callerid_health_errors_total") or 0.0
    await e.redis.set(e.keys.cid_events(ta), "a string, not a list")
    assert await e.complaint("13800130000", now=AT + timedelta(minutes=5))
    assert metrics.REGISTRY.get_sample_value("dialguard_callerid_health_errors_total") == errors + 1
    d = await e.decide(DecisionRequest(number="13800130000", campaign="c1", agent="a1", caller_id=POOL[1],
                                       call_id="call-30"), now=AT + timedelta(minutes=6))
    assert "complained" in d.reasons, d.reasons
    events = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"event"]
    assert [x["kind"] for x in events].count("complaint") == 1
    assert not await e.complaint("13800130000", now=AT + timedelta(minutes=7))  # set once
