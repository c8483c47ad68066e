"""A dialer call as the dialer tracks it, and how its end becomes an outcome
(pure data and functions, shared by the dialer's components)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from ari_app.client import AriError, AriUnavailable
from dialguard.decision.models import not_answered_result as cause_result
from dialguard.timeutil import parse_time

log = logging.getLogger("ari_app.calls")

BLOCKING = {"dnc", "opted_out", "complained", "invalid_number", "unknown_timezone"}
# Denials an admin (or the guard coming back) can lift: look at the lead again later.
TRANSIENT = {"paused", "campaign_not_approved", "caller_id_not_approved", "no_consent", "guard_unavailable",
             "caller_id_rate", "caller_id_concurrency", "agent_cap"}
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
    """An unanswered dialer call's outcome from its hangup cause (the one rule,
    dialguard.decision.models); no cause at all: counted as a no-answer."""
    return "no_answer" if cause is None else cause_result(cause)


@dataclass
class Call:
    channel_id: str
    lead: dict
    campaign: str
    agent: str | None = None  # the agent named in the decision
    owner: str | None = None  # a callback (or accepted preview) owned by this agent: no other one
    state: str = "reserved"  # reserved, originated, answered, bridged, ended
    caller_id: str | None = None
    max_duration_s: int = 0
    originated_at: float | None = None  # monotonic, when Asterisk took the originate
    answered_at: float | None = None  # monotonic
    bridged_at: float | None = None
    deadline: datetime | None = None  # wall clock: answered + max_duration_s (stored, survives a restart)
    deadline_task: asyncio.Task | None = None
    allowed: bool = False  # the engine allowed it: an attempt is counted, an outcome is owed
    bridge_id: str | None = None
    agent_channel: str | None = None
    bridged_agent: str | None = None
    abandoned: bool = False
    amd: str | None = None  # AMD under way ("pending") or its AMDSTATUS
    machine: bool = False  # AMD said MACHINE: never bridged, ends as `amd`
    dead_man: bool = False  # TIMEOUT(absolute) armed on the customer (lifecycle._dead_man)
    opted_out: bool = False
    finalizing: bool = False
    hangup_asked: bool = False  # Asterisk said a hangup was requested (the callee's, or ours)
    answered_ts: datetime | None = None  # Asterisk's time of the answer (the call's first StasisStart)
    message_due: str | None = None  # "abandon" or "machine": a message this call owes its callee
    message_state: str | None = None  # started, played, cut, failed, none (dialguard/campaigns/sql/240)
    to_fallback: bool = False  # sent to the dialplan's fallback by a stopping dialer (drain)
    resumed: bool = False  # loaded from PostgreSQL at start (the app was restarted)
    lease_checked: bool = False  # adopted: its agent's lease taken over (or found taken)
    tasks: list = field(default_factory=list)
    # other subjects discussed (DIALGUARD_SUBJECTS on the call or the agent's leg):
    # reported with the conversation (dialguard/subjects.py); kept in memory only
    subjects: list = field(default_factory=list)

    @property
    def unbridged(self) -> bool:
        return self.state in ("reserved", "originated", "answered")


def message_at_end(due: str | None, state: str | None) -> str | None:
    """A call's message state to record at its end: None when no message was due; one
    begun but never seen finished was cut by the hangup; one never begun, the callee was
    gone before it (`none`); else what its PlaybackFinished said."""
    if not due:
        return None
    if state == "started":
        return "cut"
    return state or "none"


def ari_time(text: object) -> datetime | None:
    """An ARI event's `timestamp` (Asterisk's clock, e.g. 2026-12-06T19:48:03.333+0000);
    None when it is missing or not one."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


async def quiet(coro) -> None:
    """An ARI request whose failure changes nothing (the channel is already gone)."""
    try:
        await coro
    except (AriError, AriUnavailable) as exc:
        log.debug("ignored: %s", exc)
