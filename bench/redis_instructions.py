"""What decide.lua costs Redis, in instructions: a measure the load of a shared machine does not move.

Redis CPU per call (INFO cpu, commandstats usec) moves by a third from run to
run when other work shares the cores; the instructions Redis executes do not
(within about 2 %: the server's timers). This starts a private redis-server
under valgrind's callgrind (on a Unix socket in a temporary folder: nothing of
the dev stack is touched, no `make up` needed), fills the reference plan
(plan.build_plan) of N allowed decisions with a window of caller IDs from a
pool, and counts the instructions Redis executes while it answers them
(instrumentation on only around those calls). `--breakdown` also runs the same
calls against scripts that return at once and that only decode the plan.
`--sections` counts decide.lua cut short after each of its parts (a copy returning
there: the difference between two cuts is that part's cost, with its share of Lua's
garbage collection; stop 18's breakdown). `--outcome` then counts outcome.lua applying those calls' outcomes (as
dialguard.events sends them: a conversation of 30 s), every caller ID's health
log already holding `--health-log` entries (100, the default window: a pool in
steady state) and, with `--health-state steady` (the default), outcome.lua's
running figures of it (`fallback`: every counted outcome recomputes them from
the log; `none`: no outcome before the counted ones).

    .venv/bin/python bench/redis_instructions.py [--rules cn-default] [--calls 300] [--window 8] [--breakdown] [--outcome] [--aof]
    PYTHONPATH=<checkout of another tree> .venv/bin/python bench/redis_instructions.py   # that tree's decide.lua

Needs valgrind (callgrind_control) and redis-server on the PATH. About 10 s a run.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import redis

from dialguard import callerid_health
from dialguard.decision import scripts  # the installed tree's, or PYTHONPATH's
from dialguard.decision import plan as plan_mod
from dialguard.decision.keys import Keys
from dialguard.decision.plan import CallerIdCandidate, build_plan
from dialguard.numbers import parse_number
from dialguard.rules import Policy

AT = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # 10:00 in Shanghai, a Monday
POOL = 200
RECORD = '{"x":"' + "a" * 400 + '"}'  # an audit record of a typical size
# the plan as the tree's engine sends it: MessagePack since stop 15 (compiled
# plans; the same map as build_plan's, tests/unit/test_plan_template.py), JSON before
MSGPACK = hasattr(plan_mod, "PlanFieldError")
VARIANTS = {"return at once": "return {1}",
            "decode the plan only": "local p = cjson.decode(ARGV[1]) return {1}" if not MSGPACK else
            "local o, p = cmsgpack.unpack_one(ARGV[1]) return {1}"}


def plans(policy: Policy, calls: int, window: int) -> tuple[list[tuple], Keys, list[str]]:
    """EVALSHA arguments (numkeys, *KEYS, *ARGV) of `calls` distinct allowed decisions, 10 ms apart."""
    keys = Keys("bench", b"k" * 32)
    pool = [f"+8621500{i:04d}" for i in range(POOL)]
    tags = [keys.cid_tag(c) for c in pool]
    out = []
    for i in range(calls):
        info = parse_number(f"138{i:08d}", "CN")
        s = (i * window) % POOL
        cands = [CallerIdCandidate(pool[(s + j) % POOL], tags[(s + j) % POOL], True) for j in range(window)]
        p = build_plan(policy=policy, keys=keys, info=info, number_tag=keys.number_tag(info.e164), campaign="c1",
                       agent=f"a{i % 20}", subject=None, call_id=f"call-{i}", decision_id=f"d{i:06d}",
                       now=AT + timedelta(milliseconds=10 * i), pre_reasons=[], candidates=cands,
                       check_caller_id=bool(window), site_timezone="Asia/Shanghai", audit_payload=RECORD,
                       audit_max=10 ** 7, request_fp="ab" * 16, versions=("3|", "3"), calendar_version="")
        del p.body["audit_record"]  # as the engine's compiled plans send it: ARGV[2], not inside the plan
        if MSGPACK:
            import msgpack

            body = msgpack.packb(p.body)
        else:
            body = p.args()[0]
        out.append((len(p.keys), *p.keys, body, RECORD))
    return out, keys, tags


def outcome_args(policy: Policy, keys: Keys, calls: int) -> list[tuple]:
    """outcome.lua's EVALSHA arguments for the decisions of plans(), as
    dialguard.events.NumberEvents.report_outcome builds them: a conversation of 30 s."""
    import json

    out = []
    qttl = str(int(policy.retention().total_seconds() * 1000))
    for i in range(calls):
        now = int((AT + timedelta(milliseconds=10 * i + 40_000)).timestamp() * 1000)
        payload = json.dumps({"call_id": f"call-{i}", "at": now, "res": "conversation", "talk_s": 30, "cause": 16,
                              "sip": 200, "subject": None, "node": "n1"}, separators=(",", ":"))
        entry = callerid_health.entry_of("conversation", 30, 200, 16, now).encode()
        out.append((2, keys.call(f"call-{i}"), keys.audit, "conversation", str(now), "0", "1", "", qttl, payload,
                    f"o{i:06d}", "", entry, keys.prefix, f"a{i:06d}", str(now), "n1"))
    return out


# decide.lua cut short: (part, the line the copy returns before, inside evaluate()).
# A marker the script no longer has is skipped (the table then merges that part into the next).
SECTIONS = [
    ("the rules and calendar versions, the audit backlog, the call record", "local LIFTABLE = nil", False),
    ("evaluate(): its set-up", "  for _, code in ipairs(p.pre_reasons or {}) do deny(code) end\n", True),
    ("the kill switches (one HMGET with every candidate's cid:<tag>)", "  -- Campaign approval and its date range.",
     True),
    ("the campaign (HMGET)", "  -- Per-number flags, and the party's", True),
    ("the number's flags (HMGET)", "    if f[1] then deny('dnc') end", True),
    ("the campaign's DNC set (SISMEMBER)", "    if p.dnc_bucket_keys and not seen['dnc'] then", True),
    ("the DNC buckets (MGET, the fingerprint)", "    if f[2] or pf[1] then deny('opted_out') end", True),
    ("the number's and agent's checks (ZCOUNTs)", "  -- Caller ID: check the given one", True),
    ("the candidates' cool-downs (ZMSCORE)", "    local cr, cd = {}, {}", True),
    ("the candidates (their ZCOUNTs, the penalties' HMGET, the counts' text)", "\nlocal reasons, details, chosen, "
     "chosen_cand, seen_counts, lift_cand = evaluate(plan)\n", False),
    ("the answer's JSON", "if allowed == 1 then", False),
    ("the number's and agent's writes (ZADD, ZREMRANGEBYSCORE, PEXPIRE each)", "  if chosen_cand then\n", False),
    ("the caller ID's writes (its log, its lease)", "  if chosen ~= '' and plan.last_caller_key then", False),
    ("the last caller (SET)", "  if plan.call_key then\n    -- this attempt", False),
    ("the call record (HSET, PEXPIRE)", "-- A deny's answer", False),
    ("the audit record (XADD) and the reply", None, False),
]


def section_sources(src: str) -> list[tuple[str, str]]:
    """decide.lua cut short after each part of SECTIONS that it has."""
    out = []
    for name, marker, inside in SECTIONS:
        if marker is None:
            out.append((name, src))
            continue
        if marker.startswith("\n"):  # after this line
            i = src.find(marker)
            at = i + len(marker) if i >= 0 else -1
        else:
            at = src.find(marker)
            if at >= 0 and marker.endswith("\n"):
                at += len(marker)
        if at < 0:
            continue
        if inside:  # return from evaluate(), then from the script
            s = "local STOP = false\n" + src[:at] + ("do STOP = true; return reasons, details, chosen, chosen_cand, "
                                                      "seen_counts, lift_cand end\n") + src[at:]
            call = "local reasons, details, chosen, chosen_cand, seen_counts, lift_cand = evaluate(plan)\n"
            s = s.replace(call, call + "if STOP then return {1} end\n", 1)
        else:
            s = src[:at] + "do return {1} end\n" + src[at:]
        out.append((name, s))
    return out


APPENDONLY = "no"  # --aof: "yes", as the stack's Redis runs (scripts/stack-up.sh: appendfsync everysec)
PROFILE_TOP = 0  # --profile N: print the N functions with the most instructions (callgrind_annotate)


def measure(source: str, args: list[tuple], keys: Keys, tags: list[str], warm: int,
            then: tuple | None = None) -> tuple[float, int]:
    """(instructions a call, calls allowed) of `source` answering args[warm:] (args[:warm] warm it up).
    then: (source, its args, setup(redis)): after args ran uncounted, count that script's
    calls (its first `warm` uncounted) instead."""
    with tempfile.TemporaryDirectory(prefix="dg-ir-") as d:
        sock = os.path.join(d, "r.sock")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={d}/cg.out", "redis-server", "--port", "0",
                                 "--unixsocket", sock, "--save", "", "--appendonly", APPENDONLY,
                                 "--appendfsync", "everysec", "--dir", d],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if os.path.exists(sock):
                    break
                time.sleep(0.1)
            r = redis.Redis(unix_socket_path=sock, socket_timeout=120)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            r.sadd(keys.approved_cids, *tags)
            r.hset(keys.campaign("c1"), mapping={"approved": "1"})
            r.hset(keys.rules, mapping={"active": "3", "shadow": ""})
            sha = r.script_load(source)
            for a in args[:warm]:
                r.evalsha(sha, *a)
            if then is not None:
                for a in args[warm:]:
                    r.evalsha(sha, *a)
                source, args, setup = then
                setup(r)
                sha = r.script_load(source)
                for a in args[:warm]:
                    r.evalsha(sha, *a)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
            allowed = 0
            for a in args[warm:]:
                res = r.evalsha(sha, *a)
                allowed += int(res[0]) if isinstance(res, list) else 0
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
            try:
                r.shutdown(nosave=True)
            except (redis.ConnectionError, redis.ResponseError):
                pass
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        total = 0
        if PROFILE_TOP:
            out = subprocess.run(["callgrind_annotate", "--threshold=100"] + glob.glob(d + "/cg.out*"),
                                 capture_output=True, text=True).stdout
            rows = [ln for ln in out.splitlines() if "(" in ln and ln.strip()[:1].isdigit()]
            print("\n".join(rows[:PROFILE_TOP]))
        for f in glob.glob(d + "/cg.out*"):
            for line in open(f):
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
    return total / (len(args) - warm), allowed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default="cn-default", help="a pack name or a rules file")
    ap.add_argument("--calls", type=int, default=300, help="decisions counted (after 20 to warm up)")
    ap.add_argument("--window", type=int, default=8, help="caller IDs offered a decision (0: no caller ID)")
    ap.add_argument("--breakdown", action="store_true", help="also: a script returning at once, one only decoding")
    ap.add_argument("--sections", action="store_true",
                    help="also: decide.lua cut short after each of its parts (the cost of each part)")
    ap.add_argument("--outcome", action="store_true", help="also count outcome.lua applying those calls' outcomes")
    ap.add_argument("--health-log", type=int, default=100,
                    help="entries already in every caller ID's health log for --outcome (default %(default)s)")
    ap.add_argument("--health-state", choices=("steady", "fallback", "none"), default="steady",
                    help="--outcome: each caller ID's last outcome before the counted ones leaves outcome.lua's "
                         "running figures in use (steady), makes every counted outcome late (fallback: "
                         "recomputed from the log), or there is none (as before stop 16)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the N functions Redis spent the most instructions in, per measurement")
    ap.add_argument("--aof", action="store_true",
                    help="Redis with the append-only file on (appendfsync everysec), as the stack runs it: every "
                         "write a script makes is also written to the AOF buffer (default: off)")
    args = ap.parse_args()
    global PROFILE_TOP, APPENDONLY
    PROFILE_TOP = args.profile
    APPENDONLY = "yes" if args.aof else "no"
    for tool in ("valgrind", "callgrind_control", "redis-server"):
        if not shutil.which(tool):
            print(f"{tool} is not on the PATH (apt-get install valgrind redis-server)", file=sys.stderr)
            return 2
    warm = 20
    policy = Policy.load(args.rules)
    calls, keys, tags = plans(policy, args.calls + warm, args.window)
    print(f"decide.lua of {scripts.__file__.rsplit('/dialguard/', 1)[0]}: rules {args.rules}, a window of "
          f"{args.window} caller IDs, {args.calls} decisions, plan {len(calls[0][-2])} bytes "
          f"({'MessagePack' if MSGPACK else 'JSON'}) + a {len(RECORD)}-byte audit record, "
          f"{calls[0][0]} keys; appendonly {APPENDONLY}")
    ir, allowed = measure(scripts.DECIDE.source, calls, keys, tags, warm)
    print(f"decide.lua: {ir / 1000:,.1f} k instructions a call (Redis, with the call's socket I/O); "
          f"{allowed} of {args.calls} allowed")
    if args.breakdown:
        for name, src in VARIANTS.items():
            v, _ = measure(src, calls, keys, tags, warm)
            print(f"  same calls, a script that does {name}: {v / 1000:,.1f} k")
    if args.sections:
        last = None
        for name, src in [("the EVALSHA, returning at once", VARIANTS["return at once"]),
                          ("the plan's decode", VARIANTS["decode the plan only"])] + section_sources(
                              scripts.DECIDE.source):
            v, _ = measure(src, calls, keys, tags, warm)
            print(f"  decide.lua up to {name}: {v / 1000:,.1f} k"
                  + (f" (+{(v - last) / 1000:,.1f} k)" if last is not None else ""), flush=True)
            last = v
    if args.outcome:
        t0 = int(AT.timestamp() * 1000) - 3_600_000
        old = [callerid_health.entry_of("conversation" if j % 3 else "no_answer", 20 + j % 50, None, 16,
                                        t0 + 1000 * j).encode() for j in range(args.health_log)][::-1]

        def setup(r) -> None:  # every caller ID's log in steady state, the health settings as the engine writes them
            cid = callerid_health.config_id(policy)
            r.set(keys.g("hcfg:" + cid), callerid_health.config_json(policy))
            for t in tags:
                k = keys.prefix + ":{c:" + t + "}:o"
                r.delete(k)
                if old:
                    r.rpush(k, *old)
                if args.health_state == "none":
                    continue
                # one outcome first (uncounted): since stop 16 outcome.lua keeps the figures as running
                # state; dated before the counted ones it leaves that state in use ("steady"), dated a day
                # after them it makes every counted one a late outcome recomputed from the log ("fallback")
                at = int(AT.timestamp() * 1000) + (86_400_000 if args.health_state == "fallback" else 0)
                r.hset(keys.call("prime-" + t), mapping={"did": "prime-" + t, "ch": t, "hc": cid})
                r.eval(scripts.OUTCOME.source, 2, keys.call("prime-" + t), keys.audit, "conversation", str(at),
                       "0", "1", "", "1000", "{}", "prime-" + t, "",
                       callerid_health.entry_of("conversation", 30, 200, 16, at).encode(), keys.prefix,
                       "prime-" + t, str(at), "n1")

        oargs = outcome_args(policy, keys, args.calls + warm)
        # the outcome reader's script: since stop 19 with its rules' health settings written in
        osrc = (scripts.outcome_with(callerid_health.lua_settings(policy)).source if hasattr(scripts, "outcome_with")
                else scripts.OUTCOME.source)
        ir, applied = measure(scripts.DECIDE.source, calls, keys, tags, warm, then=(osrc, oargs, setup))
        print(f"outcome.lua: {ir / 1000:,.1f} k instructions a call (caller-ID health logs of {args.health_log}, "
              f"{args.health_state}); "
              f"{applied} of {args.calls} applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
