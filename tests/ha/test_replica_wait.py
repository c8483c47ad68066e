"""DIALGUARD_REDIS_WAIT_REPLICAS: an ALLOW waits for the replicas' acknowledgement
of its reservation; too few in time is a guard_unavailable deny (fail closed)
that still counts the reservation (over-counts: safe). The HA stack has two
replicas."""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import redis as syncredis

from dialguard import metrics
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, load_pack_file
from dialguard.simulate import _drop_namespace
from tests.ha import ha

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai
RULES = ha.pack_capped_at_two("ha-wait", approved_caller_ids=False)


async def _engine(settings, tmp_path, prefix=None, **kw) -> Engine:
    rules = tmp_path / "ha-wait.yaml"
    rules.write_text(RULES)
    e = await Engine.create(replace(settings, **kw), Policy([load_pack_file(rules)]),
                            prefix=prefix or f"dgha:{uuid.uuid4().hex[:8]}", skip_caller_id_without_pool=True)
    await e.set_campaign("c1", approved=True)
    return e


def _hist_count() -> float:
    return metrics.REGISTRY.get_sample_value("dialguard_replica_wait_seconds_count") or 0.0


async def test_allow_waits_for_the_replicas(ha_settings, tmp_path):
    e = await _engine(ha_settings, tmp_path, redis_wait_replicas=2, redis_wait_ms=500)
    try:
        before = _hist_count()
        d = await e.decide(DecisionRequest(number="13900000001", campaign="c1", agent="a"), now=NOW)
        assert d.decision == "allow", d
        assert _hist_count() == before + 1  # the WAIT was made and measured
        # A deny asks no replica: nothing to protect.
        await e.decide(DecisionRequest(number="13900000001", campaign="c1", agent="a"), now=NOW)
        d = await e.decide(DecisionRequest(number="13900000001", campaign="c1", agent="a"), now=NOW)
        assert d.reasons == ["attempt_cap"]
        assert _hist_count() == before + 2
    finally:
        await _drop_namespace(e.redis, e.keys.prefix)
        await e.close()


async def test_too_few_replicas_is_a_deny_that_still_counts(ha_settings, tmp_path):
    # Three replicas asked for, two exist: never acknowledged.
    e = await _engine(ha_settings, tmp_path, redis_wait_replicas=3, redis_wait_ms=30)
    try:
        unacked = metrics.REGISTRY.get_sample_value("dialguard_replica_unacked_total") or 0.0
        d = await e.decide(DecisionRequest(number="13900000002", campaign="c1", agent="a"), now=NOW)
        assert d.decision == "deny" and d.reasons == ["guard_unavailable"]
        assert "not acknowledged by 3 replica(s) within 30 ms" in d.explanations["guard_unavailable"]
        assert metrics.REGISTRY.get_sample_value("dialguard_replica_unacked_total") == unacked + 1
        # The reservation stands on the primary (over-counted, safe): one attempt left.
        e2 = await _engine(ha_settings, tmp_path, prefix=e.keys.prefix, redis_wait_replicas=0)
        try:
            assert (await e2.decide(DecisionRequest(number="13900000002", campaign="c1", agent="a"),
                                    now=NOW)).decision == "allow"
            assert (await e2.decide(DecisionRequest(number="13900000002", campaign="c1", agent="a"),
                                    now=NOW)).reasons == ["attempt_cap"]
        finally:
            await e2.close()
    finally:
        await _drop_namespace(e.redis, e.keys.prefix)
        await e.close()


async def test_a_frozen_replica_withholds_the_allow(ha_settings, tmp_path):
    """WAIT 2 with one replica stopped (SIGSTOP): the ALLOW is denied within the wait;
    WAIT 1 is still satisfied by the other replica."""
    host, port = ha.primary(ha_settings)
    info = ha.node(host, port, decode_responses=True).info("replication")
    replica_port = int(info["slave0"]["port"])
    pid = int((ha.node_dir(replica_port) / "redis.pid").read_text().split()[0])
    e2 = await _engine(ha_settings, tmp_path, redis_wait_replicas=2, redis_wait_ms=100)
    e1 = await _engine(ha_settings, tmp_path, redis_wait_replicas=1, redis_wait_ms=100)
    os.kill(pid, signal.SIGSTOP)
    try:
        d = await e2.decide(DecisionRequest(number="13900000003", campaign="c1", agent="a"), now=NOW)
        assert d.reasons == ["guard_unavailable"], d
        d = await e1.decide(DecisionRequest(number="13900000004", campaign="c1", agent="a"), now=NOW)
        assert d.decision == "allow", d
    finally:
        os.kill(pid, signal.SIGCONT)
        for e in (e1, e2):
            await _drop_namespace(e.redis, e.keys.prefix)
            await e.close()
