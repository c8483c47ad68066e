"""The stack's own dialer (`make up` starts it like the FastAGI server) and its
/metrics and /healthz.

The campaign is assigned to the stack's dialer (its `dialer` column), whose
agents are agent1 and agent2 on the SIPp agent phones (carrier port + 30) that
the rig starts; it decides with the live guard, whose clock is set to a working
Monday 10:00 in Shanghai here.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.error
import urllib.request

from ari_app.dialer import Dialer, DialerConfig
from ari_app.main import metrics_server
from test_dialer_calls import NOW, number, open_rig

STACK_APP = os.environ.get("DIALGUARD_DIALER_APP", "dialguard-dialer")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def gauge(text: str, name: str, campaign: str) -> float | None:
    m = re.search(rf'^{name}{{campaign="{re.escape(campaign)}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


async def test_stack_dialer_abandon_rate_in_metrics(stack, pg_dsn, guard, tmp_path):
    port = int(os.environ.get("DIALGUARD_DIALER_METRICS_PORT", 19101))
    base = f"http://127.0.0.1:{port}"
    status, body = await asyncio.to_thread(http_get, base + "/healthz")
    assert status == 200, f"the stack's dialer is not healthy (make up starts it): {status} {body}"
    await guard.set_clock(NOW)
    async with open_rig(stack, pg_dsn, tmp_path, live=True) as rig:
        # three answered calls at once for two agents: the third finds no agent, abandoned
        nums = [number("00") for _ in range(3)]
        camp = await rig.campaign(nums, dialer=STACK_APP, dial_ratio=3.0, pacing_mode="ratio", calls_per_second=100,
                                  max_concurrent=3, abandon_limit_pct=100)
        leads = await rig.settle(camp, timeout=40)
        results = sorted(c["result"] for c in await rig.calls(camp))
        assert results == ["abandoned", "conversation", "conversation"], results
        assert all(leads[n]["attempts"] == 1 for n in nums)
        deadline = time.monotonic() + 5
        while True:  # the dialer refreshes its gauges every 0.5 s; a call leaves
            # its table a moment after its lead is settled
            _, text = await asyncio.to_thread(http_get, base + "/metrics")
            rate = gauge(text, "dialguard_abandon_rate", camp)
            in_flight = gauge(text, "dialguard_dialer_calls_in_flight", camp)
            settled = rate is not None and abs(rate - 1 / 3) < 1e-6 and in_flight == 0
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert rate is not None and abs(rate - 1 / 3) < 1e-6, rate
        assert in_flight == 0, in_flight
        assert re.search(r"^dialguard_dialer_events_socket_up 1\.0$", text, re.M)


async def test_healthz_503_while_the_events_socket_is_down(stack, pg_dsn, redis_url):
    from fakes.dialer_db import ensure_schema
    from dialguard.campaigns.store import Store
    from dialguard.config import Settings
    from dialguard.engine import Engine

    ensure_schema(pg_dsn)
    engine = await Engine.create(Settings(key_prefix="dge2e:health"))
    store = await Store.open(pg_dsn)
    results = {}
    for label, url in (("down", "http://127.0.0.1:9"), ("up", stack.ari_url)):  # port 9: nothing listens
        d = Dialer(DialerConfig(ari_url=url, ari_user=stack.ari_user, ari_password=stack.ari_password,
                                agents={"a": "PJSIP/a"}, app=f"dg-health-{label}", campaigns=[]), engine, store)
        srv = metrics_server(d, engine, 0)
        await srv.start()
        task = asyncio.create_task(d.run())
        try:
            if label == "up":
                assert await d.ari.wait_healthy(10)
            else:
                await asyncio.sleep(1.0)
            results[label] = await asyncio.to_thread(http_get, f"http://127.0.0.1:{srv.bound_port}/healthz")
        finally:
            d.stop()
            await asyncio.wait_for(task, 20)
            await srv.stop()
    await store.close()
    await engine.close()
    assert results["down"][0] == 503 and "events socket down" in results["down"][1]
    assert results["up"][0] == 200
