"""Where the callee is, on the real Redis: the stated region and ZIP code in
decisions and their audit records, us-states per call, and the region kill
switch (`pause --region`) with its window."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import cli_inproc
from dialguard.decision.models import DecisionRequest

UTC = timezone.utc
# Monday 2026-03-02 12:00 Eastern: inside every US pack's hours
NOON = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
LA_NUMBER, NY_NUMBER = "+15045550123", "+12125550123"


def req(number, **kw):
    return DecisionRequest(number=number, campaign="c1", agent="a1", **kw)


async def _audit(e, did):
    for _id, f in await e.redis.xrange(e.keys.audit):
        if f.get(b"id", b"").decode() == did and f.get(b"t") == b"decision":
            return json.loads(f[b"j"])
    raise AssertionError(f"no audit record for {did}")


async def test_stated_region_brings_its_rules_and_is_audited(make_engine):
    e = await make_engine("us-tcpa,us-states", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    evening = datetime(2026, 3, 3, 1, 30, tzinfo=UTC)  # 20:30 Eastern
    alone = await e.decide(req(NY_NUMBER, call_id="k0"), now=evening)
    florida = await e.decide(req(NY_NUMBER, region="US-FL", postal_code="33101", party="acct-1", call_id="k1"),
                             now=evening)
    assert alone.allowed and florida.reasons == ["outside_hours"]
    assert "us-fl-ftsa" in florida.explanations["outside_hours"]
    rec = await _audit(e, florida.decision_id)
    assert (rec["region"], rec["postal"]) == ("US-FL", "33101")
    assert rec["party"] != "acct-1" and len(rec["party"]) >= 32           # keyed hash, never the id
    assert "region" not in await _audit(e, alone.decision_id)


async def test_region_pause_window(make_engine):
    e = await make_engine("us-tcpa", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    start, end = NOON + timedelta(hours=1), NOON + timedelta(days=2)
    await e.pause_region("us-la", start, end, why="Governor's proclamation JBE 2026-1")
    assert await e.paused_regions() == [{"region": "US-LA", "from": start, "until": end,
                                         "why": "Governor's proclamation JBE 2026-1"}]
    before = await e.decide(req(LA_NUMBER), now=NOON)
    inside = await e.decide(req(LA_NUMBER), now=start)
    stated = await e.decide(req(NY_NUMBER, region="US-LA"), now=start)       # a New York number of a Louisianan
    other = await e.decide(req(NY_NUMBER), now=start)
    last = await e.decide(req(LA_NUMBER), now=end - timedelta(seconds=1))
    after = await e.decide(req(LA_NUMBER), now=end)                          # half-open: the end is free
    assert before.allowed and other.allowed and after.allowed
    for d in (inside, stated, last):
        assert d.reasons == ["paused"] and "US-LA" in d.explanations["paused"] and d.next_eligible_at is None
    # a pause of a whole country, with no end, until resumed
    await e.pause_region("US", why="test")
    assert (await e.decide(req(NY_NUMBER), now=NOON)).reasons == ["paused"]
    assert await e.resume_region("US") and not await e.resume_region("US")
    assert (await e.decide(req(NY_NUMBER), now=NOON)).allowed
    admin = [json.loads(f[b"j"]) for _id, f in await e.redis.xrange(e.keys.audit) if f.get(b"t") == b"admin"]
    regional = [a for a in admin if "region" in a["action"]]
    assert [(a["action"], a["target"]) for a in regional] == [
        ("pause_region", "US-LA"), ("pause_region", "US"), ("resume_region", "US"), ("resume_region", "US")]
    assert (regional[0]["from"], regional[0]["until"]) == (int(start.timestamp() * 1000), int(end.timestamp() * 1000))
    assert regional[0]["why"] == "Governor's proclamation JBE 2026-1"


def test_pause_region_cli_and_status(redis_url):
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": f"dgtest:{os.urandom(5).hex()}"}
    env.pop("DIALGUARD_TOKEN", None)

    def cli(*args):  # in this process (tests/cli_inproc.py)
        return cli_inproc.run(args, env=env)

    bad = cli("pause", "--region", "Louisiana")
    assert bad.returncode != 0 and "ISO 3166-2" in bad.stderr
    backwards = cli("pause", "--region", "US-LA", "--from", "2026-08-02T00:00:00Z", "--until", "2026-08-01T00:00:00Z")
    assert backwards.returncode != 0 and "ends before it starts" in backwards.stderr
    assert cli("pause", "--from", "2026-08-01T00:00:00Z").returncode != 0    # a window needs a region
    ok = cli("pause", "--region", "US-LA", "--from", "2026-08-01T00:00:00Z", "--until", "2026-08-03T00:00:00Z",
             "--why", "hurricane emergency", "--json")
    assert ok.returncode == 0, ok.stderr
    st = cli("status")
    assert "calls into US-LA from 2026-08-01T00:00:00+00:00 until 2026-08-03T00:00:00+00:00: hurricane emergency" \
        in st.stdout, st.stdout
    js = json.loads(cli("pause", "--status", "--json").stdout)
    assert {"scope": "region", "name": "US-LA", "from": "2026-08-01T00:00:00+00:00",
            "until": "2026-08-03T00:00:00+00:00", "why": "hurricane emergency"} in js["paused"]
    assert cli("resume", "--region", "US-LA").returncode == 0
    assert "nothing is paused" in cli("status").stdout


async def test_party_opt_out_and_complaint_from_the_cli(make_engine):
    """`dialguard optout --party` / `complaint --party`: every number decided
    with that party is refused; the party is never in Redis in clear."""
    e = await make_engine("us-tcpa", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": e.keys.prefix}

    def cli(*args):  # in this process (tests/cli_inproc.py)
        return cli_inproc.run(args, env=env)

    assert cli("optout").returncode != 0
    assert cli("optout", "--party", "acct-123").returncode == 0
    assert cli("complaint", "--party", "acct-456").returncode == 0
    a = await e.decide(req(NY_NUMBER, party="acct-123"), now=NOON)
    b = await e.decide(req(LA_NUMBER, party="acct-456"), now=NOON)
    c = await e.decide(req(LA_NUMBER, party="acct-789"), now=NOON)
    assert (a.reasons, b.reasons, c.reasons) == (["opted_out"], ["complained"], [])
    assert a.next_eligible_at is None
    async for key in e.redis.scan_iter(match=f"{e.keys.prefix}:*"):
        assert b"acct-" not in key
