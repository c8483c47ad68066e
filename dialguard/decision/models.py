"""Request, decision and outcome types shared by every adapter (SPEC §2)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Stable reason codes, in the order SPEC §2 lists them; decisions report
# every failing reason in this order.
REASONS: tuple[str, ...] = (
    "invalid_number",
    "paused",
    "campaign_not_approved",
    "caller_id_not_approved",
    "dnc",
    "opted_out",
    "complained",
    "no_consent",
    "outside_hours",
    "holiday",
    "unknown_timezone",
    "attempt_cap",
    "min_interval",
    "post_conversation_quiet",
    "post_abandon_quiet",
    "agent_cap",
    "caller_id_rate",
    "caller_id_concurrency",
    "guard_unavailable",
)
REASON_ORDER = {code: i for i, code in enumerate(REASONS)}

# Reasons an override can never lift (SPEC §2).
NEVER_OVERRIDDEN = frozenset({"dnc", "opted_out", "complained", "invalid_number"})
# Reasons it can: counter and hours reasons (decide.lua's LIFTABLE).
LIFTABLE = frozenset({"attempt_cap", "min_interval", "post_conversation_quiet", "post_abandon_quiet",
                      "agent_cap", "caller_id_rate", "caller_id_concurrency", "outside_hours", "holiday"})
# Reasons after which the number never becomes callable by waiting.
PERMANENT = frozenset(
    {"invalid_number", "dnc", "opted_out", "complained", "no_consent",
     "campaign_not_approved", "caller_id_not_approved", "paused", "unknown_timezone"}
)

OutcomeResult = Literal[
    "conversation", "answered", "voicemail", "no_answer", "busy", "failed", "abandoned", "amd"
]
OUTCOME_RESULTS: tuple[str, ...] = (
    "conversation", "answered", "voicemail", "no_answer", "busy", "failed", "abandoned", "amd",
)


def sort_reasons(reasons) -> list[str]:
    return sorted(set(reasons), key=REASON_ORDER.__getitem__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: str = Field(min_length=1, max_length=64)
    campaign: str = Field(min_length=1, max_length=128)
    agent: str = Field(min_length=1, max_length=128)
    caller_id: str | None = Field(default=None, max_length=64)
    subject: str | None = Field(default=None, max_length=256)
    call_id: str | None = Field(default=None, max_length=128)
    # Where the business knows the callee lives (SPEC §2): ISO 3166-2 and a
    # postal code; and the person or account behind the number (opaque).
    region: str | None = Field(default=None, max_length=16)
    postal_code: str | None = Field(default=None, max_length=16)
    party: str | None = Field(default=None, max_length=256)

    @field_validator("region")
    @classmethod
    def _region(cls, v):
        from dialguard.location import parse_region

        return parse_region(v)

    @field_validator("postal_code")
    @classmethod
    def _postal(cls, v):
        from dialguard.location import parse_postal_code

        return parse_postal_code(v)

    @field_validator("party")
    @classmethod
    def _party(cls, v):
        return v if v else None


class Decision(BaseModel):
    decision_id: str
    decision: Literal["allow", "deny"]
    reasons: list[str] = []
    next_eligible_at: datetime | None = None
    caller_id: str | None = None  # E.164 to present
    max_duration_s: int = 0  # 0 = no limit
    number: str | None = None  # normalized E.164, None when invalid
    override: bool = False  # an override grant turned this deny into an allow
    overridden: list[str] = []  # the reasons it lifted
    explanations: dict[str, str] = {}
    latency_ms: float = 0.0
    # the earlier answer to the identical request under this call id (SPEC §2),
    # decision_id being that earlier decision's; audited as a replay
    replay: bool = False
    # a deny whose next_eligible_at is null because a calendar year the rules need is not
    # known yet (not because it never lifts): why, else None. Not part of the SPEC's answer
    # (excluded from its JSON; the explanations say it): the dialer holds such a lead.
    next_unknown: str | None = Field(default=None, exclude=True)

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


_DECISION_FIELDS = tuple(Decision.model_fields)
_new = object.__new__
_setattr = object.__setattr__


def decision_of(values: dict) -> Decision:
    """Decision.model_construct(**values) for a dict holding every field, in
    field order (the engine's own, already typed values): what model_construct
    leaves without its per-field default and alias loop (about 3 us of 4).
    tests/unit/test_models_fast.py compares the two."""
    if len(values) != len(_DECISION_FIELDS):  # not every field: defaults needed
        return Decision.model_construct(**values)
    d = _new(Decision)
    _setattr(d, "__dict__", values)
    _setattr(d, "__pydantic_fields_set__", set(values))
    _setattr(d, "__pydantic_extra__", None)
    _setattr(d, "__pydantic_private__", None)
    return d


class Outcome(BaseModel):
    result: OutcomeResult
    talk_s: int = Field(default=0, ge=0)
    hangup_cause: int | None = Field(default=None, ge=0, le=127)  # Q.850
    sip_code: int | None = Field(default=None, ge=100, le=699)  # the trunk's SIP response, when known


# Q.850 hangup causes of a call that was never answered, and what each means
# for its outcome: the one rule for the FastAGI report (agi/handlers/report.py,
# when DIALSTATUS says nothing better) and the dialer (ari_app/calls.py).
BUSY_CAUSES = frozenset({17})  # user busy
# no user responding (18), no answer (19); normal clearing (16) and no cause (0)
# on a call never reported answered: the callee may have been rung, so the
# attempt counts, as a no-answer does (a `failed` attempt is left out of the
# caps that do not count calls never connected, e.g. Regulation F's): when in
# doubt, count it.
NO_ANSWER_CAUSES = frozenset({0, 16, 18, 19})


def not_answered_result(cause: int) -> str:
    """The outcome of an unanswered call from its Q.850 hangup cause."""
    if cause in BUSY_CAUSES:
        return "busy"
    if cause in NO_ANSWER_CAUSES:
        return "no_answer"
    return "failed"
