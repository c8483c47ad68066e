"""`dialguard counters rebuild`: Redis loses its data in the middle of a
scenario; the counters rebuilt from the audit in PostgreSQL are the ones Redis
had, and every following decision is identical to a run that never lost data."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import redis as syncredis

from dialguard.audit.rebuild import RebuildError, rebuild
from dialguard.callerid_health import penalty_value
from dialguard.audit.shipper import Shipper
from fakes.pg import PgCluster
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.simulate import _drop_namespace

UTC = timezone.utc
SERVICE = "dg_service"
START = datetime(2026, 3, 2, 14, tzinfo=UTC)
POOL = ["+12025550100", "+12025550101", "+12025550102"]
NUMBERS = [f"+1202555{i:04d}" for i in range(1, 7)]
PACK = f"""
pack: rb-test
default_region: US
caps:
  - {{id: n24, scope: number, max: 3, window: {{rolling: 24h}}, uncounted_outcomes: [busy, failed]}}
  - {{id: subj7, scope: number_subject, max: 4, window: {{days: 7}}, uncounted_outcomes: [busy, no_answer]}}
  - {{id: life, scope: number_campaign, max: 6, window: lifetime}}
  - {{id: p24, scope: party, max: 5, window: {{rolling: 24h}}}}
min_interval: 20m
quiet_after_conversation: {{scope: number_subject, window: {{days: 2}}}}
quiet_after_abandon: {{abandoned: 3h, amd: 1h}}
agent: {{per_day: 14}}
caller_id: {{require_approved: true, pool: {POOL}, per_hour: 4, per_day: 15, concurrency: 2}}
max_duration_s: 600
"""
CONFIG_KEYS = (":{g}:audit", ":{g}:camp:", ":{g}:pause", ":{g}:cids", ":{g}:cool", ":{g}:pool", ":{g}:clock")


# `cluster`: a PostgreSQL cluster of the module's own (tests/integration/conftest.py)


def scenario(seed: int, n: int = 170) -> list[tuple]:
    """A deterministic mix of attempts (some with a party), outcomes (some for
    calls still in flight when Redis is lost) and events (some of a party), over four days."""
    rnd = random.Random(seed)
    t = START
    ops: list[tuple] = []
    calls: list[str] = []
    for i in range(n):
        t += timedelta(minutes=rnd.choice([1, 3, 7, 15, 25, 40, 90, 200]))
        x = rnd.random()
        if x < 0.62 or not calls:
            cid = f"call-{i}"
            calls.append(cid)
            ops.append(("attempt", t, dict(number=rnd.choice(NUMBERS), campaign=rnd.choice(["c1", "c2"]),
                                           agent=rnd.choice(["a1", "a2", "a3"]), subject=rnd.choice(["d1", "d2"]),
                                           call_id=cid, party=rnd.choice([None, None, "p1", "p2", "p3"]))))
        elif x < 0.9:
            cid = rnd.choice(calls[-8:])
            res = rnd.choice(["conversation", "answered", "voicemail", "no_answer", "busy", "failed", "abandoned",
                              "amd"])
            ops.append(("outcome", t, dict(call_id=cid, result=res, subject=rnd.choice([None, None, "d3"]))))
        else:
            kind = rnd.choice(["consent", "consent_revoke", "dnc_add_c", "dnc_remove_c", "opt_out", "party"])
            if kind == "opt_out" and rnd.random() < 0.7:
                kind = "consent"
            if kind == "party":  # the person's flags (optout --party...)
                ops.append(("event", t, dict(kind=rnd.choice(["consent", "consent_revoke", "complaint", "opt_out"]),
                                             number=None, party=rnd.choice(["p1", "p2", "p3"]))))
            else:
                ops.append(("event", t, dict(kind=kind, number=rnd.choice(NUMBERS))))
    return ops


async def configure(e):
    for c in ("c1", "c2"):
        await e.set_campaign(c)


async def run_op(e, op) -> object:
    kind, t, a = op
    if kind == "attempt":
        d = await e.decide(DecisionRequest(**a), now=t)
        return (d.decision, d.reasons, d.next_eligible_at, d.caller_id, d.max_duration_s)
    if kind == "outcome":
        return await e.report_outcome(a["call_id"], Outcome(result=a["result"], talk_s=30), now=t,
                                      subject=a["subject"])
    k, number = a["kind"], a["number"]
    if k == "dnc_add_c":
        return await e.dnc_add(number, campaign="c2", now=t)
    if k == "dnc_remove_c":
        return await e.dnc_remove(number, campaign="c2", now=t)
    if a.get("party"):
        return await getattr(e, k)(None, now=t, party=a["party"])
    return await getattr(e, k)(number, now=t)


def snapshot(r: syncredis.Redis, prefix: str, rule_now_ms: int) -> dict:
    """Every counter key of the namespace: content and TTL (leases that ended are ignored,
    as the concurrency check ignores them)."""
    out = {}
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        if any(c in key for c in CONFIG_KEYS):
            continue
        typ = r.type(key)
        if typ == "zset":
            v = dict(r.zrange(key, 0, -1, withscores=True))
            if key.endswith(":live"):
                v = {mb: s for mb, s in v.items() if s > rule_now_ms}
        elif typ == "hash":
            # the answers kept for identical replays (f:<request hash>) are not
            # rebuilt: after a data loss a repeated request is decided afresh; nor
            # the running figures of a caller ID's health hash (lg, s:<pack>), a
            # cache outcome.lua proves before use and recomputes from the log
            v = {f: x for f, x in r.hgetall(key).items() if not f.startswith("f:")
                 and not (key.endswith("}:h") and (f == "lg" or f.startswith("s:")))}
            if key.endswith("{g}:cidpen"):
                # the pick penalties that have lapsed read as none (the rebuild does not write
                # them back; outcome.lua prunes them as the hash grows), nor its pruning cursor
                v = {f: x for f, x in v.items() if penalty_value(x, rule_now_ms) is not None}
        elif typ == "set":
            v = r.smembers(key)
        elif typ == "list":
            v = r.lrange(key, 0, -1)
        elif typ == "string":
            v = r.get(key)
        else:
            raise AssertionError(f"unexpected {typ} key {key}")
        if v:
            out[key[len(prefix):]] = (v, r.pttl(key))
    return out


def same_state(before: dict, after: dict, ttl_slack_ms: int = 30_000):
    assert set(before) == set(after), (f"only before: {sorted(set(before) - set(after))}; "
                                       f"only after: {sorted(set(after) - set(before))}")
    for k in before:
        (v1, t1), (v2, t2) = before[k], after[k]
        assert v1 == v2, f"{k}: {v1} != {v2}"
        assert (t1 < 0) == (t2 < 0) and abs(t1 - t2) <= ttl_slack_ms, f"{k}: TTL {t1} vs {t2}"


@pytest.mark.parametrize("seed", [5, 11])
async def test_flush_rebuild_then_same_decisions(make_engine, rules_file, audit_db, seed):
    policy = rules_file(PACK)
    ops = scenario(seed)
    cut = int(len(ops) * 0.55)

    # A: never loses anything
    a = await make_engine(policy)
    await configure(a)
    expected = [await run_op(a, op) for op in ops]

    # B: the same, but Redis loses its data at `cut`
    b = await make_engine(policy)
    await configure(b)
    got = [await run_op(b, op) for op in ops[:cut]]
    assert got == expected[:cut]
    sh = Shipper(b.settings, prefix=b.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    r = syncredis.Redis.from_url(b.settings.redis_url, decode_responses=True)
    now = ops[cut - 1][1]
    now_ms = int(now.timestamp() * 1000)
    before = snapshot(r, b.keys.prefix, now_ms)
    assert len(before) > 20
    # the parties' flags, counters and last caller IDs are among them (restored key by key below)
    party_keys = {k.split("}:", 1)[1] for k in before if ":{p:" in k}
    assert {"f", "a:all", "lc"} <= party_keys, party_keys

    await _drop_namespace(b.redis, b.keys.prefix)  # the data loss
    assert snapshot(r, b.keys.prefix, now_ms) == {}
    await configure(b)  # the admin restores configuration
    sh = Shipper(b.settings, prefix=b.keys.prefix, dsn=audit_db, block_ms=50)
    try:  # audit-ship runs all along: the re-configuration's own admin records reach PostgreSQL
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    with psycopg.connect(audit_db) as conn:
        summary = await asyncio.to_thread(rebuild, conn, r, b.settings, prefix=b.keys.prefix, policy=policy,
                                          now=now)
    assert summary.decisions > 0 and summary.outcomes > 0 and summary.events > 0
    same_state(before, snapshot(r, b.keys.prefix, now_ms))

    got += [await run_op(b, op) for op in ops[cut:]]
    assert got == expected
    allowed = sum(1 for x in expected if isinstance(x, tuple) and x[0] == "allow")
    denied = sum(1 for x in expected if isinstance(x, tuple) and x[0] == "deny")
    assert allowed > 20 and denied > 20  # the scenario exercises both


async def test_rebuild_refuses_while_records_wait_in_redis(make_engine, rules_file, audit_db):
    e = await make_engine(rules_file(PACK))
    await configure(e)
    await e.decide(DecisionRequest(number=NUMBERS[0], campaign="c1", agent="a1", call_id="x"), now=START)
    r = syncredis.Redis.from_url(e.settings.redis_url, decode_responses=True)
    with psycopg.connect(audit_db) as conn:
        with pytest.raises(RebuildError, match="not in PostgreSQL yet"):
            rebuild(conn, r, e.settings, prefix=e.keys.prefix, policy=e.policy)


async def test_cli_rebuild_dry_run(make_engine, audit_db):
    e = await make_engine("cn-default")
    await e.set_campaign("c1")
    await e.approve_caller_id("+862150000001", pool=True)
    t = datetime(2026, 11, 23, 2, tzinfo=UTC)
    d = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a1", call_id="k"), now=t)
    assert d.allowed
    sh = Shipper(e.settings, prefix=e.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    env = {**os.environ, "DIALGUARD_PG_DSN": audit_db, "DIALGUARD_KEY_PREFIX": e.keys.prefix,
           "DIALGUARD_REDIS_URL": e.settings.redis_url, "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(),
           "DIALGUARD_RULES": "cn-default"}
    res = subprocess.run([sys.executable, "-m", "dialguard.cli", "counters", "rebuild", "--dry-run", "--json",
                          "--at", "2026-11-23T02:01:00Z"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    out = json.loads(res.stdout)
    assert out["decisions"] == 1 and out["keys"]["attempt logs"] == 2 and out["keys"]["caller-ID leases"] == 1


async def test_rebuild_restores_configuration_from_the_audit(make_engine, rules_file, audit_db, tmp_path):
    """Kill switches, approvals, caller IDs and pools, cool-downs, rules versions and
    unused override grants come back from the audit after Redis lost everything."""
    from dialguard.rules_store import RulesStore

    policy = rules_file(PACK)
    e = await make_engine(policy)
    t0 = START
    await e.set_campaign("c1", start=t0 - timedelta(days=1), end=t0 + timedelta(days=30))
    await e.set_campaign("c2")
    await e.set_campaign("c3", approved=False)
    await e.set_campaign("c4", rules="us-tcpa")  # its own rules: in the warm-up's index
    await e.approve_caller_id(POOL[0], pool=True)
    await e.approve_caller_id(POOL[1], campaign="c1")
    await e.approve_caller_id(POOL[2])
    await e.remove_caller_id(POOL[2])
    await e.cooldown_caller_id(POOL[0], t0 + timedelta(hours=1))
    await e.pause("campaign", "c2", why="carrier complaint")
    await e.pause("caller_id", POOL[1])
    await e.resume("caller_id", POOL[1])
    p1 = tmp_path / "v1.yaml"
    p1.write_text(PACK.replace("rb-test", "rb-v1"))
    p2 = tmp_path / "v2.yaml"
    p2.write_text(PACK.replace("rb-test", "rb-v2").replace("max: 3,", "max: 1,"))
    store = RulesStore(e.redis, e.keys)
    await store.apply(str(p1))
    await store.apply(str(p2), shadow=True)
    await store.shadow_off()
    await store.apply(str(p2))
    await store.apply(str(p1), shadow=True)
    exp = t0 + timedelta(days=1)
    await e.override_grant(NUMBERS[0], why="kept", approver="a", expires=exp, now=t0, lifts=["min_interval"])
    await e.override_grant(NUMBERS[1], why="used", approver="a", expires=exp, now=t0)
    await e.override_grant(NUMBERS[2], why="revoked", approver="a", expires=exp, now=t0)
    await e.override_revoke(NUMBERS[2])
    await e.override_grant(NUMBERS[3], why="expired", approver="a", expires=t0 + timedelta(minutes=5), now=t0)
    req = DecisionRequest(number=NUMBERS[1], campaign="c1", agent="a1", caller_id=POOL[1])
    assert (await e.decide(req, now=t0)).allowed
    d = await e.decide(req, now=t0 + timedelta(minutes=1))  # min_interval, lifted by the grant
    assert d.override
    # the flags of persons (parties): opt-out, complaint, consent, a consent revoked
    await e.opt_out(None, party="pa", now=t0)
    await e.complaint(None, party="pb", now=t0)
    await e.consent(None, party="pc", now=t0)
    await e.consent(None, party="pd", now=t0)
    await e.consent_revoke(None, party="pd", now=t0 + timedelta(minutes=1))

    config_keys = [e.keys.pause, e.keys.approved_cids, e.keys.pool(None), e.keys.pool("c1"), e.keys.cid_cooldown,
                   e.keys.rules, e.keys.campaigns_with_rules, *(e.keys.campaign(c) for c in ("c1", "c2", "c3", "c4"))]
    r = syncredis.Redis.from_url(e.settings.redis_url, decode_responses=True)

    def dump():
        out = {}
        for k in config_keys:
            t = r.type(k)
            out[k] = {"hash": r.hgetall, "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
                      "none": lambda k: None}[t](k)
        for n in NUMBERS[:4]:
            k = e.keys.override(e.keys.number_tag(n))
            out[k] = r.hgetall(k) or None
        for p in ("pa", "pb", "pc", "pd"):
            k = e.keys.party_flags(e.keys.party_tag(p))
            out[k] = r.hgetall(k) or None
        return out

    before = dump()
    assert before[e.keys.override(e.keys.number_tag(NUMBERS[0]))]["lifts"] == "min_interval"
    pf = {p: before[e.keys.party_flags(e.keys.party_tag(p))] for p in ("pa", "pb", "pc", "pd")}
    assert (set(pf["pa"]), set(pf["pb"]), set(pf["pc"]), pf["pd"]) == ({"optout"}, {"complaint"}, {"consent"}, None)
    assert before[e.keys.override(e.keys.number_tag(NUMBERS[1]))] is None
    sh = Shipper(e.settings, prefix=e.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    await _drop_namespace(e.redis, e.keys.prefix)
    assert all(v in (None, {}, set(), []) for v in dump().values())
    with psycopg.connect(audit_db) as conn:
        summary = await asyncio.to_thread(rebuild, conn, r, e.settings, prefix=e.keys.prefix, policy=policy,
                                          now=t0 + timedelta(minutes=10))
    after = dump()
    # the grant that expired at t0+5min is not restored; everything else is as it was
    expired = e.keys.override(e.keys.number_tag(NUMBERS[3]))
    assert before.pop(expired) is not None and after.pop(expired) is None
    for k in before:
        assert after[k] == before[k], k
    assert summary.keys["configuration: rules versions"] == 4
    # and it works: the published version 2 (cap 1 per 24 h) is what decides
    e._ctx_cache.clear()
    d = await e.decide(DecisionRequest(number=NUMBERS[1], campaign="c1", agent="a1", caller_id=POOL[1]),
                       now=t0 + timedelta(hours=2))
    assert d.reasons == ["attempt_cap"] and "rb-v2/n24" in d.explanations["attempt_cap"]
    d = await e.decide(DecisionRequest(number=NUMBERS[5], campaign="c1", agent="a1", caller_id=POOL[1], party="pa"),
                       now=t0 + timedelta(hours=2))
    assert d.reasons == ["opted_out"] and "party" in d.explanations["opted_out"]
    assert (await e.decide(DecisionRequest(number=NUMBERS[4], campaign="c2", agent="a1", caller_id=POOL[0]),
                           now=t0 + timedelta(hours=2))).reasons == ["paused"]
