"""The campaign dialer: an ARI Stasis application guarded by the same engine as the dialplan.

Per lead: claim it in PostgreSQL -> write the call row with our own channel id ->
`Engine.decide` (same Redis counters as the FastAGI check) -> originate with that
channel id and the decision's caller ID -> on answer, a mixing bridge and an agent
leg; the agent must be in the bridge within `bridge_timeout_s` of the answer,
otherwise a short message and hangup, counted as abandoned -> on hangup the
outcome is written to PostgreSQL, reported to the engine, and the lead rescheduled.

Restart safety: every step is recorded before the next; after each (re)connect of
the events socket the dialer reconciles its calls with Asterisk's channels, ends
those that vanished (outcome recorded, never lost), re-arms the maximum-duration
cut of calls still up (from the deadline stored at answer), and reports outcomes
that were recorded but not yet reported.

One dialer per campaign: a dialer dials, adopts and recovers only the campaigns
whose PostgreSQL advisory lock it holds (store.CampaignLocks); a second dialer
on the same campaign waits and takes over when the first one dies.

One call per agent across campaigns and dialers: an agent is offered a call only
under its lease in Redis (ari_app/agents.py), and not while Asterisk reports its
device in use (a call outside the dialer); pacing counts only such free agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from ari_app import metrics as m
from ari_app.agents import BUSY_DEVICE_STATES, AgentLeases, Lease
from ari_app.client import AriClient, AriError, AriUnavailable
from ari_app.pacing import TokenBucket, abandon_rate, calls_to_start, effective_ratio
from dialguard.campaigns.store import Campaign, CampaignLocks, Store, local_day
from dialguard.models import DecisionRequest, Outcome
from dialguard.outage import OutageLog

log = logging.getLogger("ari_app.dialer")
UTC = timezone.utc

BLOCKING = {"dnc", "opted_out", "complained", "invalid_number", "unknown_timezone"}
# Denials an admin (or the guard coming back) can lift: look at the lead again later.
TRANSIENT = {"paused", "campaign_not_approved", "caller_id_not_approved", "no_consent", "guard_unavailable",
             "caller_id_rate", "caller_id_concurrency", "agent_cap"}
# Hangup causes (Q.850) of calls never answered.
BUSY_CAUSES = {17}
NO_ANSWER_CAUSES = {18, 19, 0, 16}
# An agent leg started with less time than this before the bridge deadline cannot
# be answered in time: the call is abandoned instead of ringing the agent for nothing.
MIN_AGENT_LEG_S = 0.5


ANSWERED = frozenset({"conversation", "answered", "abandoned", "amd", "voicemail"})


def sip_of(tech_cause) -> int | None:
    """ChannelDestroyed's tech_cause (Asterisk 22: for PJSIP the SIP response
    code): kept when it is a SIP failure (400-699) so that caller-ID health
    tells a carrier's 403 from a busy callee's 486."""
    try:
        code = int(tech_cause)
    except (TypeError, ValueError):
        return None
    return code if 400 <= code <= 699 else None


def cause_of(cause) -> int | None:
    """A Q.850 cause as the outcome takes it (0-127), else unknown."""
    try:
        c = int(cause)
    except (TypeError, ValueError):
        return None
    return c if 0 <= c <= 127 else None


def not_answered_result(cause: int | None) -> str:
    if cause in BUSY_CAUSES:
        return "busy"
    if cause in NO_ANSWER_CAUSES or cause is None:
        return "no_answer"
    return "failed"


def default_device(dial: str) -> str | None:
    """The device whose state tells whether the agent is on a call: the endpoint itself
    when dialed as TECH/RESOURCE (one endpoint per agent). A dial string with a URI
    (PJSIP/agent-phones/sip:a1@host) names an endpoint shared by several agents, whose
    state says nothing about one of them: none unless configured."""
    parts = dial.split("/")
    return dial if len(parts) == 2 and all(parts) else None


@dataclass
class Agent:
    name: str
    dial: str  # ARI endpoint, e.g. PJSIP/agent-phones/sip:agent1@127.0.0.1:15090
    call: str | None = None  # customer channel id while its lease is ours (claimed, ringing, talking)
    channel: str | None = None
    device: str | None = None  # Asterisk device (e.g. PJSIP/agent1) watched for calls outside the dialer
    idle_since: float = 0.0  # monotonic: the agent idle longest is offered the next call
    leased: bool = False  # its Redis lease is ours (for `call`): kept alive by our heartbeat

    @property
    def free(self) -> bool:
        return self.call is None


@dataclass
class Call:
    channel_id: str
    lead: dict
    campaign: str
    agent: str | None = None  # the agent named in the decision
    state: str = "reserved"  # reserved, originated, answered, bridged, ended
    caller_id: str | None = None
    max_duration_s: int = 0
    answered_at: float | None = None  # monotonic
    bridged_at: float | None = None
    deadline: datetime | None = None  # wall clock: answered + max_duration_s (stored, survives a restart)
    deadline_task: asyncio.Task | None = None
    allowed: bool = False  # the engine allowed it: an attempt is counted, an outcome is owed
    bridge_id: str | None = None
    agent_channel: str | None = None
    bridged_agent: str | None = None
    abandoned: bool = False
    opted_out: bool = False
    finalizing: bool = False
    resumed: bool = False  # loaded from PostgreSQL at start (the app was restarted)
    lease_checked: bool = False  # adopted: its agent's lease taken over (or found taken)
    tasks: list = field(default_factory=list)

    @property
    def unbridged(self) -> bool:
        return self.state in ("reserved", "originated", "answered")


@dataclass
class DialerConfig:
    ari_url: str
    ari_user: str
    ari_password: str
    agents: dict[str, str]
    app: str = "dialguard-dialer"
    name: str | None = None  # the name campaigns are assigned by (their `dialer`); default: app
    trunk: str = "carrier"
    campaigns: list[str] | None = None  # None: every running campaign
    bridge_timeout_s: float = 2.0
    abandon_media: str = "sound:all-circuits-busy-now"
    abandon_media_max_s: float = 4.0
    tick_s: float = 0.05
    site_timezone: str = "Asia/Shanghai"
    guard_retry_s: int = 30  # guard_unavailable: try the lead again after this
    admin_retry_s: int = 60  # paused / not approved / no caller ID: look again after this
    dial_plus: bool = True  # dial the E.164 with its "+"
    agent_devices: dict[str, str] | None = None  # agent -> device to watch (default: default_device)
    agent_lease_s: float = 15.0  # an agent lease without heartbeat for this long has no live holder
    agent_view_s: float = 0.2  # how often pacing re-reads every agent's lease
    outage_log_s: float = 60.0  # while Redis or PostgreSQL is down: one log line per this many seconds


def store_kind(exc: BaseException) -> str:
    """Which store an error of the pacing loop came from: "Redis", "PostgreSQL",
    else "dialer" (not a store: a bug or something unexpected)."""
    import psycopg
    import psycopg_pool
    from redis.exceptions import RedisError

    from dialguard.redisclient import RedisReplyError

    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, (psycopg.Error, psycopg_pool.PoolTimeout)):
            return "PostgreSQL"
        if isinstance(e, (RedisError, RedisReplyError)):
            return "Redis"
    return "dialer"


class Dialer:
    def __init__(self, config: DialerConfig, engine, store: Store):
        self.cfg = config
        self.engine = engine
        self.store = store
        devices = config.agent_devices or {}
        unknown = sorted(set(devices) - set(config.agents))
        if unknown:
            raise ValueError(f"agent devices for unknown agents: {', '.join(unknown)}")
        self.agents = {n: Agent(n, d, device=devices.get(n) or default_device(d)) for n, d in config.agents.items()}
        if config.agent_lease_s < 1:
            raise ValueError(f"agent lease {config.agent_lease_s}s: at least 1 s (heartbeat every third)")
        # this process's lease owner id: a restarted dialer is a new owner
        self.owner = f"{config.name or config.app}/{uuid.uuid4().hex[:12]}"
        self.leases = AgentLeases(engine.redis, engine.keys, self.owner, config.agent_lease_s)
        self.lease_view: dict[str, Lease | None] | None = None  # None: unknown (Redis down): no agent free
        self.device_states: dict[str, str] = {}
        self._last_view = self._last_beat = 0.0
        self._reaping: set[str] = set()
        self.calls: dict[str, Call] = {}  # customer channel id -> call
        self.agent_legs: dict[str, str] = {}  # agent channel id -> customer channel id
        self.buckets: dict[str, TokenBucket] = {}
        self.campaigns: dict[str, Campaign] = {}
        self.ratios: dict[str, float] = {}
        pool = max(8, min(64, 4 + 2 * len(self.agents)))
        self.ari = AriClient(config.ari_url, config.ari_user, config.ari_password, config.app, pool_size=pool,
                             on_event=self.on_event, on_connect=self.reconcile, on_disconnect=self._socket_down)
        self.locks = CampaignLocks(store.pool.conninfo)
        self._rr = 0
        self._stop = asyncio.Event()
        self._placing: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()  # retries that must not hold up a channel
        # Redis or PostgreSQL down: a line when it starts, one a minute, one when it ends
        self.outages = {k: OutageLog(log, k, config.outage_log_s) for k in ("Redis", "PostgreSQL", "dialer")}
        self.stats = {"originated": 0, "denied": 0, "answered": 0, "bridged": 0, "abandoned": 0,
                      "reported": 0, "reconciled_ended": 0, "originate_errors": 0, "agent_waits": 0,
                      "leases_recovered": 0, "leases_lost": 0}

    # -- lifecycle -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.cfg.name or self.cfg.app

    async def run(self) -> None:
        # standby while another process runs this Stasis app (it would steal our events)
        waited = False
        while not await self.locks.acquire_app(self.cfg.app):
            if not waited:
                log.warning("another dialer runs Stasis app %s: standing by until it stops", self.cfg.app)
                waited = True
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
                await self.shutdown()
                return
            except asyncio.TimeoutError:
                pass
        await self._refresh_campaigns()  # takes its campaigns' locks and adopts their calls
        self.ari.start()
        try:
            await self._pace_loop()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self._stop.set()
        if self._placing:
            await asyncio.gather(*self._placing, return_exceptions=True)
        if self._background:  # an opt-out still retrying: give it a moment, then say so
            _, pending = await asyncio.wait(self._background, timeout=5)
            for t in pending:
                log.error("stopping with an engine write still failing (opt-out): %s", t)
                t.cancel()
        await self.ari.close()
        for c in self.calls.values():
            for t in c.tasks:
                t.cancel()
        await self.locks.close()
        m.EVENTS_SOCKET_UP.set(0)

    def _socket_down(self) -> None:
        m.EVENTS_SOCKET_UP.set(0)

    async def adopt(self, names: list[str]) -> None:
        """Campaigns just taken (start, restart, or another dialer died): their calls in
        flight come back from PostgreSQL (reconcile decides which still exist and re-arms
        their maximum duration), recorded outcomes get reported, orphan leads return."""
        now_wall, now_mono = datetime.now(UTC), time.monotonic()

        def mono(at: datetime | None) -> float | None:
            return None if at is None else now_mono - max(0.0, (now_wall - at).total_seconds())

        for row in await self.store.live_calls(names):
            if row["channel_id"] in self.calls:
                continue
            lead = await self.store.lead(row["lead_id"])
            cid = row["channel_id"]
            call = Call(cid, lead, row["campaign"], agent=row["agent"], state=row["state"],
                        caller_id=row["caller_id"], max_duration_s=row["max_duration_s"], resumed=True,
                        deadline=row["hangup_deadline"], allowed=row["decision_id"] is not None)
            if row["state"] in ("answered", "bridged"):
                call.answered_at = mono(row["answered_at"]) or now_mono
                call.bridge_id = f"dgb-{cid[4:]}"
            if row["state"] == "bridged":
                # the agent leg and its agent stay taken until the call ends
                call.bridged_at = mono(row["bridged_at"]) or now_mono
                call.agent_channel = f"dga-{cid[4:]}"
                call.bridged_agent = row["agent"]
                self.agent_legs[call.agent_channel] = cid
                if row["agent"] in self.agents:
                    self.agents[row["agent"]].call = cid
                    self.agents[row["agent"]].channel = call.agent_channel
            self.calls[cid] = call
            log.info("adopted call %s (%s) of campaign %s", cid, row["state"], row["campaign"])
        await self._report_pending(names)
        if self.ari.healthy:
            await self.reconcile()

    async def _lease_adopted(self, call: Call) -> None:
        """An adopted bridged call, still up with its agent leg, keeps its agent: the lease
        is this call's, taken over from the dead holder (or taken again if recovered
        meanwhile: nobody can have been offered the agent while both legs were up)."""
        a = self.agents.get(call.bridged_agent or "")
        if a is None or a.call != call.channel_id or a.leased:
            call.lease_checked = True
            return
        try:
            held = await self.leases.claim(a.name, call.channel_id, call.agent_channel or "")
        except Exception as exc:  # noqa: BLE001 - Redis down: tried again at the next reconcile
            log.warning("adopted call %s: lease of agent %s not taken yet: %s", call.channel_id, a.name, exc)
            return
        call.lease_checked = True
        if held is None:
            a.leased = True
        else:
            self.stats["leases_lost"] += 1
            log.error("adopted call %s: agent %s is leased to call %s (double booked)",
                      call.channel_id, a.name, held.call)

    async def _report_pending(self, names: list[str] | None = None) -> None:
        names = sorted(self.locks.campaigns) if names is None else names
        if not names:
            return
        for row in await self.store.unreported(names):
            await self._report(row["channel_id"], row["result"], row["talk_s"], row["hangup_cause"])
        for lead in await self.store.orphan_dialing_leads(names):
            if not any(c.lead["id"] == lead["id"] for c in self.calls.values()):
                await self.store.release_lead(lead["id"], state="pending")

    # -- reconcile after every (re)connect -----------------------------------------
    async def reconcile(self) -> None:
        await self._watch_devices()
        channels = await self.ari.get("channels")
        live = {c["id"]: c for c in channels}
        for cid, call in list(self.calls.items()):
            if (call.state == "reserved" and not call.resumed) or call.finalizing:
                continue  # being placed right now: _place handles it
            if cid not in live:
                self.stats["reconciled_ended"] += 1
                log.info("reconcile: call %s vanished while the events socket was down", cid)
                await self.finalize(call, cause=None, vanished=True)
                continue
            if call.deadline is not None:
                self._arm_deadline(call)  # adopted after a restart: cut at its stored deadline
            if (call.resumed and call.state == "bridged" and not call.lease_checked
                    and call.agent_channel in live):
                await self._lease_adopted(call)
            if call.state == "answered" and call.agent_channel is None and not call.abandoned:
                # answered while we were away and no agent leg: too late to bridge in 2 s
                await self._abandon(call)
        for ach in list(self.agent_legs):
            if ach not in live:
                await self._agent_gone(ach)
        # Strays: bridges and agent legs whose customer is gone, or is ours and does not
        # use them. Another dialer's (other campaigns, same Asterisk) are left alone.
        def stray(obj_id: str, in_use: bool) -> bool:
            customer = "dgc-" + obj_id[4:]
            return customer not in live or (customer in self.calls and not in_use)

        ours = {c.bridge_id for c in self.calls.values() if c.bridge_id}
        for b in await self.ari.get("bridges"):
            if b["id"].startswith("dgb-") and stray(b["id"], b["id"] in ours):
                await self._quiet(self.ari.delete(f"bridges/{b['id']}"))
        for cid in live:
            if cid.startswith("dga-") and stray(cid, cid in self.agent_legs):
                await self._quiet(self.ari.delete(f"channels/{cid}"))
        await self._report_pending()
        m.EVENTS_SOCKET_UP.set(1)
        m.EVENTS_CONNECTS.set(self.ari.connects)

    # -- pacing loop ----------------------------------------------------------------------
    async def _refresh_campaigns(self) -> None:
        """Campaigns this dialer serves and holds the lock of; settings, abandon rates."""
        if self.locks.held and not await self.locks.check():
            log.warning("campaign locks lost (PostgreSQL session ended): taking them again")
        if not await self.locks.acquire_app(self.cfg.app):
            log.error("Stasis app %s taken by another process while our PostgreSQL session was down",
                      self.cfg.app)
        camps = {c.name: c for c in await self.store.campaigns()
                 if c.served_by(self.name, self.cfg.campaigns)}
        work = await self.store.campaigns_with_work()
        ours = {c.campaign for c in self.calls.values()}
        wanted = {n for n, c in camps.items() if c.state in ("running", "paused") or n in work or n in ours}
        for n in sorted(self.locks.campaigns - wanted):  # nothing to do there: another dialer may have it
            await self.locks.release(n)
        taken = [n for n in sorted(wanted - self.locks.campaigns) if await self.locks.acquire(n)]
        if taken:
            log.info("campaigns taken: %s", ", ".join(taken))
            await self.adopt(taken)
        self.campaigns = {n: camps[n] for n in sorted(self.locks.campaigns) if n in camps}
        m.CAMPAIGNS_HELD.set(len(self.campaigns))
        day = local_day(datetime.now(UTC), self.cfg.site_timezone)
        for c in self.campaigns.values():
            answered, abandoned = await self.store.abandon_stats(c.name, *day)
            rate = abandon_rate(answered, abandoned)
            self.ratios[c.name] = effective_ratio(c.dial_ratio, rate, c.abandon_limit_pct)
            m.ABANDON_RATE.labels(c.name).set(rate / 100.0)
            m.CALLS_IN_FLIGHT.labels(c.name).set(sum(1 for x in self.calls.values() if x.campaign == c.name))
            b = self.buckets.get(c.name)
            if b is None:
                self.buckets[c.name] = TokenBucket(c.calls_per_second)
            elif b.rate != c.calls_per_second:
                b.set_rate(c.calls_per_second)

    async def _pace_loop(self) -> None:
        last_refresh = last_report = last_poll = 0.0
        while not self._stop.is_set():
            try:
                # first: the leases' heartbeat must not wait on PostgreSQL being back
                await self._refresh_agents()
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    await self._report_pending()
                if (self.ari.healthy and time.monotonic() - last_poll > 2
                        and any(c.resumed for c in self.calls.values())):
                    # adopted from a dialer on another Stasis app: their events go nowhere,
                    # so look at those channels every 2 s
                    last_poll = time.monotonic()
                    await self.reconcile()
                if time.monotonic() - last_refresh > 0.5:
                    await self._refresh_campaigns()
                    last_refresh = time.monotonic()
                if self.ari.healthy:  # dial only while the events socket is healthy
                    await self._tick()
            except Exception as exc:  # noqa: BLE001 - keep dialing after a transient error
                kind = store_kind(exc)
                o = self.outages[kind]
                if kind == "dialer" and not o.down:  # not a store: a bug, its traceback once
                    log.exception("pacing loop")
                o.failed(exc)
                await asyncio.sleep(1)
            else:
                for o in self.outages.values():
                    o.ok()
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.tick_s)
            except asyncio.TimeoutError:
                pass

    async def _tick(self) -> None:
        now = await self.engine.now()
        for c in self.campaigns.values():
            if not c.may_dial(now):
                continue
            free = sum(1 for a in self.agents.values() if self._available(a))
            unbridged = sum(1 for x in self.calls.values() if x.unbridged)
            in_flight = sum(1 for x in self.calls.values() if x.campaign == c.name and x.state != "ended")
            n = calls_to_start(max_concurrent=c.max_concurrent, in_flight=in_flight,
                               tokens=self.buckets[c.name].available(), free_agents=free,
                               unbridged=unbridged, ratio=self.ratios.get(c.name, 1.0))
            if n <= 0:
                continue
            leads = await self.store.claim_due(c.name, n, now)
            for lead in leads:
                self.buckets[c.name].take()
                call = Call(f"dgc-{uuid.uuid4().hex}", lead, c.name, agent=self._intended_agent())
                self.calls[call.channel_id] = call  # counted in flight before the first await
                t = asyncio.create_task(self._place(c, call))
                self._placing.add(t)
                t.add_done_callback(self._placing.discard)

    def _intended_agent(self) -> str:
        names = sorted(self.agents)
        free = [n for n in names if self._available(self.agents[n])] or names
        self._rr += 1
        return free[self._rr % len(free)]

    # -- agents: leases shared by every dialer, device states from Asterisk ----------------------
    def _device_busy(self, a: Agent) -> bool:
        return a.device is not None and self.device_states.get(a.device) in BUSY_DEVICE_STATES

    def _available(self, a: Agent) -> bool:
        """Free to be offered a call: not on one of ours, no lease held by anyone (as last
        read from Redis), and its device not in use (a call outside the dialer)."""
        if a.call is not None or self.lease_view is None or self._device_busy(a):
            return False
        return self.lease_view.get(a.name) is None

    async def _refresh_agents(self) -> None:
        """Heartbeat of our leases (every third of the lease time) and, every
        `agent_view_s`, every agent's lease as Redis has it (pacing counts on it);
        stale leases of a dead holder are checked in Asterisk and recovered."""
        now = time.monotonic()
        if now - self._last_beat >= self.cfg.agent_lease_s / 3:
            held = {a.name: (a.call, a.channel or "") for a in self.agents.values() if a.call and a.leased}
            try:
                for name in await self.leases.refresh(held):
                    self.agents[name].leased = False
                    self.stats["leases_lost"] += 1
                    log.error("agent %s: lease of call %s lost (not refreshed within %.0fs?)", name,
                              held[name][0], self.cfg.agent_lease_s)
                self._last_beat = now
            except Exception as exc:  # noqa: BLE001 - Redis down: retried next tick
                self.outages["Redis"].failed(f"agent lease heartbeat: {exc}")
        if now - self._last_view < self.cfg.agent_view_s:
            return
        self._last_view = now
        try:
            view = await self.leases.view(list(self.agents))
        except Exception as exc:  # noqa: BLE001 - unknown: no agent counts as free
            if self.lease_view is not None:
                log.warning("agent leases unreadable (%s): no agent offered a call meanwhile", exc)
            self.lease_view = None
            return
        ours = {a.call for a in self.agents.values() if a.call}
        for name, lease in list(view.items()):
            if lease is None or lease.call in ours or not lease.stale(self.leases.lease_ms):
                continue
            if name not in self._reaping:
                self._reaping.add(name)
                t = asyncio.create_task(self._reap(name, lease))
                self._background.add(t)
                t.add_done_callback(self._background.discard)
        self.lease_view = view
        m.AGENTS_FREE.set(sum(1 for a in self.agents.values() if self._available(a)))

    async def _channel_up(self, cid: str) -> bool:
        try:
            await self.ari.get(f"channels/{cid}")
            return True
        except AriError as exc:
            if exc.status == 404:
                return False
            raise

    async def _reap(self, name: str, lease: Lease) -> None:
        """A lease whose holder stopped its heartbeat: the agent is still busy if its leg
        and the customer are both up (a dialer died mid-call, Asterisk keeps the call);
        otherwise the leftover leg is hung up and the lease removed."""
        try:
            leg_up = bool(lease.leg) and await self._channel_up(lease.leg)
            if leg_up and await self._channel_up(lease.call):
                log.info("agent %s: holder %s of its lease is gone, but its call %s is still up",
                         name, lease.owner, lease.call)
                return
            if leg_up:
                await self._quiet(self.ari.delete(f"channels/{lease.leg}"))
            if await self.leases.reap(name, lease):
                self.stats["leases_recovered"] += 1
                m.AGENT_LEASES_RECOVERED.inc()
                log.warning("agent %s: stale lease of %s (call %s, %.1fs without heartbeat) recovered",
                            name, lease.owner, lease.call, lease.age_ms / 1000)
                if self.lease_view is not None and self.lease_view.get(name) == lease:
                    self.lease_view[name] = None
        except (AriError, AriUnavailable) as exc:  # cannot tell: the agent stays busy
            log.info("agent %s: stale lease not checked (%s)", name, exc)
        except Exception as exc:  # noqa: BLE001 - Redis: next view
            log.warning("agent %s: stale lease not recovered: %s", name, exc)
        finally:
            self._reaping.discard(name)

    async def _claim_agent(self, call: Call) -> Agent | None:
        """An agent for this answered call, leased in Redis (atomic: whatever dialer or
        campaign asks at the same time, one call gets the agent). The decision's agent
        first, then the agent idle longest. Redis decides, not our view of it (read every
        `agent_view_s`): agents the view shows leased are tried too, a few per round."""
        view = self.lease_view or {}
        local = sorted((a for a in self.agents.values() if a.call is None and not self._device_busy(a)),
                       key=lambda a: (a.name != call.agent, a.idle_since))
        cands = [a for a in local if view.get(a.name) is None] + [a for a in local if view.get(a.name)][:3]
        leg = f"dga-{call.channel_id[4:]}"
        for a in cands:
            if a.call is not None or self._device_busy(a):  # taken while we awaited
                continue
            try:
                held = await self.leases.claim(a.name, call.channel_id, leg)
            except Exception as exc:  # noqa: BLE001 - Redis down: no agent (never two calls)
                log.warning("call %s: agent lease not claimed: %s", call.channel_id, exc)
                return None
            if held is None:
                if a.call is not None:  # cannot happen (Redis arbitrates), but never share one
                    await self._release_lease(a.name, call.channel_id)
                    continue
                a.call = call.channel_id
                a.leased = True
                if self.lease_view is not None:
                    self.lease_view[a.name] = Lease(self.owner, call.channel_id, leg, 0)
                return a
            if self.lease_view is not None:
                self.lease_view[a.name] = held
        return None

    async def _release_lease(self, name: str, cid: str) -> None:
        try:
            await self.leases.release(name, cid)
        except Exception as exc:  # noqa: BLE001 - Redis down: the lease goes stale and is recovered
            log.warning("agent %s: lease of call %s not released (%s): recovered once stale", name, cid, exc)
        if self.lease_view is not None:
            cur = self.lease_view.get(name)
            if cur is not None and cur.call == cid:
                self.lease_view[name] = None

    async def _free_agent_of(self, cid: str) -> None:
        """The call `cid` no longer needs its agent: free it here and in Redis."""
        for a in self.agents.values():
            if a.call == cid:
                leased, a.leased = a.leased, False
                a.call = None
                a.channel = None
                a.idle_since = time.monotonic()
                if leased:
                    await self._release_lease(a.name, cid)

    async def _watch_devices(self) -> None:
        """Subscribe to the agents' device states (again after every reconnect: an
        Asterisk restart forgets subscriptions) and read their current state."""
        for dev in sorted({a.device for a in self.agents.values() if a.device}):
            try:
                await self.ari.post(f"applications/{self.cfg.app}/subscription", eventSource=f"deviceState:{dev}")
                st = await self.ari.get("deviceStates/" + quote(dev, safe=""))
                self.device_states[dev] = st.get("state", "UNKNOWN")
            except AriError as exc:
                log.warning("device %s: state not watched: %s", dev, exc)

    # -- placing one call ---------------------------------------------------------------------
    async def _place(self, camp: Campaign, call: Call) -> None:
        try:
            await self._place_inner(camp, call)
        except Exception:  # noqa: BLE001 - never leave the lead stuck in `dialing`
            log.exception("placing call %s for lead %s failed", call.channel_id, call.lead["id"])
            if call.state != "reserved" or call.finalizing:
                return
            if call.allowed:  # an attempt was counted: end it like a failed call (outcome reported)
                await self.finalize(call, cause=None, failed=True)
                return
            self.calls.pop(call.channel_id, None)
            try:
                try:
                    nxt = await self.engine.now() + timedelta(seconds=self.cfg.admin_retry_s)
                except Exception:  # noqa: BLE001
                    nxt = datetime.now(UTC) + timedelta(seconds=self.cfg.admin_retry_s)
                await self.store.end_call(call.channel_id, result="error", outcome_reported=True,
                                          ended_at=datetime.now(UTC))
                await self.store.release_lead(call.lead["id"], state="pending", next_at=nxt, result="error")
            except Exception:  # noqa: BLE001 - PostgreSQL down: orphan recovery returns the lead later
                log.exception("call %s: cannot release lead %s", call.channel_id, call.lead["id"])

    async def _place_inner(self, camp: Campaign, call: Call) -> None:
        lead = call.lead
        try:
            await self.store.new_call(call.channel_id, lead["id"], camp.name, call.agent)
        except Exception:
            log.exception("cannot record call for lead %s", lead["id"])
            self.calls.pop(call.channel_id, None)
            await self._quiet(self.store.release_lead(lead["id"], state="pending"))
            return
        d = await self.engine.decide(DecisionRequest(
            number=lead["number"], campaign=camp.name, agent=call.agent or "dialer",
            subject=lead["subject"] or None, call_id=call.channel_id))
        if not d.allowed:
            self.stats["denied"] += 1
            self.calls.pop(call.channel_id, None)
            await self.store.update_call(call.channel_id, state="ended", result="denied", decision_id=d.decision_id,
                                         outcome_reported=True, ended_at=datetime.now(UTC))
            await self._release_denied(camp, lead, d)
            return
        call.allowed = True
        call.caller_id = d.caller_id
        call.max_duration_s = d.max_duration_s
        await self.store.update_call(call.channel_id, decision_id=d.decision_id, caller_id=d.caller_id,
                                     max_duration_s=d.max_duration_s or 0)
        await self.store.release_lead(lead["id"], state="dialing", count_attempt=True)
        number = lead["number"] if self.cfg.dial_plus else lead["number"].lstrip("+")
        params = dict(endpoint=f"PJSIP/{number}@{self.cfg.trunk}", app=self.cfg.app, appArgs="customer",
                      timeout=camp.ring_timeout_s)
        if d.caller_id:
            params["callerId"] = d.caller_id
        body = {"variables": {"DIALGUARD_DECISION_ID": d.decision_id, "DIALGUARD_CAMPAIGN": camp.name,
                              "CDR(campaign)": camp.name, "CDR(dialguard_decision_id)": d.decision_id}}
        ok = await self._originate(call.channel_id, params, body)
        if ok:
            self.stats["originated"] += 1
            if call.state == "reserved" and not call.finalizing:
                call.state = "originated"
                await self.store.mark_originated(call.channel_id)
        else:
            self.stats["originate_errors"] += 1
            m.ORIGINATE_FAILURES.labels(camp.name).inc()
            await self.finalize(call, cause=None, failed=True)

    async def _originate(self, channel_id: str, params: dict, body: dict) -> bool:
        """Originate with our channel id; on an unknown result retry with the SAME id
        (Asterisk refuses a duplicate id), never a new one."""
        for attempt in range(3):
            try:
                await self.ari.post(f"channels/{channel_id}", body, **params)
                return True
            except AriError as exc:
                if exc.status == 409:  # our earlier try did create it
                    return True
                log.warning("originate %s refused: %s", channel_id, exc)
                return False
            except AriUnavailable as exc:
                log.warning("originate %s: no answer (%s); checking", channel_id, exc)
                await asyncio.sleep(0.2 * (attempt + 1))
                try:
                    await self.ari.get(f"channels/{channel_id}")
                    return True
                except AriError as e2:
                    if e2.status != 404:
                        return False
                except AriUnavailable:
                    if not await self.ari.wait_healthy(5):
                        # Asterisk is down: a channel created just before died with it
                        return False
        return False

    async def _release_denied(self, camp: Campaign, lead: dict, d) -> None:
        now = await self.engine.now()
        reasons = ",".join(d.reasons)
        if BLOCKING & set(d.reasons):
            await self.store.release_lead(lead["id"], state="blocked", result="denied", reasons=reasons)
        elif d.next_eligible_at:
            await self.store.release_lead(lead["id"], state="pending", next_at=d.next_eligible_at,
                                          result="denied", reasons=reasons)
        elif set(d.reasons) <= TRANSIENT:
            wait = self.cfg.guard_retry_s if "guard_unavailable" in d.reasons else self.cfg.admin_retry_s
            await self.store.release_lead(lead["id"], state="pending", next_at=now + timedelta(seconds=wait),
                                          result="denied", reasons=reasons)
        else:  # a cap that never lifts (e.g. lifetime attempts per campaign): the lead is done
            await self.store.release_lead(lead["id"], state="done", result="denied", reasons=reasons)

    # -- events -----------------------------------------------------------------------------------
    async def on_event(self, e: dict) -> None:
        kind = e.get("type")
        ch = (e.get("channel") or {}).get("id")
        if kind == "StasisStart":
            args = e.get("args") or []
            if args[:1] == ["customer"]:
                await self._answered(ch)
            elif args[:1] == ["agent"]:
                await self._agent_answered(ch, args[1] if len(args) > 1 else "")
        elif kind == "ChannelDestroyed":
            if ch in self.calls:
                await self.finalize(self.calls[ch], cause=e.get("cause"), sip=sip_of(e.get("tech_cause")))
            elif ch in self.agent_legs:
                await self._agent_gone(ch)
        elif kind == "ChannelDtmfReceived" and ch in self.calls:
            await self._dtmf(self.calls[ch], e.get("digit"))
        elif kind == "DeviceStateChanged":
            st = e.get("device_state") or {}
            if st.get("name"):
                self.device_states[st["name"]] = st.get("state", "UNKNOWN")
        elif kind == "ChannelVarset" and e.get("variable") == "DIALGUARD_DISPOSITION":
            cust = ch if ch in self.calls else self.agent_legs.get(ch)
            if cust and cust in self.calls:
                await self._disposition(self.calls[cust], e.get("value") or "")

    async def _answered(self, ch: str) -> None:
        call = self.calls.get(ch)
        if call is None:  # not ours (or already finalized): do not leave it up
            await self._quiet(self.ari.delete(f"channels/{ch}"))
            return
        call.state = "answered"
        call.answered_at = time.monotonic()
        self.stats["answered"] += 1
        answered = datetime.now(UTC)
        if call.max_duration_s:
            call.deadline = answered + timedelta(seconds=call.max_duration_s)
            self._arm_deadline(call)
        # the deadline is stored so that a restarted dialer still cuts the call in time
        await self.store.update_call(ch, state="answered", answered_at=answered, hangup_deadline=call.deadline)
        call.tasks.append(asyncio.create_task(self._bridge_deadline(call)))
        # a task of its own: waiting for an agent must not hold up this channel's events
        call.tasks.append(asyncio.create_task(self._connect_agent(call)))

    async def _connect_agent(self, call: Call) -> None:
        """Lease a free agent, waiting for one until the bridge deadline leaves too
        little time to answer; then bridge the customer and call the agent."""
        ch = call.channel_id
        agent = await self._claim_agent(call)
        if agent is None:
            self.stats["agent_waits"] += 1
        while agent is None:
            left = call.answered_at + self.cfg.bridge_timeout_s - time.monotonic()
            if call.abandoned or call.finalizing:
                return
            if left < MIN_AGENT_LEG_S:
                await self._abandon(call)
                return
            await asyncio.sleep(min(0.1, left - MIN_AGENT_LEG_S + 0.01))
            agent = await self._claim_agent(call)
        if call.abandoned or call.finalizing:  # the deadline or the hangup came meanwhile
            await self._free_agent_of(ch)
            return
        left = call.answered_at + self.cfg.bridge_timeout_s - time.monotonic()
        call.bridge_id = f"dgb-{ch[4:]}"
        call.agent_channel = f"dga-{ch[4:]}"
        call.bridged_agent = agent.name
        agent.channel = call.agent_channel
        self.agent_legs[call.agent_channel] = ch
        try:
            # dtmf_events: no native RTP bridging, so the opt-out key reaches us during the call
            await self.ari.post("bridges", type="mixing,dtmf_events", bridgeId=call.bridge_id, name=call.campaign)
            await self.ari.post(f"bridges/{call.bridge_id}/addChannel", channel=ch)
            await self.ari.post(f"channels/{call.agent_channel}", None, endpoint=agent.dial, app=self.cfg.app,
                                appArgs=f"agent,{ch}", timeout=max(1, int(left + 0.999)),
                                callerId=call.lead["number"])
        except (AriError, AriUnavailable) as exc:
            log.warning("call %s: cannot reach agent %s: %s", ch, agent.name, exc)
            await self._abandon(call)

    async def _agent_answered(self, ach: str, customer: str) -> None:
        call = self.calls.get(customer)
        if call is None or call.abandoned or call.finalizing or call.agent_channel != ach:
            await self._quiet(self.ari.delete(f"channels/{ach}"))
            return
        try:
            await self.ari.post(f"bridges/{call.bridge_id}/addChannel", channel=ach)
        except (AriError, AriUnavailable) as exc:
            log.warning("call %s: agent leg not bridged: %s", customer, exc)
            return
        if call.abandoned or call.finalizing:  # the deadline fired meanwhile
            await self._quiet(self.ari.delete(f"channels/{ach}"))
            return
        call.state = "bridged"
        call.bridged_at = time.monotonic()
        self.stats["bridged"] += 1
        await self.store.update_call(customer, state="bridged", bridged_at=datetime.now(UTC),
                                     agent=call.bridged_agent)

    async def _bridge_deadline(self, call: Call) -> None:
        await asyncio.sleep(self.cfg.bridge_timeout_s)
        if call.state == "answered" and not call.finalizing:
            await self._abandon(call)

    async def _abandon(self, call: Call) -> None:
        if call.abandoned or call.finalizing:
            return
        call.abandoned = True
        self.stats["abandoned"] += 1
        log.info("call %s abandoned: no agent within %.1fs", call.channel_id, self.cfg.bridge_timeout_s)
        if call.agent_channel:
            await self._quiet(self.ari.delete(f"channels/{call.agent_channel}"))
        if call.bridge_id:
            await self._quiet(self.ari.post(f"bridges/{call.bridge_id}/removeChannel", channel=call.channel_id))
        if self.cfg.abandon_media:
            await self._quiet(self.ari.post(f"channels/{call.channel_id}/play", media=self.cfg.abandon_media))

        async def hang_later():
            await asyncio.sleep(self.cfg.abandon_media_max_s)
            await self._quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))
        call.tasks.append(asyncio.create_task(hang_later()))

    def _arm_deadline(self, call: Call) -> None:
        if call.deadline is not None and call.deadline_task is None:
            call.deadline_task = asyncio.create_task(self._max_duration(call))
            call.tasks.append(call.deadline_task)

    async def _max_duration(self, call: Call) -> None:
        """Hang up at the deadline (wall clock, so an adopted call keeps its answer time);
        at once when it has passed. Asterisk unreachable: try again until the call ends."""
        delay = (call.deadline - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        log.info("call %s reached its maximum duration (%ss)", call.channel_id, call.max_duration_s)
        while not call.finalizing:
            try:
                await self.ari.delete(f"channels/{call.channel_id}", reason="normal")
                return
            except AriError:  # 404: already gone
                return
            except AriUnavailable:
                await asyncio.sleep(0.2)

    async def _dtmf(self, call: Call, digit: str | None) -> None:
        camp = self.campaigns.get(call.campaign)
        key = camp.optout_key if camp else "9"
        if digit != key or call.opted_out:
            return
        call.opted_out = True
        log.info("call %s: opt-out key pressed; number opted out", call.channel_id)
        # PostgreSQL first (the lead is never dialed again), then the engine (every
        # campaign, the dialplan too): retried in the background while Redis is down,
        # so this channel's events (its hangup) are not held up.
        await self._retry(lambda: self.store.release_lead(call.lead["id"], state="blocked", result="opted_out"))
        t = asyncio.create_task(self._retry(lambda: self.engine.opt_out(call.lead["number"])))
        self._background.add(t)
        t.add_done_callback(self._background.discard)
        await self._quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))

    async def _disposition(self, call: Call, value: str) -> None:
        from dialguard.campaigns.disposition import parse_disposition
        try:
            disp, at = parse_disposition(value)
        except ValueError as exc:
            log.warning("call %s: bad DIALGUARD_DISPOSITION %r: %s", call.channel_id, value, exc)
            return
        # stored at once (the same as `dialguard campaign disposition`), applied at the end of the call
        await self._retry(lambda: self.store.set_disposition(call.lead["id"], disp, at))

    async def _agent_gone(self, ach: str) -> None:
        cust = self.agent_legs.pop(ach, None)
        for a in self.agents.values():
            if a.channel == ach:
                await self._free_agent_of(a.call)
        call = self.calls.get(cust) if cust else None
        if call and call.state == "bridged" and not call.finalizing:  # the agent hung up: end the call
            await self._quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))

    # -- the end of a call: record, report, reschedule ---------------------------------------------
    async def finalize(self, call: Call, cause: int | None, vanished: bool = False, failed: bool = False,
                       sip: int | None = None) -> None:
        if call.finalizing:
            return
        call.finalizing = True
        for t in call.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        talk_s = 0
        if call.bridged_at is not None:
            talk_s = int(time.monotonic() - call.bridged_at)
            result = "conversation"
        elif call.abandoned:
            result = "abandoned"
        elif call.answered_at is not None:
            result = "answered"
        elif failed:
            result = "failed"
        elif vanished:
            result = "no_answer"  # unknown: counted, nothing taken back out of the caps
        else:
            result = not_answered_result(cause)
        ended_at = datetime.now(UTC)
        # the outcome must reach PostgreSQL: retried while it is down (never dropped);
        # False: the call was ended before (e.g. by a dialer that died after recording
        # it): its outcome is not reported a second time
        first = await self._retry(lambda: self.store.end_call(call.channel_id, result=result, hangup_cause=cause,
                                                              talk_s=talk_s, ended_at=ended_at))
        # free the agent and the bridge
        if call.agent_channel:
            self.agent_legs.pop(call.agent_channel, None)
            await self._quiet(self.ari.delete(f"channels/{call.agent_channel}"))
        await self._free_agent_of(call.channel_id)
        if call.bridge_id:
            await self._quiet(self.ari.delete(f"bridges/{call.bridge_id}"))
        if first:
            await self._report(call.channel_id, result, talk_s, cause, sip if result not in ANSWERED else None)
            await self._retry(lambda: self._reschedule(call, result))
        call.state = "ended"
        self.calls.pop(call.channel_id, None)

    async def _report(self, channel_id: str, result: str, talk_s: int, cause: int | None,
                      sip: int | None = None) -> None:
        try:
            await self.engine.report_outcome(channel_id, Outcome(result=result, talk_s=talk_s,
                                                                 hangup_cause=cause_of(cause), sip_code=sip))
        except Exception as exc:  # noqa: BLE001 - left unreported: retried at the next reconcile
            log.warning("outcome of %s not reported yet: %s", channel_id, exc)
            return
        self.stats["reported"] += 1
        await self.store.update_call(channel_id, outcome_reported=True)

    async def _reschedule(self, call: Call, result: str) -> None:
        lead = await self.store.lead_for_call(call.channel_id)
        if lead is None or lead["state"] == "blocked":
            return
        camp = self.campaigns.get(call.campaign) or await self.store.campaign(call.campaign)
        if lead["disposed"]:  # the agent's word, given during this call (channel variable or CLI)
            follow = lead["disposition"] == "follow-up"
            await self.store.release_lead(lead["id"], state="pending" if follow else "done",
                                          next_at=lead["follow_up_at"] if follow else None, result=result)
            return
        if result == "conversation" or lead["attempts"] >= camp.max_attempts:
            await self.store.release_lead(lead["id"], state="done", result=result)
        else:
            nxt = await self.engine.now() + timedelta(seconds=camp.retry_after_s)
            await self.store.release_lead(lead["id"], state="pending", next_at=nxt, result=result)

    async def _retry(self, fn, cap: float = 10.0) -> None:
        delay = 0.2
        while True:
            try:
                return await fn()
            except Exception as exc:  # noqa: BLE001
                log.warning("PostgreSQL write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)

    @staticmethod
    async def _quiet(coro) -> None:
        try:
            await coro
        except (AriError, AriUnavailable) as exc:
            log.debug("ignored: %s", exc)
