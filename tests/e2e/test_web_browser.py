"""The console in a real browser: Debian's headless Chromium driven by Selenium, against the
`dialguard web` that `make up` started (docs/WEB.md).

Login, a viewer refused the kill switch (by the server, not by a hidden
button), a supervisor pausing a campaign and the next decision of the guard
refused `paused`, then resumed; a region paused for a window and resumed. Screenshots go to DIALGUARD_SCREENSHOT_DIR
(default .stack/screenshots; docs/img/ holds one for the README).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from wheel_build import real_clock  # tests/e2e: env without libfaketime

pytestmark = pytest.mark.e2e
PW = "browser test passphrase"
AT_10 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 Shanghai
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, DRIVER):
        assert os.access(exe, os.X_OK), f"{exe} missing: `make setup` installs chromium and chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800", "--lang=en-US"):
        opts.add_argument(flag)
    # The browser keeps the real clock, as Asterisk and SIPp do under `make test-dates`
    # (scripts/lib.sh NO_FAKE): under libfaketime Chromium crawled (each browser test took
    # minutes at 2031, a CSV download outlasted 90 s); the console's dates are the server's.
    env = real_clock(dict(os.environ))
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER, env=env), options=opts)  # no Selenium Manager download
    drv.set_page_load_timeout(30)
    drv.implicitly_wait(5)  # find_element waits for the element of the next page
    yield drv
    drv.quit()


@pytest.fixture
def people():
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"bv{tag}", "supervisor": f"bs{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role, n in names.items():
            u.add_user(c, n, role, PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


def base_url() -> str:
    port = os.environ.get("DIALGUARD_WEB_PORT")
    assert port, "DIALGUARD_WEB_PORT not set: `make up` writes it to .stack/env"
    return f"http://127.0.0.1:{port}"


def shot(drv, name: str) -> None:
    d = Path(os.environ.get("DIALGUARD_SCREENSHOT_DIR") or Path(__file__).resolve().parents[2] / ".stack" /
             "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(d / f"{name}.png"))


def click(drv, element) -> None:
    """Click a submit button and wait for the next page (the old one gone)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_):
        try:
            element.is_enabled()
            return False
        except WebDriverException:  # stale, or "node does not belong to the document": the page changed
            return True

    element.click()
    WebDriverWait(drv, 20).until(gone)
    WebDriverWait(drv, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def login(drv, user: str) -> None:
    from selenium.webdriver.common.by import By

    drv.delete_all_cookies()
    drv.get(base_url() + "/login")
    drv.find_element(By.NAME, "user").send_keys(user)
    drv.find_element(By.NAME, "password").send_keys(PW)
    click(drv, drv.find_element(By.ID, "login"))
    assert f"Signed in as {user}" in drv.find_element(By.TAG_NAME, "header").text


async def test_viewer_refused_supervisor_pauses_and_the_guard_denies_paused(browser, people):
    from selenium.webdriver.common.by import By

    camp = f"browser-{uuid.uuid4().hex[:6]}"
    # the stack's namespace, as the FastAGI server; not its 200 ms deadline: a decision beside
    # a Chromium starting under libfaketime timed out (test_web_reports_browser, test-dates)
    engine = await Engine.create(Settings(redis_timeout_ms=5000))
    req = DecisionRequest(number="+8613800138000", campaign=camp, agent="a1", caller_id="+861058000000")
    try:
        await engine.set_campaign(camp)
        await engine.approve_caller_id("+861058000000")
        assert "paused" not in (await engine.decide(req, AT_10)).reasons

        login(browser, people["viewer"])
        click(browser, browser.find_element(By.ID, "pause-all"))
        assert "pause needs the role supervisor" in browser.find_element(By.ID, "refused").text
        assert "all" not in await engine.paused()

        login(browser, people["supervisor"])
        browser.find_element(By.NAME, "name").send_keys(camp)
        browser.find_elements(By.NAME, "why")[1].send_keys("browser test")
        click(browser, browser.find_element(By.CSS_SELECTOR, "form.box:nth-of-type(2) button[value=pause]"))
        assert camp in browser.find_element(By.ID, "done").text
        assert camp in browser.find_element(By.ID, "paused").text
        shot(browser, "console-killswitch")
        d = await engine.decide(req.model_copy(update={"number": "+8613800138001"}), AT_10)
        assert d.decision == "deny" and "paused" in d.reasons

        browser.find_element(By.NAME, "name").send_keys(camp)
        click(browser, browser.find_element(By.CSS_SELECTOR, "form.box:nth-of-type(2) button[value=resume]"))
        assert camp in browser.find_element(By.ID, "done").text
        d = await engine.decide(req.model_copy(update={"number": "+8613800138002"}), AT_10)
        assert "paused" not in d.reasons

        # the region kill switch (#19): a jurisdiction for a window, far ahead (nothing on the stack paused now)
        # (a few years ahead of the possibly shifted clock: a fixed year would be in the past one day)
        far = datetime.now(timezone.utc).year + 5
        browser.find_elements(By.NAME, "name")[1].send_keys("US-WY")
        browser.find_element(By.NAME, "from").send_keys(f"{far}-01-01T00:00:00-07:00")
        browser.find_element(By.NAME, "until").send_keys(f"{far}-01-02T00:00:00-07:00")
        browser.find_elements(By.NAME, "why")[2].send_keys("blizzard")
        click(browser, browser.find_element(By.ID, "pause-region"))
        assert "US-WY" in browser.find_element(By.ID, "done").text
        assert "US-WY" in browser.find_element(By.ID, "paused").text and "blizzard" in browser.page_source
        assert "US-WY" in [p["region"] for p in await engine.paused_regions()]
        browser.find_elements(By.NAME, "name")[1].send_keys("US-WY")
        click(browser, browser.find_element(By.ID, "resume-region"))
        assert "US-WY" in browser.find_element(By.ID, "done").text
        assert "US-WY" not in [p["region"] for p in await engine.paused_regions()]

        browser.get(base_url() + "/lang/zh")
        assert "紧急停止" in browser.page_source
        shot(browser, "console-zh")
        browser.get(base_url() + "/lang/en")
    finally:
        await engine.resume("campaign", camp)
        await engine.resume_region("US-WY")
        await engine.close()
