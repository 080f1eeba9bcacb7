"""ems.report: the typical week, the plots as PNG, the self-contained HTML page and the plain-language
summary it opens with (contract kW, money by whose it is, departures, backup hours, the strategies)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.report import PLOTS, STRATEGY_TEXT, typical_week, write_report
from ems.study import run_study
from ems.study.summary import compare, per_year_factors

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_typical_week_is_the_median_whole_week():
    idx = pd.date_range(pd.Timestamp("2024-03-03", tz="Asia/Tokyo"), periods=48 * 29, freq="30min")  # Sun + 4 weeks
    load = np.ones(len(idx))
    week = 48 * 7
    for k, level in enumerate([5.0, 1.0, 3.0, 2.0]):   # Mondays 4, 11, 18, 25 March
        load[48 + k * week:48 + (k + 1) * week] = level
    w = typical_week(idx, load)
    assert idx[w.start] == pd.Timestamp("2024-03-18", tz="Asia/Tokyo") and w.stop - w.start == week
    short = typical_week(idx[:100], load[:100])
    assert (short.start, short.stop) == (0, 100)


def test_report_has_every_plot_as_png_and_embedded(tmp_path):
    data = tmp_path / "office.csv"
    pd.read_csv(ROOT / "configs/data/office-2024-30min.csv").iloc[48 * 63:48 * 65].to_csv(data, index=False)
    summary, results = run_study([(str(ROOT / "configs/office-v2b.yaml"), str(data))], strategies=["none", "oracle"],
                                 out=None, workers=1)
    written = write_report(results, summary, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert written[0].name == "report.html"
    for name in PLOTS:
        png = tmp_path / "out" / f"office-v2b--config--{name}.png"
        assert png.read_bytes().startswith(PNG)
        assert base64.b64encode(png.read_bytes()).decode()[:200] in page
    assert page.count("<img") == len(PLOTS)
    assert "Chubu high-voltage A" in page and "<td>oracle</td>" in page and "100.0 %" in page


# ----- the plain-language summary the report opens with ---------------------------------------------

@pytest.fixture(scope="module")
def office_two_days(tmp_path_factory):
    """Mon 4 - Tue 5 March 2024 of the office under every strategy but the rule, report written."""
    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "office.csv"
    pd.read_csv(ROOT / "configs/data/office-2024-30min.csv").iloc[48 * 63:48 * 65].to_csv(data, index=False)
    summary, results = run_study([(str(ROOT / "configs/office-v2b.yaml"), str(data))],
                                 strategies=["building", "none", "mpc", "oracle"], out=tmp / "out", workers=1)
    page = (tmp / "out" / "report.html").read_text()
    return summary, page


def first_section(page: str) -> str:
    start = page.index("<section")
    return page[start:page.index("</section>", start)]


def test_report_opens_with_the_contract_kw_of_the_summary(office_two_days):
    summary, page = office_two_days
    first = first_section(page)
    assert first.startswith('<section id="summary">')
    assert page.index('<section id="summary">') < page.index("<table") < page.index("<img")
    figs = summary["results"]["office-v2b"]["config"]
    head = summary["headlines"]["office-v2b"]["config"]
    month = head["contract_month"]
    assert month == list(figs["mpc"]["contract_kw"])[-1] == "2024-03"
    for s in ("building", "none", "mpc", "oracle"):
        assert head["contract_kw"][s] == figs[s]["contract_kw"][month]
    text = html.unescape(first)
    contract = next(li for li in text.split("<li>") if li.startswith("Contract kW"))
    assert (f"the building alone {head['contract_kw']['building']:.1f} kW, unmanaged charging "
            f"{head['contract_kw']['none']:.1f} kW; with the EMS (mpc) {head['contract_kw']['mpc']:.1f} kW; "
            f"perfect foresight (oracle) would reach {head['contract_kw']['oracle']:.1f} kW") in contract
    assert "1,614.86 JPY/kW-month" in contract
    # the cars cut the building's own peak; unmanaged charging raises it
    assert head["contract_kw"]["oracle"] <= head["contract_kw"]["mpc"] < head["contract_kw"]["building"] < head["contract_kw"]["none"]


def test_report_money_says_whose_it_is_and_how_it_was_scaled(office_two_days):
    summary, page = office_two_days
    figs = summary["results"]["office-v2b"]["config"]
    head = summary["headlines"]["office-v2b"]["config"]
    text = html.unescape(first_section(page))
    for base in ("building", "none"):
        c = head["comparisons"][f"mpc_vs_{base}"]
        assert c["net"] == pytest.approx(figs[base]["net_cost"] - figs["mpc"]["net_cost"])
        assert c["site_bill"] == pytest.approx(figs[base]["bill"]["total"] - figs["mpc"]["bill"]["total"])
        assert c["driver_settlement"] == pytest.approx(figs[base]["driver_settlement"] - figs["mpc"]["driver_settlement"])
        assert c["battery_wear"] == pytest.approx(figs[base]["battery_wear_cost"] - figs["mpc"]["battery_wear_cost"])
        name = "the building alone" if base == "building" else "unmanaged charging"
        line = next(li for li in text.split("<li>") if li.startswith(f"The EMS (mpc) against {name}"))
        assert f"the site's bill {abs(c['site_bill']):,.0f} JPY" in line
        assert f"net {abs(c['net']):,.0f} JPY {'saved' if c['net'] >= 0 else 'lost'} over the span" in line
        assert f"about {abs(c['net_per_year']):,.0f} JPY a year" in line
        if abs(c["driver_settlement"]) >= 0.5:
            assert f"the drivers' settlement {abs(c['driver_settlement']):,.0f} JPY in the" in line
        if abs(c["battery_wear"]) >= 0.5:
            assert f"battery wear {abs(c['battery_wear']):,.0f} JPY" in line
    # two days of one month: the basic charge x 12 (billed per month), the rest x 365.25 / 2
    assert head["span"]["days"] == pytest.approx(2.0) and not head["span"]["is_year"]
    assert "the basic charge x 12.00 (12 / 1 billing month(s)" in text and "the rest x 182.6 (365.25 / 2.0 days)" in text
    c = head["comparisons"]["mpc_vs_building"]
    assert c["net_per_year"] == pytest.approx(12 * c["basic_charge"] + 182.625 * (c["net"] - c["basic_charge"]))
    assert "Whose money: the bill is the site's" in text


def test_report_summary_has_departures_backup_hours_and_each_strategy_in_a_sentence(office_two_days):
    summary, page = office_two_days
    figs = summary["results"]["office-v2b"]["config"]
    text = html.unescape(first_section(page))
    # two working days, three cars, each leaving at 18:00: six departures; the building alone has none
    assert figs["building"]["departures"] == 0
    for s in ("none", "mpc", "oracle"):
        assert figs[s]["departures"] == 6
    assert f"the EMS (mpc) {6 - figs['mpc']['departure_targets_missed']} of 6" in text
    backup = next(li for li in text.split("<li>") if li.startswith("Backup hours"))
    for s, name in (("building", "the building alone"), ("mpc", "the EMS (mpc)")):
        surv = figs[s]["outage_survival"]
        assert f"{name} {surv['median_hours']:.1f} h / {100 * surv['share_reaching_reserve']:.0f} %" in backup
    for s in ("building", "none", "mpc", "oracle"):
        assert f"{s}: {STRATEGY_TEXT[s]}" in text
    assert "rule: " not in text                      # only the strategies studied


def test_per_year_factors_and_comparisons_by_hand():
    assert per_year_factors(12, 366.0) == (1.0, 1.0, True)
    assert per_year_factors(12, 365.0) == (1.0, 1.0, True)
    fb, fo, year = per_year_factors(2, 30.0)
    assert (fb, fo, year) == (6.0, pytest.approx(365.25 / 30), False)
    base = {"strategy": "building", "bill": {"total": 1000.0, "line_items": {"basic": 600.0}}, "driver_settlement": 0.0,
            "battery_wear_cost": 0.0}
    ems = {"strategy": "mpc", "bill": {"total": 900.0, "line_items": {"basic": 450.0}}, "driver_settlement": 30.0,
           "battery_wear_cost": 5.0}
    c = compare(base, ems, 12.0, 10.0)
    assert (c["site_bill"], c["basic_charge"], c["driver_settlement"], c["battery_wear"]) == (100.0, 150.0, -30.0, -5.0)
    assert c["net"] == 65.0 and c["net_per_year"] == 150.0 * 12 + (65.0 - 150.0) * 10
