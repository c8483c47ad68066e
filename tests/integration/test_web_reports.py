"""The console's reports (dialguard/web/reports.py) on shipped audit records: real
Redis, a real PostgreSQL cluster of this module's own. The page and its CSV, XLSX
and PDF exports are parsed and checked against `dialguard report`'s own build on
the same audit; caller IDs masked for a viewer, in full for a supervisor."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import re
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit import migrate as m
from dialguard.audit import report as rp
from dialguard.audit.db import sql_dirs
from dialguard.audit.shipper import Shipper
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.rules_store import RulesStore, bundle_sources
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings, mask

pytestmark = pytest.mark.integration
UTC = timezone.utc
SERVICE = "dg_service"
PW = "a long enough passphrase"
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Mon 10:00 Shanghai
CID1, CID2 = "+862150000001", "+862150000002"
DAY = {"from": "2026-11-23", "to": "2026-11-23", "tz": "Asia/Shanghai"}
SHADOW_PACK = """pack: shadow-one
version: "1"
default_region: CN
hours:
  zone: callee
  weekly: {all: ["00:00-24:00"]}
caps:
  - {id: per-day, max: 1, window: {rolling: 24h}, scope: number}
"""


@pytest.fixture
async def console(cluster, make_engine, settings):
    """A shipped day of calls, a viewer and a supervisor in the same database, and the console on it."""
    name = f"dgw_{uuid.uuid4().hex[:8]}"
    cluster.create_db(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=[SERVICE])
        people = {"viewer": f"v{uuid.uuid4().hex[:6]}", "supervisor": f"s{uuid.uuid4().hex[:6]}"}
        for role, n in people.items():
            u.add_user(conn, n, role, PW)
    dsn = cluster.dsn(name, SERVICE)
    e = await make_engine("cn-default")
    for c in ("c1", "c2"):
        await e.set_campaign(c)
    for c in (CID1, CID2):
        await e.approve_caller_id(c)
    # shadow rules beside the active ones: one attempt a day (the active pack allows two)
    await RulesStore(e.redis, e.keys).apply_bundle(bundle_sources([("shadow-one", SHADOW_PACK)])[1], shadow=True,
                                                   why="trial")

    async def call(key, number, campaign, agent, cid, result=None, talk=0, minutes=0):
        d = await e.decide(DecisionRequest(number=number, campaign=campaign, agent=agent, caller_id=cid,
                                           call_id=key), now=NOW + timedelta(minutes=minutes))
        if d.allowed and result:
            await e.report_outcome(key, Outcome(result=result, talk_s=talk), now=NOW + timedelta(minutes=minutes + 1))

    await call("k1", "13800000001", "c1", "alice", CID1, "conversation", 120)
    await call("k2", "13800000002", "c1", "alice", CID1, "no_answer")
    await call("k3", "13800000003", "c1", "bob", CID2, "abandoned", 0)
    await call("k4", "13800000004", "c1", "bob", CID2, "answered", 15)
    await call("k5", "13800000001", "c2", "alice", CID1, "busy", minutes=5)
    await call("k6", "13800000001", "c2", "bob", CID2, minutes=6)           # attempt_cap
    await call("k7", "13800000005", "c3", "bob", CID2)                      # campaign_not_approved
    await call("k8", "13800000006", "c1", "alice", "+862150009999")         # caller_id_not_approved
    await call("old", "13800000007", "c1", "alice", CID1, "conversation", 60, minutes=-3 * 24 * 60)
    sh = Shipper(e.settings, prefix=e.keys.prefix, dsn=dsn, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    s = dataclasses.replace(e.settings, pg_dsn=dsn, site_timezone="Asia/Shanghai")
    c = TestClient(TestServer(make_app(s, WebSettings())), cookie_jar=aiohttp.CookieJar(unsafe=True))
    await c.start_server()
    yield c, people, dsn
    await c.close()


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def login(c: TestClient, user: str) -> None:
    c.session.cookie_jar.clear()
    r = await c.get("/login")
    r = await c.post("/login", data={"user": user, "password": PW, "csrf": _csrf(await r.text())},
                     allow_redirects=False)
    assert r.status == 303


def audit_report(dsn: str, by: str, show=lambda n: n) -> rp.Report:
    """`dialguard report` on the same audit, for comparison."""
    a, b = rp.parse_bound(DAY["from"], DAY["tz"]), rp.parse_bound(DAY["to"], DAY["tz"], end=True)
    with psycopg.connect(dsn) as conn:
        label = rp.caller_id_labeler(conn, show) if by == "caller_id" else None
        policy_of = rp.campaign_policies(conn, "cn-default") if by == "campaign" else None
        return rp.build(conn, by, a, b, DAY["tz"], cid_label=label, policy_of=policy_of)


def expected_cells(rep: rp.Report) -> list[list[str]]:
    return [[("" if v is None else str(v)) for v in r] for r in [*rep.rows, rep.totals]]


async def test_page_with_charts_and_caller_ids_masked_for_a_viewer(console):
    c, people, dsn = console
    r = await c.get("/reports", params={**DAY, "by": "caller_id"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"  # signed in first
    await login(c, people["viewer"])
    r = await c.get("/reports", params={**DAY, "by": "caller_id"})
    text = await r.text()
    assert r.status == 200
    assert CID1 not in text and CID2 not in text and mask(CID1) in text
    assert 'id="chart-attempts"' in text and 'id="chart-reasons"' in text and 'id="chart-abandon"' in text
    assert "<script" not in text  # the charts are SVG drawn by the server
    # the denial chart has one bar per reason the audit holds, with its count
    reasons = audit_report(dsn, "caller_id").columns
    for col in reasons:
        if col.startswith("denied_"):
            assert f"<title>{col[7:]}: 1</title>" in text
    for f in ("csv", "xlsx", "pdf"):
        assert f'id="export-{f}" href="/reports/export.{f}?from=2026-11-23&amp;to=2026-11-23&amp;by=caller_id' in text

    await login(c, people["supervisor"])
    text = await (await c.get("/reports", params={**DAY, "by": "caller_id"})).text()
    assert CID1 in text and CID2 in text


async def test_csv_xlsx_pdf_exports_match_the_audit(console):
    from openpyxl import load_workbook
    from pypdf import PdfReader

    c, people, dsn = console
    await login(c, people["viewer"])
    for by in ("campaign", "caller_id", "reason", "agent"):
        want = audit_report(dsn, by, show=mask)
        r = await c.get("/reports/export.csv", params={**DAY, "by": by})
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert r.headers["Content-Disposition"] == f'attachment; filename="dialguard-report-{by}-20261123-20261123.csv"'
        got = list(csv.reader(io.StringIO(await r.text())))
        assert got[0] == want.columns and got[1:] == expected_cells(want)

        r = await c.get("/reports/export.xlsx", params={**DAY, "by": by})
        assert r.status == 200
        ws = load_workbook(io.BytesIO(await r.read()))[f"by {by}"]
        values = [[cell.value for cell in row] for row in ws.iter_rows()]
        assert values[0] == want.columns and values[1:] == [list(x) for x in [*want.rows, want.totals]]

    camp = audit_report(dsn, "campaign")
    byc = {row[0]: dict(zip(camp.columns, row)) for row in camp.rows}
    assert byc["c1"]["attempts"] == 5 and byc["c1"]["abandon_rate"] == 33.3  # the audit holds what we made

    r = await c.get("/reports/export.pdf", params={**DAY, "by": "caller_id"})
    assert r.status == 200 and r.headers["Content-Type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(await r.read())).pages)
    assert "dialguard report by Caller ID" in text and f"web:{people['viewer']}" in text
    assert mask(CID1) in text and CID1 not in text
    lines = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.split()}
    want = audit_report(dsn, "caller_id", show=mask)
    for row in [*want.rows, want.totals]:
        d = dict(zip(want.columns, row))
        # label, attempts, allowed, denied: the first cells of the row, as the audit has them
        assert lines[str(row[0])][:3] == [str(d["attempts"]), str(d["allowed"]), str(d["denied"])]


async def test_pdf_in_chinese(console):
    from pypdf import PdfReader

    c, people, _ = console
    await login(c, people["supervisor"])
    await c.get("/lang/zh")
    r = await c.get("/reports/export.pdf", params={**DAY, "by": "campaign"})
    assert r.status == 200
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(await r.read())).pages)
    assert "dialguard 报表（按外呼任务）" in text and "放弃率" in text and "33.3%" in text


@pytest.mark.parametrize("query, msg", [
    ({"by": "weather"}, "by is one of campaign, agent, caller_id, region, reason"),
    ({"from": "2026-11-24", "to": "2026-11-23"}, "the end is before the start"),
    ({"from": "23/11/2026"}, "dates are YYYY-MM-DD"),
    ({"tz": "Mars/Olympus"}, "unknown time zone"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "at most 366 days"),
    ({"to": "9999-12-31"}, "in years 1 to 9999"),  # the day after it: an OverflowError was a 500
    ({"from": "0001-01-01", "to": "0001-01-02", "tz": "Asia/Shanghai"}, "in years 1 to 9999"),
])
async def test_bad_parameters_say_what_is_wrong(console, query, msg):
    c, people, _ = console
    await login(c, people["viewer"])
    for path in ("/reports", "/reports/export.csv"):
        r = await c.get(path, params={**DAY, **query})
        assert r.status == 400 and msg in await r.text()
    assert (await c.get("/reports/export.doc", params=DAY)).status == 404
    # /rules' shadow report reads the same parameters: the page stands, the problem said
    r = await c.get("/rules", params={**DAY, **query})
    assert r.status == 200 and '<p class="err" id="shadow-report">' in (text := await r.text()) and msg in text


async def test_rules_page_shadow_report_masked_for_a_viewer(console):
    """/rules' shadow report (dialguard report --shadow) on the shipped decisions: the
    second call to +8613800000001 (k5) is allowed by the active rules, denied by the shadow."""
    c, people, dsn = console
    n = "+8613800000001"
    await login(c, people["viewer"])
    text = await (await c.get("/rules", params=DAY)).text()
    row = re.search(r'<table id="shadow-report".*?</table>', text, re.S).group(0)
    cells = re.findall(r"<td>([^<]*)</td>", row)
    # 8 decisions under shadow version 1: 7 the same; k5 allow -> deny (attempt_cap). k8's caller ID,
    # not approved, is denied by the shadow pack too: a presented caller ID is checked under every
    # pack, whether or not it says `require_approved` (before stop 25 it was deny -> allow)
    assert cells[:5] == ["1", "8", "7", "1", "0"] and "attempt_cap 1" in cells[5]
    rows = re.search(r'<table id="shadow-rows".*?</table>', text, re.S).group(0)
    assert mask(n) in rows and n not in rows and "c2" in rows and "attempt_cap" in rows
    await login(c, people["supervisor"])
    rows = re.search(r'<table id="shadow-rows".*?</table>', await (await c.get("/rules", params=DAY)).text(),
                     re.S).group(0)
    assert n in rows


async def test_campaign_report_sets_abandonment_against_the_pack_limit(console):
    """By campaign the console, like `dialguard report`, shows a dialer campaign's
    abandonment against its pack's limit (us-tcpa: 3 % over 30 days of live answers)."""
    c, people, dsn = console
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into dialer_campaigns (name, rules) values ('c1', 'cn-default,us-tcpa')")
        lead = conn.execute("insert into dialer_leads (campaign, number_hash, number_enc) values"
                            " ('c1', 'h1', 'x') returning id").fetchone()[0]
        for i, result in enumerate(["conversation"] * 24 + ["abandoned"]):  # 1 of 25: 4 %
            t = NOW - timedelta(days=2, seconds=i)  # inside the 30 days before the range's end
            conn.execute("insert into dialer_calls (channel_id, lead_id, campaign, state, result, created_at,"
                         " answered_at) values (%s, %s, 'c1', 'ended', %s, %s, %s)",
                         (f"dgc-{uuid.uuid4().hex}", lead, result, t, t))
    await login(c, people["viewer"])
    text = await (await c.get("/reports", params={**DAY, "by": "campaign"})).text()
    assert "Pack abandon limit" in text and "us-tcpa 3% over 30 days" in text and "OVER" in text
    r = await c.get("/reports/export.csv", params={**DAY, "by": "campaign"})
    got = {row["campaign"]: row for row in csv.DictReader(io.StringIO(await r.text()))}
    assert (got["c1"]["abandon_limit"], got["c1"]["limit_state"]) == ("us-tcpa 3% over 30 days", "OVER")
    assert got["c2"]["abandon_limit"] == ""  # not a dialer campaign: no rate measured
