#!/usr/bin/env python3
"""make demo: real calls through the stack, and what the guard made of them.

SIPp plays the agents: it dials every number of scripts/demo_calls.csv
(number;campaign;agent;note) through Asterisk, with X-Campaign / X-Agent
headers. SIPp plays the carrier: it answers whatever Asterisk lets through and
logs each INVITE. The summary compares the two ends, with the guard's verdict
for each call from the CDR (.stack/asterisk/log/cdr-custom/dialguard.csv).

Run by `make demo` after `make up`; options: --calls FILE, --rate N, --hold-ms N.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from sipp import read_injection, run_calls, stack_dir, load_stack_env, write_injection  # noqa: E402

# The admin's part before calling: approve the demo's campaigns (not
# "unknown-campaign") and a caller ID for the pool (dialguard CLI, live store).
DEMO_SETUP = [
    ["campaign", "approve", "spring-sale"],
    ["campaign", "approve", "debt-17"],
    ["callerid", "add", "+861058001234"],
]

CDR_COLUMNS = ["start", "src", "dst", "disposition", "billsec", "campaign", "agent",
               "dialguard_result", "dialguard_reasons", "dialguard_decision_id", "uniqueid"]


def astcli(command: str) -> str:
    out = subprocess.run([str(REPO_ROOT / "scripts" / "astcli.sh"), command],
                         capture_output=True, text=True, timeout=30)
    return out.stdout if out.returncode == 0 else ""


def prepare_guard() -> None:
    cli = REPO_ROOT / ".venv" / "bin" / "dialguard"
    for command in DEMO_SETUP:
        out = subprocess.run([str(cli), *command], capture_output=True, text=True, timeout=30)
        status = "ok" if out.returncode == 0 else f"failed: {(out.stderr or out.stdout).strip()[-200:]}"
        print(f"  dialguard {' '.join(command)}: {status}")


def new_cdr_rows(path: Path, offset: int) -> list[dict[str, str]]:
    """CDR lines written after byte `offset` (this run's calls)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        f.seek(offset)
        return [dict(zip(CDR_COLUMNS, row)) for row in csv.reader(f) if row]


def verdict(row: dict[str, str]) -> str:
    result = row.get("dialguard_result") or ""
    if not result:
        return "no check"
    reasons = row.get("dialguard_reasons") or ""
    return f"{result} {reasons}".strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=Path, default=REPO_ROOT / "scripts" / "demo_calls.csv")
    parser.add_argument("--rate", type=float, default=5, help="new calls per second")
    parser.add_argument("--hold-ms", type=int, default=1000, help="talk time of an answered call")
    args = parser.parse_args()

    load_stack_env()
    env = os.environ
    sip_port = int(env.get("DIALGUARD_SIP_PORT", 15060))
    agents_port = int(env.get("DIALGUARD_AGENTS_PORT", 15080))
    carrier_port = int(env.get("DIALGUARD_CARRIER_PORT", 15070))
    stack = stack_dir()
    workdir = stack / "demo"
    workdir.mkdir(parents=True, exist_ok=True)

    rows = read_injection(args.calls)
    injection = workdir / "calls.csv"
    write_injection(injection, [row[:3] for row in rows])
    notes: dict[str, str] = {}
    for row in rows:
        if len(row) > 3:
            notes.setdefault(row[0], row[3])

    version = astcli("core show version").split(" built ")[0].strip() or "Asterisk (version unknown)"
    guarded = "dialguard-dial" in astcli("dialplan show outbound")
    cdr_path = stack / "asterisk" / "log" / "cdr-custom" / "dialguard.csv"
    cdr_offset = cdr_path.stat().st_size if cdr_path.exists() else 0

    print(f"dialguard demo: {len(rows)} calls from the agents (SIPp, udp 127.0.0.1:{agents_port})")
    print(f"  -> {version} (udp 127.0.0.1:{sip_port})")
    print(f"  -> carrier (SIPp, udp 127.0.0.1:{carrier_port})")
    print("mode: " + ("guarded: every call is checked by dialguard-dial (FastAGI) before Dial"
                      if guarded else
                      "pass-through: the dialplan's 'outbound' context dials without a check "
                      "(the guard plugs in there)"))
    print("preparing the guard (as an admin would):")
    prepare_guard()
    print()

    run = run_calls(injection, workdir, sip_port=sip_port, agents_port=agents_port,
                    carrier_port=carrier_port, caller="agents", rate=args.rate, limit=20,
                    hold_ms=args.hold_ms, timeout_s=max(60, int(len(rows) / args.rate) + 60))

    at_carrier = Counter(invite.number for invite in run.invites)
    agents_saw: dict[str, list[str]] = defaultdict(list)
    for call in run.calls:
        agents_saw[call.number].append("answered" if call.outcome == "answered" else f"rejected {call.code}")
    guard: dict[str, list[str]] = defaultdict(list)
    for row in new_cdr_rows(cdr_path, cdr_offset):
        guard[row["dst"]].append(verdict(row))

    def summary(items: list[str]) -> str:
        return ", ".join(f"{n}x {what}" if n > 1 else what for what, n in Counter(items).items()) or "-"

    numbers = list(dict.fromkeys(row[0] for row in rows))
    table = [("number", "offered", "carrier", "agents saw", "guard (CDR)", "note")]
    for number in numbers:
        table.append((number, str(sum(1 for row in rows if row[0] == number)), str(at_carrier.get(number, 0)),
                      summary(agents_saw.get(number, [])), summary(guard.get(number, [])), notes.get(number, "")))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.rjust(w) if i in (1, 2) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))).rstrip())

    offered = len(rows)
    reached = sum(at_carrier.values())
    rejected = [c for c in run.calls if c.outcome == "rejected"]
    reasons = Counter(r for verdicts in guard.values() for v in verdicts if v.startswith("DENY")
                      for r in v.removeprefix("DENY").strip().split(",") if r)
    print()
    print(f"calls offered by the agents: {offered}")
    print(f"calls that reached the carrier: {reached}")
    print(f"calls rejected before the carrier: {len(rejected)}"
          + (f" (by reason: {', '.join(f'{r} {n}' for r, n in reasons.most_common())})" if reasons else ""))
    print(f"failed calls (SIPp): agents {run.uac.failed}, carrier {run.carrier.failed}")
    print()
    print("where to look next:")
    print(f"  CDR with the guard's verdict   {cdr_path}")
    print(f"  Asterisk log                   {stack / 'asterisk' / 'log' / 'messages.log'}"
          "   (console: make asterisk-cli)")
    print(f"  FastAGI server log             {stack / 'services' / 'agi.log'}")
    print(f"  SIPp logs and statistics       {workdir}/ (agents.*, carrier.*)")
    print("  the stack keeps running: `make status`, `make down` to stop it")

    ok = run.uac.failed == 0 and len(run.calls) == offered and reached <= offered
    if not ok:
        print(f"\nthe demo did not run cleanly: {run.uac.describe()}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
