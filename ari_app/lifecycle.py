"""The life of a dialer call, from the lead claimed to the outcome reported.

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Callable

from ari_app import metrics as m
from ari_app.agents import AgentPool
from ari_app.calls import (ANSWERED, BLOCKING, MIN_AGENT_LEG_S, TRANSIENT, Call, ari_time, cause_of,
                           message_at_end, not_answered_result, quiet, sip_of)
from ari_app.client import AriClosed, AriError, AriUnavailable
from dialguard.campaigns.disposition import parse_disposition
from dialguard.campaigns.retry import next_try, parse_rules
from dialguard.campaigns.store import Campaign, Store
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.timeutil import UTC

log = logging.getLogger("ari_app.lifecycle")


def sound_of(media: str | None) -> str:
    """Playback()'s argument for an ARI media URI (sound:NAME -> NAME); "" for none."""
    if not media:
        return ""
    return media[len("sound:"):] if media.startswith("sound:") else media


def channel_global(prefix: str, cid: str) -> str:
    """The global the dialplan writes for channel `cid` (its id without the `dgc-`)."""
    return prefix + cid.split("-", 1)[-1]


def fallback_var(cid: str) -> str:
    """The global the dialplan's fallback writes for channel `cid` (extensions_dialguard.conf)."""
    return channel_global("DGAB_", cid)


def message_var(cid: str) -> str:
    """The global the dialplan's fallback writes for channel `cid` when it owed the callee
    a message: state/started/answered (extensions_dialguard.conf [dialguard-dialer])."""
    return channel_global("DGAM_", cid)


def end_var(cid: str) -> str:
    """The global the hangup handler [dialguard-dialer-end] writes for channel `cid`: the
    Q.850 cause of a call never answered that ended within 2 s (extensions_dialguard.conf)."""
    return channel_global("DGNA_", cid)


# The handler writes end_var for calls ending within 2 s of their start; the dialer
# deletes it for the unanswered calls it saw end within this many seconds of the
# originate (its clock starts before Asterisk's), or never saw end at all.
END_VAR_WINDOW_S = 10.0
END_HANDLER = "dialguard-dialer-end,s,1"
# Asterisk's own cut of a bridged call (TIMEOUT(absolute)) comes this long after the
# dialer's: the dialer's cut is the one that normally ends the call; Asterisk's is for
# a dialer that died.
LIMIT_MARGIN_S = 0.5


def epoch_times(*texts: str) -> list[datetime] | None:
    """The dialplan's STRFTIME(,,%s.%3q) values as times; None when one is not one."""
    try:
        return [datetime.fromtimestamp(float(t), UTC) for t in texts]
    except (ValueError, OverflowError, OSError):
        return None


def parse_trace(value: str | None) -> tuple[datetime, datetime, str] | None:
    """"answered/ended/how" (epoch seconds) -> (answered, ended, how); None when unset or bad."""
    parts = (value or "").split("/")
    if len(parts) != 3 or parts[2] not in ("stasis", "fallback") or (times := epoch_times(*parts[:2])) is None:
        return None
    answered, ended = times
    return answered, max(answered, ended), parts[2]


# the fallback's DGAM_ states -> dialer_calls.message_state (a message still
# `started` at the hangup was cut by it: Playback never returned)
DIALPLAN_MESSAGE_STATES = {"none": "none", "started": "cut", "played": "played", "failed": "failed"}


def parse_message(value: str | None) -> dict | None:
    """"state/started/answered" (epoch seconds; started empty for `none`) -> the row's
    message fields (dialguard/campaigns/sql/240, 250); None when unset or bad."""
    parts = (value or "").split("/")
    if len(parts) != 3 or parts[0] not in DIALPLAN_MESSAGE_STATES:
        return None
    out = {"message_state": DIALPLAN_MESSAGE_STATES[parts[0]], "message_by_dialplan": True}
    if parts[0] == "none":
        return out
    if (times := epoch_times(*parts[1:])) is None:
        return None
    started, answered = times
    out["message_started_at"] = started
    out["message_delay_ms"] = max(0, round((started - answered).total_seconds() * 1000))
    return out


class Lifecycle:
    """The dialer's calls: placing, ARI events, reconciliation, deadlines, outcomes."""

    def __init__(self, cfg, engine, store: Store, ari, pool: AgentPool, locks, *, stats: dict, background: set,
                 campaign_of: Callable[[str], Campaign | None]):
        self.cfg, self.engine, self.store, self.ari = cfg, engine, store, ari
        self.pool, self.locks, self.stats = pool, locks, stats
        self._background = background  # retries that must not hold up a channel
        self.campaign_of = campaign_of
        self.calls: dict[str, Call] = {}  # customer channel id -> call
        self.agent_legs: dict[str, str] = {}  # agent channel id -> customer channel id
        self.placing: set[asyncio.Task] = set()
        self._calendar_logged: dict[tuple[str, str], float] = {}  # (campaign, why) -> last warned

    def abandon_media(self, campaign: str) -> str:
        """The campaign's abandon message (an Asterisk media URI), else the dialer's default."""
        camp = self.campaign_of(campaign)
        return (camp.abandon_media if camp and camp.abandon_media else None) or self.cfg.abandon_media

    async def watch_call(self, call: Call) -> bool:
        """Our calls are not in Stasis until they answer: their channel events before that
        (a busy, a no answer, an answer in the dialplan's fallback) reach us through a
        subscription to each originated channel, taken right after the originate and again
        after every reconnect. Not the whole trunk endpoint: that would bring every call of
        the PBX (31 events, ~18 KB of JSON each) to the dialer. A channel gone before we
        could subscribe ended unseen: finalized now, from the dialplan's trace if it left
        one (False)."""
        try:
            await self.ari.post(f"applications/{self.cfg.app}/subscription",
                                eventSource=f"channel:{call.channel_id}")
            return True
        except AriError as exc:
            if exc.status not in (404, 422):
                log.warning("subscribing to call %s: %s", call.channel_id, exc)
                return True  # reconciliation will see whether it still lives
        if call.channel_id in self.calls and not call.finalizing:
            self.stats["reconciled_ended"] += 1
            log.info("call %s ended before the dialer could subscribe to it", call.channel_id)
            await self.finalize(call, cause=None, vanished=True)
        return False

    async def read_global(self, name: str) -> str | None:
        """An Asterisk global's value; None when unset (or the name refused)."""
        try:
            r = await self.ari.get("asterisk/variable", variable=name)
        except AriError as exc:
            if exc.status in (400, 404):
                return None
            raise
        return r.get("value") if isinstance(r, dict) else None

    async def delete_global(self, name: str) -> None:
        """Delete an Asterisk global: an ARI set without a value (with value="" an empty
        one would stay, for good, in the list every global look-up walks)."""
        await quiet(self.ari.post("asterisk/variable", variable=name))

    async def fallback_trace(self, cid: str) -> tuple[datetime, datetime, str] | None:
        """(answered, ended, how) of an answered call as the dialplan recorded it at hangup
        (how: "stasis", handled by a dialer, or "fallback", abandoned by the dialplan
        with no dialer to take it); None: not answered, or not ended yet."""
        return parse_trace(await self.read_global(fallback_var(cid)))

    async def dialplan_message(self, cid: str) -> dict | None:
        """What the dialplan's fallback did with the message it owed the callee (the
        row's message fields); None: it owed none, or Asterisk is unreachable."""
        try:
            return parse_message(await self.read_global(message_var(cid)))
        except (AriError, AriUnavailable):
            return None

    async def end_cause(self, cid: str) -> int | None:
        """The Q.850 cause [dialguard-dialer-end] left for a call never answered that ended
        within 2 s; None: none left (or Asterisk unreachable)."""
        try:
            value = await self.read_global(end_var(cid))
        except (AriError, AriUnavailable):
            return None
        return int(value) if value and value.isdigit() and len(value) <= 3 else None

    async def drain(self, bound_s: float, heartbeat) -> None:
        """A stopping dialer (SIGTERM) places no new call and gives its calls up to
        `bound_s` to be answered and bridged (or abandoned); then the answered ones
        still without an agent go to the dialplan's fallback (the abandon message,
        hangup, recorded as abandoned), and agents leased for calls not bridged are
        released. Bridged calls are handed over: they stay up in Asterisk and the next
        dialer adopts them (their agents' leases with them). Calls still ringing are
        left to the dialplan: answered later, the fallback abandons them lawfully."""
        deadline = time.monotonic() + bound_s

        def pending() -> list[Call]:
            return [c for c in self.calls.values() if not c.finalizing and c.state != "bridged"
                    and (c.state != "originated" or c.answered_at is not None)]

        def waiting() -> bool:
            # ringing calls too, until the bound
            return any(not c.finalizing and c.state != "bridged" for c in self.calls.values())

        while self.ari.healthy and time.monotonic() < deadline and waiting():
            await heartbeat()
            await asyncio.sleep(0.1)
        if not self.ari.healthy:
            return
        for c in pending():
            if c.state != "answered":
                continue
            for t in c.tasks:
                t.cancel()
            if not c.abandoned:
                c.abandoned = True
                self.stats["abandoned"] += 1
            log.info("stopping: call %s answered with no agent yet: to the dialplan's abandon message",
                     c.channel_id)
            c.to_fallback = True
            await self._dead_man(c, False)  # else it would restart the message in the dialplan
            if c.agent_channel:
                self.agent_legs.pop(c.agent_channel, None)
                await quiet(self.ari.delete(f"channels/{c.agent_channel}"))
            await quiet(self.ari.post(f"channels/{c.channel_id}/continue", context=self.cfg.context,
                                      extension="s", label="fallback"))
            if c.bridge_id:
                await quiet(self.ari.delete(f"bridges/{c.bridge_id}"))
            await self.pool.free_agent_of(c.channel_id)
        # a moment for the messages to end, so that their outcomes are ours to record
        end = time.monotonic() + min(self.cfg.abandon_media_max_s, 10.0)
        while self.ari.healthy and time.monotonic() < end and any(
                c.abandoned and not c.finalizing for c in self.calls.values()):
            await heartbeat()
            await asyncio.sleep(0.1)
        bridged = {c.channel_id for c in self.calls.values() if c.state == "bridged"}
        for a in self.pool.agents.values():
            if a.call is not None and a.call not in bridged:
                await self.pool.free_agent_of(a.call)

    def start(self, camp: Campaign, call: Call) -> None:
        """A lead claimed for `call`: counted in flight at once, placed in a task of its own."""
        self.calls[call.channel_id] = call
        t = asyncio.create_task(self.place(camp, call))
        self.placing.add(t)
        t.add_done_callback(self.placing.discard)

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
                if row["agent"] in self.pool.agents:
                    self.pool.agents[row["agent"]].call = cid
                    self.pool.agents[row["agent"]].channel = call.agent_channel
            self.calls[cid] = call
            log.info("adopted call %s (%s) of campaign %s", cid, row["state"], row["campaign"])
        await self.report_pending(names)
        if self.ari.healthy:
            await self.reconcile()

    async def report_pending(self, names: list[str] | None = None) -> None:
        names = sorted(self.locks.campaigns) if names is None else names
        if not names:
            return
        for row in await self.store.unreported(names):
            await self._report(row["channel_id"], row["result"], row["talk_s"], row["hangup_cause"])
        for lead in await self.store.orphan_dialing_leads(names):
            if not any(c.lead["id"] == lead["id"] for c in self.calls.values()):
                await self.store.release_lead(lead["id"], state="pending")

    async def reconcile(self) -> None:
        await self.pool.watch_devices()
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
            if call.state in ("reserved", "originated") and not await self.watch_call(call):
                continue  # not answered yet: its events come by its own subscription
            if call.deadline is not None:
                self._arm_deadline(call)  # adopted after a restart: cut at its stored deadline
            if (call.resumed and call.state == "bridged" and not call.lease_checked
                    and call.agent_channel in live):
                await self.pool.adopt_lease(call)
            if (call.resumed and call.state == "answered" and call.amd is None
                    and (live[cid].get("dialplan") or {}).get("context") == "dialguard-amd"):
                # adopted while AMD() listens: its verdict comes back to this app (_amd_done)
                call.amd = "pending"
                log.info("reconcile: call %s is in answering-machine detection: its verdict decides", cid)
            if (call.state == "answered" and call.agent_channel is None and not call.abandoned
                    and call.amd != "pending" and not call.machine):
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
                await quiet(self.ari.delete(f"bridges/{b['id']}"))
        for cid in live:
            if cid.startswith("dga-") and stray(cid, cid in self.agent_legs):
                await quiet(self.ari.delete(f"channels/{cid}"))
        await self.report_pending()
        m.EVENTS_SOCKET_UP.set(1)
        m.EVENTS_CONNECTS.set(self.ari.connects)

    async def place(self, camp: Campaign, call: Call) -> None:
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
            await quiet(self.store.release_lead(lead["id"], state="pending"))
            return
        d = await self.engine.decide(DecisionRequest(
            number=lead["number"], campaign=camp.name, agent=call.agent or "dialer",
            subject=lead["subject"] or None, call_id=call.channel_id,
            # where the callee lives and who they are, from the lead file (dialguard/campaigns/sql/181)
            region=lead.get("region"), postal_code=lead.get("postal_code"), party=lead.get("party")))
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
        # into the dialplan context, which enters our Stasis app on answer: if no dialer
        # runs by then, the context abandons the call lawfully instead of Asterisk
        # hanging up on the callee ("Stasis app not active")
        params = dict(endpoint=f"PJSIP/{number}@{self.cfg.trunk}", context=self.cfg.context, extension="s",
                      priority=1, timeout=camp.ring_timeout_s)
        if d.caller_id:
            params["callerId"] = d.caller_id
        body = {"variables": {"DIALGUARD_DECISION_ID": d.decision_id, "DIALGUARD_CAMPAIGN": camp.name,
                              "DIALGUARD_APP": self.cfg.app,
                              "DIALGUARD_ABANDON_SOUND": sound_of(self.abandon_media(camp.name)),
                              "CDR(campaign)": camp.name, "CDR(dialguard_decision_id)": d.decision_id,
                              # how a call rejected before watch_call subscribed ended
                              "CHANNEL(hangup_handler_push)": END_HANDLER}}
        ok = await self._originate(call.channel_id, params, body)
        if ok:
            call.originated_at = time.monotonic()
            self.stats["originated"] += 1
            if not await self.watch_call(call):
                return  # ended before we could subscribe: finalized
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
        elif set(d.reasons) == {"paused"}:
            # a kill switch set between the dialer's check and this decision: the lead stays due,
            # held back by the dialer (no lead is taken while paused) and dialed again on resume
            await self.store.release_lead(lead["id"], state="pending", next_at=now, result="denied",
                                          reasons=reasons)
        elif set(d.reasons) <= TRANSIENT:
            wait = self.cfg.guard_retry_s if "guard_unavailable" in d.reasons else self.cfg.admin_retry_s
            await self.store.release_lead(lead["id"], state="pending", next_at=now + timedelta(seconds=wait),
                                          result="denied", reasons=reasons)
        elif d.next_unknown:
            # no next time because a calendar year is not known yet: not "never"
            await self.hold_calendar_unknown(camp.name, lead, d.reasons, d.next_unknown, now, result="denied")
        else:  # a cap that never lifts (e.g. lifetime attempts per campaign): the lead is done
            await self.store.release_lead(lead["id"], state="done", result="denied", reasons=reasons)

    async def hold_calendar_unknown(self, campaign: str, lead: dict, reasons, why: str, now: datetime,
                                    result: str | None = None) -> None:
        """A lead whose earliest time lies past a calendar year not known yet stays pending,
        looked at again after calendar_retry_s; the admin must import that year's calendar:
        said in the log (once per campaign and cause every 10 minutes), a metric and a
        hold row (`campaign status`, the report)."""
        until = now + timedelta(seconds=self.cfg.calendar_retry_s)
        await self.store.release_lead(lead["id"], state="pending", next_at=until, result=result,
                                      reasons=",".join(reasons))
        await self.store.hold_calendar_unknown(lead["id"], campaign, why, now, lead.get("next_eligible_at"), until)
        m.CALENDAR_UNKNOWN.labels(campaign).inc()
        self.stats["calendar_unknown"] = self.stats.get("calendar_unknown", 0) + 1
        key, mono = (campaign, why), time.monotonic()
        logged = self._calendar_logged.get(key)
        if logged is None or mono - logged >= 600:
            self._calendar_logged[key] = mono
            log.warning("campaign %s: leads held back, their next time unknown: %s; looked at again every %d s "
                        "until the calendar is imported (dialguard calendar import)", campaign, why,
                        self.cfg.calendar_retry_s)

    async def on_event(self, e: dict) -> None:
        kind = e.get("type")
        ch = (e.get("channel") or {}).get("id")
        if kind == "StasisStart":
            args = e.get("args") or []
            if ch in self.calls and self.calls[ch].answered_ts is None:
                # the answer on Asterisk's clock: what a message's delay is counted from
                self.calls[ch].answered_ts = ari_time(e.get("timestamp"))
            if args[:1] == ["customer"]:
                await self._answered(ch)
            elif args[:1] == ["amd"]:
                await self._amd_done(ch, args[1] if len(args) > 1 else "", args[2] if len(args) > 2 else "")
            elif args[:1] == ["agent"]:
                await self._agent_answered(ch, args[1] if len(args) > 1 else "")
        elif kind == "ChannelDestroyed":
            if ch in self.calls:
                await self.finalize(self.calls[ch], cause=e.get("cause"), sip=sip_of(e.get("tech_cause")))
            elif ch in self.agent_legs:
                await self._agent_gone(ch)
        elif kind == "ChannelHangupRequest" and ch in self.calls:
            self.calls[ch].hangup_asked = True
        elif kind == "PlaybackStarted" and (e.get("playback") or {}).get("id", "").startswith("dgp-"):
            call = self.calls.get("dgc-" + e["playback"]["id"][4:])
            if call is not None:
                await self._message_started(call, ari_time(e.get("timestamp")))
        elif kind == "PlaybackFinished" and (e.get("playback") or {}).get("id", "").startswith("dgp-"):
            call = self.calls.get("dgc-" + e["playback"]["id"][4:])
            state = e["playback"].get("state")
            if call is not None and state == "failed" and not call.hangup_asked:
                # Asterisk reports a message cut by a hangup as "failed" too; with no hangup
                # asked, nothing was played to a callee still there (a missing file...):
                # an abandoned call without its message, which the admin must hear of
                await self._message_failed(call, e["playback"].get("media_uri", "?"))
            elif call is not None:
                await self._message_state(call, "played" if state == "done" else "cut")
            # the abandon message, or a machine's, is over
            if call is not None and (call.abandoned or call.machine) and not call.finalizing:
                await quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))
        elif kind == "ChannelDtmfReceived" and ch in self.calls:
            await self._dtmf(self.calls[ch], e.get("digit"))
        elif kind == "DeviceStateChanged":
            st = e.get("device_state") or {}
            if st.get("name"):
                self.pool.device_states[st["name"]] = st.get("state", "UNKNOWN")
        elif kind == "ChannelVarset" and e.get("variable") == "DIALGUARD_DISPOSITION":
            cust = ch if ch in self.calls else self.agent_legs.get(ch)
            if cust and cust in self.calls:
                await self._disposition(self.calls[cust], e.get("value") or "")
        elif kind == "ChannelVarset" and e.get("variable") == "DIALGUARD_SUBJECTS":
            cust = ch if ch in self.calls else self.agent_legs.get(ch)
            if cust and cust in self.calls:
                self._subjects(self.calls[cust], e.get("value") or "")

    async def _answered(self, ch: str) -> None:
        call = self.calls.get(ch)
        if call is None:  # not ours (or already finalized): do not leave it up
            await quiet(self.ari.delete(f"channels/{ch}"))
            return
        call.state = "answered"
        call.answered_at = time.monotonic()
        self.stats["answered"] += 1
        answered = datetime.now(UTC)
        camp = self.campaign_of(call.campaign)
        if camp is None or not camp.amd:  # before anything else: this dialer may die any moment now
            await self._dead_man(call, True)
        if call.max_duration_s:
            call.deadline = answered + timedelta(seconds=call.max_duration_s)
            self._arm_deadline(call)
        # the deadline is stored so that a restarted dialer still cuts the call in time
        await self.store.update_call(ch, state="answered", answered_at=answered, hangup_deadline=call.deadline)
        if camp is not None and camp.amd and call.amd is None:
            call.amd = "pending"
            try:
                # leaving Stasis for the dialplan: keep this channel's events (its hangup)
                await self.ari.post(f"applications/{self.cfg.app}/subscription", eventSource=f"channel:{ch}")
                await self.ari.post(f"channels/{ch}/variable", variable="DIALGUARD_STASIS_APP", value=self.cfg.app)
                await self.ari.post(f"channels/{ch}/continue", context="dialguard-amd", extension="s", priority=1)
                return
            except AriClosed:  # stopping: the next dialer adopts the answered call
                return
            except (AriError, AriUnavailable) as exc:  # no detection: treated as a person
                log.warning("call %s: AMD not started (%s): offered to an agent", ch, exc)
                call.amd = "NOTSTARTED"
        self._offer(call)

    def _offer(self, call: Call) -> None:
        """The customer is a person (or AMD is off): an agent within the bridge timeout."""
        call.tasks.append(asyncio.create_task(self._bridge_deadline(call)))
        # a task of its own: waiting for an agent must not hold up this channel's events
        call.tasks.append(asyncio.create_task(self._connect_agent(call)))

    async def _amd_done(self, ch: str, status: str, cause: str) -> None:
        """Back from AMD() in the dialplan. A machine is never bridged: hung up, or the
        campaign's message played first. Anything else (HUMAN, NOTSURE) is offered to an
        agent, the bridge timeout counted from now (the end of the greeting)."""
        call = self.calls.get(ch)
        if call is None or call.finalizing:
            await quiet(self.ari.delete(f"channels/{ch}"))
            return
        call.amd = status or "NOTSURE"
        await self.store.update_call(ch, amd_status=call.amd, amd_cause=cause[:64] or None)
        if call.amd != "MACHINE":
            call.answered_at = time.monotonic()
            self._offer(call)
            return
        call.machine = True
        self.stats["machines"] += 1
        camp = self.campaign_of(call.campaign)
        log.info("call %s: answering machine (%s)", ch, cause)
        if camp is not None and camp.amd_action == "message" and camp.amd_media:
            await self._play_message(call, "machine", camp.amd_media)

            async def hang_later():  # PlaybackFinished hangs up; this bounds a stuck playback
                await asyncio.sleep(self.cfg.amd_media_max_s)
                await quiet(self.ari.delete(f"channels/{ch}", reason="normal"))
            call.tasks.append(asyncio.create_task(hang_later()))
            return
        await quiet(self.ari.delete(f"channels/{ch}", reason="normal"))

    async def _dead_man(self, call: Call, armed: bool) -> None:
        """The customer's TIMEOUT(absolute): armed at the answer to the bridge timeout plus
        `fallback_margin_s`, cleared once this dialer bridged or abandoned the call. If the
        dialer dies in between, Asterisk ends Stasis at that moment and the context's `T`
        extension plays the campaign's message and hangs up (abandoned lawfully, within
        2 s of the answer), instead of silence until the next dialer starts."""
        if self.cfg.fallback_margin_s <= 0:
            return
        if armed:
            left = call.answered_at + self.cfg.bridge_timeout_s + self.cfg.fallback_margin_s - time.monotonic()
            value = f"{max(0.05, left):.3f}"
        elif not call.dead_man:
            return
        else:
            value = "0"
        call.dead_man = armed
        await self._set_var(call.channel_id, "TIMEOUT(absolute)", value)

    async def _set_var(self, channel: str, name: str, value: str) -> None:
        """A channel variable whose post may fail quietly: the channel is already gone."""
        await quiet(self.ari.post(f"channels/{channel}/variable", variable=name, value=value))

    async def _limit_in_asterisk(self, call: Call) -> None:
        """At the agent's answer the dead man gives way to the call's maximum duration,
        kept by Asterisk itself on both legs (TIMEOUT(absolute), LIMIT_MARGIN_S after
        this dialer's own cut): a dialer that dies during the conversation, not taken
        over in time, cannot let the call run past its limit. The customer's leg then
        leaves Stasis for the `T` extension, which hangs up (DG_CUT_AT_LIMIT); the
        agent's, originated into Stasis, is hung up as it leaves. No limit: disarmed."""
        if call.deadline is None:
            await self._dead_man(call, False)
            return
        left = (call.deadline - datetime.now(UTC)).total_seconds() + LIMIT_MARGIN_S
        value = f"{max(0.05, left):.3f}"
        call.dead_man = False
        # the timeout before the flag: the dead man (abandon message) disarmed first
        await self._set_var(call.channel_id, "TIMEOUT(absolute)", value)
        await self._set_var(call.channel_id, "DG_CUT_AT_LIMIT", "1")
        if call.agent_channel:
            await self._set_var(call.agent_channel, "TIMEOUT(absolute)", value)

    async def _connect_agent(self, call: Call) -> None:
        """Lease a free agent, waiting for one until the bridge deadline leaves too
        little time to answer; then bridge the customer and call the agent."""
        ch = call.channel_id
        if not call.dead_man:  # back from AMD: armed from the end of the analysis
            await self._dead_man(call, True)
        agent = await self.pool.claim(call)
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
            agent = await self.pool.claim(call)
        if call.abandoned or call.finalizing:  # the deadline or the hangup came meanwhile
            await self.pool.free_agent_of(ch)
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
        except AriClosed:  # stopping: the next dialer adopts the call and its agent's lease
            return
        except (AriError, AriUnavailable) as exc:
            log.warning("call %s: cannot reach agent %s: %s", ch, agent.name, exc)
            await self._abandon(call)

    async def _agent_answered(self, ach: str, customer: str) -> None:
        call = self.calls.get(customer)
        if call is None or call.abandoned or call.finalizing or call.agent_channel != ach:
            await quiet(self.ari.delete(f"channels/{ach}"))
            return
        # first: the customer must stay in Stasis for the agent (the dead man disarmed)
        await self._limit_in_asterisk(call)
        try:
            await self.ari.post(f"bridges/{call.bridge_id}/addChannel", channel=ach)
        except (AriError, AriUnavailable) as exc:
            log.warning("call %s: agent leg not bridged: %s", customer, exc)
            return
        if call.abandoned or call.finalizing:  # the deadline fired meanwhile
            await quiet(self.ari.delete(f"channels/{ach}"))
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
        await self._dead_man(call, False)  # our own message from here
        if call.agent_channel:
            await quiet(self.ari.delete(f"channels/{call.agent_channel}"))
        if call.bridge_id:
            await quiet(self.ari.post(f"bridges/{call.bridge_id}/removeChannel", channel=call.channel_id))
        media = self.abandon_media(call.campaign)
        if media:
            # hung up when the message ends (PlaybackFinished), at the latest after abandon_media_max_s
            await self._play_message(call, "abandon", media)

        async def hang_later():
            await asyncio.sleep(self.cfg.abandon_media_max_s)
            await quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))
        call.tasks.append(asyncio.create_task(hang_later()))

    async def _play_message(self, call: Call, kind: str, media: str) -> None:
        """Play the message the call owes its callee (`abandon`, or a `machine`'s); what
        becomes of it is written to the call's row (dialguard/campaigns/sql/240)."""
        call.message_due = kind
        try:
            await self.ari.post(f"channels/{call.channel_id}/play/dgp-{call.channel_id[4:]}", media=media)
        except AriError as exc:
            if exc.status == 404 or call.hangup_asked:  # the callee is gone: nothing to play to
                return
            # refused (a media URI Asterisk does not take...): no PlaybackFinished will
            # come, so the callee is not held in silence until the bound
            await self._message_failed(call, media)
            await quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))
        except AriUnavailable as exc:  # not known whether it plays: the bound hangs up
            log.warning("call %s: its %s message was asked for, Asterisk did not answer: %s",
                        call.channel_id, kind, exc)

    async def _message_started(self, call: Call, at: datetime | None) -> None:
        delay = None
        if at is not None and call.answered_ts is not None:
            delay = max(0, round((at - call.answered_ts).total_seconds() * 1000))
        await self._message_state(call, "started", message_started_at=at, message_delay_ms=delay)

    async def _message_state(self, call: Call, state: str, **more) -> None:
        call.message_state = state
        try:
            await self.store.update_call(call.channel_id, message_state=state, **more)
        except Exception as exc:  # noqa: BLE001 - the call's end writes its final state again
            log.warning("call %s: its message's state (%s) not recorded: %s", call.channel_id, state, exc)

    async def _message_failed(self, call: Call, media: str) -> None:
        what = call.message_due or ("abandon" if call.abandoned else "machine")
        self.stats["message_failed"] += 1
        m.MESSAGE_FAILED.labels(call.campaign, what).inc()
        log.error("call %s (campaign %s): its %s message could not be played (%s): "
                  "hung up without it; check that Asterisk has the media", call.channel_id,
                  call.campaign, what, media)
        await self._message_state(call, "failed")

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
        camp = self.campaign_of(call.campaign)
        key = camp.optout_key if camp else "9"
        if digit != key or call.opted_out:
            return
        call.opted_out = True
        log.info("call %s: opt-out key pressed; number opted out", call.channel_id)
        # PostgreSQL first (the lead is never dialed again), then the engine (every
        # campaign, the dialplan too): retried in the background while Redis is down,
        # so this channel's events (its hangup) are not held up.
        await self._retry(lambda: self.store.release_lead(call.lead["id"], state="blocked", result="opted_out"))
        t = asyncio.create_task(self._retry(
            lambda: self.engine.opt_out(call.lead["number"], party=call.lead.get("party"))))
        self._background.add(t)
        t.add_done_callback(self._background.discard)
        await quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))

    def _subjects(self, call: Call, value: str) -> None:
        """The other subjects the agent says were discussed (the last value set wins)."""
        from dialguard.subjects import parse_subjects

        try:
            call.subjects = parse_subjects(value)
        except ValueError as exc:
            log.warning("call %s: bad DIALGUARD_SUBJECTS: %s", call.channel_id, exc)

    async def _disposition(self, call: Call, value: str) -> None:
        try:
            disp, at = parse_disposition(value)
        except ValueError as exc:
            log.warning("call %s: bad DIALGUARD_DISPOSITION %r: %s", call.channel_id, value, exc)
            return
        # stored at once (the same as `dialguard campaign disposition`), applied at the end of the call
        await self._retry(lambda: self.store.set_disposition(call.lead["id"], disp, at))

    async def _agent_gone(self, ach: str) -> None:
        cust = self.agent_legs.pop(ach, None)
        for a in self.pool.agents.values():
            if a.channel == ach:
                await self.pool.free_agent_of(a.call)
        call = self.calls.get(cust) if cust else None
        if call and call.state == "bridged" and not call.finalizing:  # the agent hung up: end the call
            await quiet(self.ari.delete(f"channels/{call.channel_id}", reason="normal"))

    async def finalize(self, call: Call, cause: int | None, vanished: bool = False, failed: bool = False,
                       sip: int | None = None) -> None:
        if call.finalizing:
            return
        call.finalizing = True
        for t in call.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        ended_at = datetime.now(UTC)
        # What the dialplan saw (extensions_dialguard.conf [dialguard-dialer]): needed when
        # the call may have been answered, or may have ended, while no dialer was watching.
        trace = None
        if not failed and (vanished or call.resumed or call.state in ("reserved", "originated")):
            try:
                trace = await self.fallback_trace(call.channel_id)
            except AriUnavailable:
                trace = None
        # a call never answered: its cause from the hangup handler if we never saw it end
        # (vanished: rejected before watch_call subscribed); that global deleted either way
        end_noted = (not failed and trace is None and call.answered_at is None
                     and (vanished or (call.originated_at is not None
                                       and time.monotonic() - call.originated_at < END_VAR_WINDOW_S)))
        if end_noted and vanished and cause is None:
            cause = await self.end_cause(call.channel_id)
            if cause is not None:
                vanished = False  # its end is known after all
        answered_wall = None
        if trace is not None:
            answered_wall, ended_at, how = trace
            if how == "fallback" and call.bridged_at is None:  # answered with no dialer: abandoned
                if not call.abandoned:
                    call.abandoned = True
                    self.stats["abandoned"] += 1
                log.info("call %s: answered while no dialer could take it, abandoned by the dialplan "
                         "(its message, then hangup)", call.channel_id)
            elif call.answered_at is not None:
                answered_wall = None  # answered under our eyes: its stored answer time stands
        talk_s = 0
        if call.bridged_at is not None:
            # to the end Asterisk saw (a call that ended while no dialer ran is not inflated)
            end_mono = time.monotonic() - max(0.0, (datetime.now(UTC) - ended_at).total_seconds())
            talk_s = max(0, int(end_mono - call.bridged_at))
            result = "conversation"
        elif call.machine:
            result = "amd"
        elif call.abandoned:
            result = "abandoned"
        elif call.answered_at is not None and call.resumed:
            # answered, then its dialer stopped before any agent came: nobody took the call
            result = "abandoned"
        elif call.answered_at is not None or answered_wall is not None:
            result = "answered"
        elif failed:
            result = "failed"
        elif vanished:
            result = "no_answer"  # unknown: counted, nothing taken back out of the caps
        else:
            result = not_answered_result(cause)
        extra = {"answered_at": answered_wall} if answered_wall is not None else {}
        if call.message_due:  # ended before its PlaybackFinished: cut, or gone before it began
            call.message_state = extra["message_state"] = message_at_end(call.message_due, call.message_state)
        by_dialplan = call.to_fallback or (trace is not None and trace[2] == "fallback")
        if by_dialplan and not failed and (msg := await self.dialplan_message(call.channel_id)) is not None:
            call.message_state = msg["message_state"]
            extra.update(msg)
        # the outcome must reach PostgreSQL: retried while it is down (never dropped);
        # False: the call was ended before (e.g. by a dialer that died after recording
        # it): its outcome is not reported a second time
        first = await self._retry(lambda: self.store.end_call(call.channel_id, result=result, hangup_cause=cause,
                                                              talk_s=talk_s, ended_at=ended_at, **extra))
        if end_noted:
            await self.delete_global(end_var(call.channel_id))
        if call.answered_at is not None or trace is not None:  # the dialplan left a trace: clear it
            await self.delete_global(fallback_var(call.channel_id))
        if by_dialplan:
            await self.delete_global(message_var(call.channel_id))
        # free the agent and the bridge
        if call.agent_channel:
            self.agent_legs.pop(call.agent_channel, None)
            await quiet(self.ari.delete(f"channels/{call.agent_channel}"))
        await self.pool.free_agent_of(call.channel_id)
        if call.bridge_id:
            await quiet(self.ari.delete(f"bridges/{call.bridge_id}"))
        if first:
            await self._report(call.channel_id, result, talk_s, cause, sip if result not in ANSWERED else None,
                               subjects=call.subjects)
            await self._retry(lambda: self._reschedule(call, result))
        call.state = "ended"
        self.calls.pop(call.channel_id, None)

    async def _report(self, channel_id: str, result: str, talk_s: int, cause: int | None,
                      sip: int | None = None, subjects: list | None = None) -> None:
        from dialguard.subjects import report_other_subjects

        outcome = Outcome(result=result, talk_s=talk_s, hangup_cause=cause_of(cause), sip_code=sip)
        try:
            await self.engine.report_outcome(channel_id, outcome)
        except Exception as exc:  # noqa: BLE001 - left unreported: retried at the next reconcile
            log.warning("outcome of %s not reported yet: %s", channel_id, exc)
            return
        if subjects:
            try:
                await report_other_subjects(self.engine, channel_id, outcome, subjects)
            except Exception as exc:  # noqa: BLE001 - the call's own outcome stands
                log.warning("call %s: other subjects %s not reported: %s", channel_id, subjects, exc)
        self.stats["reported"] += 1
        await self.store.update_call(channel_id, outcome_reported=True)

    async def _reschedule(self, call: Call, result: str) -> None:
        lead = await self.store.lead_for_call(call.channel_id)
        if lead is None or lead["state"] == "blocked":
            return
        camp = self.campaign_of(call.campaign) or await self.store.campaign(call.campaign)
        if lead["disposed"]:  # the agent's word, given during this call (channel variable or CLI)
            follow = lead["disposition"] == "follow-up"
            await self.store.release_lead(lead["id"], state="pending" if follow else "done",
                                          next_at=lead["follow_up_at"] if follow else None, result=result)
            return
        rules = parse_rules(camp.retry_rules)
        same = await self.store.results_of_lead(lead["id"], result) if result in rules else 0
        nxt = next_try(rules, result, with_result=same, attempts=lead["attempts"],
                       max_attempts=camp.max_attempts, retry_after_s=camp.retry_after_s,
                       now=await self.engine.now())
        if nxt is None:
            await self.store.release_lead(lead["id"], state="done", result=result)
        else:
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
