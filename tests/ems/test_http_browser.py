"""The daemon's page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by .ci/run) driven by Selenium, against ``ems run``'s service on the
simulated home site (a simulated clock at 60x, so the figures move). It sees the demand monitor
update, switches to Japanese, submits a departure override with the token and sees it in force
and the re-plan made with it; screenshots at phone and desktop width are written to the test's
directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ems.clock import SimClock
from ems.daemon import Service
from tests.ems.http_helpers import CHROMIUM, DESKTOP, DRIVER, PHONE, TOKEN, RunningDaemon, headless_chromium, http_site
from tests.ems.http_helpers import wait_for as _wait

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="headless Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)"),
]

START = pd.Timestamp("2024-07-08T19:00+09:00")   # Monday evening: the Leaf is plugged in, leaves 07:30 with 80 %


def test_page_shows_live_figures_switches_language_and_takes_a_departure_override(tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    svc = Service(http_site(tmp_path), clock=SimClock(START, 60.0), initial_soc_pct=55)
    with RunningDaemon(svc, START + pd.Timedelta(hours=6)) as url:
        browser = headless_chromium(*DESKTOP)
        try:
            text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text   # noqa: E731
            browser.get(url + "?lang=en")
            assert text("#demand h2") == "Demand monitor"
            # live: the daemon's clock and the window's energy move between two polls
            first = _wait(lambda: text("#w-kwh") if "kWh" in text("#w-kwh") and text("#clock") else None, what="figures")
            clock = text("#clock")
            _wait(lambda: text("#clock") != clock and text("#w-kwh") != first, what="the figures to update")
            assert text("#w-pred").endswith("kW") and text("#alarm") in ("OK", "Near the target", "Over the target: a new peak")
            assert "leaf" in text("#car-rows") and "%" in text("#car-rows")
            _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-svg svg path"), what="the chart")
            browser.save_screenshot(str(tmp_path / "desktop.png"))

            browser.find_element(By.ID, "lang").click()
            _wait(lambda: text("#demand h2") == "デマンド監視", what="Japanese labels")
            assert "予測デマンド" in text("#demand") and text("#lang") == "English"
            browser.set_window_size(*PHONE)
            assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]   # no sideways scroll
            browser.save_screenshot(str(tmp_path / "phone.png"))
            browser.set_window_size(*DESKTOP)

            token = browser.find_element(By.ID, "token")
            token.send_keys(TOKEN)
            browser.find_element(By.ID, "who").send_keys("tanaka")
            browser.find_element(By.ID, "who").click()   # leaves the token field: its change is kept
            form = browser.find_element(By.CSS_SELECTOR, 'form[data-kind="departure"]')
            browser.execute_script("arguments[0].closest('details').open = true", form)
            Select(form.find_element(By.NAME, "vehicle")).select_by_value("leaf")
            browser.execute_script("arguments[0].value = '2024-07-09T05:00'", form.find_element(By.NAME, "depart"))
            pct = form.find_element(By.NAME, "target_soc_pct")
            pct.clear()
            pct.send_keys("90")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ov-list li[data-kind="departure"]'), what="the override")
            assert text("#ov-msg") == "設定しました: 再計画中"
            assert "tanaka" in text("#ov-list") and "05:00" in text("#ov-list")
            row = _wait(lambda: next((r for r in browser.find_elements(By.CSS_SELECTOR, "#car-rows tr")
                                      if r.get_attribute("data-vehicle") == "leaf" and "07-09 05:00" in r.text), None),
                        what="the car's new departure")
            assert "90 %" in row.text
            d = svc.daemon
            oid = d.overrides.active[0].id
            _wait(lambda: d.plan is not None and oid in (svc.store.last_plan()["inputs"].get("overrides") or []),
                  what="a plan made with the override")
            leaf = svc.cfg.vehicles[0]
            at_five = d.plan.result.schedule["leaf_soc_kwh"].asof(pd.Timestamp("2024-07-09T05:00+09:00"))
            assert at_five >= leaf.pct_kwh(90) - 0.05
        finally:
            browser.quit()
    for name in ("desktop.png", "phone.png"):
        assert Path(tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
