"""Lead order on the real PostgreSQL (issue #18 item 7): priority, agent-owned callbacks,
preview hold/accept/skip, agent states, retry counts by outcome, pacing settings."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

import cli_inproc
from fakes.dialer_db import ensure_schema
from dialguard.campaigns.leads import Lead
from dialguard.campaigns.store import CampaignError, Store

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)


@pytest.fixture
async def store(pg_dsn):
    ensure_schema(pg_dsn)
    s = await Store.open(pg_dsn)
    yield s
    await s.close()


async def campaign(store, n=3, **kw):
    name = f"order-{uuid.uuid4().hex[:8]}"
    await store.create_campaign(name, **kw)
    nums = [f"+86138{uuid.uuid4().int % 10**6:06d}{i:02d}" for i in range(n)]
    await store.add_leads(name, [Lead(i + 2, x) for i, x in enumerate(nums)], now=NOW - timedelta(hours=1))
    rows = await store._all("select id from dialer_leads where campaign = %s order by id", (name,))
    return name, [r["id"] for r in rows]


async def test_higher_priority_first_then_oldest_due(store):
    name, ids = await campaign(store, 3)
    await store.set_lead(ids[2], priority=5)
    await store.set_lead(ids[0], callback_at=NOW - timedelta(minutes=30))  # due later than the others
    got = [x["id"] for x in await store.claim_due(name, 3, NOW)]
    assert got == [ids[2], ids[1], ids[0]]


async def test_callback_owned_by_an_agent_waits_for_that_agent(store):
    name, ids = await campaign(store, 2)
    row = await store.set_lead(ids[0], owner_agent="ag-own", callback_at=NOW - timedelta(hours=2))
    assert row["owner_agent"] == "ag-own" and row["state"] == "pending"
    assert [x["id"] for x in await store.claim_due(name, 5, NOW, ready_agents=["other"])] == [ids[1]]
    assert await store.claim_due(name, 5, NOW, ready_agents=[]) == []
    [x] = await store.claim_due(name, 5, NOW, ready_agents=["ag-own"])
    assert x["id"] == ids[0] and x["owner_agent"] == "ag-own"


async def test_callback_reopens_a_done_lead_but_never_a_blocked_one(store):
    name, ids = await campaign(store, 2)
    await store.release_lead(ids[0], state="done", result="failed")
    await store.release_lead(ids[1], state="blocked", result="opted_out")
    assert (await store.set_lead(ids[0], callback_at=NOW))["state"] == "pending"
    assert (await store.set_lead(ids[1], callback_at=NOW))["state"] == "blocked"
    assert await store.set_lead(10**12, priority=1) is None


async def test_preview_hold_accept_skip(store):
    name, ids = await campaign(store, 2, pacing_mode="preview")
    held = await store.preview_next(name, "pv1", NOW)
    assert held["id"] == ids[0] and held["number"].startswith("+86")
    assert (await store.preview_next(name, "pv1", NOW))["id"] == ids[0]  # still the same until answered
    assert (await store.preview_next(name, "pv2", NOW))["id"] == ids[1]  # another agent: another lead
    # held leads are never taken by the dialer, not even by their agent, until accepted
    assert await store.claim_due(name, 5, NOW, ready_agents=["pv1", "pv2"]) == []
    assert await store.held_previews(name, NOW) == {}
    assert await store.answer_preview(ids[0], "pv2", True) is None  # not held for pv2
    assert (await store.answer_preview(ids[0], "pv1", True))["owner_agent"] == "pv1"
    assert await store.held_previews(name, NOW) == {"pv1": 1}
    assert await store.claim_due(name, 5, NOW, ready_agents=["pv2"]) == []
    skipped = await store.answer_preview(ids[1], "pv2", False)
    assert skipped["owner_agent"] is None
    got = {x["id"] for x in await store.claim_due(name, 5, datetime.now(UTC) + timedelta(seconds=5),
                                                 ready_agents=["pv1"])}
    assert got == {ids[0], ids[1]}


async def test_agent_states_and_retry_counts(store):
    a = f"ag-{uuid.uuid4().hex[:6]}"
    await store.set_agent_state(a, "break")
    assert (await store.agent_states())[a] == "break"
    await store.set_agent_state(a, "ready")
    assert (await store.agent_states())[a] == "ready"
    with pytest.raises(CampaignError, match="agent state"):
        await store.set_agent_state(a, "on_call")  # derived by the dialer, never set
    name, ids = await campaign(store, 1)
    for i, res in enumerate(["busy", "busy", "no_answer"]):
        cid = f"dgc-{uuid.uuid4().hex}"
        await store.new_call(cid, ids[0], name, None)
        await store.end_call(cid, result=res, ended_at=NOW + timedelta(minutes=i))
    assert await store.results_of_lead(ids[0], "busy") == 2
    assert await store.results_of_lead(ids[0], "no_answer") == 1
    assert await store.results_of_lead(ids[0], "amd") == 0


async def test_pacing_settings_checked_by_the_database(store):
    name, _ = await campaign(store, 1)
    c = await store.update_campaign(name, pacing_mode="predictive", wrap_up_s=20, retry_rules="busy=300s/3")
    assert (c.pacing_mode, c.wrap_up_s, c.retry_rules) == ("predictive", 20, "busy=300s/3")
    with pytest.raises(CampaignError, match="pacing_mode"):
        await store.update_campaign(name, pacing_mode="turbo")
    with pytest.raises(CampaignError, match="wrap_up_s"):
        await store.update_campaign(name, wrap_up_s=7200)
    with pytest.raises(CampaignError, match="does not exist"):
        await store.update_campaign("nope-" + name, wrap_up_s=1)


def cli(*args):
    """`dialguard ARGS` in this process (tests/cli_inproc.py)."""
    return cli_inproc.run(args)


async def test_cli_pacing_agent_and_preview(store):
    name, ids = await campaign(store, 1)
    out = cli("campaign", "pacing", name, "--mode", "preview", "--wrap-up", "15",
              "--retry", "busy=5m/3,amd=1d/1", "--json")
    assert out.returncode == 0, out.stderr
    assert '"pacing_mode": "preview"' in out.stdout and '"retry_rules": "amd=86400s/1,busy=300s/3"' in out.stdout
    bad = cli("campaign", "pacing", name, "--retry", "busy=5m")
    assert bad.returncode == 2 and "OUTCOME=DELAY/MAX" in bad.stderr + bad.stdout
    bad = cli("campaign", "pacing", name, "--mode", "turbo")
    assert bad.returncode == 2 and "one of" in bad.stderr + bad.stdout
    out = cli("campaign", "pacing", name, "--amd", "--amd-action", "message", "--amd-media", "sound:vm-goodbye",
              "--json")
    assert out.returncode == 0 and '"amd": true' in out.stdout and '"amd_action": "message"' in out.stdout
    assert cli("campaign", "pacing", name, "--amd-action", "voicemail").returncode == 2
    assert cli("campaign", "pacing", name, "--amd-media", "http://x/y?z").returncode == 2  # not a media URI
    assert cli("campaign", "pacing", name, "--amd-media", "sound:../../secret").returncode == 2
    agent = f"cli-{uuid.uuid4().hex[:6]}"
    assert cli("agent", "state", agent, "break").returncode == 0
    assert (await store.agent_states())[agent] == "break"
    assert cli("agent", "state", agent, "lunch").returncode == 2
    out = cli("agent", "preview", agent, "--campaign", name, "--json")
    assert out.returncode == 0, out.stderr
    assert f'"lead": {ids[0]}' in out.stdout
    lead = await store.lead(ids[0])
    assert lead["number"] not in out.stdout and lead["number"][3:-4] not in out.stdout  # masked
    assert cli("agent", "accept", "someone-else", str(ids[0])).returncode == 2
    assert cli("agent", "accept", agent, str(ids[0])).returncode == 0
    assert await store.held_previews(name, NOW) == {agent: 1}
    out = cli("campaign", "lead", str(ids[0]), "--priority", "7")
    assert out.returncode == 0 and "priority 7" in out.stdout


async def test_a_migration_under_a_running_store_does_not_break_it(store, pg_dsn):
    """A column added while the dialer runs (`dialguard db migrate`): its next `select *`
    still works (seen on the stack: a prepared plan failed on every call until restart)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    for _ in range(8):  # past psycopg's automatic preparation threshold (5)
        await store.campaigns()
    info = conninfo_to_dict(pg_dsn)
    info["user"] = "postgres"
    col = f"probe_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(make_conninfo(**info), autocommit=True) as admin:
        admin.execute(f"alter table dialer_campaigns add column {col} integer")
        try:
            assert isinstance(await store.campaigns(), list)
        finally:
            admin.execute(f"alter table dialer_campaigns drop column {col}")
    assert isinstance(await store.campaigns(), list)


async def test_campaigns_in_play_are_running_paused_or_named(store):
    """What a dialer reads every 0.5 s: running and paused campaigns, and the ones it is
    told have work left (calls up, outcomes unreported), whatever their state; never the
    stopped and draft ones otherwise (a centre keeps hundreds of finished campaigns)."""
    names = {}
    nobody = f"no-dialer-{uuid.uuid4().hex[:6]}"  # served by no dialer (the stack's would take them)
    for state in ("draft", "approved", "running", "paused", "stopped"):
        name = f"play-{state}-{uuid.uuid4().hex[:6]}"
        await store.create_campaign(name, dialer=nobody)
        if state != "draft":
            await store.set_approval(name, True)
        if state in ("running", "paused", "stopped"):
            await store.set_state(name, "running")
        if state in ("paused", "stopped"):
            await store.set_state(name, state)
        names[state] = name
    got = {c.name: c.state for c in await store.campaigns_in_play(set())}
    mine = {n: s for n, s in got.items() if n in names.values()}
    assert mine == {names["running"]: "running", names["paused"]: "paused"}, mine
    got = {c.name for c in await store.campaigns_in_play({names["stopped"], "no-such-campaign"})}
    assert {names["running"], names["paused"], names["stopped"]} <= got
    assert names["draft"] not in got and names["approved"] not in got
    # a stopped campaign with work left (a lead still dialing: its call's outcome is owed) is
    # in play without being named: whoever takes it over finishes that work (one query)
    busy = f"play-busy-{uuid.uuid4().hex[:6]}"
    await store.create_campaign(busy, dialer=nobody)
    await store.add_leads(busy, [Lead(2, "+8613800000001")], now=NOW - timedelta(hours=1))
    assert busy not in {c.name for c in await store.campaigns_in_play(set())}
    await store._one("update dialer_leads set state = 'dialing' where campaign = %s returning id", (busy,))
    assert busy in {c.name for c in await store.campaigns_in_play(set())}
    assert busy in await store.campaigns_with_work()
    names["busy"] = busy
    everything = {c.name for c in await store.campaigns()}
    assert got <= everything and set(names.values()) <= everything
    await store._one("update dialer_leads set state = 'done' where campaign = %s returning id", (busy,))
    for state in ("running", "paused"):
        await store.set_state(names[state], "stopped")
