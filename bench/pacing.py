#!/usr/bin/env python3
"""Pacing modes side by side on the real stack: agent occupancy and abandon rate.

    .venv/bin/python bench/pacing.py     (after `make up`; about 2.5 minutes per mode)
    options: --modes ratio,progressive,predictive --agents 4 --run-s 120 --answer 0.35
             --talk-s 8 --ring-s 2 --ring-timeout 6 --dial-ratio 3 --abandon-limit 3
             --seed 18 --json FILE

For each mode, in one run: a fresh campaign of that mode (its own Stasis app, its own
engine namespace on a test clock at a working Monday 10:00, cn-default), SIPp agent
phones (`--agents` of them, answering at once) and a SIPp carrier built from the
dialer tests' carrier (tests/e2e/scenarios/dialer_carrier/carrier.xml) that rings
`--ring-s` then answers, and hangs up `--talk-s` after the answer; a lead ending in
99 rings until the ring timeout (no answer). Leads are drawn so that a share
`--answer` of them answers (seeded, the same mix in every mode). The dialer
(ari_app.dialer, in this process) runs the campaign for `--run-s` seconds; then the
campaign stops and calls in progress end.

Reported per mode, from the dialer's own call rows in PostgreSQL:
- occupancy: agents' bridged talk time within the run / (agents x run time);
- abandon rate: abandoned / answered calls (the pacing's abandon guard is on, at
  `--abandon-limit` percent);
- calls placed, answered, conversations, abandoned; answered calls per agent-minute.
`ratio` is the dialer's pacing before issue #18 (dial_ratio lines per ready agent
from the first call). `preview` needs an agent's accept per call and is not run here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "tests"))  # fakes.dialer_db: the dialer tables (db migrate)

from sipp import SCENARIOS, Sipp, load_stack_env, stack_dir  # noqa: E402

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Monday 10:00 Asia/Shanghai
# a pool of caller IDs: cn-default allows 50 calls per caller ID per hour
CALLER_IDS = [f"+8621500001{i:02d}" for i in range(30)]


def carrier_scenario(out: Path, ring_ms: int, talk_ms: int) -> Path:
    """The dialer tests' carrier with a ring time before the answer and the callee's
    talk time instead of 4 s."""
    text = (SCENARIOS / "dialer_carrier" / "carrier.xml").read_text()
    anchor = '<nop next="ringing" test="noanswer"/>'
    assert anchor in text and 'timeout="4000" ontimeout="callee_hangs_up"' in text
    text = text.replace(anchor, anchor + f'\n  <pause milliseconds="{ring_ms}"/>', 1)
    text = text.replace('timeout="4000" ontimeout="callee_hangs_up"',
                        f'timeout="{talk_ms}" ontimeout="callee_hangs_up"', 1)
    out.write_text(text)
    return out


def leads(n: int, answer: float, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        suffix = "00" if rng.random() < answer else "99"
        out.append(f"+86138{rng.randrange(10**6):06d}{suffix}")
    return out


async def run_mode(mode: str, a, stack_env: dict, numbers: list[str], workdir: Path) -> dict:
    from ari_app.dialer import Dialer, DialerConfig
    from fakes.dialer_db import ensure_schema
    from dialguard.campaigns.leads import Lead
    from dialguard.campaigns.store import Store
    from dialguard.config import Settings
    from dialguard.engine import Engine
    from dialguard.simulate import _drop_namespace

    ensure_schema(stack_env["pg_dsn"])
    carrier_port, agent_port = stack_env["carrier_port"], stack_env["carrier_port"] + 30
    wd = workdir / mode
    wd.mkdir(parents=True, exist_ok=True)
    carrier = Sipp("bench-carrier", carrier_scenario(wd / "carrier.xml", int(a.ring_s * 1000), int(a.talk_s * 1000)),
                   wd, carrier_port, timeout_s=3600,
                   keys={"rtpsink": str(carrier_port + 40)})  # only its 55/44 numbers use it; the bench dials 00/99
    agents = Sipp("bench-agents", SCENARIOS / "dialer_agents" / "agent.xml", wd, agent_port, timeout_s=3600)
    carrier.start().wait_ready()
    agents.start().wait_ready()
    prefix = f"dgbench:{uuid.uuid4().hex[:8]}"
    engine = await Engine.create(Settings(key_prefix=prefix, test_clock=True))
    await engine.set_test_clock(NOW)
    store = await Store.open(stack_env["pg_dsn"])
    app = f"dg-bench-{uuid.uuid4().hex[:6]}"
    name = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    try:
        await store.create_campaign(name, pacing_mode=mode, dial_ratio=a.dial_ratio, max_concurrent=4 * a.agents,
                                    calls_per_second=10, ring_timeout_s=a.ring_timeout, retry_after_s=86400,
                                    abandon_limit_pct=a.abandon_limit, dialer=app)
        await store.set_approval(name, True)
        await engine.set_campaign(name, True)
        for cid in CALLER_IDS:
            await engine.approve_caller_id(cid, campaign=name)
        await store.add_leads(name, [Lead(i + 2, n) for i, n in enumerate(numbers)], now=NOW)
        names = [f"agent{i + 1}" for i in range(a.agents)]
        d = Dialer(DialerConfig(ari_url=stack_env["ari_url"], ari_user=stack_env["ari_user"],
                                ari_password=stack_env["ari_password"], app=app, campaigns=[name],
                                agents={x: f"PJSIP/agent-phones/sip:{x}@127.0.0.1:{agent_port}" for x in names},
                                abandon_media_max_s=1.0), engine, store)
        task = asyncio.create_task(d.run())
        await store.set_state(name, "running")
        t0 = datetime.now(UTC)
        await asyncio.sleep(a.run_s)
        t1 = datetime.now(UTC)
        await store.set_state(name, "stopped")
        deadline = time.monotonic() + a.talk_s + a.ring_timeout + 15
        while d.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        d.stop()
        await asyncio.wait_for(task, 30)
        rows = await store._all("select * from dialer_calls where campaign = %s", (name,))
    finally:
        await store.set_state(name, "stopped")
        carrier.stop(grace=3)
        agents.stop(grace=3)
        await _drop_namespace(engine.redis, prefix)
        await engine.close()
        await store.close()
    placed = [r for r in rows if r["decision_id"] and r["result"] not in ("denied", "error")]
    answered = [r for r in placed if r["answered_at"] is not None]
    conv = [r for r in placed if r["result"] == "conversation"]
    abandoned = [r for r in placed if r["result"] == "abandoned"]
    talk = 0.0
    for r in conv:  # bridged time inside the run window
        s, e = max(r["bridged_at"], t0), min(r["ended_at"] or t1, t1)
        talk += max(0.0, (e - s).total_seconds())
    run = (t1 - t0).total_seconds()
    # abandons among the first answered calls: what a full ratio at the start costs
    first = sorted(answered, key=lambda r: r["answered_at"])[:10]
    return {"mode": mode, "placed": len(placed), "answered": len(answered), "conversations": len(conv),
            "abandoned": len(abandoned), "abandoned_first_10": sum(1 for r in first if r["result"] == "abandoned"),
            "abandon_rate_pct": round(100.0 * len(abandoned) / len(answered), 2) if answered else 0.0,
            "occupancy_pct": round(100.0 * talk / (a.agents * run), 1),
            "conversations_per_agent_min": round(len(conv) / a.agents / (run / 60), 2), "run_s": round(run, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="ratio,progressive,predictive")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--run-s", type=float, default=120)
    p.add_argument("--answer", type=float, default=0.35)
    p.add_argument("--talk-s", type=float, default=8)
    p.add_argument("--ring-s", type=float, default=2)
    p.add_argument("--ring-timeout", type=int, default=6)
    p.add_argument("--dial-ratio", type=float, default=3.0)
    p.add_argument("--abandon-limit", type=float, default=3.0)
    p.add_argument("--leads", type=int, default=300)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    load_stack_env()
    import os

    from dialguard.config import Settings

    env = {"pg_dsn": Settings().pg_dsn, "ari_url": os.environ["DIALGUARD_ARI_URL"],
           "ari_user": os.environ["DIALGUARD_ARI_USER"], "ari_password": os.environ["DIALGUARD_ARI_PASSWORD"],
           "carrier_port": int(os.environ.get("DIALGUARD_CARRIER_PORT", 15070))}
    workdir = stack_dir() / "bench-pacing"
    results = []
    for mode in a.modes.split(","):
        numbers = leads(a.leads, a.answer, random.Random(a.seed))  # the same mix for every mode
        print(f"[pacing] {mode}: {a.agents} agents, {a.run_s:.0f} s, answer {a.answer:.0%}, talk {a.talk_s} s, "
              f"ring {a.ring_s} s ...", flush=True)
        results.append(asyncio.run(run_mode(mode, a, env, numbers, workdir)))
    cols = ["mode", "occupancy_pct", "abandon_rate_pct", "abandoned_first_10", "placed", "answered",
            "conversations", "abandoned", "conversations_per_agent_min"]
    print()
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    base = next((r for r in results if r["mode"] == "progressive"), None)
    if base and base["occupancy_pct"]:
        for r in results:
            print(f"{r['mode']}: occupancy x{r['occupancy_pct'] / base['occupancy_pct']:.2f} of progressive")
    if a.json:
        a.json.write_text(json.dumps({"settings": vars(a) | {"json": str(a.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
