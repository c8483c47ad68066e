"""The console's reports in a real browser (Debian's headless Chromium, Selenium) against
the `dialguard web` that `make up` started: decisions made by the stack's guard
engine and shipped by its shipper, the report page opened by a viewer, exported
as CSV, XLSX and PDF through the page's links, the downloaded files parsed and
checked against `dialguard report`'s own build on the same audit. Screenshot:
docs/img/console-report.png (from DIALGUARD_SCREENSHOT_DIR).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from dialguard.audit import report as rp
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.web.security import mask
from test_web_browser import base_url, browser, click, login, people, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
AT = datetime(2026, 3, 3, 2, 0, tzinfo=timezone.utc)  # Tuesday 10:00 Shanghai
DAY, TZ = "2026-03-03", "Asia/Shanghai"
CID = "+861058000007"


def audit_report(by: str, show=lambda n: n) -> rp.Report:
    a, b = rp.parse_bound(DAY, TZ), rp.parse_bound(DAY, TZ, end=True)
    with psycopg.connect(Settings().pg_dsn) as conn:
        label = rp.caller_id_labeler(conn, show) if by == "caller_id" else None
        return rp.build(conn, by, a, b, TZ, cid_label=label)


def wait_shipped(camps: tuple[str, ...], n: int) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(Settings().pg_dsn, autocommit=True) as conn:
        while True:
            got = conn.execute("select count(*) from audit_decisions where campaign = any(%s)",
                               (list(camps),)).fetchone()[0]
            outcomes = conn.execute("select count(*) from audit_outcomes o join audit_decisions d using "
                                    "(decision_id) where d.campaign = any(%s)", (list(camps),)).fetchone()[0]
            if got >= n and outcomes >= 2:
                return
            assert time.monotonic() < deadline, f"the shipper shipped {got} of {n} decisions in 60 s"
            time.sleep(0.3)


def downloaded(d: Path, suffix: str, before: set) -> Path:
    deadline = time.monotonic() + 90  # Chromium wrote one 31 s after the click at load 30 (other suites running)
    while time.monotonic() < deadline:
        done = [p for p in d.glob(f"*{suffix}") if p not in before]
        if done and not list(d.glob("*.crdownload")):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} downloaded into {d}: {list(d.iterdir())}")


async def test_viewer_exports_the_report_as_csv_xlsx_pdf_and_they_match_the_audit(browser, people, tmp_path):
    from openpyxl import load_workbook
    from pypdf import PdfReader
    from selenium.webdriver.common.by import By

    camp, unapproved = f"rep-{uuid.uuid4().hex[:6]}", f"rep-{uuid.uuid4().hex[:6]}"
    # the stack's namespace (its shipper ships to the stack's audit); a setup engine, so not
    # the call path's 200 ms deadline: beside a Chromium starting under libfaketime, a first
    # decision came back guard_unavailable after 337 ms (make test-dates, 2031, twice)
    engine = await Engine.create(Settings(redis_timeout_ms=5000))
    try:
        await engine.set_campaign(camp)
        await engine.approve_caller_id(CID)
        for i, result in enumerate(("conversation", "abandoned", None, None)):
            key = f"{camp}-{i}"
            d = await engine.decide(DecisionRequest(number=f"+86139{uuid.uuid4().int % 10**8:08d}", campaign=camp,
                                                    agent="a1", caller_id=CID, call_id=key),
                                    AT + timedelta(minutes=i))
            assert d.allowed, d.reasons
            if result:
                await engine.report_outcome(key, Outcome(result=result, talk_s=30), now=AT + timedelta(minutes=i, seconds=40))
        d = await engine.decide(DecisionRequest(number="+8613900000077", campaign=unapproved, agent="a1",
                                                caller_id=CID), AT + timedelta(minutes=9))
        assert "campaign_not_approved" in d.reasons
    finally:
        await engine.close()
    wait_shipped((camp, unapproved), 5)

    dl = tmp_path / "downloads"
    dl.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(dl)})
    login(browser, people["viewer"])
    browser.get(base_url() + "/reports")
    form = browser.find_element(By.ID, "report-form")
    for name, value in (("from", DAY), ("to", DAY), ("tz", TZ)):
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    click(browser, browser.find_element(By.ID, "show"))
    table = browser.find_element(By.ID, "report").text
    assert camp in table and unapproved in table
    assert browser.find_element(By.ID, "chart-attempts").is_displayed()
    assert "campaign_not_approved" in browser.find_element(By.ID, "chart-reasons").text
    shot(browser, "console-report")

    want = audit_report("campaign")
    mine = {r[0]: dict(zip(want.columns, r)) for r in want.rows}
    assert mine[camp]["attempts"] == 4 and mine[camp]["abandon_rate"] == 50.0
    assert mine[unapproved]["denied_campaign_not_approved"] == 1

    seen: set = set()
    browser.find_element(By.ID, "export-csv").click()
    f = downloaded(dl, ".csv", seen)
    seen.add(f)
    rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))
    assert rows[0] == want.columns
    assert rows[1:] == [["" if v is None else str(v) for v in r] for r in [*want.rows, want.totals]]

    browser.find_element(By.ID, "export-xlsx").click()
    f = downloaded(dl, ".xlsx", seen)
    ws = load_workbook(f)["by campaign"]
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0] == want.columns and values[1:] == [list(r) for r in [*want.rows, want.totals]]

    browser.find_element(By.ID, "export-pdf").click()
    f = downloaded(dl, ".pdf", seen)
    text = "\n".join(p.extract_text() for p in PdfReader(f).pages)
    assert "dialguard report by Campaign" in text and f"web:{people['viewer']}" in text
    line = next(ln for ln in text.splitlines() if ln.startswith(camp + " "))
    assert line.split()[1:4] == ["4", "4", "0"] and "50.0%" in line

    # by caller ID, a viewer gets the caller ID masked in the page and in the export
    browser.get(base_url() + f"/reports?from={DAY}&to={DAY}&tz={TZ}&by=caller_id")
    assert mask(CID) in browser.find_element(By.ID, "report").text and CID not in browser.page_source
    browser.find_element(By.ID, "export-csv").click()
    f = downloaded(dl, ".csv", seen | {p for p in dl.glob("*.csv")})
    body = f.read_text(encoding="utf-8")
    assert mask(CID) in body and CID not in body


@pytest.fixture
def compliance_people(people):
    """people plus a compliance user (removed afterwards)."""
    from dialguard import users as u
    from dialguard.audit.db import admin_dsn

    name = "bc" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        u.add_user(c, name, "compliance", "browser test passphrase")
        yield {**people, "compliance": name}
        c.execute("delete from web_users where name = %s", (name,))


async def test_viewer_refused_compliance_actions_supervisor_uploads_a_dnc_csv(browser, compliance_people, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from dialguard.audit.db import admin_dsn
    from dialguard.calendars import CalendarStore
    from dialguard.dnc import DncStore, list_name
    from dialguard.rules_store import RulesStore
    from used_numbers import record

    people = compliance_people
    camp = f"dncb-{uuid.uuid4().hex[:6]}"
    good = [f"+86139{uuid.uuid4().int % 10**8:08d}" for _ in range(30)]
    record(*good)  # the at-rest check (test_zz_numbers_at_rest.py) greps the stack for them
    csv_file = tmp_path / "optouts.csv"
    csv_file.write_text("phone,note\n" + "".join(f"{n},asked\n" for n in good) + "not a number,x\n,empty\n123,short\n")
    cal_file = tmp_path / "cn-2027.yaml"
    cal_file.write_text((Path(__file__).parents[1] / "scenarios" / "calendars" / "cn-2027-test.yaml").read_text())
    engine = await Engine.create(Settings(redis_timeout_ms=5000))  # setup, not the call path (above)
    try:
        rules_before = len(await RulesStore(engine.redis, engine.keys).history())
        cals_before = len(await CalendarStore(engine.redis, engine.keys).history())

        # a viewer: every compliance-only (and supervisor) action refused by the server
        login(browser, people["viewer"])
        browser.get(base_url() + "/rules")
        browser.find_element(By.CSS_SELECTOR, "#apply-form input[value=cn-default]").click()
        browser.find_element(By.CSS_SELECTOR, "#apply-form input[name=why]").send_keys("viewer tries")
        click(browser, browser.find_element(By.ID, "apply"))
        assert "rules_apply needs the role compliance" in browser.find_element(By.ID, "refused").text
        browser.get(base_url() + "/calendars")
        browser.find_element(By.CSS_SELECTOR, "#import-form input[name=code]").send_keys("CN")
        browser.find_element(By.CSS_SELECTOR, "#import-form input[name=file]").send_keys(str(cal_file))
        click(browser, browser.find_element(By.ID, "publish"))
        assert "calendar_publish needs the role compliance" in browser.find_element(By.ID, "refused").text
        browser.get(base_url() + "/dnc")
        browser.find_element(By.CSS_SELECTOR, "#dnc-form input[name=file]").send_keys(str(csv_file))
        click(browser, browser.find_element(By.ID, "dnc-import"))
        assert "dnc_edit needs the role supervisor" in browser.find_element(By.ID, "refused").text
        assert len(await RulesStore(engine.redis, engine.keys).history()) == rules_before
        assert len(await CalendarStore(engine.redis, engine.keys).history()) == cals_before

        # a supervisor uploads the CSV into a campaign's list and follows the progress page
        login(browser, people["supervisor"])
        browser.get(base_url() + "/dnc")
        browser.find_element(By.CSS_SELECTOR, "#dnc-form input[name=file]").send_keys(str(csv_file))
        browser.find_element(By.CSS_SELECTOR, "#dnc-form input[name=campaign]").send_keys(camp)
        browser.find_element(By.CSS_SELECTOR, "#dnc-form input[name=why]").send_keys("browser test")
        click(browser, browser.find_element(By.ID, "dnc-import"))
        done = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "done"))[0]  # reloads itself
        assert "33 rows: 30 added, 0 already listed, 3 rejected; 30 new entries stored at rest" in done.text
        rejects = browser.find_element(By.ID, "rejects").text
        assert "not a number" in rejects and "123" in rejects
        shot(browser, "console-dnc")
        store = DncStore(engine.redis, engine.keys)
        for n in good:
            assert await store.contains(list_name(camp), engine.keys.number_tag(n))
        with psycopg.connect(admin_dsn()) as conn:
            assert conn.execute("select sum(entries) from dnc_blocks where list = %s", (camp,)).fetchone()[0] == 30
        browser.get(base_url() + "/dnc")
        assert camp in browser.find_element(By.ID, "dnc-lists").text

        # compliance may publish (here: preview only, the stack's calendars stay as they are)
        login(browser, people["compliance"])
        browser.get(base_url() + "/calendars")
        browser.find_element(By.CSS_SELECTOR, "#import-form input[name=code]").send_keys("CN")
        browser.find_element(By.CSS_SELECTOR, "#import-form input[name=file]").send_keys(str(cal_file))
        click(browser, browser.find_element(By.ID, "preview"))
        assert "CN 2027" in browser.find_element(By.ID, "preview-result").text
        shot(browser, "console-calendars")
    finally:
        await engine.close()
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute("delete from dnc_entries where list = %s", (camp,))
            conn.execute("delete from dnc_blocks where list = %s", (camp,))
