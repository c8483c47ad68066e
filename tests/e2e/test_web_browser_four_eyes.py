"""Four eyes and the kill switch in a real browser, with real guarded calls: Debian's headless
Chromium driven by Selenium against the stack's `dialguard web`, calls placed by SIPp through
the stack's Asterisk and FastAGI guard (docs/WEB.md, "Four eyes").

A call outside calling hours is refused; a supervisor requests an override for the number in
the console, a compliance user approves it, and the same call then reaches the carrier (the
grant used); a supervisor presses the campaign's kill switch and the next call is refused
`paused`, never reaching the carrier.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from guard import WORKDAY_10H, Cdr, numbers, place_calls, render, scenario, tag
from test_web_browser import PW, base_url, browser, click, login, shot  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.e2e


@pytest.fixture
def staff():
    t = uuid.uuid4().hex[:8]
    names = {"supervisor": f"fs{t}", "compliance": f"fc{t}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role, n in names.items():
            u.add_user(c, n, role, PW)
        yield names
        c.execute("delete from approval_requests where requested_user = %s", (names["supervisor"],))
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


async def test_override_approved_by_another_user_lets_the_real_call_through_kill_switch_stops_the_next(
        stack, guard, browser, staff, tmp_path: Path):  # noqa: F811
    from selenium.webdriver.common.by import By

    campaign, _ = await guard.campaign("foureyes")
    number, other = numbers(2)
    agent = f"e2e-agent-{tag()}"
    closing = WORKDAY_10H + timedelta(hours=8)  # 18:00 Shanghai: outside cn-default's 09:00-18:00
    await guard.set_clock(closing)
    calls = lambda n: render(scenario("guard_outside_hours", "calls.csv"), tmp_path / f"{n}.csv",  # noqa: E731
                             campaign=campaign, agent=agent, number=n)
    cdr = Cdr.mark(stack.dir)

    late = place_calls(stack, calls(number), tmp_path / "late")
    assert late.invites == [] and [(c.outcome, c.code) for c in late.calls] == [("rejected", 403)]

    # the supervisor asks in the console; nothing changes until someone else approves
    login(browser, staff["supervisor"])
    browser.get(base_url() + "/overrides")
    form = {"number": number, "campaign": campaign, "why": "callback the customer asked for at 18:00"}
    for name, value in form.items():
        browser.find_element(By.NAME, name).send_keys(value)
    click(browser, browser.find_element(By.ID, "request-override"))
    rid = int(re.search(r"Request (\d+) sent", browser.find_element(By.ID, "done").text).group(1))
    assert not browser.find_elements(By.ID, f"approve-{rid}")  # not for one's own request
    assert await guard.engine.override_get(number) is None

    login(browser, staff["compliance"])
    browser.get(base_url() + "/overrides")
    shot(browser, "console-override-approval")
    click(browser, browser.find_element(By.ID, f"approve-{rid}"))
    assert f"Request {rid} approved" in browser.find_element(By.ID, "done").text
    row = browser.find_element(By.ID, f"request-{rid}").text
    assert f"web:{staff['supervisor']}" in row and f"web:{staff['compliance']}" in row

    granted = place_calls(stack, calls(number), tmp_path / "granted")
    assert [i.number for i in granted.invites] == [number], granted.carrier.describe()
    rows = cdr.for_numbers({number}, expect=2)[number]
    assert [r["dialguard_result"] for r in rows] == ["DENY", "ALLOW"], rows
    assert await guard.engine.override_get(number) is None  # used up by that call

    # the kill switch, pressed by the supervisor, stops the next call at once
    await guard.set_clock(closing - timedelta(hours=1))  # 17:00: within hours
    login(browser, staff["supervisor"])
    browser.find_element(By.NAME, "name").send_keys(campaign)
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.box:nth-of-type(2) button[value=pause]"))
    assert campaign in browser.find_element(By.ID, "paused").text
    try:
        stopped = place_calls(stack, calls(other), tmp_path / "paused")
        assert stopped.invites == [] and [(c.outcome, c.code) for c in stopped.calls] == [("rejected", 403)]
        (r,) = cdr.for_numbers({other}, expect=1)[other]
        assert (r["dialguard_result"], r["dialguard_reasons"]) == ("DENY", "paused"), r
    finally:
        await guard.engine.resume("campaign", campaign)
