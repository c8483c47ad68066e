"""Agents shared by every dialer: a lease per agent in Redis, and the agent's own
device state in Asterisk (docs/DIALER.md, "Agents across campaigns and dialers").

An agent (one PJSIP endpoint, several campaigns, possibly several dialer
processes) is offered a call only by the dialer that holds its lease:

- `{P}:{a:<A>}:lease` (hash, the agent's hash tag): `o` owner (dialer process),
  `c` customer channel id, `l` agent leg channel id, `hb` last heartbeat (ms,
  Redis's clock). No phone number: channel ids are `dgc-<uuid>` / `dga-<uuid>`.
- claim: one script, atomic: free (or our own call's) -> ours; held -> busy.
- the holder refreshes `hb` every lease/3 while the call lasts and deletes the
  key when the agent leg ends (compare on the call id, so a late release never
  frees someone else's lease).
- a lease whose heartbeat is older than the lease time has no live holder
  (the dialer crashed): whoever finds it asks Asterisk whether the call is still
  up. Agent leg and customer both up: the agent is really talking, still busy.
  Otherwise the leftover agent leg is hung up and the lease removed (compared on
  the stale call id and its age), so an agent is never stuck busy by a dead dialer.

The key expires `KEEP_S` after its last heartbeat, long after any call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("ari_app.leases")

# Device states of an agent on a call (or being called): not offered another one.
# UNAVAILABLE / UNKNOWN do not block: an endpoint without a registered contact
# reads UNAVAILABLE, and dialing it fails on its own (the call is then abandoned).
BUSY_DEVICE_STATES = frozenset({"INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})
KEEP_S = 6 * 3600

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS[1] lease; ARGV: owner, call, leg, keep_ms. Free, or already this call's (a dialer
# adopting a call after a restart or takeover): ours. Otherwise: who holds it.
CLAIM = _NOW + """
local cur = redis.call('HMGET', KEYS[1], 'o', 'c', 'l', 'hb')
if cur[2] and cur[2] ~= ARGV[2] then
  return {0, cur[1] or '', cur[2], cur[3] or '', now - tonumber(cur[4] or '0')}
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'c', ARGV[2], 'l', ARGV[3], 'hb', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1}
"""

# KEYS[1] lease; ARGV: stale call id, lease_ms -> 1 removed (still that call's, still stale)
REAP = _NOW + """
local cur = redis.call('HMGET', KEYS[1], 'c', 'hb')
if cur[1] ~= ARGV[1] or now - tonumber(cur[2] or '0') < tonumber(ARGV[2]) then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS[1] lease; ARGV: owner, call, leg, keep_ms -> 1 refreshed, 0 not ours any more
REFRESH = _NOW + """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'l', ARGV[3], 'hb', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] lease; ARGV: call -> 1 released, 0 not this call's
RELEASE = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True)
class Lease:
    owner: str
    call: str
    leg: str
    age_ms: int

    def stale(self, lease_ms: int) -> bool:
        return self.age_ms >= lease_ms


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class AgentLeases:
    """The Redis side: claim, refresh, release and read agent leases."""

    def __init__(self, redis, keys, owner: str, lease_s: float):
        self.redis, self.keys, self.owner = redis, keys, owner
        self.lease_ms = int(lease_s * 1000)
        self.keep_ms = max(KEEP_S * 1000, 4 * self.lease_ms)
        self._claim = redis.register_script(CLAIM)
        self._refresh = redis.register_script(REFRESH)
        self._release = redis.register_script(RELEASE)
        self._reap = redis.register_script(REAP)

    def key(self, agent: str) -> str:
        return self.keys.agent_lease(agent)

    async def claim(self, agent: str, call: str, leg: str) -> Lease | None:
        """None: the agent is ours for `call`; otherwise the lease that holds it."""
        r = await self._claim(keys=[self.key(agent)], args=[self.owner, call, leg, self.keep_ms])
        if int(r[0]) == 1:
            return None
        return Lease(_s(r[1]), _s(r[2]), _s(r[3]), int(r[4]))

    async def reap(self, agent: str, lease: Lease) -> bool:
        """Remove a stale lease (its holder is gone and Asterisk says the agent is off
        that call); False when it changed meanwhile (refreshed, or taken by someone)."""
        return bool(int(await self._reap(keys=[self.key(agent)], args=[lease.call, self.lease_ms])))

    async def refresh(self, held: dict[str, tuple[str, str]]) -> list[str]:
        """Heartbeat of every lease held ({agent: (call, leg)}); returns agents no longer ours."""
        if not held:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for agent, (call, leg) in held.items():
                await self._refresh(keys=[self.key(agent)], args=[self.owner, call, leg, self.keep_ms], client=p)
            res = await p.execute()
        return [a for a, ok in zip(held, res) if not int(ok)]

    async def release(self, agent: str, call: str) -> bool:
        return bool(int(await self._release(keys=[self.key(agent)], args=[call])))

    async def view(self, agents: list[str]) -> dict[str, Lease | None]:
        """Every agent's lease as Redis has it now (age on Redis's clock)."""
        if not agents:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            p.time()
            for a in agents:
                p.hmget(self.key(a), "o", "c", "l", "hb")
            res = await p.execute()
        sec, usec = res[0]
        now = int(sec) * 1000 + int(usec) // 1000
        out: dict[str, Lease | None] = {}
        for a, (o, c, leg, hb) in zip(agents, res[1:]):
            out[a] = None if c is None else Lease(_s(o or b""), _s(c), _s(leg or b""), now - int(hb or 0))
        return out
