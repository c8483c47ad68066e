"""Does another decide.lua decide exactly as this tree's? Same plans, same state, every reply and the keyspace.

    .venv/bin/python bench/decide_equivalence.py --old <a tree or its decide.lua> [--calls 3000] [--seed 1]

For a change to decide.lua meant to change no decision (a cheaper script, stop 16):
starts a private redis-server (a Unix socket in a temporary folder; nothing of the
dev stack is touched), loads the other script in DB 0 and this tree's in DB 1, and
sends both the same reference plans (plan.build_plan): cn-default, us-regf and a
pack with tight caller-ID limits and a concurrency limit; numbers asked about again
and again (caps, minimum interval), caller-ID windows of 0-8 from small pools (some
not approved), call ids (replays), shadow rules, read-only questions; between
decisions the same state changes in both (cool-downs, caller-ID kill switches,
override grants, pick penalties). Compares every reply (verdict, reasons, details,
caller ID picked, status, lifted) and, at the end, every key (ZSETs with scores,
hashes, strings, sets, the audit stream's entries without their ids, whether a TTL is
set). Three runs: (pool, time steps, concurrency limit) vary which limits trigger.
Exit status 1 at the first difference found.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis

from dialguard.decision import schema, scripts
from dialguard.decision.models import LIFTABLE
from dialguard.decision.keys import Keys
from dialguard.decision.plan import CallerIdCandidate, build_plan, call_record_keys
from dialguard.numbers import parse_number
from dialguard.rules import Policy, load_pack_text

NEW = scripts.DECIDE.source  # as the engine loads it (models.LIFTABLE written in since stop 19)
LIFTABLE_MARK = "{--[[models.LIFTABLE]]}"
AT = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)
EXTRA = """
pack: tight
version: "1"
title: tight limits
sources: ["test"]
default_region: CN
caps:
  - id: c3
    scope: number
    max: 3
    window: {rolling: 1h}
    uncounted_outcomes: [busy]
min_interval: 2m
caller_id:
  require_approved: true
  per_minute: 4
  per_hour: 9
  concurrency: CONC
"""


def _maps(body: dict) -> dict:
    """The plan with its caller-ID candidates as maps with their index, as decide.lua read
    them before stop 18 (one flat array since), for an old script that reads `cand.tag`."""
    b = dict(body)
    if "caller_id" in b:
        names, flat = schema.names_in_order(schema.CANDIDATE), b["caller_id"]["candidates"]
        n = len(names)
        b["caller_id"] = dict(b["caller_id"], candidates=[
            dict(zip(names, flat[i:i + n]), index=i // n + 1) for i in range(0, len(flat), n)])
    if "shadow" in b:
        b["shadow"] = _maps(b["shadow"])
    return b


def _old_plan(body: dict, old: str, keys: list[str]) -> dict:
    """The plan as an old script reads it, before stop 19: `liftable` in the plan, the
    call record's keys as their text (ak/cv joined by spaces, ab/am '' for none)."""
    if "plan.liftable" in old:
        body = dict(body, liftable=sorted(LIFTABLE))
    if "call_record" in body and "keys_text(" not in old:
        t = call_record_keys(keys, body["call_record"])
        body = dict(body, call_record=dict(body["call_record"], attempt_keys=t["ak"], conversation_keys=t["cv"],
                                           abandon_key=t["ab"], machine_key=t["am"]))
    return body


def run(old: str, seed: int, calls: int, pool_size: int, steps: list[int], conc: bool) -> int:
    d = tempfile.mkdtemp(prefix="dg-eq-")
    sock = d + "/r.sock"
    p = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
                          "--dir", d], stdout=subprocess.DEVNULL)
    try:
        return _run(sock, old, seed, calls, pool_size, steps, conc)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def _dump(r) -> dict:
    """Every key: (type, content, has a TTL); a stream's entries without their ids (times)."""
    out = {}
    for k in r.scan_iter(count=1000):
        ty = r.type(k).decode()
        if ty == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        elif ty == "hash":
            v = sorted(r.hgetall(k).items())
        elif ty == "string":
            v = r.get(k)
        elif ty == "set":
            v = sorted(r.smembers(k))
        elif ty == "stream":
            v = [f for _id, f in r.xrange(k)]
        else:
            v = ty
        out[k] = (ty, v, r.pttl(k) > 0)
    return out


def _run(sock: str, old: str, seed: int, calls: int, pool_size: int, steps: list[int], conc: bool) -> int:
    for _ in range(200):
        try:
            redis.Redis(unix_socket_path=sock).ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.05)
    rs = [redis.Redis(unix_socket_path=sock, db=i) for i in (0, 1)]
    shas = [rs[0].script_load(old), rs[1].script_load(NEW)]
    old_maps = "CAND_N" not in old  # an old script reads a candidate as a map (before stop 18)
    old_plan = "plan.liftable" in old or "keys_text(" not in old  # it reads the plan of an older layout
    keys = Keys("t", b"k" * 32)
    extra = EXTRA.replace("  concurrency: CONC", "  concurrency: 2" if conc else "")
    pols = [Policy.load("cn-default"), Policy.load("us-regf"),
            Policy([load_pack_text(extra, "tight")] + list(Policy.load("cn-default").packs))]
    pool = [f"+8621500{i:04d}" for i in range(pool_size)]
    tags = [keys.cid_tag(c) for c in pool]
    for r in rs:
        r.sadd(keys.approved_cids, *tags[:max(1, len(tags) - 3)])  # 3 not approved
        r.hset(keys.campaign("c1"), mapping={"approved": "1"})
        r.hset(keys.campaign("c2"), mapping={"approved": "1", "start": "0", "end": "1795400000000"})
        r.hset(keys.rules, mapping={"active": "3", "shadow": ""})
    rnd = random.Random(seed)
    n = diffs = allowed = 0
    reasons_seen = set()
    t = AT
    for i in range(calls):
        t += timedelta(milliseconds=rnd.choice(steps))
        pol = rnd.choice(pols)
        e = rnd.choice(["+8613800000001", "+8613800000002", f"+86138{rnd.randrange(40):08d}", "+12025550123"])
        info = parse_number(e, "CN")
        w = rnd.choice([0, 1, 3, 8])
        s = rnd.randrange(len(pool))
        cands = [CallerIdCandidate(pool[(s + j) % len(pool)], tags[(s + j) % len(pool)], rnd.random() < 0.5)
                 for j in range(w)]
        party = rnd.choice([None, None, "p1", "p2"])
        call = rnd.choice([None, f"call-{rnd.randrange(30)}"])
        shadow = (pols[2], "9", []) if rnd.random() < 0.2 else None
        plan = build_plan(policy=pol, keys=keys, info=info, number_tag=keys.number_tag(info.e164),
                          campaign=rnd.choice(["c1", "c2", "c3"]), agent=f"a{rnd.randrange(3)}",
                          subject=rnd.choice([None, "debt-1"]), call_id=call, decision_id=f"d{i:06d}",
                          now=t, pre_reasons=rnd.choice([[], [], ["outside_hours"]]), candidates=cands,
                          check_caller_id=bool(w), site_timezone="Asia/Shanghai", audit_payload='{"x":1}',
                          audit_max=10 ** 7, request_fp=("ab" * 16) if call else None, versions=("3|", "3"),
                          calendar_version="", shadow=shadow, party_tag=keys.party_tag(party) if party else None)
        # state changes between decisions, the same in both DBs
        op = rnd.random()
        tg, till, pen = rnd.choice(tags), rnd.choice([-1, 60000]), rnd.randrange(9)
        for r in rs:
            if op < 0.03:
                r.zadd(keys.cid_cooldown, {tg: int(t.timestamp() * 1000) + till})
            elif op < 0.05:
                r.hset(keys.pause, "cid:" + tg, "x")
            elif op < 0.06:
                r.delete(keys.pause)
            elif op < 0.20:
                r.hset(keys.override(keys.number_tag(info.e164)),
                       mapping={"id": f"o{i}", "camp": "", "exp": "", "lifts": ""})
            elif op < 0.22:
                r.hset(keys.cid_penalties, tg, f"0.{pen}|{int(t.timestamp() * 1000) + 99999}")
        ro = [] if rnd.random() < 0.9 else ["ro"]
        res = []
        for r, sha in zip(rs, shas):
            args = plan.args()
            if r is rs[0] and (old_maps or old_plan):
                body = _old_plan(_maps(plan.body) if old_maps else plan.body, old, plan.keys)
                args = [json.dumps(body, separators=(",", ":"))] + args[1:]
            try:
                res.append(r.evalsha(sha, len(plan.keys), *plan.keys, *args, *ro))
            except redis.ResponseError as exc:
                res.append(("error", str(exc).split(":")[0]))
        n += 1
        if res[0] != res[1]:
            diffs += 1
            if diffs < 5:
                print("reply differs", i, res)
        elif isinstance(res[0], list):
            allowed += res[0][0] == 1
            reasons_seen.update(x.decode() for x in res[0][1])
            reasons_seen.update("lifted:" + x.decode() for x in res[0][6])
    a, b = _dump(rs[0]), _dump(rs[1])
    kd = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    print(f"pool {pool_size}, steps {steps} ms, concurrency limit {conc}: {n} decisions, {allowed} allowed, "
          f"reasons seen {sorted(reasons_seen)}; replies differing: {diffs}; keys {len(a)}/{len(b)}, "
          f"differing: {len(kd)}", flush=True)
    for k in kd[:3]:
        print(k, a.get(k), b.get(k))
    return 1 if diffs or kd else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a tree (its dialguard/decision/lua/decide.lua) or a .lua file")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    old = Path(args.old)
    if old.is_dir():
        old = old / "dialguard/decision/lua/decide.lua"
    src = old.read_text()
    if LIFTABLE_MARK in src:  # a tree that writes models.LIFTABLE into the script as it loads it
        src = src.replace(LIFTABLE_MARK, "{" + scripts.lua_strings(LIFTABLE) + "}")
    for i, (pool, steps, conc) in enumerate(((12, [10, 500, 20000, 90000], True), (4, [10, 100, 5000], True),
                                             (3, [10, 100, 500, 2000], False))):
        if run(src, args.seed + i, args.calls, pool, steps, conc):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
