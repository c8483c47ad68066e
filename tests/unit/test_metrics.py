import aiohttp

from dialguard import metrics
from dialguard.models import Decision


async def test_metrics_and_health_endpoints():
    healthy = {"ok": True}

    async def health():
        return healthy["ok"], "store answers" if healthy["ok"] else "Redis unreachable"

    before = metrics.REGISTRY.get_sample_value("dialguard_redis_errors_total") or 0.0
    metrics.observe(Decision(decision_id="a", decision="allow", latency_ms=0.8))
    metrics.observe(Decision(decision_id="b", decision="deny", reasons=["dnc", "outside_hours"], latency_ms=1.5))
    metrics.observe(Decision(decision_id="c", decision="deny", reasons=["guard_unavailable"], latency_ms=200))
    srv = metrics.MetricsServer("127.0.0.1", 0, health)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/metrics") as r:
                text = await r.text()
            assert 'dialguard_decisions_total{result="allow"}' in text
            assert 'dialguard_deny_reasons_total{reason="dnc"}' in text
            assert f"dialguard_redis_errors_total {before + 1}" in text
            assert "dialguard_decision_latency_seconds_bucket" in text
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            healthy["ok"] = False
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                assert r.status == 503 and "Redis unreachable" in (await r.json())["detail"]
    finally:
        await srv.stop()
