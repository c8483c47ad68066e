"""The ARI campaign dialer on the real stack: Asterisk + SIPp carrier and agent phones.

The dialer runs in the test process against the stack's ARI, PostgreSQL and
Redis (its engine in a namespace of its own, on a test clock set to a Monday
10:00 in Shanghai so cn-default's hours allow the calls). Carrier behaviour by
number suffix (scenarios/dialer_carrier): 86 busy, 99 never answers, 77 answers
and presses 9, anything else answers and hangs up after 4 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ari_app import metrics as m
from ari_app.dialer import Dialer, DialerConfig
from ari_app.lifecycle import Lifecycle, end_var, fallback_var
from fakes.dialer_db import ensure_schema
from dialguard.campaigns.leads import Lead
from dialguard.campaigns.store import Store
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.simulate import _drop_namespace
from sipp import SCENARIOS, Sipp, parse_uas_log

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Monday 10:00 Asia/Shanghai, a working day
CALLER_ID = "+862150000001"


def number(suffix: str) -> str:
    """A valid CN mobile number ending in `suffix` (2 digits), unique per run."""
    return f"+86138{uuid.uuid4().int % 10**6:06d}{suffix}"


def rtp_sink_port(stack) -> int:
    """Where the carrier's calls to ...55 and ...44 send their media (tests listen there)."""
    return stack.carrier_port + 40



async def die(task: asyncio.Task, timeout: float = 30.0) -> None:
    """A dialer's task stops as a process would die: cancelled once, its end awaited.
    Bounded: a lost cancel fails the test instead of hanging it (CI, 2026-12-05: a
    dialer went on ticking after its cancel, the pytest process idle for 18 min;
    the cause, redis-py's wait_for on Python 3.11, and the fix: dialguard/cancel.py)."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=timeout)
    assert done, "the dialer task outlived its cancellation"
    assert task.cancelled(), task


class Rig:
    def __init__(self, stack, engine: Engine, store: Store, workdir: Path, agent_port: int):
        self.stack, self.engine, self.store, self.workdir = stack, engine, store, workdir
        self.agent_port = agent_port
        self.dialers: list[tuple[Dialer, asyncio.Task]] = []
        self.campaign_names: list[str] = []
        self.prefix: str | None = None  # the engine's Redis namespace (None: the live guard)
        # This rig's Stasis app; its campaigns are assigned to it (their `dialer`), so the
        # stack's own dialer (`make up`) leaves them alone.
        self.app = f"dg-test-{uuid.uuid4().hex[:6]}"

    def agent(self, name: str) -> str:
        return f"PJSIP/agent-phones/sip:{name}@127.0.0.1:{self.agent_port}"

    async def campaign(self, numbers: list[str], **settings) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        settings.setdefault("ring_timeout_s", 3)
        settings.setdefault("retry_after_s", 3600)
        settings.setdefault("calls_per_second", 20)
        settings.setdefault("dialer", self.app)
        await self.store.create_campaign(name, **settings)
        await self.store.set_approval(name, True)
        await self.engine.set_campaign(name, True)
        await self.engine.approve_caller_id(CALLER_ID, campaign=name)
        self.campaign_names.append(name)
        await self.store.set_state(name, "running")
        added, _ = await self.store.add_leads(name, [Lead(i + 2, n) for i, n in enumerate(numbers)], now=NOW)
        assert added == len(numbers)
        return name

    def start(self, campaign: str | list[str], agents: list[str], **cfg) -> Dialer:
        cfg.setdefault("abandon_media_max_s", 1.0)
        cfg.setdefault("app", self.app)
        d = Dialer(DialerConfig(ari_url=self.stack.ari_url, ari_user=self.stack.ari_user,
                                ari_password=self.stack.ari_password, agents={a: self.agent(a) for a in agents},
                                campaigns=[campaign] if isinstance(campaign, str) else campaign, **cfg),
                   self.engine, self.store)
        self.dialers.append((d, asyncio.create_task(d.run())))
        return d

    async def stop_all(self) -> None:
        for d, t in self.dialers:
            d.stop()
            await asyncio.wait_for(t, 20)
        self.dialers.clear()

    async def leads(self, campaign: str) -> dict[str, dict]:
        rows = await self.store._all("select * from dialer_leads where campaign = %s", (campaign,))
        return {r["number"]: r for r in rows}

    async def calls(self, campaign: str) -> list[dict]:
        return await self.store._all(
            "select c.*, l.number_enc from dialer_calls c join dialer_leads l on l.id = c.lead_id"
            " where c.campaign = %s order by c.created_at", (campaign,))

    async def settle(self, campaign: str, timeout: float = 40) -> dict[str, dict]:
        """Wait until no lead is due or dialing and every call is ended and reported."""
        deadline = time.monotonic() + timeout
        while True:
            leads = await self.leads(campaign)
            calls = await self.calls(campaign)
            busy = [n for n, r in leads.items() if r["state"] == "dialing"
                    or (r["state"] == "pending" and r["next_eligible_at"] <= NOW)]
            open_calls = [c for c in calls if c["state"] != "ended" or not c["outcome_reported"]]
            if not busy and not open_calls and calls:
                return leads
            if time.monotonic() > deadline:
                pytest.fail(f"campaign {campaign} did not settle: leads {leads}, calls {calls}")
            await asyncio.sleep(0.2)


@asynccontextmanager
async def open_rig(stack, pg_dsn, tmp_path: Path, *, live: bool = False):
    """SIPp carrier and agent phones, the store and an engine: in a namespace of its
    own with its clock at NOW, or (live=True) the stack's live guard, the one the
    FastAGI server uses (the caller sets its clock)."""
    ensure_schema(pg_dsn)
    agent_port = stack.carrier_port + 30
    carrier = Sipp("dialer-carrier", SCENARIOS / "dialer_carrier" / "carrier.xml", tmp_path, stack.carrier_port,
                   timeout_s=600, keys={"rtpsink": str(rtp_sink_port(stack))})
    agents = Sipp("dialer-agents", SCENARIOS / "dialer_agents" / "agent.xml", tmp_path, agent_port, timeout_s=600)
    carrier.start().wait_ready()
    agents.start().wait_ready()
    prefix = None if live else f"dge2e:{uuid.uuid4().hex[:8]}"
    engine = await Engine.create(Settings(test_clock=True) if live else Settings(key_prefix=prefix, test_clock=True))
    if not live:
        await engine.set_test_clock(NOW)
    store = await Store.open(pg_dsn)
    r = Rig(stack, engine, store, tmp_path, agent_port)
    r.carrier, r.agents, r.prefix = carrier, agents, prefix
    try:
        yield r
    finally:
        await r.stop_all()
        for name in r.campaign_names:  # no dialer (the stack's either) picks them up later
            await store.set_state(name, "stopped")
        await hang_up_left(r)
        carrier.stop(grace=3)
        agents.stop(grace=3)
        if prefix:
            await _drop_namespace(engine.redis, prefix)
        else:
            for name in r.campaign_names:
                await engine.redis.delete(engine.keys.campaign(name), engine.keys.pool(name))
        await engine.close()
        await store.close()


async def ended_in_asterisk(rig: Rig, channel_ids: list[str], timeout: float = 30.0) -> None:
    """Until none of these channels is left in Asterisk (ARI): the calls ended there,
    whoever ended them (e.g. the dialplan's fallback while no dialer runs)."""
    from ari_app.client import AriClient

    assert channel_ids
    ari = AriClient(rig.stack.ari_url, rig.stack.ari_user, rig.stack.ari_password, rig.app)
    try:
        deadline = time.monotonic() + timeout
        while live := {c["id"] for c in await ari.get("channels")} & set(channel_ids):
            assert time.monotonic() < deadline, f"still up in Asterisk after {timeout:.0f} s: {sorted(live)}"
            await asyncio.sleep(0.1)
    finally:
        await ari.close()


async def hang_up_left(rig: Rig, timeout: float = 10.0) -> list[str]:
    """The rig's calls still up in Asterisk once its dialers stopped (a stopping dialer
    hands bridged calls over to the next one), hung up with their agent legs and bridges
    while the SIPp phones still answer the BYEs: killed SIPp never hang up, the channels
    then stayed up for the rest of the session (each wave of test_zy_demo waited its 10 s
    for an Asterisk without channels). Returns the channels hung up."""
    from ari_app.client import AriClient, AriError

    ours = {c["channel_id"][4:] for name in rig.campaign_names for c in await rig.calls(name)
            if c["channel_id"].startswith("dgc-")}
    if not ours:
        return []
    ari = AriClient(rig.stack.ari_url, rig.stack.ari_user, rig.stack.ari_password, rig.app)
    try:
        left = [c["id"] for c in await ari.get("channels") if c["id"][:4] in ("dgc-", "dga-") and c["id"][4:] in ours]
        for cid in left:
            try:
                await ari.delete(f"channels/{cid}")
            except AriError as exc:
                if exc.status != 404:  # 404: ended meanwhile
                    raise
        deadline = time.monotonic() + timeout
        while left and {c["id"] for c in await ari.get("channels")} & set(left):
            assert time.monotonic() < deadline, f"channels {left} still up {timeout:.0f} s after their hangup"
            await asyncio.sleep(0.05)
        for b in await ari.get("bridges"):
            if b["id"].startswith("dgb-") and b["id"][4:] in ours:
                try:
                    await ari.delete(f"bridges/{b['id']}")
                except AriError as exc:
                    if exc.status != 404:
                        raise
        return left
    finally:
        await ari.close()


@pytest.fixture
async def rig(stack, pg_dsn, redis_url, tmp_path):
    async with open_rig(stack, pg_dsn, tmp_path) as r:
        yield r


async def ticks(d: Dialer, n: int = 20, timeout: float = 60.0) -> None:
    """Until the dialer's pacing loop has looked at its leads `n` more times (20: about
    1 s idle): "nothing was dialed meanwhile" then holds for n chances to dial, however
    slow a loaded machine makes them, where a fixed sleep could hold for few or none."""
    start, deadline = d.stats["ticks"], time.monotonic() + timeout
    while d.stats["ticks"] < start + n:
        assert time.monotonic() < deadline, f"{d.stats['ticks'] - start} of {n} ticks in {timeout:.0f}s"
        await asyncio.sleep(0.02)


def observe(obj, name: str, stamp=lambda: None) -> list[tuple]:
    """Wrap the async method `name` of this object (the instance only, the real method
    still called): each call appends (stamp() at its end, its result) to the list returned."""
    fn, seen = getattr(obj, name), []

    async def observed(*a, **kw):
        out = await fn(*a, **kw)
        seen.append((stamp(), out))
        return out

    setattr(obj, name, observed)
    return seen


def invites(sipp: Sipp) -> list:
    return parse_uas_log(sipp._path("log"))


async def test_answer_bridged_busy_and_no_answer_rescheduled(rig, asterisk):
    answer, busy, silent = number("00"), number("86"), number("99")
    camp = await rig.campaign([answer, busy, silent])
    d = rig.start(camp, ["agent1"])
    leads = await rig.settle(camp)
    calls = {c["number"]: c for c in await rig.calls(camp)}

    c = calls[answer]
    assert c["result"] == "conversation" and c["agent"] == "agent1", c
    assert c["caller_id"] == CALLER_ID and c["decision_id"]
    assert timedelta(0) <= c["bridged_at"] - c["answered_at"] < timedelta(seconds=2)
    assert c["talk_s"] >= 2  # the callee hangs up 4 s after answering
    assert leads[answer]["state"] == "done" and leads[answer]["attempts"] == 1

    assert (calls[busy]["result"], calls[busy]["hangup_cause"]) == ("busy", 17)
    assert calls[silent]["result"] == "no_answer"
    for n in (busy, silent):
        assert leads[n]["state"] == "pending" and leads[n]["attempts"] == 1
        assert leads[n]["next_eligible_at"] == NOW + timedelta(seconds=3600)  # rescheduled, not dialed again
    assert all(c["outcome_reported"] for c in calls.values())
    # the dialplan's trace of the answered call (extensions_dialguard.conf [dialguard-dialer] h)
    # is deleted once read, not left behind as an empty global: one a call, for good, in a
    # list that every global look-up of every call walks
    trace = fallback_var(c["channel_id"])
    assert trace not in asterisk.rx("dialplan show globals")

    # what the wires saw: one INVITE per lead with the decision's caller ID, one agent leg
    seen = invites(rig.carrier)
    assert sorted(i.number for i in seen if i.number in (answer, busy, silent)) == sorted([answer, busy, silent])
    assert {i.from_user for i in seen if i.number in (answer, busy, silent)} == {CALLER_ID}
    assert [i.number for i in invites(rig.agents)] == ["agent1"]
    assert d.stats["bridged"] == 1 and d.stats["abandoned"] == 0

    # the attempts are in the engine's counters (cn-default: 2 per number per 24 h)
    req = DecisionRequest(number=busy, campaign=camp, agent="x")
    assert (await rig.engine.decide(req)).allowed  # second attempt
    assert "attempt_cap" in (await rig.engine.decide(req)).reasons


async def test_a_reject_in_milliseconds_keeps_its_cause(rig, asterisk, monkeypatch):
    # The carrier's 486 without ringing (...84), twice: once seen by the dialer's
    # subscription, once ended before it (the subscription delayed 0.5 s, as on a loaded
    # dialer host): the dialplan's hangup handler [dialguard-dialer-end] left the cause,
    # which the dialer reads instead of recording a vanished call as no_answer.
    seen, unseen = number("84"), number("84")
    camp = await rig.campaign([seen])
    rig.start(camp, ["agent1"])
    leads = await rig.settle(camp)
    calls = {c["number"]: c for c in await rig.calls(camp)}
    await rig.stop_all()

    watch = Lifecycle.watch_call

    async def late_watch(self, call):
        await asyncio.sleep(0.5)
        return await watch(self, call)

    monkeypatch.setattr(Lifecycle, "watch_call", late_watch)
    camp2 = await rig.campaign([unseen])
    d = rig.start(camp2, ["agent1"])
    leads.update(await rig.settle(camp2))
    calls.update({c["number"]: c for c in await rig.calls(camp2)})

    assert d.stats["reconciled_ended"] == 1  # it did end before the subscription
    globals_ = asterisk.rx("dialplan show globals")
    for n in (seen, unseen):
        assert (calls[n]["result"], calls[n]["hangup_cause"]) == ("busy", 17), calls[n]
        assert leads[n]["state"] == "pending" and leads[n]["attempts"] == 1
        # read or not, the handler's global is deleted, not left for good
        assert end_var(calls[n]["channel_id"]) not in globals_


async def test_dialer_watches_its_own_channels_not_the_trunk(rig):
    """The dialer subscribes to each channel it originates, never to the trunk endpoint:
    the PBX's other calls bring it no events (31 a call when it watched the trunk), and
    its own ringing call's end still reaches it (no answer, counted, rescheduled)."""
    silent = number("99")  # rings until the ring timeout (3 s)
    camp = await rig.campaign([silent])
    d = rig.start(camp, ["agent1"])
    deadline = time.monotonic() + 10
    while not [c for c in await rig.calls(camp) if c["state"] == "originated"]:
        assert time.monotonic() < deadline, await rig.calls(camp)
        await asyncio.sleep(0.05)
    [c] = await rig.calls(camp)
    app = await d.ari.get(f"applications/{rig.app}")
    assert c["channel_id"] in app["channel_ids"]
    assert app["endpoint_ids"] == []  # not PJSIP/carrier: no other call's events
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "no_answer" and c["outcome_reported"]
    assert (await rig.leads(camp))[silent]["state"] == "pending"


async def test_no_agent_in_time_is_abandoned_and_slows_pacing(rig):
    n = number("00")
    camp = await rig.campaign([n], abandon_limit_pct=3.0, dial_ratio=2.0)
    d = rig.start(camp, ["slow1"])  # rings, never answers
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "abandoned" and c["bridged_at"] is None and c["answered_at"] is not None
    assert c["ended_at"] - c["answered_at"] < timedelta(seconds=2 + 1.0 + 1.5)  # 2 s, message, hangup
    # the message was played until the callee hung up (Asterisk says "failed" then too)
    assert d.stats["abandoned"] == 1 and d.stats["message_failed"] == 0, d.stats
    # ... and the row says so: begun (after the 1.7 s bridge timeout, on Asterisk's clock), cut
    assert c["message_state"] == "cut" and c["message_started_at"] is not None, c
    assert 1500 <= c["message_delay_ms"] < 1700 + 1500, c
    # today's abandon rate for the campaign is 100 %, over its 3 % limit: nothing more is dialed
    answered, abandoned = await rig.store.abandon_stats(camp, c["answered_at"] - timedelta(hours=1),
                                                        c["answered_at"] + timedelta(hours=1))
    assert (answered, abandoned) == (1, 1)
    deadline = time.monotonic() + 5
    while d.pacer.ratios.get(camp) != 0:  # the limits are measured every 2 s
        assert time.monotonic() < deadline, (d.pacer.ratios, d.verdicts)
        await asyncio.sleep(0.1)
    assert d.verdicts[camp].state == "stopped" and d.verdicts[camp].tightest.source == "campaign"
    # the agent was called and cancelled; the engine got "abandoned"
    assert [i.number for i in invites(rig.agents)] == ["slow1"]


async def test_abandon_message_that_cannot_play_is_counted_and_logged(rig, caplog):
    """The campaign's abandon message is missing in Asterisk: the callee is still hung up
    (by the playback's end), and the dialer says so: an error naming the call and the
    media, and dialguard_dialer_message_failed_total{kind="abandon"}."""
    camp = await rig.campaign([number("00")], abandon_media="sound:/nonexistent/dialguard-e2e-missing")
    metric = m.MESSAGE_FAILED.labels(camp, "abandon")
    before = metric._value.get()
    caplog.set_level("ERROR", logger="ari_app")
    d = rig.start(camp, ["slow1"])  # rings, never answers: no agent in time
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "abandoned" and c["answered_at"] is not None
    assert c["ended_at"] - c["answered_at"] < timedelta(seconds=2 + 1.5)  # 2 s, no message, hangup
    assert d.stats["message_failed"] == 1 and metric._value.get() == before + 1, d.stats
    assert c["message_state"] == "failed", c  # on the row, for the campaign's report
    # the day's report counts it among the abandoned calls whose message failed
    day = (c["answered_at"] - timedelta(hours=1), c["answered_at"] + timedelta(hours=1))
    msgs = await rig.store.abandon_messages(camp, *day)
    assert msgs["abandoned"] == 1 and msgs["failed"] == 1 and msgs["begun"] == 0, msgs
    assert any("abandon message could not be played" in r.getMessage() and "dialguard-e2e-missing" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_dtmf_opt_out(rig):
    n = number("77")
    camp = await rig.campaign([n])
    rig.start(camp, ["agent1"])
    leads = await rig.settle(camp)
    assert leads[n]["state"] == "blocked" and leads[n]["last_result"] == "opted_out"
    dec = await rig.engine.decide(DecisionRequest(number=n, campaign=camp, agent="x"))
    assert "opted_out" in dec.reasons


async def test_retries_stop_at_the_cap(rig):
    n = number("86")  # always busy
    camp = await rig.campaign([n], retry_after_s=0, max_attempts=5)
    rig.start(camp, ["agent1"])
    leads = await rig.settle(camp)
    calls = await rig.calls(camp)
    # cn-default: 2 attempts per number per campaign; the third is denied, the lead is done
    assert [c["result"] for c in calls] == ["busy", "busy", "denied"]
    assert leads[n]["state"] == "done" and leads[n]["attempts"] == 2
    assert "attempt_cap" in leads[n]["last_reasons"]
    assert sum(1 for i in invites(rig.carrier) if i.number == n) == 2


async def test_max_duration_cut(rig, tmp_path):
    short = tmp_path / "short.yaml"
    short.write_text("pack: short-calls\nmax_duration_s: 2\n")
    n = number("00")  # the callee would stay 4 s
    camp = await rig.campaign([n])
    await rig.engine.set_campaign(camp, True, rules=f"cn-default,{short}")
    rig.start(camp, ["agent1"])
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "conversation"
    assert timedelta(seconds=1.8) < c["ended_at"] - c["answered_at"] < timedelta(seconds=3.2), c


async def test_disposition_from_channel_variable(rig):
    n = number("00")
    camp = await rig.campaign([n])
    d = rig.start(camp, ["agent1"])

    async def bridged():
        return [c for c in await rig.calls(camp) if c["state"] == "bridged"]

    deadline = time.monotonic() + 15
    while not (rows := await bridged()):
        assert time.monotonic() < deadline, "no bridged call"
        await asyncio.sleep(0.1)
    agent_leg = "dga-" + rows[0]["channel_id"][4:]
    # what an agent desktop (or the agent's dialplan) does: set the variable on its channel
    await d.ari.post(f"channels/{agent_leg}/variable", variable="DIALGUARD_DISPOSITION",
                     value="follow-up@2026-11-24T15:00:00+08:00")
    leads = await rig.settle(camp)
    assert leads[n]["disposition"] == "follow-up" and leads[n]["state"] == "pending"
    assert leads[n]["next_eligible_at"] == datetime(2026, 11, 24, 7, tzinfo=UTC)


async def test_disposition_from_cli_during_the_call(rig, stack):
    """`dialguard campaign disposition` while the call is up: the lead is not released
    for another call meanwhile, and the follow-up time holds after the call ends."""
    import os
    import subprocess
    import sys

    # a callee that stays 30 s (its 9 is no opt-out here): the CLI's start alone took
    # longer than a 4 s call on a loaded CI machine; the test hangs the call up itself
    n = number("77")
    camp = await rig.campaign([n], optout_key="#")
    rig.start(camp, ["agent1"])
    deadline = time.monotonic() + 15
    while not [c for c in await rig.calls(camp) if c["state"] == "bridged"]:
        assert time.monotonic() < deadline, "no bridged call"
        await asyncio.sleep(0.1)
    lead = (await rig.leads(camp))[n]
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "dialguard.cli", "campaign", "disposition", str(lead["id"]),
                         "follow-up", "--at", "2026-11-25T09:30:00+08:00"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "DIALGUARD_KEY_PREFIX": rig.prefix})
    assert out.returncode == 0, out.stderr
    now = (await rig.leads(camp))[n]
    assert now["state"] == "dialing" and now["disposition"] == "follow-up"  # still on the call
    assert len(await hang_up_left(rig)) == 2  # the customer and the agent, still talking
    leads = await rig.settle(camp)
    assert leads[n]["state"] == "pending" and leads[n]["last_result"] == "conversation"
    assert leads[n]["next_eligible_at"] == datetime(2026, 11, 25, 1, 30, tzinfo=UTC)


async def test_other_subjects_from_channel_variable(rig, tmp_path):
    """An agent names the other debts discussed (DIALGUARD_SUBJECTS on its leg):
    the conversation starts each one's quiet period, as `simulate` would."""
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("pack: quiet-per-debt\n"
                     "quiet_after_conversation: {scope: number_subject, window: {rolling: 24h}}\n")
    n = number("00")
    camp = await rig.campaign([])
    await rig.store.add_leads(camp, [Lead(2, n, "debt-1", None, "CN-GD", None, "acct-9")], now=NOW)
    await rig.engine.set_campaign(camp, True, rules=f"cn-default,{quiet}")
    d = rig.start(camp, ["agent1"])
    deadline = time.monotonic() + 15
    while not (rows := [c for c in await rig.calls(camp) if c["state"] == "bridged"]):
        assert time.monotonic() < deadline, "no bridged call"
        await asyncio.sleep(0.1)
    await d.ari.post(f"channels/dga-{rows[0]['channel_id'][4:]}/variable", variable="DIALGUARD_SUBJECTS",
                     value="debt-2|debt-3")
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "conversation"
    got = {}
    for sub in ("debt-1", "debt-2", "debt-3", "debt-4"):
        dec = await rig.engine.decide(DecisionRequest(number=n, campaign=camp, agent="x", subject=sub))
        got[sub] = "post_conversation_quiet" in dec.reasons
    assert got == {"debt-1": True, "debt-2": True, "debt-3": True, "debt-4": False}


async def test_lead_region_reaches_the_decision(rig):
    """A lead stated to live in Florida is held to the callee's local hours
    there too: at Monday 10:00 Shanghai it is Sunday 21:00 in Miami, the end of
    the TCPA's 08:00-21:00, so it is not dialed; the same kind of number
    without a region is."""
    here, there = number("00"), number("00")
    camp = await rig.campaign([], abandon_media="sound:all-circuits-busy-now")  # us-tcpa requires its own
    await rig.engine.set_campaign(camp, True, rules="cn-default,us-tcpa")
    await rig.store.add_leads(camp, [Lead(2, here), Lead(3, there, "", None, "US-FL", "33101")], now=NOW)
    rig.start(camp, ["agent1"])
    leads = await rig.settle(camp)
    assert leads[here]["last_result"] == "conversation"
    # its zone closed: skipped without a decision (the eligibility check is told the lead's
    # location too) until both windows are open: Tuesday 09:00 Shanghai = Monday 20:00 Miami
    assert (leads[there]["state"], leads[there]["last_result"], leads[there]["last_reasons"]) == (
        "pending", None, "outside_hours"), leads[there]
    assert leads[there]["next_eligible_at"] == datetime(2026, 11, 24, 1, tzinfo=UTC)
    assert [c["number"] for c in await rig.calls(camp)] == [here]  # no call row: no decision
    assert [i.number for i in invites(rig.carrier) if i.number in (here, there)] == [here]


async def test_the_rig_leaves_no_call_up_in_asterisk(stack, pg_dsn, redis_url, tmp_path, asterisk):
    """A stopping dialer hands its bridged calls over (they stay up in Asterisk); the rig's
    teardown hangs them up while its SIPp phones still answer, instead of killing the
    phones with the call up (the channels then stayed up for the rest of the session)."""
    import json

    async with open_rig(stack, pg_dsn, tmp_path) as r:
        n = number("55")  # answers ~3 s in, hangs up 8 s after its answer: still up at the teardown
        camp = await r.campaign([n], ring_timeout_s=15)
        d = r.start(camp, ["agent1"])
        deadline = time.monotonic() + 20
        while not d.stats["bridged"]:
            assert time.monotonic() < deadline, d.stats
            await asyncio.sleep(0.05)
        [c] = await r.calls(camp)
        ours = {c["channel_id"], "dga-" + c["channel_id"][4:]}
        live = {ch["id"] for ch in json.loads(asterisk.ari_get("/ari/channels"))}
        assert ours <= live  # customer and agent leg bridged
    live = {ch["id"] for ch in json.loads(asterisk.ari_get("/ari/channels"))}
    assert not ours & live, live
