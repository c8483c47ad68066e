"""`dialguard simulate`: replay a scenario against rules in an isolated namespace (SPEC §5).

The replay runs the live engine code against the configured Redis, under a
fresh key prefix that is deleted afterwards: live counters are never touched.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from dialguard.calendar_file import CalendarFile, CalendarFileError
from dialguard.calendars import CalendarStore, Calendars, load_yaml
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import OUTCOME_RESULTS, DecisionRequest, Outcome
from dialguard.location import parse_postal_code, parse_region
from dialguard.numbers import parse_number
from dialguard.rules import Policy, RulesError
from dialguard.timeutil import UTC



class ScenarioError(ValueError):
    pass


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttemptEv(_M):
    number: str
    campaign: str = "default"
    agent: str = "agent"
    caller_id: str | None = None
    subject: str | None = None
    region: str | None = None  # ISO 3166-2 of where the callee lives (SPEC §2)
    postal_code: str | None = None
    party: str | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, v):
        return parse_region(v)

    @field_validator("postal_code")
    @classmethod
    def _postal(cls, v):
        return parse_postal_code(v)


class OutcomeEv(_M):
    number: str
    subject: str | None = None
    result: Literal["conversation", "answered", "voicemail", "no_answer", "busy", "failed", "abandoned", "amd"]
    talk_s: int = Field(default=0, ge=0)
    hangup_cause: int | None = Field(default=None, ge=0, le=127)  # Q.850, e.g. 21 call rejected
    sip_code: int | None = Field(default=None, ge=100, le=699)  # the trunk's SIP response, e.g. 403


class NumberEv(_M):
    number: str | None = None
    campaign: str | None = None
    party: str | None = None  # opt_out / complaint / consent: the person, at all their numbers (SPEC §5)

    @model_validator(mode="after")
    def _who(self):
        if not self.number and not self.party:
            raise ValueError("give number, party or both")
        return self


class Event(_M):
    at: datetime
    attempt: AttemptEv | None = None
    outcome: OutcomeEv | None = None
    opt_out: NumberEv | None = None
    complaint: NumberEv | None = None
    consent: NumberEv | None = None
    dnc_add: NumberEv | None = None
    dnc_remove: NumberEv | None = None

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime):
        if v.tzinfo is None:
            raise ValueError("time needs a UTC offset, e.g. 2025-03-03T09:15:00-05:00")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _one(self):
        kinds = [k for k in ("attempt", "outcome", "opt_out", "complaint", "consent", "dnc_add", "dnc_remove")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("each event has `at` and exactly one of attempt, outcome, opt_out, "
                             "complaint, consent, dnc_add, dnc_remove")
        ev = getattr(self, kinds[0])
        if kinds[0] in ("dnc_add", "dnc_remove") and (ev.party is not None or not ev.number):
            raise ValueError(f"{kinds[0]} needs a number and takes no party (opt_out, complaint and consent "
                             "take a party)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("attempt", "outcome", "opt_out", "complaint", "consent", "dnc_add", "dnc_remove")
                    if getattr(self, k) is not None)


class Scenario(_M):
    rules: str | list[str]
    default_region: str | None = None
    unapproved_campaigns: list[str] = []
    unapproved_caller_ids: list[str] = []
    # calendar files (SPEC §9), loaded into the replay's namespace only
    calendars: list[str] = []
    events: list[Event] = Field(default_factory=list)
    _calendar_files: tuple[CalendarFile, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _ordered(self):
        for i in range(1, len(self.events)):
            if self.events[i].at < self.events[i - 1].at:
                raise ValueError(f"events must be in time order: event {i} is earlier than event {i - 1}")
        return self


def load_scenario(path: str | Path) -> tuple[Scenario, Policy]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping with rules and events")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{path}: {problems}") from None
    refs = [sc.rules] if isinstance(sc.rules, str) else sc.rules
    try:
        policy = Policy.load(refs, base_dir=path.parent)
    except RulesError as exc:
        raise ScenarioError(f"{path}: rules: {exc}") from None
    sc._calendar_files = _calendar_files(path, sc.calendars)
    return sc, policy


def _calendar_files(path: Path, names: list[str]) -> tuple[CalendarFile, ...]:
    files: dict[tuple[str, int], str] = {}
    out = []
    for name in names:
        p = Path(name) if Path(name).is_absolute() else path.parent / name
        try:
            cf = load_yaml(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScenarioError(f"{path}: calendars: {p}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ScenarioError(f"{path}: calendars: {p}: not UTF-8 text") from None
        except CalendarFileError as exc:
            raise ScenarioError(f"{path}: calendars: {p}: {exc}") from None
        if (cf.calendar, cf.year) in files:
            raise ScenarioError(f"{path}: calendars: {p} and {files[cf.calendar, cf.year]} both give "
                                f"{cf.calendar} {cf.year}")
        files[cf.calendar, cf.year] = str(p)
        out.append(cf)
    return tuple(out)


def _z(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run_scenario(sc: Scenario, policy: Policy, settings: Settings | None = None,
                       emit=print) -> list[dict[str, Any]]:
    settings = settings or Settings()
    if sc.default_region:
        settings = Settings(**{**settings.__dict__, "default_region": sc.default_region})
    prefix = f"dgsim:{uuid.uuid4().hex[:12]}"
    engine = await Engine.create(settings, policy, prefix=prefix, skip_caller_id_without_pool=True, audit=False,
                                 versioned=False)
    if sc.default_region:
        engine.default_region = sc.default_region
    region = engine.default_region
    out: list[dict[str, Any]] = []
    try:
        if sc._calendar_files:  # as an operator's imported calendars, in this namespace only
            await CalendarStore(engine.redis, engine.keys, audit=False).publish(
                Calendars(0, sc._calendar_files), why="scenario calendars")
        # Every campaign and caller ID named is approved unless listed otherwise.
        campaigns = {e.attempt.campaign for e in sc.events if e.attempt}
        for c in campaigns - set(sc.unapproved_campaigns):
            await engine.set_campaign(c)
        unapproved = {parse_number(c, region).e164 or c for c in sc.unapproved_caller_ids}
        cids = {e.attempt.caller_id for e in sc.events if e.attempt and e.attempt.caller_id}
        for c in cids | set(policy.caller_id_pool):
            e164 = parse_number(c, region).e164
            if e164 and e164 not in unapproved:
                await engine.approve_caller_id(e164)
        last_call: dict[tuple[str, str | None], str] = {}
        for i, ev in enumerate(sc.events):
            k = ev.kind
            if k == "attempt":
                a = ev.attempt
                call_id = f"sim-{i}"
                d = await engine.decide(DecisionRequest(number=a.number, campaign=a.campaign, agent=a.agent,
                                                        caller_id=a.caller_id, subject=a.subject,
                                                        call_id=call_id, region=a.region,
                                                        postal_code=a.postal_code, party=a.party), now=ev.at)
                e164 = d.number or a.number
                if d.allowed:
                    last_call[(e164, a.subject)] = call_id
                    last_call[(e164, None)] = call_id
                line = {"i": i, "at": _z(ev.at), "number": e164, "decision": d.decision,
                        "reasons": d.reasons, "next_eligible_at": _z(d.next_eligible_at)}
                emit(json.dumps(line))  # SPEC §5's line; the caller ID picked only in the returned list
                out.append({**line, "caller_id": d.caller_id if d.allowed else None})
            elif k == "outcome":
                o = ev.outcome
                e164 = parse_number(o.number, region).e164 or o.number
                # the call about this subject, else the number's last call (a
                # conversation covering several subjects is reported per subject)
                call_id = last_call.get((e164, o.subject))
                other_subject = None
                if call_id is None:
                    call_id = last_call.get((e164, None))
                    other_subject = o.subject
                if call_id:
                    await engine.report_outcome(call_id, Outcome(result=o.result, talk_s=o.talk_s,
                                                                 hangup_cause=o.hangup_cause, sip_code=o.sip_code),
                                                now=ev.at, subject=other_subject)
            else:
                nev = getattr(ev, k)
                if k == "opt_out":
                    await engine.opt_out(nev.number, now=ev.at, party=nev.party)
                elif k == "complaint":
                    await engine.complaint(nev.number, now=ev.at, party=nev.party)
                elif k == "consent":
                    await engine.consent(nev.number, now=ev.at, party=nev.party)
                elif k == "dnc_add":
                    await engine.dnc_add(nev.number, nev.campaign, now=ev.at)
                elif k == "dnc_remove":
                    await engine.dnc_remove(nev.number, nev.campaign, now=ev.at)
    finally:
        await _drop_namespace(engine.redis, prefix)
        await engine.close()
    return out


async def _drop_namespace(redis, prefix: str) -> None:
    batch = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


assert set(OUTCOME_RESULTS) >= set(OutcomeEv.model_fields["result"].annotation.__args__)
