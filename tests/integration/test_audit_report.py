"""`dialguard report` and the audit look-ups (`audit show|number|history`) on
shipped records: real Redis, real PostgreSQL (a cluster of this module's own)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from dialguard.audit import migrate as m
from dialguard.audit import report as rp
from dialguard.audit.db import sql_dirs
from dialguard.audit.shipper import Shipper
import cli_inproc
from fakes.pg import PgCluster
from dialguard.decision.models import DecisionRequest, Outcome

UTC = timezone.utc
SERVICE = "dg_service"
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Mon 10:00 Shanghai
CID1, CID2 = "+862150000001", "+862150000002"


# `cluster`: a PostgreSQL cluster of the module's own (tests/integration/conftest.py)


@pytest.fixture
async def shipped(cluster, make_engine):
    """A small day of calls, shipped: returns (engine, dsn, decisions)."""
    name = f"dgp_{uuid.uuid4().hex[:8]}"
    cluster.create_db(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=[SERVICE])
    dsn = cluster.dsn(name, SERVICE)
    e = await make_engine("cn-default")
    for c in ("c1", "c2"):
        await e.set_campaign(c)
    for c in (CID1, CID2):
        await e.approve_caller_id(c)
    ds = {}

    async def call(key, number, campaign, agent, cid, result=None, talk=0, minutes=0, region=None):
        d = await e.decide(DecisionRequest(number=number, campaign=campaign, agent=agent, caller_id=cid,
                                           call_id=key, region=region), now=NOW + timedelta(minutes=minutes))
        ds[key] = d
        if d.allowed and result:
            await e.report_outcome(key, Outcome(result=result, talk_s=talk), now=NOW + timedelta(minutes=minutes + 1))
        return d

    await call("k1", "13800000001", "c1", "alice", CID1, "conversation", 120, region="CN-GD")
    await call("k2", "13800000002", "c1", "alice", CID1, "no_answer", region="CN-GD")
    await call("k3", "13800000003", "c1", "bob", CID2, "abandoned", 0)
    await call("k4", "13800000004", "c1", "bob", CID2, "answered", 15)
    await call("k5", "13800000001", "c2", "alice", CID1, "busy", minutes=5)
    await call("k6", "13800000001", "c2", "bob", CID2, minutes=6)                     # 3rd in 24h: attempt_cap
    await call("k7", "13800000005", "c3", "bob", CID2)                                # campaign_not_approved
    await call("k8", "13800000006", "c1", "alice", "+862150009999", region="CN-SH")   # caller_id_not_approved
    await call("k9", "13800000010", "c2", "carol", CID1, "amd")                       # an answering machine
    await e.complaint("13800000003", now=NOW + timedelta(hours=1))                    # after k3 (c1, bob, CID2)
    await e.opt_out("13800000009", now=NOW + timedelta(hours=1))                      # never called
    await call("old", "13800000007", "c1", "alice", CID1, "conversation", 60, minutes=-3 * 24 * 60)  # before
    sh = Shipper(e.settings, prefix=e.keys.prefix, dsn=dsn, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    return e, dsn, ds


def rows(rep):
    return {r[0]: dict(zip(rep.columns, r)) for r in rep.rows}


async def test_report_by_region(shipped):
    """--by region groups by where the request said the callee lives; requests
    without a region are "(none)"; the audit row keeps the region as given."""
    _e, dsn, ds = shipped
    with psycopg.connect(dsn) as conn:
        rep = rp.build(conn, "region", NOW - timedelta(hours=1), NOW + timedelta(days=1), "Asia/Shanghai")
        got = conn.execute("select region, postal_code, party_hash from audit_decisions where decision_id = %s",
                           (ds["k1"].decision_id,)).fetchone()
    r = rows(rep)
    assert (r["CN-GD"]["attempts"], r["CN-GD"]["allowed"], r["CN-GD"]["conversations"]) == (2, 2, 1)
    assert (r["CN-SH"]["attempts"], r["CN-SH"]["denied"], r["CN-SH"]["denied_caller_id_not_approved"]) == (1, 1, 1)
    assert r["(none)"]["attempts"] == 6  # k3..k7 and k9 ("old" is before the window)
    assert got == ("CN-GD", None, None)


async def test_report_by_campaign_agent_caller_id_and_reason(shipped):
    e, dsn, ds = shipped
    assert [k for k, d in ds.items() if not d.allowed] == ["k6", "k7", "k8"]
    a = rp.parse_bound("2026-11-23", "Asia/Shanghai")
    b = rp.parse_bound("2026-11-23", "Asia/Shanghai", end=True)
    assert (a, b) == (datetime(2026, 11, 22, 16, tzinfo=UTC), datetime(2026, 11, 23, 16, tzinfo=UTC))
    with psycopg.connect(dsn) as conn:
        camp = rp.build(conn, "campaign", a, b, "Asia/Shanghai")
        agent = rp.build(conn, "agent", a, b, "Asia/Shanghai")
        cid = rp.build(conn, "caller_id", a, b, "Asia/Shanghai", cid_label=lambda t: {
            e.keys.cid_tag(CID1): CID1, e.keys.cid_tag(CID2): CID2}.get(t, t[:8]))
        reason = rp.build(conn, "reason", a, b, "Asia/Shanghai")
    c = rows(camp)
    assert c["c1"]["attempts"] == 5 and c["c1"]["allowed"] == 4 and c["c1"]["denied_caller_id_not_approved"] == 1
    assert c["c1"]["answered"] == 3 and c["c1"]["conversations"] == 1 and c["c1"]["talk_s"] == 135
    assert c["c1"]["answer_rate"] == 75.0 and c["c1"]["abandoned"] == 1 and c["c1"]["abandon_rate"] == 33.3
    assert c["c1"]["complaints"] == 1 and c["c1"]["opt_outs"] == 0
    assert c["c2"]["attempts"] == 3 and c["c2"]["denied_attempt_cap"] == 1 and c["c2"]["answer_rate"] == 0.0
    assert c["c2"]["amd"] == 1 and c["c2"]["answered"] == 0 and c["c1"]["amd"] == 0  # a machine is no person
    assert c["c3"]["denied_campaign_not_approved"] == 1 and c["c3"]["answer_rate"] is None
    assert c[rp.NO_CALL]["opt_outs"] == 1  # an opt-out from a number no call reached
    assert camp.totals[camp.columns.index("attempts")] == 9  # the call three days earlier is out of range
    assert camp.totals[camp.columns.index("amd")] == 1
    ag = rows(agent)
    assert ag["alice"]["attempts"] == 4 and ag["bob"]["attempts"] == 4 and ag["bob"]["complaints"] == 1
    ci = rows(cid)
    assert ci[CID1]["allowed"] == 4 and ci[CID2]["allowed"] == 2 and ci[CID2]["answer_rate"] == 100.0
    rs = rows(reason)
    assert list(rs) == ["campaign_not_approved", "caller_id_not_approved", "attempt_cap"]  # SPEC order
    assert rs["attempt_cap"]["denials"] == 1 and rs["attempt_cap"]["share_of_attempts"] == 11.1


async def test_report_cli_csv_and_xlsx(shipped, tmp_path):
    e, dsn, _ = shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_REDIS_URL": e.settings.redis_url,
           "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(), "DIALGUARD_SITE_TZ": "Asia/Shanghai"}
    run = lambda *a, env_extra={}: cli_inproc.run(a, env={**env, **env_extra}, timeout=120)  # noqa: E731
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "caller_id", "--csv", "-")
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    by = {row["caller_id"]: row for row in table}
    assert by[CID1]["allowed"] == "4" and by["total"]["attempts"] == "9"  # caller IDs named, not hashed
    x = tmp_path / "r.xlsx"
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "agent", "--xlsx", str(x))
    assert r.returncode == 0, r.stderr
    from openpyxl import load_workbook

    ws = load_workbook(x)["by agent"]
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0][:3] == ["agent", "attempts", "allowed"] and values[-1][0] == "total"
    pdf = tmp_path / "r.pdf"
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "caller_id", "--pdf", str(pdf))
    assert r.returncode == 0, r.stderr
    from pypdf import PdfReader

    text = PdfReader(pdf).pages[0].extract_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(CID1 + " "))
    assert "dialguard report by caller_id" in text and line.split()[1:3] == [by[CID1]["attempts"], by[CID1]["allowed"]]
    r = run("report", "--from", "2026-11-23", "--pdf", str(pdf), env_extra={"DIALGUARD_PDF_FONT": "/nonexistent.ttf"})
    assert r.returncode == 2 and "no CJK font" in r.stderr
    r = run("report", "--from", "2026-11-23", "--by", "campaign")
    assert r.returncode == 0 and "c1" in r.stdout and "abandon" in r.stdout
    assert run("report", "--from", "2026-11-24", "--to", "2026-11-23").returncode == 2
    assert run("report", "--from", "2026-11-23", "--by", "weather").returncode == 2


async def test_audit_show_number_and_history_decrypt_with_the_key(shipped):
    e, dsn, ds = shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(),
           "DIALGUARD_KEY_PREFIX": e.keys.prefix}
    run = lambda *a, **kw: cli_inproc.run(a, env={**env, **kw}, timeout=120)  # noqa: E731
    r = run("audit", "show", ds["k1"].decision_id, "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["number"] == "+8613800000001" and shown["allowed"] is True
    assert [o["result"] for o in shown["outcomes"]] == ["conversation"]
    r = run("audit", "show", ds["k1"].decision_id)  # the table too (a float once broke it)
    assert r.returncode == 0 and ds["k1"].decision_id in r.stdout, r.stderr
    h = e.keys.number_tag("+8613800000001")
    r = run("audit", "number", h)
    assert r.returncode == 0 and r.stdout.strip() == "+8613800000001"
    wrong = "A" * 43 + "="  # another data key: the number stays sealed
    r = run("audit", "number", h, DIALGUARD_DATA_KEY=wrong)
    assert "cannot decrypt" in r.stdout and "+8613800000001" not in r.stdout
    r = run("audit", "history", "13800000001", "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["what"] for x in lines].count("decision") == 3 and any(x["detail"] == "deny attempt_cap" for x in lines)
    assert run("audit", "show", "nope").returncode == 1


# -- rules versions and shadow verdicts ----------------------------------------------------------------
def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture
def shadow_shipped(cluster, settings):
    """Stream entries as decide.lua and rules.lua write them (rules versions, shadow
    verdicts, an override), shipped by the real shipper: returns (dsn, decision ids, prefix)."""
    import redis as syncredis

    from dialguard.crypto import Sealer
    from dialguard.decision.keys import Keys

    name = f"dgsh_{uuid.uuid4().hex[:8]}"
    cluster.create_db(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=[SERVICE])
    dsn = cluster.dsn(name, SERVICE)
    prefix = f"dgtest:{uuid.uuid4().hex[:10]}"
    keys = Keys(prefix, settings.hash_secret)
    sealer = Sealer()
    r = syncredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yaml_v2 = "name: try-3\nlimits: {per_number_24h: 3}\n"

    def rules(rid, version, mode, files=(), at=NOW):
        j = {"version": version, "mode": mode, "actor": "alice", "why": f"{mode} {version}", "at": _ms(at),
             "node": "n1"}
        if mode != "shadow_off":
            j.update(hash=f"h{version}", name="cn-default", spec="cn-default",
                     files=[{"ref": "cn-default", "text": t} for t in files])
        r.xadd(keys.audit, {"t": "rules", "id": rid, "j": json.dumps(j)})

    ids = {}

    def decision(key, allow, reasons="", sv="2", sa="", sr="", ov="", ovr="", minutes=0, number="+8613800000001"):
        did = f"{key}-{uuid.uuid4().hex[:6]}"
        ids[key] = did
        at = NOW + timedelta(minutes=minutes)
        j = {"did": did, "at": _ms(at), "ts": _ms(at), "n": keys.number_tag(number), "ne": sealer.seal(number),
             "campaign": "c1", "agent": "alice" if key < "d5" else "bob", "subject": None, "call_id": key,
             "cid_req": None, "pre": [], "rules": "cn-default", "rv": "h1", "node": "n1"}
        r.xadd(keys.audit, {"t": "decision", "id": did, "allow": allow, "r": reasons, "ch": "", "cs": "",
                            "rver": "1", "sv": sv, "sa": sa, "sr": sr, "ov": ov, "ovr": ovr, "j": json.dumps(j)})

    try:
        rules("r1", 1, "active", ["limits: {}\n"])
        rules("r2", 2, "shadow", [yaml_v2])
        decision("d1", "1", sa="1")                                                    # same verdict
        decision("d2", "1", sa="0", sr="attempt_cap", minutes=1)                        # allow -> deny
        decision("d3", "1", sa="0", sr="outside_hours,attempt_cap", minutes=2)          # allow -> deny (2 reasons)
        decision("d4", "0", "attempt_cap", sa="1", minutes=3, number="+8613800000002")  # deny -> allow
        decision("d5", "0", "dnc", sa="0", sr="dnc", minutes=4)                         # same verdict
        decision("d6", "1", sv="", minutes=5)                                           # no shadow
        decision("d7", "1", sa="0", sr="attempt_cap", ov="g1", ovr="attempt_cap", minutes=6)  # override
        decision("d8", "1", sa="0", sr="attempt_cap", minutes=-3 * 24 * 60)            # out of the range
        decision("d9", "0", "agent_cap", sv="3", sa="1", minutes=7)                     # another shadow version
        rules("r3", 2, "shadow_off", at=NOW + timedelta(hours=1))
        sh = Shipper(settings, prefix=prefix, dsn=dsn, block_ms=50)
        try:
            sh.run(drain=True)
        finally:
            sh.close()
        yield dsn, ids, prefix
    finally:
        for k in r.scan_iter(match=f"{prefix}:*"):
            r.delete(k)
        r.close()


def test_rules_versions_and_shadow_columns_are_shipped(shadow_shipped):
    dsn, ids, _ = shadow_shipped
    with psycopg.connect(dsn) as conn:
        vers = conn.execute("select record_id, version, mode, files, actor, why from audit_rules_versions "
                            "order by at, record_id").fetchall()
        d = {r[0]: r[1:] for r in conn.execute(
            "select decision_id, rules_seq, shadow_version, shadow_allowed, shadow_reasons, override_id, "
            "override_lifted from audit_decisions").fetchall()}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # append-only like every audit table
            conn.execute("update audit_rules_versions set why = 'edited'")
    assert [(v[0], v[1], v[2]) for v in vers] == [("r1", 1, "active"), ("r2", 2, "shadow"), ("r3", 2, "shadow_off")]
    assert vers[1][3] == [{"ref": "cn-default", "text": "name: try-3\nlimits: {per_number_24h: 3}\n"}]
    assert vers[1][4:] == ("alice", "shadow 2") and vers[2][3] == []
    assert d[ids["d3"]] == (1, 2, False, ["outside_hours", "attempt_cap"], None, None)
    assert d[ids["d1"]] == (1, 2, True, [], None, None)
    assert d[ids["d6"]] == (1, None, None, None, None, None)
    assert d[ids["d7"]][4:] == ("g1", ["attempt_cap"])


def test_shadow_report(shadow_shipped):
    dsn, ids, _ = shadow_shipped
    a = rp.parse_bound("2026-11-23", "Asia/Shanghai")
    b = rp.parse_bound("2026-11-23", "Asia/Shanghai", end=True)
    with psycopg.connect(dsn) as conn:
        rep = rp.build_shadow(conn, a, b, "Asia/Shanghai")
    v2, v3 = rep.summary
    assert (v2["shadow_version"], v2["evaluated"], v2["same_verdict"], v2["would_change"]) == (2, 6, 2, 4)
    assert v2["allow_to_deny"] == 3 and v2["deny_to_allow"] == 1
    assert list(v2["allow_to_deny_by_reason"].items()) == [("outside_hours", 1), ("attempt_cap", 3)]  # SPEC order
    assert v2["deny_to_allow_enforced_reasons"] == {"attempt_cap": 1} and v2["rules_versions"] == [1]
    assert (v3["shadow_version"], v3["evaluated"], v3["deny_to_allow"]) == (3, 1, 1)
    got = rep.as_dicts()
    assert [x["decision_id"] for x in got] == [ids[k] for k in ("d2", "d3", "d4", "d7", "d9")]
    d3 = got[1]
    assert (d3["enforced"], d3["shadow"], d3["shadow_reasons"], d3["campaign"], d3["agent"]) == \
        ("allow", "deny", "outside_hours,attempt_cap", "c1", "alice")
    assert d3["number"].startswith("#") and "13800000001" not in d3["number"]  # no key given: the hash


def test_shadow_report_cli_table_csv_json(shadow_shipped, settings):
    dsn, ids, _ = shadow_shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_SITE_TZ": "Asia/Shanghai"}
    run = lambda *a: cli_inproc.run(["report", "--shadow", "--from", "2026-11-23", "--to", "2026-11-23",  # noqa: E731
                                     *a], env=env, timeout=120)
    r = run("--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert [s["shadow_version"] for s in j["summary"]] == [2, 3] and len(j["decisions"]) == 5
    d4 = next(x for x in j["decisions"] if x["decision_id"] == ids["d4"])
    assert d4["number"] == "*********0002" and (d4["enforced"], d4["shadow"]) == ("deny", "allow")
    assert d4["decided_at"] == "2026-11-23T02:03:00Z"
    r = run("--csv", "-")
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [x["decision_id"] for x in table] == [x["decision_id"] for x in j["decisions"]]
    assert table[0]["shadow_reasons"] == "attempt_cap" and table[0]["rules_version"] == "1"
    r = run()
    assert r.returncode == 0 and "allow→deny" in r.stdout and "outside_hours 1" in r.stdout, r.stderr
    assert run("--xlsx", "x.xlsx").returncode == 2


def test_every_read_command_has_json(shipped):
    """report, audit status|show|number|history, db status: --json for scripts."""
    e, dsn, ds = shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_REDIS_URL": e.settings.redis_url,
           "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(), "DIALGUARD_KEY_PREFIX": e.keys.prefix,
           "DIALGUARD_SITE_TZ": "Asia/Shanghai"}
    run = lambda *a: cli_inproc.run(a, env=env, timeout=120)  # noqa: E731
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "agent", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["by"] == "agent" and j["totals"]["attempts"] == 9
    assert {x["agent"]: x["attempts"] for x in j["rows"]} == {"alice": 4, "bob": 4, "carol": 1, rp.NO_CALL: 0}
    st = json.loads(run("audit", "status", "--json").stdout)
    assert st["backlog"] == 0 and "spool" in st
    assert json.loads(run("audit", "number", e.keys.number_tag("+8613800000001"), "--json").stdout)["number"] \
        == "+8613800000001"
    for cmd in (["audit", "status"], ["audit", "show", ds["k1"].decision_id], ["audit", "history", "13800000001"],
                ["audit", "number", e.keys.number_tag("+8613800000001")], ["report", "--from", "2026-11-23"]):
        help_text = run(*cmd[:2 if cmd[0] == "audit" else 1], "--help").stdout
        assert "--json" in help_text, cmd


async def test_report_by_campaign_held_back_and_pack_abandon_limit(shipped, tmp_path):
    """By campaign, the dialer's leads held back without a decision (dialer_holds: not
    attempts) by reason, and the campaign's abandonment against its pack's limit over the
    pack's own period and base (live-answered calls in dialer_calls), in the table, CSV
    and JSON."""
    e, dsn, _ = shipped
    # to now: the limit is measured over the 30 days before the end of the range (or now)
    wall = datetime.now(UTC)
    a, b = NOW - timedelta(hours=2), wall + timedelta(hours=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into dialer_campaigns (name, rules) values ('c1', 'cn-default,us-tcpa'),"
                     " ('c2', null)")
        lead = conn.execute("insert into dialer_leads (campaign, number_hash, number_enc) values"
                            " ('c1', 'h1', 'x') returning id").fetchone()[0]
        hold = ("insert into dialer_holds (campaign, reason, detail, lead_id, leads, started_at, ended_at)"
                " values (%s, %s, %s, %s, %s, %s, %s)")
        for row in (("c1", "paused", "campaign paused", None, 5, NOW, NOW + timedelta(minutes=10)),
                    # began before the range: only its part inside counts as held time
                    ("c1", "abandon_limit", "us-tcpa: 4.00% of 3%", None, 3, a - timedelta(hours=1),
                     a + timedelta(minutes=1)),
                    ("c1", "zone_closed", "outside_hours", lead, 1, NOW, NOW + timedelta(hours=1)),
                    ("c1", "zone_closed", "outside_hours", lead, 1, NOW + timedelta(hours=1), None),
                    ("c1", "region_paused", "US-LA", lead, 1, NOW, NOW + timedelta(minutes=3)),
                    ("c2", "no_message", "no abandon message", None, 2, NOW, NOW + timedelta(seconds=30)),
                    ("c1", "paused", "all outbound paused", None, 9, a - timedelta(days=2), a - timedelta(days=1))):
            conn.execute(hold, row)
        # 4 abandoned of 100 live answers 10 days ago (and 5 machines, not in the base); and 6
        # abandoned 40 days ago, outside us-tcpa's 30 days: 4 % > 3 %
        calls = [("conversation", 10)] * 96 + [("abandoned", 10)] * 4 + [("amd", 10)] * 5 + [("abandoned", 40)] * 6
        for i, (result, days) in enumerate(calls):
            t = wall - timedelta(days=days, seconds=i)
            conn.execute("insert into dialer_calls (channel_id, lead_id, campaign, state, result, created_at,"
                         " answered_at) values (%s, %s, 'c1', 'ended', %s, %s, %s)",
                         (f"dgc-{uuid.uuid4().hex}", lead, result, t, t))
        # in the range: abandoned calls whose message began late (2.3 s), failed, played in time,
        # the callee gone before it; a late one outside the range; a late machine's (not abandoned)
        for result, state, delay, at in (("abandoned", "cut", 2300, NOW), ("abandoned", "failed", 1700, NOW),
                                         ("abandoned", "played", 1712, NOW), ("abandoned", "none", None, NOW),
                                         ("abandoned", None, None, NOW),  # recorded by nothing
                                         ("abandoned", "played", 2600, a - timedelta(minutes=5)),
                                         ("amd", "played", 4000, NOW)):
            conn.execute("insert into dialer_calls (channel_id, lead_id, campaign, state, result, created_at,"
                         " answered_at, message_state, message_delay_ms) values (%s, %s, 'c2', 'ended', %s, %s, %s,"
                         " %s, %s)", (f"dgc-{uuid.uuid4().hex}", lead, result, at, at, state, delay))
        rep = rp.build(conn, "campaign", a, b, "Asia/Shanghai", policy_of=rp.campaign_policies(conn, "cn-default"))
    c = rows(rep)
    assert (c["c2"]["message_late"], c["c2"]["message_failed"], c["c2"]["message_unknown"]) == (1, 1, 1)
    assert (c["c1"]["message_late"], c["c1"]["message_failed"], c["c3"]["message_late"]) == (0, 0, 0)
    assert (c["c1"]["held_paused"], c["c1"]["held_abandon_limit"], c["c1"]["held_zone_closed"],
            c["c1"]["held_region_paused"]) == (5, 3, 2, 1)
    assert c["c1"]["held_back"] == 11 and c["c1"]["held_s"] == 600 + 60  # campaign-wide holds only
    assert c["c1"]["attempts"] == 5  # held-back leads are no attempts
    assert (c["c2"]["held_no_message"], c["c2"]["held_s"], c["c2"]["attempts"]) == (2, 30, 3)
    assert (c["c1"]["abandon_limit"], c["c1"]["limit_rate"], c["c1"]["limit_state"]) == (
        "us-tcpa 3% over 30 days", 4.0, "OVER")
    assert c["c2"]["abandon_limit"] is None  # cn-default states no abandon limit
    assert c["c3"]["abandon_limit"] is None and c["c3"]["held_back"] == 0  # not a dialer campaign
    tot = dict(zip(rep.columns, rep.totals))
    assert tot["held_back"] == 13 and tot["abandon_limit"] is None
    # the terminal table folds the reasons in one column, says they had no decision
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(rp.to_rich(rep))
    text = console.export_text()
    assert "held back by reason" in text and "(no decision)" in text and "zone_closed 2" in text
    assert "us-tcpa 3% over 30 days" in text and "OVER" in text
    # CSV and JSON through the CLI, with the node's rules
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_REDIS_URL": e.settings.redis_url,
           "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(), "DIALGUARD_SITE_TZ": "Asia/Shanghai",
           "DIALGUARD_RULES": "cn-default"}
    args = ["report", "--from", a.isoformat(), "--to", b.isoformat(), "--by", "campaign"]
    r = cli_inproc.run([*args, "--csv", "-"], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    by = {row["campaign"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert (by["c1"]["held_back"], by["c1"]["held_zone_closed"], by["c1"]["limit_state"]) == ("11", "2", "OVER")
    assert by["total"]["held_back"] == "13" and by["total"]["limit_rate"] == ""
    r = cli_inproc.run([*args, "--json"], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    js = {row["campaign"]: row for row in json.loads(r.stdout)["rows"]}
    assert js["c1"]["held_region_paused"] == 1 and js["c1"]["limit_rate"] == 4.0
    assert js["c2"]["held_no_message"] == 2
    assert (js["c2"]["message_late"], js["c2"]["message_failed"], js["c2"]["message_unknown"]) == (1, 1, 1)
    assert js["c2"]["abandon_limit"] is None  # DIALGUARD_RULES (cn-default) in effect: no limit stated

    # A rules version published in Redis (`dialguard rules apply`, the console) is what a campaign
    # without packs of its own is decided by: its limits are the ones reported, in the CLI and the
    # console's builder alike; a campaign with its own packs keeps them.
    from dialguard.rules import Policy
    from dialguard.rules_store import RulesStore
    from dialguard.web import reports as web_reports

    await RulesStore(e.redis, e.keys).apply("us-tcpa", why="test")
    r = cli_inproc.run([*args, "--json"], env={**env, "DIALGUARD_KEY_PREFIX": e.keys.prefix}, timeout=120)
    assert r.returncode == 0, r.stderr
    js = {row["campaign"]: row for row in json.loads(r.stdout)["rows"]}
    assert js["c2"]["abandon_limit"] == "us-tcpa 3% over 30 days", js["c2"]
    assert js["c1"]["abandon_limit"] == "us-tcpa 3% over 30 days" and js["c1"]["limit_rate"] == 4.0
    params = {"by": "campaign", "a": a, "b": b, "tz": "Asia/Shanghai", "from": "", "to": ""}
    web = await asyncio.to_thread(web_reports.build, dsn, params, lambda n: n, "cn-default", Policy.load("us-tcpa"))
    assert rows(web)["c2"]["abandon_limit"] == "us-tcpa 3% over 30 days"
    # Redis out of reach: the node's rules, and the report says so on stderr
    r = subprocess.run([sys.executable, "-m", "dialguard.cli", *args, "--json"], capture_output=True, text=True,
                       env={**env, "DIALGUARD_REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=120)
    assert r.returncode == 0 and "rules version in effect not read" in r.stderr, r.stderr
    assert {row["campaign"]: row for row in json.loads(r.stdout)["rows"]}["c2"]["abandon_limit"] is None
