"""A pack's abandon limit enforced by the dialer (issue #18 item 2), on the real stack.

The campaign's rules state the TCPA limit (3 % of live-answered calls per campaign
over 30 days, 47 CFR 64.1200(a)(7)). Its history (calls answered 10 days ago, so
the campaign's own daily limit sees none of them) is in PostgreSQL: the limit is
measured there, so a restarted dialer knows it too. Over the limit: nothing is
dialed, `campaign status` and /metrics say so; back under it (more answered
calls in the window): the waiting lead is dialed, one call per free agent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

from ari_app import metrics as m
from test_dialer_calls import number, rig  # noqa: F401  (fixture)

UTC = timezone.utc


async def seed_history(rig, camp: str, lead_id: int, results: list[str], ago: timedelta) -> None:
    at = datetime.now(UTC) - ago
    async with rig.store.pool.connection() as c:
        for i, r in enumerate(results):
            t = at + timedelta(seconds=i)
            await c.execute(
                "insert into dialer_calls (channel_id, lead_id, campaign, state, result, outcome_reported,"
                " created_at, answered_at, bridged_at, ended_at) values (%s, %s, %s, 'ended', %s, true,"
                " %s, %s, %s, %s)",
                (f"dgc-{uuid.uuid4().hex}", lead_id, camp, r, t, t, t if r == "conversation" else None,
                 t + timedelta(seconds=30)))


def status(camp: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "dialguard.cli", "campaign", "status", camp, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def wait_verdict(d, camp: str, state: str, timeout: float = 6) -> None:
    deadline = time.monotonic() + timeout
    while (v := d.verdicts.get(camp)) is None or v.state != state:
        assert time.monotonic() < deadline, (camp, d.verdicts.get(camp))
        await asyncio.sleep(0.1)


async def test_pack_limit_over_30_days_stops_then_resumes_progressive(rig, tmp_path):
    pack = tmp_path / "tcpa-abandon.yaml"
    pack.write_text("pack: tcpa-abandon\nabandon_rate: {max_pct: 3, period: 30d, base: live_answered}\n")
    history, target = number("00"), number("00")
    camp = await rig.campaign([history, target], abandon_limit_pct=5, ring_timeout_s=10)
    rules = f"cn-default,{pack}"
    await rig.engine.set_campaign(camp, True, rules=rules)
    async with rig.store.pool.connection() as c:
        await c.execute("update dialer_campaigns set rules = %s where name = %s", (rules, camp))
    leads = await rig.leads(camp)
    await rig.store.release_lead(leads[history]["id"], state="done")
    # 4 abandoned of 100 answered by a live person (and 10 machines, not in the base): 4 % > 3 %
    await seed_history(rig, camp, leads[history]["id"], ["conversation"] * 96 + ["abandoned"] * 4 + ["amd"] * 10,
                       timedelta(days=10))
    # and 4 abandoned 40 days ago: outside the 30 days
    await seed_history(rig, camp, leads[history]["id"], ["abandoned"] * 4, timedelta(days=40))

    d = rig.start(camp, ["agent1", "agent2"])
    await wait_verdict(d, camp, "stopped")
    v = d.verdicts[camp]
    assert v.tightest.source == "tcpa-abandon" and (v.tightest.answered, v.tightest.abandoned) == (100, 4)
    await asyncio.sleep(2)
    assert [c for c in await rig.calls(camp) if c["channel_id"] and c["result"] is None] == []
    assert (await rig.leads(camp))[target]["attempts"] == 0  # held back, not taken and denied
    assert m.ABANDON_HELD.labels(camp)._value.get() == 1
    assert abs(m.ABANDON_RATE.labels(camp)._value.get() - 0.04) < 1e-9
    assert abs(m.ABANDON_LIMIT.labels(camp)._value.get() - 0.03) < 1e-9
    st = status(camp)
    assert st["abandon_pacing"] == "stopped", st
    assert "tcpa-abandon: 4.00% of 3% over 30 days (4 abandoned / 100 answered)" in st["abandon_limits"], st
    # callable again once the 4 abandoned calls (the newest of the window) are 30 days old:
    # dropping older conversations first only raises the rate
    last = await rig.store._one("select max(answered_at) t from dialer_calls where campaign = %s"
                                " and result = 'abandoned' and answered_at > now() - interval '30 days'", (camp,))
    assert datetime.fromisoformat(st["callable_at"]) == last["t"] + timedelta(days=30), st
    assert st["abandon_state"] == ("stopped: tcpa-abandon abandon limit 3% over 30 days, 4.00% now "
                                   f"(4 abandoned / 100 answered), callable again at {st['callable_at']}"), st
    assert any(h.startswith("abandon_limit since ") for h in st["held_back"]), st
    assert m.ABANDON_CALLABLE_AT.labels(camp)._value.get() == datetime.fromisoformat(st["callable_at"]).timestamp()

    # a restarted dialer measures the same
    await rig.stop_all()
    d = rig.start(camp, ["agent1", "agent2"])
    await wait_verdict(d, camp, "stopped")
    await asyncio.sleep(1)
    assert (await rig.leads(camp))[target]["attempts"] == 0

    # 40 more live answers in the window: 4 / 140 = 2.86 %, one more abandon would cross
    # (floor(3 % x 140) = 4): progressive, the lead is dialed for a free agent
    await seed_history(rig, camp, leads[history]["id"], ["conversation"] * 40, timedelta(days=9))
    await wait_verdict(d, camp, "progressive")
    assert d.pacer.ratios[camp] <= 1.0
    after = await rig.settle(camp, timeout=30)
    assert after[target]["attempts"] == 1 and after[target]["last_result"] == "conversation"
    st = status(camp)
    assert st["abandon_pacing"] in ("progressive", "open") and st["callable_at"] is None
    assert st["held_back"] == [], st
    holds = await rig.store._all("select reason, detail, leads, ended_at from dialer_holds where campaign = %s",
                                 (camp,))
    assert holds and all(h["reason"] == "abandon_limit" and h["ended_at"] is not None for h in holds), holds
    assert holds[0]["leads"] == 1 and holds[0]["detail"].startswith("tcpa-abandon: 4.00% of 3%")

    # `dialguard report` by campaign: the held-back leads (no decision, so not attempts)
    # and the rate against the pack's limit over its own 30 days
    today = datetime.now(UTC).date().isoformat()
    out = subprocess.run([sys.executable, "-m", "dialguard.cli", "report", "--from", "2026-11-01", "--to", today,
                          "--tz", "UTC", "--by", "campaign", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [row] = [r for r in json.loads(out.stdout)["rows"] if r["campaign"] == camp]
    assert row["held_abandon_limit"] >= 1 and row["held_back"] >= row["held_abandon_limit"], row
    assert row["abandon_limit"] == "tcpa-abandon 3% over 30 days", row
    assert (row["limit_rate"], row["limit_state"]) == (round(100 * 4 / 141, 2), "within"), row
