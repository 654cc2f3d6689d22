"""The monitor page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium):
load it while ``serve`` runs a job with a file-arrival trigger, see the run appear after a file lands, open it,
press "run now", see the second run, reset a table through the confirmation; and the CDC lag chart of a job
whose slot falls behind. A JavaScript error in the
console fails the test. Screenshots of the views go to a temporary folder; ``COPYJOB_SCREENSHOTS=docs`` saves
them as docs/monitor-*.png, the README's pictures (the tests never write into the repository otherwise).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.copyjob.test_monitor import WAIT_S, Process, file_job
from tests.helpers import copyjob, write_job
from tests.pg_cdc import drop_slots, execute

pytestmark = pytest.mark.timeout(240)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = Path(os.environ.get("COPYJOB_SCREENSHOTS") or tempfile.mkdtemp(prefix="copyjob-screenshots-"))
"""Where the screenshots go: ``COPYJOB_SCREENSHOTS=docs`` refreshes the README's."""


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,900", "--lang=en-GB"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def javascript_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Console errors raised by the page's scripts (not failed requests, which the page reports itself)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    # the page redraws a part when its data changes: an element read mid-redraw is stale, read it again
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
                         ).until(condition, message=f"waiting for {what}")


def run_rows(driver: WebDriver) -> list[tuple[str, str]]:
    """(trigger, status) of each run row, as shown (newest first)."""
    try:
        return [(r.find_elements(By.TAG_NAME, "td")[1].text, r.get_attribute("data-status") or "")
                for r in driver.find_elements(By.CSS_SELECTOR, "#runs tr.run")]
    except StaleElementReferenceException:  # redrawn while read: the next poll reads it again
        return []


def job_text(driver: WebDriver, job: str = "watched") -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'#jobs tr.job[data-job="{job}"]').text)


def table_cells(driver: WebDriver) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, '#detail-tables tr.table-run[data-table="orders"]')
    return [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")] if rows else []


def click(driver: WebDriver, selector: str) -> None:
    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    wait(driver, clicked, f"{selector} to be clickable")


def test_the_page_follows_serve_and_acts(tmp_path: Path, start: Callable[..., Process], browser: WebDriver) -> None:
    job = file_job(tmp_path, rows=1200)
    served = start("serve", job, "--http", "127.0.0.1:0")
    browser.get(served.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#jobs tr.job[data-job="watched"]'), "the job row")
    wait(browser, lambda d: "file_arrival ./inbox *.csv" in (t := job_text(d)) and "never run" in t, "the job")
    assert browser.find_element(By.ID, "no-runs").is_displayed()

    (tmp_path / "inbox" / "orders.csv").write_text("id\n1\n")
    wait(browser, lambda d: run_rows(d) == [("trigger: file_arrival inbox/orders.csv", "ok")], "the triggered run")
    wait(browser, lambda d: "ok" in job_text(d), "the job's last run")
    browser.save_screenshot(str(DOCS / "monitor-jobs.png"))

    click(browser, "#runs tr.run")
    wait(browser, lambda d: table_cells(d)[:5] == ["orders", "full", "ok", "1,200", "1,200"], "the run's tables")
    assert browser.find_element(By.ID, "run-detail").is_displayed()
    browser.save_screenshot(str(DOCS / "monitor-run.png"))

    click(browser, 'button.run-now[data-job="watched"]')
    wait(browser, lambda d: [s for _, s in run_rows(d)] == ["ok", "ok"], "the second run")
    assert run_rows(browser)[0][0] == "manual: monitor"

    # reset asks first
    click(browser, '#detail-tables button.reset[data-table="orders"]')
    wait(browser, lambda d: d.find_element(By.ID, "confirm").is_displayed(), "the confirmation")
    assert "Reset orders of watched?" in browser.find_element(By.ID, "confirm-text").text
    browser.save_screenshot(str(DOCS / "monitor-reset.png"))
    browser.find_element(By.ID, "confirm-ok").click()
    wait(browser, lambda d: not d.find_element(By.ID, "confirm").is_displayed(), "the dialog to close")
    wait(browser, lambda _: "job=watched table=orders reset from the monitor" in served.text(), "the reset")
    assert not browser.find_element(By.ID, "problem").is_displayed(), browser.find_element(By.ID, "problem").text

    assert javascript_errors(browser) == []
    assert served.stop() == 0, served.text()


def test_the_cdc_lag_chart(tmp_path: Path, start: Callable[..., Process], browser: WebDriver, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g")
    try:
        job = write_job(tmp_path / "cdc.yaml", {
            "job": "changes", "source": {"url": pg_url}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "cdc"}, "tables": [{"name": "items", "key": ["id"]}]})
        assert copyjob("run", job).code == 0  # the snapshot; the slot stays, and lags while nothing streams
        watched = start("monitor", job, "--http", "127.0.0.1:0", env={"COPYJOB_MONITOR_LAG_INTERVAL": "0.3s"})
        browser.get(watched.url)
        written = 20

        def more_lag(d: WebDriver) -> bool:
            nonlocal written
            first, written = written + 1, written + 200
            execute(pg_url, f"INSERT INTO items SELECT g, 'late' FROM generate_series({first}, {written}) g")
            return len(watched.get("/api/jobs/changes/lag")["samples"]) >= 8 and bool(
                d.find_elements(By.CSS_SELECTOR, '#cdc-charts .chart[data-job="changes"] path.bytes'))

        wait(browser, more_lag, "a lag chart of several samples")
        wait(browser, lambda d: "KiB" in d.find_element(By.CSS_SELECTOR, '#cdc-charts .chart[data-job="changes"]').text,
             "the latest lag in the chart's title")
        wait(browser, lambda d: "KiB" in job_text(d, "changes"), "the lag in the job row")
        browser.save_screenshot(str(DOCS / "monitor-cdc.png"))
        assert javascript_errors(browser) == []
        assert watched.stop() == 0
    finally:
        drop_slots(pg_url)
