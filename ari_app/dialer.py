"""The campaign dialer: an ARI Stasis application guarded by the same engine as the dialplan.

A thin coordinator of its parts, each testable alone:
- ari_app/pacing.py: how many calls to originate now, per campaign;
- ari_app/agents.py (and leases.py): which agents may be offered a call (leases in
  Redis shared by every dialer, device states from Asterisk);
- ari_app/lifecycle.py: one call from the lead claimed to the outcome reported
  (ARI events, reconciliation after every reconnect, deadlines, restart adoption).

One dialer per campaign: a dialer dials, adopts and recovers only the campaigns
whose PostgreSQL advisory lock it holds (store.CampaignLocks); a second dialer
on the same campaign waits and takes over when the first one dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from dialguard import cancel
from ari_app import metrics as m
from ari_app.agents import AgentPool
from ari_app.calls import Call
from ari_app.client import AriClient
from ari_app.lifecycle import Lifecycle
from dialguard.campaigns.abandon import STOPPED, Limit, Verdict, assess, campaign_limits
from ari_app.pacing import Pacer
from ari_app.pacing_modes import Measured, lines_wanted
from dialguard.campaigns.store import Campaign, CampaignLocks, Store
from dialguard.decision.decider import active_pauses
from dialguard.decision.models import DecisionRequest
from dialguard.store import _region_pauses
from dialguard.outage import OutageLog
from dialguard.timeutil import UTC

log = logging.getLogger("ari_app.dialer")
# Read-only eligibility says the callee's zone is closed: the lead waits for its window
# without a decision (issue #18 item 7).
ZONE_CLOSED = frozenset({"outside_hours", "holiday"})
# Predictive pacing's estimates (answer rate, ring and talk time) come from the campaign's
# latest MEASURE_CALLS ended calls of the last MEASURE_WINDOW (DIALGUARD_DIALER_MEASURE_S):
# contact rates move with the hour and the part of the list being dialed, so a recent
# window follows them; the abandon limits are measured over each pack's own period
# (dialguard/campaigns/abandon.py), never over this window.
MEASURE_WINDOW = timedelta(hours=2)
MEASURE_CALLS = 500
UNPARK_EVERY_S = 1.0  # parked leads are looked at this often even when no region pause changed
# A campaign whose last claim found fewer due leads than it asked for is asked again this
# often, not at every tick (20 a second, each an UPDATE in PostgreSQL): a lead that falls
# due meanwhile waits at most this long; an unpark or a clock moved asks at once.
DRAINED_RECHECK_S = 0.5
# How often the campaigns in play are read (PostgreSQL): a campaign started, stopped
# or given leads is seen within this. While nothing may dial and no call is in flight
# the loop waits this long, not a tick: an idle dialer wakes twice a second, not 20 times.
REFRESH_S = 0.5


@dataclass
class DialerConfig:
    ari_url: str
    ari_user: str
    ari_password: str
    agents: dict[str, str]
    app: str = "dialguard-dialer"
    name: str | None = None  # the name campaigns are assigned by (their `dialer`); default: app
    trunk: str = "carrier"
    context: str = "dialguard-dialer"  # dialplan context customer legs are originated into
    abandon_check_s: float = 2.0  # how often each campaign's abandon limits are measured
    drain_s: float = 10.0  # on stop: how long calls ringing or answered get to be bridged
    campaigns: list[str] | None = None  # None: every running campaign
    # from answer to agent; past it the call is abandoned and its message must begin within
    # 2 s of the answer (47 CFR 64.1200(a)(7)(i)(A)): the abandon leaves 0.3 s to start it
    bridge_timeout_s: float = 1.7
    abandon_media: str = "sound:all-circuits-busy-now"
    abandon_media_max_s: float = 30.0  # the abandon message is cut after this (normally: hangup at its end)
    # a dialer that dies between answer and bridge: Asterisk sends the customer to the
    # dialplan's message this long after the bridge timeout (0: off; lifecycle._dead_man)
    fallback_margin_s: float = 0.15
    amd_media_max_s: float = 30.0  # a machine's message: hung up after this at the latest
    tick_s: float = 0.05
    site_timezone: str = "Asia/Shanghai"
    guard_retry_s: int = 30  # guard_unavailable: try the lead again after this
    admin_retry_s: int = 60  # paused / not approved / no caller ID: look again after this
    # the earliest time past a calendar year not known yet (not imported): look again after this
    calendar_retry_s: int = 3600
    dial_plus: bool = True  # dial the E.164 with its "+"
    agent_devices: dict[str, str] | None = None  # agent -> device to watch (default: default_device)
    agent_lease_s: float = 15.0  # an agent lease without heartbeat for this long has no live holder
    agent_view_s: float = 0.2  # how often pacing re-reads every agent's lease
    outage_log_s: float = 60.0  # while Redis or PostgreSQL is down: one log line per this many seconds
    measure_s: float = MEASURE_WINDOW.total_seconds()  # predictive's estimates: calls of this recent window


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
        # this process's lease owner id: a restarted dialer is a new owner
        self.owner = f"{config.name or config.app}/{uuid.uuid4().hex[:12]}"
        self.stats = {"machines": 0, "skipped_closed": 0, "parked": 0, "originated": 0, "denied": 0, "answered": 0, "bridged": 0, "abandoned": 0, "message_failed": 0,
                      "reported": 0, "reconciled_ended": 0, "originate_errors": 0, "agent_waits": 0,
                      "leases_recovered": 0, "leases_lost": 0, "ticks": 0}
        # Redis or PostgreSQL down: a line when it starts, one a minute, one when it ends
        self.outages = {k: OutageLog(log, k, config.outage_log_s) for k in ("Redis", "PostgreSQL", "dialer")}
        self._background: set[asyncio.Task] = set()  # retries that must not hold up a channel
        self.pool = AgentPool(config.agents, config.agent_devices, redis=engine.redis, keys=engine.keys,
                              owner=self.owner, lease_s=config.agent_lease_s, view_s=config.agent_view_s,
                              app=config.app, stats=self.stats, outages=self.outages,
                              background=self._background)
        self.campaigns: dict[str, Campaign] = {}
        self.pacer = Pacer()
        self.verdicts: dict[str, Verdict] = {}  # campaign -> what its abandon limits allow
        self.limits: dict[str, list[Limit]] = {}  # campaign -> its abandon limits, as last measured
        self.held: dict[str, str | None] = {}  # campaign -> why a kill switch holds its leads back
        self._active_regions: set[str] | None = None  # regions paused now (None: not read yet)
        # campaign -> (monotonic time, guard clock) of a claim that found fewer due leads than asked
        self._drained: dict[str, tuple[float, datetime]] = {}
        self._idle = False  # the last tick found no campaign that may dial
        self._unparked_at = 0.0
        self._held_kind: dict[str, str] = {}  # campaign -> the dialer_holds reason of `held`
        # campaign -> {reason: hold id} of the holds ended when this dialer took it over, until
        # its first look at them: one still holding is resumed, not counted a second time
        self._taken_holds: dict[str, dict[str, int]] = {}
        self._limits_at: dict[str, float] = {}
        pool = max(8, min(64, 4 + 2 * len(self.pool.agents)))
        self.ari = AriClient(config.ari_url, config.ari_user, config.ari_password, config.app, pool_size=pool,
                             on_disconnect=self._socket_down)
        self.pool.ari = self.ari
        self.locks = CampaignLocks(store.pool.conninfo)
        self.life = Lifecycle(config, engine, store, self.ari, self.pool, self.locks, stats=self.stats,
                              background=self._background, campaign_of=self.campaigns_get)
        self.ari.on_event = self.life.on_event
        self.pool.wrap_of = self._wrap_of
        self.measured: dict[str, Measured] = {}
        self.abandon_targets: dict[str, float] = {}
        self._last_measure = 0.0
        self._eligibility = None
        self.ari.on_connect = self.life.reconcile
        self._stop = asyncio.Event()
        self._started = False

    # the parts' state, as tests and metrics read it
    @property
    def agents(self):
        return self.pool.agents

    @property
    def calls(self) -> dict[str, Call]:
        return self.life.calls

    def campaigns_get(self, name: str) -> Campaign | None:
        return self.campaigns.get(name)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.cfg.name or self.cfg.app

    async def run(self) -> None:
        """Until stop() (drained: calls in flight get drain_s to be bridged) or a cancel
        of its task (stops at once, as a process would die: its calls stay up in Asterisk,
        their agents' leases go stale, the next dialer adopts both). Either way the
        campaign locks' session, the events socket and the HTTP pool are closed, even
        when the cancel lands before the pacing loop (standby, taking the campaigns)."""
        try:
            # standby while another process runs this Stasis app (it would steal our events)
            waited = False
            while not await self.locks.acquire_app(self.cfg.app):
                if not waited:
                    log.warning("another dialer runs Stasis app %s: standing by until it stops", self.cfg.app)
                    waited = True
                if await cancel.wait_event(self._stop, 1.0):
                    return
            await self._refresh_campaigns()  # takes its campaigns' locks and adopts their calls
            self.ari.start()
            self._started = True
            await self._pace_loop()
        finally:
            # drained only when asked to stop (SIGTERM); cancelled, it stops at once
            await self.shutdown(drain=self._stop.is_set())

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self, drain: bool = False) -> None:
        self._stop.set()
        if self.life.placing:
            await asyncio.gather(*self.life.placing, return_exceptions=True)
        if drain and self._started:
            try:
                await self.life.drain(self.cfg.drain_s, self.pool.refresh)
            except Exception:  # noqa: BLE001 - stopping anyway: the next dialer adopts what is left
                log.exception("drain on stop failed")
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

    # -- pacing loop ----------------------------------------------------------------------
    async def _refresh_campaigns(self) -> None:
        """Campaigns this dialer serves and holds the lock of; settings, abandon rates."""
        if self.locks.held and not await self.locks.check():
            log.warning("campaign locks lost (PostgreSQL session ended): taking them again")
        if not await self.locks.acquire_app(self.cfg.app):
            log.error("Stasis app %s taken by another process while our PostgreSQL session was down",
                      self.cfg.app)
        ours = {c.campaign for c in self.calls.values()}
        camps = {c.name: c for c in await self.store.campaigns_in_play(ours)  # with work left, too
                 if c.served_by(self.name, self.cfg.campaigns)}
        wanted = set(camps)  # in play: running or paused, or work left (what campaigns_in_play reads)
        for n in sorted(self.locks.campaigns - wanted):  # nothing to do there: another dialer may have it
            await self.locks.release(n)
        taken = [n for n in sorted(wanted - self.locks.campaigns) if await self.locks.acquire(n)]
        if taken:
            log.info("campaigns taken: %s", ", ".join(taken))
            await self.life.adopt(taken)
            at = await self.engine.now()
            for n in taken:  # holds a dialer that died left open: resumed below if still held
                ended = await self.store.hold_end(n, None, at)
                self._taken_holds[n] = {r["reason"]: r["id"] for r in ended}
                self.held.pop(n, None)
                self._held_kind.pop(n, None)
                self.verdicts.pop(n, None)
        self.campaigns = {n: camps[n] for n in sorted(self.locks.campaigns) if n in camps}
        m.CAMPAIGNS_HELD.set(len(self.campaigns))
        self.pool.admin = await self.store.agent_states()
        if time.monotonic() - self._last_measure > 5:
            self._last_measure = time.monotonic()
            since = datetime.now(UTC) - timedelta(seconds=self.cfg.measure_s)
            for c in self.campaigns.values():
                if c.pacing_mode == "predictive":
                    self.measured[c.name] = Measured(**await self.store.pacing_stats(c.name, since,
                                                                                      MEASURE_CALLS))
        now = datetime.now(UTC)
        for c in self.campaigns.values():
            verdict = self.verdicts.get(c.name)
            if verdict is None or time.monotonic() - self._limits_at.get(c.name, 0.0) >= self.cfg.abandon_check_s:
                verdict = await self._abandon_verdict(c, now)
            t = verdict.tightest or self._own_limit(c)
            self.abandon_targets[c.name] = t.max_pct  # predictive aims at half the tightest limit
            self.pacer.update(c.name, calls_per_second=c.calls_per_second, dial_ratio=c.dial_ratio,
                              rate_pct=t.rate_pct, limit_pct=t.max_pct, state=verdict.state)
            m.ABANDON_RATE.labels(c.name).set(t.rate_pct / 100.0)
            m.ABANDON_LIMIT.labels(c.name).set(t.max_pct / 100.0)
            m.ABANDON_HELD.labels(c.name).set(1 if verdict.state == STOPPED else 0)
            m.ABANDON_CALLABLE_AT.labels(c.name).set(verdict.callable_at.timestamp() if verdict.callable_at else 0)
        for name in self.pacer.ratios:
            m.CALLS_IN_FLIGHT.labels(name).set(sum(1 for x in self.calls.values() if x.campaign == name))

    def _own_limit(self, c: Campaign) -> Limit:
        """No limit binds (the campaign's own is 100 % or more): its own, for the figures."""
        return next((x for x in self.limits.get(c.name, []) if x.source == "campaign"),
                    Limit("campaign", c.abandon_limit_pct, None))

    async def _abandon_verdict(self, c: Campaign, now: datetime) -> Verdict:
        """The campaign's abandon limits (its packs' and its own), measured on its call
        records; logged when the pacing they allow changes."""
        try:
            policy = await self.engine.campaign_policy(c.name)
        except Exception as exc:  # noqa: BLE001 - unusable rules: the guard denies its calls anyway
            log.warning("campaign %s: rules unreadable for its abandon limits (%s): own limit only", c.name, exc)
            policy = None
        limits = await campaign_limits(self.store, policy, c, now, self.cfg.site_timezone)
        self.limits[c.name] = limits
        verdict = assess(limits)
        before = self.verdicts.get(c.name)
        if before is None or before.state != verdict.state:
            (log.warning if verdict.state == STOPPED else log.info)(
                "campaign %s: pacing by its abandon limits: %s", c.name, verdict.summary())
            was = before is not None and before.state == STOPPED
            if (verdict.state == STOPPED) != was:  # the hold, for `dialguard report`
                at = await self.engine.now()
                if verdict.state == STOPPED:
                    await self._hold_start(c.name, "abandon_limit", verdict.why, at)
                else:
                    await self.store.hold_end(c.name, "abandon_limit", at)
        self._taken_holds.get(c.name, {}).pop("abandon_limit", None)  # looked at: no longer resumable
        self.verdicts[c.name] = verdict
        self._limits_at[c.name] = time.monotonic()
        return verdict

    async def _pace_loop(self) -> None:
        last_refresh = last_report = last_poll = 0.0
        while not self._stop.is_set():
            # a cancel swallowed on its way ends the loop here: the waits of redis-py and
            # psycopg_pool that lost them on 3.11 are replaced (dialguard/redis_cancel.py,
            # pg_cancel.py); this stays as the last guard for any other (dialguard/cancel.py)
            cancel.check()
            try:
                # first: the leases' heartbeat must not wait on PostgreSQL being back
                await self.pool.refresh()
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    await self.life.report_pending()
                if (self.ari.healthy and time.monotonic() - last_poll > 2
                        and any(c.resumed for c in self.calls.values())):
                    # adopted from a dialer on another Stasis app: their events go nowhere,
                    # so look at those channels every 2 s
                    last_poll = time.monotonic()
                    await self.life.reconcile()
                if time.monotonic() - last_refresh >= REFRESH_S:
                    await self._refresh_campaigns()
                    last_refresh = time.monotonic()
                if self.ari.healthy:  # dial only while the events socket is healthy
                    await self._tick()
                    self.stats["ticks"] += 1  # (tests wait on it: "nothing dialed in N ticks")
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
            wait = self.cfg.tick_s
            if self._idle and not self.calls and self.ari.healthy:
                # nothing may dial and nothing is in flight: nothing happens before the next
                # refresh (a started campaign is seen there; events come on their own task)
                wait = max(wait, REFRESH_S - (time.monotonic() - last_refresh))
            # not asyncio.wait_for: on 3.11 it can lose a cancel (dialguard/cancel.py)
            await cancel.wait_event(self._stop, wait)

    async def _hold_start(self, campaign: str, reason: str, why: str, at) -> None:
        """Record a campaign-wide hold; if this dialer ended one of that reason when it took
        the campaign over (a dialer that died left it open), that row goes on instead: a
        restart must not count the held leads twice in `dialguard report`."""
        hold_id = self._taken_holds.get(campaign, {}).pop(reason, None)
        if hold_id is not None and await self.store.hold_resume(hold_id, why):
            log.info("campaign %s: hold (%s) left by the dialer before goes on", campaign, reason)
            return
        await self.store.hold_start(campaign, reason, why, at)

    async def _held_back(self, c: Campaign, paused: dict) -> tuple[str, str] | None:
        """(reason, why) a whole campaign's leads are held back: a kill switch, or no
        lawful abandon message (none are taken, so none is denied and pushed back:
        dialing resumes at the next tick after `resume`)."""
        if paused:
            if "all" in paused:
                return "paused", "all outbound paused"
            if "camp:" + c.name in paused:
                return "paused", "campaign paused"
            if any(k.startswith("cid:") for k in paused):
                pool = await self.engine.campaign_caller_ids(c.name)
                if pool and all("cid:" + self.engine.keys.cid_tag(e) in paused for e in pool):
                    return "paused", "every caller ID of the campaign paused"
        if not c.abandon_media:
            try:
                packs = (await self.engine.campaign_policy(c.name)).abandon_message_packs
            except Exception:  # noqa: BLE001 - rules unreadable: the guard denies its calls anyway
                packs = []
            if packs:
                return "no_message", (f"no abandon message of its own, and {', '.join(packs)} requires one "
                                      "naming the seller: dialguard campaign edit NAME --abandon-message ...")
        return None

    async def _regions(self, now: datetime) -> None:
        """Region kill switches: parked leads whose region is no longer paused (resumed,
        or its window ended) are due again at once; looked at whenever the set of regions
        paused now changes, and every UNPARK_EVERY_S."""
        raw = await self.engine.redis.hgetall(self.engine.keys.pause_regions)
        active = active_pauses(_region_pauses(raw), int(now.timestamp() * 1000))
        mono = time.monotonic()
        if active != self._active_regions or mono - self._unparked_at >= UNPARK_EVERY_S:
            if active != self._active_regions:
                # the engines cache each campaign's region pauses for up to 2 s: a lead taken
                # now must not be parked (or denied) again on the old list
                self.engine._forget()
                if self._eligibility is not None:
                    self._eligibility.engine._forget()
            if self.campaigns:
                n = await self.store.unpark(list(self.campaigns), active, now)
                if n:
                    self._drained.clear()  # leads due again: asked for at this tick
                    log.info("%d lead(s) parked by a region kill switch due again", n)
                counts = await self.store.parked_counts(list(self.campaigns))
                for name in self.campaigns:
                    m.LEADS_PARKED.labels(name).set(counts.get(name, 0))
            if active != self._active_regions:
                log.info("regions paused now: %s", ", ".join(sorted(active)) or "none")
            self._active_regions = active
            self._unparked_at = mono

    async def _tick(self) -> None:
        now = await self.engine.now()
        dialing = []
        for c in self.campaigns.values():
            if c.may_dial(now):
                dialing.append(c)
            else:
                self._taken_holds.pop(c.name, None)  # not dialing: nothing ended at the takeover goes on
        self._idle = not dialing
        if not dialing:
            # nothing may dial (stopped, or outside its approved dates): the kill switches and
            # region pauses matter to no lead, so an idle dialer reads neither 20 times a second
            return
        paused = await self.engine.paused()
        await self._regions(now)
        mono = time.monotonic()
        for c in dialing:
            hold = await self._held_back(c, paused)
            why = hold[1] if hold else None
            before = self.held.get(c.name)
            if why != before:
                if before:
                    await self.store.hold_end(c.name, self._held_kind.pop(c.name, "paused"), now)
                if hold:
                    (log.error if hold[0] == "no_message" else log.info)(
                        "campaign %s: leads held back (%s): none taken until %s", c.name, why,
                        "it has its message" if hold[0] == "no_message" else "resumed")
                    await self._hold_start(c.name, hold[0], why, now)
                    self._held_kind[c.name] = hold[0]
                else:
                    log.info("campaign %s: dialing again (%s lifted)", c.name, before)
                self.held[c.name] = why
                m.HELD_BACK.labels(c.name).set(1 if why else 0)
            taken = self._taken_holds.get(c.name)
            if taken:  # the kill-switch holds are looked at: no longer resumable
                self._taken_holds[c.name] = {k: v for k, v in taken.items() if k == "abandon_limit"}
            if why:
                continue
            pool = list(self.pool.agents.values())
            agents = [self.pool.now_of(a, mono) for a in pool]
            ready = [a.name for a, st in zip(pool, agents) if st.state == "ready"]
            accepted = 0
            if c.pacing_mode == "preview":
                held = await self.store.held_previews(c.name, now)
                accepted = sum(1 for a in ready if held.get(a))
            lines = lines_wanted(c.pacing_mode, now=mono, agents=agents,
                                 measured=self.measured.get(c.name, Measured()),
                                 unbridged=sum(1 for x in self.calls.values() if x.unbridged),
                                 max_ratio=c.dial_ratio, limit_ratio=self.pacer.ratios.get(c.name, c.dial_ratio),
                                 wrap_s=c.wrap_up_s, accepted_previews=accepted,
                                 abandon_target=self.abandon_targets.get(c.name, c.abandon_limit_pct) / 200.0)
            if lines <= 0:
                continue
            # concurrency and rate on top of the mode's lines (each a ready agent's share)
            n = self.pacer.how_many(
                c.name, max_concurrent=c.max_concurrent,
                in_flight=sum(1 for x in self.calls.values() if x.campaign == c.name and x.state != "ended"),
                free_agents=lines, unbridged=0, ratio=1.0)
            if n <= 0:
                continue
            drained = self._drained.get(c.name)
            if (drained and mono - drained[0] < DRAINED_RECHECK_S
                    and timedelta(0) <= now - drained[1] < timedelta(seconds=DRAINED_RECHECK_S)):
                continue  # nothing was due a moment ago: asked again shortly, not at every tick
            cancel.check()  # cancelled during this tick (a cancel swallowed, above): no lead claimed
            leads = await self.store.claim_due(c.name, n, now, ready_agents=ready,
                                               owned_only=c.pacing_mode == "preview")
            if len(leads) < n:
                self._drained[c.name] = (mono, now)
            else:
                self._drained.pop(c.name, None)
            for lead in await self._skip_closed(c, leads, now):
                self.pacer.take(c.name)
                owner = lead.get("owner_agent")
                self.life.start(c, Call(f"dgc-{uuid.uuid4().hex}", lead, c.name,
                                        agent=owner or self.pool.intended(), owner=owner))

    def _wrap_of(self, cid: str) -> float:
        """The wrap-up an agent gets after call `cid`: its campaign's, after a conversation."""
        call = self.calls.get(cid)
        camp = self.campaigns.get(call.campaign) if call else None
        return float(camp.wrap_up_s) if camp and call.bridged_at is not None else 0.0

    async def _skip_closed(self, c: Campaign, leads: list[dict], now: datetime) -> list[dict]:
        """Leads whose callee zone is closed now (read-only eligibility: nothing reserved,
        no decision recorded) go back to pending at the time the window opens."""
        if not leads:
            return leads
        from dialguard.eligibility import Eligibility
        from dialguard.engine import Engine

        if self._eligibility is None:  # the same Redis, keys and rules; no audit (read-only)
            e = self.engine
            self._eligibility = Eligibility(Engine(e.redis, e.settings, e.policy, prefix=e.keys.prefix,
                                                   skip_caller_id_without_pool=e.skip_caller_id_without_pool,
                                                   audit=False, versioned=e.versioned))
        try:
            answers = await self._eligibility.check_many(
                [DecisionRequest(number=x["number"], campaign=c.name, agent="dialer", subject=x["subject"] or None,
                                 # where the callee lives, as the decision will be told (lifecycle.place)
                                 region=x.get("region"), postal_code=x.get("postal_code"), party=x.get("party"))
                 for x in leads], now)
        except Exception as exc:  # noqa: BLE001 - no answer: the decision itself will say
            log.info("eligibility not read (%s): leads decided as usual", exc)
            return leads
        keep = []
        for lead, a in zip(leads, answers):
            if a.decision == "deny" and a.paused_region:
                # a region kill switch: parked (no decision) until the region is resumed
                # or its window ends (_regions), whatever else the lead would be denied for
                self.stats["parked"] += 1
                await self.store.park_lead(lead["id"], c.name, a.paused_region, now)
            elif a.decision == "deny" and a.next_unknown and set(a.reasons) <= ZONE_CLOSED:
                # closed, and its opening past a calendar year not known yet: held, not
                # decided (a decision would be a denied attempt), looked at again later
                self.stats["skipped_closed"] += 1
                await self.life.hold_calendar_unknown(c.name, lead, a.reasons, a.next_unknown, now)
            elif a.decision == "deny" and a.next_eligible_at and set(a.reasons) <= ZONE_CLOSED:
                self.stats["skipped_closed"] += 1
                await self.store.release_lead(lead["id"], state="pending", next_at=a.next_eligible_at,
                                              reasons=",".join(a.reasons))
                await self.store.hold_lead(lead["id"], c.name, "zone_closed", ",".join(a.reasons), now,
                                           a.next_eligible_at)
            else:
                keep.append(lead)
        return keep
