#!/usr/bin/env python3
"""make demo: real calls through the guard, then a US debt-collection replay.

Act 1. SIPp plays the agents and the carrier; every call goes agents ->
Asterisk -> [outbound] -> dialguard-dial -> FastAGI check -> engine -> Redis,
and is dialed only if the guard allows it. The calls (scripts/demo/calls.csv)
are placed in waves on the dev stack's test clock, so that together they show
every reason code of the SPEC at least once:

  wave 1-2  Sat 2026-10-10 10:00 Shanghai (a make-up working day, 调休);
            wave 2 comes after wave 1's calls ended and were reported;
  wave 3    Thu 2026-10-01 10:00 Shanghai (National Day);
  wave 4    the FastAGI server stopped: no guard, no call (restarted after).

Demo campaigns carry small packs of their own (scripts/demo/packs/, combined
with cn-default: strictest wins); events go through the admin CLI (dnc add,
optout, complaint, consent, pause). The demo first deletes what earlier runs
left under its fixed numbers, agents, caller IDs and campaigns, so every run
gives the same verdicts; the test clock is reset at the end.

Act 2. `dialguard simulate scripts/demo/us-debt.yaml` replays a week of US
debt collection (us-regf + us-tcpa) in an isolated namespace and the demo
prints, call by call, the decision and why.

Run by `make demo` (after `make up`). Exit 1 if a verdict differs from
calls.csv's expectation or a reason code was not shown.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "scripts" / "demo"
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from sipp import load_stack_env, run_calls, stack_dir, write_injection  # noqa: E402

load_stack_env()

from dialguard.config import Settings  # noqa: E402
from dialguard.engine import EXPLAIN, Engine  # noqa: E402
from dialguard.models import REASONS  # noqa: E402
from dialguard.numbers import parse_number  # noqa: E402
from dialguard.rules import Policy  # noqa: E402

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
CLI = REPO_ROOT / ".venv" / "bin" / "dialguard"
CDR_COLUMNS = ["start", "src", "dst", "disposition", "billsec", "campaign", "agent",
               "dialguard_result", "dialguard_reasons", "dialguard_decision_id", "uniqueid", "hangupcause"]

# The rules clock of each wave (the dev stack's AGI server runs with DIALGUARD_TEST_CLOCK=1).
CLOCKS = {
    1: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
    2: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
    3: datetime(2026, 10, 1, 10, 0, tzinfo=SHANGHAI),
    4: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
}
WAVES = {
    1: "Sat 2026-10-10 10:00 Shanghai, a make-up working day",
    2: "the same morning, after wave 1's calls ended and were reported",
    3: "Thu 2026-10-01 10:00 Shanghai, National Day",
    4: "the FastAGI server stopped",
}
HOLD_MS = {1: 3000}  # wave 1: long enough to be a conversation, and for C2 to find C1 still talking

POOL = "+861058001234"
PACKS = DEMO / "packs"
# campaign -> (rules, its caller-ID pool); demo-unapproved is never approved.
CAMPAIGNS: dict[str, tuple[str | None, list[str]]] = {
    "demo-sale": (None, [POOL]),
    "demo-paused": (None, [POOL]),
    "demo-consent": (f"cn-default,{PACKS / 'demo-consent.yaml'}", [POOL]),
    "demo-us": ("us-tcpa", []),
    "demo-world": (f"cn-default,{PACKS / 'demo-callee-hours.yaml'}", [POOL]),
    "demo-interval": (f"cn-default,{PACKS / 'demo-min-interval.yaml'}", [POOL]),
    "demo-quiet": (f"cn-default,{PACKS / 'demo-quiet-after-conversation.yaml'}", [POOL]),
    "demo-abandon": (f"cn-default,{PACKS / 'demo-quiet-after-abandon.yaml'}", [POOL]),
    "demo-agentcap": (f"cn-default,{PACKS / 'demo-agent-cap.yaml'}", [POOL]),
    "demo-cidrate": (f"cn-default,{PACKS / 'demo-caller-id-rate.yaml'}", ["+861058001235"]),
    "demo-cidconc": (f"cn-default,{PACKS / 'demo-caller-id-concurrency.yaml'}", ["+861058001236"]),
}
ALL_CAMPAIGNS = [*CAMPAIGNS, "demo-unapproved"]
# Events, through the admin CLI.
EVENTS = [
    ["dnc", "add", "13800138005"],
    ["optout", "13800138006"],
    ["complaint", "13800138007"],
    ["consent", "13800138008"],
    ["pause", "--campaign", "demo-paused"],
]


@dataclass
class Call:
    wave: int
    number: str
    campaign: str
    agent: str
    caller_id: str
    outcome: str
    expect: str
    note: str
    verdict: str = "?"  # ALLOW, or the reasons from the CDR
    cause: str = ""
    carrier: int = 0
    agents_saw: str = ""
    ok: bool = False
    extra: dict = field(default_factory=dict)


def load_calls() -> list[Call]:
    rows = []
    for line in (DEMO / "calls.csv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f = line.split(";")
            rows.append(Call(int(f[0]), f[1], f[2], f[3], f[4], f[5], f[6], f[7]))
    return rows


def cli(args: list[str]) -> tuple[list[str], int, str]:
    out = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60)
    lines = (out.stdout.strip() or out.stderr.strip()).splitlines()
    return args, out.returncode, lines[-1] if lines else ""


def astcli(command: str) -> str:
    out = subprocess.run([str(REPO_ROOT / "scripts" / "astcli.sh"), command], capture_output=True, text=True,
                         timeout=30)
    return out.stdout if out.returncode == 0 else ""


def agi_server(action: str) -> None:
    out = subprocess.run([str(REPO_ROOT / "scripts" / "agi-server.sh"), action], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/agi-server.sh {action}: {out.stderr.strip()}")


def wait_idle(timeout: float = 10.0) -> None:
    """Asterisk has no channel left: every hangup handler (the report) has run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if astcli("core show channels count").strip().startswith("0 active channels"):
            return
        time.sleep(0.1)


def e164(number: str) -> str | None:
    return parse_number(number, "CN").e164


async def reset_demo_state(engine: Engine, calls: list[Call]) -> None:
    """Delete what earlier demo runs left, so every run starts from the same state."""
    k = engine.keys
    keys: list[str] = []
    campaigns = ALL_CAMPAIGNS
    for number in {c.number for c in calls}:
        n = e164(number)
        if not n:
            continue
        h = k.number_tag(n)
        attempt_keys = [k.attempts(h, "number")] + [k.attempts(h, "number_campaign", campaign=c) for c in campaigns]
        keys += attempt_keys + [a + ":x" for a in attempt_keys]
        keys += [k.conversations(h, "number"), k.num(h, "ab"), k.num(h, "am"), k.flags(h), k.campaign_dnc(h)]
    keys += [k.agent(a) for a in {c.agent for c in calls}]
    cids = {cid for _, pool in CAMPAIGNS.values() for cid in pool} | {c.caller_id for c in calls if c.caller_id}
    for cid in cids:
        tag = k.cid_tag(cid)
        keys += [k.cid_attempts(tag), k.cid_live(tag)]
    keys += [k.campaign(c) for c in campaigns] + [k.pool(c) for c in campaigns]
    await engine.redis.unlink(*keys)
    await engine.redis.zrem(k.cid_cooldown, *[k.cid_tag(c) for c in cids])
    for c in campaigns:
        await engine.resume("campaign", c)
    for number in ("13800138005",):
        await engine.dnc_remove(number)


async def approve(engine: Engine) -> list[str]:
    """Campaigns and caller IDs, as `dialguard campaign approve` / `callerid add` do."""
    said = []
    for name, (rules, pool) in CAMPAIGNS.items():
        await engine.set_campaign(name, True, rules=rules)
        for cid in pool:
            await engine.approve_caller_id(cid, campaign=name)
        shown = ",".join(Path(r).name if "/" in r else r for r in rules.split(",")) if rules else ""
        said.append(f"dialguard campaign approve {name}" + (f" --rules {shown}" if shown else "")
                    + "".join(f"; dialguard callerid add {cid} --campaign {name}" for cid in pool))
    return said


def read_cdr(path: Path, offset: int) -> list[dict[str, str]]:
    """CDR lines after `offset`, one per call: a call whose Dial failed (busy...)
    also gets a line written before its hangup handler ran, without the guard's
    columns; the line with them wins."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        f.seek(offset)
        rows = [dict(zip(CDR_COLUMNS, row)) for row in csv.reader(f) if row]
    calls: dict[str, dict[str, str]] = {}
    for row in rows:
        key = row.get("uniqueid") or str(id(row))
        if key not in calls or row.get("dialguard_result"):
            calls[key] = row
    return list(calls.values())


def place_wave(wave: int, calls: list[Call], workdir: Path, ports: dict[str, int], cdr_path: Path) -> None:
    wd = workdir / f"wave-{wave}"
    wd.mkdir(parents=True, exist_ok=True)
    injection = wd / "calls.csv"
    write_injection(injection, [(c.number, c.campaign, c.agent, c.caller_id, c.outcome) for c in calls])
    offset = cdr_path.stat().st_size if cdr_path.exists() else 0
    run = run_calls(injection, wd, sip_port=ports["sip"], agents_port=ports["agents"], carrier_port=ports["carrier"],
                    caller="agents", rate=10, limit=40, hold_ms=HOLD_MS.get(wave, 300), timeout_s=60,
                    uac_scenario=DEMO / "agents_uac.xml", uas_scenario=DEMO / "carrier_uas.xml")
    wait_idle()
    rows: dict[str, list[dict[str, str]]] = {}
    deadline = time.monotonic() + 5
    while True:
        rows = {}
        for row in read_cdr(cdr_path, offset):
            rows.setdefault(row["dst"], []).append(row)
        if sum(map(len, rows.values())) >= len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    at_carrier = Counter(i.number for i in run.invites)
    saw: dict[str, list[str]] = {}
    for uc in run.calls:
        saw.setdefault(uc.number, []).append("answered" if uc.outcome == "answered" else f"SIP {uc.code}")
    for c in calls:
        row = rows.get(c.number, []).pop(0) if rows.get(c.number) else None
        if row:
            c.verdict = "ALLOW" if row["dialguard_result"] == "ALLOW" else (row["dialguard_reasons"] or "DENY")
            c.cause = row["hangupcause"]
        c.agents_saw = saw.get(c.number, ["-"]).pop(0) if saw.get(c.number) else "-"
        c.carrier = 1 if at_carrier.get(c.number, 0) > 0 else 0
        if c.carrier:
            at_carrier[c.number] -= 1
        c.ok = c.verdict == c.expect and c.carrier == (1 if c.expect == "ALLOW" else 0)
    if run.uac.failed:
        print(f"  (SIPp agents: {run.uac.failed} failed calls; see {wd})")


def table(rows: list[tuple[str, ...]], indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def act2() -> bool:
    scenario = DEMO / "us-debt.yaml"
    print()
    print("Act 2: a week of US debt collection, replayed with `dialguard simulate` "
          f"({scenario.relative_to(REPO_ROOT)}: us-regf + us-tcpa)")
    out = subprocess.run([str(CLI), "simulate", str(scenario)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        print(f"  dialguard simulate failed: {out.stderr.strip()}")
        return False
    import yaml

    events = yaml.safe_load(scenario.read_text())["events"]
    et = ZoneInfo("America/New_York")
    rows = [("local time (ET)", "number", "debt", "decision", "why")]
    for line in out.stdout.splitlines():
        d = json.loads(line)
        ev = events[d["i"]]["attempt"]
        at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).astimezone(et)
        if d["decision"] == "allow":
            why = "every rule passes"
        else:
            why = "; ".join(f"{r}: {EXPLAIN[r]}" for r in d["reasons"])
            if d["next_eligible_at"]:
                ne = datetime.fromisoformat(d["next_eligible_at"].replace("Z", "+00:00"))
                local = ne.astimezone(ZoneInfo(parse_number(d["number"], "US").timezones[0]))
                why += f" (next eligible {local:%a %m-%d %H:%M} local)"
            else:
                why += " (never again)"
        rows.append((f"{at:%a %m-%d %H:%M}", d["number"], ev.get("subject") or "", d["decision"].upper(), why))
    table(rows)
    print("  (events between the calls: a busy signal, not counted by Regulation F; a 3-minute conversation "
          "about debt-17; an opt-out)")
    return True


def main() -> int:
    t0 = time.monotonic()
    env = os.environ
    ports = {"sip": int(env.get("DIALGUARD_SIP_PORT", 15060)), "agents": int(env.get("DIALGUARD_AGENTS_PORT", 15080)),
             "carrier": int(env.get("DIALGUARD_CARRIER_PORT", 15070))}
    stack = stack_dir()
    workdir = stack / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    cdr_path = stack / "asterisk" / "log" / "cdr-custom" / "dialguard.csv"
    calls = load_calls()

    version = astcli("core show version").split(" built ")[0].strip()
    if not version:
        print("the stack's Asterisk does not answer: run `make up`", file=sys.stderr)
        return 3
    if "dialguard-dial" not in astcli("dialplan show outbound"):
        print("the dialplan's [outbound] does not go through dialguard-dial: the guard is not plugged in",
              file=sys.stderr)
        return 3
    print(f"dialguard demo. Act 1: {len(calls)} calls from the agents (SIPp) through {version} and the guard "
          f"(FastAGI {env.get('DIALGUARD_AGI_PORT', '14573')}), to the carrier (SIPp)")

    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(Engine.create(Settings(), Policy.load("cn-default")))
    try:
        loop.run_until_complete(reset_demo_state(engine, calls))
        print("the admin's part (campaigns and caller IDs, then events with the CLI):")
        for line in loop.run_until_complete(approve(engine)):
            print(f"  {line}")
        with ThreadPoolExecutor(len(EVENTS)) as pool:
            for args, rc, said in pool.map(cli, EVENTS):
                print(f"  dialguard {' '.join(args)}: {said if rc == 0 else 'FAILED ' + said}")
                if rc != 0:
                    return 1

        by_wave: dict[int, list[Call]] = {}
        for c in calls:
            by_wave.setdefault(c.wave, []).append(c)
        for wave in sorted(by_wave):
            loop.run_until_complete(engine.set_test_clock(CLOCKS[wave]))
            print()
            print(f"wave {wave}: {WAVES[wave]} ({len(by_wave[wave])} calls)")
            if wave == 4:
                agi_server("stop")
                try:
                    place_wave(wave, by_wave[wave], workdir, ports, cdr_path)
                finally:
                    agi_server("start")
            else:
                place_wave(wave, by_wave[wave], workdir, ports, cdr_path)
            rows = [("number", "campaign", "agent", "guard (CDR)", "cause", "carrier", "", "why")]
            for c in by_wave[wave]:
                rows.append((c.number, c.campaign, c.agent, c.verdict, c.cause, "reached" if c.carrier else "-",
                             "" if c.ok else f"EXPECTED {c.expect}", c.note))
            table(rows)
    finally:
        loop.run_until_complete(engine.set_test_clock(None))
        loop.run_until_complete(engine.resume("campaign", "demo-paused"))
        loop.run_until_complete(engine.close())
        loop.close()

    allowed = [c for c in calls if c.verdict == "ALLOW"]
    denied = [c for c in calls if c.verdict not in ("ALLOW", "?")]
    reasons = Counter(r for c in denied for r in c.verdict.split(",") if r)
    missing = [r for r in REASONS if r not in reasons]
    wrong = [c for c in calls if not c.ok]
    reached = sum(c.carrier for c in calls)
    print()
    print("summary")
    print(f"  calls offered by the agents         {len(calls)}")
    print(f"  allowed by the guard                {len(allowed)}")
    print(f"  reached the carrier                 {reached}  (answered "
          f"{sum(1 for c in allowed if c.agents_saw == 'answered')}, busy "
          f"{sum(1 for c in allowed if c.agents_saw == 'SIP 486')})")
    print(f"  denied before the carrier           {len(denied)}  (Q.850 cause 21, SIP 403; "
          f"34, SIP 503, when the guard was unavailable)")
    print("  denied by reason                    " + ", ".join(f"{r} {reasons[r]}" for r in REASONS if reasons[r]))
    print(f"  reason codes shown                  {len(REASONS) - len(missing)} of {len(REASONS)}"
          + (f" (missing: {', '.join(missing)})" if missing else " (all of SPEC §2)"))
    if wrong:
        print(f"  UNEXPECTED verdicts                 {len(wrong)}: "
              + ", ".join(f"{c.number} wave {c.wave}: {c.verdict} (expected {c.expect})" for c in wrong))
    print()
    print("where to look next")
    print(f"  the CDR with the guard's verdict   {cdr_path}")
    print(f"  the guard's decisions (one line each, numbers masked)   {stack / 'services' / 'agi.log'}")
    print(f"  Asterisk                           {stack / 'asterisk' / 'log' / 'messages.log'} (console: make asterisk-cli)")
    print(f"  SIPp logs, per wave                {workdir}/wave-N/")
    print("  the calls and expectations         scripts/demo/calls.csv; demo rules in scripts/demo/packs/")
    print("  one decision by hand               .venv/bin/dialguard check NUMBER --campaign C --agent A"
          " (a real attempt: it counts)")

    ok_act2 = act2()
    print()
    print(f"demo done in {time.monotonic() - t0:.0f} s; the stack keeps running (`make status`, `make down`)")
    return 0 if not wrong and not missing and ok_act2 else 1


if __name__ == "__main__":
    sys.exit(main())
