"""What waiting for a replica costs an ALLOW, measured alone and interleaved.

    .venv/bin/python bench/replica_wait.py [--n 5000] [--replicas 1]

Needs replicas: the DIALGUARD_REDIS_HA=1 stack. Runs decide.lua's decision
(the same script and plan shape as bench/engine.py, random numbers) through the
hot-path client, alternating one decision without WAIT and one with
`WAIT replicas 100` on the same connection (RedisClient.evalsha_acked), so
load on the machine moves both the same way; prints p50/p99 of each and the
difference. bench/engine.py --wait N measures the same inside the whole
engine at several concurrencies (noisier on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone

from dialguard import redisconn
from dialguard.decision import scripts
from dialguard.config import Settings
from dialguard.engine import Engine, _allowed
from dialguard.decision.models import DecisionRequest
from dialguard.numbers import parse_number
from dialguard.rules import Policy
from dialguard.simulate import _drop_namespace

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai, a working day


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="decisions of each kind")
    ap.add_argument("--replicas", type=int, default=1)
    args = ap.parse_args()
    settings = Settings()
    if not settings.redis_sentinels:
        raise SystemExit("needs replicas: DIALGUARD_REDIS_HA=1 make up, then source .stack/env")
    prefix = f"dgbench:{uuid.uuid4().hex[:8]}"
    engine = await Engine.create(settings, Policy.load("cn-default"), prefix=prefix,
                                 skip_caller_id_without_pool=True)
    await engine.set_campaign("bench")
    fast = redisconn.fast_client(settings, timeout=1.0, connect_timeout=1.0)
    rnd = random.Random(7)
    plain: list[float] = []
    waited: list[float] = []
    acks = 0
    try:
        ctx = await engine._context("bench")
        for i in range(2 * args.n):
            info = parse_number(f"+86138{rnd.randrange(10**8):08d}", "CN")
            req = DecisionRequest(number=info.e164, campaign="bench", agent=f"a{rnd.randrange(10**6)}")
            plan, _ = engine._plan(req, ctx, info, f"b{i}", NOW)
            t0 = time.perf_counter()
            if i % 2:
                res, acked = await fast.evalsha_acked(scripts.DECIDE, plan.keys, plan.args(),
                                                      replicas=args.replicas, wait_ms=100, need=_allowed)
                waited.append((time.perf_counter() - t0) * 1000)
                acks += (acked or 0) >= args.replicas
            else:
                res = await fast.evalsha(scripts.DECIDE, plan.keys, plan.args())
                plain.append((time.perf_counter() - t0) * 1000)
            assert _allowed(res), res
    finally:
        await fast.close()
        await _drop_namespace(engine.redis, prefix)
        await engine.close()
    print(f"decide.lua through the hot-path client, {args.n} of each, interleaved, Redis {settings.redis_where()}")
    print(f"{'':<24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, xs in (("no WAIT", plain), (f"+ WAIT {args.replicas} 100", waited)):
        print(f"{name:<24}{pct(xs, 0.5):>10.3f}{pct(xs, 0.99):>10.3f}{statistics.fmean(xs):>10.3f}")
    print(f"WAIT adds p50 {pct(waited, 0.5) - pct(plain, 0.5):+.3f} ms, p99 {pct(waited, 0.99) - pct(plain, 0.99):+.3f} ms "
          f"(ratio p50 {pct(waited, 0.5) / pct(plain, 0.5):.2f}); acknowledged: {acks} of {args.n}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
