"""Number events: a call's outcome, opt-out, complaint, consent, DNC entries;
each applied by one Lua script with its audit record."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from redis.exceptions import ResponseError

from dialguard import ids, metrics
from dialguard.decision import scripts
from dialguard.decision.models import Outcome
from dialguard.ids import new_id
from dialguard.numbers import parse_number, short_hash
from dialguard.rules import MOVABLE_OUTCOMES
from dialguard.store import Store, from_ms, log, ms
from dialguard.timeutil import UTC

CONVERSATION = "conversation"
ABANDON = {"abandoned": "ab", "amd": "am"}


class NumberEvents(Store):
    # -- outcomes and events ------------------------------------------------------
    async def report_outcome(self, call_id: str, outcome: Outcome, now: datetime | None = None,
                             subject: str | None = None) -> bool:
        """Apply a call's outcome. True if it matched a recorded allowed call.

        `subject`: for a conversation that covered another subject (debt) than the
        call's own, report once per subject; each starts that subject's quiet period.
        """
        from dialguard.callerid_health import entry_of, lua_settings

        now = (now or await self.now()).astimezone(UTC)
        payload = json.dumps({"call_id": call_id, "at": ms(now), "res": outcome.result,
                              "talk_s": outcome.talk_s, "cause": outcome.hangup_cause, "sip": outcome.sip_code,
                              "subject": subject, "node": self.settings.node}, separators=(",", ":"))
        entry = entry_of(outcome.result, outcome.talk_s, outcome.sip_code, outcome.hangup_cause, ms(now))
        # at least: outcome.lua keeps the quiet logs as long as the call's own rules need (its record)
        qttl = str(max(self.policy.retention_ms, self.active_policy.retention_ms, getattr(self, "_retention_ms", 0)))
        keys = [self.keys.call(call_id), self.keys.audit]
        args = [
            outcome.result, str(ms(now)), "1" if outcome.result in MOVABLE_OUTCOMES else "0",
            "1" if outcome.result == CONVERSATION else "0", ABANDON.get(outcome.result, ""),
            qttl, payload, new_id(),
            ("cv:s:" + short_hash(subject)) if subject and outcome.result == CONVERSATION else "",
            entry.encode(), self.keys.prefix, new_id(), str(int(time.time() * 1000)), self.settings.node or "",
        ]
        # outcome.lua with the health settings of the rules in effect written in: it need not decode them
        script = scripts.outcome_with(lua_settings(self.active_policy))
        fast = getattr(self, "fast", None)
        if fast is not None:
            # One per call: through the decisions' pipelined client (redis-py's
            # command costs several times its CPU), with a deadline of its own
            # (an outcome is not a decision: no need to fail it in milliseconds).
            # (imported here: an admin command, which has no such client, loads nothing of the hot path)
            from dialguard.redisclient import RedisReplyError

            deadline = asyncio.get_running_loop().time() + max(2.0, self.settings.redis_timeout_ms / 1000)
            try:
                res = await fast.evalsha(script, keys, args, deadline=deadline)
            except RedisReplyError as exc:  # the error type callers know (redis-py's)
                raise ResponseError(str(exc)) from None
        else:
            res = await script(self.redis, keys, args)
        if len(res) > 2 and res[2]:
            self._health_cooldown(res[2])
        if int(res[0]) == 4:  # applied and audited; only the caller ID's health figures missed this outcome
            self._health_error(f"outcome of {call_id}", res[3])
        return int(res[0]) in (1, 3, 4)

    def _health_error(self, what: str, raw) -> None:
        """outcome.lua / event.lua applied `what`, but its caller-ID health part failed: alert."""
        err = raw.decode() if isinstance(raw, bytes) else str(raw)
        metrics.HEALTH_ERRORS.inc()
        log.error("%s applied, but its caller-ID health part failed in Redis: %s", what, err[:500])

    def _health_cooldown(self, raw) -> None:
        """outcome.lua cooled a caller ID down on its health: alert (log + metric)."""
        try:
            why = json.loads(raw)
        except ValueError:
            log.error("caller-ID health cool-down with an unreadable record: %r", raw[:200])
            return
        for t in why.get("triggered", []):
            metrics.HEALTH_COOLDOWNS.labels(rule=f"{t.get('pack') or ''}/{t.get('rule')}".lstrip("/")).inc()
        log.warning("caller-ID health: cool-down until %s after %s: %s",
                    from_ms(float(why["until"])).isoformat(),
                    f"decision {why['did']}" if why.get("did") else f"event {why.get('event')}",
                    "; ".join(f"{t.get('rule')} ({t.get('metric')} {t.get('value')} vs {t.get('threshold')}"
                              f"{', pool median ' + str(round(t['pool_median'], 3)) if t.get('pool_median') else ''},"
                              f" {t.get('calls')} calls)" for t in why.get("triggered", [])))

    async def _event(self, kind: str, number: str, op: str, field: str, value: str | None,
                     now: datetime | None, campaign: str | None = None, actor: str | None = None,
                     why: str = "") -> bool:
        """value None: the event's time (the rules clock), as `counters rebuild` restores it.
        actor: the authenticated identity (dialguard.authz.actor_of); default the OS user, as admin records."""
        e164 = parse_number(number, self.default_region)
        if not e164.valid:
            from dialguard.numbers import NumberError
            raise NumberError(f"{number!r}: {e164.problem}")
        tag = self.keys.number_tag(e164.e164)
        return await self._apply(kind, op, field, value, now, actor, why, campaign,
                                 [self.keys.flags(tag), self.keys.campaign_dnc(tag), self.keys.audit,
                                  self.keys.last_caller(tag)],
                                 {"n": tag, "ne": self.sealer.seal(e164.e164)})

    async def _party_event(self, kind: str, party: str, op: str, field: str, value: str | None,
                           now: datetime | None, actor: str | None = None, why: str = "") -> bool:
        """An opt-out, complaint or consent (or its revocation) of a person (SPEC §2
        `party`): it holds at every number decided with that party. Audited as an
        event whose number_hash is the party's keyed hash ("party": true in its record).
        value None: the event's time. A new complaint or opt-out counts against the
        caller ID of the last allowed call with the party, as a number's does."""
        if not party:
            raise ValueError("a party id is needed")
        ptag = self.keys.party_tag(party)
        return await self._apply(kind, op, field, value, now, actor, why, None,
                                 [self.keys.party_flags(ptag), self.keys.party_prefix(ptag) + ":dncc",
                                  self.keys.audit, self.keys.party_last_caller(ptag)],
                                 {"n": ptag, "party": True})

    async def _apply(self, kind: str, op: str, field: str, value: str | None, now: datetime | None,
                     actor: str | None, why: str, campaign: str | None, keys: list[str], who: dict) -> bool:
        """event.lua on a number's or a party's keys, audited in the same script."""
        now = (now or await self.now()).astimezone(UTC)
        if value is None:
            value = str(ms(now))
        payload = json.dumps({"kind": kind, **who, "at": ms(now), "campaign": campaign, "node": self.settings.node,
                              "actor": actor or ids.actor(), **({"why": why} if why else {})},
                             separators=(",", ":"))
        res = await scripts.EVENT(self.redis, keys,
                                  [op, field, value, payload, new_id(), kind, self.keys.prefix, str(ms(now)),
                                   new_id(), str(int(time.time() * 1000)), self.settings.node or ""])
        if len(res) > 1 and res[1]:
            self._health_cooldown(res[1])  # a complaint / opt-out rule cooled the caller ID down
        if len(res) > 2:  # the fact is set and audited; its caller ID's health part failed
            self._health_error(f"{kind} {op}", res[2])
        return int(res[0]) == 1

    async def _number_and_party(self, kind: str, op: str, field: str, value: str | None, number: str | None,
                                party: str | None, now: datetime | None, actor: str | None, why: str) -> bool:
        """The event for the person (party) and for the number, whichever are given; True if either changed."""
        changed = False
        if party:
            changed = await self._party_event(kind, party, op, field, value, now, actor, why)
        if number:
            changed = await self._event(kind, number, op, field, value, now, actor=actor, why=why) or changed
        return changed

    async def opt_out(self, number: str | None, now: datetime | None = None, party: str | None = None,
                      actor: str | None = None, why: str = "") -> bool:
        return await self._number_and_party("opt_out", "set", "optout", None, number, party, now, actor, why)

    async def complaint(self, number: str | None, now: datetime | None = None, party: str | None = None,
                        actor: str | None = None, why: str = "") -> bool:
        return await self._number_and_party("complaint", "set", "complaint", None, number, party, now, actor, why)

    async def consent(self, number: str | None, now: datetime | None = None, party: str | None = None,
                      actor: str | None = None, why: str = "") -> bool:
        """Consent of the number's subscriber, or of the person (party) at all their numbers, or both."""
        if not number and not party:
            raise ValueError("give a number, a party, or both")
        return await self._number_and_party("consent", "set", "consent", None, number, party, now, actor, why)

    async def consent_revoke(self, number: str | None, now: datetime | None = None,
                             party: str | None = None, actor: str | None = None, why: str = "") -> bool:
        if not number and not party:
            raise ValueError("give a number, a party, or both")
        return await self._number_and_party("consent_revoke", "clear", "consent", "", number, party, now, actor,
                                            why)

    async def dnc_add(self, number: str, campaign: str | None = None, now: datetime | None = None,
                      actor: str | None = None, why: str = "") -> bool:
        from dialguard.numbers import short_hash
        if campaign:
            return await self._event("dnc_add", number, "camp_add", short_hash(campaign), "", now, campaign,
                                     actor=actor, why=why)
        return await self._event("dnc_add", number, "set", "dnc", "1", now, actor=actor, why=why)

    async def dnc_remove(self, number: str, campaign: str | None = None, now: datetime | None = None,
                         actor: str | None = None, why: str = "") -> bool:
        """Remove a number from a list: its own flag and the bulk-imported list alike."""
        from dialguard.dnc import DncStore, list_name

        if campaign:
            changed = await self._event("dnc_remove", number, "camp_del", short_hash(campaign), "", now, campaign,
                                        actor=actor, why=why)
        else:
            changed = await self._event("dnc_remove", number, "clear", "dnc", "", now, actor=actor, why=why)
        tag = self.keys.number_tag(parse_number(number, self.default_region).e164)
        removed = await DncStore(self.redis, self.keys).remove(list_name(campaign), [tag])
        return changed or removed > 0
