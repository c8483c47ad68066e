"""The dialer's agents: who may be offered a call now (docs/DIALER.md, "Agents
across campaigns and dialers").

An agent is offered a call only under its lease in Redis (ari_app/leases.py,
shared by every dialer and campaign), and not while Asterisk reports its device
in use (a call outside the dialer); pacing counts only such free agents. A lease
whose holder stopped its heartbeat (a dialer that died) is recovered once
Asterisk shows the agent off that call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

from ari_app import metrics as m
from ari_app.calls import Call, quiet
from ari_app.client import AriError, AriUnavailable
from ari_app.leases import BUSY_DEVICE_STATES, AgentLeases, Lease
from ari_app.pacing_modes import AgentNow, agent_state

log = logging.getLogger("ari_app.agents")


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
    busy_since: float = 0.0  # monotonic: when it took its current call
    wrap_s: float = 0.0  # wrap-up after its last call (that call's campaign's wrap_up_s)

    @property
    def free(self) -> bool:
        return self.call is None


class AgentPool:
    """This dialer's agents: their leases (heartbeat, claim, release, recovery of a
    dead holder's) and device states."""

    def __init__(self, agents: dict[str, str], devices: dict[str, str] | None, *, redis, keys, owner: str,
                 lease_s: float, view_s: float, app: str, stats: dict, outages: dict, background: set):
        devices = devices or {}
        unknown = sorted(set(devices) - set(agents))
        if unknown:
            raise ValueError(f"agent devices for unknown agents: {', '.join(unknown)}")
        if lease_s < 1:
            raise ValueError(f"agent lease {lease_s}s: at least 1 s (heartbeat every third)")
        self.agents = {n: Agent(n, d, device=devices.get(n) or default_device(d)) for n, d in agents.items()}
        self.owner = owner
        self.lease_s, self.view_s, self.app = lease_s, view_s, app
        self.leases = AgentLeases(redis, keys, owner, lease_s)
        self.lease_view: dict[str, Lease | None] | None = None  # None: unknown (Redis down): no agent free
        self.device_states: dict[str, str] = {}
        self.ari = None  # set by the dialer once its ARI client exists
        self.stats, self.outages, self._background = stats, outages, background
        self._last_view = self._last_beat = 0.0
        self._reaping: set[str] = set()
        self._rr = 0
        self.admin: dict[str, str] = {}  # the CLI's word (dialer_agents); none: ready
        self.wrap_of: Callable[[str], float] = lambda cid: 0.0  # a call's wrap-up (set by the dialer)

    def device_busy(self, a: Agent) -> bool:
        return a.device is not None and self.device_states.get(a.device) in BUSY_DEVICE_STATES

    def available(self, a: Agent) -> bool:
        """Free to be offered a call: not on one of ours, no lease held by anyone (as last
        read from Redis), and its device not in use (a call outside the dialer)."""
        if a.call is not None or self.lease_view is None or self.device_busy(a):
            return False
        return self.lease_view.get(a.name) is None and self.on_duty(a)

    def on_duty(self, a: Agent) -> bool:
        """Ready by the CLI's word and not in wrap-up."""
        if self.admin.get(a.name, "ready") != "ready":
            return False
        return not (a.idle_since and time.monotonic() < a.idle_since + a.wrap_s)

    def now_of(self, a: Agent, mono: float) -> AgentNow:
        """The agent as pacing sees it (ari_app/pacing_modes.agent_state)."""
        lease = None if self.lease_view is None else self.lease_view.get(a.name)
        on_call = a.call is not None or self.lease_view is None or lease is not None
        st = agent_state(self.admin.get(a.name, "ready"), on_call=on_call,
                         device=self.device_states.get(a.device) if a.device else None,
                         last_end=a.idle_since if a.idle_since else None, wrap_s=a.wrap_s, now=mono)
        if st == "wrap_up":
            return AgentNow(st, since=a.idle_since, until=a.idle_since + a.wrap_s)
        return AgentNow(st, since=a.busy_since if st == "on_call" else 0.0)

    def free_count(self) -> int:
        return sum(1 for a in self.agents.values() if self.available(a))

    def intended(self) -> str:
        """The agent named in the next decision: the free ones in turn."""
        names = sorted(self.agents)
        free = [n for n in names if self.available(self.agents[n])] or names
        self._rr += 1
        return free[self._rr % len(free)]

    async def refresh(self) -> None:
        """Heartbeat of our leases (every third of the lease time) and, every
        `view_s`, every agent's lease as Redis has it (pacing counts on it);
        stale leases of a dead holder are checked in Asterisk and recovered."""
        now = time.monotonic()
        if now - self._last_beat >= self.lease_s / 3:
            held = {a.name: (a.call, a.channel or "") for a in self.agents.values() if a.call and a.leased}
            try:
                for name in await self.leases.refresh(held):
                    self.agents[name].leased = False
                    self.stats["leases_lost"] += 1
                    log.error("agent %s: lease of call %s lost (not refreshed within %.0fs?)", name,
                              held[name][0], self.lease_s)
                self._last_beat = now
            except Exception as exc:  # noqa: BLE001 - Redis down: retried next tick
                self.outages["Redis"].failed(f"agent lease heartbeat: {exc}")
        if now - self._last_view < self.view_s:
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
        m.AGENTS_FREE.set(self.free_count())

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
                await quiet(self.ari.delete(f"channels/{lease.leg}"))
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

    async def claim(self, call: Call) -> Agent | None:
        """An agent for this answered call, leased in Redis (atomic: whatever dialer or
        campaign asks at the same time, one call gets the agent). The decision's agent
        first, then the agent idle longest. Redis decides, not our view of it (read every
        `view_s`): agents the view shows leased are tried too, a few per round."""
        view = self.lease_view or {}
        local = sorted((a for a in self.agents.values() if a.call is None and not self.device_busy(a)
                        and self.on_duty(a) and (call.owner is None or a.name == call.owner)),
                       key=lambda a: (a.name != call.agent, a.idle_since))
        cands = [a for a in local if view.get(a.name) is None] + [a for a in local if view.get(a.name)][:3]
        leg = f"dga-{call.channel_id[4:]}"
        for a in cands:
            if a.call is not None or self.device_busy(a):  # taken while we awaited
                continue
            try:
                held = await self.leases.claim(a.name, call.channel_id, leg)
            except Exception as exc:  # noqa: BLE001 - Redis down: no agent (never two calls)
                log.warning("call %s: agent lease not claimed: %s", call.channel_id, exc)
                return None
            if held is None:
                if a.call is not None:  # cannot happen (Redis arbitrates), but never share one
                    await self.release_lease(a.name, call.channel_id)
                    continue
                a.call = call.channel_id
                a.leased = True
                a.busy_since = time.monotonic()
                if self.lease_view is not None:
                    self.lease_view[a.name] = Lease(self.owner, call.channel_id, leg, 0)
                return a
            if self.lease_view is not None:
                self.lease_view[a.name] = held
        return None

    async def adopt_lease(self, call: Call) -> None:
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

    async def release_lease(self, name: str, cid: str) -> None:
        try:
            await self.leases.release(name, cid)
        except Exception as exc:  # noqa: BLE001 - Redis down: the lease goes stale and is recovered
            log.warning("agent %s: lease of call %s not released (%s): recovered once stale", name, cid, exc)
        if self.lease_view is not None:
            cur = self.lease_view.get(name)
            if cur is not None and cur.call == cid:
                self.lease_view[name] = None

    async def free_agent_of(self, cid: str) -> None:
        """The call `cid` no longer needs its agent: free it here and in Redis; its wrap-up
        (the campaign's wrap_up_s, after a conversation) starts now."""
        for a in self.agents.values():
            if a.call == cid:
                a.wrap_s = self.wrap_of(cid)
                a.leased = False
                a.call = None
                a.channel = None
                a.idle_since = time.monotonic()
                # released even when not taken over yet (an adopted call that ended while no
                # dialer ran): compared on the call id, it never frees another call's lease
                await self.release_lease(a.name, cid)

    async def watch_devices(self) -> None:
        """Subscribe to the agents' device states (again after every reconnect: an
        Asterisk restart forgets subscriptions) and read their current state."""
        for dev in sorted({a.device for a in self.agents.values() if a.device}):
            try:
                await self.ari.post(f"applications/{self.app}/subscription", eventSource=f"deviceState:{dev}")
                st = await self.ari.get("deviceStates/" + quote(dev, safe=""))
                self.device_states[dev] = st.get("state", "UNKNOWN")
            except AriError as exc:
                log.warning("device %s: state not watched: %s", dev, exc)
