"""Eligibility API latency and batch throughput against the stack, side by side with the targets.

    .venv/bin/python bench/eligibility.py [--singles 2000] [--batch 10000] [--rounds 3]

Starts the web app (dialguard/web/app.py) in this process on a free loopback
port, on a namespace of its own (cn-default rules, one approved campaign, some
history: attempts and DNC entries), with a temporary viewer and its token
(removed afterwards). Then:
  - one number per request: GET /api/v1/eligibility, sequential, p50/p99 (HTTP,
    token check in PostgreSQL, read-only decide.lua), and the same question
    in-process (Eligibility.check) to show what HTTP and the token cost;
  - batch: POST /api/v1/eligibility with --batch leads, numbers/s, and in-process check_many.
Targets (issue 15): p99 <= 20 ms for one number, >= 5,000 numbers/s in batch.
Needs `make up` (DIALGUARD_REDIS_URL, DIALGUARD_PG_DSN, DIALGUARD_PG_ADMIN_DSN from .stack/env).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import socket
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import aiohttp
import psycopg
from aiohttp import web

from dialguard import users
from dialguard.audit.db import admin_dsn
from dialguard.config import Settings
from dialguard.eligibility import Eligibility
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def number(i: int) -> str:
    return f"+86138{i:08d}"


async def main(args) -> None:
    # the rules clock at NOW (a working day, 10:00 in Shanghai), as the dev stack's guard does
    s = dataclasses.replace(Settings(), key_prefix=f"dgbench:{uuid.uuid4().hex[:8]}", test_clock=True)
    e = await Engine.create(s)
    await e.set_campaign("bench")
    await e.set_test_clock(NOW)
    await e.approve_caller_id("+861058000000", pool=True)  # a pool to pick the caller ID from
    # history: every 10th number already called once, every 50th on the DNC list
    for i in range(0, args.batch, 10):
        await e.decide(DecisionRequest(number=number(i), campaign="bench", agent="a1"), NOW - timedelta(hours=1))
    for i in range(0, args.batch, 50):
        await e.dnc_add(number(i))
    name = f"bench{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        users.add_user(c, name, "viewer", None)
        token, _ = users.add_token(c, name)
    app = make_app(s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base, hdr = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    el = Eligibility(await Engine.create(s, audit=False))
    try:
        async with aiohttp.ClientSession() as http:
            # warm up (scripts, templates, pools)
            for i in range(50):
                await (await http.get(f"{base}/api/v1/eligibility", headers=hdr,
                                      params={"number": number(i), "campaign": "bench", "agent": "a1"})).read()
            lat_http, lat_proc = [], []
            for k in range(args.singles):
                q = {"number": number(random.randrange(args.batch)), "campaign": "bench", "agent": "a1"}
                t0 = time.perf_counter()
                r = await http.get(f"{base}/api/v1/eligibility", headers=hdr, params=q)
                await r.read()
                lat_http.append((time.perf_counter() - t0) * 1000)
                assert r.status == 200, r.status
                t0 = time.perf_counter()
                await el.check(DecisionRequest(number=q["number"], campaign="bench", agent="a1"))
                lat_proc.append((time.perf_counter() - t0) * 1000)
            leads = [number(i) for i in range(args.batch)]
            rates_http, rates_proc = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                r = await http.post(f"{base}/api/v1/eligibility", headers=hdr,
                                    json={"campaign": "bench", "agent": "a1", "leads": leads})
                body = await r.json()
                rates_http.append(args.batch / (time.perf_counter() - t0))
                assert r.status == 200 and len(body["results"]) == args.batch
                denied = sum(x["decision"] == "deny" for x in body["results"])
                why = Counter(",".join(x["reasons"]) for x in body["results"] if x["reasons"])
                reqs = [DecisionRequest(number=n, campaign="bench", agent="a1") for n in leads]
                t0 = time.perf_counter()
                await el.check_many(reqs)
                rates_proc.append(args.batch / (time.perf_counter() - t0))
    finally:
        await runner.cleanup()
        await el.engine.close()
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("delete from web_users where name = %s", (name,))
        await _drop_namespace(e.redis, s.key_prefix)
        await e.close()

    p50h, p99h = pct(lat_http, .5), pct(lat_http, .99)
    p50p, p99p = pct(lat_proc, .5), pct(lat_proc, .99)
    bh, bp = max(rates_http), max(rates_proc)
    print(f"one number, {args.singles} sequential questions")
    print(f"  GET /api/v1/eligibility   p50 {p50h:6.2f} ms  p99 {p99h:6.2f} ms   target p99 <= 20 ms: "
          f"{20 / p99h:5.1f}x headroom")
    print(f"  Eligibility.check         p50 {p50p:6.2f} ms  p99 {p99p:6.2f} ms   (in-process, no HTTP/token)")
    print(f"batch of {args.batch:,} leads ({denied:,} denied: {dict(why.most_common(3))}), best of {args.rounds}")
    print(f"  POST /api/v1/eligibility  {bh:8,.0f} numbers/s   target >= 5,000/s: {bh / 5000:5.1f}x")
    print(f"  Eligibility.check_many    {bp:8,.0f} numbers/s   (in-process)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--singles", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(ap.parse_args()))
