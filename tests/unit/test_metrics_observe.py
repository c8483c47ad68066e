"""metrics.observe counts every decision, every reason (the known ones through
the children looked up once, any other through labels()) and the latency."""

from dialguard import metrics
from dialguard.decision.models import REASONS, Decision


def sample(name, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_counts_each_series():
    names = [("dialguard_decisions_total", {"result": "allow"}), ("dialguard_decisions_total", {"result": "deny"}),
             ("dialguard_redis_errors_total", {}), ("dialguard_decision_latency_seconds_count", {}),
             ("dialguard_decision_latency_seconds_bucket", {"le": "0.001"})]
    names += [("dialguard_deny_reasons_total", {"reason": r}) for r in (*REASONS, "not_a_reason_code")]
    before = {(n, tuple(l.items())): sample(n, **l) for n, l in names}
    metrics.observe(Decision(decision_id="a", decision="allow", latency_ms=0.5))
    metrics.observe(Decision(decision_id="b", decision="deny", reasons=list(REASONS), latency_ms=3))
    metrics.observe(Decision(decision_id="c", decision="deny", reasons=["not_a_reason_code"], latency_ms=3))
    diff = {k: sample(k[0], **dict(k[1])) - v for k, v in before.items()}
    assert diff[("dialguard_decisions_total", (("result", "allow"),))] == 1
    assert diff[("dialguard_decisions_total", (("result", "deny"),))] == 2
    assert diff[("dialguard_redis_errors_total", ())] == 1
    assert diff[("dialguard_decision_latency_seconds_count", ())] == 3
    assert diff[("dialguard_decision_latency_seconds_bucket", (("le", "0.001"),))] == 1
    for r in (*REASONS, "not_a_reason_code"):
        assert diff[("dialguard_deny_reasons_total", (("reason", r),))] == 1, r
