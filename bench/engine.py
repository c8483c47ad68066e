"""Engine throughput and latency, with redis-benchmark's ceiling, in one run.

    .venv/bin/python bench/engine.py [--seconds 3] [--concurrency 1,16,64]

Runs decide() in one guard process (uvloop) against the stack's Redis at each
concurrency, then redis-benchmark EVALSHA of the same decide.lua with an
equivalent plan (same keys per number, random numbers) as the ceiling.
With --pool N, the same engine runs again with N caller IDs in the campaign's
pool: each decision checks the window of candidates offered (8 at most) and
picks the least used, healthiest one (decide.lua), and prints what that costs.
With --party, us-regf requests without a party, with one (its counters beside
the number's, from the compiled plan) and with one through build_plan (the
reference plan writer) run side by side, with the plan's own CPU cost.
With --shadow, the same engine runs again with shadow rules published (cn-carrier
evaluated beside cn-default in the same script call) and prints what they cost.
Every run draws its own numbers (a later run does not find the parsed numbers
of an earlier one in the cache); --repeat R makes a share R of the decisions
ask again about a number the same worker asked about before (dialer retries:
parse_number's cache answers, some are denied by the attempt caps).
"CPU us/op" is this process's CPU time per decision (client loop included): it
moves much less than ops/s when other work shares the machine. Last line: the
ratio at concurrency 16. With --wait N (needs replicas: the DIALGUARD_REDIS_HA=1
stack), the engine runs again with DIALGUARD_REDIS_WAIT_REPLICAS=N and prints
what waiting for the replicas' acknowledgement of every ALLOW costs (p50, p99,
ops/s side by side). --ceiling adds redis-benchmark EVALSHA pipelined 16 deep:
what one Redis core can decide when the client costs next to nothing (the
traffic at which a single primary stops being enough, docs/OPERATIONS.md).
Targets on the 2-core dev machine:
>= 10,000 decisions/s per process at concurrency 16 with p99 <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlparse

from dialguard.decision import scripts
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.numbers import parse_number
from dialguard.decision.plan import build_plan
from dialguard.rules import Policy
from dialguard.simulate import _drop_namespace

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai, a working day
US_NOW = datetime(2026, 11, 23, 15, tzinfo=timezone.utc)  # Mon 10:00 Eastern
PARTY_CASES = (  # (label, request kind, compiled plans)
    ("us-regf number+subject", "us", True),
    ("us-regf + party", "party", True),
    ("us-regf + party, build_plan", "party", False),  # the party path before it was compiled
)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


_RUNS = itertools.count()


async def run_engine(engine: Engine, concurrency: int, seconds: float, repeat: float = 0.0, kind: str = "cn",
                     now: datetime = NOW):
    """kind: "cn" (Chinese numbers, cn-default), "us" (US numbers with a subject, us-regf),
    "party" (the same with a party: the person's counters beside the number's)."""
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    count = denies = 0
    run = next(_RUNS)

    async def worker(wid):
        nonlocal count, denies
        rnd = random.Random(f"{run}:{wid}")
        seen: list[str] = []
        while time.perf_counter() < stop:
            if seen and rnd.random() < repeat:
                number = rnd.choice(seen)
            else:
                number = f"+86138{rnd.randrange(10**8):08d}" if kind == "cn" else f"+1202{rnd.randrange(10**7):07d}"
                if len(seen) < 1000:
                    seen.append(number)
            # many agents, as in a call centre: the agent cap (200/day) does not turn the run into denies
            agent = f"a{rnd.randrange(10**6)}"
            if kind == "cn":
                req = DecisionRequest(number=number, campaign="bench", agent=agent)
            else:
                req = DecisionRequest(number=number, campaign="bench", agent=agent, subject=f"debt-{rnd.randrange(100)}",
                                      party=f"acct-{rnd.randrange(10**6)}" if kind == "party" else None)
            t0 = time.perf_counter()
            d = await engine.decide(req, now=now)
            lat.append((time.perf_counter() - t0) * 1000)
            if "guard_unavailable" in d.reasons:
                raise SystemExit(f"guard_unavailable during the benchmark: {d.explanations}")
            count += 1
            denies += d.decision == "deny"

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU of this process per decision: what the code costs, whatever else runs on the machine
    return count / wall, statistics.median(lat), pct(lat, 0.99), cpu / max(count, 1) * 1e6, denies / max(count, 1)


def redis_benchmark(engine: Engine, settings: Settings, concurrency: int, n: int, pipeline: int = 1):
    """EVALSHA of decide.lua with the plan the engine builds; numbers randomized."""
    exe = shutil.which("redis-benchmark")
    if not exe:
        raise SystemExit("redis-benchmark not found (package redis-tools, installed by make setup)")
    info = parse_number("+8613800138000", "CN")
    tag = engine.keys.number_tag(info.e164)
    plan = build_plan(policy=engine.policy, keys=engine.keys, info=info, number_tag=tag, campaign="bench",
                      agent="a1", subject=None, call_id=None, decision_id="bench", now=NOW, pre_reasons=[],
                      candidates=[], check_caller_id=False, site_timezone=settings.site_timezone,
                      audit_payload='{"bench":1}', audit_max=None)
    # random numbers and agents, as in run_engine (redis-benchmark draws each __rand_int__ anew)
    atag = engine.keys.agent("a1").split("{a:")[1].split("}")[0]
    keys = [k.replace(tag, tag[:20] + "__rand_int__").replace(atag, "__rand_int__") for k in plan.keys]
    u = urlparse(settings.redis_url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    if settings.redis_sentinels:  # the primary Sentinel names now
        from redis.sentinel import Sentinel

        host, port = Sentinel(settings.sentinel_addrs()).discover_master(settings.redis_master)
    from dialguard.config import redis_auth

    user, password = redis_auth(settings.redis_url)  # the dev stack has no password-less user
    auth = (["--user", user] if user else []) + (["-a", password] if password else [])
    cmd = [exe, "-h", host, "-p", str(port), *auth, "-n", str(n), "-c", str(concurrency),
           "-r", "100000000", "-P", str(pipeline), "-q", "--csv", "EVALSHA", scripts.DECIDE.sha, str(len(keys)), *keys, *plan.args()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    # CSV: "test","rps","avg_latency_ms","min","p50","p95","p99","max"
    rows = [r for r in out.splitlines() if r.startswith('"EVALSHA')]
    if not rows:
        raise SystemExit(f"redis-benchmark gave no result: {out[-500:]}")
    # the test name holds the whole command (with quotes): read the 7 numbers from the right
    nums = [float(f.strip('"')) for f in rows[-1].rsplit(",", 7)[1:]]
    return nums[0], nums[3], nums[5]


def plan_cost(engine: Engine, ctx, kind: str, compiled: bool, n: int = 20000) -> float:
    """CPU microseconds per plan (Decider._plan: time rules, keys, JSON; no Redis)."""
    engine.compiled_plans = compiled
    rnd = random.Random(7)
    reqs = []
    for _ in range(n):
        number = f"+1202{rnd.randrange(10**7):07d}"
        reqs.append((DecisionRequest(number=number, campaign="bench", agent=f"a{rnd.randrange(1000)}",
                                     subject=f"debt-{rnd.randrange(100)}",
                                     party=f"acct-{rnd.randrange(10**6)}" if kind == "party" else None),
                     parse_number(number, "US")))
    c0 = time.process_time()
    for i, (req, info) in enumerate(reqs):
        engine._plan(req, ctx, info, f"d{i}", US_NOW)
    return (time.process_time() - c0) / n * 1e6


async def party_rows(settings: Settings, prefix: str, levels: list[int], args) -> None:
    """us-regf (caps and quiet scoped party+subject): a request without a party, with
    one (the person's counters beside the number's, compiled), and with one through
    build_plan (what the party path cost before it was compiled), side by side."""
    us = await Engine.create(settings, Policy.load("us-regf"), prefix=prefix, skip_caller_id_without_pool=True)
    try:
        await us.set_campaign("bench")
        ctx = await us._context_shared("bench")
        costs = [plan_cost(us, ctx, kind, compiled) for _label, kind, compiled in PARTY_CASES]
        for (label, _kind, _c), cost in zip(PARTY_CASES, costs):
            print(f"{'plan only: ' + label:<40}{'':>6}{'':>12}{'':>10}{'':>10}{cost:>11.1f}"
                  f"   ({cost / costs[0]:.2f} x number+subject)", flush=True)
        for c in levels:
            base = None
            for label, kind, compiled in PARTY_CASES:
                us.compiled_plans = compiled
                rate, p50, p99, cpu, denied = await run_engine(us, c, args.seconds, args.repeat, kind=kind,
                                                               now=US_NOW)
                base = base or rate
                print(f"{label:<40}{c:>6}{rate:>12,.0f}{p50:>10.3f}{p99:>10.3f}{cpu:>11.0f}{denied:>8.0%}"
                      f"   ({rate / base:.2f} of number+subject)", flush=True)
        us.compiled_plans = True
    finally:
        await us.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--shadow", action="store_true", help="also measure with shadow rules published")
    ap.add_argument("--ceiling", action="store_true",
                    help="also redis-benchmark EVALSHA pipelined (-P 16): one Redis core's ceiling")
    ap.add_argument("--wait", type=int, default=0,
                    help="also measure with an ALLOW waiting for this many replicas (WAIT)")
    ap.add_argument("--pool", type=int, default=0, help="also measure with N caller IDs in the campaign's pool")
    ap.add_argument("--party", action="store_true",
                    help="also us-regf requests without and with a party (party-scoped caps), side by side")
    ap.add_argument("--repeat", type=float, default=0.0,
                    help="share of decisions on a number the worker asked about before (0..1)")
    args = ap.parse_args()
    settings = Settings()
    prefix = f"dgbench:{uuid.uuid4().hex[:8]}"
    policy = Policy.load("cn-default")
    engine = await Engine.create(settings, policy, prefix=prefix, skip_caller_id_without_pool=True)
    await engine.set_campaign("bench")
    levels = [int(x) for x in args.concurrency.split(",")]
    print(f"dialguard engine benchmark: rules {policy.name}, Redis {settings.redis_where()}, "
          f"{os.cpu_count()} cores, {args.seconds:.0f}s per level")
    if args.repeat:
        print(f"{args.repeat:.0%} of the decisions on a number asked about before")
    print(f"{'what':<28}{'conc':>6}{'ops/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'CPU us/op':>11}{'denied':>8}")
    results = {}
    try:
        for c in levels:
            rate, p50, p99, cpu, denied = await run_engine(engine, c, args.seconds, args.repeat)
            results[c] = rate
            print(f"{'engine decide()':<28}{c:>6}{rate:>12,.0f}{p50:>10.3f}{p99:>10.3f}{cpu:>11.0f}{denied:>8.0%}",
                  flush=True)
        if args.pool:
            for i in range(args.pool):
                await engine.approve_caller_id(f"+8621{50000000 + i:08d}", campaign="bench")
            for c in levels:
                rate, p50, p99, cpu, denied = await run_engine(engine, c, args.seconds, args.repeat)
                print(f"{f'decide() + pool of {args.pool}':<28}{c:>6}{rate:>12,.0f}{p50:>10.3f}{p99:>10.3f}"
                      f"{cpu:>11.0f}{denied:>8.0%}   ({rate / results[c]:.2f} of without)", flush=True)
            await engine.redis.delete(engine.keys.pool("bench"))
            engine._ctx_cache.clear()
        if args.shadow:
            from dialguard.rules_store import RulesStore

            store = RulesStore(engine.redis, engine.keys)
            await store.apply("cn-default")
            await store.apply("cn-carrier", shadow=True)
            for c in levels:
                rate, p50, p99, cpu, denied = await run_engine(engine, c, args.seconds, args.repeat)
                print(f"{'decide() + shadow rules':<28}{c:>6}{rate:>12,.0f}{p50:>10.3f}{p99:>10.3f}{cpu:>11.0f}"
                      f"{denied:>8.0%}   ({rate / results[c]:.2f} of without)", flush=True)
            await store.shadow_off()
        if args.wait:
            from dataclasses import replace

            waiting = await Engine.create(replace(settings, redis_wait_replicas=args.wait, redis_wait_ms=100),
                                          policy, prefix=prefix, skip_caller_id_without_pool=True)
            try:
                base = {}
                for c in levels:
                    base[c] = await run_engine(engine, c, args.seconds, args.repeat)
                    rate, p50, p99, cpu, denied = await run_engine(waiting, c, args.seconds, args.repeat)
                    b = base[c]
                    print(f"{f'decide() + WAIT {args.wait}':<28}{c:>6}{rate:>12,.0f}{p50:>10.3f}{p99:>10.3f}"
                          f"{cpu:>11.0f}{denied:>8.0%}   (without, just before: {b[0]:,.0f}/s, p50 {b[1]:.3f}, "
                          f"p99 {b[2]:.3f}; ratio {rate / b[0]:.2f})", flush=True)
            finally:
                await waiting.close()
        if args.party:
            await party_rows(settings, prefix, levels, args)
        ceilings = {}
        for c in levels:
            rps, p50, p99 = redis_benchmark(engine, settings, c, n=max(20000, int(results[c] * args.seconds)))
            ceilings[c] = rps
            print(f"{'redis-benchmark EVALSHA':<28}{c:>6}{rps:>12,.0f}{p50:>10.3f}{p99:>10.3f}", flush=True)
        if args.ceiling:
            # Pipelined: the client's cost almost gone, what one Redis core can decide.
            rps, p50, p99 = redis_benchmark(engine, settings, 16, n=200000, pipeline=16)
            print(f"{'redis-benchmark EVALSHA -P 16':<28}{16:>6}{rps:>12,.0f}{p50:>10.3f}{p99:>10.3f}"
                  "   (one Redis core's decision ceiling)", flush=True)
    finally:
        await _drop_namespace(engine.redis, prefix)
        await engine.close()
    ref = 16 if 16 in results else levels[-1]
    print(f"engine/redis-benchmark ratio at concurrency {ref}: {results[ref] / ceilings[ref]:.3f} "
          f"({results[ref]:,.0f} vs {ceilings[ref]:,.0f} decisions/s)")


if __name__ == "__main__":
    # The loop must be uvloop's from the start, as in the FastAGI server
    # (uvloop.install() inside a running asyncio loop changes nothing).
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
