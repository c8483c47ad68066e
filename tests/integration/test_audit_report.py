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
from dialguard.audit.db import sql_dir
from dialguard.audit.shipper import Shipper
from dialguard.audit.testing import PgCluster
from dialguard.models import DecisionRequest, Outcome

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
        m.migrate(conn, sql_dir(), writers=[SERVICE])
    dsn = cluster.dsn(name, SERVICE)
    e = await make_engine("cn-default")
    for c in ("c1", "c2"):
        await e.set_campaign(c)
    for c in (CID1, CID2):
        await e.approve_caller_id(c)
    ds = {}

    async def call(key, number, campaign, agent, cid, result=None, talk=0, minutes=0):
        d = await e.decide(DecisionRequest(number=number, campaign=campaign, agent=agent, caller_id=cid,
                                           call_id=key), now=NOW + timedelta(minutes=minutes))
        ds[key] = d
        if d.allowed and result:
            await e.report_outcome(key, Outcome(result=result, talk_s=talk), now=NOW + timedelta(minutes=minutes + 1))
        return d

    await call("k1", "13800000001", "c1", "alice", CID1, "conversation", 120)
    await call("k2", "13800000002", "c1", "alice", CID1, "no_answer")
    await call("k3", "13800000003", "c1", "bob", CID2, "abandoned", 0)
    await call("k4", "13800000004", "c1", "bob", CID2, "answered", 15)
    await call("k5", "13800000001", "c2", "alice", CID1, "busy", minutes=5)
    await call("k6", "13800000001", "c2", "bob", CID2, minutes=6)                     # 3rd in 24h: attempt_cap
    await call("k7", "13800000005", "c3", "bob", CID2)                                # campaign_not_approved
    await call("k8", "13800000006", "c1", "alice", "+862150009999")                   # caller_id_not_approved
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
    assert c["c2"]["attempts"] == 2 and c["c2"]["denied_attempt_cap"] == 1 and c["c2"]["answer_rate"] == 0.0
    assert c["c3"]["denied_campaign_not_approved"] == 1 and c["c3"]["answer_rate"] is None
    assert c[rp.NO_CALL]["opt_outs"] == 1  # an opt-out from a number no call reached
    assert camp.totals[camp.columns.index("attempts")] == 8  # the call three days earlier is out of range
    ag = rows(agent)
    assert ag["alice"]["attempts"] == 4 and ag["bob"]["attempts"] == 4 and ag["bob"]["complaints"] == 1
    ci = rows(cid)
    assert ci[CID1]["allowed"] == 3 and ci[CID2]["allowed"] == 2 and ci[CID2]["answer_rate"] == 100.0
    rs = rows(reason)
    assert list(rs) == ["campaign_not_approved", "caller_id_not_approved", "attempt_cap"]  # SPEC order
    assert rs["attempt_cap"]["denials"] == 1 and rs["attempt_cap"]["share_of_attempts"] == 12.5


async def test_report_cli_csv_and_xlsx(shipped, tmp_path):
    e, dsn, _ = shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_REDIS_URL": e.settings.redis_url,
           "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(), "DIALGUARD_SITE_TZ": "Asia/Shanghai"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "dialguard.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=120)
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "caller_id", "--csv", "-")
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    by = {row["caller_id"]: row for row in table}
    assert by[CID1]["allowed"] == "3" and by["total"]["attempts"] == "8"  # caller IDs named, not hashed
    x = tmp_path / "r.xlsx"
    r = run("report", "--from", "2026-11-23", "--to", "2026-11-23", "--by", "agent", "--xlsx", str(x))
    assert r.returncode == 0, r.stderr
    from openpyxl import load_workbook

    ws = load_workbook(x)["by agent"]
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0][:3] == ["agent", "attempts", "allowed"] and values[-1][0] == "total"
    r = run("report", "--from", "2026-11-23", "--by", "campaign")
    assert r.returncode == 0 and "c1" in r.stdout and "abandon" in r.stdout
    assert run("report", "--from", "2026-11-24", "--to", "2026-11-23").returncode == 2
    assert run("report", "--from", "2026-11-23", "--by", "weather").returncode == 2


async def test_audit_show_number_and_history_decrypt_with_the_key(shipped):
    e, dsn, ds = shipped
    env = {**os.environ, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_HASH_SECRET": e.settings.hash_secret.decode(),
           "DIALGUARD_KEY_PREFIX": e.keys.prefix}
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "dialguard.cli", *a], capture_output=True,  # noqa: E731
                                          text=True, env={**env, **kw}, timeout=120)
    r = run("audit", "show", ds["k1"].decision_id, "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["number"] == "+8613800000001" and shown["allowed"] is True
    assert [o["result"] for o in shown["outcomes"]] == ["conversation"]
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
