"""The console's DNC page (dialguard/web/dnc_page.py) on the stack's real Redis and
PostgreSQL: a CSV uploaded by a supervisor goes through `dnc import`'s code path
(Redis fingerprints, sealed entries at rest), its progress page ends with the
figures and every rejected row with its line and why, the guard's next decision
for a listed number is `dnc`, the audit names the user; a viewer is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import uuid

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.crypto import Sealer
from dialguard.dnc import DncStore, list_name
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"


@pytest.fixture
def people():
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "supervisor": f"s{tag}", "other": f"o{tag}"}
    roles = {"viewer": "viewer", "supervisor": "supervisor", "other": "supervisor"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for k, n in names.items():
            u.add_user(c, n, roles[k], PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def site(settings, people):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
    c = TestClient(TestServer(make_app(s, WebSettings())), cookie_jar=aiohttp.CookieJar(unsafe=True))
    await c.start_server()
    e = await Engine.create(s, Policy.load("cn-default"), skip_caller_id_without_pool=True)
    camp = f"dncweb-{uuid.uuid4().hex[:8]}"
    yield c, e, people, camp
    await c.close()
    await _drop_namespace(e.redis, s.key_prefix)
    await e.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute("delete from dnc_entries where list = %s", (camp,))
        conn.execute("delete from dnc_blocks where list = %s", (camp,))


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def login(c: TestClient, user: str) -> str:
    c.session.cookie_jar.clear()
    r = await c.get("/login")
    r = await c.post("/login", data={"user": user, "password": PW, "csrf": _csrf(await r.text())})
    assert r.status == 200
    return _csrf(await (await c.get("/dnc")).text())


def form(csrf: str, data: bytes, campaign: str, filename: str = "leads.csv") -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("csrf", csrf)
    f.add_field("file", data, filename=filename, content_type="text/csv")
    f.add_field("campaign", campaign)
    f.add_field("why", "customer asked")
    return f


async def finished(c: TestClient, location: str) -> str:
    for _ in range(600):
        r = await c.get(location)
        assert r.status == 200
        text = await r.text()
        if "Refresh" not in r.headers:
            return text
        assert 'id="progress"' in text and "<progress" in text
        await asyncio.sleep(0.1)
    raise AssertionError("the import did not finish in 60 s")


async def test_supervisor_uploads_a_csv_garbage_rejected_with_reasons_nothing_lost(site, monkeypatch):
    c, e, people, camp = site
    import dialguard.admin
    import dialguard.web.dnc_page as page

    made = []  # the import's Redis clients: the operator's (ADMIN_REDIS_TIMEOUT_S), not the engine's 200 ms

    def spy(settings):
        r = dialguard.admin.admin_redis(settings)
        made.append(r.connection_pool.connection_kwargs["socket_timeout"])
        return r
    monkeypatch.setattr(page, "admin_redis", spy)
    rnd = random.Random()
    good = [f"+86139{rnd.randrange(10**8):08d}" for _ in range(40)]
    national = [g[3:] for g in good[:10]]  # the same numbers written nationally: duplicates
    garbage = ["hello", "123", "", "n/a", "99999999999999999999"]
    lines = ["name,phone"] + [f"p{i},{n}" for i, n in enumerate(good)] + [f"d{i},{n}" for i, n in enumerate(national)]
    lines += [f"g{i},{n}" for i, n in enumerate(garbage)]
    body = ("\n".join(lines) + "\n").encode()

    csrf = await login(c, people["viewer"])
    r = await c.post("/dnc/import", data=form(csrf, body, camp))
    assert r.status == 403 and "dnc_edit needs the role supervisor" in await r.text()

    csrf = await login(c, people["supervisor"])
    r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/dnc/import/")
    loc = r.headers["Location"]
    text = await finished(c, loc)
    assert "55 rows: 40 added, 10 already listed, 5 rejected; 40 new entries stored at rest" in text, text[-800:]
    assert made == [dialguard.admin.ADMIN_REDIS_TIMEOUT_S], made
    rejects = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([^<]+)</td></tr>", text)
    assert [int(ln) for ln, _, _ in rejects] == list(range(52, 57))  # every garbage line, in order
    assert all(why for _, _, why in rejects) and rejects[0][1] == "hello"

    # every valid number is in the list (Redis) and at rest sealed, never in plaintext
    store = DncStore(e.redis, e.keys)
    for n in good:
        assert await store.contains(list_name(camp), e.keys.number_tag(n))
    with psycopg.connect(admin_dsn()) as conn:  # imported: in blocks (dnc_blocks), sealed a block at a time
        rows = conn.execute("select hashes, sealed, source from dnc_blocks where list = %s", (camp,)).fetchall()
        assert conn.execute("select count(*) from dnc_entries where list = %s", (camp,)).fetchone()[0] == 0
    assert sum(len(r[0]) // 16 for r in rows) == 40 and {r[2] for r in rows} == {"web:leads.csv"}
    sealer = Sealer()
    from dialguard.dnc import block_numbers
    assert sorted(n.decode() for r in rows for n in block_numbers(sealer.open_block(r[1], r[0]))) == sorted(good)
    assert not any(g[3:].encode() in r[0] + r[1] for g in good for r in rows)
    # the guard denies a listed number for that campaign
    await e.set_campaign(camp)
    from datetime import datetime, timezone
    d = await e.decide(DecisionRequest(number=good[0], campaign=camp, agent="a1"),
                       datetime(2026, 3, 2, 2, tzinfo=timezone.utc))
    assert "dnc" in d.reasons
    recs = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    imp = [x for x in recs if x["action"] == "dnc_import"]
    assert len(imp) == 1 and imp[0]["actor"] == f"web:{people['supervisor']}" and imp[0]["target"] == camp
    assert (imp[0]["rows"], imp[0]["added"], imp[0]["rejected"], imp[0]["why"]) == (55, 40, 5, "customer asked")
    lists = await (await c.get("/dnc")).text()
    assert re.search(rf"<td>{camp}</td><td>40</td><td>40</td>", lists)

    # the same file again adds nothing; another supervisor may not see this user's job
    r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
    assert "55 rows: 0 added, 50 already listed, 5 rejected; 0 new entries" in await finished(c, r.headers["Location"])
    await login(c, people["other"])
    assert (await c.get(loc)).status == 404


async def test_undecodable_bytes_reject_rows_not_the_file_and_limits_are_clear(site):
    c, e, people, camp = site
    csrf = await login(c, people["supervisor"])
    body = b"+8613912345678\n\xff\xfe\xfd\n+8613912345679\n"
    r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
    text = await finished(c, r.headers["Location"])
    assert "3 rows: 2 added, 0 already listed, 1 rejected" in text
    r = await c.post("/dnc/import", data=form(csrf, b"+8613900000000\n" * (3 * 1024 * 1024 // 15 + 10), camp))
    assert r.status == 400 and "larger than 3 MiB" in await r.text()
    f = aiohttp.FormData()
    f.add_field("csrf", csrf)
    f.add_field("campaign", camp)
    r = await c.post("/dnc/import", data=f)
    assert r.status == 400 and "choose a CSV file" in await r.text()


async def test_campaign_global_is_refused_as_the_cli_refuses_it(site):
    """`global` names the global list: as a campaign it went to a campaign's list in Redis and to the
    global list at rest. Refused (400, as `dnc import --campaign global`), nothing stored anywhere."""
    c, e, people, camp = site
    csrf = await login(c, people["supervisor"])
    source = f"g-{uuid.uuid4().hex[:8]}.csv"
    r = await c.post("/dnc/import", data=form(csrf, b"number\n+8613912345678\n", "global", source),
                     allow_redirects=False)
    text = await r.text()
    assert r.status == 400 and "&#x27;global&#x27; names the global list: leave campaign out for it" in text, text
    store = DncStore(e.redis, e.keys)
    assert await store.count(list_name("global")) == 0 and await store.count(list_name(None)) == 0
    with psycopg.connect(admin_dsn()) as conn:
        assert conn.execute("select count(*) from dnc_blocks where source = %s", (f"web:{source}",)).fetchone()[0] == 0
    recs = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    assert not [x for x in recs if x["action"] == "dnc_import"]


async def test_an_import_postgresql_refuses_midway_says_what_it_stored_and_is_audited(site):
    """A real failure: PostgreSQL refuses the second 5,000-row chunk (a trigger on dnc_blocks for this
    list). The first chunk stays stored; the job's page says how many rows and to upload again; the
    audit has a `dnc_import` record with status failed and the rows stored. Uploading again finishes."""
    c, e, people, camp = site
    numbers = [f"+86139{n:08d}" for n in random.sample(range(10**8), 12_000)]
    body = ("number\n" + "\n".join(numbers) + "\n").encode()
    fn = f"dgtest_refuse_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:  # a batch for the list while another is stored
        conn.execute(f"""create function {fn}() returns trigger language plpgsql as $$
            begin
              if exists (select 1 from new_rows where list = '{camp}') and exists (
                  select 1 from dnc_blocks b where b.list = '{camp}' and b.id not in (select id from new_rows)) then
                raise exception 'dgtest: PostgreSQL refuses a second batch for {camp}';
              end if;
              return null;
            end $$""")
        conn.execute(f"create trigger {fn} after insert on dnc_blocks referencing new table as new_rows "
                     f"for each statement execute function {fn}()")
    try:
        csrf = await login(c, people["supervisor"])
        r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
        text = await finished(c, r.headers["Location"])
        assert "PostgreSQL refuses a second batch" in text, text[-1000:]
        assert ('id="partial">The import stopped: 5,000 of 12,000 rows stored; upload again to finish '
                "(the import is idempotent).") in text, text[-1000:]
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f"drop trigger if exists {fn} on dnc_blocks")
            conn.execute(f"drop function if exists {fn}()")
    with psycopg.connect(admin_dsn()) as conn:  # the first chunk stays
        assert conn.execute("select sum(entries) from dnc_blocks where list = %s", (camp,)).fetchone()[0] == 5_000
    store = DncStore(e.redis, e.keys)
    assert await store.count(list_name(camp)) >= 5_000  # and the second's Redis part, maybe (idempotent)
    recs = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    imp = [x for x in recs if x["action"] == "dnc_import"]
    assert len(imp) == 1 and imp[0]["actor"] == f"web:{people['supervisor']}" and imp[0]["target"] == camp
    assert (imp[0]["status"], imp[0]["rows"], imp[0]["total"], imp[0]["stored"]) == ("failed", 5_000, 12_000, 5_000)
    assert "PostgreSQL refuses a second batch" in imp[0]["error"]

    # upload again: the rest is stored, nothing twice
    r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
    text = await finished(c, r.headers["Location"])
    assert 'id="done"' in text and "12,000 rows:" in text and "7,000 new entries stored at rest" in text, text[-800:]
    with psycopg.connect(admin_dsn()) as conn:
        assert conn.execute("select sum(entries) from dnc_blocks where list = %s", (camp,)).fetchone()[0] == 12_000
    assert await store.count(list_name(camp)) == 12_000
    recs = [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
    imp = [x for x in recs if x["action"] == "dnc_import"]
    assert [x["status"] for x in imp] == ["failed", "complete"] and imp[1]["stored"] == 7_000 and "error" not in imp[1]


async def test_upload_quote_left_open_and_first_row_neither_header_nor_number(site):
    """The console's upload reads as `dnc import` does: a quote left open is one
    rejected row naming its lines (the numbers after it were lost before, neither
    listed nor shown), the rows after a quote closed further down are listed; a file
    whose first row is neither a header nor a number is refused (400), no job started."""
    c, e, people, camp = site
    csrf = await login(c, people["supervisor"])
    n = [f"+86139{random.randrange(10**8):08d}" for _ in range(6)]
    body = f'number\n{n[0]}\n"{n[1]}\n{n[2]}"\n{n[3]}\n"{n[4]}\n{n[5]}\n'.encode()
    r = await c.post("/dnc/import", data=form(csrf, body, camp), allow_redirects=False)
    assert r.status == 303
    text = await finished(c, r.headers["Location"])
    assert "4 rows: 2 added, 0 already listed, 2 rejected" in text, text[-800:]
    rejects = re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>([^<]+)</td></tr>", text)
    assert [(int(ln), why.split(":")[0]) for ln, why in rejects] == [(3, "lines 3-4"), (6, "lines 6-7")]
    store = DncStore(e.redis, e.keys)
    assert [await store.contains(list_name(camp), e.keys.number_tag(x)) for x in n] == [
        True, False, False, True, False, False]

    from dialguard.web.dnc_page import JOBS
    jobs = len(c.server.app[JOBS])
    r = await c.post("/dnc/import", data=form(csrf, f"Alice,{n[0]}\nBob,{n[1]}\n".encode(), camp),
                     allow_redirects=False)
    text = await r.text()
    assert r.status == 400 and "is not a header naming the number column" in text and "手机号" in text
    assert len(c.server.app[JOBS]) == jobs
