"""No plaintext number at rest in anything the project writes (issue 13, item 4).

Runs last in the e2e suite (file name): greps the stack's Redis data (AOF),
PostgreSQL data files and WAL, the audit spool and the logs of Redis,
PostgreSQL and the dialguard services for every number the session used
(tests/e2e/used_numbers.py: recorded by tests/conftest.py), plus the numbers
Asterisk dialed (its CDRs) and numbers this test sends itself through every
writer: a call through Asterisk and the FastAGI server (audit record shipped to
PostgreSQL), a DNC entry, an opt-out and a dialer lead. Zero hits allowed.
Asterisk's own files (.stack/asterisk: CDRs, its logs) are the admin's
(docs/OPERATIONS.md) and not searched.

Also: every file there is private (no group/other permission bit).
"""

from __future__ import annotations

import asyncio
import csv
import os
import stat
import time
from pathlib import Path

import psycopg
from guard import Cdr, caller_ids, dialguard, numbers, place_calls, render, scenario, tag
from used_numbers import USED, digits_present, matcher, national_digits, record

from dialguard.campaigns.leads import Lead
from dialguard.campaigns.store import Store
from dialguard.numbers import parse_number


def searched_roots(stack_dir: Path) -> list[Path]:
    return [stack_dir / "redis", stack_dir / "pg", stack_dir / "spool", stack_dir / "services"]


def files_under(roots: list[Path]) -> list[Path]:
    out = []
    for root in roots:
        if root.is_file():
            out.append(root)
            continue
        for dirpath, _, names in os.walk(root):
            out.extend(Path(dirpath) / n for n in names)
    return out


def record_cdr_numbers(stack_dir: Path) -> None:
    """Every number Asterisk wrote in its CDR and CEL files joins the session's (record)."""
    for f in (stack_dir / "asterisk" / "log").rglob("*.csv"):
        with open(f, newline="", errors="replace") as fh:
            for row in csv.reader(fh):
                record(*row)


async def test_no_number_used_is_at_rest_in_plaintext(stack, guard, pg_dsn, tmp_path: Path) -> None:
    # -- this test's own numbers, through every writer ------------------------------
    campaign = f"e2e-at-rest-{tag()}"
    pool = caller_ids(1)
    guard.campaigns.append(campaign)
    dialguard("campaign", "approve", campaign)
    dialguard("callerid", "add", pool[0], "--campaign", campaign)
    called, dnc, opted, lead, imported = numbers(5)
    injection = render(scenario("guard_allowed", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", **{f"n{i + 1}": called for i in range(6)})
    cdr = Cdr.mark(stack.dir)
    run = place_calls(stack, injection, tmp_path)
    assert run.uac.failed == 0, run.uac.describe()
    cdr.for_numbers({called}, expect=1)
    dialguard("dnc", "add", dnc)
    listed = tmp_path / "dnc.csv"  # an imported number: a block of dnc_blocks, sealed with its block
    listed.write_text(f"number\n{imported}\n")
    dialguard("dnc", "import", str(listed))
    dialguard("optout", opted)
    store = await Store.open(pg_dsn)
    try:
        await store.create_campaign(campaign)
        await store.add_leads(campaign, [Lead(1, parse_number(lead, "CN").e164, "s")])
    finally:
        await store.close()
    # The FastAGI server's decisions reached PostgreSQL through the shipper.
    tag_ = guard.engine.keys.number_tag(parse_number(called, "CN").e164)
    deadline = time.monotonic() + 30
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        while not c.execute("select count(*) from audit_decisions where number_hash = %s", (tag_,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the call's decision never reached PostgreSQL (audit-ship running?)"
            await asyncio.sleep(0.3)
    # Data to disk: PostgreSQL pages (the WAL is written at commit anyway), the AOF (fsync every second).
    admin = os.environ.get("DIALGUARD_PG_ADMIN_DSN")
    assert admin, "DIALGUARD_PG_ADMIN_DSN (from .stack/env) is needed for CHECKPOINT"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("checkpoint")
    await asyncio.sleep(1.5)

    # -- every number of the session, and what Asterisk dialed ------------------------
    record_cdr_numbers(stack.dir)
    wanted = {d: n for n in USED if (d := national_digits(n))}
    mine = {national_digits(n) for n in (called, dnc, opted, lead, imported, pool[0])}
    assert mine <= set(wanted), "the recorder missed this test's own numbers"
    needles = {d: matcher(d) for d in wanted}
    wanted_digits = set(needles)
    # the one-pass search finds what a search for each number finds (a needle, in data and not)
    probe = b"x+8613912345678,20261205T1412 55501234;4155550123"
    for d in ("13912345678", "5550123", "4155550123", "13900000000", "2026120"):
        assert (d in digits_present(probe, {d, "13900000001"})) == (d.encode() in probe), d
    # The short-needle rule still sees a number written on its own, and not one inside other digits or hex.
    short = matcher("8610555")
    assert short(b'caller_id":"+8610555"') and short(b"8610555,") and short(b"+868610555 ")
    assert not short(b"1796398610555-0") and not short(b"af8610555c") and not short(b"x86105550")

    # The search itself works: Asterisk's CDR (the admin's file, not searched) holds the called number.
    cdr_bytes = b"".join(f.read_bytes() for f in (stack.dir / "asterisk" / "log").rglob("*.csv"))
    assert national_digits(called).encode() in cdr_bytes

    files = files_under(searched_roots(stack.dir))
    assert any("appendonly" in f.name for f in files), "no Redis AOF under .stack/redis"
    assert any("pg_wal" in f.parts for f in files), "no PostgreSQL WAL under .stack/pg"
    hits: dict[str, list[str]] = {}
    loose: list[str] = []
    for f in files:
        try:
            st = f.lstat()
        except FileNotFoundError:  # PostgreSQL rewrites some files (pg_internal.init) while it runs
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            loose.append(f"{f} {stat.S_IMODE(st.st_mode):o}")
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for digits in digits_present(data, wanted_digits):  # only those in data at all, then the exact rule
            if needles[digits](data):
                hits.setdefault(digits, []).append(str(f.relative_to(stack.dir)))
    assert not hits, f"plaintext numbers at rest ({len(hits)} of {len(needles)}): {dict(list(hits.items())[:10])}"
    assert not loose, f"files others may read: {loose[:10]}"
    for d in (p for root in searched_roots(stack.dir) for p in [root, *root.rglob("*")] if p.is_dir()):
        assert not d.stat().st_mode & 0o077, f"{d}: mode {stat.S_IMODE(d.stat().st_mode):o}"
    assert len(needles) >= 5
