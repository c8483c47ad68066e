"""decision_of (the engine's Decision constructor) builds what model_construct builds."""

from __future__ import annotations

from datetime import datetime, timezone

from dialguard.decision.models import Decision, decision_of

ALLOW = {"decision_id": "d1", "decision": "allow", "reasons": [], "next_eligible_at": None,
         "caller_id": "+8613800138000", "max_duration_s": 0, "number": "+8613800138001", "override": True,
         "overridden": ["attempt_cap"], "explanations": {"attempt_cap": "lifted"}, "latency_ms": 0.25,
         "replay": False, "next_unknown": None}
DENY = {"decision_id": "d2", "decision": "deny", "reasons": ["dnc", "attempt_cap"],
        "next_eligible_at": datetime(2026, 11, 24, 1, tzinfo=timezone.utc), "caller_id": None,
        "max_duration_s": 600, "number": None, "override": False, "overridden": [],
        "explanations": {"dnc": "x", "attempt_cap": "y"}, "latency_ms": 1.5, "replay": True, "next_unknown": "x"}


def test_same_object_as_model_construct():
    assert Decision.__pydantic_post_init__ is None  # decision_of would have to call it
    assert list(ALLOW) == list(Decision.model_fields)  # the engine passes fields in this order
    for values in (ALLOW, DENY):
        fast, ref = decision_of(dict(values)), Decision.model_construct(**values)
        assert type(fast) is Decision
        assert fast == ref
        assert list(fast.__dict__.items()) == list(ref.__dict__.items())
        assert fast.model_fields_set == ref.model_fields_set
        assert fast.__pydantic_extra__ is ref.__pydantic_extra__ is None
        assert fast.__pydantic_private__ is ref.__pydantic_private__ is None
        assert fast.model_dump_json() == ref.model_dump_json()
        assert "next_unknown" not in fast.model_dump_json()  # not in the SPEC's answer
        assert repr(fast) == repr(ref)
        assert fast.allowed == (values["decision"] == "allow")
        fast.latency_ms = 2.0  # assignment works as on any model
        assert fast.model_dump()["latency_ms"] == 2.0


def test_missing_fields_get_defaults():
    d = decision_of({"decision_id": "d3", "decision": "deny"})
    assert d == Decision.model_construct(decision_id="d3", decision="deny")
    assert d.reasons == [] and d.latency_ms == 0.0
