"""Lead import (CSV, XLSX) into PostgreSQL: normalization, de-duplication, rejected rows."""

from __future__ import annotations

import csv
import json
import os
import uuid

import psycopg
import pytest
from openpyxl import Workbook

import cli_inproc
from fakes.dialer_db import ensure_schema


@pytest.fixture(scope="module")
def schema(pg_dsn):
    ensure_schema(pg_dsn)
    return pg_dsn


def cli(*args, env=None):
    """`dialguard ARGS` in this process (tests/cli_inproc.py): these tests check what the import does."""
    return cli_inproc.run(args, env={**os.environ, "DIALGUARD_DEFAULT_REGION": "CN", **(env or {})})


def leads(dsn, campaign):
    """The campaign's leads with their numbers opened: at rest there is only the
    keyed hash and the sealed number (dialguard/campaigns/sql/090), never the plaintext."""
    from dialguard.campaigns.store import lead_number_hash
    from dialguard.config import Settings
    from dialguard.crypto import Sealer

    sealer, secret = Sealer(), Settings().hash_secret
    with psycopg.connect(dsn) as c:
        rows = c.execute("select number, number_hash, number_enc, subject, name, state, attempts, source_line"
                         " from dialer_leads where campaign = %s order by source_line", (campaign,)).fetchall()
    out = []
    for plain, h, enc, *rest in rows:
        number = sealer.open(enc)
        assert plain is None and h == lead_number_hash(secret, number) and number not in enc
        out.append((number, *rest))
    return out


def test_csv_import_normalizes_dedupes_and_reports(schema, tmp_path):
    name = f"imp-{uuid.uuid4().hex[:8]}"
    assert cli("campaign", "create", name).returncode == 0
    f = tmp_path / "leads.csv"
    f.write_text(
        "phone,name,subject\n"          # line 1
        "138 0013 8000,Li,debt-1\n"     # 2 ok
        "+86 138-0013-8001,Wang,\n"     # 3 ok
        "8613800138000,Li again,debt-1\n"  # 4 duplicate of line 2 (same E.164 and subject)
        "12345,Short,\n"                # 5 invalid
        ",Empty,\n"                     # 6 empty
        "110,Police,\n"                 # 7 emergency
        "13800138000,Li,debt-2\n"       # 8 ok: another subject
        "not a number,X,\n"             # 9 invalid
    )
    out = cli("campaign", "import", name, str(f), "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["rows"] == 8 and rep["added"] == 3 and rep["rejected"] == 5 and rep["duplicates"] == 1
    by_line = {r["line"]: r for r in rep["rejects"]}
    assert set(by_line) == {4, 5, 6, 7, 9}
    assert "duplicate" in by_line[4]["why"] and by_line[4]["value"] == "8613800138000"
    assert by_line[6]["why"] == "empty number"
    assert "emergency" in by_line[7]["why"]
    assert by_line[9]["value"] == "not a number"
    with open(rep["rejects_file"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["line", "value", "why"] and len(rows) == 6
    got = leads(schema, name)
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in got] == [
        ("+8613800138000", "debt-1", "pending", 0, 2),
        ("+8613800138001", "", "pending", 0, 3),
        ("+8613800138000", "debt-2", "pending", 0, 8),
    ]
    # a second import of the same file adds nothing and says why
    again = json.loads(cli("campaign", "import", name, str(f), "--json").stdout)
    assert again["added"] == 0
    assert sum(1 for r in again["rejects"] if r["why"] == "already a lead of this campaign") == 3


def test_xlsx_import_without_header_and_numbers_as_cells(schema, tmp_path):
    name = f"impx-{uuid.uuid4().hex[:8]}"
    assert cli("campaign", "create", name).returncode == 0
    wb = Workbook()
    ws = wb.active
    ws.append([13800138010])        # Excel keeps it as a number
    ws.append([13800138011.0])      # or as a float
    ws.append(["+86 138 0013 8010"])  # duplicate of line 1
    ws.append(["999"])
    f = tmp_path / "leads.xlsx"
    wb.save(f)
    out = cli("campaign", "import", name, str(f), "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert (rep["rows"], rep["added"], rep["rejected"]) == (4, 2, 2)
    assert {r["line"] for r in rep["rejects"]} == {3, 4}
    assert [r[0] for r in leads(schema, name)] == ["+8613800138010", "+8613800138011"]


def test_import_errors(schema, tmp_path):
    bad = tmp_path / "x.pdf"
    bad.write_text("x")
    assert cli("campaign", "import", "nope", str(bad)).returncode == 2
    f = tmp_path / "a.csv"
    f.write_text("number\n13800138000\n")
    out = cli("campaign", "import", f"missing-{uuid.uuid4().hex[:6]}", str(f))
    assert out.returncode == 2 and "does not exist" in out.stderr


def _campaign(name):
    assert cli("campaign", "create", name, "--dialer", "dialer-test-only").returncode == 0


def test_field_over_128k_is_a_rejected_row_not_a_crash(schema, tmp_path):
    name = f"big-{uuid.uuid4().hex[:6]}"
    _campaign(name)
    f = tmp_path / "big.csv"
    f.write_text("phone,name\n13800138001,a\n13800138002," + "x" * (200 * 1024) + "\n13800138003,c\n")
    out = cli("campaign", "import", name, str(f), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert (r["added"], r["rejected"]) == (2, 1), r
    assert r["rejects"][0]["line"] == 3 and "field larger than field limit" in r["rejects"][0]["why"]
    assert [n for n, *_ in leads(schema, name)] == ["+8613800138001", "+8613800138003"]


def test_header_spelled_otherwise_is_found(schema, tmp_path):
    for header in ("Phone Number", "phone-number", " MOBILE ", "手机号码", "联系电话"):
        name = f"hdr-{uuid.uuid4().hex[:6]}"
        _campaign(name)
        f = tmp_path / f"{name}.csv"
        f.write_text(f"Customer,{header}\nLi,13800138001\n", encoding="utf-8")
        out = cli("campaign", "import", name, str(f), "--json")
        assert out.returncode == 0, (header, out.stderr)
        assert json.loads(out.stdout)["added"] == 1, (header, out.stdout)


def test_unknown_header_or_title_row_is_an_error_naming_the_headers(schema, tmp_path):
    name = f"bad-{uuid.uuid4().hex[:6]}"
    _campaign(name)
    for first in ("Contact,Name", "Customer list for March"):
        f = tmp_path / "t.csv"
        f.write_text(f"{first}\n13800138001,Li\n")
        out = cli("campaign", "import", name, str(f))
        assert out.returncode == 2, out.stdout
        assert "Accepted number column headers: number, phone" in out.stderr and "电话" in out.stderr
        assert "Nothing was imported" in out.stderr
    assert leads(schema, name) == []
    # a file without header whose first column holds numbers is still fine
    f = tmp_path / "plain.csv"
    f.write_text("13800138001\n13800138002\n")
    out = cli("campaign", "import", name, str(f), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["added"] == 2, out.stderr


def test_imported_leads_are_due_on_the_test_clock(schema, tmp_path):
    """With DIALGUARD_TEST_CLOCK=1 (the dev stack) the leads are due at the guard's
    clock, which the dialer on that clock reaches, not at the wall clock's now."""
    import asyncio
    from datetime import datetime, timezone

    from dialguard.config import Settings
    from dialguard.engine import Engine

    prefix = f"dgimp:{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)

    async def set_clock(v):
        e = await Engine.create(Settings(key_prefix=prefix, test_clock=True))
        try:
            await e.set_test_clock(v)
        finally:
            await e.close()

    asyncio.run(set_clock(at))
    name = f"clk-{uuid.uuid4().hex[:6]}"
    _campaign(name)
    f = tmp_path / "c.csv"
    f.write_text("number\n13800138001\n")
    out = cli("campaign", "import", name, str(f), env={"DIALGUARD_TEST_CLOCK": "1", "DIALGUARD_KEY_PREFIX": prefix})
    assert out.returncode == 0, out.stderr
    with psycopg.connect(schema) as c:
        (due,) = c.execute("select next_eligible_at from dialer_leads where campaign = %s", (name,)).fetchone()
    assert due == at
    out = cli("campaign", "status", name, "--json")
    assert json.loads(out.stdout)["next_due_at"] == at.isoformat()


def test_csv_import_location_and_party_columns(schema, tmp_path):
    """region / zip / party columns reach the lead (the party sealed like the
    number, never in plaintext); a row whose region or ZIP is not written as one
    is rejected with the reason."""
    from dialguard.crypto import Sealer

    name = f"impl-{uuid.uuid4().hex[:8]}"
    _campaign(name)
    f = tmp_path / "leads.csv"
    f.write_text(
        "phone,region,zip,account\n"             # 1
        "+12125550123,us-fl,33101,acct-77\n"     # 2 ok: a Floridian with a New York number
        "+12125550124,,,\n"                      # 3 ok: nothing stated
        "+12125550125,Florida,,\n"               # 4 not ISO 3166-2
        "+12125550126,,331<01,\n"                # 5 not a postal code
        "+13055550127,,32501-1234,acct-77\n"     # 6 ok: the same party, ZIP+4
    )
    out = cli("campaign", "import", name, str(f), "--json", env={"DIALGUARD_DEFAULT_REGION": "US"})
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["added"] == 3 and {r["line"]: r["why"].split(" ")[0] for r in rep["rejects"]} == {
        4: "region", 5: "postal_code"}
    with psycopg.connect(schema) as c:
        rows = c.execute("select source_line, region, postal_code, party_enc from dialer_leads where campaign = %s"
                         " order by source_line", (name,)).fetchall()
    sealer = Sealer()
    got = [(line, region, postal, sealer.open(enc) if enc else None) for line, region, postal, enc in rows]
    assert got == [(2, "US-FL", "33101", "acct-77"), (3, None, None, None), (6, None, "32501-1234", "acct-77")]
    assert all("acct-77" not in (enc or "") for *_x, enc in rows)


def test_quote_left_open_rejects_its_lines_and_loses_none(schema, tmp_path):
    """`dialguard campaign import` (the real process) of a file with a quote left open:
    before, the lines after it vanished into one row rejected at the last line as a
    'number too long'. Now that row is rejected naming its lines, the rows after a
    quote that closes further down are imported, and every line is the header, a lead
    or inside a reported row."""
    import re
    import subprocess
    import sys

    name = f"quote-{uuid.uuid4().hex[:6]}"
    _campaign(name)
    nums = [f"+86138001380{i:02d}" for i in range(8)]
    lines = ["number,subject", f"{nums[0]},a", f'"{nums[1]},b', f"{nums[2]},c", f'{nums[3]}",d', f"{nums[4]},e",
             f'"{nums[5]},f', f"{nums[6]},g"]
    f = tmp_path / "leads.csv"
    f.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "dialguard.cli", "campaign", "import", name, str(f), "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DIALGUARD_DEFAULT_REGION": "CN"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert (r["rows"], r["added"], r["rejected"]) == (4, 2, 2), r
    assert [(x["line"], x["value"], x["why"].split(":")[0]) for x in r["rejects"]] == [
        (3, f"{nums[1]},b", "lines 3-5"), (7, f"{nums[5]},f", "lines 7-8")]
    assert "a quote opened on line 3 is not closed" in r["rejects"][0]["why"]
    got = leads(schema, name)
    assert [(n, s, ln) for n, s, _, _, _, ln in got] == [(nums[0], "a", 2), (nums[4], "e", 6)]
    covered = {1} | {ln for *_, ln in got}
    for x in r["rejects"]:
        m = re.match(r"lines (\d+)-(\d+): ", x["why"])
        covered |= set(range(int(m[1]), int(m[2]) + 1))
    assert covered == set(range(1, len(lines) + 1))
    with open(r["rejects_file"], newline="") as fh:
        assert [row[0] for row in csv.reader(fh)] == ["line", "3", "7"]
